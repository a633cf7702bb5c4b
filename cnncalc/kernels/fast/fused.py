"""Fused fast-path kernels for the common small-CNN pattern (LeNet-5 and friends).

* ``conv_relu_maxpool_forward``: conv2d (stride 1, symmetric zero pad) + bias + ReLU + max-pool
  (pool x pool, stride pool, floor) in one pass. Only the pooled output and a small int8 argmax are
  kept; the full-resolution activation never leaves the per-thread scratch.
* ``conv_relu_maxpool_backward``: driven by that argmax. Windows whose max was <= 0 (argmax -1:
  ReLU killed them) contribute nothing; the conv gradient is scattered to the winners only.
* ``linear_relu_forward`` / ``linear_relu_backward``: fc + bias (+ ReLU) fused.

Boundary layout is NCHW with PyTorch weight shapes (conv ``(K, C, F, F)``, linear ``(out, in)``).

Design (README of this package): every kernel is serial, cached and ``nogil``; the engine's step
plan calls it on batch slices from its worker threads, each slice with its own ``out`` dict
(scratch and partial weight/bias gradients), and sums the partial gradients in slice order. A
sub-batch of samples is im2col'ed into one matrix and multiplied with one BLAS call (``np.dot``
in nopython mode), so BLAS runs at one thread during engine calls (:mod:`.thread_state`).

Buffer reuse: every public function takes ``out``, a dict it fills with the arrays it needs (outputs
and scratch) and reuses on the next call when shapes and dtype still match. The arrays it returns
live in ``out`` and are overwritten by the next call with the same dict: keep one dict per layer
and per direction, and copy a result if it must survive the next step.
"""
from __future__ import annotations

import numpy as np

from cnncalc.shapes import out_size

from .._jit import jit

# Bytes of im2col columns per thread and sub-batch (128 KiB measured best of 128 KiB-1 MiB).
COLS_BUDGET = 1 << 17
# Largest padded-width / output-width ratio for which im2col keeps the padded row width.
GRID_WASTE = 1.5

# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------


def _pad_copy_py(x, n, pad, xp):
    """xp[c, pad + i, pad + j] = x[n, c, i, j] (xp's border and tail stay as they are: zero)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Wd = W + 2 * pad
    HWd = (H + 2 * pad) * Wd
    for c in range(C):
        for i in range(H):
            o = c * HWd + (i + pad) * Wd + pad
            for j in range(W):
                xp[o + j] = x[n, c, i, j]


def _im2col_py(xp, C, Hd, Wd, F, Ho, Wo, Wg, cols, col0):
    """cols[(c*F + fy)*F + fx, col0 + oy*Wg + ox] = xp[c, oy + fy, ox + fx] (xp padded, flat).

    With ``Wg == Wd`` (the padded width) each row is one contiguous copy; the columns
    ox >= Wo are garbage that the caller ignores (forward) or zeroes (backward).
    """
    HWd = Hd * Wd
    for c in range(C):
        for fy in range(F):
            for fx in range(F):
                r = (c * F + fy) * F + fx
                src = c * HWd + fy * Wd + fx
                if Wg == Wd:
                    for q in range(Ho * Wd):
                        cols[r, col0 + q] = xp[src + q]
                else:
                    for oy in range(Ho):
                        o = col0 + oy * Wg
                        so = src + oy * Wd
                        for ox in range(Wo):
                            cols[r, o + ox] = xp[so + ox]


def _col2im_py(dcols, col0, C, Hd, Wd, F, Ho, Wo, Wg, dxp):
    """dxp[c, oy + fy, ox + fx] += dcols[(c*F + fy)*F + fx, col0 + oy*Wg + ox]."""
    HWd = Hd * Wd
    for c in range(C):
        for fy in range(F):
            for fx in range(F):
                r = (c * F + fy) * F + fx
                dst = c * HWd + fy * Wd + fx
                if Wg == Wd:
                    for q in range(Ho * Wd):
                        dxp[dst + q] += dcols[r, col0 + q]
                else:
                    for oy in range(Ho):
                        o = col0 + oy * Wg
                        do = dst + oy * Wd
                        for ox in range(Wo):
                            dxp[do + ox] += dcols[r, o + ox]


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


def _crm_fwd_py(x, w2, b, pad, F, pool, S, Wg, y, am, xp_s, cols_s, conv_s, zero):
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    K, R = w2.shape[0], w2.shape[1]
    Hd = H + 2 * pad
    Wd = W + 2 * pad
    Ho = Hd - F + 1
    Wo = Wd - F + 1
    P = Ho * Wg
    T = cols_s.shape[0]
    for t in range(T):
        n0 = t * N // T
        n1 = (t + 1) * N // T
        xp = xp_s[t]
        xp[:] = 0
        for s0 in range(n0, n1, S):
            ns = min(S, n1 - s0)
            L = ns * P
            cols = cols_s[t][:R * L].reshape((R, L))
            conv = conv_s[t][:K * L].reshape((K, L))
            for s in range(ns):
                _pad_copy(x, s0 + s, pad, xp)
                _im2col(xp, C, Hd, Wd, F, Ho, Wo, Wg, cols, s * P)
            np.dot(w2, cols, conv)
            for s in range(ns):
                if pool == 2:
                    _relu_pool2(conv, s * P, Wg, b, y, am, s0 + s, zero)
                else:
                    _relu_pool(conv, s * P, Wg, pool, b, y, am, s0 + s, zero)


def _crm_bwd_py(dy, x, w2, w2t, am, pad, F, pool, S, Wg, need_dx, dx, dw, db,
                xp_s, dxp_s, cols_s, dconv_s, dcols_s, dwp, dbp, tmp, zero):
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    K, R = w2.shape[0], w2.shape[1]
    Hd = H + 2 * pad
    Wd = W + 2 * pad
    Ho = Hd - F + 1
    Wo = Wd - F + 1
    P = Ho * Wg
    Hp = Ho // pool
    Wp = Wo // pool
    T = cols_s.shape[0]
    for t in range(T):
        n0 = t * N // T
        n1 = (t + 1) * N // T
        dwt = dwp[t]
        dbt = dbp[t]
        dwt[:] = 0
        dbt[:] = 0
        xp = xp_s[t]
        xp[:] = 0
        for s0 in range(n0, n1, S):
            ns = min(S, n1 - s0)
            L = ns * P
            cols = cols_s[t][:R * L].reshape((R, L))
            dconv = dconv_s[t][:K * L].reshape((K, L))
            dconv[:] = 0
            for s in range(ns):
                n = s0 + s
                _pad_copy(x, n, pad, xp)
                _im2col(xp, C, Hd, Wd, F, Ho, Wo, Wg, cols, s * P)
                for k in range(K):
                    acc = zero
                    for i in range(Hp):
                        for j in range(Wp):
                            a = np.int64(am[n, k, i, j])  # int8 arithmetic would overflow
                            live = a >= 0
                            g = dy[n, k, i, j] if live else zero
                            a = a if live else 0  # a dead window writes its zero to slot 0
                            acc += g
                            dconv[k, s * P + (i * pool + a // pool) * Wg + j * pool + a % pool] = g
                    dbt[k] += acc
            tt = tmp[t]
            np.dot(dconv, cols.T, tt)
            dwt += tt
            if need_dx:
                dcols = dcols_s[t][:R * L].reshape((R, L))
                np.dot(w2t, dconv, dcols)
                dxp = dxp_s[t]
                for s in range(ns):
                    dxp[:] = 0
                    _col2im(dcols, s * P, C, Hd, Wd, F, Ho, Wo, Wg, dxp)
                    n = s0 + s
                    HWd = Hd * Wd
                    for c in range(C):
                        for i in range(H):
                            o = c * HWd + (i + pad) * Wd + pad
                            for j in range(W):
                                dx[n, c, i, j] = dxp[o + j]
    dw[:] = 0
    db[:] = 0
    for t in range(T):
        dw += dwp[t]
        db += dbp[t]


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


_im2col = jit(_im2col_py)
_col2im = jit(_col2im_py)
_pad_copy = jit(_pad_copy_py)
_relu_pool = jit(_relu_pool_py)
_relu_pool2 = jit(_relu_pool2_py)

_crm_fwd = jit(_crm_fwd_py)
_crm_bwd = jit(_crm_bwd_py)
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


def _geometry(x, w, pad, pool):
    """Shapes the kernels share: (R, Wg, P, S, xp_len)."""
    N, C, H, W = x.shape
    F = w.shape[2]
    Ho, Wo, _, _ = conv_out_shape(H, W, F, pad, pool)
    Wd = W + 2 * pad
    # Rows of width Wd make each im2col row one contiguous copy, at the price of Wd - Wo garbage
    # columns in the GEMMs; worth it while the waste is small.
    Wg = Wd if Wd <= GRID_WASTE * Wo else Wo
    R, P = C * F * F, Ho * Wg
    S = max(1, min(N, COLS_BUDGET // max(1, R * P * x.dtype.itemsize)))
    return R, Wg, P, S, C * (H + 2 * pad) * Wd + F


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
    _, _, Hp, Wp = conv_out_shape(H, W, F, pad, pool)
    T = 1  # the kernels' per-thread buffers: one slice per call
    R, Wg, P, S, xp_len = _geometry(x, w, pad, pool)
    out = {} if out is None else out
    y = _buf(out, "y", (N, K, Hp, Wp), x.dtype)
    am = _buf(out, "argmax", (N, K, Hp, Wp), np.int8)
    xp = _buf(out, "xpad", (T, xp_len), x.dtype)
    cols = _buf(out, "cols", (T, R * S * P), x.dtype)
    conv = _buf(out, "conv", (T, K * S * P), x.dtype)
    w2 = w.reshape(K, R)
    _crm_fwd(x, w2, b, pad, F, pool, S, Wg, y, am, xp, cols, conv,
                                 x.dtype.type(0))
    return y, am


def conv_relu_maxpool_backward(dy, x, w, argmax, pad=0, pool=2, need_dx=True, out=None):
    """Gradients of :func:`conv_relu_maxpool_forward`.

    ``dy`` is d loss / d y (N, K, Hp, Wp); ``x``, ``w`` and ``argmax`` as in the forward call.
    Returns ``(dx or None, dw, db)`` with the shapes of ``x``, ``w`` and ``b``.
    """
    N, C, H, W = x.shape
    K, _, F, _ = w.shape
    T = 1  # the kernels' per-thread buffers: one slice per call
    R, Wg, P, S, xp_len = _geometry(x, w, pad, pool)
    out = {} if out is None else out
    dt = x.dtype
    xp = _buf(out, "xpad", (T, xp_len), dt)
    dxp = _buf(out, "dxpad", (T, xp_len if need_dx else 1), dt)
    dx = _buf(out, "dx", (N, C, H, W) if need_dx else (1, C, H, W), dt)
    dw = _buf(out, "dw", (K, C, F, F), dt)
    db = _buf(out, "db", (K,), dt)
    cols = _buf(out, "cols", (T, R * S * P), dt)
    dconv = _buf(out, "dconv", (T, K * S * P), dt)
    dcols = _buf(out, "dcols", (T, R * S * P) if need_dx else (T, 1), dt)
    dwp = _buf(out, "dw_partial", (T, K, R), dt)
    dbp = _buf(out, "db_partial", (T, K), dt)
    tmp = _buf(out, "dw_tmp", (T, K, R), dt)
    w2 = w.reshape(K, R)
    w2t = _buf(out, "w2t", (R, K), dt)
    w2t[...] = w2.T
    _crm_bwd(dy, x, w2, w2t, argmax, pad, F, pool, S, Wg, need_dx, dx,
                                 dw.reshape(K, R), db, xp, dxp, cols, dconv, dcols, dwp, dbp, tmp,
                                 dt.type(0))
    return (dx if need_dx else None), dw, db


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


