"""2-D convolution (cross-correlation, PyTorch convention) forward and backward.

Layout: ``x`` (N, C, H, W), ``w`` (K, C/groups, kh, kw), ``b`` (K,), ``y`` (N, K, Ho, Wo).
Padding is ``pad = (pad_top, pad_left)`` plus the output size ``out_hw = (Ho, Wo)``, so
asymmetric ("same") padding works: output ``(i, j)`` reads input row
``i*stride_h - pad_top + ki*dilation_h``; anything outside the input is zero.

Design (the measured reasons: ``cnncalc/kernels/fast/README.md``):

* 3x3, stride 1, one group, float32 (``algo="auto"``; ``"winograd"`` forces it where it
  applies): Winograd F(2x2, 3x3), :mod:`cnncalc.kernels.winograd` (2.25x fewer
  multiplications): "same" layers on even planes from 8x8 with the tiles in the vector lanes
  from 16 channels on both sides (``WINOGRAD_LANES_MIN_CHANNELS``), any other such layer
  channels last from 32 on both sides and 64 on one;

* every other stride-1 layer (``algo="simd"``): the direct convolution of
  :mod:`cnncalc.kernels.simd`, register-blocked micro-kernels over pitched planes (forward
  1.0-3.1x the implicit GEMM's speed on every layer measured; the weight gradient 1.04-1.9x on
  planes from 7x7 up, ``SIMD_DW_MIN_PLANE``, BLAS's below and for 1x1); its ``dx`` is the
  forward kernel again, on the flipped weights. Strided layers larger than 1x1 run the same
  kernels on the input's phase planes (each tap a column offset into its phase), or with a
  vector per output row where a row is exactly one vector;
* stride 1 (``algo="implicit"``): implicit GEMM, no im2col. Each sample is zero-padded once into pitched planes, and each kernel tap is
  one strided BLAS GEMM, ``Y += W[:, :, ki, kj] @ shifted planes``, accumulated in an L2-sized
  buffer (see the section below), one L1-sized tile of output columns at a time (all taps per
  tile, :func:`_ig_tile`). dw is the same per tap; dx is the forward correlation of
  ``dy`` with the flipped kernel. The GEMMs call BLAS ``?gemm`` through ``_gemm`` (offsets,
  leading dimensions, ``beta = 1``), the routine numba's ``np.dot`` uses;
* otherwise (stride > 1, tiny planes with long reductions, ``algo="im2col"``): per sample and
  group, im2col into a per-thread scratch ``cols`` of shape (C/g*kh*kw, Ho*Wo) and one BLAS
  GEMM (``np.dot`` inside numba, which uses SciPy's BLAS) straight into ``y``;
* 1x1 / stride 1 / no padding skips im2col: the sample itself is the (C, H*W) matrix;
* every kernel is serial (cached, ``nogil``): the engine's data parallelism runs them on batch
  slices from its own threads and sums dw/db in slice order (``bench/bench_conv.py`` measures
  exactly that), so BLAS stays single-threaded (the engine's calls run under
  :class:`cnncalc.kernels.fast.thread_state.EngineCall`, which sees to it). The kernels keep a
  loop over ``nchunks`` batch chunks, each with its own weight-gradient buffer
  ``dw_part[chunk]``; the wrappers use one chunk.

Every kernel is written once as an undecorated ``_*_py`` function (the ``NUMBA_DISABLE_JIT``
reference path) and compiled by ``jit``.
"""
from __future__ import annotations

import numpy as np
from cnncalc.shapes import out_size

from . import simd as ksimd
from . import winograd as wg
from .simd import flipped_weights, pad_planes
from ._jit import jit
from .blas import _gemm

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_out_hw"]


# --------------------------------------------------------------------------------------------
# im2col / col2im (serial helpers, called from inside the chunk loop)
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


def _im2col_block_py(x, s0, m, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols):
    """im2col of samples s0..s0+m-1 side by side: sample s fills columns [s*P, (s+1)*P).

    ``cols[(c*kh + ki)*kw + kj, s*P + oh*wo + ow] = x[s0 + s, c0 + c, oh*sh - pt + ki*dh,
    ow*sw - pl + kj*dw]`` (zero outside the input).
    """
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
                            if sw == 1:  # contiguous source: lets LLVM vectorise the copy
                                for ow in range(lo, hi):
                                    cols[r, base + ow] = xn[c0 + c, ih, ow + off]
                            else:
                                for ow in range(lo, hi):
                                    cols[r, base + ow] = xn[c0 + c, ih, ow * sw + off]
                            for ow in range(hi, wo):
                                cols[r, base + ow] = zero


_im2col_block = jit(_im2col_block_py)


def _col2im_py(cols, dxn, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo):
    """Scatter-add the transpose of one sample's :func:`_im2col_block_py` into ``dxn`` (which
    must be zeroed)."""
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
    for chunk in range(nchunks):
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
                    _im2col_block(x, s0, 1, g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols)
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


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------
def _conv_dw_block_py(dy, x, kh, kw, sh, sw, pt, pl, dh, dw, groups, dw_part, nchunks, nb):
    """Weight gradient through im2col, ``nb`` samples side by side: per block and group,
    ``dW_g += dy_block (kg x nb*P) @ cols^T (nb*P x C/g*kh*kw)``, one BLAS call accumulating
    straight into the chunk's ``dw_part[chunk]`` (K, C/g*kh*kw). For small output planes,
    where one sample's GEMM has a reduction of only P = Ho*Wo."""
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = dy.shape[1]
    ho = dy.shape[2]
    wo = dy.shape[3]
    p = ho * wo
    cg = c_in // groups
    kg = k_out // groups
    ckk = cg * kh * kw
    dy3 = dy.reshape(n_b, k_out, p)
    zero = x.dtype.type(0)
    for chunk in range(nchunks):
        n0 = chunk * n_b // nchunks
        n1 = (chunk + 1) * n_b // nchunks
        cols = np.empty((ckk, nb * p), x.dtype)
        dyb = np.empty((kg, nb * p), x.dtype)
        dybf = dyb.ravel()
        part = dw_part[chunk].ravel()
        for i in range(part.shape[0]):
            part[i] = zero
        for s0 in range(n0, n1, nb):
            m = min(nb, n1 - s0)
            cb = cols
            if m < nb:  # the chunk's last, shorter block: its own contiguous buffer
                cb = np.empty((ckk, m * p), x.dtype)
            cbf = cb.ravel()
            for g in range(groups):
                _im2col_block(x, s0, m, g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cb)
                for si in range(m):
                    for k in range(kg):
                        src = dy3[s0 + si, g * kg + k]
                        dst = dyb[k]
                        for i in range(p):
                            dst[si * p + i] = src[i]
                _gemm(False, True, kg, ckk, m * p, 1.0, dybf, 0, nb * p,
                      cbf, 0, m * p, 1.0, part, g * kg * ckk, ckk)


_conv_dw_block_s = jit(_conv_dw_block_py)


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
    for chunk in range(nchunks):
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
                    _im2col_block(x, n, 1, g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols)
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


# --------------------------------------------------------------------------------------------
# implicit GEMM (stride 1): no im2col, kh*kw strided GEMMs over a zero-padded, pitched plane
# --------------------------------------------------------------------------------------------
# With stride 1, pad each channel of a sample into a plane of row pitch ``wp = wo + dw*(kw-1)``
# (rows ``hp = ho + dh*(kh-1)``), flattened. Output ``(oh, ow)`` is computed at the "pitched"
# column ``q = oh*wp + ow``; tap ``(ki, kj)`` reads the plane at ``q + ki*dh*wp + kj*dw``. So for a
# fixed tap, the (cg x ho*wp) operand is the padded planes shifted by a constant, a strided
# matrix BLAS can read directly (leading dimension = plane size):
#     Y_pitched += W[:, :, ki, kj] (kg x cg) @ Xpad[:, shift : shift + ho*wp]
# kh*kw GEMMs with K = cg accumulate into an L2-resident (kg x ho*wp) buffer; the wo..wp-1
# columns of each row are junk (they wrap into the next row) and are dropped when the buffer is
# copied into ``y``. The weight gradient is the same per tap, with a pitched copy of ``dy`` whose
# junk columns are zero:  dW[:, :, ki, kj] += dy_pitched (kg x ho*wp) @ Xpad_shift^T.
# For VGG-sized layers this runs the GEMMs at BLAS speed and replaces the im2col traffic (9x the
# input) by one padded copy of the input.


def _conv_fwd_ig_py(x, wk, b, has_bias, kh, kw, pt, pl, dh, dw, groups, ho, wo, y, nchunks,
                    tile):
    """Forward, stride 1. ``wk`` is (groups, kh*kw, kg, cg): one (kg x cg) matrix per tap.
    The kh*kw tap GEMMs run on ``tile`` output columns at a time (see :func:`_ig_tile`)."""
    n_b = x.shape[0]
    kg = wk.shape[2]
    cg = wk.shape[3]
    hp = ho + dh * (kh - 1)
    wp = wo + dw * (kw - 1)
    plane = hp * wp + dw * (kw - 1)
    lq = ho * wp
    wkf = wk.ravel()
    zero = x.dtype.type(0)
    for chunk in range(nchunks):
        n0 = chunk * n_b // nchunks
        n1 = (chunk + 1) * n_b // nchunks
        xp = np.empty((cg, plane), x.dtype)
        yb = np.empty((kg, lq), x.dtype)
        xpf = xp.ravel()
        ybf = yb.ravel()
        for s in range(n0, n1):
            ys = y[s]
            for g in range(groups):
                pad_planes(x, s, 1, g * cg, cg, pt, pl, hp, wp, xp)
                for q0 in range(0, lq, tile):   # column tiles: the accumulator stays in L1
                    nq = min(tile, lq - q0)
                    for ki in range(kh):
                        for kj in range(kw):
                            t = ki * kw + kj
                            _gemm(False, False, kg, nq, cg, 1.0, wkf,
                                  (g * kh * kw + t) * kg * cg, cg, xpf,
                                  q0 + ki * dh * wp + kj * dw, plane, 0.0 if t == 0 else 1.0,
                                  ybf, q0, lq)
                for k in range(kg):
                    bk = b[g * kg + k] if has_bias else zero
                    dst = ys[g * kg + k]
                    src = yb[k]
                    for oh in range(ho):
                        for ow in range(wo):
                            dst[oh, ow] = src[oh * wp + ow] + bk


_conv_fwd_ig_s = jit(_conv_fwd_ig_py)


def _conv_bwd_ig_py(dy, x, kh, kw, pt, pl, dh, dw, groups, dw_part, nchunks, tile):
    """Weight gradient, stride 1: ``dw_part[chunk]`` is the chunk's (groups, kh*kw, kg, cg);
    the reduction over output columns runs ``tile`` columns at a time, every tap per tile."""
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = dy.shape[1]
    ho = dy.shape[2]
    wo = dy.shape[3]
    cg = c_in // groups
    kg = k_out // groups
    hp = ho + dh * (kh - 1)
    wp = wo + dw * (kw - 1)
    plane = hp * wp + dw * (kw - 1)
    lq = ho * wp
    zero = x.dtype.type(0)
    for chunk in range(nchunks):
        n0 = chunk * n_b // nchunks
        n1 = (chunk + 1) * n_b // nchunks
        xp = np.empty((cg, plane), x.dtype)
        dyp = np.empty((kg, lq), x.dtype)
        xpf = xp.ravel()
        dypf = dyp.ravel()
        part = dw_part[chunk]
        for i in range(part.shape[0]):
            part[i] = zero
        for s in range(n0, n1):
            for g in range(groups):
                pad_planes(x, s, 1, g * cg, cg, pt, pl, hp, wp, xp)
                for k in range(kg):
                    src = dy[s, g * kg + k]
                    dst = dyp[k]
                    for oh in range(ho):
                        for ow in range(wo):
                            dst[oh * wp + ow] = src[oh, ow]
                        for ow in range(wo, wp):
                            dst[oh * wp + ow] = zero
                for q0 in range(0, lq, tile):   # column tiles: the operands stay in L1
                    nq = min(tile, lq - q0)
                    for ki in range(kh):
                        for kj in range(kw):
                            t = ki * kw + kj
                            _gemm(False, True, kg, cg, nq, 1.0, dypf, q0, lq,
                                  xpf, q0 + ki * dh * wp + kj * dw, plane, 1.0,
                                  part, (g * kh * kw + t) * kg * cg, cg)


_conv_bwd_ig_s = jit(_conv_bwd_ig_py)


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------
def _pair(v):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def conv2d_out_hw(h: int, w: int, k: tuple, stride, pad_before, pad_after, dilation=(1, 1)):
    """Output (Ho, Wo) for the given padding: :func:`cnncalc.shapes.out_size` per axis (floor)."""
    kh, kw = _pair(k)
    sh, sw = _pair(stride)
    pt, pl = _pair(pad_before)
    pb, pr = _pair(pad_after)
    dh, dw = _pair(dilation)
    return (out_size(h, kh, sh, pt, pb, dh).size, out_size(w, kw, sw, pl, pr, dw).size)


_BLOCK_COLS = 2048  # GEMM columns worth one BLAS call; smaller planes are batched


def _sample_block(n: int, nchunks: int, p: int) -> int:
    """Samples per GEMM: 1 for large planes, else enough to reach ~_BLOCK_COLS columns."""
    if p >= _BLOCK_COLS:
        return 1
    per_chunk = -(-n // nchunks)
    return max(1, min(per_chunk, -(-_BLOCK_COLS // p)))


IG_TILE_BYTES = 16 << 10   # implicit GEMM: output-column tile of about this many bytes ...
IG_TILE_MIN = 32           # ... and at least this many columns


def _ig_tile(kg: int, cg: int) -> int:
    """Output columns per implicit-GEMM tile: the (kg x tile) accumulator (forward) and the
    (kg + cg) x tile operands (weight gradient) stay in the 32 KiB L1 across the kh*kw taps
    (float32 sizes; float64 tiles are twice the bytes)."""
    return max(IG_TILE_MIN, IG_TILE_BYTES // (4 * max(kg, cg)))


DW_COLS_BYTES = 2 << 20   # im2col weight gradient: samples per GEMM up to this much of cols


def _dw_samples(n: int, ckk: int, p: int, itemsize: int) -> int:
    """Samples side by side in an im2col weight-gradient GEMM: 1 for planes of
    ``_BLOCK_COLS`` or more, else as many as fit ``DW_COLS_BYTES`` of columns (at most the
    batch), so small planes stop paying one short GEMM and one (K x C*kh*kw) add per sample."""
    if p >= _BLOCK_COLS:
        return 1
    return max(1, min(n, DW_COLS_BYTES // max(1, ckk * p * itemsize)))


def _is_direct(kh, kw, sh, sw, pt, pl, h, w, ho, wo):
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and ho == h \
        and wo == w


# "auto" takes the implicit GEMM for every stride-1 layer except tiny planes with many input
# channels (one (ckk x several samples) im2col GEMM wins there). Measured serially, float32,
# fwd+bwd, implicit / im2col time: VGG 64ch 56x56 0.55, 128ch 28x28 0.67, 256ch 14x14 0.86,
# 3ch 112x112 0.82, LeNet conv1/conv2 at batch 64 0.29/0.27, but 512ch 7x7 1.38. With the
# column tiles (forward / backward GF/s, implicit vs im2col, batch 16, one session): 128ch 8x8
# 73-77/57-65 vs 56-57/54-57, but 256ch 8x8 58-62/63-64 vs 66-70/68-72 and 256ch 4x4
# 42-45/45 vs 65-71/58-61: the reduction may be at most 32 times the output plane.
_IG_MIN_P = 64      # output planes at least this large (and at least 1/32 of ckk) ...
_IG_MAX_CKK = 512   # ... or reductions (C/groups * kh * kw) at most this long
_IG_CKK_PER_P = 32
_ALGOS = (None, "auto", "im2col", "implicit", "simd", "rows", "winograd")
# "auto" takes Winograd F(2x2, 3x3) (``winograd.py``) for 3x3 / stride 1 / one group when both
# channel counts reach WINOGRAD_MIN_CHANNELS and the wider side WINOGRAD_MIN_WIDE_CHANNELS:
# below that the transforms cost more than they save. 16 channels on 32x32: 0.34 / 0.47 the
# implicit GEMM's speed (fwd / bwd); 32 -> 32 channels, against the vector kernels (``simd.py``)
# inside the networks: 0.82-0.87x forward and 0.88-0.94x backward on 32x32 and 16x16 maps;
# 32 -> 64 and wider: 1.07-1.9x. The figures: ``cnncalc/kernels/fast/README.md``, "Winograd".
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_WIDE_CHANNELS = 64
# ... except "same" layers on even planes from 8x8 (``winograd.lanes_applies``), whose tiles
# run in the vector lanes: there both channel counts need only reach this. Serially, 8
# samples, against the vector kernels (forward / backward): 16 -> 16 on 32x32 1.40x / 1.39x,
# 32 -> 32 on 16x16 1.37x / 1.49x, 16 -> 16 on 16x16 1.07x / 1.05x, 16 -> 16 on 8x8
# 1.07x / 1.11x; 8 -> 16 on 32x32 1.17x / 0.98x.
WINOGRAD_LANES_MIN_CHANNELS = 16
# ... and only in these dtypes: float64 is the checking dtype, kept on the direct sum that the
# float32 fast path is checked against ("winograd" still forces it, e.g. to check Winograd
# itself in float64)
WINOGRAD_AUTO_DTYPES = ("float32",)


def _use_winograd(algo, kh, kw, sh, sw, dh, dw, groups, pt, pl, ho, wo, c, k, dtype,
                  h, w) -> bool:
    """Winograd F(2x2, 3x3) where it applies (``algo="winograd"``), or by ``"auto"`` where it
    applies, the dtype is one of ``WINOGRAD_AUTO_DTYPES`` and both channel counts reach
    ``WINOGRAD_LANES_MIN_CHANNELS`` (a layer for the lanes layout) or
    ``WINOGRAD_MIN_CHANNELS``, the wider one ``WINOGRAD_MIN_WIDE_CHANNELS`` (any other)."""
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {_ALGOS[1:]}, got {algo!r}")
    if algo not in (None, "auto", "winograd"):
        return False
    if not wg.applies(kh, kw, sh, sw, dh, dw, groups, pt, pl, ho, wo):
        return False
    if algo == "winograd":
        return True
    if np.dtype(dtype).name not in WINOGRAD_AUTO_DTYPES:
        return False
    if wg.lanes_applies(pt, pl, h, w, ho, wo):
        return min(c, k) >= WINOGRAD_LANES_MIN_CHANNELS
    return min(c, k) >= WINOGRAD_MIN_CHANNELS and max(c, k) >= WINOGRAD_MIN_WIDE_CHANNELS


def uses_winograd(w_shape, stride, pad, dilation, groups, out_hw, algo=None,
                  dtype="float32", *, in_hw) -> bool:
    """Whether :func:`conv2d_forward` and :func:`conv2d_backward` take the Winograd path for
    these arguments (``w_shape`` = (K, C/groups, kh, kw), ``pad`` = (top, left), ``in_hw`` =
    (H, W))."""
    k_out, cg, kh, kw = w_shape
    (sh, sw), (pt, pl), (dh, dw), (ho, wo), (h, w) = (
        _pair(stride), _pair(pad), _pair(dilation), _pair(out_hw), _pair(in_hw))
    return _use_winograd(algo, kh, kw, sh, sw, dh, dw, int(groups), pt, pl, ho, wo,
                         cg * int(groups), k_out, dtype, h, w)


# Stride > 1 runs the vector kernels on the input's phase planes (``simd.strided_forward``:
# every tap a column offset into its phase, no zero taps), except where an output row is
# exactly one vector wide: there a vector per output row (``simd.rows_forward``) computes no
# padding column (16 -> 32 on 32x32, 3x3/2, serially 86 vs 73 GFLOP/s forward, 70 vs 62
# backward). 1x1 strided layers stay on im2col's single GEMMs (a tie: 3 of 4 input phases get
# no tap). Figures: cnncalc/kernels/fast/README.md, "Strided layers through phase planes".


def _simd_path(algo, kh, kw, sh, sw, dh, dw, wo, dtype) -> str | None:
    """How the register-blocked direct convolution (``simd.py``) runs this layer, or None
    (not at all): ``"stride1"`` (every stride-1 layer, for the layers Winograd does not take),
    ``"phases"`` (strided, on the phase planes: ``"auto"`` for every kernel larger than 1x1
    whose output rows are not exactly one vector wide; always under ``"simd"``) or ``"rows"``
    (strided, a vector per output row: ``"auto"`` where a row is one vector; always under
    ``"rows"``)."""
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {_ALGOS[1:]}, got {algo!r}")
    if algo not in (None, "auto", "simd", "rows"):
        return None
    if sh == 1 and sw == 1:
        return "stride1"
    if algo == "rows":
        return "rows"
    if algo == "simd":
        return "phases"
    if kh * kw == 1:
        return None
    return "rows" if wo == ksimd.lanes(dtype) else "phases"


# The vector kernel's weight gradient reduces over the output columns, one (K, C, tap) block
# at a time: 1.04-1.9x the implicit GEMM's speed on every 3x3 / 5x5 layer measured down to
# 7x7 planes, but 0.58x on a 1x1 layer (one BLAS GEMM there, kept) and not measured on
# smaller planes (kept on BLAS).
SIMD_DW_MIN_PLANE = 49


def _simd_weight_grad_pays(kh, kw, ho, wo) -> bool:
    return kh * kw > 1 and ho * wo >= SIMD_DW_MIN_PLANE


def simd_path(kernel_size, stride, dilation=1, algo=None, out_w=1, dtype="float32"):
    """How :func:`conv2d_forward` and :func:`conv2d_backward` run a layer that
    :func:`uses_winograd` does not take on the direct vector-register kernels: ``"stride1"``,
    ``"phases"``, ``"rows"`` or None (BLAS: im2col / implicit GEMM); ``out_w`` is the output's
    width."""
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel_size), _pair(stride), _pair(dilation)
    return _simd_path(algo, kh, kw, sh, sw, dh, dw, int(out_w), dtype)


def _use_implicit(algo, sh, sw, direct, ckk, p) -> bool:
    """Implicit GEMM (stride 1 only) or im2col; ``algo="implicit"`` falls back to im2col where
    it does not apply (stride > 1, or the 1x1 direct case)."""
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {_ALGOS[1:]}, got {algo!r}")
    if sh != 1 or sw != 1 or direct or algo == "im2col":
        return False
    if algo == "implicit":
        return True
    return ckk <= _IG_MAX_CKK or (p >= _IG_MIN_P and ckk <= _IG_CKK_PER_P * p)


def _taps_major(w, groups):
    """(K, cg, kh, kw) -> (groups, kh*kw, kg, cg), C-contiguous: one (kg x cg) matrix per tap."""
    k_out, cg, kh, kw = w.shape
    kg = k_out // groups
    return np.ascontiguousarray(
        w.reshape(groups, kg, cg, kh * kw).transpose(0, 3, 1, 2))


def _layout(shared, key, make):
    """``make()``, or the copy an earlier chunk of the same call left in ``shared[key]``."""
    if shared is None:
        return make()
    a = shared.get(key)
    if a is None:
        a = shared[key] = make()
    return a


def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1, out_hw=None,
                   *, out=None, algo=None, shared=None):
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
    algo : ``None``/"auto" (choose), "im2col", "implicit" (implicit GEMM: stride 1 only,
        otherwise im2col is used), "simd" (the direct vector-register kernels; strided layers
        on the phase planes), "rows" (as "simd", strided layers with a vector per output
        row) or "winograd" (F(2x2, 3x3): 3x3, stride 1, dilation 1, one group, padding 0..2;
        otherwise as "auto").
    shared : optional dict shared by the calls on the chunks of one batch (same ``w``): the
        rearranged weights are made once and reused (``w`` must not change in between).

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
    nchunks = 1
    groups = int(groups)
    if _use_winograd(algo, kh, kw, sh, sw, dh, dw, groups, pt, pl, ho, wo, c, k_out, x.dtype,
                     h, wd):
        u = _layout(shared, "winograd", lambda: wg.weight_transform(w))
        if wg.lanes_applies(pt, pl, h, wd, ho, wo):
            return wg.lanes_forward(x, u, b, out)
        return wg.winograd_forward(x, w, b, (pt, pl), (ho, wo), out=out,
                                   ut=_layout(shared, "winograd_t", lambda: wg.forward_weights(u)))
    if algo == "winograd":
        algo = "auto"
    path = _simd_path(algo, kh, kw, sh, sw, dh, dw, wo, x.dtype)
    if path == "stride1" and wo == ksimd.lanes(x.dtype) and kh * kw > 1 and pt >= 0 and pl >= 0:
        # rows exactly one vector wide: a vector per row wastes no column (the pitched planes
        # compute 2 of every 18 on 16x16 maps): 1.10-1.14x serially, 1.15x forward and 1.07x
        # backward (its dx) for resnet20_cifar's 32-channel layers through the engine
        path = "rows"
    if path == "stride1":
        return ksimd.simd_forward(x, w, b, (pt, pl), (dh, dw), groups, (ho, wo), out)
    if path == "phases":
        return ksimd.strided_forward(x, w, b, (sh, sw), (pt, pl), (dh, dw), groups, (ho, wo),
                                     out)
    if path == "rows":
        return ksimd.rows_forward(x, w, b, (sh, sw), (pt, pl), (dh, dw), groups, (ho, wo), out)
    if _use_implicit(algo, sh, sw, direct, cg * kh * kw, ho * wo):
        wk = _layout(shared, "taps", lambda: _taps_major(w, groups))
        _conv_fwd_ig_s(x, wk, bb, has_bias, kh, kw, pt, pl, dh, dw, groups,
                       ho, wo, out, nchunks, _ig_tile(k_out // groups, cg))
        return out
    nb = _sample_block(n, nchunks, ho * wo)
    _conv_fwd_s(x, w.reshape(k_out, cg * kh * kw), bb, has_bias, kh, kw, sh, sw, pt, pl, dh, dw,
         int(groups), ho, wo, direct, out, nchunks, nb)
    return out


def conv2d_backward(dy, x, w, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1,
                    need_dx=True, *, has_bias=True, algo=None, out_dx=None, shared=None):
    """Convolution backward.

    Parameters
    ----------
    dy : (N, K, Ho, Wo) gradient of the output (its shape fixes ``out_hw``).
    x, w, stride, pad, dilation, groups : as given to :func:`conv2d_forward`.
    need_dx : compute ``dx`` (False for the first layer).
    has_bias : compute ``db`` (pass ``has_bias=b is not None``); otherwise ``db`` is None.
    algo : as for :func:`conv2d_forward` (it applies to dw and to dx).
    out_dx : optional preallocated C-contiguous array of x's shape for ``dx`` (with ``need_dx``).
    shared : as for :func:`conv2d_forward` (the flipped kernel of ``dx`` is made once).

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
    nchunks = 1
    if _use_winograd(algo, kh, kw, sh, sw, dh, dw, groups, pt, pl, ho, wo, c, k_out, x.dtype,
                     h, wd):
        u = _layout(shared, "winograd", lambda: wg.weight_transform(w))
        if wg.lanes_applies(pt, pl, h, wd, ho, wo):
            dx, du = wg.lanes_backward_du(
                dy, x, u, need_dx, out_dx=out_dx,
                u_dx=_layout(shared, "winograd_dx", lambda: wg.lanes_dx_weights(u)))
            return dx, wg.weight_grad(du), dy.sum(axis=(0, 2, 3)) if has_bias else None
        return wg.winograd_backward(dy, x, w, (pt, pl), need_dx, has_bias=has_bias,
                                    out_dx=out_dx, u=u)
    if algo == "winograd":
        algo = "auto"
    # Stride 1 (and not 1x1): dx is a stride-1 correlation of dy with the flipped, transposed
    # kernel, i.e. the forward kernel again (im2col + a GEMM shaped like the forward one), which
    # is cheaper than W^T @ dy followed by a col2im scatter.
    # (With the direct vector kernel, a plain 1x1 layer's dx goes the same way.)
    path = _simd_path(algo, kh, kw, sh, sw, dh, dw, wo, x.dtype)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    if path in ("phases", "rows"):
        plan = None
        if need_dx:   # the input gradient's weights and phases, once for all chunks
            plan = _layout(shared, "phase_dx", lambda: ksimd.phase_dx_plan(
                w, (sh, sw), (pt, pl), (dh, dw), groups, (h, wd), (ho, wo), x.dtype))
        if path == "phases":
            dx, dwt = ksimd.strided_backward(dy, x, w, (sh, sw), (pt, pl), (dh, dw), groups,
                                             need_dx, out_dx, dx_plan=plan)
            return dx, dwt, db
        dwt = ksimd.rows_weight_grad(dy, x, w.shape, (sh, sw), (pt, pl), (dh, dw), groups)
        dx = (ksimd.phase_input_grad(dy, w, (sh, sw), (pt, pl), (dh, dw), groups, x.shape,
                                     out_dx, plan=plan) if need_dx else None)
        return dx, dwt, db
    simd = path == "stride1"
    via_fwd = need_dx and sh == 1 and sw == 1 and (simd or not direct)
    fused_dx = need_dx and not via_fwd
    if simd and _simd_weight_grad_pays(kh, kw, ho, wo):
        dwt = ksimd.simd_weight_grad(dy, x, w.shape, (pt, pl), (dh, dw), groups)
        dx = None   # stride 1: dx, when needed, comes via_fwd
    elif _use_implicit("auto" if simd else algo, sh, sw, direct, cg * kh * kw, ho * wo):
        kg = k_out // groups
        dw_part = np.empty((nchunks, groups * kh * kw * kg * cg), dtype=x.dtype)
        _conv_bwd_ig_s(dy, x, kh, kw, pt, pl, dh, dw, groups, dw_part, nchunks,
                       _ig_tile(kg, cg))
        dwt = dw_part[0] if nchunks == 1 else dw_part.sum(axis=0)
        # (groups, kh*kw, kg, cg) -> (K, cg, kh, kw)
        dwt = np.ascontiguousarray(
            dwt.reshape(groups, kh * kw, kg, cg).transpose(0, 2, 3, 1)).reshape(w.shape)
        dx = None   # implicit GEMM is stride 1 and not 1x1: dx, when needed, comes via_fwd
    else:
        if fused_dx:
            dx = np.empty_like(x) if out_dx is None else out_dx
        else:
            dx = np.empty((1, c, h, wd), dtype=x.dtype)
        dw_part = np.empty((nchunks, k_out, cg * kh * kw), dtype=x.dtype)
        nb = _dw_samples(n, cg * kh * kw, ho * wo, x.dtype.itemsize)
        if not direct and not fused_dx and nb > 1:
            _conv_dw_block_s(dy, x, kh, kw, sh, sw, pt, pl, dh, dw, groups, dw_part, nchunks,
                             nb)
        else:
            _conv_bwd_s(dy, x, w.reshape(k_out, cg * kh * kw), kh, kw, sh, sw, pt, pl, dh, dw,
                        groups, direct, fused_dx, dx, dw_part, nchunks)
        dwt = (dw_part[0] if nchunks == 1 else dw_part.sum(axis=0)).reshape(w.shape)
    if via_fwd:
        dx = conv2d_forward(dy, _layout(shared, "flipped", lambda: flipped_weights(w, groups)),
                            None, (1, 1),
                            (dh * (kh - 1) - pt, dw * (kw - 1) - pl), (dh, dw), groups, (h, wd),
                            out=out_dx, algo=algo,
                            shared=None if shared is None else _layout(shared, "dx", dict))
    return (dx if need_dx else None), dwt, db
