"""The one place where numba flags are chosen.

* ``SAFE_FASTMATH`` leaves out ``nnan``/``ninf``: bare ``fastmath=True`` deletes NaN checks and
  breaks max-pooling over -inf padding.
* Kernels are serial and cached (``cache=True``) so a second process does not recompile. There
  are no ``prange`` kernels: the engine's parallelism is data parallelism over these serial
  kernels on its own threads (``cnncalc/kernels/fast/README.md``), and numba's cache and
  ``parallel=True`` have segfaulted together.
"""
from __future__ import annotations

import numba

SAFE_FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def jit(fn=None, **extra):
    """Serial, cached kernel."""
    opts = dict(cache=True, fastmath=set(SAFE_FASTMATH), error_model="numpy", nogil=True)
    opts.update(extra)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)
