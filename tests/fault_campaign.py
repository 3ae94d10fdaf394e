"""A random fault campaign over checkpointed jobs (issue 24): each run picks a query, a
processor, a batch size and a checkpoint interval, then runs the job from a generated
source to a Parquet file while faults are injected at random points: the sink raises,
the disk fills while a checkpoint is written (ENOSPC), or the process is killed with
SIGKILL. After each fault the job is started again from its checkpoint, until it
finishes; its output file must then equal, byte for byte, the output of the same job run
once without a fault (no record lost, none written twice).

``python tests/fault_campaign.py --runs 200`` runs the campaign (outside CI: minutes);
``tests/test_fault_campaign.py`` runs a few of its runs in CI.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np

from velokern import server
from velokern.datagen import SCENARIOS
from velokern.server import JobFailed, StreamJob

#: the queries: the reference GROUP BY, tumbling window and filter (their kernels are
#: the ones the rest of the suite compiles) and a ROWS window with a state TTL, each over
#: its scenario's random data (CI-sized: 60,000 records)
QUERIES = {
    "group_by": (SCENARIOS["S2"], "S2"),
    "tumbling": (SCENARIOS["S3a"], "S3a"),
    "filter": (SCENARIOS["S0"], "S0"),
    "rows_ttl": ("SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY "
                 "timestamp ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS ma FROM t "
                 "WITH (state_ttl = '500ms')", "S1"),
}
RECORDS = 60_000
FAULTS = ("sink", "disk", "kill")

_CHILD = """
import sys
from velokern.server import StreamJob
sql, source, out, cp, proc, bs, every = sys.argv[1:8]
job = StreamJob(sql, source, out, processor=proc, batch_size=int(bs), checkpoint_dir=cp,
                checkpoint_every=int(every))
job.on_progress = lambda m: print("batch", m["batches"], flush=True)
job.run()
print("done", flush=True)
"""


@dataclass
class Tally:
    runs: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    restarts: int = 0
    records_checked: int = 0
    failures: list[str] = field(default_factory=list)


def _source(scenario: str, seed: int) -> str:
    return f"scenario:{scenario}?total={RECORDS}&seed={seed}&random=1"


def _job(sql, source, out, cp, proc, bs, every) -> StreamJob:
    return StreamJob(sql, source, str(out), processor=proc, batch_size=bs,
                     checkpoint_dir=str(cp), checkpoint_every=every)


def _with_fault(kind: str, at: int):
    """A context that makes the ``at``-th sink write (or checkpoint write) raise."""
    calls = {"n": 0}

    def failing(real):
        def wrapper(*args, **kw):
            calls["n"] += 1
            if calls["n"] == at:
                if kind == "disk":
                    raise OSError(errno.ENOSPC, "No space left on device (injected)")
                raise OSError(errno.EIO, "the sink's disk failed (injected)")
            return real(*args, **kw)
        return wrapper

    if kind == "disk":
        return mock.patch.object(server, "write_checkpoint",
                                 failing(server.write_checkpoint))
    real_write = server.Sink.write
    return mock.patch.object(server.Sink, "write", failing(real_write))


def _killed_run(sql, source, out, cp, proc, bs, every, after: int) -> bool:
    """Run the job in a child process and SIGKILL it once it reports batch ``after``;
    True when the kill landed before the job finished."""
    p = subprocess.Popen([sys.executable, "-c", _CHILD, sql, source, str(out), str(cp), proc,
                          str(bs), str(every)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in p.stdout:
        if line.startswith("batch") and int(line.split()[1]) >= after:
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=300)
    return p.returncode == -signal.SIGKILL


def one_run(k: int, rng: np.random.Generator, work: Path, tally: Tally, refs: dict,
            kills: bool) -> None:
    name = list(QUERIES)[k % len(QUERIES)]
    sql, scenario = QUERIES[name]
    proc = str(rng.choice(["v1", "v2:2", "v2:3"]))
    bs = int(rng.choice([1_000, 4_000, 15_000]))
    every = int(rng.integers(1, 4))
    seed = int(rng.integers(0, 3))
    source = _source(scenario, seed)
    key = (name, bs, seed)
    if key not in refs:  # the same job once, no fault (any processor: V1 = V2)
        ref = work / f"ref-{len(refs)}.parquet"
        _job(sql, source, ref, work / f"ref-cp-{len(refs)}", "v1", bs, 1).run()
        refs[key] = ref.read_bytes()
    run_dir = work / f"run-{k}"
    out, cp = run_dir / "out.parquet", run_dir / "cp"
    run_dir.mkdir()
    batches = -(-RECORDS // bs)
    faults = int(rng.integers(1, 4))
    for _ in range(faults):
        kind = str(rng.choice(FAULTS if kills else FAULTS[:2]))
        at = int(rng.integers(1, batches + 1))
        if kind == "kill":
            landed = _killed_run(sql, source, out, cp, proc, bs, every, at)
        else:
            try:
                with _with_fault(kind, at):
                    _job(sql, source, out, cp, proc, bs, every).run()
                landed = False
            except JobFailed:
                landed = True
        tally.faults[kind] += landed
        tally.restarts += landed
    _job(sql, source, out, cp, proc, bs, every).run()  # to the end, no fault
    tally.runs += 1
    if out.read_bytes() != refs[key]:
        tally.failures.append(f"run {k}: {name} {proc} batch {bs} every {every}: output "
                              "differs from the run without faults")
    else:  # every input record's effect is in the compared output
        tally.records_checked += RECORDS


def campaign(runs: int, seed: int = 0, kills: bool = True, work: Path | None = None) -> Tally:
    rng = np.random.default_rng(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work or tmp)
        refs: dict = {}
        for k in range(runs):
            one_run(k, rng, base, tally, refs, kills)
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the tally here")
    args = ap.parse_args()
    t0 = time.monotonic()
    tally = campaign(args.runs, args.seed)
    out = {"runs": tally.runs, "faults_landed": tally.faults, "restarts": tally.restarts,
           "records_checked": tally.records_checked, "failures": tally.failures,
           "seconds": round(time.monotonic() - t0, 1), "records_per_run": RECORDS}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
