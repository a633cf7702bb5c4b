"""Winograd F(2x2, 3x3) convolution (``cnncalc/kernels/winograd.py``): the kernels against the
plain-NumPy reference (float64, any size, padding before 0..2 and any padding after), their
float32 rounding, the engine's use of them (shared weight transform, chunked dU) and a float64
centred-difference gradient check of a network whose convolutions take this path."""
from __future__ import annotations

import numpy as np
import pytest
import reference as R
from gradcheck import check_network
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import spec_text as _spec

import cnncalc
from cnncalc.kernels import conv
from cnncalc.kernels import simd
from cnncalc.kernels import winograd as wg


def _case(rng, n, c, k, h, w, dtype=np.float64):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, wt, b


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 5), k=st.integers(1, 5), h=st.integers(1, 9),
       w=st.integers(1, 9), pt=st.integers(0, 2), pl=st.integers(0, 2), pb=st.integers(-2, 2),
       pr=st.integers(-2, 2), bias=st.booleans(), need_dx=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_matches_reference_any_size(n, c, k, h, w, pt, pl, pb, pr, bias, need_dx, seed):
    """Odd and even sizes, partial last tiles, asymmetric padding: forward, dx, dw and db equal
    the reference's to float64 rounding."""
    ho, wo = h + pt + pb - 2, w + pl + pr - 2
    if ho < 1 or wo < 1:
        return
    rng = np.random.default_rng(seed)
    x, wt, b = _case(rng, n, c, k, h, w)
    b = b if bias else None
    assert wg.applies(3, 3, 1, 1, 1, 1, 1, pt, pl, ho, wo)
    y = wg.winograd_forward(x, wt, b, (pt, pl), (ho, wo))
    np.testing.assert_allclose(y, R.conv2d_forward(x, wt, b, (1, 1), (pt, pl), (1, 1), 1,
                                                   (ho, wo)), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = wg.winograd_backward(dy, x, wt, (pt, pl), need_dx, has_bias=bias)
    rdx, rdw, rdb = R.conv2d_backward(dy, x, wt, (1, 1), (pt, pl), (1, 1), 1)
    np.testing.assert_allclose(dw, rdw, rtol=1e-10, atol=1e-12)
    if need_dx:
        np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    else:
        assert dx is None
    if bias:
        np.testing.assert_allclose(db, rdb, rtol=1e-12)
    else:
        assert db is None


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 5), k=st.integers(1, 5), th=st.integers(1, 6),
       tw=st.integers(1, 6), bias=st.booleans(), need_dx=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_lanes_matches_reference(n, c, k, th, tw, bias, need_dx, seed):
    """The tiles-in-lanes layout ("same" layers on even planes, of any size: the rule that
    takes it for planes from 8x8 is the caller's): forward, dx and dU (through dW) equal the
    reference's to float64 rounding, in blocks of samples that end early."""
    h, w = 2 * th, 2 * tw
    rng = np.random.default_rng(seed)
    x, wt, b = _case(rng, n, c, k, h, w)
    b = b if bias else None
    u = wg.weight_transform(wt)
    y = wg.lanes_forward(x, u, b, np.empty((n, k, h, w)))
    np.testing.assert_allclose(y, R.conv2d_forward(x, wt, b, (1, 1), (1, 1), (1, 1), 1,
                                                   (h, w)), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, du = wg.lanes_backward_du(dy, x, u, need_dx)
    rdx, rdw, _ = R.conv2d_backward(dy, x, wt, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(wg.weight_grad(du), rdw, rtol=1e-10, atol=1e-12)
    if need_dx:
        np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    else:
        assert dx is None


def test_lanes_blocks_and_dx_weights(monkeypatch):
    """Blocks of one sample give the whole batch's values; the input gradient's weights are
    U^T, contiguous."""
    rng = np.random.default_rng(7)
    x, wt, _ = _case(rng, 3, 6, 5, 8, 16)     # 32 tiles: a float64 register block's columns
    u = wg.weight_transform(wt)
    ut = wg.lanes_dx_weights(u)
    assert ut.flags.c_contiguous
    np.testing.assert_array_equal(ut, u.transpose(0, 2, 1))
    whole = wg.lanes_forward(x, u, None, np.empty((3, 5, 8, 16)))
    dy = rng.standard_normal(whole.shape)
    dx, du = wg.lanes_backward_du(dy, x, u)
    monkeypatch.setattr(wg, "LANES_BLOCK_BYTES", 1)
    assert wg._lanes_block(3, 6, 5, 32, 8) == 1
    # small planes: at least a register block's columns of tiles (where the batch has them)
    cols = simd.NV * simd.lanes(np.float32)
    assert wg._lanes_block(64, 256, 256, 16, 4) == -(-cols // 16)
    assert wg._lanes_block(2, 256, 256, 16, 4) == 2
    np.testing.assert_allclose(wg.lanes_forward(x, u, None, np.empty_like(whole)), whole,
                               rtol=1e-13, atol=1e-14)
    dx1, du1 = wg.lanes_backward_du(dy, x, u)
    np.testing.assert_allclose(dx1, dx, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(du1, du, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n,th,tw", [(5, 4, 4), (3, 8, 8), (4, 2, 8)])
def test_lanes_blocks_of_several_samples(monkeypatch, n, th, tw):
    """The transforms run over a block's samples side by side: blocks of two samples (the last
    one short) give the reference's values, so no tile row reads a neighbouring sample's rows
    (the zero padding between them) in the forward, dx or dU."""
    h, w = 2 * th, 2 * tw
    rng = np.random.default_rng(11)
    x, wt, b = _case(rng, n, 3, 4, h, w)
    monkeypatch.setattr(wg, "_lanes_block", lambda *a: 2)
    u = wg.weight_transform(wt)
    y = wg.lanes_forward(x, u, b, np.empty((n, 4, h, w)))
    np.testing.assert_allclose(y, R.conv2d_forward(x, wt, b, (1, 1), (1, 1), (1, 1), 1,
                                                   (h, w)), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, du = wg.lanes_backward_du(dy, x, u)
    rdx, rdw, _ = R.conv2d_backward(dy, x, wt, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wg.weight_grad(du), rdw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("th,tw", [(2, 3), (2, 4), (3, 8), (1, 16)])
def test_lanes_numpy_bodies_match_jit(dtype, th, tw):
    """The transforms' plain-Python bodies (as under NUMBA_DISABLE_JIT) give the compiled
    kernels' values, with the phase planes' element loops (``tw`` 3) and shuffles."""
    rng = np.random.default_rng(8)
    n, c, k = 2, 3, 4
    x = rng.standard_normal((n, c, 2 * th, 2 * tw)).astype(dtype)
    dy = rng.standard_normal((n, k, 2 * th, 2 * tw)).astype(dtype)
    xb = rng.standard_normal((n, k, 2 * th, 2 * tw)).astype(dtype)
    tpp, ld = th * tw, n * th * tw
    ph = np.empty(4 * n * tpp, dtype)       # the block's n samples side by side
    rt = np.empty(8 * (n * tpp + 2 * tw), dtype)
    # mean, inv_std, gamma, beta, scale, mb, mg
    gbn = np.stack([rng.standard_normal(k), rng.uniform(0.5, 2, k), rng.uniform(0.5, 2, k),
                    rng.standard_normal(k), rng.uniform(0.5, 2, k), rng.standard_normal(k),
                    rng.standard_normal(k)])
    outs = []
    for fns in ((wg._lanes_input, wg._lanes_output_grad, wg._lanes_output,
                 wg._lanes_input_grad),
                (wg._lanes_input_py, wg._lanes_output_grad_py, wg._lanes_output_py,
                 wg._lanes_input_grad_py)):
        v = np.zeros(16 * c * ld, dtype)
        dm = np.zeros(16 * k * ld, dtype)
        y = np.empty((n, k, 2 * th, 2 * tw), dtype)
        dx = np.empty_like(x)
        q = np.empty(8 * n * tpp, dtype)
        fns[0](x, 0, n, th, tw, v, ld, ph, rt, np.zeros((4, 0)))
        fns[1](dy, 0, n, th, tw, dm, ld, ph, np.zeros((7, 0)), dy, False)
        fns[2](dm, ld, np.arange(k, dtype=dtype), True, 0, n, th, tw, y, q, ph)
        fns[3](v, ld, 0, n, th, tw, dx, q, ph)
        # the output gradient through a batch norm's input-gradient pass (with and without
        # the ReLU's mask, recomputed from the batch norm's input xb)
        dmb = [np.zeros(16 * k * ld, dtype) for _ in range(2)]
        for relu, out in zip((True, False), dmb):
            fns[1](dy, 0, n, th, tw, out, ld, np.empty(8 * n * tpp, dtype), gbn, xb, relu)
        outs.append((v, dm, y, dx, *dmb))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("c,k,hw", [(16, 16, 32), (32, 32, 16), (16, 64, 12)])
def test_lanes_float32_rounding(c, k, hw):
    """float32 through the lanes layout: within ~1e-6 of the largest value (forward, dx, dW),
    against the float64 implicit GEMM."""
    rng = np.random.default_rng(9)
    x, wt, b = _case(rng, 3, c, k, hw, hw)
    y64 = conv.conv2d_forward(x, wt, b, 1, 1, algo="implicit")
    dy = rng.standard_normal(y64.shape)
    rdx, rdw, _ = conv.conv2d_backward(dy, x, wt, 1, 1, algo="implicit")
    f32 = [a.astype(np.float32) for a in (x, wt, b, dy)]
    assert conv.uses_winograd(wt.shape, 1, 1, 1, 1, (hw, hw), in_hw=(hw, hw))
    y = conv.conv2d_forward(*f32[:3], 1, 1)
    dx, dw, _ = conv.conv2d_backward(f32[3], *f32[:2], 1, 1)
    for got, ref in ((y, y64), (dx, rdx), (dw, rdw)):
        assert got.dtype == np.float32
        assert np.abs(got - ref).max() <= 5e-6 * np.abs(ref).max()


def test_weight_transforms_are_adjoint():
    """<G g G^T, D> = <g, G^T D G> for every tile: the weight gradient is the transpose of the
    weight transform (so dW is exact, not just close)."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4, 3, 3, 3))
    d = rng.standard_normal((16, 4, 3))
    lhs = np.sum(wg.weight_transform(g) * d)
    rhs = np.sum(g * wg.weight_grad(d))
    assert lhs == pytest.approx(rhs, rel=1e-13)
    G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    np.testing.assert_allclose(wg.weight_transform(g).reshape(4, 4, 4, 3).transpose(2, 3, 0, 1),
                               G @ g @ G.T, rtol=1e-15)


def test_split_weight_transform_equals_whole():
    """The engine fills U and dW in output-channel ranges on its threads."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((7, 5, 3, 3))
    u = np.empty((16, 7, 5))
    wg.weight_transform(w, u, 0, 3)
    wg.weight_transform(w, u, 3, 7)
    np.testing.assert_array_equal(u, wg.weight_transform(w))
    dw = np.empty_like(w)
    wg.weight_grad(u, dw, 0, 4)
    wg.weight_grad(u, dw, 4, 7)
    np.testing.assert_array_equal(dw, wg.weight_grad(u))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 9), c=st.integers(1, 40), parts=st.integers(1, 5),
       dtype=st.sampled_from([np.float32, np.float64]), cut=st.floats(0, 1),
       seed=st.integers(0, 2 ** 32 - 1))
def test_weight_transform_with_u_t_and_the_sum_of_parts(k, c, parts, dtype, cut, seed):
    """U^T made with U (``out_t``) is ``lanes_dx_weights(U)``, also filled in two output-channel
    ranges (as the engine's threads do), and ``sum_parts`` adds the chunks' dU in chunk order,
    bit for bit."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    k0 = int(cut * k)
    u, ut = np.empty((16, k, c), dtype), np.full((16, c, k), np.nan, dtype)
    wg.weight_transform(w, u, 0, k0, ut)
    wg.weight_transform(w, u, k0, k, ut)
    np.testing.assert_array_equal(u, wg.weight_transform(w))
    np.testing.assert_array_equal(ut, wg.lanes_dx_weights(u))
    p = (rng.standard_normal((parts, 16, k, c)) * 10.0 ** rng.integers(-3, 4, (parts, 1, 1, 1))
         ).astype(dtype)
    want_du = p[0].copy()
    for q in p[1:]:
        want_du += q
    du = np.full((16, k, c), np.nan, dtype)
    assert wg.sum_parts(p, du) is du
    np.testing.assert_array_equal(du, want_du)
    du[...] = np.nan
    wg.sum_parts(p, du, 0, k0)
    wg.sum_parts(p, du, k0, k)
    np.testing.assert_array_equal(du, want_du)


@pytest.mark.parametrize("shape", [(2, 32, 8, 8, 64), (3, 64, 5, 6, 32), (2, 48, 2, 2, 40)])
def test_float32_rounding(shape):
    """float32 Winograd stays within a few ulps of the layer's scale (F(2x2, 3x3)'s transforms
    are small: errors ~1e-6 of the largest output, like a direct sum). Reference: the float64
    implicit GEMM (itself checked against the NumPy reference in test_kernels.py; the
    reference's Python loops take seconds at these channel counts)."""
    n, c, h, w, k = shape
    rng = np.random.default_rng(2)
    x, wt, b = _case(rng, n, c, k, h, w)
    y64 = conv.conv2d_forward(x, wt, b, 1, 1, algo="implicit")
    dy = rng.standard_normal(y64.shape)
    rdx, rdw, _ = conv.conv2d_backward(dy, x, wt, 1, 1, algo="implicit")
    f32 = [a.astype(np.float32) for a in (x, wt, b, dy)]
    y = wg.winograd_forward(f32[0], f32[1], f32[2], (1, 1), (h, w))
    dx, dw, _ = wg.winograd_backward(f32[3], f32[0], f32[1], (1, 1))
    for got, ref in ((y, y64), (dx, rdx), (dw, rdw)):
        assert got.dtype == np.float32
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_conv_wrappers_route_by_channels_and_dtype():
    """conv2d_forward/backward take Winograd by "auto" at >= WINOGRAD_MIN_CHANNELS channels
    (one side >= WINOGRAD_MIN_WIDE_CHANNELS) in float32 (same bits as calling it), float64
    keeps the direct sum (the vector-register kernel) unless forced."""
    rng = np.random.default_rng(3)
    x, wt, b = _case(rng, 2, 32, 64, 6, 6)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, wt, b))
    np.testing.assert_array_equal(conv.conv2d_forward(x32, w32, b32, 1, 1),
                                  wg.winograd_forward(x32, w32, b32, (1, 1), (6, 6)))
    assert conv.uses_winograd(wt.shape, 1, 1, 1, 1, (6, 6), dtype="float32", in_hw=(6, 6))
    assert not conv.uses_winograd(wt.shape, 1, 1, 1, 1, (6, 6), dtype="float64", in_hw=(6, 6))
    y_auto = conv.conv2d_forward(x, wt, b, 1, 1)
    y_impl = conv.conv2d_forward(x, wt, b, 1, 1, algo="implicit")
    y_wino = conv.conv2d_forward(x, wt, b, 1, 1, algo="winograd")
    np.testing.assert_array_equal(y_auto, conv.conv2d_forward(x, wt, b, 1, 1, algo="simd"))
    assert not np.array_equal(y_impl, y_wino)   # another summation order ...
    np.testing.assert_allclose(y_impl, y_wino, rtol=1e-10, atol=1e-12)   # ... same values


# 10x10 planes run in batch chunks (tiles in the lanes), 5x5 and 3x3 ones by position; the first conv (2 input
# channels) stays on the direct vector-register kernel. (conv -> relu -> maxpool would run fused instead:
# plan.ConvReluPoolOp, a kernel of its own.)
WINO_NET = _spec("10x10x2", [
    "conv: {filters: 32, size: 3, pad: 1}", "batchnorm", "relu",
    "conv: {filters: 64, size: 3, pad: 1}", "batchnorm", "relu", "maxpool: {size: 2}",
    "conv: {filters: 33, size: 3, pad: 1}", "relu",
    "conv: {filters: 64, size: 3, pad: 0, bias: false}", "global_avgpool", "flatten",
    "fc: {units: 3}"], "wino")


def test_network_takes_winograd_and_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(conv, "WINOGRAD_AUTO_DTYPES", ("float32", "float64"))
    net = cnncalc.Network(WINO_NET, dtype="float64", seed=0, parallel=False)
    convs = [st.op for st in net.steps if st.op.kind == "conv"]
    assert [op.winograd for op in convs] == [False, True, True, True]
    assert [op.lanes for op in convs] == [False, True, False, False]
    assert [op.by_position is not None for op in convs] == [False, False, True, True]
    x = np.random.default_rng(1).standard_normal((2, 2, 10, 10))
    check_network(net, x)


def test_network_threads_match_one_thread():
    """Batch chunks (dU partials summed in chunk order) and positions (one GEMM per position):
    2 threads equal 1 thread to rounding and repeat bit for bit."""
    x = np.random.default_rng(4).standard_normal((16, 2, 10, 10)).astype(np.float32)
    outs = []
    for threads in (1, 2, 2):
        net = cnncalc.Network(WINO_NET, dtype="float32", seed=0, threads=threads)
        y = net.forward(x)
        dx = net.backward(np.ones_like(y))
        outs.append((y, dx, net.flat_grads.copy()))
    for a, b in zip(outs[1], outs[2]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize("chunks", [[(0, 5)], [(0, 1), (1, 3), (3, 5)]])
@pytest.mark.parametrize("pads,hw", [((1, 1), (5, 5)), ((0, 2), (4, 7)), ((2, 0), (3, 3))])
def test_by_position_matches_reference(chunks, pads, hw):
    """The three-phase mode, any chunking of the batch, odd planes, asymmetric padding."""
    rng = np.random.default_rng(5)
    x, wt, b = _case(rng, 5, 4, 6, *hw)
    out_hw = (hw[0] + 2 * pads[0] - 2, hw[1] + 2 * pads[1] - 2)
    bp = wg.ByPosition(pads, out_hw)
    u = wg.weight_transform(wt)

    def run(fn, n):
        return [fn(i) for i in range(n)]

    y = bp.forward(x, wg.forward_weights(u), b, np.empty((5, 6, *out_hw)), run, chunks)
    np.testing.assert_allclose(y, R.conv2d_forward(x, wt, b, (1, 1), pads, (1, 1), 1, out_hw),
                               rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    du = np.empty_like(u)
    dx = np.empty_like(x)
    bp.backward(dy, x, u, du, dx, run, chunks)
    rdx, rdw, _ = R.conv2d_backward(dy, x, wt, (1, 1), pads, (1, 1), 1)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wg.weight_grad(du), rdw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channels", [wg.FORWARD_UT_MAX_CHANNELS, wg.FORWARD_UT_MAX_CHANNELS + 1])
def test_forward_weights_are_u_transposed(channels):
    """A contiguous copy up to the threshold, the view past it; the same values either way,
    and the forward gives the same convolution from both."""
    rng = np.random.default_rng(6)
    u = rng.standard_normal((wg.TILES, 3, channels)).astype(np.float32)
    ut = wg.forward_weights(u)
    np.testing.assert_array_equal(ut, u.transpose(0, 2, 1))
    assert ut.flags.c_contiguous == (channels <= wg.FORWARD_UT_MAX_CHANNELS)
    out = np.empty((wg.TILES, channels, 3), np.float32)
    got = wg.forward_weights(u, out)
    np.testing.assert_array_equal(got, ut)
    assert (got is out) == (channels <= wg.FORWARD_UT_MAX_CHANNELS)
    x, wt, _ = _case(rng, 2, 5, 4, 6, 6)
    u = wg.weight_transform(wt)
    y_view = wg.winograd_forward(x, wt, None, (1, 1), (6, 6), ut=u.transpose(0, 2, 1))
    y_copy = wg.winograd_forward(x, wt, None, (1, 1), (6, 6), ut=wg.forward_weights(u))
    np.testing.assert_allclose(y_copy, y_view, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_copy, R.conv2d_forward(x, wt, None, (1, 1), (1, 1), (1, 1), 1,
                                                        (6, 6)), rtol=1e-10, atol=1e-12)


def test_network_parallel_runs_in_order_and_serially_on_the_numpy_tier():
    from cnncalc.engine.numpy_tier import NUMPY_TIER

    net = cnncalc.Network(WINO_NET, dtype="float32", seed=0, threads=2)
    assert net.parallel(lambda i: i * i, 5) == [0, 1, 4, 9, 16]
    import threading

    main = threading.get_ident()
    net.use_tier(NUMPY_TIER)
    assert net.parallel(lambda i: threading.get_ident() == main, 4) == [True] * 4
    net.use_tier(None)
