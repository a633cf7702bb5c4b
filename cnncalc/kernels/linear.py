"""Fully connected layer (PyTorch layout): ``y = x @ w.T + b`` with ``w`` (out, in), ``b`` (out,).

Plain NumPy: one BLAS GEMM per call is already the fastest form; the result keeps x's dtype.
"""
from __future__ import annotations

import numpy as np

__all__ = ["linear_forward", "linear_backward"]


def linear_forward(x2d, w, b, *, out=None):
    """(N, in) -> (N, out). ``b`` may be None. ``out`` may be a preallocated (N, out) buffer."""
    y = np.matmul(x2d, w.T, out=out)
    if b is not None:
        y += b
    return y


def linear_backward(dy, x2d, w, *, need_dx=True):
    """Returns ``(dx or None, dw, db)``: dx = dy @ w, dw = dy.T @ x, db = sum over the batch."""
    dx = dy @ w if need_dx else None
    return dx, dy.T @ x2d, dy.sum(axis=0)
