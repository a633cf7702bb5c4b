"""Fused fast-path kernels for the common small-CNN pattern (LeNet-5 and friends).

* ``conv_relu_maxpool_forward``: conv2d (stride 1, symmetric zero pad; the convolution
  kernels of :mod:`cnncalc.kernels.conv`, so the vector-register or Winograd kernel as they
  choose) into per-thread scratch, then bias + ReLU + max-pool (pool x pool, stride pool,
  floor) in one pass over it. Only the pooled output and a small int8 argmax are kept.
* ``conv_relu_maxpool_backward``: driven by that argmax. Windows whose max was <= 0 (argmax -1:
  ReLU killed them) contribute nothing; the conv gradient is scattered to the winners only,
  then the convolution's backward runs on it.
* ``linear_relu_forward`` / ``linear_relu_backward``: fc + bias (+ ReLU) fused.

Boundary layout is NCHW with PyTorch weight shapes (conv ``(K, C, F, F)``, linear ``(out, in)``).

Design (README of this package): every kernel is serial, cached and ``nogil``; the engine's step
plan calls it on batch slices from its worker threads, each slice with its own ``out`` dict
(scratch and partial weight/bias gradients), and sums the partial gradients in slice order;
BLAS runs at one thread during engine calls (:mod:`.thread_state`).

Buffer reuse: every public function takes ``out``, a dict it fills with the arrays it needs (outputs
and scratch) and reuses on the next call when shapes and dtype still match. The arrays it returns
live in ``out`` and are overwritten by the next call with the same dict: keep one dict per layer
and per direction, and copy a result if it must survive the next step.
"""
from __future__ import annotations

import numpy as np

from cnncalc.shapes import out_size

from .._jit import jit
from ..conv import conv2d_backward, conv2d_forward

# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------


def _relu_pool_py(conv, col0, Wg, pool, b, y, am, n, zero):
    """y[n], am[n] from one sample's conv output conv[:, col0:] (rows of width Wg); any pool."""
    K, Hp, Wp = y.shape[1], y.shape[2], y.shape[3]
    for k in range(K):
        bk = b[k]
        for i in range(Hp):
            for j in range(Wp):
                base = col0 + i * pool * Wg + j * pool
                # branch-free first-max search: selects, not jumps (random comparisons
                # mispredict half the time)
                m = conv[k, base] + bk
                idx = 0
                for a in range(pool):
                    for c2 in range(pool):
                        v = conv[k, base + a * Wg + c2] + bk
                        better = (v > m) | (v != v)  # a NaN wins, as in PyTorch
                        m = v if better else m
                        idx = a * pool + c2 if better else idx
                alive = not m <= zero  # NaN survives the ReLU
                y[n, k, i, j] = m if alive else zero
                am[n, k, i, j] = idx if alive else -1


def _relu_pool2_py(conv, col0, Wg, b, y, am, n, zero):
    """_relu_pool for pool 2, unrolled (2x faster); ties go to the first in row-major order."""
    K, Hp, Wp = y.shape[1], y.shape[2], y.shape[3]
    for k in range(K):
        bk = b[k]
        ck = conv[k]
        yk = y[n, k]
        ak = am[n, k]
        for i in range(Hp):
            r0 = col0 + 2 * i * Wg
            r1 = r0 + Wg
            for j in range(Wp):
                v0 = ck[r0 + 2 * j] + bk
                v1 = ck[r0 + 2 * j + 1] + bk
                v2 = ck[r1 + 2 * j] + bk
                v3 = ck[r1 + 2 * j + 1] + bk
                b1 = (v1 > v0) | (v1 != v1)
                m01 = v1 if b1 else v0
                i01 = 1 if b1 else 0
                b3 = (v3 > v2) | (v3 != v3)
                m23 = v3 if b3 else v2
                i23 = 3 if b3 else 2
                b2 = (m23 > m01) | (m23 != m23)
                m = m23 if b2 else m01
                idx = i23 if b2 else i01
                alive = not m <= zero  # NaN survives the ReLU
                yk[i, j] = m if alive else zero
                ak[i, j] = idx if alive else -1


def _relu_pool_batch_py(conv, b, pool, y, am, zero):
    """y, am of every sample from the conv output ``conv`` (N, K, Ho, Wo) (bias not added)."""
    n_b, k_out, ho, wo = conv.shape
    for n in range(n_b):
        cn = conv[n].reshape((k_out, ho * wo))
        if pool == 2:
            _relu_pool2(cn, 0, wo, b, y, am, n, zero)
        else:
            _relu_pool(cn, 0, wo, pool, b, y, am, n, zero)


def _pool_grad_py(dy, am, pool, dconv, db, zero):
    """dconv (N, K, Ho, Wo) := dy at each live window's winner, zero elsewhere; db := the sum
    of dy over the live windows (argmax -1: the ReLU killed the window, no gradient)."""
    n_b, k_out, hp, wp = dy.shape
    dconv[...] = zero
    db[:] = zero
    for n in range(n_b):
        for k in range(k_out):
            acc = zero
            for i in range(hp):
                for j in range(wp):
                    a = np.int64(am[n, k, i, j])  # int8 arithmetic would overflow
                    if a >= 0:
                        g = dy[n, k, i, j]
                        acc += g
                        dconv[n, k, i * pool + a // pool, j * pool + a % pool] = g
            db[k] += acc


def _linear_fwd_py(x, w, b, relu, T, y):
    N = x.shape[0]
    O = w.shape[0]
    wt = w.T
    for t in range(T):
        r0 = t * N // T
        r1 = (t + 1) * N // T
        yt = y[r0:r1]
        np.dot(x[r0:r1], wt, yt)
        for i in range(r1 - r0):
            for o in range(O):
                v = yt[i, o] + b[o]
                if relu and v < 0:
                    yt[i, o] = 0
                else:
                    yt[i, o] = v


def _linear_bwd_py(dy, x, w, y, relu, need_dx, dz, dx, dw, db, dwp, dbp):
    N = x.shape[0]
    O = w.shape[0]
    T = dwp.shape[0]
    for t in range(T):
        r0 = t * N // T
        r1 = (t + 1) * N // T
        dbt = dbp[t]
        dbt[:] = 0
        for i in range(r0, r1):
            for o in range(O):
                if relu and not y[i, o] > 0:
                    dz[i, o] = 0
                else:
                    dz[i, o] = dy[i, o]
        for i in range(r0, r1):
            for o in range(O):
                dbt[o] += dz[i, o]
        np.dot(dz[r0:r1].T, x[r0:r1], dwp[t])
        if need_dx:
            np.dot(dz[r0:r1], w, dx[r0:r1])
    dw[:] = dwp[0]
    db[:] = dbp[0]
    for t in range(1, T):
        dw += dwp[t]
        db += dbp[t]


_relu_pool = jit(_relu_pool_py)
_relu_pool2 = jit(_relu_pool2_py)
_relu_pool_batch = jit(_relu_pool_batch_py)
_pool_grad = jit(_pool_grad_py)
_linear_fwd = jit(_linear_fwd_py)
_linear_bwd = jit(_linear_bwd_py)


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------


def _buf(out, name, shape, dtype, zero=False):
    """The array ``out[name]`` with that shape and dtype, (re)allocated when it does not match."""
    shape = tuple(int(s) for s in shape)
    a = out.get(name) if out is not None else None
    if a is None or a.shape != shape or a.dtype != dtype:
        a = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
        if out is not None:
            out[name] = a
    return a


def conv_out_shape(H: int, W: int, F: int, pad: int, pool: int) -> tuple[int, int, int, int]:
    """(Ho, Wo, Hp, Wp): conv output (stride 1) and pooled output (floor), by
    :func:`cnncalc.shapes.out_size`."""
    Ho, Wo = out_size(H, F, 1, pad, pad).size, out_size(W, F, 1, pad, pad).size
    return Ho, Wo, out_size(Ho, pool, pool, 0, 0).size, out_size(Wo, pool, pool, 0, 0).size


def conv_relu_maxpool_forward(x, w, b, pad=0, pool=2, out=None):
    """Fused ``maxpool(relu(conv2d(x, w, pad) + b), pool)``.

    Parameters
    ----------
    x : (N, C, H, W) float32/float64, C-contiguous.
    w : (K, C, F, F) same dtype; b : (K,).
    pad : symmetric zero padding; stride is 1.
    pool : window and stride of the max-pool (floor mode), 1 <= pool <= 11.
    out : optional dict of reusable buffers (see module docstring).

    Returns
    -------
    y : (N, K, Hp, Wp) pooled activations.
    argmax : (N, K, Hp, Wp) int8, the winner's row-major index inside its window
        (``a // pool``, ``a % pool``); the first maximum wins ties, as in PyTorch; -1 where the
        window's max was <= 0, so the ReLU killed it and its gradient is zero.
    """
    N, _, H, W = x.shape
    K, _, F, _ = w.shape
    Ho, Wo, Hp, Wp = conv_out_shape(H, W, F, pad, pool)
    out = {} if out is None else out
    y = _buf(out, "y", (N, K, Hp, Wp), x.dtype)
    am = _buf(out, "argmax", (N, K, Hp, Wp), np.int8)
    conv = _buf(out, "conv", (N, K, Ho, Wo), x.dtype)
    conv2d_forward(x, w, None, 1, pad, 1, 1, (Ho, Wo), out=conv)
    _relu_pool_batch(conv, b, pool, y, am, x.dtype.type(0))
    return y, am


def conv_relu_maxpool_backward(dy, x, w, argmax, pad=0, pool=2, need_dx=True, out=None):
    """Gradients of :func:`conv_relu_maxpool_forward`.

    ``dy`` is d loss / d y (N, K, Hp, Wp); ``x``, ``w`` and ``argmax`` as in the forward call.
    Returns ``(dx or None, dw, db)`` with the shapes of ``x``, ``w`` and ``b``.
    """
    N, C, H, W = x.shape
    K, _, F, _ = w.shape
    Ho, Wo, _, _ = conv_out_shape(H, W, F, pad, pool)
    out = {} if out is None else out
    dt = x.dtype
    dconv = _buf(out, "dconv", (N, K, Ho, Wo), dt)
    db = _buf(out, "db", (K,), dt)
    _pool_grad(dy, argmax, pool, dconv, db, dt.type(0))
    dx = _buf(out, "dx", (N, C, H, W), dt) if need_dx else None
    dx, dw, _ = conv2d_backward(dconv, x, w, 1, pad, 1, 1, need_dx, has_bias=False, out_dx=dx)
    return dx, dw, db


def linear_relu_forward(x, w, b, relu=True, out=None):
    """``y = x @ w.T + b``, then ReLU when ``relu``. x (N, in), w (out, in), b (out,)."""
    N = x.shape[0]
    out = {} if out is None else out
    y = _buf(out, "y", (N, w.shape[0]), x.dtype)
    _linear_fwd(x, w, b, bool(relu), 1, y)
    return y


def linear_relu_backward(dy, x, w, y, relu=True, need_dx=True, out=None):
    """Gradients of :func:`linear_relu_forward`; ``y`` is its output (the ReLU mask is y > 0).

    Returns ``(dx or None, dw, db)``.
    """
    N, I = x.shape
    O = w.shape[0]
    T = 1
    out = {} if out is None else out
    dt = x.dtype
    dz = _buf(out, "dz", (N, O), dt)
    dx = _buf(out, "dx", (N, I) if need_dx else (1, I), dt)
    dw = _buf(out, "dw", (O, I), dt)
    db = _buf(out, "db", (O,), dt)
    dwp = _buf(out, "dw_partial", (T, O, I), dt)
    dbp = _buf(out, "db_partial", (T, O), dt)
    _linear_bwd(dy, x, w, y, bool(relu), bool(need_dx), dz, dx, dw, db,
                                    dwp, dbp)
    return (dx if need_dx else None), dw, db


