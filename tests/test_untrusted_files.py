"""Files a job reads back are not trusted (issue 24, item 11).

- The parsed-query cache is JSON: a planted pickle (or anything else) is ignored, the
  query parsed again, and nothing in the file runs.
- A checkpoint holds no pickle; its payload is validated before any state is adopted. A
  corpus of crafted checkpoints (one field mutated at a time, the checksum recomputed
  as velokern.checkpoint does) of a GROUP BY job, a windowed job with COUNT(DISTINCT),
  a ROWS job and a session job must each be refused with a ValueError naming the field,
  quickly (in a subprocess with a timeout: a crafted count could make a kernel loop),
  and the untouched checkpoint still resumes bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import velokern as vk
from velokern.checkpoint import CHECKPOINT_FILE, read_checkpoint, write_checkpoint

QUERIES = {
    "group_by": "SELECT s, s2, COUNT(*) AS n, COUNT(DISTINCT k) AS dk, MIN(s) AS lo "
                "FROM t GROUP BY s, s2",
    "window": "SELECT k, COUNT(*) AS n, COUNT(DISTINCT s) AS ds, SUM(x) AS sx, window_start "
              "FROM t GROUP BY k WINDOW TUMBLING(ts, INTERVAL '2' SECOND) "
              "WITH (allowed_lateness = '1s')",
    "rows": "SELECT k, f, AVG(f) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 5 PRECEDING "
            "AND CURRENT ROW) AS ma, LAG(x) OVER (PARTITION BY k ORDER BY ts) AS px FROM t",
    "session": "SELECT k, COUNT(*) AS n, SUM(x) AS sx, window_start, window_end FROM t "
               "GROUP BY k WINDOW SESSION(ts, 1500ms)",
}
PROCESSOR = "v2:2"
CUT = 3


# ---------------------------------------------------------------- mutations
def _set(path, value):
    """A mutation of the engine payload: the value at ``path`` replaced."""
    def f(e):
        *head, last = path
        for k in head:
            e = e[k]
        if callable(value):
            e[last] = value(e[last])
        else:
            e[last] = value
    return f


def _delete(key):
    def f(e):
        del e[key]
    return f


def _meta(col, value):
    def f(e):
        e["state"][7][0, col] = value(e["state"][7][0, col]) if callable(value) else value
    return f


def _cap(e):
    return e["state"][1].shape[1]


def _swap(slot, fn):
    def f(e):
        e["state"][slot] = fn(e["state"][slot])
    return f


COMMON = {
    "missing key seq": _delete("seq"),
    "extra key": _set(("surprise",), 1),
    "NaN watermark": _set(("watermark",), float("nan")),
    "string watermark": _set(("watermark",), "0"),
    "float seq": _set(("seq",), 3.5),
    "negative seq": _set(("seq",), -1),
    "huge seq": _set(("seq",), 1 << 70),
    "zero partitions": _set(("num_partitions",), 0),
    "huge partitions": _set(("num_partitions",), 10 ** 9),
    "string partitions": _set(("num_partitions",), "2"),
    "unknown nullable column": _set(("nullable",), ["no_such_column"]),
    "nullable not a list": _set(("nullable",), "k"),
    "schema with unknown type": _set(("schema",), [["k", "blob"], ["ts", "int64"]]),
    "schema not pairs": _set(("schema",), [["k"]]),
    "negative metric": _set(("metrics", "records_in"), -5),
    "metric of wrong type": _set(("metrics", "batches"), "many"),
    "partition_records of wrong length": _set(("metrics", "partition_records"),
                                              np.zeros(7, np.int64)),
    "dictionary for an int column": _set(("dicts", "k"), ["a"]),
    "sql of wrong type": _set(("sql",), 42),
    "lateness of wrong type": _set(("allowed_lateness_ms",), "1s"),
}
STRING_DICT = {  # jobs whose state holds string codes
    "dictionary value not a string": lambda e: e["dicts"]["s"].__setitem__(0, 7),
    "dictionary with a repeated value": lambda e: e["dicts"]["s"].append(e["dicts"]["s"][0]),
    "dictionary shrunk": lambda e: e["dicts"]["s"].__delitem__(slice(1, None)),
}
KEYED = {
    "state missing": _set(("state",), "none"),
    "state of 12 arrays": lambda e: e["state"].pop(),
    "state array a list": _swap(7, lambda a: a.tolist()),
    "negative group count": _meta(0, -1),
    "group count past capacity": _meta(0, lambda v: 1 << 40),
    "group count one past capacity": lambda e: _meta(0, _cap(e) + 1)(e),
    "meta of wrong dtype": _swap(7, lambda a: a.astype(np.float64)),
    "meta of wrong shape": _swap(7, lambda a: np.zeros((a.shape[0], a.shape[1] + 1), np.int64)),
    "meta of wrong ndim": _swap(7, lambda a: a.ravel()),
    "hashes of wrong dtype": _swap(1, lambda a: a.astype(np.int64)),
    "hashes shorter than the packs": _swap(1, lambda a: a[:, :a.shape[1] // 2].copy()),
    "key bits of wrong shape": _swap(2, lambda a: np.concatenate([a, a[:, :, :1]], 2)),
    "pack I narrower than capacity": _swap(4, lambda a: a[:, :, :8].copy()),
    "pack F with a missing row": _swap(5, lambda a: a[:, 1:].copy()),
    "partitions disagree": _swap(6, lambda a: a[:1].copy()),
    "num_partitions differs from state": _set(("num_partitions",), 1),
    "table of wrong size": _swap(0, lambda a: a[:, :4].copy()),
    "key null flag 7": _swap(3, lambda a: np.full_like(a, 7)),
    "direct map id past groups": _swap(11, lambda a: np.full_like(a, 1 << 40)),
    "touched flags cleared (list would outgrow its row)": lambda e: _touch(e),
}


def _touch(e):
    """A touched list of every group while the flags say none is listed."""
    meta = e["state"][7]
    ng = int(meta[0, 0])
    e["state"][4][0, 1, :ng] = np.arange(ng)  # row 1: tlist (GROUP BY / windows)
    meta[0, 1] = ng
DISTINCT = {
    "distinct count past its arrays": lambda e: _meta(_nd_col(e), e["state"][9].shape[2] + 5)(e),
    "negative distinct count": lambda e: _meta(_nd_col(e), -3)(e),
    "distinct group id past groups": _swap(9, lambda a: np.full_like(a, 1 << 30)),
    "distinct table full (endless probe)": _swap(8, lambda a: np.zeros_like(a)),
    "distinct table entry past count": _swap(8, lambda a: np.where(a >= 0, a + 10_000, a)),
}
STRING_KEYS = {
    "string key code past its dictionary": lambda e: e["state"][2].__setitem__(
        (0, 0, 0), 10 ** 6),
    "direct map dims tampered": _swap(12, lambda a: a * 2),
    "string aggregate code past its dictionary": lambda e: e["state"][4].__setitem__(
        (0, slice(None), slice(None)), 10 ** 6),
}


def _nd_col(e):
    """The meta column of the (one) distinct set's count: the last, or the one before
    ``direct`` (the GROUP BY of string keys uses the direct map)."""
    return e["state"][7].shape[1] - (2 if e["sql"] == QUERIES["group_by"] else 1)


def _sess(name, value):
    return _set(("sessions", "arrays", name), value)


def _sess_at(name, i, value):
    def f(e):
        e["sessions"]["arrays"][name][i] = value(e) if callable(value) else value
    return f


SESSION = {
    "sessions missing": _set(("sessions",), None),
    "sessions extra key": _set(("sessions", "surprise"), 1),
    "nsess negative": _set(("sessions", "nsess"), -1),
    "nsess past capacity": _set(("sessions", "nsess"), 1 << 40),
    "nsess a float": _set(("sessions", "nsess"), 2.0),
    "parent cycle": lambda e: (_sess_at("_parent", 0, 1)(e), _sess_at("_parent", 1, 0)(e)),
    "parent past sessions": _sess_at("_parent", 0, 1 << 40),
    "list loops (nxt to itself)": _sess_at("_nxt", 1, 1),
    "list runs forward": _sess_at("_nxt", 0, 1),
    "head past sessions": _sess_at("_head", 0, lambda e: e["sessions"]["nsess"]),
    "skey past keys": _sess_at("_skey", 0, 1 << 20),
    "held sid past sessions": _sess_at("_held_sid", 0, 1 << 20),
    "start of wrong dtype": _sess("_start", lambda a: a.astype(np.float64)),
    "alive 2-D": _sess("_alive", lambda a: a.reshape(-1, 2)),
    "end shorter than start": _sess("_end", lambda a: a[:2].copy()),
    "array missing": lambda e: e["sessions"]["arrays"].pop("_nxt"),
    "key id not bytes": _set(("sessions", "key_ids", 0), "k"),
    "key id repeated": lambda e: e["sessions"]["key_ids"].append(e["sessions"]["key_ids"][0]),
    "key id of wrong length": _set(("sessions", "key_ids", 0), b"\0" * 3),
    "bound not a list": _set(("sessions", "bound"), 3),
    "bound time type unknown": _set(("sessions", "bound", 2), "object"),
    "held columns renamed": lambda e: _rename_held(e),
    "held rows mismatch": _set(("sessions", "held", "rows"), lambda r: r + 1),
    "held column of wrong length": lambda e: _held_col(e, lambda a: a[:1].copy()),
    "held mask not bool": lambda e: _held_mask(e),
    "pre payload mutated": _set(("sessions", "pre", "watermark"), "x"),
}


def _held_col(e, fn):
    h = e["sessions"]["held"]
    c = h["names"][0]
    h["data"][c] = fn(h["data"][c])


def _rename_held(e):
    h = e["sessions"]["held"]
    c = h["names"][0]
    h["names"][0] = "other"
    for part in ("data", "masks"):
        h[part]["other"] = h[part].pop(c)


def _held_mask(e):
    h = e["sessions"]["held"]
    c = h["names"][0]
    h["masks"][c] = np.zeros(h["rows"], np.int64)


CORPUS = {
    "group_by": {**COMMON, **STRING_DICT, **KEYED, **DISTINCT, **STRING_KEYS},
    "window": {**COMMON, **STRING_DICT, **KEYED, **DISTINCT},
    "rows": {**COMMON, **KEYED},
    "session": {**COMMON, **SESSION},
}


# raw mutations of the payload's bytes (what the encoder would never write)
def _raw_tree(fn):
    def f(body):
        (n,) = struct.unpack("<Q", body[:8])
        tree = json.loads(body[8:8 + n])
        fn(tree)
        t = json.dumps(tree).encode()
        return struct.pack("<Q", len(t)) + t + body[8 + n:]
    return f


def _first_array(tree):
    stack = [tree]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if "\0ndarray" in v:
                return v["\0ndarray"]
            stack += list(v.values())
        elif isinstance(v, list):
            stack += v
    raise AssertionError("no array")


def _pickled_array(body):
    """An object array: its 'bytes' a pickle that would print if unpickled."""
    evil = pickle.dumps(np.array([_Evil()], dtype=object))
    (n,) = struct.unpack("<Q", body[:8])
    tree = json.loads(body[8:8 + n])
    spec = _first_array(tree)
    spec[:] = ["|O", [1], len(body) - 8 - n]
    t = json.dumps(tree).encode()
    return struct.pack("<Q", len(t)) + t + body[8 + n:] + evil


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/velokern-pwned-by-checkpoint",))


RAW = {
    "pickled object array": _pickled_array,
    "whole payload a pickle": lambda body: pickle.dumps({"engine": _Evil()}),
    "array dtype void": _raw_tree(lambda t: _first_array(t).__setitem__(0, "|V8")),
    "array shape past the bytes": _raw_tree(
        lambda t: _first_array(t).__setitem__(1, [1 << 40, 1 << 20])),
    "array negative offset": _raw_tree(lambda t: _first_array(t).__setitem__(2, -8)),
    "array shape negative": _raw_tree(lambda t: _first_array(t).__setitem__(1, [-1])),
    "tree length past the end": lambda body: struct.pack("<Q", 1 << 60) + body[8:],
    "tree not JSON": lambda body: body[:8] + b"\xff" * 16 + body[24:],
    "tree nested deep": lambda body: _raw_tree(lambda t: t["engine"].__setitem__(
        "metrics", json.loads("[" * 500 + "]" * 500)))(body),
    "truncated": lambda body: body[:5],
}


# ---------------------------------------------------------------- the worker
def _batches():
    from conftest import timed_batches

    return timed_batches(6, 700, seed=3, keys=15)


def _write_raw(directory: Path, sql: str, body: bytes) -> None:
    """A checkpoint with this payload and a valid checksum (as write_checkpoint does)."""
    path = directory / CHECKPOINT_FILE
    head = json.loads(path.read_bytes().split(b"\n", 1)[0])
    head.update(sha256=hashlib.sha256(body).hexdigest(), payload_bytes=len(body))
    path.write_bytes(json.dumps(head, sort_keys=True).encode() + b"\n" + body)


def _restore(directory: Path, sql: str):
    payload = read_checkpoint(directory, {"sql": sql})[1]
    return vk.StreamExecutionEngine.restore(payload["engine"])


def _try(fn) -> str:
    t0 = time.perf_counter()
    try:
        fn()
    except ValueError as ex:
        return f"refused {time.perf_counter() - t0:.3f}s: {ex}"
    except Exception as ex:  # reported: the test asserts ValueError
        return f"wrong error {type(ex).__name__}: {ex}"
    return "accepted"


def worker(kind: str, directory: str) -> dict:
    """Every mutation of ``kind``'s checkpoint, loaded; then the untouched one resumed."""
    sql, d = QUERIES[kind], Path(directory)
    batches = _batches()
    ref_e = vk.StreamExecutionEngine(sql)
    ref_p = vk.JobProcessorFactory.create(PROCESSOR)
    ref = [ref_p.process_batch(b, ref_e) for b in batches] + [ref_p.flush(ref_e)]
    e = vk.StreamExecutionEngine(sql)
    p = vk.JobProcessorFactory.create(PROCESSOR)
    first = [p.process_batch(b, e) for b in batches[:CUT]]
    snap = e.snapshot()
    results = {}
    for name, mutate in CORPUS[kind].items():
        m = copy.deepcopy(snap)
        setup = _try(lambda m=m, mutate=mutate: mutate(m))
        if setup != "accepted":
            results[name] = f"mutation failed: {setup}"
            continue
        write_checkpoint(d, {"sql": sql}, {"engine": m})  # a valid checksum
        results[name] = _try(lambda: _restore(d, sql))
    write_checkpoint(d, {"sql": sql}, {"engine": snap})
    body = (d / CHECKPOINT_FILE).read_bytes().split(b"\n", 1)[1]
    for name, mutate in RAW.items():
        _write_raw(d, sql, mutate(body))
        results[f"raw: {name}"] = _try(lambda: _restore(d, sql))
    # the untouched checkpoint resumes bit for bit
    _write_raw(d, sql, body)
    restored = _restore(d, sql)
    p2 = vk.JobProcessorFactory.create(PROCESSOR)
    rest = [p2.process_batch(b, restored) for b in batches[CUT:]] + [p2.flush(restored)]
    results["untouched resumes bit for bit"] = len(ref) == len(first + rest) and all(
        a.equals(b, bitwise=True) for a, b in zip(ref, first + rest))
    return results


@pytest.mark.parametrize("kind", list(QUERIES))
def test_crafted_checkpoints_are_refused(kind, tmp_path):
    marker = Path("/tmp/velokern-pwned-by-checkpoint")
    marker.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, __file__, kind, str(tmp_path)], capture_output=True, text=True,
        timeout=600, env=env, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("untouched resumes bit for bit") is True
    wrong = {k: v for k, v in results.items() if not v.startswith("refused")}
    assert not wrong, wrong
    slow = {k: v for k, v in results.items() if float(v.split()[1][:-2]) > 5}
    assert not slow, slow
    assert not marker.exists()
    assert len(results) == len(CORPUS[kind]) + len(RAW)


# ---------------------------------------------------------------- a job's checkpoint
def test_job_refuses_a_crafted_checkpoint(tmp_path):
    """StreamJob turns a refused payload into a CheckpointError naming the file."""
    from velokern.checkpoint import CheckpointError
    from velokern.server import JobFailed, StreamJob

    sql = QUERIES["group_by"]
    batches = _batches()[:2]
    job = StreamJob(sql, batches, "memory", processor="v1", checkpoint_dir=tmp_path,
                       checkpoint_every=1)
    job.run()
    path = tmp_path / CHECKPOINT_FILE
    head_line, body = path.read_bytes().split(b"\n", 1)
    for name, mutate in {
        "job missing": lambda pl: pl.pop("job"),
        "engine of another query": lambda pl: pl["engine"].__setitem__("sql", "SELECT 1"),
        "engine field missing": lambda pl: pl["engine"].pop("allowed_lateness_ms"),
        "group count past capacity": lambda pl: pl["engine"]["state"][7].__setitem__(
            (0, 0), 1 << 40),
    }.items():
        path.write_bytes(head_line + b"\n" + body)
        payload = read_checkpoint(tmp_path, {"sql": sql})[1]
        mutate(payload)
        head = json.loads(head_line)
        write_checkpoint(tmp_path, {k: v for k, v in head.items()
                                    if k not in ("format", "velokern", "sha256",
                                                 "payload_bytes")}, payload)
        again = StreamJob(sql, batches, "memory", processor="v1",
                             checkpoint_dir=tmp_path)
        with pytest.raises(JobFailed) as info:
            again.run()
        assert isinstance(info.value.__cause__, CheckpointError), name
        assert "is refused" in str(info.value.__cause__), name


# ---------------------------------------------------------------- the query cache
def test_planted_query_cache_is_ignored_and_never_run(tmp_path):
    """A pickle planted where the parsed query would be cached: ignored (the query is
    parsed again, the right answer comes out), never unpickled (no marker file)."""
    marker = tmp_path / "pwned"
    sql = "SELECT k, COUNT(*) AS n FROM t GROUP BY k"
    code = f"""
import os, pickle, sys
from velokern.sql import _key, parse_sql
from velokern.cachedir import cache_dir
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
d = cache_dir("queries")
key = _key({sql!r})
for name in (key + ".json", key + ".pickle"):
    (d / name).write_bytes(pickle.dumps(Evil()))
q = parse_sql({sql!r})
assert [n for n, _ in q.select] == ["k", "n"], q
assert "sqlglot" in sys.modules  # parsed again
# ... and the entry it wrote back is JSON that the next process reads without sqlglot
print((d / (key + ".json")).read_bytes()[:1].decode())
"""
    env = dict(os.environ, VELOKERN_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{"
    assert not marker.exists()
    again = subprocess.run(
        [sys.executable, "-c", f"import sys; from velokern.sql import parse_sql; "
                               f"parse_sql({sql!r}); print('sqlglot' in sys.modules)"],
        capture_output=True, text=True, env=env, timeout=120)
    assert again.stdout.strip() == "False", again.stderr


@pytest.mark.parametrize("planted", [
    b"", b"not json", b"[]", b'{"format": 1}', b"\x80\x04K\x01.",
    # a well-formed entry naming a class outside the plan, or a cycle of references
    b'{"format": 1, "source": "t", "select": [["k", {"node": "Popen", "args": "x"}]], '
    b'"where": null, "group_by": [], "having": null, "emit": null, "star": false, '
    b'"sql": "SQL", "window": null, "allowed_lateness_ms": null, "positions": []}',
    b'{"format": 1, "source": "t", "select": [["k", {"node": "Unary", "op": "neg", '
    b'"x": {"ref": 0}}]], "where": null, "group_by": [], "having": null, "emit": null, '
    b'"star": false, "sql": "SQL", "window": null, "allowed_lateness_ms": null, '
    b'"positions": []}',
    b'{"format": 1, "source": "t", "select": [["k", {"node": "Col", "name": 5}]], '
    b'"where": null, "group_by": [], "having": null, "emit": null, "star": false, '
    b'"sql": "SQL", "window": null, "allowed_lateness_ms": null, "positions": []}',
])
def test_corrupt_query_cache_entries_are_parsed_again(planted, tmp_path, monkeypatch):
    from velokern import sql as vsql

    monkeypatch.setenv("VELOKERN_CACHE_DIR", str(tmp_path))
    sql = "SELECT -k AS k FROM t"
    path = tmp_path / "queries" / f"{vsql._key(sql)}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(planted.replace(b"SQL", sql.encode()))
    assert vsql._load(path, sql) is None
    vsql._kept.cache_clear()
    q = vsql.parse_sql(sql)
    assert q.select[0][1].__class__.__name__ == "Unary"
    assert vsql._load(path, sql) is not None  # written back as a good entry


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1], sys.argv[2])))
