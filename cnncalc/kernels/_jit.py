"""The one place where numba flags are chosen.

* ``SAFE_FASTMATH`` leaves out ``nnan``/``ninf``: bare ``fastmath=True`` deletes NaN checks and
  breaks max-pooling over -inf padding.
* Serial kernels are cached (``cache=True``) so a second process does not recompile.
* Parallel kernels are never cached (numba's cache and ``parallel=True`` have segfaulted together).
"""
from __future__ import annotations

import os

# One thread pool: BLAS called inside numba's prange must not start threads of its own
# (PERF-NOTES lesson 1). This must happen before numpy loads BLAS, so we set it only if the
# user has not chosen, and we also clamp through threadpoolctl at engine start-up.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numba  # noqa: E402

SAFE_FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def jit(fn=None, **extra):
    """Serial, cached kernel."""
    opts = dict(cache=True, fastmath=set(SAFE_FASTMATH), error_model="numpy", nogil=True)
    opts.update(extra)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


def pjit(fn=None, **extra):
    """Parallel kernel (``prange``); not cached, by policy."""
    opts = dict(parallel=True, cache=False, fastmath=set(SAFE_FASTMATH), error_model="numpy",
                nogil=True)
    opts.update(extra)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


prange = numba.prange


def limit_blas_threads() -> None:
    """Keep BLAS single-threaded so it never competes with numba's pool."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a runtime dependency
        return
    threadpool_limits(limits=1, user_api="blas")
