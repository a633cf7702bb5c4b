"""Winograd F(2x2, 3x3) convolution: 3x3, stride 1, dilation 1, one group.

Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks". Each 2x2 block of
output is computed from a 4x4 input tile ``d`` and the 3x3 kernel ``g`` as::

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Summed over input channels, the element-wise product becomes 16 GEMMs, one per position
``xi = 4*a + b`` of the 4x4 transformed tile: ``M[xi] (T x K) = V[xi] (T x C) @ U[xi]^T``
with ``U = G g G^T`` (16, K, C), ``V = B^T d B`` (16, T, C) and T the number of tiles
(channels last, so the transforms' inner loops run over contiguous channels). That is
16 multiply-adds per 4 outputs instead of 36: 2.25x fewer than the direct convolution, for the
cost of the transforms (a few additions per value, memory-bound). "Same" layers on even planes
from 8x8 instead keep NCHW and put the tiles in the vector lanes, ``M[xi] (K x T) = U[xi]
V[xi]`` on the vector-register micro-kernel (the section "tiles in the vector lanes" below).

The backward pass is the exact gradient of that computation (exact arithmetic makes it the
convolution's gradient):

* ``dM = A dY A^T`` per tile (16, T, K);
* weight: ``dU[xi] = dM[xi]^T @ V[xi]`` (summed over the tiles), then ``dW = G^T dU G``;
* input: ``dV[xi] = dM[xi] @ U[xi]``, then ``dX += B dV B^T`` scattered into the
  overlapping 4x4 input tiles (stride 2).

Layout: ``x`` (N, C, H, W), ``w`` (K, C, 3, 3), ``y`` (N, K, Ho, Wo) as in ``conv.py``;
padding ``(pad_top, pad_left)`` with the output size fixing the rest. Output tile ``(i, j)``
covers outputs ``(2i..2i+1, 2j..2j+1)`` and reads input rows ``2i - pad_top .. 2i - pad_top + 3``
(zero outside the input). Every kernel is serial; the engine runs them on batch chunks, or
for small planes in the three phases of :class:`ByPosition`.
Each kernel is written once as an undecorated ``_*_py`` function and compiled by ``jit``.
Why and where this path is taken: ``cnncalc/kernels/fast/README.md`` ("Winograd").
"""
from __future__ import annotations

import numpy as np

from . import norm, simd
from ._jit import jit
from .blas import _gemm

__all__ = ["TILES", "ByPosition", "applies", "backward_du", "forward_weights", "weight_grad",
           "weight_transform", "winograd_backward", "winograd_forward"]

TILES = 16              # positions in a 4x4 transformed tile
# The transform matrices, as coefficient tables for the row kernels (each caller loops over
# them through one call site: every inlined copy of a vectorised row loop costs compile time)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
# row a of B^T d as d[ra] + sign * d[rb]: (ra, rb, sign)
_BT_ROWS = np.array([[0, 2, -1], [1, 2, 1], [2, 1, -1], [1, 3, -1]], np.int64)
# row r of B dV as the sum of w * dV[xi] over (first position xi of a tile row, weight) pairs:
# v0; v1 - v2 + v3; v1 + v2 - v0; -v3 (unused terms weigh 0)
_B_ROWS = np.array([[0, 0, 0], [4, 8, 12], [4, 8, 0], [12, 12, 12]], np.int64)
_B_ROWS_W = np.array([[1, 0, 0], [1, -1, 1], [1, 1, -1], [-1, 0, 0]], np.float64)
BLOCK_BYTES = 1 << 20   # transformed input of one block of samples: about this many bytes ...
MIN_TILES = 128         # ... unless that leaves the GEMMs fewer rows (tiles) than this
# The forward GEMMs multiply by U[xi]^T. BLAS runs them faster from a contiguous (C x K) copy
# than from the transposed view of U's (K x C) rows, most for few channels; NumPy's transposed
# copy, though, grows costly past 128 channels. So layers up to this many channels get the copy
# (the figures: cnncalc/kernels/fast/README.md, "Winograd").
FORWARD_UT_MAX_CHANNELS = 128


def applies(kh, kw, sh, sw, dh, dw, groups, pt, pl, ho, wo) -> bool:
    """Can F(2x2, 3x3) compute this layer? 3x3, stride 1, dilation 1, one group, padding
    0..2 before each axis (any padding after: the output size sets it)."""
    return (kh == 3 and kw == 3 and sh == 1 and sw == 1 and dh == 1 and dw == 1
            and groups == 1 and 0 <= pt <= 2 and 0 <= pl <= 2 and ho >= 1 and wo >= 1)


# --------------------------------------------------------------------------------------------
# weight transforms: U = G g G^T and its adjoint dW = G^T dU G
# --------------------------------------------------------------------------------------------
def _g_rows_py(t0, t1, t2, wa, wb, wc, u, xi0, k):
    """u[xi0 + b, k, :] = ((wa*t0 + wb*t1 + wc*t2) G^T)[b], where t0, t1, t2 are one column's
    three taps (rows of ``g``) for every channel: one row of ``G g G^T`` (G's rows: g0,
    (g0 + g1 + g2)/2, (g0 - g1 + g2)/2, g2)."""
    half = u.dtype.type(0.5)
    for c in range(u.shape[2]):
        r0 = wa * t0[0, c] + wb * t1[0, c] + wc * t2[0, c]
        r1 = wa * t0[1, c] + wb * t1[1, c] + wc * t2[1, c]
        r2 = wa * t0[2, c] + wb * t1[2, c] + wc * t2[2, c]
        u[xi0, k, c] = r0
        u[xi0 + 1, k, c] = half * (r0 + r1 + r2)
        u[xi0 + 2, k, c] = half * (r0 - r1 + r2)
        u[xi0 + 3, k, c] = r2


_g_rows = jit(_g_rows_py)


def _weight_transform_py(w, k0, k1, u):
    """u[4*a + b, k, c] = (G w[k, c] G^T)[a, b] for output channels k0..k1."""
    c_in = w.shape[1]
    taps = np.empty((3, 3, c_in), w.dtype)    # taps[i, j, c] = w[k, c, i, j]
    for k in range(k0, k1):
        for i in range(3):
            for j in range(3):
                for c in range(c_in):
                    taps[i, j, c] = w[k, c, i, j]
        for a in range(4):      # one call site: each inlined copy costs compile time
            _g_rows(taps[0], taps[1], taps[2], w.dtype.type(_G[a, 0]), w.dtype.type(_G[a, 1]),
                    w.dtype.type(_G[a, 2]), u, 4 * a, k)


_weight_transform = jit(_weight_transform_py)


def _gt_rows_py(du, k, wa, wb, wc, wd, out):
    """out[j, :] = ((wa*dU[0] + wb*dU[1] + wc*dU[2] + wd*dU[3]) G)[j] for output channel k,
    where dU[a] is row a of each channel's 4x4 tile: one row of ``G^T dU G`` (G^T's rows over
    4 values: d0 + (d1 + d2)/2, (d1 - d2)/2, (d1 + d2)/2 + d3)."""
    half = out.dtype.type(0.5)
    for c in range(out.shape[1]):
        e0 = wa * du[0, k, c] + wb * du[4, k, c] + wc * du[8, k, c] + wd * du[12, k, c]
        e1 = wa * du[1, k, c] + wb * du[5, k, c] + wc * du[9, k, c] + wd * du[13, k, c]
        e2 = wa * du[2, k, c] + wb * du[6, k, c] + wc * du[10, k, c] + wd * du[14, k, c]
        e3 = wa * du[3, k, c] + wb * du[7, k, c] + wc * du[11, k, c] + wd * du[15, k, c]
        out[0, c] = e0 + half * (e1 + e2)
        out[1, c] = half * (e1 - e2)
        out[2, c] = half * (e1 + e2) + e3


_gt_rows = jit(_gt_rows_py)


def _weight_grad_py(du, k0, k1, dw):
    """dw[k, c] = G^T du[:, k, c] G for output channels k0..k1 (du: the 16 positions of each
    4x4 tile)."""
    c_in = dw.shape[1]
    dt = dw.dtype.type
    taps = np.empty((3, 3, c_in), dw.dtype)   # taps[i, j, c] = dw[k, c, i, j]
    for k in range(k0, k1):
        for i in range(3):      # row i of G^T: column i of G
            _gt_rows(du, k, dt(_G[0, i]), dt(_G[1, i]), dt(_G[2, i]), dt(_G[3, i]), taps[i])
        for c in range(c_in):
            for i in range(3):
                for j in range(3):
                    dw[k, c, i, j] = taps[i, j, c]


_weight_grad = jit(_weight_grad_py)


def _transpose_rows_py(u, k0, k1, ut):
    """ut[xi, c, k] = u[xi, k, c] for output channels k0..k1 (a copy: the same bits)."""
    for xi in range(u.shape[0]):
        for k in range(k0, k1):
            for c in range(u.shape[2]):
                ut[xi, c, k] = u[xi, k, c]


_transpose_rows = jit(_transpose_rows_py)


def weight_transform(w, out=None, k0=0, k1=None, out_t=None) -> np.ndarray:
    """U = G w G^T as (16, K, C), C-contiguous (rows ``k0..k1`` of ``out`` when given: the
    engine splits this over its threads). With ``out_t`` (16, C, K), also U^T (the lanes
    backward's :func:`lanes_dx_weights`) for those rows, in the same call."""
    w = np.ascontiguousarray(w)
    u = np.empty((TILES, w.shape[0], w.shape[1]), w.dtype) if out is None else out
    k1 = w.shape[0] if k1 is None else k1
    _weight_transform(w, k0, k1, u)
    if out_t is not None:
        _transpose_rows(u, k0, k1, out_t)
    return u


def forward_weights(u, out=None) -> np.ndarray:
    """The forward GEMMs' right operand ``U^T`` (16, C, K): a C-contiguous copy (into ``out``
    when given) for layers of at most ``FORWARD_UT_MAX_CHANNELS`` channels, else the
    transposed view of ``u``."""
    ut = u.transpose(0, 2, 1)
    if max(u.shape[1], u.shape[2]) > FORWARD_UT_MAX_CHANNELS:
        return ut
    if out is None:
        return np.ascontiguousarray(ut)
    np.copyto(out, ut)
    return out


# --------------------------------------------------------------------------------------------
# data transforms on one block of samples. Inside a block everything is channels-last (NHWC
# scratch planes; V and M as (16, tiles, channels)) so that each transform's inner loop runs
# over contiguous channels; tile t = (s - s0)*th*tw + i*tw + j.
# --------------------------------------------------------------------------------------------
def _pad_nhwc_py(x, s0, s1, pt, pl, xp):
    """xp[s - s0, r, q, c] = x[s, c, r - pt, q - pl] (zero outside the input)."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = xp.shape[1], xp.shape[2]
    zero = x.dtype.type(0)
    rows = min(h, hp - pt)
    cols = min(w, wp - pl)
    for s in range(s0, s1):
        dst = xp[s - s0]
        for r in range(hp):
            for q in range(wp):
                if r < pt or r >= pt + rows or q < pl or q >= pl + cols:
                    for c in range(c_in):
                        dst[r, q, c] = zero
        src = x[s]
        for c in range(c_in):
            for r in range(rows):
                for q in range(cols):
                    dst[pt + r, pl + q, c] = src[c, r, q]


_pad_nhwc = jit(_pad_nhwc_py)


def _row_transform_py(ra, rb, sign, tw, t, v, xi0):
    """v[xi0 + b, t + j, :] = ((ra + sign * rb) B)[b] over the 4 columns 2j..2j+3, for the
    tw tiles of a tile row: one row of ``B^T d B`` (``ra + sign*rb`` is that row of
    ``B^T d``). Four stores per loop keep it vectorised (LLVM gives up on loops with many
    store streams); the tiles loop here, not around a call, for short channel loops."""
    for j in range(tw):
        q = 2 * j
        for c in range(v.shape[2]):
            a0 = ra[q, c] + sign * rb[q, c]
            a1 = ra[q + 1, c] + sign * rb[q + 1, c]
            a2 = ra[q + 2, c] + sign * rb[q + 2, c]
            a3 = ra[q + 3, c] + sign * rb[q + 3, c]
            v[xi0, t + j, c] = a0 - a2
            v[xi0 + 1, t + j, c] = a1 + a2
            v[xi0 + 2, t + j, c] = a2 - a1
            v[xi0 + 3, t + j, c] = a1 - a3


_row_transform = jit(_row_transform_py)


def _input_transform_py(xp, th, tw, v, t0):
    """v[xi, t0 + t, :] = (B^T d B)[xi] for the 4x4 input tile d of tile t, all channels at
    once (B^T's rows: d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    for sb in range(xp.shape[0]):
        for i in range(th):
            t = t0 + (sb * th + i) * tw
            for a in range(4):   # row a of B^T d: d[ra] + sign * d[rb]
                _row_transform(xp[sb, 2 * i + _BT_ROWS[a, 0]], xp[sb, 2 * i + _BT_ROWS[a, 1]],
                               xp.dtype.type(_BT_ROWS[a, 2]), tw, t, v, 4 * a)


_input_transform = jit(_input_transform_py)


def _out_row_py(m, t, xa, xb, xc, sign, row, tw):
    """row[2j, :], row[2j + 1, :] = (r A)[0, 1] with r = m[xa..] + sign*(m[xb..] + m[xc..])
    for tiles t + j of a tile row: one output row of ``A^T m A`` (A^T's rows: m0 + m1 + m2,
    m1 - m2 - m3)."""
    for j in range(tw):
        q = 2 * j
        tj = t + j
        for k in range(m.shape[2]):
            p0 = m[xa, tj, k] + sign * (m[xb, tj, k] + m[xc, tj, k])
            p1 = m[xa + 1, tj, k] + sign * (m[xb + 1, tj, k] + m[xc + 1, tj, k])
            p2 = m[xa + 2, tj, k] + sign * (m[xb + 2, tj, k] + m[xc + 2, tj, k])
            p3 = m[xa + 3, tj, k] + sign * (m[xb + 3, tj, k] + m[xc + 3, tj, k])
            row[q, k] = p0 + p1 + p2
            row[q + 1, k] = p1 - p2 - p3


_out_row = jit(_out_row_py)


def _output_transform_py(m, th, tw, yb, t0):
    """yb[sb, 2i + a, 2j + b, :] = (A^T m[:, t, :] A)[a, b] (channels-last, whole tiles)."""
    for sb in range(yb.shape[0]):
        for i in range(th):
            t = t0 + (sb * th + i) * tw
            for a in range(2):   # m0 + (m1 + m2), then m1 - (m2 + m3)
                _out_row(m, t, 4 * a, 4 * a + 4, 4 * a + 8, m.dtype.type(1 - 2 * a),
                         yb[sb, 2 * i + a], tw)


_output_transform = jit(_output_transform_py)


def _unpad_nchw_py(yb, b, has_bias, s0, y):
    """y[s0 + sb, k, r, q] = yb[sb, r, q, k] (+ b[k]) inside y's (Ho, Wo)."""
    k_out, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    for sb in range(yb.shape[0]):
        dst = y[s0 + sb]
        src = yb[sb]
        for k in range(k_out):
            bk = b[k] if has_bias else zero
            for r in range(ho):
                for q in range(wo):
                    dst[k, r, q] = src[r, q, k] + bk


_unpad_nchw = jit(_unpad_nchw_py)


def _row_dm_py(g0, wa, g1, wb, tw, t, dm, xi0):
    """dm[xi0 + b, t + j, :] = ((wa*g0 + wb*g1) A^T)[b] over the 2 columns 2j, 2j+1 of each
    tile of a tile row: one row of ``A dY A^T`` (A^T's columns: y0, y0 + y1, y0 - y1, -y1)."""
    for j in range(tw):
        q = 2 * j
        tj = t + j
        for k in range(dm.shape[2]):
            a0 = wa * g0[q, k] + wb * g1[q, k]
            a1 = wa * g0[q + 1, k] + wb * g1[q + 1, k]
            dm[xi0, tj, k] = a0
            dm[xi0 + 1, tj, k] = a0 + a1
            dm[xi0 + 2, tj, k] = a0 - a1
            dm[xi0 + 3, tj, k] = -a1


_row_dm = jit(_row_dm_py)


def _output_grad_transform_py(dyb, th, tw, dm, t0):
    """dm[:, t, :] = A dY A^T for the 2x2 output-gradient block of tile t (``dyb`` is the
    block's dY channels-last, zero past the output's edge). A's rows over dY's two rows:
    y0, y0 + y1, y0 - y1, -y1."""
    dt = dyb.dtype.type
    for sb in range(dyb.shape[0]):
        for i in range(th):
            t = t0 + (sb * th + i) * tw
            for a in range(4):   # row a of A dY: A[a, 0] * y0 + A[a, 1] * y1
                _row_dm(dyb[sb, 2 * i], dt(_AT[0, a]), dyb[sb, 2 * i + 1], dt(_AT[1, a]), tw, t,
                        dm, 4 * a)


_output_grad_transform = jit(_output_grad_transform_py)


def _row_grad_py(dv, t, xi0, wa, xi1, wb, xi2, wc, row, tw):
    """row[2j .. 2j+3, :] += (e B^T) with e[b] = wa*dv[xi0 + b] + wb*dv[xi1 + b] +
    wc*dv[xi2 + b] (one row of ``B dV``: at most three of dV's tile rows) for the tiles t + j
    of a tile row, one after another (neighbours overlap by two columns): one row of
    ``B dV B^T`` (B^T's columns: e0, e1 - e2 + e3, e1 + e2 - e0, -e3)."""
    for j in range(tw):
        q = 2 * j
        tj = t + j
        for c in range(dv.shape[2]):
            e0 = wa * dv[xi0, tj, c] + wb * dv[xi1, tj, c] + wc * dv[xi2, tj, c]
            e1 = wa * dv[xi0 + 1, tj, c] + wb * dv[xi1 + 1, tj, c] + wc * dv[xi2 + 1, tj, c]
            e2 = wa * dv[xi0 + 2, tj, c] + wb * dv[xi1 + 2, tj, c] + wc * dv[xi2 + 2, tj, c]
            e3 = wa * dv[xi0 + 3, tj, c] + wb * dv[xi1 + 3, tj, c] + wc * dv[xi2 + 3, tj, c]
            row[q, c] += e0
            row[q + 1, c] += e1 - e2 + e3
            row[q + 2, c] += e1 + e2 - e0
            row[q + 3, c] -= e3


_row_grad = jit(_row_grad_py)


def _input_grad_transform_py(dv, th, tw, dxp, t0):
    """dxp[sb, 2i .. 2i+3, 2j .. 2j+3, :] += B dV B^T for every tile (tiles overlap by two
    rows and columns; they run one after another, channels in the inner loop). ``dxp`` starts
    zeroed. B's rows over dV's tile rows: v0, v1 - v2 + v3, v1 + v2 - v0, -v3."""
    dt = dv.dtype.type
    for sb in range(dxp.shape[0]):
        for i in range(th):
            t = t0 + (sb * th + i) * tw
            for r in range(4):   # row r of B dV: its (at most 3) terms B^T[a, r] * dV[a]
                _row_grad(dv, t, _B_ROWS[r, 0], dt(_B_ROWS_W[r, 0]), _B_ROWS[r, 1],
                          dt(_B_ROWS_W[r, 1]), _B_ROWS[r, 2], dt(_B_ROWS_W[r, 2]),
                          dxp[sb, 2 * i + r], tw)


_input_grad_transform = jit(_input_grad_transform_py)


def _crop_nchw_py(xp, s0, pt, pl, dx):
    """dx[s0 + sb, c, r, q] = xp[sb, r + pt, q + pl, c] (zero where the tiles did not reach)."""
    c_in, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    hp, wp = xp.shape[1], xp.shape[2]
    zero = dx.dtype.type(0)
    for sb in range(xp.shape[0]):
        dst = dx[s0 + sb]
        src = xp[sb]
        for c in range(c_in):
            for r in range(h):
                for q in range(w):
                    if r + pt < hp and q + pl < wp:
                        dst[c, r, q] = src[r + pt, q + pl, c]
                    else:
                        dst[c, r, q] = zero


_crop_nchw = jit(_crop_nchw_py)




# --------------------------------------------------------------------------------------------
# the transforms of a batch slice s0..s1, whose tiles start at index t0 of V / M (0 for a
# block's own buffers, s0*th*tw for whole-batch ones)
# --------------------------------------------------------------------------------------------
def _chunk_input(x, s0, s1, pt, pl, th, tw, v, t0):
    """v[:, t0 + tiles of s0..s1, :] = B^T d B. (The four ``_chunk_*`` steps are plain Python
    over the jitted kernels: a jitted wrapper re-inlines and recompiles its callees, ~0.4 s
    each per dtype on a cold cache, for a few microseconds saved per call.)"""
    xp = np.empty((s1 - s0, 2 * th + 2, 2 * tw + 2, x.shape[1]), x.dtype)
    _pad_nhwc(x, s0, s1, pt, pl, xp)
    _input_transform(xp, th, tw, v, t0)


def _chunk_output(m, b, has_bias, s0, s1, th, tw, y, t0):
    """y[s0..s1] = A^T m A (+ b) from the slice's tiles of m."""
    yb = np.empty((s1 - s0, 2 * th, 2 * tw, m.shape[2]), m.dtype)
    _output_transform(m, th, tw, yb, t0)
    _unpad_nchw(yb, b, has_bias, s0, y)


def _chunk_output_grad(dy, s0, s1, th, tw, dm, t0):
    """dm[:, t0 + tiles of s0..s1, :] = A dY A^T."""
    dyb = np.empty((s1 - s0, 2 * th, 2 * tw, dy.shape[1]), dy.dtype)
    _pad_nhwc(dy, s0, s1, 0, 0, dyb)   # channels last, zero past the output's edge
    _output_grad_transform(dyb, th, tw, dm, t0)


def _chunk_input_grad(dv, s0, s1, pt, pl, th, tw, dx, t0):
    """dx[s0..s1] = the sum of B dV B^T over the slice's tiles, cropped to the input."""
    xp = np.zeros((s1 - s0, 2 * th + 2, 2 * tw + 2, dv.shape[2]), dv.dtype)
    _input_grad_transform(dv, th, tw, xp, t0)
    _crop_nchw(xp, s0, pt, pl, dx)


def _tiles(ho, wo):
    return (ho + 1) // 2, (wo + 1) // 2


def _block(n, c_in, k_out, tpp, itemsize) -> int:
    """Samples per block: the block's transformed input and output stay about
    ``BLOCK_BYTES`` each (cache-sized), but the 16 GEMMs get at least ``MIN_TILES`` rows where
    the batch has them (short GEMMs run far below BLAS's peak: 512 channels on 4x4 planes,
    16 samples, forward 112 GF/s with 32 tiles per GEMM, 153 with 64)."""
    per = TILES * max(c_in, k_out) * tpp * itemsize
    return max(1, min(n, max(BLOCK_BYTES // per, -(-MIN_TILES // tpp))))


def _bias(b, dtype):
    """(has_bias, the bias as an array of ``dtype``; one placeholder 0 without one)."""
    if b is None:
        return False, np.zeros(1, dtype)
    return True, np.ascontiguousarray(b, dtype=dtype)


def _blocks(n, nb):
    return [(s0, min(n, s0 + nb)) for s0 in range(0, n, nb)]


def _block_views(n, c_in, k_out, th, tw, dtype):
    """``(s0, s1, V, M)`` for each cache-sized block of samples (:func:`_block`): V (16, T, C)
    and M (16, T, K) views of two buffers allocated once."""
    nb = _block(n, c_in, k_out, th * tw, np.dtype(dtype).itemsize)
    vbuf = np.empty(TILES * nb * th * tw * c_in, dtype)
    mbuf = np.empty(TILES * nb * th * tw * k_out, dtype)
    for s0, s1 in _blocks(n, nb):
        t = (s1 - s0) * th * tw
        yield (s0, s1, vbuf[:TILES * t * c_in].reshape(TILES, t, c_in),
               mbuf[:TILES * t * k_out].reshape(TILES, t, k_out))


def winograd_forward(x, w, b, pad, out_hw, *, out=None, u=None, ut=None):
    """F(2x2, 3x3) convolution forward. ``x`` (N, C, H, W), ``w`` (K, C, 3, 3), ``b`` (K,) or
    None, ``pad`` = (top, left), ``out_hw`` = (Ho, Wo). ``u``: ``weight_transform(w)``, or
    ``ut``: ``forward_weights(u)``, when the caller already has it. Returns ``y`` (N, K, Ho, Wo). Runs in cache-sized blocks of samples
    (:func:`_block`): transform, the 16 GEMMs (one ``matmul`` call), transform back."""
    x = np.ascontiguousarray(x)
    n, c_in = x.shape[0], x.shape[1]
    k_out = w.shape[0]
    ho, wo = out_hw
    th, tw = _tiles(ho, wo)
    if ut is None:
        ut = forward_weights(weight_transform(w) if u is None else u)
    out = np.empty((n, k_out, ho, wo), x.dtype) if out is None else out
    has_bias, bb = _bias(b, x.dtype)
    for s0, s1, v, m in _block_views(n, c_in, k_out, th, tw, x.dtype):
        _chunk_input(x, s0, s1, int(pad[0]), int(pad[1]), th, tw, v, 0)
        np.matmul(v, ut, out=m)
        _chunk_output(m, bb, has_bias, s0, s1, th, tw, out, 0)
    return out


def backward_du(dy, x, u, pad, need_dx=True, *, out_dx=None):
    """The backward pass up to ``dU``: ``(dx or None, du)`` with ``du`` (16, K, C) summed over
    the batch in block order (``dW = G^T dU G``: :func:`weight_grad`). The engine sums the
    ``du`` of its batch chunks and transforms once."""
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    n, c_in = x.shape[0], x.shape[1]
    k_out = u.shape[1]
    th, tw = _tiles(dy.shape[2], dy.shape[3])
    pt, pl = int(pad[0]), int(pad[1])
    du = np.empty((TILES, k_out, c_in), x.dtype)
    part = np.empty_like(du)
    dx = None
    if need_dx:
        dx = np.empty_like(x) if out_dx is None else out_dx
    for s0, s1, v, dm in _block_views(n, c_in, k_out, th, tw, x.dtype):
        _chunk_input(x, s0, s1, pt, pl, th, tw, v, 0)
        _chunk_output_grad(dy, s0, s1, th, tw, dm, 0)
        dmt = dm.transpose(0, 2, 1)
        if s0 == 0:
            np.matmul(dmt, v, out=du)                   # dU = dM^T V
        else:
            np.matmul(dmt, v, out=part)
            du += part
        if need_dx:
            np.matmul(dm, u, out=v)                     # dV = dM U, into V (used up)
            _chunk_input_grad(v, s0, s1, pt, pl, th, tw, dx, 0)
    return dx, du


def weight_grad(du, out=None, k0=0, k1=None) -> np.ndarray:
    """dW = G^T dU G as (K, C, 3, 3) (rows ``k0..k1`` of ``out`` when given)."""
    k_out, c_in = du.shape[1], du.shape[2]
    dw = np.empty((k_out, c_in, 3, 3), du.dtype) if out is None else out
    _weight_grad(du, k0, k_out if k1 is None else k1, dw)
    return dw


def _sum_parts_py(parts, k0, k1, du):
    """du[:, k0:k1] = parts[0] + parts[1] + ... (those rows), added in part order: the float
    sums of a running total, so the same bits whatever the vector width (compiled without
    fast-math: nothing reassociated)."""
    for xi in range(parts.shape[1]):
        for k in range(k0, k1):
            dst = du[xi, k]
            src = parts[0, xi, k]
            for c in range(dst.shape[0]):
                dst[c] = src[c]
            for p in range(1, parts.shape[0]):
                src = parts[p, xi, k]
                for c in range(dst.shape[0]):
                    dst[c] += src[c]


_sum_parts = jit(_sum_parts_py, fastmath=False)


def sum_parts(parts, du, k0=0, k1=None) -> np.ndarray:
    """``du = parts[0] + parts[1] + ...``: the batch chunks' partial ``dU`` (P, 16, K, C)
    added in chunk order (the same bits as NumPy's additions one after another); rows
    ``k0..k1`` only when given (the engine splits large ones over its threads)."""
    _sum_parts(parts, k0, du.shape[1] if k1 is None else k1, du)
    return du


class ByPosition:
    """Winograd in three phases over the whole batch, for layers whose weights are large next
    to their activations (small planes, many channels):

    1. each batch chunk transforms its samples into whole-batch ``V`` (16, T, C) (and, in the
       backward, ``dM`` (16, T, K));
    2. each of the 16 positions is one full-batch GEMM (``M = V U^T``; backward
       ``dU = dM^T V`` and ``dV = dM U``), so ``U[xi]`` is read once per position and ``dU``
       needs no per-chunk partial sums (its sum over the batch is one GEMM, whichever thread
       runs it: deterministic);
    3. each batch chunk transforms its tiles back (``y``; backward ``dx``).

    ``run(fn, n)`` runs ``fn(0) .. fn(n-1)`` (the engine's pool); ``chunks`` are the batch
    slices ``[(s0, s1), ...]``; ``scratch(name, shape)`` gives the whole-batch workspaces
    (default: new arrays). Measured against chunked dU partials on VGG-11's 512-channel
    layers: see ``cnncalc/kernels/fast/README.md`` ("Winograd").
    """

    def __init__(self, pad, out_hw):
        self.pt, self.pl = int(pad[0]), int(pad[1])
        self.ho, self.wo = out_hw
        self.th, self.tw = _tiles(*out_hw)

    def _workspaces(self, x, k_out, scratch):
        """Whole-batch V (16, T, C) and M / dM (16, T, K)."""
        t = x.shape[0] * self.th * self.tw
        scratch = scratch or (lambda name, shape: np.empty(shape, x.dtype))
        return (scratch("winograd_v", (TILES, t, x.shape[1])),
                scratch("winograd_m", (TILES, t, k_out)))

    def forward(self, x, ut, b, y, run, chunks, scratch=None):
        """``y`` := the convolution of ``x``; ``ut`` is :func:`forward_weights` of U."""
        x = np.ascontiguousarray(x)
        th, tw, tpp = self.th, self.tw, self.th * self.tw
        v, m = self._workspaces(x, ut.shape[2], scratch)
        run(lambda i: _chunk_input(x, chunks[i][0], chunks[i][1], self.pt, self.pl, th, tw, v,
                                   chunks[i][0] * tpp), len(chunks))
        run(lambda xi: np.dot(v[xi], ut[xi], out=m[xi]), TILES)
        has_bias, bb = _bias(b, x.dtype)
        run(lambda i: _chunk_output(m, bb, has_bias, chunks[i][0], chunks[i][1], th, tw, y,
                                    chunks[i][0] * tpp), len(chunks))
        return y

    def backward(self, dy, x, u, du, dx, run, chunks, scratch=None):
        """``du`` (16, K, C) := the batch's dU; ``dx`` (or None) := the input gradient."""
        dy = np.ascontiguousarray(dy)
        x = np.ascontiguousarray(x)
        th, tw, tpp = self.th, self.tw, self.th * self.tw
        v, dm = self._workspaces(x, u.shape[1], scratch)

        def phase1(i):
            s0, s1 = chunks[i]
            _chunk_input(x, s0, s1, self.pt, self.pl, th, tw, v, s0 * tpp)
            _chunk_output_grad(dy, s0, s1, th, tw, dm, s0 * tpp)

        def phase2(xi):
            np.dot(dm[xi].T, v[xi], out=du[xi])
            if dx is not None:       # dV overwrites V[xi], which dU[xi] no longer needs
                np.dot(dm[xi], u[xi], out=v[xi])

        run(phase1, len(chunks))
        run(phase2, TILES)
        if dx is not None:
            run(lambda i: _chunk_input_grad(v, chunks[i][0], chunks[i][1], self.pt, self.pl,
                                            th, tw, dx, chunks[i][0] * tpp), len(chunks))
        return du


def winograd_backward(dy, x, w, pad, need_dx=True, *, has_bias=True, out_dx=None, u=None):
    """F(2x2, 3x3) convolution backward: ``(dx or None, dw, db or None)``; arguments as for
    :func:`winograd_forward` (the output size comes from ``dy``)."""
    dy = np.ascontiguousarray(dy)
    dx, du = backward_du(dy, x, weight_transform(w) if u is None else u, pad, need_dx,
                         out_dx=out_dx)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, weight_grad(du), db


# --------------------------------------------------------------------------------------------
# tiles in the vector lanes: "same" layers on even planes, NCHW kept throughout
# --------------------------------------------------------------------------------------------
# The layout above puts channels last, so each batch block is transposed to NHWC and back, and
# its 16 GEMMs run through BLAS with a reduction of only C (16-64): at 16 and 32 channels that
# cost more than Winograd saves. Here the tiles lie along the vector lanes instead:
#
#     V[xi] (C, T),  M[xi] (K, T) = U[xi] (K, C) @ V[xi],  tile t = s*th*tw + i*tw + j
#
# so each position's product is a 1x1 convolution over the tiles, run by the vector-register
# micro-kernel (``simd.tiles``), and the transforms are flat loops over the tiles of a plane:
# the input's four (row, column) phase planes X_ab[i*tw + j] = x[2i + a, 2j + b] make every
# tap of a tile a contiguous stream. With padding 1 on every side (a "same" 3x3 layer) and an
# even plane, tile (i, j) reads x rows 2i-1 .. 2i+2 and columns 2j-1 .. 2j+2: columns
# O[j-1], E[j], O[j], E[j+1] of its rows' even / odd column phases, rows X_1[i-1], X_0[i],
# X_1[i], X_0[i+1] of the row phases. The backward transforms dY into dM the same way, dU is
# one BLAS GEMM per position over the block's tiles (a long reduction, where BLAS is fast),
# dV = U^T dM runs on the vector-register kernel again, and dX is the input transform's adjoint
# (its passes backwards, each written as a gather: no two tiles write the same value).
# Figures: cnncalc/kernels/fast/README.md, "Winograd with the tiles in the vector lanes".
LANES_BLOCK_BYTES = 1 << 19     # V and M of one block of samples together: about this much
# Smaller planes keep the channels-last layout (by position in the engine): a block of
# samples has few tiles per channel there, and VGG-11's 512-channel layers on 4x4 and 2x2 maps
# ran 2-3x slower in the lanes (one conv op, 2 threads, batch 64); on 8x8 maps the lanes were
# 1.1-1.3x faster from 64 to 256 channels.
LANES_MIN_PLANE = 64


def lanes_applies(pt, pl, h, w, ho, wo) -> bool:
    """The lanes layout's case: padding 1 on every side (output = input size) of an even
    plane of at least ``LANES_MIN_PLANE`` outputs."""
    return (pt == 1 and pl == 1 and ho == h and wo == w and h % 2 == 0 and w % 2 == 0
            and ho * wo >= LANES_MIN_PLANE)


def _lanes_input_py(x, s0, m, th, tw, v, ld, ph, rt, bn):
    """v[xi*C*ld + c*ld + si*th*tw + t] = (B^T d B)[xi] for tile t of sample s0 + si, channel c
    (``v`` flat (16, C, ld)). Each pass runs over the ``m`` samples' tiles at once (a channel's
    tiles lie side by side in ``v``): on 8x8 and 16x16 planes a sample's 16 or 64 tiles were too
    short a loop for the vector units. Scratch: ``ph`` 4*m*th*tw, ``rt`` 8 planes of
    (m*th + 2)*tw (the first and last row of each stay zero: the padding rows).

    With ``bn`` (4, C) float64 (no columns: none), the layer's input is ``max(bn(x), 0)``, a
    batch norm + ReLU applied here to the phase planes as :func:`cnncalc.kernels.norm.
    bn_normalise` does (rows: mean, inv_std, gamma, beta; the same expression, so the same
    values): the batch norm's output is never written to memory."""
    u = np.uint64
    c_in = x.shape[1]
    n = th * tw
    mn = m * n
    pr = mn + 2 * tw                 # one row-transformed plane, a zero row on either side
    xf = x.ravel()
    z = x.dtype.type(0)
    for q in range(8 * pr):
        rt[u(q)] = z
    for c in range(c_in):
        simd.split_phases(xf, (s0 * c_in + c) * 4 * n, c_in * 4 * n, m, th, tw, ph, mn)
        if bn.shape[1] > 0:
            bm = x.dtype.type(bn[0, c])
            ba = x.dtype.type(bn[1, c] * bn[2, c])
            bb = x.dtype.type(bn[3, c])
            for t in range(4 * mn):
                ph[u(t)] = max((ph[u(t)] - bm) * ba + bb, z)
        for a in range(2):
            # the columns: tile j reads O[j-1], E[j], O[j], E[j+1] of row phase a (the m
            # samples' tile rows one after another: no tile reaches across a row)
            e = u((2 * a) * mn)
            o = u((2 * a + 1) * mn)
            r0 = u((4 * a) * pr + tw)
            for t in range(1, mn):
                rt[r0 + u(t)] = ph[o + u(t - 1)] - ph[o + u(t)]
            for t in range(mn):
                rt[r0 + u(pr + t)] = ph[e + u(t)] + ph[o + u(t)]
            for t in range(mn):
                rt[r0 + u(2 * pr + t)] = ph[o + u(t)] - ph[e + u(t)]
            for t in range(mn - 1):
                rt[r0 + u(3 * pr + t)] = ph[e + u(t)] - ph[e + u(t + 1)]
            for i in range(m * th):        # columns -1 and 2tw are padding
                rt[r0 + u(i * tw)] = -ph[o + u(i * tw)]
                rt[r0 + u(3 * pr + i * tw + tw - 1)] = ph[e + u(i * tw + tw - 1)]
        # the rows: tile row i reads X_1[i-1], X_0[i], X_1[i], X_0[i+1]
        for b in range(4):
            p0 = u(b * pr + tw)          # row phase 0, column position b
            p1 = u((4 + b) * pr + tw)    # row phase 1
            d = u(b * c_in * ld + c * ld)
            step = u(4 * c_in * ld)
            for t in range(mn):
                d0 = rt[p1 + u(t) - u(tw)]
                d1 = rt[p0 + u(t)]
                d2 = rt[p1 + u(t)]
                d3 = rt[p0 + u(t + tw)]
                v[d + u(t)] = d0 - d2
                v[d + step + u(t)] = d1 + d2
                v[d + u(2) * step + u(t)] = d2 - d1
                v[d + u(3) * step + u(t)] = d1 - d3
            # a sample's first and last tile rows read its neighbours' rows as X_1[i-1] and
            # X_0[i+1]: those are padding (zero)
            for si in range(1, m):
                for j in range(tw):
                    t = u(si * n + j)
                    v[d + t] = -rt[p1 + t]
            for si in range(m - 1):
                for j in range(tw):
                    t = u(si * n + n - tw + j)
                    v[d + u(3) * step + t] = rt[p0 + t]


_lanes_input = jit(_lanes_input_py)


def _lanes_output_py(mf, ld, b, has_bias, s0, m, th, tw, y, q, ph):
    """y[s0 + si, k] = A^T M A (+ b[k]) from ``mf`` flat (16, K, ld), the passes over the ``m``
    samples' tiles at once (see :func:`_lanes_input`). Scratch: ``q`` 8*m*th*tw, ``ph``
    4*m*th*tw."""
    u = np.uint64
    k_out = y.shape[1]
    n = th * tw
    mn = m * n
    yf = y.ravel()
    step = u(4 * k_out * ld)
    zero = y.dtype.type(0)
    for k in range(k_out):
        src = u(k * ld)
        for s in range(4):      # the rows: A^T's rows m0 + m1 + m2 and m1 - m2 - m3
            o = src + u(s * k_out * ld)
            for t in range(mn):
                m0 = mf[o + u(t)]
                m1 = mf[o + step + u(t)]
                m2 = mf[o + u(2) * step + u(t)]
                m3 = mf[o + u(3) * step + u(t)]
                q[u(s * mn + t)] = m0 + m1 + m2
                q[u((4 + s) * mn + t)] = m1 - m2 - m3
        bk = b[k] if has_bias else zero
        for a in range(2):      # the columns, into the output's phase planes
            o = u(4 * a * mn)
            d = u(2 * a * mn)
            for t in range(mn):
                q0 = q[o + u(t)]
                q1 = q[o + u(mn + t)]
                q2 = q[o + u(2 * mn + t)]
                q3 = q[o + u(3 * mn + t)]
                ph[d + u(t)] = q0 + q1 + q2 + bk
                ph[d + u(mn + t)] = q1 - q2 - q3 + bk
        simd.join_phases(yf, (s0 * k_out + k) * 4 * n, k_out * 4 * n, m, th, tw, ph, mn)


_lanes_output = jit(_lanes_output_py)


def _lanes_output_grad_py(dy, s0, m, th, tw, dm, ld, ph, gbn, xbn, bn_relu):
    """dm[xi*K*ld + k*ld + si*th*tw + t] = (A dY A^T)[xi] for tile t of sample s0 + si (A's
    rows (1, 0), (1, 1), (1, -1), (0, -1)), over the ``m`` samples' tiles at once (see
    :func:`_lanes_input`); scratch ``ph`` 8*m*th*tw (4*m*th*tw without ``gbn``).

    With ``gbn`` (7, K) float64 (no columns: none), the layer's output ``xbn`` feeds a batch
    norm whose input-gradient pass this applies to the phase planes as it reads them: dY =
    the batch norm's dx, computed from ``dy`` (its output's gradient, or with a residual
    the masked g) by :func:`cnncalc.kernels.norm.bn_grad_input`'s expression and
    coefficients (rows: mean, inv_std, gamma, beta, scale, mb, mg; with ``bn_relu`` the
    ReLU's mask recomputed from ``xbn``), so the same values: the batch norm's dx is never
    written to memory."""
    u = np.uint64
    k_out = dy.shape[1]
    n = th * tw
    mn = m * n
    dyf = dy.ravel()
    xbf = xbn.ravel()
    step = u(4 * k_out * ld)
    dt = dy.dtype.type
    one, zero = dt(1), dt(0)
    pxi = 4 * mn                     # the batch norm input's phase planes, after dy's
    px = u(pxi)
    for k in range(k_out):
        simd.split_phases(dyf, (s0 * k_out + k) * 4 * n, k_out * 4 * n, m, th, tw, ph, mn)
        if gbn.shape[1] > 0:
            simd.split_phases(xbf, (s0 * k_out + k) * 4 * n, k_out * 4 * n, m, th, tw,
                              ph[pxi:], mn)
            bm = dt(gbn[0, k])
            ba = dt(gbn[4, k])
            bk = dt(gbn[4, k] * gbn[6, k] * gbn[1, k])
            bb = dt(gbn[4, k] * gbn[5, k])
            if bn_relu:
                at = dt(gbn[1, k] * gbn[2, k])
                bt = dt(gbn[3, k])
                for t in range(4 * mn):
                    xv = ph[px + u(t)]
                    g = ph[u(t)]                 # read first: a select, which vectorises
                    g = g if norm.bn_relu_open(xv, bm, at, bt, zero) else zero
                    ph[u(t)] = ba * g - bk * (xv - bm) - bb
            else:
                for t in range(4 * mn):
                    ph[u(t)] = ba * ph[u(t)] - bk * (ph[px + u(t)] - bm) - bb
        base = u(k * ld)
        for s in range(4):
            # column position s of row phase a: A's row s over (Y_a0, Y_a1)
            ca = one if s < 3 else zero
            cb = zero if s == 0 else (one if s == 1 else -one)
            d = base + u(s * k_out * ld)
            for t in range(mn):
                g0 = ca * ph[u(t)] + cb * ph[u(mn + t)]
                g1 = ca * ph[u(2 * mn + t)] + cb * ph[u(3 * mn + t)]
                dm[d + u(t)] = g0
                dm[d + step + u(t)] = g0 + g1
                dm[d + u(2) * step + u(t)] = g0 - g1
                dm[d + u(3) * step + u(t)] = -g1


# without fast-math, as norm.bn_grad_input, whose expression it may apply (the same bits);
# its own transform multiplies by 0 and 1 only, exact either way
_lanes_output_grad = jit(_lanes_output_grad_py, fastmath=False)


def _lanes_input_grad_py(dvf, ld, s0, m, th, tw, dx, q, ph):
    """dx[s0 + si, c] = the sum of B dV B^T over the tiles of sample s0 + si (the adjoint of
    :func:`_lanes_input`: the same passes backwards, each a gather) from ``dvf`` flat
    (16, C, ld), over the ``m`` samples' tiles at once. Scratch: ``q`` 8*m*th*tw, ``ph``
    4*m*th*tw."""
    u = np.uint64
    c_in = dx.shape[1]
    n = th * tw
    mn = m * n
    dxf = dx.ravel()
    step = u(4 * c_in * ld)
    for c in range(c_in):
        src = u(c * ld)
        for b in range(4):
            # the rows: tile row i read X_1[i-1], X_0[i], X_1[i], X_0[i+1] as d0..d3 of
            # V0 = d0 - d2, V1 = d1 + d2, V2 = d2 - d1, V3 = d1 - d3
            o = src + u(b * c_in * ld)
            g0 = u(b * mn)          # dR of row phase 0, column position b
            g1 = u((4 + b) * mn)    # ... of row phase 1
            for t in range(mn):
                v0 = dvf[o + u(t)]
                v1 = dvf[o + step + u(t)]
                v2 = dvf[o + u(2) * step + u(t)]
                v3 = dvf[o + u(3) * step + u(t)]
                q[g0 + u(t)] = v1 - v2 + v3
                q[g1 + u(t)] = v1 + v2 - v0
            for t in range(mn - tw):    # d3 of tile row i is d1's row of tile row i + 1
                q[g0 + u(t + tw)] -= dvf[o + u(3) * step + u(t)]
            for t in range(mn - tw):    # d0 of tile row i + 1 is d2's row of tile row i
                q[g1 + u(t)] += dvf[o + u(t + tw)]
            for si in range(1, m):      # ... within a sample: no tile reaches the next one
                for j in range(tw):
                    t = u(si * n + j)
                    q[g0 + t] += dvf[o + u(3) * step + t - u(tw)]
                    q[g1 + t - u(tw)] -= dvf[o + t]
        for a in range(2):
            # the columns: tile j read O[j-1], E[j], O[j], E[j+1] as s0 = O[j-1] - O[j],
            # s1 = E[j] + O[j], s2 = O[j] - E[j], s3 = E[j] - E[j+1]
            r0 = u(4 * a * mn)
            e = u(2 * a * mn)
            od = u((2 * a + 1) * mn)
            for t in range(mn):
                d0 = q[r0 + u(t)]
                d1 = q[r0 + u(mn + t)]
                d2 = q[r0 + u(2 * mn + t)]
                d3 = q[r0 + u(3 * mn + t)]
                ph[od + u(t)] = d1 + d2 - d0
                ph[e + u(t)] = d1 - d2 + d3
            for t in range(mn - 1):
                ph[od + u(t)] += q[r0 + u(t + 1)]
                ph[e + u(t + 1)] -= q[r0 + u(3 * mn + t)]
            for i in range(1, m * th):  # no tile reaches across a row's end
                ph[od + u(i * tw - 1)] -= q[r0 + u(i * tw)]
                ph[e + u(i * tw)] += q[r0 + u(3 * mn + i * tw - 1)]
        simd.join_phases(dxf, (s0 * c_in + c) * 4 * n, c_in * 4 * n, m, th, tw, ph, mn)


_lanes_input_grad = jit(_lanes_input_grad_py)


def _block_columns(dtype) -> int:
    """Columns (tiles) of one register block of ``simd.tiles``."""
    return simd.NV * simd.lanes(dtype)


def _lanes_block(n, c_in, k_out, tpp, itemsize) -> int:
    """Samples per block: V and M together about ``LANES_BLOCK_BYTES`` (they stay in L2), but
    at least a register block's columns of tiles where the batch has them (the columns past
    the tiles are computed and dropped)."""
    columns = _block_columns(np.dtype(f"f{itemsize}"))
    return max(1, min(n, max(LANES_BLOCK_BYTES // (TILES * (c_in + k_out) * tpp * itemsize),
                             -(-columns // tpp))))


def _lanes_scratch_py(x, nb, n, tw):
    """The transforms' scratch for blocks of up to ``nb`` samples of ``n`` tiles, ``tw`` per
    row (their samples side by side): ``ph`` (4 phase planes), ``rt`` (8 row-transformed
    planes, a zero row on either side), ``q`` (8 planes)."""
    return (np.empty(4 * nb * n, x.dtype), np.empty(8 * (nb * n + 2 * tw), x.dtype),
            np.empty(8 * nb * n, x.dtype))


_lanes_scratch = jit(_lanes_scratch_py)


def _lanes_forward_py(x, uf, b, has_bias, th, tw, y, nb, qb, bn):
    """The forward of :func:`lanes_forward` (``uf`` = U flat (16, K, C)); ``bn``: see
    :func:`_lanes_input`."""
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = y.shape[1]
    n = th * tw
    ld = (nb * n + qb - 1) // qb * qb
    v = np.zeros(TILES * c_in * ld, x.dtype)     # the columns past the tiles stay finite
    mf = np.empty(TILES * k_out * ld, x.dtype)
    ph, rt, q = _lanes_scratch(x, nb, n, tw)
    offs = np.zeros(1, np.int64)
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * n + qb - 1) // qb * qb
        _lanes_input(x, s0, m, th, tw, v, ld, ph, rt, bn)
        for xi in range(TILES):
            simd.tiles(v[xi * c_in * ld:], ld, uf, xi * k_out * c_in, c_in, 1, offs,
                       mf[xi * k_out * ld:], ld, nq, k_out, qb)
        _lanes_output(mf, ld, b, has_bias, s0, m, th, tw, y, q, ph)


_lanes_forward = jit(_lanes_forward_py)


def _input_bn(bn):
    """The ``bn`` argument of the lanes kernels: (4, C) float64, or none (no columns)."""
    return np.zeros((4, 0)) if bn is None else np.ascontiguousarray(bn, np.float64)


def lanes_forward_rows(x, u, b, out, bn=None):
    """``run(a, c)``: :func:`lanes_forward` of the samples ``a:c`` of ``x`` into ``out[a:c]``
    (the engine's batch chunks). Everything that does not depend on the chunk is settled here,
    once per call: a chunk is one compiled call, since the Python before it delays the other
    thread's start (it waits for the GIL). With ``bn`` (mean, inv_std, gamma, beta rows) the
    layer's input is ``max(bn(x), 0)`` (:func:`_lanes_input`)."""
    x = np.ascontiguousarray(x)
    uf = np.ascontiguousarray(u, dtype=x.dtype).ravel()
    th, tw = x.shape[2] // 2, x.shape[3] // 2
    has_bias, bb = _bias(b, x.dtype)
    qb = _block_columns(x.dtype)
    blocks = _LanesBlocks(x.shape[1], u.shape[1], th * tw, x.dtype.itemsize)
    bnf = _input_bn(bn)

    def run(a, c):
        _lanes_forward(x[a:c], uf, bb, has_bias, th, tw, out[a:c], blocks(c - a), qb, bnf)

    return run


def lanes_forward(x, u, b, out) -> np.ndarray:
    """F(2x2, 3x3) forward of a layer that :func:`lanes_applies` to, tiles in the vector lanes:
    ``x`` (N, C, H, W), ``u`` = :func:`weight_transform` (16, K, C), ``b`` (K,) or None, into
    ``out`` (N, K, H, W)."""
    lanes_forward_rows(x, u, b, out)(0, x.shape[0])
    return out


class _LanesBlocks:
    """Samples per block (:func:`_lanes_block`) by chunk size, computed once per size."""

    def __init__(self, c_in, k_out, tpp, itemsize):
        self.args = (c_in, k_out, tpp, itemsize)
        self.by_n: dict[int, int] = {}

    def __call__(self, n: int) -> int:
        nb = self.by_n.get(n)
        if nb is None:
            nb = self.by_n[n] = _lanes_block(n, *self.args)
        return nb


def _lanes_backward_py(dy, x, utf, need_dx, dx, du, nb, qb, bn, gbn, xbn, bn_relu):
    """dU (into ``du`` (16, K, C)) summed over blocks of ``nb`` samples in block order, and
    with ``need_dx`` the input gradient: dV = U^T dM (``utf``: U^T (16, C, K) flat) on the
    vector-register kernel, then the adjoint of the input transform. ``bn``: see
    :func:`_lanes_input`; ``gbn``, ``xbn``, ``bn_relu``: see :func:`_lanes_output_grad`."""
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = dy.shape[1]
    th, tw = x.shape[2] // 2, x.shape[3] // 2
    n = th * tw
    ld = (nb * n + qb - 1) // qb * qb
    v = np.empty(TILES * c_in * ld, x.dtype)
    dm = np.zeros(TILES * k_out * ld, x.dtype)   # the columns past the tiles stay finite
    ph, rt, q = _lanes_scratch(x, nb, n, tw)
    # the output gradient's phases, and the batch norm input's after them
    ph2 = np.empty(8 * nb * n, x.dtype) if gbn.shape[1] > 0 else ph
    offs = np.zeros(1, np.int64)
    duf = du.ravel()
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        _lanes_input(x, s0, m, th, tw, v, ld, ph, rt, bn)
        _lanes_output_grad(dy, s0, m, th, tw, dm, ld, ph2, gbn, xbn, bn_relu)
        for xi in range(TILES):      # dU[xi] (+)= dM[xi] V[xi]^T over the block's tiles
            _gemm(False, True, k_out, c_in, m * n, 1.0, dm, xi * k_out * ld, ld, v,
                  xi * c_in * ld, ld, 0.0 if s0 == 0 else 1.0, duf, xi * k_out * c_in, c_in)
        if need_dx:                  # dV[xi] = U[xi]^T dM[xi], into V (used up)
            nq = (m * n + qb - 1) // qb * qb
            for xi in range(TILES):
                simd.tiles(dm[xi * k_out * ld:], ld, utf, xi * c_in * k_out, k_out, 1, offs,
                           v[xi * c_in * ld:], ld, nq, c_in, qb)
            _lanes_input_grad(v, ld, s0, m, th, tw, dx, q, ph)


_lanes_backward = jit(_lanes_backward_py)


def lanes_dx_weights(u) -> np.ndarray:
    """U^T (16, C, K), C-contiguous: the input gradient's weights (dV = U^T dM)."""
    return np.ascontiguousarray(u.transpose(0, 2, 1))


def lanes_backward_rows(dy, x, u, need_dx, dx, u_dx=None, bn=None, out_bn=None):
    """``run(a, c[, du]) -> du``: :func:`lanes_backward_du` of the samples ``a:c`` (``dx[a:c]``
    written when ``need_dx``; ``du`` (16, K, C) written whole, allocated when not given), one
    compiled call per chunk (see :func:`lanes_forward_rows`;
    with ``bn`` the gradient with respect to ``max(bn(x), 0)``, the layer's real input).

    With ``out_bn`` = ``(coefficients (7, K), y, relu)``, the layer's output ``y`` feeds a
    batch norm and ``dy`` is that batch norm's output gradient (or its masked g): the layer's
    own output gradient is the batch norm's input-gradient pass, applied here
    (:func:`_lanes_output_grad`)."""
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    if out_bn is None:
        gbn, xbn, bn_relu = np.zeros((7, 0)), dy, False
    else:
        gbn, xbn, bn_relu = (np.ascontiguousarray(out_bn[0], np.float64),
                             np.ascontiguousarray(out_bn[1], dy.dtype), bool(out_bn[2]))
    c_in, k_out = x.shape[1], u.shape[1]
    th, tw = x.shape[2] // 2, x.shape[3] // 2
    if need_dx:
        u_dx = lanes_dx_weights(u) if u_dx is None else np.ascontiguousarray(u_dx, x.dtype)
    weights = (u if u_dx is None else u_dx).ravel()
    qb = _block_columns(x.dtype)
    blocks = _LanesBlocks(c_in, k_out, th * tw, x.dtype.itemsize)
    no_dx = x[:1]
    bnf = _input_bn(bn)

    def run(a, c, du=None):
        du = np.empty((TILES, k_out, c_in), x.dtype) if du is None else du
        _lanes_backward(dy[a:c], x[a:c], weights, need_dx, dx[a:c] if need_dx else no_dx,
                        du, blocks(c - a), qb, bnf, gbn, xbn[a:c], bn_relu)
        return du

    return run


def lanes_backward_du(dy, x, u, need_dx=True, *, out_dx=None, u_dx=None):
    """As :func:`backward_du` for a layer that :func:`lanes_applies` to: ``(dx or None, du)``,
    ``du`` (16, K, C) summed over the batch in block order. ``u_dx``: :func:`lanes_dx_weights`
    of ``u`` when the caller already has it."""
    dx = None
    if need_dx:
        dx = np.empty(x.shape, x.dtype) if out_dx is None else out_dx
    du = lanes_backward_rows(dy, x, u, need_dx, dx, u_dx)(0, x.shape[0])
    return dx, du
