"""2-D convolution (cross-correlation, PyTorch convention) forward and backward.

Layout: ``x`` (N, C, H, W), ``w`` (K, C/groups, kh, kw), ``b`` (K,), ``y`` (N, K, Ho, Wo).
Padding is ``pad = (pad_top, pad_left)`` plus the output size ``out_hw = (Ho, Wo)``, so
asymmetric ("same") padding works: output ``(i, j)`` reads input row
``i*stride_h - pad_top + ki*dilation_h``; anything outside the input is zero.

Design (PERF-NOTES lessons 1, 4, 6):

* per sample and group, im2col into a per-thread scratch ``cols`` of shape (C/g*kh*kw, Ho*Wo)
  and one BLAS GEMM (``np.dot`` inside numba, which uses SciPy's BLAS) straight into ``y``;
* 1x1 / stride 1 / no padding skips im2col: the sample itself is the (C, H*W) matrix;
* the batch is split into ``nchunks`` contiguous chunks and ``prange`` runs over the chunks, so
  each chunk owns its scratch and its own weight-gradient buffer ``dw_part[chunk]``; the buffers
  are summed serially afterwards (never ``+=`` into a shared array inside ``prange``);
* BLAS must be single-threaded while ``prange`` runs: call ``_jit.limit_blas_threads()``.

Every kernel is written once as an undecorated ``_*_py`` function; ``jit`` (serial, cached) and
``pjit`` (parallel, not cached) build the two variants and the wrappers pick one.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, pjit, prange

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_out_hw"]


# --------------------------------------------------------------------------------------------
# im2col / col2im on one sample (serial helpers, called from inside the chunk loop)
# --------------------------------------------------------------------------------------------
def _valid_range(off, stride, size, n_out):
    """ow range [lo, hi) with 0 <= ow*stride + off < size."""
    # lo = ceil(-off / stride), hi = floor((size - 1 - off) / stride) + 1
    lo = -((off) // stride)
    if lo < 0:
        lo = 0
    hi = (size - 1 - off) // stride + 1
    if hi > n_out:
        hi = n_out
    if hi < lo:
        hi = lo
    return lo, hi


_valid_range_j = jit(_valid_range)


def _im2col_py(xn, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols):
    """cols[(c*kh + ki)*kw + kj, oh*wo + ow] = xn[c0 + c, oh*sh - pt + ki*dh, ow*sw - pl + kj*dw]."""
    h = xn.shape[1]
    w = xn.shape[2]
    zero = cols.dtype.type(0)
    for c in range(cg):
        for ki in range(kh):
            for kj in range(kw):
                r = (c * kh + ki) * kw + kj
                off = kj * dw - pl
                lo, hi = _valid_range_j(off, sw, w, wo)
                for oh in range(ho):
                    ih = oh * sh - pt + ki * dh
                    base = oh * wo
                    if ih < 0 or ih >= h:
                        for ow in range(wo):
                            cols[r, base + ow] = zero
                    else:
                        for ow in range(lo):
                            cols[r, base + ow] = zero
                        if sw == 1:
                            for ow in range(lo, hi):
                                cols[r, base + ow] = xn[c0 + c, ih, ow + off]
                        else:
                            for ow in range(lo, hi):
                                cols[r, base + ow] = xn[c0 + c, ih, ow * sw + off]
                        for ow in range(hi, wo):
                            cols[r, base + ow] = zero


_im2col = jit(_im2col_py)


def _im2col_block_py(x, s0, m, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols):
    """im2col of samples s0..s0+m-1 side by side: sample s fills columns [s*P, (s+1)*P)."""
    p = ho * wo
    h = x.shape[2]
    w = x.shape[3]
    zero = cols.dtype.type(0)
    for c in range(cg):
        for ki in range(kh):
            for kj in range(kw):
                r = (c * kh + ki) * kw + kj
                off = kj * dw - pl
                lo, hi = _valid_range_j(off, sw, w, wo)
                for si in range(m):
                    xn = x[s0 + si]
                    for oh in range(ho):
                        ih = oh * sh - pt + ki * dh
                        base = si * p + oh * wo
                        if ih < 0 or ih >= h:
                            for ow in range(wo):
                                cols[r, base + ow] = zero
                        else:
                            for ow in range(lo):
                                cols[r, base + ow] = zero
                            for ow in range(lo, hi):
                                cols[r, base + ow] = xn[c0 + c, ih, ow * sw + off]
                            for ow in range(hi, wo):
                                cols[r, base + ow] = zero


_im2col_block = jit(_im2col_block_py)


def _col2im_py(cols, dxn, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo):
    """Scatter-add the transpose of :func:`_im2col_py` into ``dxn`` (which must be zeroed)."""
    h = dxn.shape[1]
    w = dxn.shape[2]
    for c in range(cg):
        for ki in range(kh):
            for kj in range(kw):
                r = (c * kh + ki) * kw + kj
                off = kj * dw - pl
                lo, hi = _valid_range_j(off, sw, w, wo)
                for oh in range(ho):
                    ih = oh * sh - pt + ki * dh
                    if ih < 0 or ih >= h:
                        continue
                    base = oh * wo
                    if sw == 1:
                        for ow in range(lo, hi):
                            dxn[c0 + c, ih, ow + off] += cols[r, base + ow]
                    else:
                        for ow in range(lo, hi):
                            dxn[c0 + c, ih, ow * sw + off] += cols[r, base + ow]


_col2im = jit(_col2im_py)


# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------
def _conv_fwd_py(x, w2, b, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, groups, ho, wo, direct,
                 y, nchunks, nb):
    n_b, c_in, h, w = x.shape
    k_out = w2.shape[0]
    cg = c_in // groups
    kg = k_out // groups
    ckk = cg * kh * kw
    p = ho * wo
    y3 = y.reshape(n_b, k_out, p)
    xr = x.reshape(n_b, c_in, h * w)
    for chunk in prange(nchunks):
        n0 = chunk * n_b // nchunks
        n1 = (chunk + 1) * n_b // nchunks
        cols = np.empty((ckk, p * nb if (not direct or nb > 1) else 1), x.dtype)
        tmp = np.empty((kg, p * nb if nb > 1 else 1), x.dtype)
        for s0 in range(n0, n1, nb):
            m = min(nb, n1 - s0)
            for g in range(groups):
                wg = w2[g * kg:(g + 1) * kg]
                if direct and nb == 1:
                    np.dot(wg, xr[s0, g * cg:(g + 1) * cg], y3[s0, g * kg:(g + 1) * kg])
                elif nb == 1:
                    _im2col(x[s0], g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols)
                    np.dot(wg, cols, y3[s0, g * kg:(g + 1) * kg])
                else:
                    # small planes: several samples side by side in one GEMM
                    cb = cols
                    tb = tmp
                    if m < nb:   # last, shorter block of the chunk
                        cb = np.empty((ckk, m * p), x.dtype)
                        tb = np.empty((kg, m * p), x.dtype)
                    _im2col_block(x, s0, m, g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo,
                                  cb)
                    np.dot(wg, cb, tb)
                    for si in range(m):
                        for k in range(kg):
                            for i in range(p):
                                y3[s0 + si, g * kg + k, i] = tb[k, si * p + i]
            if has_bias:
                for n in range(s0, s0 + m):
                    for k in range(k_out):
                        bk = b[k]
                        for i in range(p):
                            y3[n, k, i] += bk


_conv_fwd_s = jit(_conv_fwd_py)
_conv_fwd_p = pjit(_conv_fwd_py)


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------
def _conv_bwd_py(dy, x, w2, kh, kw, sh, sw, pt, pl, dh, dw, groups, direct, need_dx, dx,
                 dw_part, nchunks):
    n_b, c_in, h, w = x.shape
    k_out = w2.shape[0]
    cg = c_in // groups
    kg = k_out // groups
    ckk = cg * kh * kw
    ho = dy.shape[2]
    wo = dy.shape[3]
    p = ho * wo
    dy3 = dy.reshape(n_b, k_out, p)
    xr = x.reshape(n_b, c_in, h * w)
    dxr = dx.reshape(dx.shape[0], c_in, h * w)
    zero = x.dtype.type(0)
    for chunk in prange(nchunks):
        n0 = chunk * n_b // nchunks
        n1 = (chunk + 1) * n_b // nchunks
        pc = p if not direct else 1
        cols = np.empty((ckk, pc), x.dtype)
        dcols = np.empty((ckk, pc if need_dx else 1), x.dtype)
        tmp = np.empty((kg, ckk), x.dtype)
        part = dw_part[chunk]
        part[:, :] = zero
        for n in range(n0, n1):
            for g in range(groups):
                dyg = dy3[n, g * kg:(g + 1) * kg]
                wg = w2[g * kg:(g + 1) * kg]
                if direct:
                    xg = xr[n, g * cg:(g + 1) * cg]
                    np.dot(dyg, xg.T, tmp)
                    if need_dx:
                        np.dot(wg.T, dyg, dxr[n, g * cg:(g + 1) * cg])
                else:
                    _im2col(x[n], g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols)
                    np.dot(dyg, cols.T, tmp)
                    if need_dx:
                        np.dot(wg.T, dyg, dcols)
                        dxn = dx[n]
                        for c in range(g * cg, (g + 1) * cg):
                            for i in range(h):
                                for j in range(w):
                                    dxn[c, i, j] = zero
                        _col2im(dcols, dxn, g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo)
                pg = part[g * kg:(g + 1) * kg]
                for k in range(kg):
                    for i in range(ckk):
                        pg[k, i] += tmp[k, i]


_conv_bwd_s = jit(_conv_bwd_py)
_conv_bwd_p = pjit(_conv_bwd_py)


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------
def _pair(v):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _num_threads() -> int:
    import numba

    return numba.get_num_threads()


def _plan(n: int, parallel: bool | None) -> tuple[bool, int]:
    """(use the parallel variant, number of batch chunks)."""
    t = _num_threads()
    if parallel is None:
        parallel = t > 1 and n > 1
    if not parallel:
        return False, 1
    return True, max(1, min(n, t))


def conv2d_out_hw(h: int, w: int, k: tuple, stride, pad_before, pad_after, dilation=(1, 1)):
    """Output (Ho, Wo) for the given padding (floor convention)."""
    kh, kw = _pair(k)
    sh, sw = _pair(stride)
    pt, pl = _pair(pad_before)
    pb, pr = _pair(pad_after)
    dh, dw = _pair(dilation)
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return ho, wo


_BLOCK_COLS = 2048  # GEMM columns worth one BLAS call; smaller planes are batched


def _sample_block(n: int, nchunks: int, p: int) -> int:
    """Samples per GEMM: 1 for large planes, else enough to reach ~_BLOCK_COLS columns."""
    if p >= _BLOCK_COLS:
        return 1
    per_chunk = -(-n // nchunks)
    return max(1, min(per_chunk, -(-_BLOCK_COLS // p)))


def _is_direct(kh, kw, sh, sw, pt, pl, h, w, ho, wo):
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and ho == h \
        and wo == w


def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1, out_hw=None,
                   *, out=None, parallel=None):
    """Convolution forward.

    Parameters
    ----------
    x : (N, C, H, W) float32/float64, C-contiguous.
    w : (K, C/groups, kh, kw), same dtype.
    b : (K,) or None.
    stride, pad, dilation : (h, w) pairs (an int means both); ``pad`` is the padding before each
        axis (top, left); the padding after is implied by ``out_hw``.
    out_hw : (Ho, Wo); ``None`` means symmetric padding with floor.
    out : optional preallocated (N, K, Ho, Wo) C-contiguous output.
    parallel : force the parallel (True) or serial (False) variant; ``None`` chooses.

    Returns
    -------
    y : (N, K, Ho, Wo)
    """
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    n, c, h, wd = x.shape
    k_out, cg, kh, kw = w.shape
    sh, sw = _pair(stride)
    pt, pl = _pair(pad)
    dh, dw = _pair(dilation)
    if out_hw is None:
        out_hw = conv2d_out_hw(h, wd, (kh, kw), (sh, sw), (pt, pl), (pt, pl), (dh, dw))
    ho, wo = _pair(out_hw)
    if out is None:
        out = np.empty((n, k_out, ho, wo), dtype=x.dtype)
    has_bias = b is not None
    bb = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    direct = _is_direct(kh, kw, sh, sw, pt, pl, h, wd, ho, wo)
    use_par, nchunks = _plan(n, parallel)
    kern = _conv_fwd_p if use_par else _conv_fwd_s
    nb = _sample_block(n, nchunks, ho * wo)
    kern(x, w.reshape(k_out, cg * kh * kw), bb, has_bias, kh, kw, sh, sw, pt, pl, dh, dw,
         int(groups), ho, wo, direct, out, nchunks, nb)
    return out


def conv2d_backward(dy, x, w, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1,
                    need_dx=True, *, has_bias=True, parallel=None):
    """Convolution backward.

    Parameters
    ----------
    dy : (N, K, Ho, Wo) gradient of the output (its shape fixes ``out_hw``).
    x, w, stride, pad, dilation, groups : as given to :func:`conv2d_forward`.
    need_dx : compute ``dx`` (False for the first layer).
    has_bias : compute ``db`` (pass ``has_bias=b is not None``); otherwise ``db`` is None.

    Returns
    -------
    (dx or None, dw, db or None)
    """
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    n, c, h, wd = x.shape
    k_out, cg, kh, kw = w.shape
    sh, sw = _pair(stride)
    pt, pl = _pair(pad)
    dh, dw = _pair(dilation)
    ho, wo = dy.shape[2], dy.shape[3]
    groups = int(groups)
    direct = _is_direct(kh, kw, sh, sw, pt, pl, h, wd, ho, wo)
    use_par, nchunks = _plan(n, parallel)
    # Stride 1 (and not 1x1): dx is a stride-1 correlation of dy with the flipped, transposed
    # kernel, i.e. the forward kernel again (im2col + a GEMM shaped like the forward one), which
    # is cheaper than W^T @ dy followed by a col2im scatter.
    via_fwd = need_dx and sh == 1 and sw == 1 and not direct
    fused_dx = need_dx and not via_fwd
    dx = np.empty_like(x) if fused_dx else np.empty((1, c, h, wd), dtype=x.dtype)
    dw_part = np.empty((nchunks, k_out, cg * kh * kw), dtype=x.dtype)
    kern = _conv_bwd_p if use_par else _conv_bwd_s
    kern(dy, x, w.reshape(k_out, cg * kh * kw), kh, kw, sh, sw, pt, pl, dh, dw, groups,
         direct, fused_dx, dx, dw_part, nchunks)
    if via_fwd:
        kg = k_out // groups
        # wt[g*cg + c, k, a, b] = w[g*kg + k, c, kh-1-a, kw-1-b]
        wt = np.ascontiguousarray(
            w[:, :, ::-1, ::-1].reshape(groups, kg, cg, kh, kw).transpose(0, 2, 1, 3, 4)
        ).reshape(groups * cg, kg, kh, kw)
        dx = conv2d_forward(dy, wt, None, (1, 1), (dh * (kh - 1) - pt, dw * (kw - 1) - pl),
                            (dh, dw), groups, (h, wd), parallel=parallel)
    dwt = dw_part[0] if nchunks == 1 else dw_part.sum(axis=0)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return (dx if need_dx else None), dwt.reshape(w.shape), db
