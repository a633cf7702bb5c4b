"""Numba kernels: the only package in cnncalc that imports numba.

Import it lazily (inside functions) so that ``cnncalc analyze`` never pays numba's import or
compile time.
"""
