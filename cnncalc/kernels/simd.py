"""Direct convolution in vector registers (any kernel size, stride, dilation, padding, groups).

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

Both micro-kernels take a vector step: the ``NV`` vectors of a register block (and the
weight gradient's successive vectors of ``x``) lie that far apart. Stride 1 passes the vector
length (one run of columns). With a row pitch instead, each vector is one output row (see
"stride > 1: one vector per output row" below). Strided layers run the same kernels on the
input's phase planes, laid out so that every tap is again one column offset (see "stride > 1:
the same kernels on phase planes"); a vector per output row is taken where a row is exactly
one vector.

Every kernel is written once as an undecorated ``_*_py`` function (the ``NUMBA_DISABLE_JIT``
reference path; :func:`tile` has a NumPy body for it) and compiled by ``jit``.
"""
from __future__ import annotations

import functools

import numpy as np
from numba.extending import intrinsic, overload

from ._jit import jit

__all__ = ["KB", "NV", "TB", "join_phases", "lanes", "pad_planes", "phase_dx_plan",
           "phase_input_grad", "rows_forward", "split_phases",
           "rows_weight_grad", "simd_forward", "simd_weight_grad", "strided_backward",
           "strided_forward", "tiles"]

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
def _tile_py(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb, vs):
    """``y[yo + k*ldy + v*vl + j] = sum_{c, t} w[wo + (k*cg + c)*taps + t] * xp[xo + c*plane +
    offs[t] + v*vs + j]`` for ``k < kb``, the ``NV`` vectors ``v`` and ``j < vl = qb / NV``
    (flat arrays): with ``vs = vl`` one run of ``qb`` columns; with a row pitch, ``NV`` rows.
    NumPy body of :func:`tile`."""
    vl = qb // NV
    for k in range(kb):
        acc = np.zeros(qb, y.dtype)
        for c in range(cg):
            for t in range(taps):
                wv = w[wo + (k * cg + c) * taps + t]
                for v in range(NV):
                    s = xo + c * plane + offs[t] + v * vs
                    acc[v * vl:(v + 1) * vl] += wv * xp[s:s + vl]
        y[yo + k * ldy:yo + k * ldy + qb] = acc


def _ir_arrays(context, builder, signature, args, *positions):
    """For an intrinsic's codegen: the element type, the vector type (``vector_bytes()``
    wide), the data pointers of the array arguments at ``positions``, and the vector's lane
    count, its pointer type, i64 and a zero vector."""
    from llvmlite import ir

    at = signature.args
    ft = context.get_value_type(at[positions[0]].dtype)
    vt = ir.VectorType(ft, vector_bytes() // context.get_abi_sizeof(ft))
    ptrs = [context.make_array(at[i])(context, builder, args[i]).data for i in positions]
    return (ft, vt, ptrs, vt.count, vt.as_pointer(), ir.IntType(64),
            ir.Constant(vt, [0.0] * vt.count))


def _make_tile_ir(kb):
    """The intrinsic for ``kb`` output channels (``KB`` for full blocks, 1 for the rest)."""

    @intrinsic
    def tile_ir(typingctx, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, vs):
        from numba.core import types

        sig = types.void(xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, vs)

        def codegen(context, builder, signature, args):
            from llvmlite import ir
            from numba.core import cgutils

            _, xo_, plane_, _, wo_, cg_, taps_, _, _, yo_, ldy_, vs_ = args
            _, vt, (xptr, wptr, optr, yptr), vl, vptr, i64, zero = _ir_arrays(
                context, builder, signature, args, 0, 3, 7, 8)
            flags = ("contract",)
            lane0 = ir.Constant(ir.IntType(32), 0)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), vl), [0] * vl)
            # accumulators in allocas: LLVM's mem2reg turns them into registers
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)]
                    for _ in range(kb)]
            wstride = builder.mul(cg_, taps_)          # weights of one output channel
            vsteps = [builder.mul(vs_, ir.Constant(i64, j)) for j in range(NV)]
            with cgutils.for_range(builder, cg_) as cl:
                c = cl.index
                xc = builder.add(xo_, builder.mul(c, plane_))
                wc = builder.add(wo_, builder.mul(c, taps_))
                with cgutils.for_range(builder, taps_) as tl:
                    t = tl.index
                    xb = builder.add(xc, builder.load(builder.gep(optr, [t])))
                    xs = [builder.load(builder.bitcast(
                        builder.gep(xptr, [builder.add(xb, vsteps[j])]), vptr),
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


def tile(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb, vs):
    """One register block: ``kb`` (``KB`` or 1) output channels by ``NV`` vectors of
    ``lanes`` columns (``qb`` in all), read ``vs`` apart (see :func:`_tile_py`; inside numba,
    the vector-register intrinsic)."""
    _tile_py(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb, vs)


@overload(tile)
def _tile_ol(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb, vs):
    full, one = _TILE_IR[KB], _TILE_IR[1]

    def impl(kb, xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, qb, vs):
        if kb == KB:
            full(xp, xo, plane, w, wo, cg, taps, offs, y, yo, ldy, vs)
        else:
            for k in range(kb):
                one(xp, xo, plane, w, wo + k * cg * taps, cg, taps, offs, y, yo + k * ldy, ldy,
                    vs)

    return impl


def _dw_tile_py(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs):
    """``out[oo + k*ldo + t] += sum_{i, j} dyp[do + k*ldd + i*vl + j] * xp[xo + offs[t0 + t]
    + i*xs + j]`` over the ``nq / vl`` vectors ``i`` of ``dyp`` and their lanes ``j``, for
    ``k < kb``, ``t < tb`` (flat arrays; ``xs = vl``: one run of ``nq`` columns of ``xp``,
    else a vector per row of pitch ``xs``). NumPy body of :func:`dw_tile`."""
    vl = lanes(dyp.dtype)
    for k in range(kb):
        d = dyp[do + k * ldd:do + k * ldd + nq]
        for t in range(tb):
            s = xo + offs[t0 + t]
            xv = np.concatenate([xp[s + i * xs:s + i * xs + vl] for i in range(nq // vl)])
            out[oo + k * ldo + t] += np.dot(d, xv)


def _make_dw_tile_ir(kb, tb):
    """The weight-gradient intrinsic for ``kb`` output channels by ``tb`` taps."""

    @intrinsic
    def dw_tile_ir(typingctx, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs):
        from numba.core import types

        sig = types.void(dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs)

        def codegen(context, builder, signature, args):
            from llvmlite import ir
            from numba.core import cgutils

            _, do_, ldd_, _, xo_, _, t0_, nq_, _, oo_, ldo_, xs_ = args
            ft, vt, (dptr, xptr, optr, outp), vl, vptr, i64, zero = _ir_arrays(
                context, builder, signature, args, 0, 3, 5, 8)
            flags = ("contract",)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(tb)]
                    for _ in range(kb)]
            xts = [builder.add(xo_, builder.load(builder.gep(
                optr, [builder.add(t0_, ir.Constant(i64, t))]))) for t in range(tb)]
            drows = [builder.add(do_, builder.mul(ir.Constant(i64, k), ldd_)) for k in range(kb)]
            nvec = builder.udiv(nq_, ir.Constant(i64, vl))
            with cgutils.for_range(builder, nvec) as ql:
                j = builder.mul(ql.index, ir.Constant(i64, vl))
                jx = builder.mul(ql.index, xs_)
                ds = [builder.load(builder.bitcast(builder.gep(dptr, [builder.add(r, j)]), vptr),
                                   align=1) for r in drows]
                for t in range(tb):
                    xv = builder.load(builder.bitcast(
                        builder.gep(xptr, [builder.add(xts[t], jx)]), vptr), align=1)
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


def dw_tile(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs):
    """One weight-gradient register block: ``kb`` (``KB`` or fewer) output channels by ``tb``
    (``TB`` or fewer) taps of one input channel over ``nq`` columns of ``dyp``, a multiple of
    the vector length, against vectors of ``xp`` read ``xs`` apart (see :func:`_dw_tile_py`;
    inside numba, the vector-register intrinsic)."""
    _dw_tile_py(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs)


@overload(dw_tile)
def _dw_tile_ol(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs):
    full, rows, cols, one = (_DW_TILE_IR[KB, TB], _DW_TILE_IR[KB, 1], _DW_TILE_IR[1, TB],
                             _DW_TILE_IR[1, 1])

    def impl(kb, tb, dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs):
        if kb == KB and tb == TB:
            full(dyp, do, ldd, xp, xo, offs, t0, nq, out, oo, ldo, xs)
        elif kb == KB:
            for t in range(tb):
                rows(dyp, do, ldd, xp, xo, offs, t0 + t, nq, out, oo + t, ldo, xs)
        elif tb == TB:
            for k in range(kb):
                cols(dyp, do + k * ldd, ldd, xp, xo, offs, t0, nq, out, oo + k * ldo, ldo, xs)
        else:
            for k in range(kb):
                for t in range(tb):
                    one(dyp, do + k * ldd, ldd, xp, xo, offs, t0 + t, nq, out,
                        oo + k * ldo + t, ldo, xs)

    return impl


# --------------------------------------------------------------------------------------------
# a plane's four (row, column) phase planes: Winograd's lanes layout reads and writes them
# --------------------------------------------------------------------------------------------
# Row widths (``tw`` values per phase row) that get the shuffle intrinsics; other widths take
# the element loops. A row pair of a 2th x 2tw plane is ``4 tw`` contiguous values: 16, 32 or
# 64, i.e. one to four float32 vectors.
PHASE_SHUFFLE_WIDTHS = (4, 8, 16)


def _make_phase_ir(tw, split):
    """The intrinsic ``(planes, at, ph, pho, ps)`` for one row pair of a plane with rows of
    ``2 tw`` values: ``split`` loads its ``4 tw`` values at ``planes[at]`` as one vector and
    stores four ``tw``-wide shuffles of it at ``ph[pho + q*ps]`` (the pair's even and odd
    columns of its even and odd row: phase planes q = 0, 1, 2, 3); else the inverse. LLVM's loop vectoriser makes these stride-2 element loops scalar
    (numba leaves its SLP vectoriser off), one load and one store per value."""
    order = [(row, col) for row in range(2) for col in range(2)]    # phase a*2 + b

    @intrinsic
    def phase_ir(typingctx, planes, at, ph, pho, ps):
        from numba.core import types

        sig = types.void(planes, at, ph, pho, ps)

        def codegen(context, builder, signature, args):
            from llvmlite import ir

            _, at_, _, pho_, ps_ = args
            ft = context.get_value_type(signature.args[0].dtype)
            xptr, pptr = (context.make_array(signature.args[i])(context, builder, args[i]).data
                          for i in (0, 2))
            i32, i64 = ir.IntType(32), ir.IntType(64)
            run, pair = ir.VectorType(ft, tw), ir.VectorType(ft, 4 * tw)
            # lane of the row pair holding column j of phase (a, b)
            lanes_of = [[a * 2 * tw + 2 * j + b for j in range(tw)] for a, b in order]

            def vec_at(ptr, off, vt):
                return builder.bitcast(builder.gep(ptr, [off]), vt.as_pointer())

            def phase_off(base, q):
                return builder.add(base, builder.mul(ps_, ir.Constant(i64, q)))

            if split:
                x = builder.load(vec_at(xptr, at_, pair), align=1)
                for q, idx in enumerate(lanes_of):
                    v = builder.shuffle_vector(x, ir.Constant(pair, ir.Undefined),
                                               ir.Constant(ir.VectorType(i32, tw), idx))
                    builder.store(v, vec_at(pptr, phase_off(pho_, q), run), align=1)
            else:
                runs = [builder.load(vec_at(pptr, phase_off(pho_, q), run), align=1)
                        for q in range(4)]
                # rows: interleave (even, odd) columns; then the two rows end to end
                inter = [i for j in range(tw) for i in (j, tw + j)]
                rows = [builder.shuffle_vector(runs[2 * a], runs[2 * a + 1],
                                               ir.Constant(ir.VectorType(i32, 2 * tw), inter))
                        for a in range(2)]
                y = builder.shuffle_vector(rows[0], rows[1],
                                           ir.Constant(ir.VectorType(i32, 4 * tw),
                                                       list(range(4 * tw))))
                builder.store(y, vec_at(xptr, at_, pair), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return phase_ir


_SPLIT_IR = {tw: _make_phase_ir(tw, True) for tw in PHASE_SHUFFLE_WIDTHS}
_JOIN_IR = {tw: _make_phase_ir(tw, False) for tw in PHASE_SHUFFLE_WIDTHS}


def split_phases(planes, at, step, m, th, tw, ph, ps):
    """``ph[(a*2 + b)*ps + si*th*tw + i*tw + j] = planes[at + si*step + (2i + a)*2tw + 2j + b]``:
    the four (row, column) phase planes of ``m`` planes of (2th, 2tw) values ``step`` apart
    (flat arrays), the m samples side by side in each phase (phases ``ps`` apart). NumPy body;
    inside numba, row pairs through the shuffle intrinsic where ``tw`` is in
    ``PHASE_SHUFFLE_WIDTHS``."""
    _phases_numpy(planes, at, step, m, th, tw, ph, ps, True)


def join_phases(planes, at, step, m, th, tw, ph, ps):
    """The inverse of :func:`split_phases` (the same arguments): the ``m`` planes written from
    their phase planes. NumPy body; inside numba, row pairs through the shuffle intrinsic."""
    _phases_numpy(planes, at, step, m, th, tw, ph, ps, False)


def _phases_numpy(planes, at, step, m, th, tw, ph, ps, split):
    n = th * tw
    for si in range(m):
        plane = planes[at + si * step:at + si * step + 4 * n].reshape(2 * th, 2 * tw)
        for a in range(2):
            for b in range(2):
                o = (a * 2 + b) * ps + si * n
                if split:
                    ph[o:o + n] = plane[a::2, b::2].ravel()
                else:
                    plane[a::2, b::2] = ph[o:o + n].reshape(th, tw)


def _phase_loops(split):
    """The compiled body of :func:`split_phases` (``split``) or :func:`join_phases` (else):
    a row pair per intrinsic call where ``tw`` has one, else element loops. Unsigned flat
    indices: no negative-index checks."""
    shuffles = _SPLIT_IR if split else _JOIN_IR
    s4, s8, s16 = (shuffles[w] for w in PHASE_SHUFFLE_WIDTHS)

    def run(planes, at, step, m, th, tw, ph, ps):
        u = np.uint64
        n = th * tw
        if tw == 4 or tw == 8 or tw == 16:
            for si in range(m):
                for i in range(th):
                    xs, pp = u(at + si * step + i * 4 * tw), u(si * n + i * tw)
                    if tw == 4:
                        s4(planes, xs, ph, pp, u(ps))
                    elif tw == 8:
                        s8(planes, xs, ph, pp, u(ps))
                    else:
                        s16(planes, xs, ph, pp, u(ps))
        else:
            for si in range(m):
                for r in range(2 * th):
                    xs = u(at + si * step + r * 2 * tw)
                    pp = u(si * n + (r & 1) * 2 * ps + (r >> 1) * tw)
                    for j in range(tw):
                        if split:
                            ph[pp + u(j)] = planes[xs + u(2 * j)]
                            ph[pp + u(ps + j)] = planes[xs + u(2 * j + 1)]
                        else:
                            planes[xs + u(2 * j)] = ph[pp + u(j)]
                            planes[xs + u(2 * j + 1)] = ph[pp + u(ps + j)]

    return run


def _phases_overload(split):
    def typing(planes, at, step, m, th, tw, ph, ps):
        return _phase_loops(split)

    return typing


# inlined into the caller: a call per plane passing arrays costs reference counting, and
# made the shuffles slower than the element loops
overload(split_phases, inline="always")(_phases_overload(True))
overload(join_phases, inline="always")(_phases_overload(False))


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


def _plane_py(h, w, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo):
    """(rows, row pitch) of one sample's plane in the block buffer: stride 1, the compact
    padded plane (:func:`_compact_plane`); stride > 1, each of its phase planes (see "stride >
    1" below): the ``ho + U - 1`` rows and ``wo + V - 1`` columns the taps of a phase read."""
    if sh == 1 and sw == 1:
        return _compact_plane_j(h, w, kh, kw, pt, pl, dh, dw, ho, wo)
    return ho + dh * (kh - 1) // sh, wo + dw * (kw - 1) // sw


_plane = jit(_plane_py)


def _tap_offsets_py(kh, kw, sh, sw, dh, dw, wp, lq):
    """(offs, span): each tap's column offset in a channel's block buffer, and the buffer's
    columns per channel, for ``lq`` output columns of pitch ``wp``. Tap (ki, kj) reads
    ``u = ki*dh div sh`` rows and ``v = kj*dw div sw`` columns past the output's position in
    phase plane ``(ki*dh mod sh, kj*dw mod sw)``; each phase's stretch holds the ``lq`` columns
    and the ``(U - 1)*wp + V - 1`` its last register block reads past them (stride 1: one
    phase, ``u = ki*dh``, ``v = kj*dw``)."""
    u_max = dh * (kh - 1) // sh
    v_max = dw * (kw - 1) // sw
    phase_span = lq + u_max * wp + v_max
    offs = np.empty(kh * kw, np.int64)
    for ki in range(kh):
        for kj in range(kw):
            a, b = ki * dh % sh, kj * dw % sw
            offs[ki * kw + kj] = ((a * sw + b) * phase_span + ki * dh // sh * wp
                                  + kj * dw // sw)
    return offs, sh * sw * phase_span


_tap_offsets = jit(_tap_offsets_py)


def _phase_fill_py(x, s0, m, c0, cg, sh, sw, pt, pl, hp, wp, xp):
    """xp[c, (a*sw + b)*S + si*hp*wp + i*wp + j] = x[s0 + si, c0 + c, sh*i + a - pt,
    sw*j + b - pl] (S = xp's columns / (sh*sw)): the m samples' phase planes side by side,
    phase by phase, and each phase's columns past them zeroed. The places that the padding
    maps to are left alone: they are the same in every block, so the caller zeroes the
    buffer once (3x faster than writing the zeros of every short phase row again)."""
    n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
    plane = hp * wp
    phase_span = xp.shape[1] // (sh * sw)
    u = np.uint64
    xf = x.ravel()
    xpf = xp.ravel()
    jlo = np.empty(sw, np.int64)     # per column phase: the columns inside the input
    jhi = np.empty(sw, np.int64)     # (hoisted: integer division is slow)
    for b in range(sw):
        jlo[b] = min(max(0, -((b - pl) // sw)), wp)
        jhi[b] = max(min(wp, (w - 1 + pl - b) // sw + 1), jlo[b])
    r_end = min(h, sh * hp - pt)     # input rows that some phase row holds
    be = pl % 2                      # sw = 2: the column phase of the even input columns
    pairs = max(0, min(w // 2, wp - pl // 2, wp - (pl + 1) // 2))   # column pairs held
    for c in range(cg):
        chan = c * xp.shape[1]
        for si in range(m):
            src = ((s0 + si) * n_c + c0 + c) * h * w
            r0 = max(0, -pt)                  # (negative padding crops)
            a, i = (r0 + pt) % sh, (r0 + pt) // sh   # input row r: row i of row phase a
            for r in range(r0, r_end):
                row = chan + a * sw * phase_span + si * plane + i * wp
                if sw == 2 and pl >= 0:
                    # both column phases in one loop: LLVM vectorises it as a deinterleave,
                    # 3.7x the speed of one loop per phase
                    de = u(row + be * phase_span + pl // 2)
                    do = u(row + (1 - be) * phase_span + (pl + 1) // 2)
                    s = u(src + r * w)
                    for t in range(pairs):
                        xpf[de + u(t)] = xf[s + u(2 * t)]
                        xpf[do + u(t)] = xf[s + u(2 * t + 1)]
                    for q in range(2 * pairs, w):
                        j = (q + pl) // 2
                        if j < wp:
                            xpf[u(row + (q + pl) % 2 * phase_span + j)] = xf[s + u(q)]
                else:
                    for b in range(sw):
                        d = u(row + b * phase_span + jlo[b])
                        s = u(src + r * w + sw * jlo[b] + b - pl)
                        for j in range(jhi[b] - jlo[b]):
                            xpf[d + u(j)] = xf[s + u(sw * j)]
                a += 1
                if a == sh:
                    a, i = 0, i + 1
        zero = xp.dtype.type(0)
        for p in range(sh * sw):
            base = u(chan + p * phase_span)
            for j in range(m * plane, phase_span):
                xpf[base + u(j)] = zero


_phase_fill = jit(_phase_fill_py)


def _fill_planes_py(x, s0, m, c0, cg, sh, sw, pt, pl, hp, wp, xp):
    """The block buffer of :func:`_plane`'s layout: :func:`pad_planes` (stride 1) or
    :func:`_phase_fill`."""
    if sh == 1 and sw == 1:
        pad_planes(x, s0, m, c0, cg, pt, pl, hp, wp, xp)
    else:
        _phase_fill(x, s0, m, c0, cg, sh, sw, pt, pl, hp, wp, xp)


_fill_planes = jit(_fill_planes_py)


def _tiles_py(xpf, span, wf, w0, cgi, taps, offs, ybf, lq, nq, kg, qb):
    """Register blocks over the first ``nq`` columns of a pitched buffer for all ``kg`` output
    channels: ``ybf[k*lq + q] = sum_{c, t} wf[w0 + (k*cgi + c)*taps + t] *
    xpf[c*span + q + offs[t]]`` (full blocks of ``KB`` channels, then the rest)."""
    kfull = kg - kg % KB
    vl = qb // NV
    for q0 in range(0, nq, qb):
        for k0 in range(0, kfull, KB):
            tile(KB, xpf, q0, span, wf, w0 + k0 * cgi * taps, cgi, taps, offs, ybf, k0 * lq + q0,
                 lq, qb, vl)
        if kfull < kg:
            tile(kg - kfull, xpf, q0, span, wf, w0 + kfull * cgi * taps, cgi, taps, offs, ybf,
                 kfull * lq + q0, lq, qb, vl)


tiles = jit(_tiles_py)


def _conv_fwd_simd_py(x, w, b, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, groups, ho, wo, y,
                      nb, qb):
    """Forward, ``nb`` samples per block (their planes side by side, :func:`_plane`), register
    blocks of ``KB`` output channels by ``qb`` columns (``w`` is (K, C/groups, kh, kw),
    C-contiguous)."""
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = w.shape[0]
    cg = c_in // groups
    kg = k_out // groups
    taps = kh * kw
    hp, wp = _plane(x.shape[2], x.shape[3], kh, kw, sh, sw, pt, pl, dh, dw, ho, wo)
    plane = hp * wp
    lq = (nb * plane + qb - 1) // qb * qb        # output columns of a full block
    offs, span = _tap_offsets(kh, kw, sh, sw, dh, dw, wp, lq)
    xp = np.zeros((cg, span), x.dtype)           # the phase planes' padding (stride > 1)
    yb = np.empty((kg, lq), x.dtype)
    xpf = xp.ravel()
    ybf = yb.ravel()
    yf = y.ravel()
    wf = w.ravel()
    zero = x.dtype.type(0)
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * plane + qb - 1) // qb * qb
        for g in range(groups):
            _fill_planes(x, s0, m, g * cg, cg, sh, sw, pt, pl, hp, wp, xp)
            tiles(xpf, span, wf, g * kg * cg * taps, cg, taps, offs, ybf, lq, nq, kg, qb)
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


def _conv_dw_simd_py(dy, x, kh, kw, sh, sw, pt, pl, dh, dw, groups, dwt, nb, vl):
    """Weight gradient into ``dwt`` (K, C/groups * kh * kw) (overwritten): ``nb`` samples per
    block (:func:`_plane`'s layout), the reduction over each block's columns in vectors of
    ``vl``."""
    n_b, c_in, h, w = x.shape
    k_out, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    cg = c_in // groups
    kg = k_out // groups
    taps = kh * kw
    hp, wp = _plane(h, w, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo)
    plane = hp * wp
    lq = (nb * plane + vl - 1) // vl * vl
    offs, span = _tap_offsets(kh, kw, sh, sw, dh, dw, wp, lq)
    xp = np.zeros((cg, span), x.dtype)           # the phase planes' padding (stride > 1)
    dyp = np.empty((kg, lq), x.dtype)
    xpf = xp.ravel()
    dypf = dyp.ravel()
    kfull = kg - kg % KB
    tfull = taps - taps % TB
    dwf = dwt.ravel()
    dwf[:] = 0
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * plane + vl - 1) // vl * vl
        for g in range(groups):
            _fill_planes(x, s0, m, g * cg, cg, sh, sw, pt, pl, hp, wp, xp)
            pad_planes(dy, s0, m, g * kg, kg, 0, 0, hp, wp, dyp)   # zero in the padding
            for k0 in range(0, kg, KB):
                kb = KB if k0 < kfull else kg - kfull
                for c in range(cg):
                    o = ((g * kg + k0) * cg + c) * taps
                    for t0 in range(0, taps, TB):
                        dw_tile(kb, TB if t0 < tfull else taps - tfull, dypf, k0 * lq, lq,
                                xpf, c * span, offs, t0, nq, dwf, o + t0, cg * taps, vl)


_conv_dw_simd = jit(_conv_dw_simd_py)

BLOCK_COLUMNS = 512   # samples side by side until a block has about this many columns


def block_samples(n: int, plane: int) -> int:
    """Samples per block: enough planes for ``BLOCK_COLUMNS`` columns (at most the batch)."""
    return max(1, min(n, -(-BLOCK_COLUMNS // plane)))


def _block(x_shape, kh, kw, stride, pad, dilation, out_hw):
    """The kernels' geometry arguments after ``kh, kw``, and the samples per block."""
    (sh, sw), (pt, pl), (dh, dw) = stride, (int(pad[0]), int(pad[1])), dilation
    rows, pitch = _plane_py(x_shape[2], x_shape[3], kh, kw, sh, sw, pt, pl, dh, dw, *out_hw)
    return (sh, sw, pt, pl, dh, dw), block_samples(x_shape[0], rows * pitch)


def simd_weight_grad(dy, x, w_shape, pad, dilation, groups, out=None, *, stride=(1, 1)):
    """Weight gradient (K, C/groups, kh, kw) of the convolution that gave ``dy``
    (N, K, Ho, Wo) from ``x``; ``pad`` = (top, left)."""
    k_out, cg, kh, kw = w_shape
    geo, nb = _block(x.shape, kh, kw, stride, pad, dilation, dy.shape[2:])
    out = np.empty(w_shape, x.dtype) if out is None else out
    _conv_dw_simd(dy, x, kh, kw, *geo, int(groups), out.reshape(k_out, cg * kh * kw), nb,
                  lanes(x.dtype))
    return out


def simd_forward(x, w, b, pad, dilation, groups, out_hw, out, *, stride=(1, 1)):
    """Convolution forward into ``out`` (N, K, Ho, Wo); ``pad`` = (top, left) (stride 1: may
    be negative, cropping), ``w`` (K, C/groups, kh, kw), ``b`` (K,) or None."""
    kh, kw = w.shape[2], w.shape[3]
    has_bias = b is not None
    bb = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    geo, nb = _block(x.shape, kh, kw, stride, pad, dilation, out_hw)
    _conv_fwd_simd(x, w, bb, has_bias, kh, kw, *geo, int(groups), *out_hw, out, nb,
                   NV * lanes(x.dtype))
    return out


# --------------------------------------------------------------------------------------------
# stride > 1: the same kernels on phase planes
# --------------------------------------------------------------------------------------------
# Output (oh, ow) of a stride-(sh, sw) convolution reads padded input row sh*oh + ki*dh =
# sh*(oh + u) + a with a = ki*dh mod sh, u = ki*dh div sh: row oh + u of the input's phase
# plane a (the rows sh*i + a), and the same for columns. So with each channel's sh*sw phase
# planes laid one after another in the block buffer (``_phase_fill``), every tap is again one
# fixed column offset from the output's position (``_tap_offsets``: into its phase's stretch)
# and the stride-1 kernels run unchanged, tap for tap: no zero taps, no im2col. The input
# gradient takes, per input phase (a, b), the taps that land on it (:func:`phase_input_grad`).
def _tap_places(kh, kw, stride, dilation):
    """``(ki, kj, a, u, b, v)`` for every tap: its phase (a, b) and place (u, v) in it."""
    (sh, sw), (dh, dw) = stride, dilation
    return [(ki, kj, *divmod(ki * dh, sh)[::-1], *divmod(kj * dw, sw)[::-1])
            for ki in range(kh) for kj in range(kw)]


def flipped_weights(w, groups):
    """Kernel of the stride-1 input gradient as a forward correlation:
    ``wt[g*cg + c, k, a, b] = w[g*kg + k, c, kh-1-a, kw-1-b]`` (also ``conv.py``'s)."""
    k_out, cg, kh, kw = w.shape
    kg = k_out // groups
    return np.ascontiguousarray(
        w[:, :, ::-1, ::-1].reshape(groups, kg, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    ).reshape(groups * cg, kg, kh, kw)


def strided_forward(x, w, b, stride, pad, dilation, groups, out_hw, out):
    """Convolution with stride > 1 into ``out`` through the phase planes."""
    return simd_forward(x, w, b, pad, dilation, groups, out_hw, out, stride=stride)


def strided_backward(dy, x, w, stride, pad, dilation, groups, need_dx, out_dx=None, *,
                     dx_plan=None):
    """``(dx or None, dw)`` of :func:`strided_forward`: dw on the same phase planes, dx input
    phase by input phase (:func:`phase_input_grad`, with ``dx_plan`` as its ``plan``)."""
    dwt = simd_weight_grad(dy, x, w.shape, pad, dilation, groups, stride=stride)
    if not need_dx:
        return None, dwt
    return phase_input_grad(dy, w, stride, pad, dilation, groups, x.shape, out_dx,
                            plan=dx_plan), dwt


# --------------------------------------------------------------------------------------------
# stride > 1: one vector per output row
# --------------------------------------------------------------------------------------------
# Where the phase planes' zero taps cost too much (3x3 stride 2: 16/9 of the work), each vector
# of the register block holds one output row instead: output (oh, ow .. ow + lanes) reads the
# padded input at row sh*oh + ki*dh, columns sw*(ow ..) + kj*dw. Split the columns into their
# sw phases (phase b holds padded columns b, b + sw, ...) and those reads are contiguous:
# phase (kj*dw) mod sw, columns ow + (kj*dw) div sw on. The rows of a block's samples lie one
# after another (a sample's slot of sh*gs rows gives gs output rows), so output row G of the
# block reads row sh*G + ki*dh: the NV vectors of a register block are NV output rows, read
# sh*P apart (P the phase row's pitch). No zero taps; the lanes past the output's width (when
# it is not a multiple of the vector) and the output rows between samples are computed and
# dropped. The weight gradient runs the same reads with the output gradient in the same layout
# (zero where nothing was output); the input gradient is, per input phase (a, b), a stride-1
# correlation of dy with the taps that land on that phase (no zero taps either).
def rows_layout(h, w, kh, kw, sh, sw, pt, dh, dw, ho, wo, vl):
    """(gs, P, segments): output rows per sample slot (``gs >= ho``; the slot has ``sh*gs``
    padded input rows), the phase rows' pitch, and vectors per output row."""
    gs = max(ho, -(-(sh * (ho - 1) + dh * (kh - 1) + 1) // sh))
    pitch = -(-(sw * (wo - 1) + dw * (kw - 1) + 1) // sw)
    return gs, pitch, -(-wo // vl)


def _col_phases_py(x, s0, m, c0, cg, sh, sw, pt, pl, gs, pitch, bplane, cplane, xq):
    """xq[c*cplane + b*bplane + (si*sh*gs + pt + i)*pitch + j] = x[s0 + si, c0 + c, i,
    sw*j + b - pl] for the input rows that fall in a sample's slot and the columns inside the
    input; every other element of xq is left as it is (zero from its allocation). Each input
    row is read once, in order, and dealt to the phases (stride 2 with a literal step, which
    LLVM turns into vector shuffles; stride 1 as a plain copy)."""
    n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
    rows = min(h, sh * gs - pt)
    xf = x.ravel()
    xqf = xq.ravel()
    u = np.uint64
    # input column q goes to phase (q + pl) % sw, column (q + pl) // sw; the row's columns
    # q < wlim fit the pitch
    wlim = min(w, sw * pitch - pl)
    for c in range(cg):
        for si in range(m):
            src0 = ((s0 + si) * n_c + c0 + c) * h * w
            for i in range(rows):
                d = c * cplane + (si * sh * gs + pt + i) * pitch
                s = u(src0 + i * w)
                if sw == 2 and pl % 2 == 0:          # q even -> phase 0, odd -> phase 1
                    d0 = u(d + pl // 2)
                    d1 = u(d + bplane + pl // 2)
                    for j in range(wlim // 2):
                        xqf[d0 + u(j)] = xf[s + u(2 * j)]
                        xqf[d1 + u(j)] = xf[s + u(2 * j + 1)]
                    if wlim % 2:
                        xqf[d0 + u(wlim // 2)] = xf[s + u(wlim - 1)]
                elif sw == 2:                         # q even -> phase 1, odd -> phase 0
                    d1 = u(d + bplane + pl // 2)
                    d0 = u(d + pl // 2 + 1)
                    for j in range(wlim // 2):
                        xqf[d1 + u(j)] = xf[s + u(2 * j)]
                        xqf[d0 + u(j)] = xf[s + u(2 * j + 1)]
                    if wlim % 2:
                        xqf[d1 + u(wlim // 2)] = xf[s + u(wlim - 1)]
                elif sw == 1:
                    d0 = u(d + pl)
                    for q in range(wlim):
                        xqf[d0 + u(q)] = xf[s + u(q)]
                else:
                    for q in range(wlim):
                        pq = q + pl
                        xqf[u(d + (pq % sw) * bplane + pq // sw)] = xf[s + u(q)]


_col_phases = jit(_col_phases_py)


def _rows_buffers_py(kh, kw, sh, sw, dh, dw, nb, gs, pitch, vl):
    """(rows of one phase plane, its size, tap offsets) for blocks of ``nb`` samples whose
    ``G`` output rows are computed in register blocks of ``NV`` (``ceil(nb*gs / NV) * NV``)."""
    gpad = -(-nb * gs // NV) * NV
    # the rows the register blocks read, and at least the samples' slots (their input rows)
    rows = max(sh * (gpad - 1) + dh * (kh - 1) + 1, nb * sh * gs)
    bplane = rows * pitch + vl          # + vl: the last vector's lanes past the pitch
    offs = np.empty(kh * kw, np.int64)
    for ki in range(kh):
        for kj in range(kw):
            offs[ki * kw + kj] = (kj * dw) % sw * bplane + ki * dh * pitch + (kj * dw) // sw
    return gpad, bplane, offs


_rows_buffers = jit(_rows_buffers_py)


def _rows_transfer_py(flat, buf, s0, m, c0, kc, c_tot, ho, wo, gs, gpad, nseg, vl, ld,
                      into_buf, b, has_bias):
    """Between channels ``c0 .. c0 + kc`` of samples ``s0 .. s0 + m`` of an (N, c_tot, ho, wo)
    tensor (``flat``, raveled) and the row layout ``buf[k*ld + seg*gpad*vl + G*vl + lane]``
    (G = si*gs + oh, column seg*vl + lane): ``into_buf`` copies the tensor in, else the
    buffer (plus ``b[c0 + k]`` with ``has_bias``) out. Rows one vector wide are one run per
    sample and channel; unsigned flat indices (see pad_planes)."""
    zero = buf.dtype.type(0)
    u = np.uint64
    nrun = 1 if wo == vl else ho              # runs per segment, and their length
    for si in range(m):
        for k in range(kc):
            bk = b[c0 + k] if has_bias else zero
            base = ((s0 + si) * c_tot + c0 + k) * ho * wo
            for seg in range(nseg):
                run = ho * wo if wo == vl else min(vl, wo - seg * vl)
                for oh in range(nrun):
                    r = u(k * ld + seg * gpad * vl + (si * gs + oh) * vl)
                    f = u(base + oh * wo + seg * vl)
                    if into_buf:
                        for j in range(run):
                            buf[r + u(j)] = flat[f + u(j)]
                    else:
                        for j in range(run):
                            flat[f + u(j)] = buf[r + u(j)] + bk


_rows_transfer = jit(_rows_transfer_py)


def _rows_setup_py(x, k_out, kh, kw, sh, sw, dh, dw, groups, nb, gs, pitch, nseg, vl):
    """(C/groups, K/groups, taps, rows per block, phase-plane size, channel-plane size, tap
    offsets, the zeroed column-phase buffer, the row buffer's row length) for the row
    drivers."""
    cg = x.shape[1] // groups
    gpad, bplane, offs = _rows_buffers(kh, kw, sh, sw, dh, dw, nb, gs, pitch, vl)
    xq = np.zeros((cg, sw * bplane), x.dtype)
    return (cg, k_out // groups, kh * kw, gpad, bplane, sw * bplane, offs, xq,
            nseg * gpad * vl)


_rows_setup = jit(_rows_setup_py)


def _conv_fwd_rows_py(x, w, b, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, groups, ho, wo, y,
                      nb, gs, pitch, nseg, vl):
    """Forward with a vector per output row (see above), ``nb`` samples per block."""
    n_b, k_out = x.shape[0], w.shape[0]
    cg, kg, taps, gpad, bplane, cplane, offs, xq, ldy = _rows_setup(
        x, k_out, kh, kw, sh, sw, dh, dw, groups, nb, gs, pitch, nseg, vl)
    xqf = xq.ravel()
    ybf = np.empty(kg * ldy, x.dtype)
    wf = w.ravel()
    kfull = kg - kg % KB
    qb = NV * vl
    vs = sh * pitch
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        gm = -(-m * gs // NV) * NV
        for g in range(groups):
            _col_phases(x, s0, m, g * cg, cg, sh, sw, pt, pl, gs, pitch, bplane, cplane, xq)
            w0 = g * kg * cg * taps
            for seg in range(nseg):
                for g0 in range(0, gm, NV):
                    xo = sh * g0 * pitch + seg * vl
                    yo = seg * gpad * vl + g0 * vl
                    for k0 in range(0, kfull, KB):
                        tile(KB, xqf, xo, cplane, wf, w0 + k0 * cg * taps, cg, taps, offs, ybf,
                             k0 * ldy + yo, ldy, qb, vs)
                    if kfull < kg:
                        tile(kg - kfull, xqf, xo, cplane, wf, w0 + kfull * cg * taps, cg, taps,
                             offs, ybf, kfull * ldy + yo, ldy, qb, vs)
            _rows_transfer(y.ravel(), ybf, s0, m, g * kg, kg, k_out, ho, wo, gs, gpad, nseg, vl,
                           ldy, False, b, has_bias)


_conv_fwd_rows = jit(_conv_fwd_rows_py)


def _conv_dw_rows_py(dy, x, kh, kw, sh, sw, pt, pl, dh, dw, groups, dwt, nb, gs, pitch, nseg,
                     vl):
    """Weight gradient with a vector per output row, into ``dwt`` (K, C/groups*kh*kw)
    (overwritten): ``dy`` laid out like the forward's output buffer, zero where no output
    is, against the same reads of the column phases."""
    n_b, k_out, ho, wo = dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]
    cg, kg, taps, gpad, bplane, cplane, offs, xq, ldd = _rows_setup(
        x, k_out, kh, kw, sh, sw, dh, dw, groups, nb, gs, pitch, nseg, vl)
    xqf = xq.ravel()
    dqf = np.zeros(kg * ldd, x.dtype)
    dwf = dwt.ravel()
    dwf[:] = 0
    kfull = kg - kg % KB
    tfull = taps - taps % TB
    xs = sh * pitch
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = m * gs * vl                 # this block's output rows (the rest is not read)
        for g in range(groups):
            _col_phases(x, s0, m, g * cg, cg, sh, sw, pt, pl, gs, pitch, bplane, cplane, xq)
            _rows_transfer(dy.ravel(), dqf, s0, m, g * kg, kg, k_out, ho, wo, gs, gpad, nseg, vl,
                           ldd, True, dwf, False)
            for k0 in range(0, kg, KB):
                kb = KB if k0 < kfull else kg - kfull
                for c in range(cg):
                    o = ((g * kg + k0) * cg + c) * taps
                    for seg in range(nseg):
                        for t0 in range(0, taps, TB):
                            dw_tile(kb, TB if t0 < tfull else taps - tfull, dqf,
                                    k0 * ldd + seg * gpad * vl, ldd, xqf, c * cplane + seg * vl,
                                    offs, t0, nq, dwf, o + t0, cg * taps, xs)


_conv_dw_rows = jit(_conv_dw_rows_py)

ROW_BLOCK_COLUMNS = 512   # samples per block: about this many output columns (rows x vectors)


def _rows_args(x_shape, w_shape, stride, pad, dilation, out_hw, dtype):
    k_out, cg, kh, kw = w_shape
    (sh, sw), (pt, pl), (dh, dw), (ho, wo) = stride, pad, dilation, out_hw
    vl = lanes(dtype)
    gs, pitch, nseg = rows_layout(x_shape[2], x_shape[3], kh, kw, sh, sw, pt, dh, dw, ho, wo,
                                  vl)
    nb = max(1, min(x_shape[0], -(-ROW_BLOCK_COLUMNS // (gs * nseg * vl))))
    return (kh, kw, sh, sw, int(pt), int(pl), dh, dw), (nb, gs, pitch, nseg, vl)


def rows_forward(x, w, b, stride, pad, dilation, groups, out_hw, out):
    """Convolution with stride > 1 into ``out``, a vector per output row (see above); ``pad``
    = (top, left), the output size fixes the rest."""
    geo, blk = _rows_args(x.shape, w.shape, stride, pad, dilation, out_hw, x.dtype)
    has_bias = b is not None
    bb = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    _conv_fwd_rows(x, w, bb, has_bias, *geo, int(groups), *out_hw, out, *blk)
    return out


def rows_weight_grad(dy, x, w_shape, stride, pad, dilation, groups, out=None):
    """Weight gradient (K, C/groups, kh, kw) of :func:`rows_forward`."""
    k_out, cg, kh, kw = w_shape
    geo, blk = _rows_args(x.shape, w_shape, stride, pad, dilation, dy.shape[2:], x.dtype)
    out = np.empty(w_shape, x.dtype) if out is None else out
    _conv_dw_rows(dy, x, *geo, int(groups), out.reshape(k_out, cg * kh * kw), *blk)
    return out


def _conv_dx_phases_py(dy, wph, offs, ph, dx, sh, sw, pt, pl, groups, hp, wp, ptd, pld, nb,
                       qb):
    """Input gradient of a strided convolution, every input phase from one padded copy of
    ``dy`` per block (``ptd`` rows above, ``pld`` columns left, planes of ``hp`` x ``wp``):
    phase ``p`` (a row of ``ph``: a, b, i0, j0, rows, cols, first tap, taps, weight offset)
    is a stride-1 correlation whose output (i, j) goes to ``dx[.., sh*(i0 + i) + a - pt,
    sw*(j0 + j) + b - pl]``; its taps' offsets are ``offs[first:first + taps]`` and its
    weights ``wph[woff:]`` laid out (C, K/groups, taps)."""
    n_b, k_out = dy.shape[0], dy.shape[1]
    c_in, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    kg = k_out // groups
    cg = c_in // groups
    plane = hp * wp
    lq = (nb * plane + qb - 1) // qb * qb
    span = lq + wp * hp                  # reads reach at most a plane past the last column
    dyp = np.empty((kg, span), dy.dtype)
    yb = np.empty((cg, lq), dy.dtype)
    dypf = dyp.ravel()
    ybf = yb.ravel()
    dxf = dx.ravel()
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * plane + qb - 1) // qb * qb
        for g in range(groups):
            pad_planes(dy, s0, m, g * kg, kg, ptd, pld, hp, wp, dyp)
            for p in range(ph.shape[0]):
                a, b, i0, j0, ni, nj, t0, nt, w0 = (ph[p, 0], ph[p, 1], ph[p, 2], ph[p, 3],
                                                    ph[p, 4], ph[p, 5], ph[p, 6], ph[p, 7],
                                                    ph[p, 8])
                tiles(dypf, span, wph, w0 + g * cg * kg * nt, kg, nt, offs[t0:t0 + nt], ybf, lq,
                       nq, cg, qb)
                for si in range(m):      # unsigned flat indices: see pad_planes
                    for c in range(cg):
                        src = c * lq + si * plane
                        dst = ((s0 + si) * c_in + g * cg + c) * h * w
                        for i in range(ni):
                            sr = np.uint64(src + i * wp)
                            dr = np.uint64(dst + (sh * (i0 + i) + a - pt) * w
                                           + sw * j0 + b - pl)
                            for j in range(nj):
                                dxf[dr + np.uint64(sw * j)] = ybf[sr + np.uint64(j)]


_conv_dx_phases = jit(_conv_dx_phases_py)


def phase_dx_plan(w, stride, pad, dilation, groups, in_hw, out_hw, dtype):
    """What :func:`phase_input_grad` needs besides ``dy``, made once for all the batch chunks
    of one call (its Python-level set-up holds the GIL: ~0.1 ms a chunk, as much as an
    8-sample chunk's kernel on a 32 -> 64 stride-2 layer): ``(weights, offsets, phases,
    zero_phases, geometry)``, see :func:`phase_input_grad`."""
    k_out, cg, kh, kw = w.shape
    (sh, sw), (pt, pl) = stride, pad
    h, wd = in_hw
    ho, wo = out_hw
    places = _tap_places(kh, kw, stride, dilation)
    phases, taps, weights = [], [], []
    zero_phases = False
    for a in range(sh):
        i0, i1 = -(-(pt - a) // sh), (pt + h - 1 - a) // sh   # phase rows inside the input
        for b in range(sw):
            j0, j1 = -(-(pl - b) // sw), (pl + wd - 1 - b) // sw
            mine = [(ki, kj, u, v) for ki, kj, pa, u, pb, v in places if (pa, pb) == (a, b)]
            if i1 < i0 or j1 < j0:
                continue
            if not mine:                 # no tap lands here: zero
                zero_phases = True
                continue
            phases.append((a, b, i0, j0, i1 - i0 + 1, j1 - j0 + 1, len(taps), len(mine),
                           sum(wt.size for wt in weights)))
            taps.extend((i0 - u, j0 - v) for _, _, u, v in mine)
            # (C, K/groups, taps): the forward's weights of these taps, transposed per group
            sub = np.stack([w[:, :, ki, kj] for ki, kj, _, _ in mine], axis=-1)
            weights.append(np.ascontiguousarray(
                sub.reshape(groups, k_out // groups, cg, len(mine)).transpose(0, 2, 1, 3)))
    if not phases:
        return None, None, None, zero_phases, None
    # dy padded so that every tap's read (row i0 - u + i, column j0 - v + j) is in the plane
    ptd = max(0, max(-r for r, _ in taps))
    pld = max(0, max(-c for _, c in taps))
    hp = max(ptd + ho, max(p[2] + p[4] for p in phases) + ptd)
    wp = max(pld + wo, max(p[3] + p[5] for p in phases) + pld)
    offs = np.array([(r + ptd) * wp + (c + pld) for r, c in taps], np.int64)
    return (np.concatenate([wt.ravel() for wt in weights]).astype(dtype), offs,
            np.array(phases, np.int64), zero_phases, (hp, wp, ptd, pld))


def phase_input_grad(dy, w, stride, pad, dilation, groups, x_shape, out=None, *, plan=None):
    """``dx`` of a strided convolution, input phase by input phase: padded row ``sh*i + a``
    takes the taps ``ki`` with ``ki*dh = sh*u + a``, from output row ``i - u`` (and the same for
    columns), so each phase's rows and columns are a stride-1 correlation of ``dy`` with those
    taps (no zero taps), written to every ``sh``-th row and ``sw``-th column of ``dx``. One
    padded copy of ``dy`` serves every phase. ``plan``: :func:`phase_dx_plan` of the same
    arguments, when the caller keeps it for several chunks."""
    (sh, sw), (pt, pl) = stride, pad
    n = x_shape[0]
    dx = np.empty(x_shape, dy.dtype) if out is None else out
    if plan is None:
        plan = phase_dx_plan(w, stride, pad, dilation, groups, x_shape[2:], dy.shape[2:],
                             dy.dtype)
    weights, offs, phases, zero_phases, geometry = plan
    if zero_phases:
        dx[...] = 0
    if phases is None:
        return dx
    hp, wp, ptd, pld = geometry
    _conv_dx_phases(dy, weights, offs, phases, dx, sh, sw, pt, pl, int(groups), hp, wp, ptd,
                    pld, block_samples(n, hp * wp), NV * lanes(dy.dtype))
    return dx
