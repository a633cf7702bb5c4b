"""A small persistent pool of Python threads for data-parallel steps over serial ``nogil`` kernels.

Why not ``prange``: parallel numba kernels cannot be cached (``_jit`` policy), so every process
would compile them again (10-30 s). Instead the engine runs *serial, cached, nogil* kernels on
slices of the batch from ``T`` threads: the calling thread does slice 0, ``T - 1`` persistent
workers do the others, one dispatch per step (not per op). Why two threads by default, and the
measured cost of each hand-over: see this package's README.

* :func:`get_pool` returns the process-wide pool for a thread count (created once, reused by
  every network; a lock serialises concurrent ``run`` calls from different caller threads; a
  forked child builds its own).
* Flush-to-zero is per thread (MXCSR): ``run(fn, n, flush=True)`` has each worker switch
  FTZ/DAZ to ``flush`` before its slice when it is not already so (a worker is the engine's own
  thread and keeps the setting between calls). The calling thread is left alone: the engine
  sets and restores its state around the whole call (:class:`.thread_state.EngineCall`), which
  also keeps BLAS single-threaded while the workers run.
* ``run(fn, T)`` calls ``fn(t)`` for t in 0..T-1, t = 0 on the caller; exceptions in a worker are
  re-raised in the caller. Results come back in slice order, so reductions are deterministic.
* Hand-over: a worker spins (GIL-free, :mod:`.spin`) for ~1 ms after each slice waiting for the
  next one, and the caller spins up to ~2 ms for the workers to finish, before either falls back
  to blocking on an Event (a futex wake-up cost ~40 us here).
"""
from __future__ import annotations

import os
import threading

__all__ = ["WorkerPool", "default_threads", "get_pool"]


def default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _set_flush(on: bool) -> None:
    from .thread_state import set_thread_flush

    set_thread_flush(on)


# Polls (x86 ``pause``, ~50 ns each) a thread spins, without the GIL, before it blocks: a
# worker waits ~1 ms for the next step (training loops come back well within that), the caller
# ~2 ms for a worker to finish its slice. Blocking hand-overs cost ~40 us each here.
SPIN_GO = 20_000
SPIN_DONE = 40_000


def _spinner():
    """The GIL-free spin kernel, or None when spinning is not possible (no JIT)."""
    from .thread_state import jit_disabled

    if jit_disabled():
        return None
    from .spin import spin_until

    return spin_until


class _Worker(threading.Thread):
    def __init__(self, pool: WorkerPool, index: int):
        super().__init__(name=f"cnncalc-worker-{index}", daemon=True)
        self.pool = pool
        self.index = index
        self.flush = True       # FTZ/DAZ wanted for the next slice
        self.flushing = None    # FTZ/DAZ as this thread has it now (None: not set yet)
        self.go = threading.Event()
        self.blocking = False
        self.fn = None
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:  # pragma: no cover - runs on the worker thread
        pool, flags, i = self.pool, self.pool.flags, 2 * self.index
        spin = pool.spin
        seq = 0
        while True:
            seq += 1
            if spin is None or not spin(flags, i, seq, SPIN_GO):
                # block; the GIL makes "blocking = True, then re-check" and the caller's
                # "publish, then check blocking" sequentially consistent
                self.blocking = True
                while flags[i] != seq:
                    self.go.wait()
                    self.go.clear()
                self.blocking = False
            fn = self.fn
            self.fn = None
            if self.flushing is not self.flush:
                _set_flush(self.flush)
                self.flushing = self.flush
            try:
                self.result = fn(self.index)
                self.error = None
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self.result = None
                self.error = e
            flags[i + 1] = seq
            if pool.caller_blocking:
                pool.done.set()


class WorkerPool:
    """``threads - 1`` persistent workers plus the calling thread."""

    def __init__(self, threads: int):
        import numpy as np

        self.threads = max(1, int(threads))
        self._lock = threading.Lock()
        # flags[2w] = step number posted to worker w, flags[2w + 1] = step it finished
        self.flags = np.zeros(2 * self.threads, np.int64)
        self.spin = _spinner()
        self.done = threading.Event()
        self.caller_blocking = False
        self._seq = [0] * self.threads
        self._workers = [_Worker(self, t) for t in range(1, self.threads)]
        for wk in self._workers:
            wk.start()

    def _wait_done(self, wk: _Worker, seq: int) -> None:
        i = 2 * wk.index + 1
        if self.spin is not None and self.spin(self.flags, i, seq, SPIN_DONE):
            return
        self.caller_blocking = True
        try:
            while self.flags[i] != seq:
                self.done.wait(0.05)
                self.done.clear()
        finally:
            self.caller_blocking = False

    def run(self, fn, n: int | None = None, flush: bool = True) -> list:
        """``[fn(0), fn(1), ...]`` for the first ``n`` (default all) slices, in parallel.

        The workers run their slices with FTZ/DAZ ``flush``; slice 0 runs on the caller as is.
        """
        n = self.threads if n is None else max(1, min(n, self.threads))
        with self._lock:
            active = self._workers[:n - 1]
            seqs = []
            for wk in active:
                seq = self._seq[wk.index] = self._seq[wk.index] + 1
                seqs.append(seq)
                wk.fn = fn
                wk.flush = bool(flush)
                self.flags[2 * wk.index] = seq
                if wk.blocking:
                    wk.go.set()
            err = None
            try:
                first = fn(0)
            except BaseException as e:  # noqa: BLE001 - wait for the workers before raising
                first, err = None, e
            results = [first]
            for wk, seq in zip(active, seqs):
                self._wait_done(wk, seq)
                if wk.error is not None and err is None:
                    err = wk.error
                results.append(wk.result)
                wk.result = wk.error = None
            if err is not None:
                raise err
            return results


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
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            _watch_forks()
            pool = _POOLS[threads] = WorkerPool(threads)
    return pool
