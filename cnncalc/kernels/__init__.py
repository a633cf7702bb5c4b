"""Numba kernels: the only package in cnncalc that imports numba.

The generic kernels (conv, pool, activation, norm, linear, dropout, loss) live here; the fast
path (generated chain kernels, fused kernels, the worker-thread pool, the per-thread CPU state)
lives in :mod:`cnncalc.kernels.fast`, with the measured reasons in its README.md.

Import it lazily (inside functions) so that ``cnncalc analyze`` never pays numba's import or
compile time. Importing a kernel module changes no process state.
"""
