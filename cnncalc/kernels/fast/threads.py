"""A small persistent pool of Python threads for data-parallel steps over serial ``nogil`` kernels.

Why not ``prange``: parallel numba kernels cannot be cached (``_jit`` policy), so every process
would compile them again (10-30 s). Instead the engine runs *serial, cached, nogil* kernels on
chunks of the batch from ``T`` threads: the calling thread and ``T - 1`` persistent workers.
Why two threads by default, and the measured cost of each hand-over: see this package's README.

* :func:`get_pool` returns the process-wide pool for a thread count (created once, reused by
  every network; a lock serialises concurrent ``run`` calls from different caller threads; a
  forked child builds its own).
* ``run(fn, n)`` returns ``[fn(0), ..., fn(n - 1)]``, in chunk order. ``n`` may exceed the
  thread count: chunks are *claimed dynamically* (an atomic counter per job), by the caller as
  well as by the workers, so a worker the OS has descheduled (another busy process on the cores)
  delays the job by at most the one chunk it holds; the caller takes the rest. A chunk's result
  depends on its index only, never on the thread that ran it, so callers that reduce the
  results in chunk order (per-chunk partial gradients) are bitwise repeatable. Exceptions in a
  worker are re-raised in the caller.
* Flush-to-zero is per thread (MXCSR): ``run(fn, n, flush=True)`` has each worker switch
  FTZ/DAZ to ``flush`` before its chunks when it is not already so (a worker is the engine's own
  thread and keeps the setting between calls). The calling thread is left alone: the engine
  sets and restores its state around the whole call (:class:`.thread_state.EngineCall`), which
  also keeps BLAS single-threaded while the workers run.
* Hand-over, bounded so that contention cannot turn it into a collapse: a worker spins
  (GIL-free, :mod:`.spin`) ~0.5 ms for the next job, the caller ~0.1 ms for the workers' last
  chunks, before either blocks on an Event (a futex wake-up cost 25-40 us here). A spinning
  thread on a loaded machine takes the core from the thread it waits for; blocking gives it
  back. The spins are times, turned into poll counts when the pool is made
  (:func:`.spin.poll_seconds`), and a spin that sees its flag waits for the GIL to be free
  before it returns (:func:`.spin.gil_word`), so that the thread does not go to sleep asking
  for a GIL that the other is about to release.
"""
from __future__ import annotations

import itertools
import os
import threading

__all__ = ["WorkerPool", "default_threads", "get_pool", "split"]


def default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


# Chunks per thread when a batch is split: more than one, so that the threads that run balance
# the work of one that does not (descheduled by a competing process); few, because each chunk
# costs a Python-level call, a partial gradient to sum and smaller blocks. Two, not four: steps
# alternating the two settings in one process (bench/bench_step_overheads.py --levers, batch
# 64): resnet20_cifar 1.5-5 % faster alone (e.g. 109.5 vs 115.6 ms) and as fast beside one busy
# process (187.5 vs 188.5 ms); cifar_bn 51.3 vs 52.7 ms alone, 97.1 vs 96.8 busy. One chunk per
# thread was faster still alone (105.2 ms) but slower busy (193.4 ms): a descheduled worker
# then holds half the batch.
CHUNKS_PER_THREAD = 2


def split(n: int, threads: int, per_thread: int = CHUNKS_PER_THREAD) -> list[tuple[int, int]]:
    """Contiguous chunks ``[(a, b), ...]`` of ``range(n)``: one for one thread, else up to
    ``per_thread * threads`` (at most ``n``). The boundaries depend on ``n`` and ``threads``
    only, so per-chunk reductions repeat bit for bit."""
    c = 1 if threads <= 1 else max(1, min(n, per_thread * threads))
    return [(i * n // c, (i + 1) * n // c) for i in range(c)]


def _set_flush(on: bool) -> None:
    from .thread_state import set_thread_flush

    set_thread_flush(on)


# Seconds a thread spins before it blocks: a worker ~0.5 ms for the next job, the caller ~0.1 ms
# for the chunks still running on workers. Poll counts are set per pool from the measured poll
# time: x86 ``pause`` took ~50 ns on the machines these spins were first tuned on and ~13 ns on
# others, where fixed counts of 4,000 and 1,000 polls made the spins a quarter as long and the
# threads block (and wait for a wake-up) more often (``resnet20_cifar``, alternating in one
# process: 152 ms per step with the counts, 142 with 0.2 ms / 50 us). 0.5 ms covers the gap
# between a LeNet-5 step's pool runs (optimizer, loss): 1.66 -> 1.45 ms per step against
# 0.2 ms; beside one busy process the steps still degrade less than PyTorch's (the fast-path
# README, "GIL-aware spins").
SPIN_GO_SECONDS = 500e-6
SPIN_DONE_SECONDS = 100e-6


def _spinners():
    """``(spin_while, spin_until, go_polls, done_polls, gil)``: the GIL-free spin kernels, the
    poll counts for the spin times above, and the GIL's ``locked`` word (a zero stand-in where
    it cannot be found: the spins then do not wait for the GIL); the kernels are None without
    the JIT."""
    import numpy as np

    from .thread_state import jit_disabled

    if jit_disabled():
        return None, None, 0, 0, None
    from .spin import gil_word, poll_seconds, spin_until, spin_while

    poll = poll_seconds()
    gil = gil_word()
    return (spin_while, spin_until, max(1, round(SPIN_GO_SECONDS / poll)),
            max(1, round(SPIN_DONE_SECONDS / poll)),
            np.zeros(1, np.int32) if gil is None else gil)


class _Job:
    """One ``run``: chunks are claimed from ``claim`` and counted done in ``finished``."""

    __slots__ = ("fn", "n", "seq", "flush", "claim", "finished", "results", "error")

    def __init__(self, fn, n, seq, flush):
        self.fn, self.n, self.seq, self.flush = fn, n, seq, flush
        self.claim = itertools.count()      # next(...) is atomic under the GIL
        self.finished = itertools.count(1)
        self.results = [None] * n
        self.error: BaseException | None = None


class _Worker(threading.Thread):
    def __init__(self, pool: WorkerPool, index: int):
        super().__init__(name=f"cnncalc-worker-{index}", daemon=True)
        self.pool = pool
        self.index = index
        self.flushing = None    # FTZ/DAZ as this thread has it now (None: not set yet)
        self.go = threading.Event()
        self.blocking = False

    def run(self) -> None:  # pragma: no cover - runs on the worker thread
        pool, flags = self.pool, self.pool.flags
        spin, polls, gil = pool.spin_while, pool.go_polls, pool.gil
        seen = 0
        while True:
            if spin is None or not spin(flags, 0, seen, polls, gil):
                # block; the GIL makes "blocking = True, then re-check" and the caller's
                # "publish, then check blocking" sequentially consistent
                self.blocking = True
                while flags[0] == seen:
                    self.go.wait()
                    self.go.clear()
                self.blocking = False
            job = pool.job
            seen = job.seq
            if self.flushing is not job.flush:
                _set_flush(job.flush)
                self.flushing = job.flush
            pool.work(job)


class WorkerPool:
    """``threads - 1`` persistent workers plus the calling thread."""

    def __init__(self, threads: int):
        import numpy as np

        self.threads = max(1, int(threads))
        self._lock = threading.Lock()
        # flags[0] = number of the job posted last, flags[1] = number of the job finished last
        self.flags = np.zeros(2, np.int64)
        self.spin_while, self.spin_until, self.go_polls, self.done_polls, self.gil = _spinners()
        self.done = threading.Event()
        self.caller_blocking = False
        self.job: _Job | None = None
        self._seq = 0
        self._workers = [_Worker(self, t) for t in range(1, self.threads)]
        for wk in self._workers:
            wk.start()

    def work(self, job: _Job) -> None:
        """Claim and run chunks of ``job`` until none is left (any thread)."""
        fn, n, results = job.fn, job.n, job.results
        while True:
            i = next(job.claim)
            if i >= n:
                return
            try:
                results[i] = fn(i)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                if job.error is None:
                    job.error = e
            if next(job.finished) == n:   # the last chunk: wake the caller
                self.flags[1] = job.seq
                if self.caller_blocking:
                    self.done.set()

    def _wait_done(self, seq: int) -> None:
        flags = self.flags
        if flags[1] == seq or (self.spin_until is not None
                               and self.spin_until(flags, 1, seq, self.done_polls, self.gil)):
            return
        self.caller_blocking = True
        try:
            while flags[1] != seq:
                self.done.wait(0.05)
                self.done.clear()
        finally:
            self.caller_blocking = False

    def run(self, fn, n: int | None = None, flush: bool = True) -> list:
        """``[fn(0), fn(1), ...]`` for ``n`` (default: the thread count) chunks, in parallel.

        The workers run their chunks with FTZ/DAZ ``flush``; the caller runs its own as is.
        """
        n = self.threads if n is None else max(1, int(n))
        if n == 1 or not self._workers:
            return [fn(i) for i in range(n)]
        with self._lock:
            self._seq += 1
            job = _Job(fn, n, self._seq, bool(flush))
            self.job = job
            self.flags[0] = job.seq
            for wk in self._workers[:n - 1]:
                if wk.blocking:
                    wk.go.set()
            self.work(job)
            self._wait_done(job.seq)
            if job.error is not None:
                raise job.error
            return job.results


_POOLS: dict[int, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_after_fork() -> None:  # pragma: no cover - runs in a forked child
    # the child has no worker threads: build new pools on demand instead of waiting forever
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


_FORK_HOOK = []  # registered with the first pool, not at import


def _watch_forks() -> None:
    if not _FORK_HOOK and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_pools_after_fork)
        _FORK_HOOK.append(True)


def get_pool(threads: int) -> WorkerPool:
    """The shared pool with ``threads`` threads (the caller counts as one)."""
    pool = _POOLS.get(threads)     # the engine asks before every pool run: no lock once made
    if pool is not None:
        return pool
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            _watch_forks()
            pool = _POOLS[threads] = WorkerPool(threads)
    return pool
