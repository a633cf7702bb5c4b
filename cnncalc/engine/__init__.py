"""Execution engine: runs a layer graph forward and backward on the numba kernels.

Imported only on demand (``cnncalc.Network``), so ``import cnncalc`` and the analyzer never load
numba. :class:`Network` is the entry point; :mod:`.plan` chooses fused kernels; :mod:`.ops`
binds one layer kind to its kernels.
"""
from cnncalc.engine.network import Network

__all__ = ["Network"]
