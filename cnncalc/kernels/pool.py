"""Pooling kernels (NCHW), PyTorch semantics.

Padding is ``pad = (pad_top, pad_left)`` plus the output size ``out_hw``; window ``(i, j)``
starts at input row ``i*stride_h - pad_top``.

* Max pooling ignores positions outside the input (PyTorch pads with -inf) and caches the argmax
  as a flat int32 index ``row*W + col`` into the input plane; the backward is a scatter driven
  by it (no recomputation). A window with no input position (impossible with PyTorch's size rule)
  gives -inf and argmax -1, which the backward skips.
* Average pooling follows PyTorch: the window is clipped to input + padding, so with
  ``count_include_pad`` the divisor counts the window positions inside input + padding (ceil-mode
  windows that run past the padded edge are not fully counted); without it, only input
  positions. Pass ``pad_after`` for asymmetric padding (default: same as ``pad``).
* Adaptive average pooling uses PyTorch's bins ``[floor(i*H/out), ceil((i+1)*H/out))``.

Every kernel is serial (cached, ``nogil``) and loops over the N*C planes, which are independent
in both directions: the engine runs batch slices of it on its own threads.
"""
from __future__ import annotations

import numpy as np

from cnncalc.shapes import out_size

from . import simd
from ._jit import jit

__all__ = [
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "global_avgpool_forward", "global_avgpool_backward", "adaptive_avgpool_forward",
    "adaptive_avgpool_backward", "maxpool2x2_phases_applies", "maxpool2x2_phases_forward",
    "maxpool2x2_phases_backward",
]


def _maxpool_fwd_py(x, kh, kw, sh, sw, pt, pl, dh, dw, y, am):
    n, c, h, w = x.shape
    ho = y.shape[2]
    wo = y.shape[3]
    ninf = -np.inf
    for nc in range(n * c):
        b = nc // c
        ch = nc - b * c
        xp = x[b, ch]
        for i in range(ho):
            for j in range(wo):
                best = xp.dtype.type(ninf)
                arg = -1
                for a in range(kh):
                    ih = i * sh - pt + a * dh
                    if ih < 0 or ih >= h:
                        continue
                    for q in range(kw):
                        iw = j * sw - pl + q * dw
                        if iw < 0 or iw >= w:
                            continue
                        v = xp[ih, iw]
                        # first maximum wins; NaN propagates (as PyTorch)
                        if v > best or arg < 0 or (v != v and best == best):
                            best = v
                            arg = ih * w + iw
                y[b, ch, i, j] = best
                am[b, ch, i, j] = arg


_maxpool_fwd_s = jit(_maxpool_fwd_py)


def _maxpool_fwd_inside_py(x, kh, kw, sh, sw, dh, dw, y, am):
    """Same as :func:`_maxpool_fwd_py` when every window lies inside the input (no padding
    reached): no bounds checks, the window's first element starts the scan."""
    n, c, h, w = x.shape
    ho = y.shape[2]
    wo = y.shape[3]
    for b in range(n):
        for ch in range(c):
            xp = x[b, ch]
            yp = y[b, ch]
            ap = am[b, ch]
            for i in range(ho):
                i0 = i * sh
                for j in range(wo):
                    j0 = j * sw
                    best = xp[i0, j0]
                    arg = i0 * w + j0
                    for a in range(kh):
                        ih = i0 + a * dh
                        for q in range(kw):
                            iw = j0 + q * dw
                            v = xp[ih, iw]
                            # first maximum wins; NaN propagates (as PyTorch); written as
                            # selects (no branch: random data mispredicts half the time)
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            arg = (ih * w + iw) if take else arg
                    yp[i, j] = best
                    ap[i, j] = arg


_maxpool_fwd_inside = jit(_maxpool_fwd_inside_py)


def _better(v, best):
    """Does ``v`` replace ``best`` in a max scan? First maximum wins; NaN propagates."""
    return (v > best) | ((v != v) & (best == best))


_better_j = jit(_better, inline="always")


def _maxpool2x2_py(x, y, am):
    """The 2x2 / stride-2 window inside the input (the CNN default), same rules as
    :func:`_maxpool_fwd_inside_py`: the window's four values as constants, so the loop over
    output columns vectorises (the general loop ran at ~2 ns per input value)."""
    n, c, w = x.shape[0], x.shape[1], x.shape[3]
    ho = y.shape[2]
    wo = y.shape[3]
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                r0 = x[b, ch, 2 * i]
                r1 = x[b, ch, 2 * i + 1]
                yr = y[b, ch, i]
                ar = am[b, ch, i]
                base = 2 * i * w
                for j in range(wo):
                    best = r0[2 * j]
                    arg = base + 2 * j
                    v = r0[2 * j + 1]
                    t = _better_j(v, best)
                    best = v if t else best
                    arg = base + 2 * j + 1 if t else arg
                    v = r1[2 * j]
                    t = _better_j(v, best)
                    best = v if t else best
                    arg = base + w + 2 * j if t else arg
                    v = r1[2 * j + 1]
                    t = _better_j(v, best)
                    best = v if t else best
                    arg = base + w + 2 * j + 1 if t else arg
                    yr[j] = best
                    ar[j] = arg


_maxpool2x2 = jit(_maxpool2x2_py)


# The 2x2 / stride-2 window on even planes (the CNN default) through the planes' four
# (row, column) phase planes (``simd.split_phases``, the Winograd lanes layout's shuffles):
# window (i, j) is element (i, j) of every phase, so the max runs as one contiguous,
# vectorised loop over the phases, and the backward writes each phase's share and joins them.
# The window's choice is kept as its phase, 0..3 (int8), not a flat index. The row loop of
# :func:`_maxpool2x2_py` ran at ~2 ns per window (its rows are 4 to 16 windows long).
# ``MAXPOOL_PHASE_BLOCK``: the phase scratch of one block of planes, values.
MAXPOOL_PHASE_BLOCK = 1 << 14


def maxpool2x2_phases_applies(k, stride, pad, dilation, h, w) -> bool:
    """Whether :func:`maxpool2x2_phases_forward` takes this pooling: a 2x2 window, stride 2,
    no padding or dilation, on an even plane."""
    return (_pair(k) == (2, 2) and _pair(k if stride is None else stride) == (2, 2)
            and _pair(pad) == (0, 0) and _pair(dilation) == (1, 1)
            and h % 2 == 0 and w % 2 == 0 and h > 0 and w > 0)


def _phase_block(npl):
    """Planes per block of the phase scratch (``npl`` windows a plane)."""
    return max(1, MAXPOOL_PHASE_BLOCK // (4 * npl))


def _maxpool2x2_phases_fwd_py(x, y, code, ph, bn):
    """y = the max of each 2x2 window of ``x`` (N, C, H, W), ``code`` (int8, y's shape) its
    phase ``2*row + column`` within the window: the first maximum in row-major order wins and
    NaN propagates, as :func:`_maxpool2x2_py` (the same values and positions). ``ph``: scratch
    of ``4 * H*W/4`` values or a multiple (:func:`maxpool2x2_phases_scratch`), a block of planes
    at a time.

    With ``bn`` (4, C) float64 (no columns: none), the pooled input is ``max(bn(x), 0)``, a
    batch norm + ReLU applied to the phase planes by
    :func:`cnncalc.kernels.norm.bn_normalise`'s expression (rows: mean, inv_std, gamma,
    beta; the same values): the batch norm's output is never written to memory."""
    n, c, h, w = x.shape
    th, tw = h // 2, w // 2
    npl = th * tw
    planes = n * c
    nb = ph.size // (4 * npl)            # planes a block: the scratch holds their phases
    ps = nb * npl
    u = np.uint64
    xf, yf, cf = x.ravel(), y.ravel(), code.ravel()
    for p0 in range(0, planes, nb):
        m = min(nb, planes - p0)
        simd.split_phases(xf, p0 * 4 * npl, 4 * npl, m, th, tw, ph, ps)
        if bn.shape[1] > 0:
            z = x.dtype.type(0)
            for sp in range(m):
                ch = (p0 + sp) % c
                bm = x.dtype.type(bn[0, ch])
                ba = x.dtype.type(bn[1, ch] * bn[2, ch])
                bb = x.dtype.type(bn[3, ch])
                for q in range(4):
                    at = u(q * ps + sp * npl)
                    for t in range(npl):
                        ph[at + u(t)] = max((ph[at + u(t)] - bm) * ba + bb, z)
        o = u(p0 * npl)
        for t in range(m * npl):
            best = ph[u(t)]
            k = np.int8(0)
            for q in range(1, 4):
                v = ph[u(q * ps + t)]
                better = _better_j(v, best)
                best = v if better else best
                k = np.int8(q) if better else k
            yf[o + u(t)] = best
            cf[o + u(t)] = k


_maxpool2x2_phases_fwd = jit(_maxpool2x2_phases_fwd_py)


def _maxpool2x2_phases_bwd_py(dy, code, dx, ph):
    """dx: each window's ``dy`` at the position ``code`` names, zero elsewhere (``dx``
    (N, C, 2*Ho, 2*Wo)); ``ph`` as for the forward."""
    n, c, ho, wo = dy.shape
    npl = ho * wo
    planes = n * c
    nb = ph.size // (4 * npl)
    ps = nb * npl
    u = np.uint64
    zero = dx.dtype.type(0)
    dyf, cf, dxf = dy.ravel(), code.ravel(), dx.ravel()
    for p0 in range(0, planes, nb):
        m = min(nb, planes - p0)
        o = u(p0 * npl)
        for q in range(4):
            kq = np.int8(q)
            for t in range(m * npl):
                d = dyf[o + u(t)]
                ph[u(q * ps + t)] = d if cf[o + u(t)] == kq else zero
        simd.join_phases(dxf, p0 * 4 * npl, 4 * npl, m, ho, wo, ph, ps)


_maxpool2x2_phases_bwd = jit(_maxpool2x2_phases_bwd_py)


def maxpool2x2_phases_scratch(x_shape, dtype) -> np.ndarray:
    """The phase scratch :func:`maxpool2x2_phases_forward` and ``_backward`` take (one per
    thread)."""
    npl = (x_shape[2] // 2) * (x_shape[3] // 2)
    return np.empty(4 * _phase_block(npl) * npl, dtype)


def maxpool2x2_phases_forward(x, y, code, ph=None, bn=None):
    """2x2 / stride-2 max pooling of ``x`` (N, C, H, W), H and W even
    (:func:`maxpool2x2_phases_applies`), into ``y`` (N, C, H/2, W/2) and ``code`` (int8, y's
    shape: the chosen position's phase ``2*row + column`` in its window). The values and
    positions of :func:`maxpool2d_forward`; with ``bn`` (mean, inv_std, gamma, beta rows),
    of ``max(bn(x), 0)`` pooled."""
    x = np.ascontiguousarray(x)
    bnf = np.zeros((4, 0)) if bn is None else np.ascontiguousarray(bn, np.float64)
    _maxpool2x2_phases_fwd(x, y, code, maxpool2x2_phases_scratch(x.shape, x.dtype)
                           if ph is None else ph, bnf)
    return y


def maxpool2x2_phases_backward(dy, code, dx, ph=None):
    """The backward of :func:`maxpool2x2_phases_forward`: ``dx`` (N, C, 2*Ho, 2*Wo) holds each
    window's ``dy`` where ``code`` puts it, zero elsewhere."""
    dy = np.ascontiguousarray(dy)
    _maxpool2x2_phases_bwd(dy, code, dx, maxpool2x2_phases_scratch(dx.shape, dx.dtype)
                           if ph is None else ph)
    return dx


def _maxpool_bwd_py(dy, am, dx):
    n, c, ho, wo = dy.shape
    h = dx.shape[2]
    w = dx.shape[3]
    zero = dx.dtype.type(0)
    for nc in range(n * c):
        b = nc // c
        ch = nc - b * c
        for i in range(h):
            for j in range(w):
                dx[b, ch, i, j] = zero
        for i in range(ho):
            for j in range(wo):
                a = am[b, ch, i, j]
                if a >= 0:
                    r = a // w
                    dx[b, ch, r, a - r * w] += dy[b, ch, i, j]


_maxpool_bwd_s = jit(_maxpool_bwd_py)


def _avg_bounds(i, s, p, k, size, p_after):
    """(start, end, full_len) of one window on one axis, PyTorch's rules."""
    st = i * s - p
    en = st + k
    lim = size + p_after
    if en > lim:
        en = lim
    full = en - st
    if st < 0:
        st = 0
    if en > size:
        en = size
    return st, en, full


_avg_bounds_j = jit(_avg_bounds)


def _avgpool_fwd_py(x, kh, kw, sh, sw, pt, pl, pb, pr, include_pad, y):
    n, c, h, w = x.shape
    ho = y.shape[2]
    wo = y.shape[3]
    for nc in range(n * c):
        b = nc // c
        ch = nc - b * c
        xp = x[b, ch]
        for i in range(ho):
            r0, r1, fh = _avg_bounds_j(i, sh, pt, kh, h, pb)
            for j in range(wo):
                c0, c1, fw = _avg_bounds_j(j, sw, pl, kw, w, pr)
                acc = xp.dtype.type(0)
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        acc += xp[r, q]
                if include_pad:
                    div = fh * fw
                else:
                    div = (r1 - r0) * (c1 - c0)
                y[b, ch, i, j] = acc / xp.dtype.type(div)


_avgpool_fwd_s = jit(_avgpool_fwd_py)


def _avgpool_bwd_py(dy, kh, kw, sh, sw, pt, pl, pb, pr, include_pad, dx):
    n, c, ho, wo = dy.shape
    h = dx.shape[2]
    w = dx.shape[3]
    zero = dx.dtype.type(0)
    for nc in range(n * c):
        b = nc // c
        ch = nc - b * c
        dxp = dx[b, ch]
        for i in range(h):
            for j in range(w):
                dxp[i, j] = zero
        for i in range(ho):
            r0, r1, fh = _avg_bounds_j(i, sh, pt, kh, h, pb)
            for j in range(wo):
                c0, c1, fw = _avg_bounds_j(j, sw, pl, kw, w, pr)
                if include_pad:
                    div = fh * fw
                else:
                    div = (r1 - r0) * (c1 - c0)
                g = dy[b, ch, i, j] / dxp.dtype.type(div)
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        dxp[r, q] += g


_avgpool_bwd_s = jit(_avgpool_bwd_py)


def _adaptive_fwd_py(x, y):
    n, c, h, w = x.shape
    oh = y.shape[2]
    ow = y.shape[3]
    for nc in range(n * c):
        b = nc // c
        ch = nc - b * c
        xp = x[b, ch]
        for i in range(oh):
            r0 = (i * h) // oh
            r1 = -((-(i + 1) * h) // oh)
            for j in range(ow):
                c0 = (j * w) // ow
                c1 = -((-(j + 1) * w) // ow)
                acc = xp.dtype.type(0)
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        acc += xp[r, q]
                y[b, ch, i, j] = acc / xp.dtype.type((r1 - r0) * (c1 - c0))


_adaptive_fwd_s = jit(_adaptive_fwd_py)


def _adaptive_bwd_py(dy, dx):
    n, c, oh, ow = dy.shape
    h = dx.shape[2]
    w = dx.shape[3]
    zero = dx.dtype.type(0)
    for nc in range(n * c):
        b = nc // c
        ch = nc - b * c
        dxp = dx[b, ch]
        for i in range(h):
            for j in range(w):
                dxp[i, j] = zero
        for i in range(oh):
            r0 = (i * h) // oh
            r1 = -((-(i + 1) * h) // oh)
            for j in range(ow):
                c0 = (j * w) // ow
                c1 = -((-(j + 1) * w) // ow)
                g = dy[b, ch, i, j] / dxp.dtype.type((r1 - r0) * (c1 - c0))
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        dxp[r, q] += g


_adaptive_bwd_s = jit(_adaptive_bwd_py)


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------
def _pair(v):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)



def maxpool2d_forward(x, k, stride=None, pad=(0, 0), out_hw=None, dilation=(1, 1), *,
                      ceil_mode=False, out=None, out_argmax=None):
    """Max pooling. Returns ``(y, argmax)``; ``argmax`` (int32, same shape as ``y``) is the flat
    index ``row*W + col`` of the maximum in its input plane (-1 for an empty window).

    ``stride`` defaults to ``k``; ``out_hw`` defaults to :func:`cnncalc.shapes.out_size` with
    symmetric padding, the dilation and ``ceil_mode``.
    ``out`` / ``out_argmax``: optional preallocated C-contiguous outputs (shape of ``y``).
    """
    x = np.ascontiguousarray(x)
    kh, kw = _pair(k)
    sh, sw = _pair(k if stride is None else stride)
    pt, pl = _pair(pad)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    if out_hw is None:
        out_hw = (out_size(h, kh, sh, pt, pt, dh, ceil_mode).size,
                  out_size(w, kw, sw, pl, pl, dw, ceil_mode).size)
    ho, wo = _pair(out_hw)
    y = np.empty((n, c, ho, wo), dtype=x.dtype) if out is None else out
    am = np.empty((n, c, ho, wo), dtype=np.int32) if out_argmax is None else out_argmax
    if pt == 0 and pl == 0 and ho > 0 and wo > 0 \
            and (ho - 1) * sh + dh * (kh - 1) < h and (wo - 1) * sw + dw * (kw - 1) < w:
        if (kh, kw, sh, sw, dh, dw) == (2, 2, 2, 2, 1, 1):
            _maxpool2x2(x, y, am)
        else:
            _maxpool_fwd_inside(x, kh, kw, sh, sw, dh, dw, y, am)
        return y, am
    _maxpool_fwd_s(x, kh, kw, sh, sw, pt, pl, dh, dw, y, am)
    return y, am


def maxpool2d_backward(dy, argmax, x_shape, *, out=None):
    """Scatter ``dy`` to the cached argmax positions. Returns ``dx`` of ``x_shape``."""
    dy = np.ascontiguousarray(dy)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype) if out is None else out
    _maxpool_bwd_s(dy, argmax, dx)
    return dx


def _avg_args(x_shape, k, stride, pad, out_hw, pad_after, ceil_mode=False):
    kh, kw = _pair(k)
    sh, sw = _pair(k if stride is None else stride)
    pt, pl = _pair(pad)
    pb, pr = _pair(pad if pad_after is None else pad_after)
    h, w = x_shape[2], x_shape[3]
    if out_hw is None:
        out_hw = (out_size(h, kh, sh, pt, pb, 1, ceil_mode).size,
                  out_size(w, kw, sw, pl, pr, 1, ceil_mode).size)
    return kh, kw, sh, sw, pt, pl, pb, pr, _pair(out_hw)


def avgpool2d_forward(x, k, stride=None, pad=(0, 0), out_hw=None, count_include_pad=True, *,
                      pad_after=None, ceil_mode=False, out=None):
    """Average pooling with PyTorch's divisor rules (see the module docstring).

    ``out_hw`` defaults to :func:`cnncalc.shapes.out_size` (with ``ceil_mode``)."""
    x = np.ascontiguousarray(x)
    kh, kw, sh, sw, pt, pl, pb, pr, (ho, wo) = _avg_args(x.shape, k, stride, pad, out_hw,
                                                          pad_after, ceil_mode)
    y = np.empty((x.shape[0], x.shape[1], ho, wo), dtype=x.dtype) if out is None else out
    _avgpool_fwd_s(x, kh, kw, sh, sw, pt, pl, pb, pr, bool(count_include_pad), y)
    return y


def avgpool2d_backward(dy, x_shape, k, stride=None, pad=(0, 0), count_include_pad=True, *,
                       pad_after=None, out=None):
    """Gradient of :func:`avgpool2d_forward` (``dy`` fixes ``out_hw``)."""
    dy = np.ascontiguousarray(dy)
    kh, kw, sh, sw, pt, pl, pb, pr, _ = _avg_args(x_shape, k, stride, pad, dy.shape[2:],
                                                  pad_after)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype) if out is None else out
    _avgpool_bwd_s(dy, kh, kw, sh, sw, pt, pl, pb, pr, bool(count_include_pad), dx)
    return dx


def global_avgpool_forward(x):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1)."""
    x = np.asarray(x)
    n, c = x.shape[:2]
    return (x.reshape(n, c, -1).sum(axis=2) / (x.shape[2] * x.shape[3])).reshape(n, c, 1, 1)


def global_avgpool_backward(dy, x_shape):
    """``dy`` (N, C, 1, 1) or (N, C) -> dx of ``x_shape``."""
    n, c, h, w = x_shape
    g = np.asarray(dy).reshape(n, c, 1, 1) / (h * w)
    return np.ascontiguousarray(np.broadcast_to(g, (n, c, h, w)))


def adaptive_avgpool_forward(x, out_hw, *, out=None):
    """PyTorch's ``adaptive_avg_pool2d``: bins [floor(i*H/out), ceil((i+1)*H/out))."""
    x = np.ascontiguousarray(x)
    oh, ow = _pair(out_hw)
    y = np.empty((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype) if out is None else out
    _adaptive_fwd_s(x, y)
    return y


def adaptive_avgpool_backward(dy, x_shape, *, out=None):
    """Gradient of :func:`adaptive_avgpool_forward` (``dy`` fixes the output size)."""
    dy = np.ascontiguousarray(dy)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype) if out is None else out
    _adaptive_bwd_s(dy, dx)
    return dx
