"""The direct vector-register convolution (``cnncalc/kernels/simd.py``) against the NumPy
reference: any stride-1 shape, padding (also past the kernel's reach, and cropping),
dilation, groups, channel counts that leave a partial register block, several samples side by
side; and the LLVM-IR micro-kernel against its NumPy body."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import reference as R
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncalc.kernels import conv, simd


@st.composite
def shapes(draw):
    g = draw(st.integers(1, 3))
    c = g * draw(st.integers(1, 4))
    k = g * draw(st.integers(1, 7))          # K/groups of 1..7: partial blocks of KB = 4
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = [draw(st.integers(-1, kk + 1)) for kk in (kh, kw, kh, kw)]   # top, left, bottom, right
    h = draw(st.integers(d[0] * (kh - 1) + 2, 10))
    w = draw(st.integers(d[1] * (kw - 1) + 2, 10))
    n = draw(st.integers(1, 5))
    return n, c, h, w, k, kh, kw, d, g, pads


@settings(max_examples=60, deadline=None)
@given(shapes(), st.sampled_from([np.float64, np.float32]), st.sampled_from([1, 40, 512]),
       st.booleans())
def test_forward_and_weight_grad_match_reference(shape, dtype, block_columns, bias):
    """Random shapes, paddings from -1 (crop) to past the kernel, a few block sizes (one
    sample per block up to the whole batch), float32 and float64: forward and dW."""
    n, c, h, w, k, kh, kw, d, g, (pt, pl, pb, pr) = shape
    out_hw = conv.conv2d_out_hw(h, w, (kh, kw), 1, (pt, pl), (pb, pr), d)
    if min(out_hw) < 1:
        return
    rng = np.random.default_rng(n * 7 + c * 5 + h * 3 + w)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c // g, kh, kw))
    b = rng.standard_normal(k) if bias else None
    want = R.conv2d_forward(x, wt, b, (1, 1), (pt, pl), d, g, out_hw)
    old = simd.BLOCK_COLUMNS
    simd.BLOCK_COLUMNS = block_columns
    try:
        got = simd.simd_forward(x.astype(dtype), wt.astype(dtype),
                                None if b is None else b.astype(dtype), (pt, pl), d, g, out_hw,
                                np.empty((n, k, *out_hw), dtype))
    finally:
        simd.BLOCK_COLUMNS = old
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    dy = rng.standard_normal(want.shape)
    want_dw = R.conv2d_backward(dy, x, wt, (1, 1), (pt, pl), d, g)[1]
    simd.BLOCK_COLUMNS = block_columns
    try:
        got_dw = simd.simd_weight_grad(dy.astype(dtype), x.astype(dtype), wt.shape, (pt, pl), d,
                                       g)
    finally:
        simd.BLOCK_COLUMNS = old
    np.testing.assert_allclose(got_dw, want_dw, rtol=tol,
                               atol=tol * max(1.0, np.abs(want_dw).max()))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [4, 3, 9])
def test_micro_kernel_matches_its_numpy_body(dtype, k):
    """The compiled driver (LLVM-IR register blocks) and the plain-Python driver (the NumPy
    body of ``tile``, as under NUMBA_DISABLE_JIT) give the same outputs, full and partial
    blocks of output channels."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((3, 5, 9, 7)).astype(dtype)
    wt = rng.standard_normal((k, 5, 2, 2)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    out_hw = conv.conv2d_out_hw(9, 7, (2, 2), 1, (1, 0), (2, 1), (2, 1))
    args = (x, wt, b, True, 2, 2, 1, 1, 1, 0, 2, 1, 1, *out_hw)
    rows, pitch = simd._compact_plane(9, 7, 2, 2, 1, 0, 2, 1, *out_hw)
    nb, qb = simd.block_samples(3, rows * pitch), simd.NV * simd.lanes(dtype)
    jitted = np.empty((3, k, *out_hw), dtype)
    simd._conv_fwd_simd(*args, jitted, nb, qb)
    python = np.empty_like(jitted)
    simd._conv_fwd_simd_py(*args, python, nb, qb)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(jitted, python, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        python, R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                 b.astype(np.float64), (1, 1), (1, 0), (2, 1), 1, out_hw),
        rtol=tol, atol=tol * 10)
    # the weight gradient's intrinsic (full and partial blocks of channels and taps: 2x2 = 4
    # taps, TB = 3) against its NumPy body
    dy = rng.standard_normal(jitted.shape).astype(dtype)
    vl = simd.lanes(dtype)
    dw_jit = np.empty((k, 5 * 4), dtype)
    simd._conv_dw_simd(dy, x, 2, 2, 1, 1, 1, 0, 2, 1, 1, dw_jit, nb, vl)
    dw_py = np.empty_like(dw_jit)
    simd._conv_dw_simd_py(dy, x, 2, 2, 1, 1, 1, 0, 2, 1, 1, dw_py, nb, vl)
    np.testing.assert_allclose(dw_jit, dw_py, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(
        dw_py.reshape(wt.shape), R.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                                                   wt.astype(np.float64), (1, 1), (1, 0), (2, 1),
                                                   1)[1], rtol=tol, atol=tol * 10)


def test_compact_plane_shares_padding():
    """A 3x3 'same' layer on 32x32 needs 33 columns per row and 33 rows per sample (the zero
    column / row between neighbours pads both), a 5x5 'valid' one no padding at all, and no
    plane is shorter than the output it holds."""
    assert simd._compact_plane(32, 32, 3, 3, 1, 1, 1, 1, 32, 32) == (33, 33)
    assert simd._compact_plane(14, 14, 5, 5, 0, 0, 1, 1, 10, 10) == (14, 14)
    assert simd._compact_plane(8, 8, 3, 3, 2, 2, 1, 1, 10, 10) == (10, 10)   # 2 rows both sides
    assert simd._compact_plane(4, 4, 1, 1, 3, 3, 1, 1, 10, 10) == (10, 10)   # past the reach


def test_vector_width_follows_the_cpu():
    assert simd.vector_bytes() in (32, 64)
    assert simd.lanes(np.float32) == 2 * simd.lanes(np.float64) == simd.vector_bytes() // 4


@settings(max_examples=60, deadline=None)
@given(shapes(), st.integers(1, 4), st.integers(1, 4), st.sampled_from([np.float64, np.float32]),
       st.sampled_from([1, 64, 512]))
def test_strided_through_phase_planes_matches_reference(shape, sh, sw, dtype, block_columns):
    """Stride > 1 on the phase planes (every tap a column offset into its phase; one sample
    per block up to the whole batch): forward and dw, also with cropping (negative padding);
    dx, input phase by input phase, for the layers' padding."""
    n, c, h, w, k, kh, kw, d, g, (pt, pl, pb, pr) = shape
    out_hw = conv.conv2d_out_hw(h, w, (kh, kw), (sh, sw), (pt, pl), (pb, pr), d)
    if min(out_hw) < 1:
        return
    rng = np.random.default_rng(n * 7 + c * 5 + h * 3 + w + sh)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c // g, kh, kw))
    dy = rng.standard_normal((n, k, *out_hw))
    old = simd.BLOCK_COLUMNS
    simd.BLOCK_COLUMNS = block_columns
    try:
        y = simd.strided_forward(x.astype(dtype), wt.astype(dtype), None, (sh, sw), (pt, pl), d,
                                 g, out_hw, np.empty((n, k, *out_hw), dtype))
        need_dx = pt >= 0 and pl >= 0
        dx, dw = simd.strided_backward(dy.astype(dtype), x.astype(dtype), wt.astype(dtype),
                                       (sh, sw), (pt, pl), d, g, need_dx)
    finally:
        simd.BLOCK_COLUMNS = old
    tol = 1e-12 if dtype == np.float64 else 2e-5
    want = R.conv2d_forward(x, wt, None, (sh, sw), (pt, pl), d, g, out_hw)
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    rdx, rdw, _ = R.conv2d_backward(dy, x, wt, (sh, sw), (pt, pl), d, g)
    np.testing.assert_allclose(dw, rdw, rtol=tol, atol=tol * max(1.0, np.abs(rdw).max()))
    if need_dx:
        np.testing.assert_allclose(dx, rdx, rtol=tol, atol=tol * max(1.0, np.abs(rdx).max()))
        # the set-up made once for several chunks (conv2d_backward's shared plan) gives the
        # same bits, chunk by chunk
        plan = simd.phase_dx_plan(wt.astype(dtype), (sh, sw), (pt, pl), d, g, (h, w), out_hw,
                                  np.dtype(dtype))
        for a, b in ((0, 1), (1, n)):
            if a < b:
                got = simd.phase_input_grad(dy[a:b].astype(dtype), wt.astype(dtype), (sh, sw),
                                            (pt, pl), d, g, (b - a, c, h, w), plan=plan)
                np.testing.assert_array_equal(got, dx[a:b])
    else:
        assert dx is None


@settings(max_examples=50, deadline=None)
@given(shapes(), st.integers(1, 4), st.integers(1, 4), st.sampled_from([np.float64, np.float32]),
       st.sampled_from([1, 64, 512]), st.booleans())
def test_strided_with_a_vector_per_row_matches_reference(shape, sh, sw, dtype, block_columns,
                                                          bias):
    """Stride > 1 with a vector per output row (column phases; one sample per block up to the
    whole batch; rows wider and narrower than a vector) for the forward and the weight
    gradient, and the input gradient phase by phase."""
    n, c, h, w, k, kh, kw, d, g, (pt, pl, pb, pr) = shape
    pt, pl = max(pt, 0), max(pl, 0)
    out_hw = conv.conv2d_out_hw(h, w, (kh, kw), (sh, sw), (pt, pl), (max(pb, 0), max(pr, 0)), d)
    if min(out_hw) < 1:
        return
    rng = np.random.default_rng(n * 7 + c * 5 + h * 3 + w + sh * 11 + sw)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c // g, kh, kw))
    b = rng.standard_normal(k) if bias else None
    want = R.conv2d_forward(x, wt, b, (sh, sw), (pt, pl), d, g, out_hw)
    dy = rng.standard_normal(want.shape)
    rdx, rdw, _ = R.conv2d_backward(dy, x, wt, (sh, sw), (pt, pl), d, g)
    xs, ws, dys = x.astype(dtype), wt.astype(dtype), dy.astype(dtype)
    old = simd.ROW_BLOCK_COLUMNS
    simd.ROW_BLOCK_COLUMNS = block_columns
    try:
        y = simd.rows_forward(xs, ws, None if b is None else b.astype(dtype), (sh, sw), (pt, pl),
                              d, g, out_hw, np.full((n, k, *out_hw), np.nan, dtype))
        dw = simd.rows_weight_grad(dys, xs, wt.shape, (sh, sw), (pt, pl), d, g)
    finally:
        simd.ROW_BLOCK_COLUMNS = old
    dx = simd.phase_input_grad(dys, ws, (sh, sw), (pt, pl), d, g, x.shape,
                               np.full(x.shape, np.nan, dtype))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, ref in ((y, want), (dw, rdw), (dx, rdx)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("stride,pad", [((2, 2), (1, 1)), ((2, 2), (2, 2)), ((3, 2), (0, 3)),
                                        ((1, 3), (1, 1))])
def test_row_kernels_match_their_numpy_bodies(stride, pad):
    """The compiled row drivers (LLVM-IR register blocks, vector steps of a row pitch) and
    their plain-Python versions (the NumPy bodies, as under NUMBA_DISABLE_JIT) agree; the
    column phases' stride-2 fast paths (even and odd left padding) and the general one are
    all taken."""
    rng = np.random.default_rng(sum(stride) + pad[1])
    x = rng.standard_normal((3, 5, 11, 19)).astype(np.float32)
    wt = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    out_hw = conv.conv2d_out_hw(11, 19, (3, 3), stride, pad, pad)
    geo, blk = simd._rows_args(x.shape, wt.shape, stride, pad, (1, 1), out_hw, x.dtype)
    jitted, python = (np.empty((3, 6, *out_hw), np.float32) for _ in range(2))
    simd._conv_fwd_rows(x, wt, b, True, *geo, 1, *out_hw, jitted, *blk)
    simd._conv_fwd_rows_py(x, wt, b, True, *geo, 1, *out_hw, python, *blk)
    np.testing.assert_allclose(jitted, python, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(python, R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                                        b.astype(np.float64), stride, pad, (1, 1),
                                                        1, out_hw), rtol=1e-5, atol=1e-4)
    dy = rng.standard_normal(jitted.shape).astype(np.float32)
    dw_jit, dw_py = (np.empty((6, 5 * 9), np.float32) for _ in range(2))
    simd._conv_dw_rows(dy, x, *geo, 1, dw_jit, *blk)
    simd._conv_dw_rows_py(dy, x, *geo, 1, dw_py, *blk)
    np.testing.assert_allclose(dw_jit, dw_py, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stride_one_rows_a_vector_wide_take_the_row_kernel(dtype):
    """Stride-1 layers whose rows are exactly one vector wide run a vector per row (the same
    sums as rows_forward, bit for bit), forward and through the input gradient; against the
    reference."""
    vl = simd.lanes(dtype)
    rng = np.random.default_rng(vl)
    x = rng.standard_normal((3, 5, 7, vl)).astype(dtype)
    wt = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = conv.conv2d_forward(x, wt, b, 1, 1)
    np.testing.assert_array_equal(y, simd.rows_forward(x, wt, b, (1, 1), (1, 1), (1, 1), 1,
                                                       (7, vl), np.empty_like(y)))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, R.conv2d_forward(x, wt, b, (1, 1), (1, 1), (1, 1), 1, (7, vl)),
                               rtol=tol, atol=tol * 10)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, _ = conv.conv2d_backward(dy, x, wt, 1, 1)
    rdx, rdw, _ = R.conv2d_backward(dy, x, wt, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(dx, rdx, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dw, rdw, rtol=tol, atol=tol * 10)


def test_rows_layout():
    """ResNet's 3x3 stride-2 layer on 32x32: 16 output rows in a slot of 17 (its 33 padded
    input rows rounded up to the stride), phase rows of 17 columns, one 16-lane vector per row
    of float32; 7x7 stride 2 on 224x224: 112 columns in 7 vectors."""
    assert simd.rows_layout(32, 32, 3, 3, 2, 2, 1, 1, 1, 16, 16, 16) == (17, 17, 1)
    assert simd.rows_layout(224, 224, 7, 7, 2, 2, 3, 1, 1, 112, 112, 16) == (115, 115, 7)
    assert simd.rows_layout(16, 16, 3, 3, 2, 2, 1, 1, 1, 8, 8, 16) == (9, 9, 1)


def test_tap_offsets_reach_each_phase():
    """3x3 stride 2: taps (0, 0), (0, 2), (2, 0), (2, 2) read phase (0, 0) at rows / columns
    0 and 1 past the output, (1, 1) only phase (1, 1); each phase's stretch is the output
    columns plus one row and one column; stride 1 keeps one phase, one row per ki."""
    lq, wp = 128, 9
    offs, span = simd._tap_offsets(3, 3, 2, 2, 1, 1, wp, lq)
    stretch = lq + wp + 1
    assert span == 4 * stretch
    assert list(offs) == [0, stretch, 1,
                          2 * stretch, 3 * stretch, 2 * stretch + 1,
                          wp, stretch + wp, wp + 1]
    offs, span = simd._tap_offsets(3, 3, 1, 1, 2, 1, wp, lq)   # dilation 2 along rows
    assert list(offs) == [0, 1, 2, 2 * wp, 2 * wp + 1, 2 * wp + 2, 4 * wp, 4 * wp + 1, 4 * wp + 2]
    assert span == lq + 4 * wp + 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_strided_kernels_match_their_python_bodies(dtype):
    """Stride (2, 3) with padding and dilation: the compiled phase fill and kernels give the
    NumPy bodies' values (forward and dw), and both the reference's."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 11, 13)).astype(dtype)
    wt = rng.standard_normal((6, 5, 3, 2)).astype(dtype)
    out_hw = conv.conv2d_out_hw(11, 13, (3, 2), (2, 3), (1, 2), (1, 2), (1, 2))
    args = (x, wt, np.zeros(1, dtype), False, 3, 2, 2, 3, 1, 2, 1, 2, 1, *out_hw)
    rows, pitch = simd._plane_py(11, 13, 3, 2, 2, 3, 1, 2, 1, 2, *out_hw)
    nb, qb = simd.block_samples(3, rows * pitch), simd.NV * simd.lanes(dtype)
    jitted = np.empty((3, 6, *out_hw), dtype)
    simd._conv_fwd_simd(*args, jitted, nb, qb)
    python = np.empty_like(jitted)
    simd._conv_fwd_simd_py(*args, python, nb, qb)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(jitted, python, rtol=tol, atol=tol)
    want = R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), None, (2, 3), (1, 2),
                            (1, 2), 1, out_hw)
    np.testing.assert_allclose(python, want, rtol=tol, atol=tol * 10)
    dy = rng.standard_normal(jitted.shape).astype(dtype)
    dw_jit = np.empty((6, 5 * 6), dtype)
    simd._conv_dw_simd(dy, x, 3, 2, 2, 3, 1, 2, 1, 2, 1, dw_jit, nb, simd.lanes(dtype))
    dw_py = np.empty_like(dw_jit)
    simd._conv_dw_simd_py(dy, x, 3, 2, 2, 3, 1, 2, 1, 2, 1, dw_py, nb, simd.lanes(dtype))
    np.testing.assert_allclose(dw_jit, dw_py, rtol=tol, atol=tol * 10)
    want_dw = R.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                                wt.astype(np.float64), (2, 3), (1, 2), (1, 2), 1)[1]
    np.testing.assert_allclose(dw_py.reshape(wt.shape), want_dw, rtol=tol, atol=tol * 10)


@numba.njit
def _split_phases_jit(xf, src, step, m, th, tw, ph, ps):
    simd.split_phases(xf, src, step, m, th, tw, ph, ps)


@numba.njit
def _join_phases_jit(yf, dst, step, m, th, tw, ph, ps):
    simd.join_phases(yf, dst, step, m, th, tw, ph, ps)


@settings(max_examples=60, deadline=None)
@given(th=st.integers(1, 9), tw=st.sampled_from([1, 2, 3, 4, 5, 8, 12, 16, 17]),
       m=st.integers(1, 4), c=st.integers(1, 3), gap=st.integers(0, 5),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_phase_planes_compiled_and_numpy_bodies(th, tw, m, c, gap, dtype):
    """split_phases writes plane ``si``'s phase (a, b) = x[si, ch, a::2, b::2] at
    ``(a*2 + b)*ps + si*th*tw`` and nothing else; join_phases puts the planes back. The
    compiled bodies (shuffle intrinsics for tw 4, 8, 16; element loops else) and the NumPy
    bodies agree bit for bit."""
    rng = np.random.default_rng(th * 100 + tw)
    n = th * tw
    x = rng.standard_normal((m, c, 2 * th, 2 * tw)).astype(dtype)
    ps = m * n + gap
    want = np.full(4 * ps, -7.0, dtype)
    for si in range(m):
        for a in range(2):
            for b in range(2):
                o = (a * 2 + b) * ps + si * n
                want[o:o + n] = x[si, c - 1, a::2, b::2].ravel()
    for split, join in ((_split_phases_jit, _join_phases_jit),
                        (simd.split_phases, simd.join_phases)):
        ph = np.full(4 * ps, -7.0, dtype)
        split(x.ravel(), (c - 1) * 4 * n, c * 4 * n, m, th, tw, ph, ps)
        np.testing.assert_array_equal(ph, want)
        back = np.full_like(x, 3.0)
        join(back.ravel(), (c - 1) * 4 * n, c * 4 * n, m, th, tw, ph, ps)
        np.testing.assert_array_equal(back[:, c - 1], x[:, c - 1])
        assert (back[:, :c - 1] == 3.0).all()
