"""Every asv benchmark runs once, so the benchmark suite cannot rot unnoticed.

Benchmarks are found the way asv finds them (asv_runner.discovery): every module of the
``benchmarks`` package under ``asv_bench/``, imported as ``benchmarks.<name>``; in it,
every public function and every method of a public class whose name matches one of
asv's benchmark prefixes. Each runs with the first combination of its ``params`` only,
after ``setup_cache`` and the ``setup`` functions asv would call (module, class,
function), followed by the ``teardown`` functions. A setup that raises
NotImplementedError skips the benchmark, as asv does.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import numbers
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ASV_DIR = Path(__file__).resolve().parents[1] / "asv_bench"
BENCH_DIR = ASV_DIR / "benchmarks"
PACKAGE = BENCH_DIR.name  # asv imports the suite under its directory's name

# asv_runner.benchmarks.*.name_regex
KINDS = {
    "time": re.compile(r"^(Time[A-Z_].+)|(time_.+)$"),
    "timeraw": re.compile(r"^(Timeraw[A-Z_].+)|(timeraw_.+)$"),
    "mem": re.compile(r"^(Mem[A-Z_].+)|(mem_.+)$"),
    "peakmem": re.compile(r"^(PeakMem[A-Z_].+)|(peakmem_.+)$"),
    "track": re.compile(r"^(Track[A-Z_].+)|(track_.+)$"),
}


def _kind(name: str) -> str | None:
    for kind, rx in KINDS.items():
        if rx.match(name):
            return kind
    return None


def _import_suite():
    """Import the package and every module below it: ``[(module name, module or
    exception)]``."""
    sys.path.insert(0, str(ASV_DIR))
    try:
        loaded = sys.modules.get(PACKAGE)
        if loaded is not None and Path(getattr(loaded, "__file__", "")).parent != BENCH_DIR:
            raise RuntimeError(f"another module called {PACKAGE!r} is already imported")
        out = []
        pending = [PACKAGE]
        while pending:
            name = pending.pop(0)
            try:
                module = importlib.import_module(name)
            except Exception as exc:  # reported by the test of that module
                out.append((name, exc))
                continue
            out.append((name, module))
            if getattr(module, "__path__", None):
                pending += [m.name for m in pkgutil.iter_modules(module.__path__, f"{name}.")]
        return out
    finally:
        sys.path.remove(str(ASV_DIR))


def _discover():
    cases = []
    for mod_name, module in _import_suite():
        if isinstance(module, Exception):
            cases.append(pytest.param(mod_name, None, None, module, id=mod_name))
            continue
        for attr, obj in list(vars(module).items()):
            if attr.startswith("_"):
                continue
            if inspect.isclass(obj) and not inspect.isabstract(obj):
                if obj.__module__ != module.__name__:
                    continue  # imported from elsewhere; asv would list it twice
                for meth, fn in inspect.getmembers(obj):
                    if inspect.isfunction(fn) or inspect.ismethod(fn):
                        name = getattr(fn, "benchmark_name", meth).split(".")[-1]
                        if _kind(name) and not getattr(fn, "skip_benchmark", False):
                            bid = f"{mod_name}.{attr}.{meth}"
                            cases.append(pytest.param(mod_name, obj, meth, None, id=bid))
            elif inspect.isfunction(obj) and obj.__module__ == module.__name__:
                name = getattr(obj, "benchmark_name", attr).split(".")[-1]
                if _kind(name) and not getattr(obj, "skip_benchmark", False):
                    cases.append(pytest.param(mod_name, None, attr, None, id=f"{mod_name}.{attr}"))
    return cases


CASES = _discover()


def _first(sources, name, default=None):
    for s in sources:
        if hasattr(s, name):
            return getattr(s, name)
    return default


def _all(sources, name):
    return [getattr(s, name) for s in sources if callable(getattr(s, name, None))]


def _first_params(params) -> tuple | None:
    """The first combination of asv ``params`` (None when there is none)."""
    params = list(params)
    if not params:
        return ()
    if not isinstance(params[0], (list, tuple)):
        params = [params]
    combos = itertools.product(*params)
    return next(combos, None)


def test_the_suite_has_benchmarks():
    assert (BENCH_DIR / "__init__.py").is_file()
    assert any(c.values[2] is not None for c in CASES), "no benchmark found"


@pytest.mark.parametrize("mod_name, klass, attr, error", CASES)
def test_benchmark_runs_once(mod_name, klass, attr, error):
    if error is not None:
        raise error
    if attr is None:
        return  # a module without benchmarks (e.g. the package) imported fine
    module = sys.modules[mod_name]
    if klass is None:
        func = getattr(module, attr)
        sources = [func, module]
    else:
        instance = klass()
        func = getattr(instance, attr)
        sources = [func, instance, module]
    params = _first_params(_first(sources, "params", []))
    if params is None:
        pytest.skip("the benchmark has an empty parameter list")
    args = list(params)
    setup_cache = _first(sources, "setup_cache")
    if setup_cache is not None:
        args.insert(0, setup_cache())
    setups = _all(sources, "setup")[::-1]  # module, class, function
    teardowns = _all(sources, "teardown")
    try:
        for setup in setups:
            setup(*args)
    except NotImplementedError as exc:
        pytest.skip(f"setup skipped it: {exc}")
    try:
        result = func(*args)
        kind = _kind(getattr(func, "benchmark_name", attr).split(".")[-1])
        if kind == "track":
            assert isinstance(result, numbers.Number), f"track_ returned {result!r}"
        elif kind == "timeraw":
            code, setup_code = (result, "") if isinstance(result, str) else result
            script = textwrap.dedent(setup_code) + "\n" + textwrap.dedent(code)
            subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    finally:
        for teardown in teardowns:
            teardown(*args)


def test_asv_check_finds_no_problems():
    """asv's own check (discovery in a subprocess, signatures, params) on this
    environment: what `asv run` would refuse, this refuses too."""
    asv = Path(sys.executable).parent / "asv"
    r = subprocess.run([str(asv), "check", "--python=same"], cwd=ASV_DIR,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No problems found" in r.stdout, r.stdout
