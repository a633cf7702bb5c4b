"""Centered-difference gradient checks (float64, h = 1e-6)."""
from __future__ import annotations

import numpy as np

H = 1e-6
TOL = 1e-6
# Gradient entries smaller than this are compared absolutely (|a - n| / FLOOR): a centred
# difference carries ~1e-10 of round-off, so a relative error on a near-zero entry is noise.
FLOOR = 1e-3


def numeric_grad(f, x, dout=None, h=H):
    """Gradient of ``sum(f() * dout)`` (or of the scalar ``f()`` when ``dout`` is None) with
    respect to the array ``x``, which ``f`` must read; ``x`` is perturbed in place and restored."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = f()
        x[idx] = old - h
        fm = f()
        x[idx] = old
        diff = np.asarray(fp, dtype=np.float64) - np.asarray(fm, dtype=np.float64)
        g[idx] = (diff.sum() if dout is None else (diff * dout).sum()) / (2 * h)
    return g


def rel_error(analytic, numeric, floor=FLOOR):
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    assert a.shape == n.shape, (a.shape, n.shape)
    den = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    return float(np.max(np.abs(a - n) / den)) if a.size else 0.0


def check(f, wrt: dict, analytic: dict, dout=None, tol=TOL, h=H):
    """Assert that ``analytic[name]`` matches the numeric gradient for each array in ``wrt``.

    Also guards against vacuous passes: every analytic gradient must have a non-zero entry.
    """
    for name, arr in wrt.items():
        num = numeric_grad(f, arr, dout, h)
        err = rel_error(analytic[name], num)
        assert np.abs(num).max() > 0, f"{name}: numeric gradient is identically zero"
        assert err < tol, f"{name}: max relative error {err:.3e} >= {tol:g}"
