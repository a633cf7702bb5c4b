"""Direct convolution in vector registers (stride 1, any kernel size, dilation, padding, groups).

The output ``(k, q)`` is computed at the *pitched* column ``q = oh*wp + ow`` of the zero-padded
input planes (row pitch ``wp = wo + dw*(kw-1)``), exactly as in ``conv.py``'s implicit GEMM:
tap ``t = (ki, kj)`` reads plane column ``q + ki*dh*wp + kj*dw``, so for a fixed tap the
outputs of consecutive columns read consecutive inputs, and ::

    y[k, q] = sum over c, t of  w[k, c, t] * xp[c, q + off[t]]

The micro-kernel :func:`tile` keeps a block of ``KB`` output channels by ``QB`` columns
(``NV`` vectors of ``lanes(dtype)`` values each) in ``KB * NV`` vector registers while it runs
over every input channel and tap: per ``(c, t)`` it loads ``NV`` vectors of the plane,
broadcasts ``KB`` weights and issues ``KB * NV`` multiply-adds, and it writes the block once at
the end. BLAS cannot do this for short reductions: the implicit GEMM's per-tap GEMMs (reduction
= the channels, 16 to 64) reload and store their output block for every tap. numba has no
vector types, and LLVM does not keep such a block in registers when it is written in Python
(it vectorises only the innermost loop), so the kernel is written as LLVM IR through a numba
``intrinsic``: the same IR for float32 and float64, fused multiply-adds wherever the CPU has
them (``contract`` fast-math flag), cached with the kernels that call it. Measured figures:
``cnncalc/kernels/fast/README.md`` ("Direct convolution in vector registers").

The weight gradient is the same sum turned around, a reduction over the columns::

    dW[k, c, t] = sum over q of  dyp[k, q] * xp[c, q + off[t]]

with ``dyp`` the pitched copy of ``dy`` (zero in the padding columns). Its micro-kernel
:func:`dw_tile` keeps ``KB`` output channels by ``TB`` taps of one input channel as vectors of
partial sums (``KB*TB`` registers) while it runs along the columns, one vector at a time
(``KB + TB`` loads for ``KB*TB`` multiply-adds), and adds each one's horizontal sum into dW at
the end.

Several samples run side by side: their padded planes lie one after another in the pitched
buffer (``nb`` planes of ``hp*wp`` columns), so small planes still give the kernel long rows;
columns that fall in padding are computed and dropped.

Every kernel is written once as an undecorated ``_*_py`` function (the ``NUMBA_DISABLE_JIT``
reference path; :func:`tile` has a NumPy body for it) and compiled by ``jit``.
"""
from __future__ import annotations

import functools

import numpy as np
from numba.extending import intrinsic, overload

from ._jit import jit

__all__ = ["KB", "NV", "TB", "lanes", "pad_planes", "simd_forward", "simd_weight_grad",
           "strided_backward", "strided_forward"]

KB = 4        # output channels per register block ...
NV = 4        # ... by this many vectors of columns: KB*NV accumulators + NV loads + 1 broadcast
TB = 3        # weight gradient: taps per register block (KB*TB partial sums, KB + TB loads)


@functools.lru_cache(maxsize=None)
def vector_bytes() -> int:
    """Bytes per vector register: 64 where the CPU has AVX-512, else 32 (LLVM splits wider
    vectors into these; the blocks are sized so that the accumulators fit the registers)."""
    try:
        from llvmlite import binding as llvm

        feats = llvm.get_host_cpu_features()
        return 64 if feats.get("avx512f", False) else 32
    except Exception:   # pragma: no cover - feature query unavailable
        return 32


def lanes(dtype) -> int:
    """Values per vector of ``dtype``; a register block is ``NV * lanes`` columns wide."""
    return vector_bytes() // np.dtype(dtype).itemsize


# --------------------------------------------------------------------------------------------
# the micro-kernel
# --------------------------------------------------------------------------------------------
def _tile_py(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb):
    """``y[yo + k*ldy + j] = sum_{c, t} w[wo + (k*cg + c)*taps + t] * xp[xo + c*plane + offs[t]
    + j]`` for ``k < kb`` and ``j < qb`` (flat arrays). NumPy body of :func:`tile`."""
    for k in range(kb):
        acc = np.zeros(qb, y.dtype)
        for c in range(cg):
            for t in range(taps):
                s = xo + c * plane + offs[t]
                acc += w[wo + (k * cg + c) * taps + t] * xp[s:s + qb]
        y[yo + k * ldy:yo + k * ldy + qb] = acc


def _ir_arrays(context, builder, signature, args, *positions):
    """For an intrinsic's codegen: the element type, the vector type (``vector_bytes()``
    wide) and the data pointers of the array arguments at ``positions``."""
    from llvmlite import ir

    at = signature.args
    ft = context.get_value_type(at[positions[0]].dtype)
    vt = ir.VectorType(ft, vector_bytes() // context.get_abi_sizeof(ft))
    return ft, vt, [context.make_array(at[i])(context, builder, args[i]).data for i in positions]


def _make_tile_ir(kb):
    """The intrinsic for ``kb`` output channels (``KB`` for full blocks, 1 for the rest)."""

    @intrinsic
    def tile_ir(typingctx, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy):
        from numba.core import types

        sig = types.void(xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy)

        def codegen(context, builder, signature, args):
            from llvmlite import ir
            from numba.core import cgutils

            _, xo_, plane_, _, wo_, cg_, taps_, _, _, yo_, ldy_ = args
            _, vt, (xptr, wptr, optr, yptr) = _ir_arrays(context, builder, signature, args,
                                                         0, 3, 7, 8)
            vl, vptr, i64 = vt.count, vt.as_pointer(), ir.IntType(64)
            flags = ("contract",)
            zero = ir.Constant(vt, [0.0] * vl)
            lane0 = ir.Constant(ir.IntType(32), 0)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), vl), [0] * vl)
            # accumulators in allocas: LLVM's mem2reg turns them into registers
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)]
                    for _ in range(kb)]
            wstride = builder.mul(cg_, taps_)          # weights of one output channel
            with cgutils.for_range(builder, cg_) as cl:
                c = cl.index
                xc = builder.add(xo_, builder.mul(c, plane_))
                wc = builder.add(wo_, builder.mul(c, taps_))
                with cgutils.for_range(builder, taps_) as tl:
                    t = tl.index
                    xb = builder.add(xc, builder.load(builder.gep(optr, [t])))
                    xs = [builder.load(builder.bitcast(
                        builder.gep(xptr, [builder.add(xb, ir.Constant(i64, vl * j))]), vptr),
                        align=1) for j in range(NV)]
                    wt = builder.add(wc, t)
                    for k in range(kb):
                        wv = builder.load(builder.gep(
                            wptr, [builder.add(wt, builder.mul(ir.Constant(i64, k), wstride))]))
                        wb = builder.shuffle_vector(
                            builder.insert_element(ir.Constant(vt, ir.Undefined), wv, lane0),
                            ir.Constant(vt, ir.Undefined), splat)
                        for j in range(NV):
                            prod = builder.fmul(wb, xs[j], flags=flags)
                            builder.store(builder.fadd(builder.load(accs[k][j]), prod,
                                                       flags=flags), accs[k][j])
            for k in range(kb):
                row = builder.add(yo_, builder.mul(ir.Constant(i64, k), ldy_))
                for j in range(NV):
                    p = builder.gep(yptr, [builder.add(row, ir.Constant(i64, vl * j))])
                    builder.store(builder.load(accs[k][j]), builder.bitcast(p, vptr), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return tile_ir


_TILE_IR = {kb: _make_tile_ir(kb) for kb in sorted({KB, 1})}


def tile(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb):
    """One register block: ``kb`` (``KB`` or 1) output channels by ``qb = NV * lanes``
    columns (see :func:`_tile_py`; inside numba, the vector-register intrinsic)."""
    _tile_py(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb)


@overload(tile)
def _tile_ol(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb):
    full, one = _TILE_IR[KB], _TILE_IR[1]

    def impl(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb):
        if kb == KB:
            full(xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy)
        else:
            for k in range(kb):
                one(xp, xo, plane, w, wo + k * cg * taps, cg, taps, offs, y, yo + k * ldy, ldy)

    return impl


def _dw_tile_py(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo):
    """``out[oo + k*ldo + t] += sum_{j < nq} dyp[do + k*ldd + j] * xp[xo + offs[t0 + t] + j]``
    for ``k < kb``, ``t < tb`` (flat arrays). NumPy body of :func:`dw_tile`."""
    for k in range(kb):
        d = dyp[do + k * ldd:do + k * ldd + nq]
        for t in range(tb):
            s = xo + offs[t0 + t]
            out[oo + k * ldo + t] += np.dot(d, xp[s:s + nq])


def _make_dw_tile_ir(kb, tb):
    """The weight-gradient intrinsic for ``kb`` output channels by ``tb`` taps."""

    @intrinsic
    def dw_tile_ir(typingctx, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo):
        from numba.core import types

        sig = types.void(dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo)

        def codegen(context, builder, signature, args):
            from llvmlite import ir
            from numba.core import cgutils

            _, do_, ldd_, _, xo_, _, t0_, nq_, _, oo_, ldo_ = args
            ft, vt, (dptr, xptr, optr, outp) = _ir_arrays(context, builder, signature, args,
                                                          0, 3, 5, 8)
            vl, vptr, i64 = vt.count, vt.as_pointer(), ir.IntType(64)
            flags = ("contract",)
            zero = ir.Constant(vt, [0.0] * vl)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(tb)]
                    for _ in range(kb)]
            xts = [builder.add(xo_, builder.load(builder.gep(
                optr, [builder.add(t0_, ir.Constant(i64, t))]))) for t in range(tb)]
            drows = [builder.add(do_, builder.mul(ir.Constant(i64, k), ldd_)) for k in range(kb)]
            nvec = builder.udiv(nq_, ir.Constant(i64, vl))
            with cgutils.for_range(builder, nvec) as ql:
                j = builder.mul(ql.index, ir.Constant(i64, vl))
                ds = [builder.load(builder.bitcast(builder.gep(dptr, [builder.add(r, j)]), vptr),
                                   align=1) for r in drows]
                for t in range(tb):
                    xv = builder.load(builder.bitcast(
                        builder.gep(xptr, [builder.add(xts[t], j)]), vptr), align=1)
                    for k in range(kb):
                        prod = builder.fmul(ds[k], xv, flags=flags)
                        builder.store(builder.fadd(builder.load(accs[k][t]), prod, flags=flags),
                                      accs[k][t])
            reduce = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ft, [ft, vt]),
                f"llvm.vector.reduce.fadd.v{vl}{'f32' if isinstance(ft, ir.FloatType) else 'f64'}")
            for k in range(kb):
                row = builder.add(oo_, builder.mul(ir.Constant(i64, k), ldo_))
                for t in range(tb):
                    p = builder.gep(outp, [builder.add(row, ir.Constant(i64, t))])
                    total = builder.call(reduce, [builder.load(p), builder.load(accs[k][t])],
                                         fastmath=("reassoc",))
                    builder.store(total, p)
            return context.get_dummy_value()

        return sig, codegen

    return dw_tile_ir


_DW_TILE_IR = {(kb, tb): _make_dw_tile_ir(kb, tb) for kb in sorted({KB, 1})
               for tb in sorted({TB, 1})}


def dw_tile(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo):
    """One weight-gradient register block: ``kb`` (``KB`` or fewer) output channels by ``tb``
    (``TB`` or fewer) taps of one input channel over ``nq`` columns, a multiple of the vector
    length (see :func:`_dw_tile_py`; inside numba, the vector-register intrinsic)."""
    _dw_tile_py(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo)


@overload(dw_tile)
def _dw_tile_ol(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo):
    full, rows, cols, one = (_DW_TILE_IR[KB, TB], _DW_TILE_IR[KB, 1], _DW_TILE_IR[1, TB],
                             _DW_TILE_IR[1, 1])

    def impl(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo):
        if kb == KB and tb == TB:
            full(dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo)
        elif kb == KB:
            for t in range(tb):
                rows(dyp, do, ldd, xp, xo, offs, t0 + t, nq, out, oo + t, ldo)
        elif tb == TB:
            for k in range(kb):
                cols(dyp, do + k * ldd, ldd, xp, xo, offs, t0, nq, out, oo + k * ldo, ldo)
        else:
            for k in range(kb):
                for t in range(tb):
                    one(dyp, do + k * ldd, ldd, xp, xo, offs, t0 + t, nq, out,
                        oo + k * ldo + t, ldo)

    return impl


# --------------------------------------------------------------------------------------------
# forward and weight gradient over a batch
# --------------------------------------------------------------------------------------------
def _pad_planes_py(x, s0, m, c0, cg, pt, pl, hp, wp, xp):
    """xp[c, si*hp*wp + i*wp + j] = x[s0 + si, c0 + c, i - pt, j - pl] (zero outside the
    input, ``hp`` rows of pitch ``wp`` per sample) for the m samples side by side; the rest of
    each row of xp is zeroed. (Also the implicit GEMM's padded planes in ``conv.py``.) ``x``
    and ``xp`` are C-contiguous; the flat indices are unsigned, so numba adds no
    negative-index checks and the row copies vectorise (3x faster than slice assignments,
    which cost a call per row)."""
    n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
    plane = hp * wp
    span = xp.shape[1]
    zero = xp.dtype.type(0)
    jlo = max(pl, 0)                 # first padded column holding input ...
    jhi = max(min(w + pl, wp), jlo)  # ... and one past the last
    u = np.uint64
    xf = x.ravel()
    xpf = xp.ravel()
    for c in range(cg):
        dst = u(c * span)
        for si in range(m):
            src = ((s0 + si) * n_c + c0 + c) * h * w
            for i in range(hp):
                ih = i - pt
                d = dst + u(si * plane + i * wp)
                if ih < 0 or ih >= h:
                    for j in range(wp):
                        xpf[d + u(j)] = zero
                else:
                    for j in range(jlo):
                        xpf[d + u(j)] = zero
                    s = u(src + ih * w + jlo - pl)
                    dd = d + u(jlo)
                    for j in range(jhi - jlo):
                        xpf[dd + u(j)] = xf[s + u(j)]
                    for j in range(jhi, wp):
                        xpf[d + u(j)] = zero
        for j in range(m * plane, span):
            xpf[dst + u(j)] = zero


pad_planes = jit(_pad_planes_py)


def _compact_plane(h, w, kh, kw, pt, pl, dh, dw, ho, wo):
    """(rows, row pitch) of one sample's plane in the pitched buffer. Padding is shared: the
    zero columns at the end of a row also pad the start of the next one (and the zero rows
    after a sample the next sample's top), so a row needs ``w + max(pad_left, pad_right)``
    columns, not ``w + pad_left + pad_right``: reads past a row's end wrap into zeros. (At least
    the output size, so a sample's outputs never reach into the next plane.)"""
    pb = ho + dh * (kh - 1) - h - pt
    pr = wo + dw * (kw - 1) - w - pl
    return max(h + max(pt, pb), ho), max(w + max(pl, pr), wo)


_compact_plane_j = jit(_compact_plane)


def _plane_and_offsets_py(h, w, kh, kw, pt, pl, dh, dw, ho, wo):
    """(rows, row pitch, each tap's column offset in the pitched plane): tap (ki, kj) reads
    ``ki*dh`` rows and ``kj*dw`` columns past the output's position."""
    hp, wp = _compact_plane_j(h, w, kh, kw, pt, pl, dh, dw, ho, wo)
    offs = np.empty(kh * kw, np.int64)
    for ki in range(kh):
        for kj in range(kw):
            offs[ki * kw + kj] = ki * dh * wp + kj * dw
    return hp, wp, offs


_plane_and_offsets = jit(_plane_and_offsets_py)


def _conv_fwd_simd_py(x, w, b, has_bias, kh, kw, pt, pl, dh, dw, groups, ho, wo, y, nb, qb):
    """Forward, stride 1, ``nb`` samples per block (their planes side by side), register
    blocks of ``KB`` output channels by ``qb`` columns (``w`` is (K, C/groups, kh, kw),
    C-contiguous)."""
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = w.shape[0]
    cg = c_in // groups
    kg = k_out // groups
    taps = kh * kw
    hp, wp, offs = _plane_and_offsets(x.shape[2], x.shape[3], kh, kw, pt, pl, dh, dw, ho, wo)
    plane = hp * wp
    lq = (nb * plane + qb - 1) // qb * qb        # output columns of a full block
    span = lq + offs[taps - 1]                   # input columns the last register block reads
    xp = np.empty((cg, span), x.dtype)
    yb = np.empty((kg, lq), x.dtype)
    xpf = xp.ravel()
    ybf = yb.ravel()
    yf = y.ravel()
    wf = w.ravel()
    kfull = kg - kg % KB
    zero = x.dtype.type(0)
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * plane + qb - 1) // qb * qb
        for g in range(groups):
            pad_planes(x, s0, m, g * cg, cg, pt, pl, hp, wp, xp)
            w0 = g * kg * cg * taps
            for q0 in range(0, nq, qb):
                for k0 in range(0, kfull, KB):
                    tile(KB, xpf, q0, span, wf, w0 + k0 * cg * taps, cg, taps, offs, ybf,
                         k0 * lq + q0, lq, qb)
                if kfull < kg:
                    tile(kg - kfull, xpf, q0, span, wf, w0 + kfull * cg * taps, cg, taps, offs,
                         ybf, kfull * lq + q0, lq, qb)
            for si in range(m):      # unsigned flat indices: see pad_planes
                for k in range(kg):
                    bk = b[g * kg + k] if has_bias else zero
                    src = k * lq + si * plane
                    dst = ((s0 + si) * k_out + g * kg + k) * ho * wo
                    for oh in range(ho):
                        sr = np.uint64(src + oh * wp)
                        dr = np.uint64(dst + oh * wo)
                        for ow in range(wo):
                            yf[dr + np.uint64(ow)] = ybf[sr + np.uint64(ow)] + bk


_conv_fwd_simd = jit(_conv_fwd_simd_py)


def _conv_dw_simd_py(dy, x, kh, kw, pt, pl, dh, dw, groups, dwt, nb, vl):
    """Weight gradient, stride 1, into ``dwt`` (K, C/groups * kh * kw) (overwritten): ``nb``
    samples per block, the reduction over each block's columns in vectors of ``vl``."""
    n_b, c_in, h, w = x.shape
    k_out, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    cg = c_in // groups
    kg = k_out // groups
    taps = kh * kw
    hp, wp, offs = _plane_and_offsets(h, w, kh, kw, pt, pl, dh, dw, ho, wo)
    plane = hp * wp
    lq = (nb * plane + vl - 1) // vl * vl
    xp = np.empty((cg, lq + offs[taps - 1]), x.dtype)
    dyp = np.empty((kg, lq), x.dtype)
    xpf = xp.ravel()
    dypf = dyp.ravel()
    span = xp.shape[1]
    kfull = kg - kg % KB
    tfull = taps - taps % TB
    dwf = dwt.ravel()
    dwf[:] = 0
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * plane + vl - 1) // vl * vl
        for g in range(groups):
            pad_planes(x, s0, m, g * cg, cg, pt, pl, hp, wp, xp)
            pad_planes(dy, s0, m, g * kg, kg, 0, 0, hp, wp, dyp)   # zero in the padding
            for k0 in range(0, kg, KB):
                kb = KB if k0 < kfull else kg - kfull
                for c in range(cg):
                    o = ((g * kg + k0) * cg + c) * taps
                    for t0 in range(0, taps, TB):
                        dw_tile(kb, TB if t0 < tfull else taps - tfull, dypf, k0 * lq, lq,
                                xpf, c * span, offs, t0, nq, dwf, o + t0, cg * taps)


_conv_dw_simd = jit(_conv_dw_simd_py)

BLOCK_COLUMNS = 512   # samples side by side until a block has about this many columns


def block_samples(n: int, plane: int) -> int:
    """Samples per block: enough planes for ``BLOCK_COLUMNS`` columns (at most the batch)."""
    return max(1, min(n, -(-BLOCK_COLUMNS // plane)))


def simd_weight_grad(dy, x, w_shape, pad, dilation, groups, out=None):
    """Stride-1 weight gradient (K, C/groups, kh, kw) of the convolution that gave ``dy``
    (N, K, Ho, Wo) from ``x``; ``pad`` = (top, left)."""
    k_out, cg, kh, kw = w_shape
    dh, dw = dilation
    ho, wo = dy.shape[2], dy.shape[3]
    rows, pitch = _compact_plane(x.shape[2], x.shape[3], kh, kw, int(pad[0]), int(pad[1]), dh,
                                 dw, ho, wo)
    out = np.empty(w_shape, x.dtype) if out is None else out
    _conv_dw_simd(dy, x, kh, kw, int(pad[0]), int(pad[1]), dh, dw, int(groups),
                  out.reshape(k_out, cg * kh * kw), block_samples(x.shape[0], rows * pitch),
                  lanes(x.dtype))
    return out


def simd_forward(x, w, b, pad, dilation, groups, out_hw, out):
    """Stride-1 convolution forward into ``out`` (N, K, Ho, Wo); ``pad`` = (top, left) (may be
    negative: cropping), ``w`` (K, C/groups, kh, kw), ``b`` (K,) or None."""
    k_out, cg, kh, kw = w.shape
    ho, wo = out_hw
    dh, dw = dilation
    has_bias = b is not None
    bb = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    rows, pitch = _compact_plane(x.shape[2], x.shape[3], kh, kw, int(pad[0]), int(pad[1]), dh,
                                 dw, ho, wo)
    plane = rows * pitch
    _conv_fwd_simd(x, w, bb, has_bias, kh, kw, int(pad[0]), int(pad[1]), dh, dw, int(groups),
                   ho, wo, out, block_samples(x.shape[0], plane), NV * lanes(x.dtype))
    return out


# --------------------------------------------------------------------------------------------
# stride > 1: the same kernels on phase planes
# --------------------------------------------------------------------------------------------
# A stride-(sh, sw) convolution is a stride-1 one on the input's sh*sw phase planes
# (space-to-depth): output (oh, ow) reads padded input row oh*sh + ki*dh = sh*(oh + u) + a with
# a = ki*dh mod sh, u = ki*dh div sh, i.e. row oh + u of phase plane a (and the same for
# columns). So with  X'[n, (c*sh + a)*sw + b, i, j] = xpad[n, c, sh*i + a, sw*j + b]  and
# W'[k, (c*sh + a)*sw + b, u, v] = w[k, c, ki, kj] for the tap of that phase (zero for the
# grid points no tap lands on), y = conv(X', W') with stride 1 and no padding. Each padded
# input value appears once in X', so the input gradient is dX' read back in the same places.
# The zero taps cost (U*V*sh*sw / (kh*kw) - 1) extra work (3x3 stride 2: 16/9; AlexNet's 11x11
# stride 4: 144/121), far less than the vector kernels gain over im2col (measured in
# cnncalc/kernels/fast/README.md).
def phase_shape(kh, kw, sh, sw, dh, dw, ho, wo):
    """(U, V, rows, cols): the phase kernel's size and the phase planes' size that a valid
    stride-1 convolution to (ho, wo) needs."""
    u = dh * (kh - 1) // sh + 1
    v = dw * (kw - 1) // sw + 1
    return u, v, ho + u - 1, wo + v - 1


def _space_to_depth_py(x, sh, sw, pt, pl, xs):
    """xs[n, (c*sh + a)*sw + b, i, j] = x[n, c, sh*i + a - pt, sw*j + b - pl] (zero outside)."""
    n_b, c_in, h, w = x.shape
    rows, cols = xs.shape[2], xs.shape[3]
    zero = xs.dtype.type(0)
    for n in range(n_b):
        for c in range(c_in):
            for a in range(sh):
                for b in range(sw):
                    dst = xs[n, (c * sh + a) * sw + b]
                    for i in range(rows):
                        r = sh * i + a - pt
                        if r < 0 or r >= h:
                            for j in range(cols):
                                dst[i, j] = zero
                        else:
                            src = x[n, c, r]
                            for j in range(cols):
                                q = sw * j + b - pl
                                dst[i, j] = src[q] if 0 <= q < w else zero


_space_to_depth = jit(_space_to_depth_py)


def _depth_to_space_py(dxs, sh, sw, pt, pl, dx):
    """dx[n, c, r, q] = dxs[n, (c*sh + a)*sw + b, i, j] where r + pt = sh*i + a and
    q + pl = sw*j + b (zero where that lies past the phase planes: no output read it)."""
    n_b, c_in, h, w = dx.shape
    rows, cols = dxs.shape[2], dxs.shape[3]
    zero = dx.dtype.type(0)
    for n in range(n_b):
        for c in range(c_in):
            for r in range(h):
                i, a = divmod(r + pt, sh)
                for q in range(w):
                    j, b = divmod(q + pl, sw)
                    ok = i >= 0 and i < rows and j >= 0 and j < cols
                    dx[n, c, r, q] = dxs[n, (c * sh + a) * sw + b, i, j] if ok else zero


_depth_to_space = jit(_depth_to_space_py)


def _tap_places(kh, kw, stride, dilation):
    """``(ki, kj, a, u, b, v)`` for every tap: its phase (a, b) and place (u, v) in it."""
    (sh, sw), (dh, dw) = stride, dilation
    return [(ki, kj, *divmod(ki * dh, sh)[::-1], *divmod(kj * dw, sw)[::-1])
            for ki in range(kh) for kj in range(kw)]


def phase_weights(w, stride, dilation):
    """W' (K, C/g*sh*sw, U, V) of the phase-plane convolution (see above)."""
    k_out, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    u, v, _, _ = phase_shape(kh, kw, sh, sw, dh, dw, 1, 1)
    wp = np.zeros((k_out, cg, sh, sw, u, v), w.dtype)
    for ki, kj, a, ui, b, vj in _tap_places(kh, kw, stride, dilation):
        wp[:, :, a, b, ui, vj] = w[:, :, ki, kj]
    return wp.reshape(k_out, cg * sh * sw, u, v)


def flipped_weights(w, groups):
    """Kernel of the stride-1 input gradient as a forward correlation:
    ``wt[g*cg + c, k, a, b] = w[g*kg + k, c, kh-1-a, kw-1-b]`` (also ``conv.py``'s)."""
    k_out, cg, kh, kw = w.shape
    kg = k_out // groups
    return np.ascontiguousarray(
        w[:, :, ::-1, ::-1].reshape(groups, kg, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    ).reshape(groups * cg, kg, kh, kw)


def _phase_planes(x, kh, kw, stride, pad, dilation, out_hw):
    """X' (N, C*sh*sw, rows, cols): the padded input's phase planes (see above)."""
    sh, sw = stride
    _, _, rows, cols = phase_shape(kh, kw, sh, sw, *dilation, *out_hw)
    xs = np.empty((x.shape[0], x.shape[1] * sh * sw, rows, cols), x.dtype)
    _space_to_depth(x, sh, sw, int(pad[0]), int(pad[1]), xs)
    return xs


def strided_forward(x, w, b, stride, pad, dilation, groups, out_hw, out):
    """Convolution with stride > 1 into ``out`` through the phase planes."""
    kh, kw = w.shape[2], w.shape[3]
    xs = _phase_planes(x, kh, kw, stride, pad, dilation, out_hw)
    return simd_forward(xs, phase_weights(w, stride, dilation), b, (0, 0), (1, 1), groups,
                        out_hw, out)


def strided_backward(dy, x, w, stride, pad, dilation, groups, need_dx, out_dx=None):
    """``(dx or None, dw)`` of :func:`strided_forward`: the stride-1 gradients on the phase
    planes, read back into the input's and the kernel's places."""
    k_out, cg, kh, kw = w.shape
    sh, sw = stride
    xs = _phase_planes(x, kh, kw, stride, pad, dilation, (dy.shape[2], dy.shape[3]))
    wp = phase_weights(w, stride, dilation)
    u, v = wp.shape[2], wp.shape[3]
    dwp = simd_weight_grad(dy, xs, wp.shape, (0, 0), (1, 1), groups)
    dwp = dwp.reshape(k_out, cg, sh, sw, u, v)
    dwt = np.empty_like(w)
    for ki, kj, a, ui, b, vj in _tap_places(kh, kw, stride, dilation):
        dwt[:, :, ki, kj] = dwp[:, :, a, b, ui, vj]
    if not need_dx:
        return None, dwt
    # dX' of a valid stride-1 convolution: the full correlation of dy with the flipped kernel
    dxs = simd_forward(dy, flipped_weights(wp, groups), None, (u - 1, v - 1), (1, 1), groups,
                       xs.shape[2:], np.empty_like(xs))
    dx = np.empty_like(x) if out_dx is None else out_dx
    _depth_to_space(dxs, sh, sw, int(pad[0]), int(pad[1]), dx)
    return dx, dwt
