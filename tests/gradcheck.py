"""Centred-difference gradient checks (float64, h = 1e-6): one numeric derivative, used for
kernels and whole networks alike."""
from __future__ import annotations

import numpy as np

H = 1e-6
TOL = 1e-6
# Gradient entries smaller than this are compared absolutely (|a - n| / FLOOR): a centred
# difference carries ~1e-10 of round-off, so a relative error on a near-zero entry is noise.
FLOOR = 1e-3
N_COORDS = 12  # sampled coordinates per network tensor


def centred_difference(f, x, idx, dout=None, h=H) -> float:
    """d/dx[idx] of ``sum(f() * dout)`` (or of ``sum(f())`` when ``dout`` is None):
    ``(F(x + h) - F(x - h)) / 2h``. ``f`` must read the array ``x``, which is perturbed in place
    and restored."""
    old = x[idx]
    x[idx] = old + h
    fp = np.asarray(f(), dtype=np.float64)
    x[idx] = old - h
    fm = np.asarray(f(), dtype=np.float64)
    x[idx] = old
    diff = fp - fm
    return float((diff.sum() if dout is None else (diff * dout).sum()) / (2 * h))


def numeric_grad(f, x, dout=None, h=H):
    """The gradient of ``sum(f() * dout)`` with respect to every entry of ``x``."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        g[idx] = centred_difference(f, x, idx, dout, h)
    return g


def rel_error(analytic, numeric, floor=FLOOR):
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    assert a.shape == n.shape, (a.shape, n.shape)
    den = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    return float(np.max(np.abs(a - n) / den)) if a.size else 0.0


def away_from(x, kinks=(0.0,), margin=0.05):
    """``x`` with every entry within ``margin`` of a kink moved ``2·margin`` off it, so a ±h
    step never crosses a point where the derivative jumps."""
    x = np.array(x, dtype=np.float64)
    for k in kinks:
        d = x - k
        near = np.abs(d) < margin
        x[near] += np.sign(d[near] + 1e-12) * 2 * margin
    return x


def check(f, wrt: dict, analytic: dict, dout=None, tol=TOL, h=H):
    """Assert that ``analytic[name]`` matches the numeric gradient for each array in ``wrt``.

    Also guards against vacuous passes: every analytic gradient must have a non-zero entry.
    """
    for name, arr in wrt.items():
        num = numeric_grad(f, arr, dout, h)
        err = rel_error(analytic[name], num)
        assert np.abs(num).max() > 0, f"{name}: numeric gradient is identically zero"
        assert err < tol, f"{name}: max relative error {err:.3e} >= {tol:g}"


def check_network(net, x, training=True, seed=0, n_coords=N_COORDS, check_dx=True):
    """Check a float64 network's parameter gradients (``n_coords`` sampled entries of every
    tensor) and its input gradient against centred differences of ``sum(out * R)``, R a fixed
    random array."""
    rng = np.random.default_rng(seed)
    out = net.forward(x, training=training)
    R = rng.standard_normal(out.shape)
    dx = net.backward(R, need_dx=check_dx)
    analytic = {k: g.copy() for k, g in net.grads.items()}
    x = np.array(x, dtype=np.float64)

    def f():
        return net.forward(x, training=training)

    targets = dict(net.params)
    if check_dx:
        targets["<input>"] = x
        analytic["<input>"] = dx
    assert targets, "nothing to check"
    for name, arr in targets.items():
        flat_idx = rng.choice(arr.size, size=min(n_coords, arr.size), replace=False)
        idxs = [np.unravel_index(i, arr.shape) for i in flat_idx]
        num = np.array([centred_difference(f, arr, i, R) for i in idxs])
        ana = np.array([analytic[name][i] for i in idxs])
        err = rel_error(ana, num)
        assert err < TOL, f"{name}: max relative error {err:.3e}"
        assert np.abs(analytic[name]).max() > 0, f"{name}: analytic gradient is identically zero"
