"""How many workers a V2 batch runs on: all of the processor's, or the calling thread
alone; and, for a job keyed by hash, how many partitions its state runs in: all of them
on several workers, one (V1's layout: velokern.exec.reshard) on one worker. The answer
never depends on either.

Small batches (fewer than ``config.PARALLEL_MIN_ROWS`` rows) run on the calling
thread: waking the workers and splitting the work costs more than they save. For the
large ones V2 measures: it keeps a running cost per row of the batches it ran on all
workers and of those it ran on one, and runs the next batch the cheaper way (the way in
use averages its recent batches; the other way's cost is its last probe's). When
another process takes a core, the workers that share it are descheduled and the rest
wait for them at the end of each parallel step, so the parallel cost rises past the
serial one and V2 goes on alone. Now and then a large batch runs the other way, so the
choice comes back once the core is free again: ``config.V2_PROBE_EVERY`` large batches
after the choice changed, then twice as long after each probe that confirmed it, up to
``config.V2_PROBE_MAX``.
"""

from __future__ import annotations

from velokern import config

__all__ = ["WorkerChoice"]


class WorkerChoice:
    """The worker count of each batch of one V2 job (``threads``: all its workers)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._cost: dict[int, float | None] = {1: None, threads: None}  # s per row
        self._seen: dict[int, int] = {1: 0, threads: 0}
        self._probe = False  # the batch under way runs the other way, to measure it
        self._every = 0  # large batches between probes (0: not started)
        self._until = 0  # large batches left before the next probe
        self._best: int | None = None
        self.serial_run = 0  # batches in a row that ran on one worker
        self.layout: int | None = None  # the partitions the job's state runs in now

    def threads_for(self, rows: int) -> int:
        """Workers for a batch of ``rows`` rows."""
        if self.threads <= 1 or rows < config.PARALLEL_MIN_ROWS:
            self.serial_run += 1
            return 1
        t = self._threads_for(rows)
        self.serial_run = self.serial_run + 1 if t == 1 else 0
        return t

    def partitions_for(self, threads: int, job: int, rows: int, empty: bool = False) -> int:
        """The partitions the state of a job of ``job`` partitions runs the next batch
        of ``rows`` rows in: all of them on several workers; one for a large batch on one
        worker (what its cost is measured on is V1's layout), and for a small one after
        config.V2_ONE_PARTITION_AFTER batches in a row on one worker, or at once while
        the state is ``empty`` (nothing to move); else where it is."""
        if threads > 1:
            return job
        if empty or rows >= config.PARALLEL_MIN_ROWS or (
                self.serial_run >= config.V2_ONE_PARTITION_AFTER):
            return 1
        return job if self.layout is None else self.layout

    def _threads_for(self, rows: int) -> int:
        par, one = self._cost[self.threads], self._cost[1]
        if par is None:
            return self.threads
        if one is None:
            return 1
        best, other = (self.threads, 1) if par <= one else (1, self.threads)
        if best != self._best:  # the choice changed: probe often again
            self._best = best
            self._every = self._until = max(config.V2_PROBE_EVERY, 2)
        self._until -= 1
        self._probe = self._until <= 0
        if not self._probe:
            return best
        # a probe that leaves the choice as it is doubles the wait before the next one
        # (up to V2_PROBE_MAX large batches): a steady machine pays for few probes
        self._every = min(2 * self._every, max(config.V2_PROBE_MAX, config.V2_PROBE_EVERY))
        self._until = self._every
        return other

    def observe(self, rows: int, threads: int, seconds: float) -> None:
        """A large batch of ``rows`` rows took ``seconds`` on ``threads`` workers (the
        first batch each way is not counted: it may have compiled kernels)."""
        if self.threads <= 1 or rows < config.PARALLEL_MIN_ROWS:
            return
        self._seen[threads] += 1
        if self._seen[threads] == 1:
            return
        cost = seconds / rows
        old = self._cost[threads]
        w = config.V2_COST_WEIGHT
        # a probe's cost replaces the other way's (its running cost is as old as the
        # last probe); the way in use averages its batches
        probe, self._probe = self._probe, False
        self._cost[threads] = cost if old is None or probe else (1 - w) * old + w * cost

    def costs(self) -> dict[str, float | None]:
        """The running costs in ns per row: on all workers, and on one."""
        def ns(c):
            return None if c is None else c * 1e9
        return {"parallel_ns_per_row": ns(self._cost[self.threads]),
                "serial_ns_per_row": ns(self._cost[1])}
