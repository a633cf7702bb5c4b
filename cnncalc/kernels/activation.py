"""Activation functions: forward/backward pairs.

ReLU and leaky ReLU are numba kernels (one pass, no temporaries: they sit on the hot path of every
conv layer); the others are plain NumPy, stable for large |x| and dtype-preserving (float32 stays
float32). What each backward needs:

==============  ===========================================
function        backward arguments
==============  ===========================================
relu            ``relu_backward(dy, y)``  (``x`` works too)
leaky_relu      ``leaky_relu_backward(dy, x, slope)``
elu             ``elu_backward(dy, x, alpha)``
sigmoid         ``sigmoid_backward(dy, y)``
tanh            ``tanh_backward(dy, y)``
mish            ``mish_backward(dy, x)``
swish / silu    ``swish_backward(dy, x)``
softmax         ``softmax_backward(dy, y)`` (softmax over axis 1)
prelu           ``prelu_backward(dy, x, alpha) -> (dx, dalpha)``
hardswish       ``hardswish_backward(dy, x)``
hardsigmoid     ``hardsigmoid_backward(dy, x)``
relu6           ``relu6_backward(dy, x)``
maxout          ``maxout_backward(dy, x2d, w, argmax, pieces) -> (dx, dw, db)``
==============  ===========================================
"""
from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = [
    "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
    "elu_forward", "elu_backward", "sigmoid_forward", "sigmoid_backward", "tanh_forward",
    "tanh_backward", "mish_forward", "mish_backward", "swish_forward", "swish_backward",
    "silu_forward", "silu_backward", "softmax_forward", "softmax_backward", "prelu_forward",
    "prelu_backward", "maxout_forward", "maxout_backward", "hardswish_forward",
    "hardswish_backward", "hardsigmoid_forward", "hardsigmoid_backward", "relu6_forward",
    "relu6_backward",
]

# ------------------------------------------------------------------------------ numba kernels
def _leaky_fwd_py(x, slope, y):
    s = x.dtype.type(slope)
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > zero else v * s


_leaky_fwd_s = jit(_leaky_fwd_py)


def _leaky_bwd_py(dy, x, slope, dx):
    s = x.dtype.type(slope)
    zero = x.dtype.type(0)
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > zero else dy[i] * s


_leaky_bwd_s = jit(_leaky_bwd_py)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _out(shape_like, out):
    if out is None:
        return np.empty_like(shape_like)
    return out


def relu_forward(x, *, out=None):
    """max(x, 0). ``out`` may be ``x`` itself (in place)."""
    x = np.ascontiguousarray(x)
    y = _out(x, out)
    _leaky_fwd_s(x.reshape(-1), 0.0, y.reshape(-1))
    return y


def relu_backward(dy, y, *, out=None):
    """dy where y > 0 (pass the forward output ``y`` or the input ``x``: same sign)."""
    dy = np.ascontiguousarray(dy)
    dx = _out(dy, out)
    _leaky_bwd_s(dy.reshape(-1), _flat(y), 0.0, dx.reshape(-1))
    return dx


def leaky_relu_forward(x, slope=0.01, *, out=None):
    """x if x > 0 else slope*x."""
    x = np.ascontiguousarray(x)
    y = _out(x, out)
    _leaky_fwd_s(x.reshape(-1), float(slope), y.reshape(-1))
    return y


def leaky_relu_backward(dy, x, slope=0.01, *, out=None):
    """Needs the forward input ``x`` (with slope >= 0 the output ``y`` works too)."""
    dy = np.ascontiguousarray(dy)
    dx = _out(dy, out)
    _leaky_bwd_s(dy.reshape(-1), _flat(x), float(slope), dx.reshape(-1))
    return dx


# ------------------------------------------------------------------------------ NumPy ones
def elu_forward(x, alpha=1.0):
    """x if x > 0 else alpha*(exp(x) - 1)."""
    x = np.asarray(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def elu_backward(dy, x, alpha=1.0):
    """Needs the forward input ``x``."""
    x = np.asarray(x)
    return (dy * np.where(x > 0, 1, alpha * np.exp(np.minimum(x, 0)))).astype(x.dtype, copy=False)


def sigmoid_forward(x):
    """1/(1 + exp(-x)), without overflow for large |x|."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dy, y):
    """Needs the forward output ``y``."""
    return dy * y * (1 - y)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    """Needs the forward output ``y``."""
    return dy * (1 - y * y)


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def mish_forward(x):
    """x * tanh(softplus(x))."""
    x = np.asarray(x)
    return (x * np.tanh(_softplus(x))).astype(x.dtype, copy=False)


def mish_backward(dy, x):
    """Needs the forward input ``x``: d/dx = tanh(sp) + x * (1 - tanh(sp)^2) * sigmoid(x)."""
    x = np.asarray(x)
    t = np.tanh(_softplus(x))
    return (dy * (t + x * (1 - t * t) * sigmoid_forward(x))).astype(x.dtype, copy=False)


def swish_forward(x):
    """x * sigmoid(x) (SiLU)."""
    x = np.asarray(x)
    return x * sigmoid_forward(x)


def swish_backward(dy, x):
    """Needs the forward input ``x``: d/dx = s + x*s*(1 - s)."""
    x = np.asarray(x)
    s = sigmoid_forward(x)
    return dy * (s + x * s * (1 - s))


silu_forward = swish_forward
silu_backward = swish_backward


def softmax_forward(x):
    """Softmax over axis 1 (classes / channels), shifted by the max for stability."""
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy, y):
    """Needs the forward output ``y``: dx = y * (dy - sum(dy*y, axis=1))."""
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def _alpha_view(alpha, ndim):
    alpha = np.asarray(alpha)
    if alpha.shape[0] == 1:
        return alpha.reshape((1,) * ndim), True
    return alpha.reshape((1, -1) + (1,) * (ndim - 2)), False


def prelu_forward(x, alpha):
    """x if x > 0 else alpha*x; ``alpha`` (1,) shared or (C,) per channel (axis 1)."""
    x = np.asarray(x)
    a, _ = _alpha_view(alpha, x.ndim)
    return np.where(x > 0, x, a * x).astype(x.dtype, copy=False)


def prelu_backward(dy, x, alpha):
    """Needs the forward input ``x``. Returns ``(dx, dalpha)``, ``dalpha`` shaped like alpha."""
    x = np.asarray(x)
    a, shared = _alpha_view(alpha, x.ndim)
    pos = x > 0
    dx = np.where(pos, dy, a * dy).astype(x.dtype, copy=False)
    g = np.where(pos, 0, dy * x).astype(x.dtype, copy=False)
    if shared:
        dalpha = np.array([g.sum()], dtype=x.dtype)
    else:
        axes = (0,) + tuple(range(2, x.ndim))
        dalpha = g.sum(axis=axes)
    return dx, dalpha


def maxout_forward(x2d, w, b, pieces):
    """Maxout unit layer: ``y[:, j] = max_p (w[j*pieces + p] . x + b[j*pieces + p])``.

    ``w`` is (units*pieces, in), ``b`` (units*pieces,). Returns ``(y, argmax)`` with ``y``
    (N, units) and ``argmax`` (N, units) int32 piece indices (first maximum wins).
    """
    n = x2d.shape[0]
    units = w.shape[0] // pieces
    z = x2d @ w.T
    if b is not None:
        z += b
    z = z.reshape(n, units, pieces)
    am = z.argmax(axis=2).astype(np.int32)
    y = np.take_along_axis(z, am[:, :, None], axis=2)[:, :, 0]
    return np.ascontiguousarray(y), am


def maxout_backward(dy, x2d, w, argmax, pieces):
    """Needs the forward input and ``argmax``. Returns ``(dx, dw, db)``."""
    n, units = dy.shape
    dz = np.zeros((n, units, pieces), dtype=dy.dtype)
    np.put_along_axis(dz, argmax[:, :, None].astype(np.intp), dy[:, :, None], axis=2)
    dz = dz.reshape(n, units * pieces)
    return dz @ w, dz.T @ x2d, dz.sum(axis=0)


def hardswish_forward(x):
    """PyTorch's Hardswish: x·min(max(x + 3, 0), 6)/6 (0 for x <= -3, x for x >= 3)."""
    x = np.asarray(x)
    return (x * np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def hardswish_backward(dy, x):
    """Needs the forward input ``x``: d/dx = 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, 1 for
    x >= 3 (PyTorch's values at the kinks)."""
    x = np.asarray(x)
    return np.where(x <= -3, 0, np.where(x < 3, dy * (x / 3 + 0.5), dy)).astype(x.dtype,
                                                                                  copy=False)


def hardsigmoid_forward(x):
    """PyTorch's Hardsigmoid: min(max(x + 3, 0), 6)/6."""
    x = np.asarray(x)
    return (np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def hardsigmoid_backward(dy, x):
    """Needs the forward input ``x``: d/dx = 1/6 for -3 < x < 3, else 0 (0 at both kinks, as
    PyTorch)."""
    x = np.asarray(x)
    return np.where((x > -3) & (x < 3), dy * x.dtype.type(1 / 6), 0).astype(x.dtype, copy=False)


def relu6_forward(x):
    """PyTorch's ReLU6: min(max(x, 0), 6)."""
    x = np.asarray(x)
    return np.clip(x, 0, 6).astype(x.dtype, copy=False)


def relu6_backward(dy, x):
    """Needs the forward input ``x``: d/dx = 1 for 0 < x < 6, else 0 (0 at both kinks, as
    PyTorch)."""
    x = np.asarray(x)
    return np.where((x > 0) & (x < 6), dy, 0).astype(x.dtype, copy=False)
