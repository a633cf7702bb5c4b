"""Execution engine: runs a layer graph forward and backward on the numba kernels.

:class:`Network` is the entry point; :mod:`.plan` chooses fused kernels; :mod:`.ops` binds one
layer kind to its kernels; :mod:`.init` holds the weight-initialisation schemes; :mod:`.fast`
is the fast path (generated chain kernels, fused kernels, the worker-thread pool).

``Network`` is imported on first use, so ``cnncalc.engine.init`` (read by the trainer's settings
validation) never loads numba.
"""
from __future__ import annotations

__all__ = ["Network"]


def __getattr__(name):
    if name == "Network":
        from cnncalc.engine.network import Network

        return Network
    raise AttributeError(f"module 'cnncalc.engine' has no attribute {name!r}")
