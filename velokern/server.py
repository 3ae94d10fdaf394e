"""Jobs and the job server: a query run from a source to a sink, with checkpoints.

``StreamJob(sql, source, sink, processor="v2", checkpoint_dir=...)`` pulls batches from
a source (:mod:`velokern.io`), pushes them through a processor built by
:class:`JobProcessorFactory` and writes what the engine emits to the sink.
``StreamJobServer`` runs several named jobs at once, each on its own thread.

Checkpoints (exactly once): every ``checkpoint_every`` batches (and/or seconds) the job
commits its sinks (staged output made durable) and then atomically writes the engine's
state (every partition, the string dictionaries), the number of source batches consumed
and the sinks' commit tokens. A restarted job loads the checkpoint, tells each sink to
drop whatever was written after its commit, and resumes the source at the next batch.
Sources batch deterministically, so the resumed run sees the same batches and emits the
same rows: the final files equal those of a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from velokern.batch import Schema
from velokern.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from velokern.exec import LateSinkError, StreamExecutionEngine
from velokern.exec.payload import FIELDS
from velokern.io import Sink, Source, check_job_paths, open_sink, open_source
from velokern.processors import JobProcessorConfig, JobProcessorFactory


def _check_job_payload(payload: Any, sql: str) -> None:
    """The job's part of a checkpoint payload (the engine's is checked when it loads):
    exactly the fields a job writes, of their types, for this job's query."""
    if not isinstance(payload, dict) or set(payload) != {"engine", "sinks", "job"}:
        raise ValueError("the payload does not have the fields engine, sinks and job")
    eng, sinks, job = payload["engine"], payload["sinks"], payload["job"]
    if not isinstance(eng, dict) or set(eng) != FIELDS:
        raise ValueError(f"engine does not have the fields {sorted(FIELDS)}")
    if eng["sql"] != sql:
        raise ValueError("engine.sql is not this job's query")
    if not isinstance(sinks, dict) or set(sinks) != {"sink", "late_sink"} or not all(
            t is None or isinstance(t, dict) for t in sinks.values()):
        raise ValueError("sinks is not {sink, late_sink} commit tokens")
    lat = job.get("latencies") if isinstance(job, dict) else None
    if not isinstance(job, dict) or set(job) != {"latencies", "records_out", "batches"} \
            or not isinstance(lat, np.ndarray) or lat.ndim != 1 or lat.dtype.kind not in "fiu" \
            or not all(isinstance(job[k], int) and not isinstance(job[k], bool)
                       and job[k] >= 0 for k in ("records_out", "batches")):
        raise ValueError("job is not {latencies: a 1-D array, records_out, batches: counts}")

__all__ = ["LATENCY_WINDOW", "JobFailed", "StreamJob", "StreamJobServer"]

#: batch latencies kept per job (for percentiles; bounded so a long job stays small)
LATENCY_WINDOW = 10_000


class JobFailed(RuntimeError):
    """A job stopped on an error; ``__cause__`` is the original exception."""


class StreamJob:
    """One streaming query from a source to a sink.

    ``source``: a :class:`velokern.io.Source`, a path (Parquet file or directory, Arrow
    IPC, CSV), ``"scenario:S2"``, or a list of batches (anything ``as_batch`` takes).
    ``sink``: a :class:`velokern.io.Sink`, a path (.parquet, .arrow, .csv), ``"memory"``
    (the default), or a callable. ``late_sink``: where late records go (same forms).
    ``processor``: a config object or string; None means ``VELOKERN_PROCESSOR`` or V2.
    ``checkpoint_dir``: resume from / write checkpoints there, every
    ``checkpoint_every`` batches and, if given, every ``checkpoint_seconds`` seconds.
    ``on_error``: "fail" (default: a bad batch stops the job) or "skip" (the batch is
    counted in ``records_rejected`` and the job goes on). A late sink that raises always
    fails the job (:class:`~velokern.LateSinkError`): the batch's output is written, no
    checkpoint is written after it, and a rerun resumes from the last checkpoint.
    ``on_progress``: called after every batch with :meth:`progress` (cheap counts).
    Latency percentiles cover the last ``LATENCY_WINDOW`` batches.
    """

    def __init__(self, sql: str, source: Any, sink: Any = "memory", processor: Any = None,
                 *, name: str | None = None, schema: Schema | Mapping[str, str] | None = None,
                 late_sink: Any = None, allowed_lateness_ms: int | None = None,
                 batch_size: int = 100_000, checkpoint_dir: str | Path | None = None,
                 checkpoint_every: int = 10, checkpoint_seconds: float | None = None,
                 on_error: str = "fail",
                 on_progress: Callable[[dict[str, Any]], object] | None = None):
        check_job_paths(source, sink, late_sink)  # before anything is opened or written
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer (batches), got "
                             f"{checkpoint_every!r}")
        self.name = name or "job"
        self.sql = sql
        self.config = JobProcessorConfig.coerce(processor)
        self.source: Source = open_source(source, batch_size=batch_size)
        self.sink: Sink = open_sink(sink)
        self.late_sink: Sink | None = None if late_sink is None else open_sink(late_sink)
        self.schema = schema
        self.allowed_lateness_ms = allowed_lateness_ms
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.on_error = on_error
        self.on_progress = on_progress
        # the query is checked now, so a bad one fails at deployment, not on a thread
        self.engine = self._new_engine()
        self.processor = JobProcessorFactory.create(self.config,
                                                    keyed_by=None)
        self.status = "created"
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._flush_on_stop = False
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._records_out = 0
        self._batches = 0
        self._started = 0.0
        self._busy = 0.0
        self._ended: float | None = None
        self._position = 0
        self.checkpoints_written = 0
        self.resumed_from: int | None = None

    def _new_engine(self) -> StreamExecutionEngine:
        late = None if self.late_sink is None else self.late_sink.write
        return StreamExecutionEngine(self.sql, self.schema,
                                     allowed_lateness_ms=self.allowed_lateness_ms,
                                     late_sink=late)

    # ------------------------------------------------------------------ control
    def stop(self, *, flush: bool | None = None) -> None:
        """Ask the job to stop after the batch in flight. With a checkpoint directory
        the job writes a checkpoint and can be resumed (``flush=False``, the default);
        without one, or with ``flush=True``, what the engine holds is flushed (end of
        input) first. Sinks are closed either way."""
        self._flush_on_stop = self.checkpoint_dir is None if flush is None else bool(flush)
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ checkpoints
    def _identity(self) -> dict[str, Any]:
        return {
            "sql": self.sql,
            "schema": None if self.schema is None else [list(f) for f in Schema(self.schema)],
            "processor": str(self.config),
            "source": self.source.describe(),
            "sink": self.sink.describe(),
            "late_sink": None if self.late_sink is None else self.late_sink.describe(),
            "allowed_lateness_ms": self.allowed_lateness_ms,
        }

    def _checkpoint(self, finished: bool = False) -> None:
        tokens = {"sink": self.sink.commit(),
                  "late_sink": None if self.late_sink is None else self.late_sink.commit()}
        header = dict(self._identity(), batches=self._position, finished=finished,
                      written=time.time())
        payload = {"engine": self.engine.snapshot(), "sinks": tokens,
                   "job": {"latencies": np.array(self._latencies), "records_out":
                           self._records_out, "batches": self._batches}}
        write_checkpoint(self.checkpoint_dir, header, payload)
        self.checkpoints_written += 1

    def _recover(self) -> tuple[dict | None, dict | None, bool]:
        """Load the checkpoint if there is one: (sink token, late-sink token, finished)."""
        if self.checkpoint_dir is None:
            return None, None, False
        found = read_checkpoint(self.checkpoint_dir, self._identity())
        if found is None:
            return None, None, False
        head, payload = found
        try:
            _check_job_payload(payload, self.sql)
            if not (isinstance(head.get("batches"), int) and head["batches"] >= 0
                    and isinstance(head.get("finished"), bool)):
                raise ValueError("its header's batches or finished is not a count / bool")
            engine = StreamExecutionEngine.restore(
                payload["engine"], late_sink=None if self.late_sink is None
                else self.late_sink.write)
        except ValueError as ex:  # a crafted or damaged payload (its checksum matched)
            raise CheckpointError(f"checkpoint {self.checkpoint_dir} is refused: "
                                  f"{ex}") from None
        if engine.num_partitions not in (None, self.processor.num_partitions):
            raise CheckpointError(
                f"checkpoint {self.checkpoint_dir} holds state in {engine.num_partitions} "
                f"partitions; processor {self.config} has {self.processor.num_partitions}")
        self.engine = engine
        self._position = int(head["batches"])
        self.resumed_from = self._position
        job = payload["job"]
        self._latencies.extend(float(x) for x in job["latencies"])
        self._records_out = int(job["records_out"])
        self._batches = int(job["batches"])
        return payload["sinks"]["sink"], payload["sinks"]["late_sink"], bool(head["finished"])

    # ------------------------------------------------------------------ running
    def run(self) -> dict[str, Any]:
        """Run to the end of the source (or until :meth:`stop`); returns the metrics.
        Raises :class:`JobFailed` (with the cause) when the job fails."""
        self._started = time.perf_counter()
        self.status = "running"
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            self.status = "failed"
            self._ended = time.perf_counter()
            self._abandon()
            raise JobFailed(f"job {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        self._ended = time.perf_counter()
        return self.metrics()

    def _sinks(self) -> list[Sink]:
        return [self.sink] + ([self.late_sink] if self.late_sink is not None else [])

    def _abandon(self) -> None:
        """After a failure: release files without committing anything new (the last
        checkpoint and its committed output stay usable)."""
        for s in self._sinks():
            with contextlib.suppress(Exception):  # the job's own error is reported
                s.abort()

    def _run(self) -> None:
        token, late_token, finished = self._recover()
        if finished:
            self._complete(token, late_token)
            return
        self.sink.open(token)
        if self.late_sink is not None:
            self.late_sink.open(late_token)
        proc, engine = self.processor, self.engine
        self._process_source(proc, engine)
        if self._stop.is_set() and not self._flush_on_stop:
            self._suspend()
            return
        self._finish(proc, engine)

    def _complete(self, token: dict | None, late_token: dict | None) -> None:
        """An earlier run ended (its final checkpoint was written): complete its files."""
        self.sink.complete(token)
        if self.late_sink is not None:
            self.late_sink.complete(late_token)
        self.status = "finished"

    def _process_source(self, proc: Any, engine: StreamExecutionEngine) -> None:
        """The source's batches through the processor until its end or a stop, checkpointed."""
        last_cp = time.perf_counter()
        since_cp = 0
        batches = self.source.batches(self._position)
        while not self._stop.is_set():
            t_read = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            t1 = self._process_batch(proc, engine, batch, t_read)
            since_cp += 1
            if self._checkpoint_due(since_cp, t1 - last_cp):
                self._checkpoint()
                since_cp, last_cp = 0, time.perf_counter()
            if self.on_progress is not None:
                self.on_progress(self.progress())

    def _process_batch(self, proc: Any, engine: StreamExecutionEngine, batch: Any,
                       t_read: float) -> float:
        """One batch processed, its rows written and counted; returns when it was done."""
        t0 = time.perf_counter()
        try:
            out = proc.process_batch(batch, engine)
        except LateSinkError as exc:
            # the batch was processed but its late records were not delivered: its output
            # is written and the job fails (whatever on_error says), with no checkpoint
            # after it, so a rerun from the last checkpoint delivers everything once
            self._written(exc.output, t0, t_read)
            raise
        except (ValueError, TypeError) as exc:
            if self.on_error == "fail":
                raise ValueError(f"{self.source.name}: batch {self._position}: {exc}") \
                    from exc
            out = None  # the engine counted it as rejected and changed no state
        return self._written(out, t0, t_read)

    def _written(self, out: Any, t0: float, t_read: float) -> float:
        """A batch's rows written to the sink and counted; returns when it was done."""
        if out is not None and len(out):
            self.sink.write(out)
        t1 = time.perf_counter()
        with self._lock:
            self._latencies.append(t1 - t0)
            self._busy += t1 - t_read
            self._records_out += 0 if out is None else len(out)
            self._batches += 1
            self._position += 1
        return t1

    def _checkpoint_due(self, since_cp: int, seconds_since_cp: float) -> bool:
        """Whether a checkpoint is due (checkpoint_every batches or checkpoint_seconds)."""
        return self.checkpoint_dir is not None and (
            since_cp >= self.checkpoint_every or (
                self.checkpoint_seconds is not None
                and seconds_since_cp >= self.checkpoint_seconds))

    def _suspend(self) -> None:
        """Stopped without a flush: everything is resumable from the checkpoint."""
        if self.checkpoint_dir is not None:
            self._checkpoint()
        for s in self._sinks():
            s.close(final=False)
        self.status = "stopped"

    def _finish(self, proc: Any, engine: StreamExecutionEngine) -> None:
        """End of input (or a stop with flush): flushed rows, final checkpoint, sinks closed."""
        out = proc.flush(engine)
        if len(out):
            self.sink.write(out)
            with self._lock:
                self._records_out += len(out)
        if self.checkpoint_dir is not None:
            self._checkpoint(finished=True)
        for s in self._sinks():
            s.close()
        self.status = "stopped" if self._stop.is_set() else "finished"

    # ------------------------------------------------------------------ metrics
    def progress(self) -> dict[str, Any]:
        """Counts so far (cheap enough for every batch): job, status, batches,
        records_in, records_out, elapsed_s."""
        with self._lock:
            batches, out = self._batches, self._records_out
        return {"job": self.name, "status": self.status, "batches": batches,
                "records_in": self.engine.metrics["records_in"], "records_out": out,
                "elapsed_s": time.perf_counter() - self._started if self._started else 0.0}

    def metrics(self) -> dict[str, Any]:
        """Records in / out / filtered / late / rejected, batches, throughput, records
        per partition and load balance, batch latency percentiles (ms)."""
        m = self.engine.metrics
        with self._lock:
            lat = np.array(self._latencies) * 1e3
            out = self._records_out
            batches = self._batches
            busy = self._busy
        end = self._ended if self._ended is not None else time.perf_counter()
        parts = m.get("partition_records") or []
        mean = float(np.mean(parts)) if parts else 0.0
        res = {
            "job": self.name,
            "status": self.status,
            "processor": str(self.config),
            "records_in": m["records_in"],
            "records_out": out,
            "records_filtered": m["records_filtered"],
            "late_records": m["late_records"],
            "late_undelivered": m["late_undelivered"],
            "records_rejected": m["records_rejected"],
            "batches": batches,
            "elapsed_s": end - self._started if self._started else 0.0,
            "records_per_s": m["records_in"] / busy if busy > 0 else 0.0,
            "partition_records": parts,
            "load_balance": max(parts) / mean if parts and mean > 0 else None,
            "latency_ms": {q: float(np.percentile(lat, p)) if len(lat) else None
                           for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
            "checkpoints": self.checkpoints_written,
            "resumed_from_batch": self.resumed_from,
        }
        if self.error is not None:
            res["error"] = f"{type(self.error).__name__}: {self.error}"
        return res


class StreamJobServer:
    """Runs named jobs concurrently, each on its own thread.

    ``deploy(name, sql, source, sink, processor=None, **job_options)`` creates and starts
    a :class:`StreamJob` (the processor falls back to the server's
    ``processor_config``); ``status()``, ``metrics(name)``, ``wait()``, ``stop()``. A
    failing job is marked ``failed`` with its error; the others keep running.
    """

    def __init__(self, processor_config: Any = None):
        self.processor_config = JobProcessorConfig.coerce(processor_config)
        self._jobs: dict[str, StreamJob] = {}
        self._threads: dict[str, threading.Thread] = {}

    def deploy(self, name: str, sql: str, source: Any, sink: Any = "memory",
               processor: Any = None, **options: Any) -> StreamJob:
        if name in self._jobs and self._threads[name].is_alive():
            raise ValueError(f"a job named {name!r} is already running")
        job = StreamJob(sql, source, sink,
                        self.processor_config if processor is None else processor,
                        name=name, **options)
        self._jobs[name] = job
        t = threading.Thread(target=self._run, args=(job,), name=f"velokern-{name}",
                             daemon=True)
        self._threads[name] = t
        t.start()
        return job

    @staticmethod
    def _run(job: StreamJob) -> None:
        with contextlib.suppress(JobFailed):  # recorded on the job (status, error)
            job.run()

    def job(self, name: str) -> StreamJob:
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(f"no job named {name!r} (jobs: {sorted(self._jobs)})") from None

    @property
    def jobs(self) -> list[str]:
        return list(self._jobs)

    def status(self) -> dict[str, str]:
        return {n: j.status for n, j in self._jobs.items()}

    def metrics(self, name: str) -> dict[str, Any]:
        return self.job(name).metrics()

    def wait(self, name: str | None = None, timeout: float | None = None) -> dict[str, str]:
        """Wait for one job (or all) to end; returns the statuses."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for n in [name] if name is not None else list(self._threads):
            self.job(n)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._threads[n].join(left)
        return self.status()

    def stop(self, name: str | None = None, *, flush: bool | None = None,
             timeout: float | None = None) -> dict[str, str]:
        """Stop one job (or all) gracefully (see :meth:`StreamJob.stop`) and wait."""
        for n in [name] if name is not None else list(self._jobs):
            self.job(n).stop(flush=flush)
        return self.wait(name, timeout)

    def __enter__(self) -> StreamJobServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
