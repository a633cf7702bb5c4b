"""Fused optimizer steps over one flat parameter buffer (PERF-NOTES lesson 9).

Every model parameter is a view into one flat ``params`` buffer, every gradient a view into one
flat ``grads`` buffer of the same length, and each optimizer state (momentum, second moments) is one
flat buffer too. A step is then one pass over memory: ~9 us for LeNet-5's 62k parameters.

All arrays: 1-D, C-contiguous, the same float dtype (float32 or float64); updated in place.
State buffers start at zero. The update rules are PyTorch's (``torch.optim``), with L2
``weight_decay`` added to the gradient (``g += wd * p``) unless stated otherwise:

=========  ===============================================================================
sgd        p -= lr * g
momentum   buf = mu * buf + g;  p -= lr * buf
nesterov   buf = mu * buf + g;  p -= lr * (g + mu * buf)
adagrad    s += g²;  p -= lr * g / (sqrt(s) + eps)
rmsprop    s = alpha * s + (1 - alpha) * g²;  p -= lr * g / (sqrt(s) + eps)
adam       m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g²;
           p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
           (``decoupled=True`` is AdamW: p *= 1 - lr * wd instead of the L2 term)
=========  ===============================================================================

Hyper-parameters travel to the kernels as a small array of the buffers' dtype, so float32 updates
never promote to float64 (PERF-NOTES lesson 6). Buffers of at least ``PARALLEL_MIN`` elements use
the parallel twin; smaller ones the serial cached kernel (a ``prange`` launch costs 2-4 us).
Call :func:`cnncalc.kernels.denormals.enable_flush_denormals` once at start-up: momentum of dead
units decays into denormals, which made this kernel ~20x slower (lesson 5).
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, pjit, prange

PARALLEL_MIN = 1 << 20


def _sgd_py(p, g, hp):
    lr, wd = hp[0], hp[1]
    for i in prange(p.shape[0]):
        p[i] -= lr * (g[i] + wd * p[i])


# Each loop stores into one array only: with two stores per loop LLVM gave up on its alias checks
# and emitted scalar code (PERF-NOTES lesson 7). The extra pass re-reads L2-resident data.


def _momentum_py(p, g, buf, hp):
    lr, mu, wd = hp[0], hp[1], hp[2]
    for i in prange(p.shape[0]):
        buf[i] = mu * buf[i] + (g[i] + wd * p[i])
    for i in prange(p.shape[0]):
        p[i] -= lr * buf[i]


def _nesterov_py(p, g, buf, hp):
    lr, mu, wd = hp[0], hp[1], hp[2]
    for i in prange(p.shape[0]):
        buf[i] = mu * buf[i] + (g[i] + wd * p[i])
    for i in prange(p.shape[0]):
        p[i] -= lr * ((g[i] + wd * p[i]) + mu * buf[i])


def _adagrad_py(p, g, s, hp):
    lr, eps, wd = hp[0], hp[1], hp[2]
    for i in prange(p.shape[0]):
        gi = g[i] + wd * p[i]
        s[i] += gi * gi
    for i in prange(p.shape[0]):
        p[i] -= lr * (g[i] + wd * p[i]) / (np.sqrt(s[i]) + eps)


def _rmsprop_py(p, g, s, hp):
    lr, alpha, eps, wd = hp[0], hp[1], hp[2], hp[3]
    one = hp[4]
    for i in prange(p.shape[0]):
        gi = g[i] + wd * p[i]
        s[i] = alpha * s[i] + (one - alpha) * gi * gi
    for i in prange(p.shape[0]):
        p[i] -= lr * (g[i] + wd * p[i]) / (np.sqrt(s[i]) + eps)


def _adam_py(p, g, m, v, hp):
    # hp: step_size = lr / bc1, b1, b2, eps, l2 wd, decay factor (1 - lr*wd or 1), 1/sqrt(bc2), 1
    step, b1, b2, eps, wd, decay, inv_sbc2, one = (hp[0], hp[1], hp[2], hp[3], hp[4], hp[5],
                                                   hp[6], hp[7])
    for i in prange(p.shape[0]):
        m[i] = b1 * m[i] + (one - b1) * (g[i] + wd * p[i])
    for i in prange(p.shape[0]):
        gi = g[i] + wd * p[i]
        v[i] = b2 * v[i] + (one - b2) * gi * gi
    for i in prange(p.shape[0]):
        p[i] = p[i] * decay - step * m[i] / (np.sqrt(v[i]) * inv_sbc2 + eps)


_SERIAL = {name: jit(fn) for name, fn in (("sgd", _sgd_py), ("momentum", _momentum_py),
                                           ("nesterov", _nesterov_py), ("adagrad", _adagrad_py),
                                           ("rmsprop", _rmsprop_py), ("adam", _adam_py))}
_PARALLEL: dict = {}
_PY = {"sgd": _sgd_py, "momentum": _momentum_py, "nesterov": _nesterov_py,
       "adagrad": _adagrad_py, "rmsprop": _rmsprop_py, "adam": _adam_py}


def _run(name, p, arrays, hp, parallel):
    hp = np.array(hp, dtype=p.dtype)
    if parallel is None:
        parallel = p.shape[0] >= PARALLEL_MIN
    if parallel:
        fn = _PARALLEL.get(name)
        if fn is None:
            fn = _PARALLEL[name] = pjit(_PY[name])
    else:
        fn = _SERIAL[name]
    fn(p, *arrays, hp)


def sgd(p, g, lr, weight_decay=0.0, parallel=None):
    """Plain SGD step in place."""
    _run("sgd", p, (g,), (lr, weight_decay), parallel)


def momentum(p, g, buf, lr, momentum=0.9, weight_decay=0.0, parallel=None):
    """SGD with (heavy-ball) momentum, PyTorch's rule with dampening 0."""
    _run("momentum", p, (g, buf), (lr, momentum, weight_decay), parallel)


def nesterov(p, g, buf, lr, momentum=0.9, weight_decay=0.0, parallel=None):
    """SGD with Nesterov momentum (PyTorch's ``nesterov=True``)."""
    _run("nesterov", p, (g, buf), (lr, momentum, weight_decay), parallel)


def adagrad(p, g, sum_sq, lr=1e-2, eps=1e-10, weight_decay=0.0, parallel=None):
    """Adagrad (PyTorch's, without lr decay)."""
    _run("adagrad", p, (g, sum_sq), (lr, eps, weight_decay), parallel)


def rmsprop(p, g, sq, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, parallel=None):
    """RMSprop (PyTorch's, not centered, no momentum)."""
    _run("rmsprop", p, (g, sq), (lr, alpha, eps, weight_decay, 1.0), parallel)


def adam(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
         decoupled=False, parallel=None):
    """Adam (AdamW when ``decoupled``); ``t`` is this step's number, starting at 1."""
    if t < 1:
        raise ValueError(f"adam step number t must start at 1, got {t}")
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    wd, decay = (0.0, 1.0 - lr * weight_decay) if decoupled else (weight_decay, 1.0)
    _run("adam", p, (g, m, v), (lr / bc1, beta1, beta2, eps, wd, decay, 1.0 / np.sqrt(bc2), 1.0),
         parallel)
