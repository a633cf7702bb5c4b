"""Optimizer updates in one compiled pass, with the same bits as the NumPy updates of
:mod:`cnncalc.optim`.

Adam's NumPy update is a chain of eleven in-place ufuncs (momentum's four, Nesterov's seven),
each a pass over the parameter and its state; on VGG-11's 9.2 M float32 parameters those
passes stream ~37 MB arrays through the caches again and again. :func:`adam_update` reads
``x, g, m, v`` once and writes ``x, m, v`` once; :func:`momentum_update` and
:func:`nesterov_update` read ``x, g, v`` and write ``x, v``. Compiled *without* fast-math,
each operation rounds as its ufunc did (no contraction into fused multiply-adds, no
reassociation), with the scalars given in the arrays' dtype, as NumPy casts a Python float
against a float32 array; ``tests/test_optim.py`` checks them bit for bit.

The optimizer calls these only where compiled kernels are allowed (``Optimizer.step(...,
compiled=True)``; the trainer passes it off while it runs on the NumPy tier, which must compile
nothing), and the engine's warm-up compiles them with the network's other kernels
(:func:`warm`).
"""
from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = ["adam_update", "momentum_update", "nesterov_update", "warm"]


def _adam_update_py(x, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2,
                    corrected, v_scale, eps, step):
    """Adam on flat, contiguous arrays, in place (``x``, ``m``, ``v``), in NumPy's order::

        m = m*beta1 + g*(1 - beta1)
        v = v*beta2 + (g*g)*(1 - beta2)
        d = sqrt(v) [/ v_scale if corrected] + eps        v_scale = sqrt(1 - beta2**t)
        x = x - (m / d) * step                             step = lr [/ (1 - beta1**t)]
    """
    for i in range(x.shape[0]):
        gi = g[i]
        mi = m[i] * beta1 + gi * one_minus_beta1
        vi = v[i] * beta2 + (gi * gi) * one_minus_beta2
        m[i] = mi
        v[i] = vi
        d = np.sqrt(vi)
        if corrected:
            d = d / v_scale
        x[i] = x[i] - (mi / (d + eps)) * step


adam_update = jit(_adam_update_py, fastmath=False)


def _momentum_update_py(x, g, v, rho, lr):
    """SGD with momentum on flat, contiguous arrays, in place, in NumPy's order::

        v = v*rho + g;  x = x - v*lr
    """
    for i in range(x.shape[0]):
        vi = v[i] * rho + g[i]
        v[i] = vi
        x[i] = x[i] - vi * lr


momentum_update = jit(_momentum_update_py, fastmath=False)


def _nesterov_update_py(x, g, v, rho, lr, one_plus_rho):
    """Nesterov momentum (the lecture's change of variables) on flat, contiguous arrays, in
    place, in NumPy's order::

        x = x - v*rho;  v = v*rho - g*lr;  x = x + v*(1 + rho)
    """
    for i in range(x.shape[0]):
        kept = v[i] * rho
        vi = kept - g[i] * lr
        v[i] = vi
        x[i] = (x[i] - kept) + vi * one_plus_rho


nesterov_update = jit(_nesterov_update_py, fastmath=False)


def warm(dtype) -> None:
    """Compile (or load) the update kernels for parameters of ``dtype`` (the engine's warm-up
    and probe call this with the network's other kernels)."""
    dt = np.dtype(dtype)
    a = [np.zeros(1, dt) for _ in range(4)]
    s = dt.type(0.5)
    adam_update(*a, s, s, s, s, True, s, s, s)
    momentum_update(*a[:3], s, s)
    nesterov_update(*a[:3], s, s, s)
