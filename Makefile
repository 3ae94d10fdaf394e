# make run  -- set up .venv (if missing) and run the demo job
# make test -- set up .venv (if missing) and run ruff and the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.velokern-installed

.PHONY: run test lint bench bench-report clean

$(STAMP): pyproject.toml setup.py velokern/_shim.pyx
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m velokern demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check velokern tests

bench: $(STAMP)
	$(PY) -m velokern bench

bench-report: $(STAMP)
	$(PY) -m velokern bench --report docs/performance.md

clean:
	rm -rf $(VENV) build *.egg-info velokern/*.so velokern/_shim.c
