"""Every example in docs/configuration.md runs: Python blocks in one namespace, shell
blocks through bash with velokern on PATH, TOML blocks as `velokern run` job files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("python")
    assert len(blocks) >= 3
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), ns)


def test_shell_and_job_file_examples_run(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ['PATH']}")
    (toml,) = _blocks("toml")
    (tmp_path / "job.toml").write_text(toml)
    for script in _blocks("bash"):
        r = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "counts.parquet").exists() and (tmp_path / "counts.csv").exists()
    assert (tmp_path / "counts-checkpoint" / "checkpoint.vkcp").exists()


def test_scale_out_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = DOC.parent / "scale-out.md"
    (code,) = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    exec(compile(code, str(doc), "exec"), {"__name__": "__main__"})
    assert (tmp_path / "per-minute.parquet").exists()
