"""Every kernel against its naive reference (tests/reference.py), float64 and float32.

float64 must agree to rtol 1e-10, float32 to rtol 1e-5; both relative to the largest reference
magnitude as an absolute floor (entries near zero after cancellation carry the round-off of the
whole sum). float32 kernels are compared with the float64 reference evaluated on the same
(float32-representable) inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import reference as R

from cnncalc.kernels import activation as act
from cnncalc.kernels import blas, conv, dropout, linear, loss, norm, pool, simd

RTOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


def close(got, ref, dtype):
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == np.dtype(dtype), f"dtype {got.dtype}, expected {np.dtype(dtype)}"
    rtol = RTOL[dtype]
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=rtol, atol=rtol * scale)


def data(shape, dtype, rng, scale=1.0):
    """Random data exactly representable in ``dtype``; returned as (dtype copy, float64 copy)."""
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return a, a.astype(np.float64)


# ------------------------------------------------------------------------------------ conv
CONV_CASES = [
    # N, C, H, W, K, kh, kw, stride, pad_before, dilation, groups, pad_after
    pytest.param(2, 3, 8, 7, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, (1, 1), id="3x3-same"),
    pytest.param(3, 2, 9, 8, 5, 3, 3, (2, 2), (1, 1), (1, 1), 1, (1, 1), id="stride2"),
    pytest.param(2, 3, 8, 9, 4, 3, 4, (2, 1), (1, 2), (1, 1), 1, (0, 1), id="asym-pad"),
    pytest.param(2, 2, 9, 9, 3, 3, 3, (1, 1), (2, 1), (2, 2), 1, (2, 1), id="dilation2"),
    pytest.param(2, 4, 7, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2, (1, 1), id="groups2"),
    pytest.param(3, 4, 7, 6, 4, 3, 3, (2, 2), (1, 1), (1, 1), 4, (1, 1), id="depthwise"),
    pytest.param(2, 3, 6, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1), 3, (1, 1), id="depthwise-x2"),
    pytest.param(2, 5, 6, 5, 4, 1, 1, (1, 1), (0, 0), (1, 1), 1, (0, 0), id="1x1"),
    pytest.param(2, 4, 6, 6, 4, 1, 1, (2, 2), (0, 0), (1, 1), 2, (0, 0), id="1x1-stride2-g2"),
    pytest.param(2, 3, 13, 13, 4, 5, 5, (4, 4), (0, 0), (1, 1), 1, (0, 0), id="alexnet-like"),
    pytest.param(1, 2, 5, 5, 3, 3, 3, (1, 1), (-1 + 1, 0), (1, 1), 1, (0, 0), id="valid"),
]


CONV_CASES_IG = [
    # stride-1 shapes that only the implicit-GEMM path (algo="implicit") treats specially
    pytest.param(2, 3, 8, 9, 4, 3, 4, (1, 1), (1, 2), (1, 1), 1, (0, 1), id="asym-pad-s1"),
    pytest.param(2, 2, 7, 7, 3, 3, 3, (1, 1), (-1, 0), (1, 1), 1, (0, 0), id="crop"),
    pytest.param(2, 2, 6, 6, 3, 1, 1, (1, 1), (1, 1), (1, 1), 1, (0, 1), id="1x1-padded"),
    pytest.param(2, 4, 9, 8, 4, 2, 3, (1, 1), (0, 2), (2, 1), 2, (1, 0), id="dil-groups-odd"),
    pytest.param(3, 18, 12, 11, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1, (1, 1), id="wide-c"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo", ["im2col", "implicit", "simd", "rows"])
@pytest.mark.parametrize("n,c,h,w,k,kh,kw,s,p,d,g,pa", CONV_CASES + CONV_CASES_IG)
def test_conv(n, c, h, w, k, kh, kw, s, p, d, g, pa, algo, dtype):
    rng = np.random.default_rng(0)
    x, x64 = data((n, c, h, w), dtype, rng)
    wt, w64 = data((k, c // g, kh, kw), dtype, rng)
    b, b64 = data((k,), dtype, rng)
    out_hw = conv.conv2d_out_hw(h, w, (kh, kw), s, p, pa, d)
    y = conv.conv2d_forward(x, wt, b, s, p, d, g, out_hw, algo=algo)
    close(y, R.conv2d_forward(x64, w64, b64, s, p, d, g, out_hw), dtype)
    dy, dy64 = data(y.shape, dtype, rng)
    dx, dw, db = conv.conv2d_backward(dy, x, wt, s, p, d, g, algo=algo)
    rdx, rdw, rdb = R.conv2d_backward(dy64, x64, w64, s, p, d, g)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)
    close(db, rdb, dtype)
    dx2, dw2, db2 = conv.conv2d_backward(dy, x, wt, s, p, d, g, need_dx=False, has_bias=False,
                                         algo=algo)
    assert dx2 is None and db2 is None
    close(dw2, rdw, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_implicit_column_tiles(monkeypatch, dtype):
    """The implicit GEMM's output-column tiles (several, the last one shorter, groups and a
    dilation) give the reference's forward and backward."""
    monkeypatch.setattr(conv, "IG_TILE_BYTES", 4 * 7 * 4)   # 7 columns for 4 channels
    monkeypatch.setattr(conv, "IG_TILE_MIN", 1)
    assert conv._ig_tile(4, 2) == 7
    rng = np.random.default_rng(3)
    x, x64 = data((2, 4, 7, 6), dtype, rng)
    wt, w64 = data((8, 2, 3, 2), dtype, rng)
    out_hw = conv.conv2d_out_hw(7, 6, (3, 2), (1, 1), (1, 1), (1, 1), (1, 2))
    y = conv.conv2d_forward(x, wt, None, (1, 1), (1, 1), (1, 2), 2, out_hw, algo="implicit")
    close(y, R.conv2d_forward(x64, w64, None, (1, 1), (1, 1), (1, 2), 2, out_hw), dtype)
    dy, dy64 = data(y.shape, dtype, rng)
    dx, dw, _ = conv.conv2d_backward(dy, x, wt, (1, 1), (1, 1), (1, 2), 2, algo="implicit")
    rdx, rdw, _ = R.conv2d_backward(dy64, x64, w64, (1, 1), (1, 1), (1, 2), 2)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_conv_im2col_weight_gradient_blocks(monkeypatch, dtype, stride):
    """The im2col weight gradient with several samples per GEMM (blocks of 2 of 5 samples,
    the last one shorter; groups) gives the reference's dW."""
    rng = np.random.default_rng(4)
    x, x64 = data((5, 4, 6, 5), dtype, rng)
    wt, w64 = data((6, 2, 3, 3), dtype, rng)
    out_hw = conv.conv2d_out_hw(6, 5, (3, 3), stride, (1, 1), (1, 1))
    p = out_hw[0] * out_hw[1]
    monkeypatch.setattr(conv, "DW_COLS_BYTES", 2 * 18 * p * x.itemsize)
    assert conv._dw_samples(5, 18, p, x.itemsize) == 2
    y = conv.conv2d_forward(x, wt, None, stride, (1, 1), (1, 1), 2, out_hw, algo="im2col")
    dy, dy64 = data(y.shape, dtype, rng)
    _, dw, _ = conv.conv2d_backward(dy, x, wt, stride, (1, 1), (1, 1), 2, need_dx=False,
                                    has_bias=False, algo="im2col")
    close(dw, R.conv2d_backward(dy64, x64, w64, stride, (1, 1), (1, 1), 2)[1], dtype)


def test_conv_algo_choice_and_errors():
    assert conv._use_implicit(None, 1, 1, False, 576, 3136)        # VGG 3x3 layer
    assert not conv._use_implicit(None, 4, 4, False, 363, 3025)    # AlexNet conv1: stride 4
    assert not conv._use_implicit(None, 1, 1, False, 4608, 49)     # 512ch 7x7: im2col
    assert conv._use_implicit(None, 1, 1, False, 1152, 64)         # 128ch 8x8
    assert not conv._use_implicit(None, 1, 1, False, 2304, 64)     # 256ch 8x8: im2col
    assert not conv._use_implicit("implicit", 2, 2, False, 9, 100)  # falls back
    assert not conv._use_implicit("implicit", 1, 1, True, 9, 100)   # 1x1 direct path
    # Winograd F(2x2, 3x3): 3x3 / stride 1 / dilation 1 / one group, for the forward and the
    # backward alike. "Same" layers on even planes from 8x8 (the lanes layout) from
    # WINOGRAD_LANES_MIN_CHANNELS channels on both sides ...
    def wino(k, c, hw, pad=1, out_hw=None, **kw):
        return conv.uses_winograd((k, c, 3, 3), 1, pad, 1, 1, out_hw or hw, in_hw=hw, **kw)

    assert conv.WINOGRAD_LANES_MIN_CHANNELS == 16
    assert wino(16, 16, (32, 32)) and wino(32, 32, (16, 16)) and wino(16, 64, (16, 16))
    assert wino(16, 16, (8, 8)) and wino(16, 16, (16, 4))      # any even plane of >= 64
    assert not wino(16, 8, (32, 32)) and not wino(8, 16, (32, 32))
    # ... any other case from WINOGRAD_MIN_CHANNELS on both sides and
    # WINOGRAD_MIN_WIDE_CHANNELS on one
    assert wino(64, 32, (6, 6)) and wino(32, 64, (4, 4))          # small planes: channels last
    assert not wino(32, 32, (6, 6)) and not wino(16, 16, (4, 4))
    assert wino(64, 32, (15, 15)) and not wino(32, 32, (15, 15))  # odd plane
    assert wino(64, 64, (16, 16), pad=0, out_hw=(14, 14))         # no padding
    assert not wino(32, 32, (16, 16), pad=0, out_hw=(14, 14))
    assert not wino(64, 64, (16, 16), dtype="float64")
    assert wino(16, 8, (16, 16), algo="winograd") and wino(3, 3, (8, 8), algo="winograd")
    assert not conv.uses_winograd((64, 64, 3, 3), 2, 1, 1, 1, (8, 8), in_hw=(8, 8))        # stride 2
    assert not conv.uses_winograd((64, 64, 3, 3), 1, 2, 2, 1, (16, 16), in_hw=(16, 16))      # dilation 2
    assert not conv.uses_winograd((64, 32, 3, 3), 1, 1, 1, 2, (16, 16), in_hw=(16, 16))      # groups
    assert not conv.uses_winograd((64, 64, 5, 5), 1, 2, 1, 1, (16, 16), in_hw=(16, 16))      # 5x5
    assert not conv.uses_winograd((64, 64, 3, 3), 1, 1, 1, 1, (16, 16), algo="implicit", in_hw=(16, 16))
    # the direct vector-register kernels: every stride-1 layer Winograd does not take; strided
    # layers through the phase planes (forced by "simd", by "auto" for kernels larger than
    # 1x1), with a vector per output row instead (forced by "rows", by "auto" where an output
    # row is exactly one vector)
    sp = conv.simd_path
    assert sp(3, 1) == sp(5, (1, 1), 2, "simd") == sp(3, 1, algo="rows") == "stride1"
    assert sp(11, 4, out_w=55) == sp(7, 2, out_w=112) == "phases"   # AlexNet conv1, 7x7 stem
    vl = simd.lanes(np.float32)            # the host's vector (16 with AVX-512, else 8)
    assert sp(3, 2, out_w=vl) == sp(3, 2, out_w=vl // 2, dtype="float64") == "rows"
    assert sp(3, 2, out_w=vl + 1) == sp(3, 2, out_w=vl // 2) == sp(3, 2, out_w=7) == "phases"
    assert sp(1, 2, out_w=16) is None                                 # 1x1: im2col's GEMM
    assert sp(3, 2, algo="simd") == sp(1, (1, 2), algo="simd") == "phases"
    assert sp(1, 2, algo="rows") == sp(3, 2, out_w=3, algo="rows") == "rows"
    assert sp(3, 1, algo="implicit") is None and sp(3, 2, out_w=16, algo="im2col") is None
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="algo"):
        conv.conv2d_forward(x, np.zeros((1, 1, 3, 3)), None, algo="fft")
    with pytest.raises(ValueError, match="algo"):
        conv.simd_path(3, 1, algo="fft")


def test_conv_split_batch_threads_matches_whole_batch():
    """The engine's data-parallel use: serial kernels on batch halves in two Python threads
    (they release the GIL), dw/db summed, equals one call on the whole batch."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 16, 10, 9)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    dy = rng.standard_normal((6, 8, 10, 9)).astype(np.float32)
    y = conv.conv2d_forward(x, w, b, 1, 1, 1, 1, (10, 9))
    dx, dw, db = conv.conv2d_backward(dy, x, w, 1, 1, 1, 1)

    def half(i):
        sl = slice(3 * i, 3 * i + 3)
        yh = conv.conv2d_forward(x[sl], w, b, 1, 1, 1, 1, (10, 9))
        return (yh,) + conv.conv2d_backward(dy[sl], x[sl], w, 1, 1, 1, 1)

    with ThreadPoolExecutor(2) as ex:
        (y0, dx0, dw0, db0), (y1, dx1, dw1, db1) = ex.map(half, [0, 1])
    close(np.concatenate([y0, y1]), y, np.float32)
    close(np.concatenate([dx0, dx1]), dx, np.float32)
    close(dw0 + dw1, dw, np.float32)
    close(db0 + db1, db, np.float32)


def test_gemm_helper_python_fallback():
    """blas._gemm's Python body (what runs under NUMBA_DISABLE_JIT) against numpy."""
    rng = np.random.default_rng(4)
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal(60)
            b = rng.standard_normal(80)
            c = rng.standard_normal(40)
            c0 = c.copy()
            # A: 3x4 at offset 2 with lda 6; B: 4x5 at offset 1 with ldb 7; C: 3x5 at 4, ldc 8
            am = a[2:2 + 6 * 4].reshape(4, 6)[:, :3] if ta else a[2:2 + 6 * 3].reshape(3, 6)[:, :4]
            bm = b[1:1 + 7 * 5].reshape(5, 7)[:, :4] if tb else b[1:1 + 7 * 4].reshape(4, 7)[:, :5]
            ref = (am.T if ta else am) @ (bm.T if tb else bm) * 2.0 + 0.5 * c0[4:4 + 24].reshape(3, 8)[:, :5]
            blas._gemm(ta, tb, 3, 5, 4, 2.0, a, 2, 6, b, 1, 7, 0.5, c, 4, 8)
            np.testing.assert_allclose(c[4:4 + 24].reshape(3, 8)[:, :5], ref, rtol=1e-12)
            np.testing.assert_array_equal(c[:4], c0[:4])


def test_conv_no_bias_and_out_buffer():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    out = np.full((2, 4, 3, 3), np.nan)
    y = conv.conv2d_forward(x, w, None, (1, 1), (0, 0), (1, 1), 1, (3, 3), out=out)
    assert y is out
    close(y, R.conv2d_forward(x, w, None, (1, 1), (0, 0), (1, 1), 1, (3, 3)), np.float64)


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


if given is not None:
    @st.composite
    def conv_shapes(draw):
        g = draw(st.sampled_from([1, 1, 2]))
        c = g * draw(st.integers(1, 3))
        k = g * draw(st.integers(1, 3))
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        p = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
        pa = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
        h = draw(st.integers(d[0] * (kh - 1) + 1, 9))
        w = draw(st.integers(d[1] * (kw - 1) + 1, 9))
        n = draw(st.integers(1, 3))
        return n, c, h, w, k, kh, kw, s, p, d, g, pa

    @settings(max_examples=40, deadline=None)
    @given(conv_shapes(), st.sampled_from(["im2col", "implicit", "simd", "rows"]))
    def test_conv_forward_property(shape, algo):
        n, c, h, w, k, kh, kw, s, p, d, g, pa = shape
        rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
        x = rng.standard_normal((n, c, h, w))
        wt = rng.standard_normal((k, c // g, kh, kw))
        b = rng.standard_normal(k)
        out_hw = conv.conv2d_out_hw(h, w, (kh, kw), s, p, pa, d)
        y = conv.conv2d_forward(x, wt, b, s, p, d, g, out_hw, algo=algo)
        close(y, R.conv2d_forward(x, wt, b, s, p, d, g, out_hw), np.float64)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = conv.conv2d_backward(dy, x, wt, s, p, d, g, algo=algo)
        rdx, rdw, rdb = R.conv2d_backward(dy, x, wt, s, p, d, g)
        close(dx, rdx, np.float64)
        close(dw, rdw, np.float64)


# ------------------------------------------------------------------------------------ pools
POOL_CASES = [
    # k, stride, pad, out_hw (None = floor), dilation
    pytest.param((2, 2), (2, 2), (0, 0), None, (1, 1), id="2x2s2"),
    pytest.param((3, 3), (2, 2), (0, 0), (4, 3), (1, 1), id="3x3s2-ceil"),
    pytest.param((3, 3), (2, 2), (1, 1), (5, 4), (1, 1), id="3x3s2p1-ceil"),
    pytest.param((3, 2), (1, 2), (1, 0), None, (1, 1), id="asym"),
    pytest.param((2, 3), (2, 1), (1, 1), None, (2, 1), id="dilated"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,out_hw,d", POOL_CASES)
def test_maxpool(k, s, p, out_hw, d, dtype):
    rng = np.random.default_rng(2)
    x, x64 = data((2, 3, 9, 7), dtype, rng)
    if out_hw is None:
        out_hw = ((9 + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
                  (7 + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1)
    y, am = pool.maxpool2d_forward(x, k, s, p, out_hw, d)
    ry, ram = R.maxpool2d_forward(x64, k, s, p, out_hw, d)
    close(y, ry, dtype)
    assert am.dtype == np.int32
    np.testing.assert_array_equal(am, ram)
    dy, dy64 = data(y.shape, dtype, rng)
    close(pool.maxpool2d_backward(dy, am, x.shape),
          R.maxpool2d_backward(dy64, ram, x.shape), dtype)


def test_maxpool_ties_first_and_padding_ignored():
    x = -np.ones((1, 1, 2, 2))   # all negative: a zero pad would win if padding were not ignored
    y, am = pool.maxpool2d_forward(x, (2, 2), (1, 1), (1, 1), (3, 3))
    assert (y == -1).all()
    assert am[0, 0, 1, 1] == 0   # first of the four tied maxima
    assert am[0, 0, 2, 2] == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("k,s,p,out_hw,pa", [
    ((2, 2), (2, 2), (0, 0), None, None),
    ((3, 3), (2, 2), (1, 1), (5, 4), None),     # ceil mode: last windows run past the padding
    ((3, 3), (2, 2), (0, 0), (4, 3), None),
    ((3, 2), (1, 2), (1, 0), (9, 3), (1, 0)),
    ((3, 3), (2, 2), (0, 1), (4, 4), (1, 1)),   # asymmetric padding (pad_after given)
])
def test_avgpool(k, s, p, out_hw, pa, include, dtype):
    rng = np.random.default_rng(3)
    x, x64 = data((2, 3, 9, 7), dtype, rng)
    pa_ = p if pa is None else pa
    if out_hw is None:
        out_hw = ((9 + p[0] + pa_[0] - k[0]) // s[0] + 1, (7 + p[1] + pa_[1] - k[1]) // s[1] + 1)
    y = pool.avgpool2d_forward(x, k, s, p, out_hw, include, pad_after=pa)
    close(y, R.avgpool2d_forward(x64, k, s, p, out_hw, include, pa), dtype)
    dy, dy64 = data(y.shape, dtype, rng)
    close(pool.avgpool2d_backward(dy, x.shape, k, s, p, include, pad_after=pa),
          R.avgpool2d_backward(dy64, x.shape, k, s, p, include, pa), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_hw", [(1, 1), (3, 2), (4, 5), (9, 7), (2, 7)])
def test_adaptive_avgpool(out_hw, dtype):
    rng = np.random.default_rng(4)
    x, x64 = data((2, 3, 9, 7), dtype, rng)
    y = pool.adaptive_avgpool_forward(x, out_hw)
    close(y, R.adaptive_avgpool_forward(x64, out_hw), dtype)
    dy, dy64 = data(y.shape, dtype, rng)
    close(pool.adaptive_avgpool_backward(dy, x.shape),
          R.adaptive_avgpool_backward(dy64, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avgpool(dtype):
    rng = np.random.default_rng(5)
    x, x64 = data((2, 3, 5, 4), dtype, rng)
    close(pool.global_avgpool_forward(x), R.adaptive_avgpool_forward(x64, (1, 1)), dtype)
    dy, dy64 = data((2, 3, 1, 1), dtype, rng)
    close(pool.global_avgpool_backward(dy, x.shape), R.adaptive_avgpool_backward(dy64, x.shape),
          dtype)


# ------------------------------------------------------------------------------------ activations
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", R.ELEMENTWISE)
def test_activation_forward(kind, dtype):
    """The forward kernel a layer kind names against the kind's NumPy reference."""
    layer = R.case_layer(kind)
    fwd, _ = layer.kernel_pair()
    args = layer.kernel_values()
    rng = np.random.default_rng(6)
    x, x64 = data((3, 4, 5, 2), dtype, rng, scale=3.0)
    x[0, 0, 0, :] = [60.0, -60.0]          # large |x| must not overflow or produce nan
    x64[0, 0, 0, :] = [60.0, -60.0]
    close(fwd(x, *args), R.KINDS[kind].forward(x64, *args), dtype)


PRELU = {
    "shared": lambda dtype: np.array([0.25], dtype),
    "channel": lambda dtype: np.linspace(0.1, 0.5, 4).astype(dtype),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", sorted(PRELU))
def test_prelu_forward(alpha, dtype):
    rng = np.random.default_rng(6)
    x, x64 = data((3, 4, 5, 2), dtype, rng, scale=3.0)
    x[0, 0, 0, :] = x64[0, 0, 0, :] = [60.0, -60.0]
    a = PRELU[alpha](dtype)
    close(act.prelu_forward(x, a), R.prelu(x64, a.astype(np.float64)), dtype)


def test_relu_large_in_place():
    x = np.random.default_rng(7).standard_normal(1 << 19).astype(np.float32)
    expect = np.maximum(x, 0)
    y = act.relu_forward(x, out=x)
    assert y is x
    np.testing.assert_array_equal(y, expect)
    dy = np.ones_like(x)
    np.testing.assert_array_equal(act.relu_backward(dy, y), (expect > 0).astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxout(dtype):
    rng = np.random.default_rng(8)
    x, x64 = data((4, 6), dtype, rng)
    w, w64 = data((3 * 4, 6), dtype, rng)
    b, b64 = data((3 * 4,), dtype, rng)
    y, am = act.maxout_forward(x, w, b, 4)
    ry, ram = R.maxout(x64, w64, b64, 4)
    close(y, ry, dtype)
    np.testing.assert_array_equal(am, ram)


def test_softmax_cross_entropy():
    rng = np.random.default_rng(9)
    for dtype in DTYPES:
        z, z64 = data((6, 5), dtype, rng, scale=4.0)
        z[0, 0] = z64[0, 0] = 80.0      # log-sum-exp must stay finite
        labels = rng.integers(0, 5, 6)
        lv, g = loss.softmax_cross_entropy(z, labels)
        rl, rg = R.softmax_cross_entropy(z64, labels)
        assert np.isfinite(lv)
        assert abs(lv - rl) <= RTOL[dtype] * max(1.0, abs(rl))
        close(g, rg, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear(dtype):
    rng = np.random.default_rng(10)
    x, x64 = data((5, 7), dtype, rng)
    w, w64 = data((3, 7), dtype, rng)
    b, b64 = data((3,), dtype, rng)
    close(linear.linear_forward(x, w, b), R.linear(x64, w64, b64), dtype)
    close(linear.linear_forward(x, w, None), R.linear(x64, w64, None), dtype)


def test_dropout_statistics_and_scale():
    x = np.ones((200, 500), np.float32)
    y, mask = dropout.dropout_forward(x, 0.3, np.random.default_rng(0))
    assert y.dtype == np.float32 and mask.dtype == np.float32
    kept = mask > 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert (y[~kept] == 0).all()
    y0, m0 = dropout.dropout_forward(x, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(y0, x)
    with pytest.raises(ValueError):
        dropout.dropout_forward(x, 1.0, np.random.default_rng(0))


# ------------------------------------------------------------------------------------ norms
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)])
def test_batchnorm(shape, dtype):
    rng = np.random.default_rng(11)
    x, x64 = data(shape, dtype, rng, scale=2.0)
    x += 1.5
    x64 += 1.5
    c = shape[1]
    gamma, g64 = data((c,), dtype, rng)
    beta, b64 = data((c,), dtype, rng)
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)
    for training in (True, False):
        ry, rrm, rrv = R.batchnorm_forward(x64, g64, b64, rm.astype(np.float64),
                                           rv.astype(np.float64), training, 0.1, 1e-5)
        rm_k, rv_k = rm.copy(), rv.copy()
        y, _ = norm.batchnorm_forward(x, gamma, beta, rm_k, rv_k, training, 0.1, 1e-5)
        close(y, ry, dtype)
        close(rm_k, rrm, dtype)
        close(rv_k, rrv, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [5, 4, 3, 1])
def test_lrn(size, dtype):
    rng = np.random.default_rng(12)
    x, x64 = data((2, 7, 3, 2), dtype, rng, scale=3.0)
    close(norm.lrn_forward(x, size, 0.1, 0.75, 2.0), R.lrn_forward(x64, size, 0.1, 0.75, 2.0),
          dtype)


# ------------------------------------------------------------------------------------ PyTorch
@pytest.mark.torch
class TestAgainstTorch:
    @pytest.fixture(autouse=True)
    def _torch(self):
        self.torch = pytest.importorskip("torch")
        self.F = self.torch.nn.functional

    def _t(self, a, grad=True):
        return self.torch.tensor(a, requires_grad=grad)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("s,p,d,g", [(1, 1, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2), (2, 1, 1, 4),
                                         (1, 0, 1, 1)])
    def test_conv(self, s, p, d, g, dtype):
        rng = np.random.default_rng(20)
        x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
        w = rng.standard_normal((8, 4 // g, 3, 3)).astype(dtype)
        b = rng.standard_normal(8).astype(dtype)
        xt, wt_, bt = self._t(x), self._t(w), self._t(b)
        yt = self.F.conv2d(xt, wt_, bt, stride=s, padding=p, dilation=d, groups=g)
        dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
        yt.backward(self.torch.tensor(dy))
        y = conv.conv2d_forward(x, w, b, (s, s), (p, p), (d, d), g, tuple(yt.shape[2:]))
        dx, dw, db = conv.conv2d_backward(dy, x, w, (s, s), (p, p), (d, d), g)
        for got, ref in [(y, yt), (dx, xt.grad), (dw, wt_.grad), (db, bt.grad)]:
            close(got, ref.detach().numpy(), dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("k,s,p,ceil", [(2, 2, 0, False), (3, 2, 1, True), (3, 2, 0, True)])
    def test_pools(self, k, s, p, ceil, dtype):
        rng = np.random.default_rng(21)
        x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
        for include in (True, False):
            xt = self._t(x)
            yt = self.F.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=include)
            dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
            yt.backward(self.torch.tensor(dy))
            y = pool.avgpool2d_forward(x, k, s, p, tuple(yt.shape[2:]), include)
            close(y, yt.detach().numpy(), dtype)
            close(pool.avgpool2d_backward(dy, x.shape, k, s, p, include), xt.grad.numpy(), dtype)
        xt = self._t(x)
        yt, it = self.F.max_pool2d(xt, k, s, p, ceil_mode=ceil, return_indices=True)
        dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
        yt.backward(self.torch.tensor(dy))
        y, am = pool.maxpool2d_forward(x, k, s, p, tuple(yt.shape[2:]))
        close(y, yt.detach().numpy(), dtype)
        np.testing.assert_array_equal(am, it.numpy())
        close(pool.maxpool2d_backward(dy, am, x.shape), xt.grad.numpy(), dtype)
        for out in [(1, 1), (4, 3), (5, 5)]:
            xt = self._t(x)
            yt = self.F.adaptive_avg_pool2d(xt, out)
            dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
            yt.backward(self.torch.tensor(dy))
            close(pool.adaptive_avgpool_forward(x, out), yt.detach().numpy(), dtype)
            close(pool.adaptive_avgpool_backward(dy, x.shape), xt.grad.numpy(), dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)])
    def test_batchnorm(self, shape, dtype):
        rng = np.random.default_rng(22)
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        c = shape[1]
        gamma = rng.standard_normal(c).astype(dtype)
        beta = rng.standard_normal(c).astype(dtype)
        for training in (True, False):
            rm = rng.standard_normal(c).astype(dtype)
            rv = rng.uniform(0.5, 2, c).astype(dtype)
            rmt, rvt = self.torch.tensor(rm), self.torch.tensor(rv)
            xt, gt, bt = self._t(x), self._t(gamma), self._t(beta)
            yt = self.F.batch_norm(xt, rmt, rvt, gt, bt, training=training, momentum=0.1,
                                   eps=1e-5)
            dy = rng.standard_normal(shape).astype(dtype)
            yt.backward(self.torch.tensor(dy))
            y, cache = norm.batchnorm_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
            dx, dg, db = norm.batchnorm_backward(dy, cache)
            for got, ref in [(y, yt.detach()), (dx, xt.grad), (dg, gt.grad), (db, bt.grad),
                             (rm, rmt), (rv, rvt)]:
                close(got, ref.numpy(), dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("size", [5, 4, 2])
    def test_lrn(self, size, dtype):
        rng = np.random.default_rng(23)
        x = (rng.standard_normal((2, 7, 3, 4)) * 3).astype(dtype)
        xt = self._t(x)
        yt = self.F.local_response_norm(xt, size, alpha=0.1, beta=0.75, k=2.0)
        dy = rng.standard_normal(x.shape).astype(dtype)
        yt.backward(self.torch.tensor(dy))
        close(norm.lrn_forward(x, size, 0.1, 0.75, 2.0), yt.detach().numpy(), dtype)
        close(norm.lrn_backward(dy, x, size, 0.1, 0.75, 2.0), xt.grad.numpy(), dtype)


# ---------------------------------------------------------------- batch-norm slice kernels (NCHW)
def _bn_kernels_forward(x, gamma, beta, eps, nslices=2, relu=False, res=None):
    """Batch statistics from per-slice partial sums (as the engine does), then normalise (add
    the residual ``res`` when given, and clamp at 0 with ``relu``)."""
    from cnncalc.kernels import norm as kn

    n, c = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(n, c, -1)
    shift = x3[0, :, 0].astype(np.float64)
    tot = np.zeros((2, c))
    for t in range(nslices):
        out = np.empty((2, c))
        kn.bn_sums(x3[t * n // nslices:(t + 1) * n // nslices], shift, out)
        tot += out
    m = x3.shape[0] * x3.shape[2]
    d = tot[0] / m
    mean = (shift + d).astype(x.dtype).astype(np.float64)
    var = np.maximum(tot[1] / m - d * d, 0).astype(x.dtype)
    inv = (1 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype).astype(np.float64)
    y3 = np.empty_like(x3)
    kn.bn_normalise(x3, mean, inv, gamma.astype(np.float64), beta.astype(np.float64), relu, y3,
                    None if res is None else np.ascontiguousarray(res).reshape(x3.shape))
    return y3.reshape(x.shape), mean, inv


def _bn_grad_kernels(dy3, x3, y3, mean, inv, scale, relu, residual):
    """(sums, dx3, ds3 or None) of the slice kernels' backward: ``bn_grad_sums`` then
    ``bn_grad_input``, or with ``residual`` (the ReLU included) ``bn_grad_sums`` writing
    ds = g, then ``bn_grad_input`` on g."""
    from cnncalc.kernels import norm as kn

    n, c = x3.shape[:2]
    m = x3.shape[0] * x3.shape[2]
    sums = np.empty((2, c))
    dx3 = np.full_like(dy3, np.nan)
    if residual:
        ds3 = np.full_like(dy3, np.nan)
        kn.bn_grad_sums(dy3, x3, y3, mean, inv, True, sums, g3=ds3)
        kn.bn_grad_input(ds3, x3, y3, mean, inv, scale, sums[0] / m, sums[1] / m, False, dx3)
        return sums, dx3, ds3
    kn.bn_grad_sums(dy3, x3, y3, mean, inv, relu, sums)
    kn.bn_grad_input(dy3, x3, y3, mean, inv, scale, sums[0] / m, sums[1] / m, relu, dx3)
    return sums, dx3, None


@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_bn_slice_kernels_match_reference(dtype, tol, relu, residual):
    """The slice kernels against NumPy's batchnorm_forward/backward (plus a residual ``s``,
    when ``residual``, then a ReLU whose backward masks dy with y > 0, when ``relu``); with the
    residual the first backward pass also writes ds = the masked dy."""
    from cnncalc.kernels import norm as kn

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 5, 7, 4)) * 3 + 10).astype(dtype)
    gamma = rng.standard_normal(5).astype(dtype)
    beta = rng.standard_normal(5).astype(dtype)
    rm, rv = np.zeros(5, dtype), np.ones(5, dtype)
    y_ref, cache = kn.batchnorm_forward(x.astype(np.float64), gamma.astype(np.float64),
                                        beta.astype(np.float64), rm.astype(np.float64),
                                        rv.astype(np.float64), True)
    res = rng.standard_normal(x.shape).astype(dtype) * 2 if residual else None
    y, mean, inv = _bn_kernels_forward(x, gamma, beta, 1e-5, relu=relu, res=res)
    if residual:
        y_ref = y_ref + res
    if relu:
        y_ref = np.maximum(y_ref, 0)
    assert np.abs(y - y_ref).max() / np.abs(y_ref).max() < tol
    dy = rng.standard_normal(x.shape).astype(dtype)
    dz = np.where(y_ref > 0, dy, 0) if relu else dy
    dx_ref, dg_ref, db_ref = kn.batchnorm_backward(dz.astype(np.float64), cache)
    n, c = x.shape[:2]
    x3, dy3, y3 = x.reshape(n, c, -1), dy.reshape(n, c, -1), y.reshape(n, c, -1)
    scale = (gamma.astype(np.float64) * inv)
    sums, dx3, ds3 = _bn_grad_kernels(dy3, x3, y3, mean, inv, scale, relu, residual)
    assert np.abs(sums[0] - db_ref).max() / np.abs(db_ref).max() < tol
    assert np.abs(sums[1] - dg_ref).max() / np.abs(dg_ref).max() < tol
    assert np.abs(dx3.reshape(x.shape) - dx_ref).max() / np.abs(dx_ref).max() < tol * 10
    if residual:
        assert np.array_equal(ds3.reshape(x.shape), dz.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bn_relu_mask_from_x_is_the_forwards(dtype):
    """Batch norm + ReLU backward with ``gamma``/``beta`` recomputes the ReLU's mask from x by
    the normalising pass's own expression: the same mask as reading y (the sums bit for bit),
    here on values packed around the kink (bn(x) within a few ulps of 0)."""
    from cnncalc.kernels import norm as kn

    rng = np.random.default_rng(11)
    n, c, hw = 5, 4, 97
    gamma = rng.uniform(0.5, 2.0, c)
    beta = rng.uniform(-1.0, 1.0, c)
    mean, inv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    # x where (x - mean) * inv * gamma + beta is ~0: spread over a few ulps either side
    x0 = mean - beta / (inv * gamma)
    ulp = np.spacing(np.abs(x0).astype(dtype)).astype(np.float64)
    x3 = (x0[None, :, None] + rng.integers(-40, 41, (n, c, hw)) * ulp[None, :, None]).astype(dtype)
    x3[:, :, :7] = rng.standard_normal((n, c, 7)).astype(dtype)
    y3 = np.empty_like(x3)
    kn.bn_normalise(x3, mean, inv, gamma, beta, True, y3)
    assert 0 < np.count_nonzero(y3 > 0) < y3.size
    dy3 = rng.standard_normal(x3.shape).astype(dtype)
    a, b = np.empty((2, c)), np.empty((2, c))
    kn.bn_grad_sums(dy3, x3, y3, mean, inv, True, a)
    kn.bn_grad_sums(dy3, x3, np.full_like(y3, np.nan), mean, inv, True, b, gamma, beta)
    np.testing.assert_array_equal(a, b)
    scale = gamma * inv
    d1, d2 = np.empty_like(x3), np.empty_like(x3)
    kn.bn_grad_input(dy3, x3, y3, mean, inv, scale, a[0] / 500, a[1] / 500, True, d1)
    kn.bn_grad_input(dy3, x3, np.full_like(y3, np.nan), mean, inv, scale, a[0] / 500,
                     a[1] / 500, True, d2, gamma, beta)
    # the same mask: dx differs at most by the rounding of another loop (a flipped mask
    # would move an entry by ~|scale * dy|)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(d1, d2, rtol=tol, atol=tol * np.abs(d1).max())


def _in_order(parts):
    """parts[0] + parts[1] + ... added in order (the engine's chunk order)."""
    tot = parts[0].copy()
    for p in parts[1:]:
        tot += p
    return tot


def _bn_coefficients_numpy(training, parts, shift, m, mo, eps, rm, rv, gamma, beta):
    """The NumPy expressions that ``norm.bn_coefficients`` replaces in the engine (rounding
    step for step) on the chunks' sums ``parts``: (coef (4, C) float64, gamma_used); ``rm``,
    ``rv`` updated in place."""
    dtype = rm.dtype
    sums = _in_order(parts)
    if training:
        d = sums[0] / m
        mean64 = shift + d
        var64 = np.maximum(sums[1] / m - d * d, 0.0)
        unbiased = (var64 * (m / (m - 1)) if m > 1 else var64).astype(dtype)
        mean, var = mean64.astype(dtype), var64.astype(dtype)
        rm *= 1 - mo
        rm += mo * mean
        rv *= 1 - mo
        rv += mo * unbiased
    else:
        mean, var = np.asarray(rm, dtype).copy(), np.asarray(rv, dtype).copy()
    inv_std = (1 / np.sqrt(var + dtype.type(eps))).astype(dtype)
    coef = np.stack([mean.astype(np.float64), inv_std.astype(np.float64),
                     np.asarray(gamma, dtype).astype(np.float64),
                     np.asarray(beta, dtype).astype(np.float64)])
    return coef, np.array(gamma, dtype)


def _bn_grad_terms_numpy(parts, coef, gamma_used, m, training):
    """The NumPy expressions ``norm.bn_grad_terms`` replaces: (dgamma, dbeta, terms (3, C))."""
    dtype = gamma_used.dtype
    tot = _in_order(parts)
    dbeta, dgamma = tot[0].astype(dtype), tot[1].astype(dtype)
    scale = (gamma_used * coef[1].astype(dtype)).astype(np.float64)
    if training:
        mb, mg = dbeta.astype(np.float64) / m, dgamma.astype(np.float64) / m
    else:
        mb = mg = np.zeros_like(scale)
    return dgamma, dbeta, np.stack([scale, mb, mg])


def _check_bn_coefficients(dtype, training, parts, shift, m, mo, eps, rm, rv, gamma, beta):
    """``bn_coefficients`` then ``bn_grad_terms`` on the chunks' sums ``parts`` (P, 2, C) give
    the NumPy expressions' bits (NaN where they give NaN), the running statistics included."""
    from cnncalc.kernels import norm as kn

    c = shift.size
    rm2, rv2 = rm.copy(), rv.copy()
    want, want_gamma = _bn_coefficients_numpy(training, parts, shift, m, mo, eps, rm, rv, gamma,
                                              beta)
    coef, gamma_used = np.empty((4, c)), np.empty(c, dtype)
    kn.bn_coefficients(training, parts, shift, m, mo, eps, rm2, rv2, gamma, beta, coef,
                       gamma_used)
    for got, exp in ((coef, want), (gamma_used, want_gamma), (rm2, rm), (rv2, rv)):
        np.testing.assert_array_equal(got, exp)
    grad_parts = np.ascontiguousarray(parts[:, ::-1] * 0.37)
    dg, db, terms = np.empty(c, dtype), np.empty(c, dtype), np.empty((3, c))
    kn.bn_grad_terms(grad_parts, coef, gamma_used, m, training, dg, db, terms)
    for got, exp in zip((dg, db, terms), _bn_grad_terms_numpy(grad_parts, want, want_gamma, m,
                                                               training)):
        np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
def test_bn_coefficients_round_as_the_numpy_expressions(dtype, training):
    """The batch norm's per-channel coefficients in one compiled call: the same bits as the
    NumPy expressions, including a variance that cancels below 0 (clamped), NaN sums, one value
    a channel (m = 1: no unbiasing) and a channel without affine scale."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(5)
    c = 6
    shift = rng.standard_normal(c) * 3
    sums = np.stack([rng.standard_normal(c) * 50, rng.random(c) * 400])
    sums[1, 1] = sums[0, 1] ** 2 / 64 - 1e-9     # S2/m - d^2 < 0: clamped to 0
    sums[:, 2] = np.nan
    # three chunks whose float64 sum depends on the order it is added in
    parts = np.stack([sums + 1e17, np.full_like(sums, -1e17), sums * 1e-3])
    for m in (64, 1):
        rm = rng.standard_normal(c).astype(dtype)
        rv = (rng.random(c) + 0.5).astype(dtype)
        gamma = rng.standard_normal(c).astype(dtype)
        gamma[3] = 1
        beta = rng.standard_normal(c).astype(dtype)
        _check_bn_coefficients(dtype, training, parts, shift, m, 0.1, 1e-5, rm, rv, gamma,
                               beta)


if given is not None:
    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from([np.float32, np.float64]), st.booleans(), st.integers(1, 9),
           st.integers(1, 5000), st.floats(0, 1), st.floats(1e-12, 1e-1), st.integers(1, 5),
           st.integers(0, 2 ** 32 - 1))
    def test_bn_coefficients_fuzz(dtype, training, c, m, mo, eps, chunks, seed):
        """Any channel count, batch size, momentum, eps and chunk count: the NumPy expressions'
        bits."""
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        scale = 10.0 ** rng.integers(-6, 6)
        shift = rng.standard_normal(c) * scale
        d = rng.standard_normal(c) * scale
        sums = np.stack([d * m, (d * d + rng.random(c) * scale ** 2) * m])
        parts = sums * rng.random((chunks, 1, c))
        rm = (rng.standard_normal(c) * scale).astype(dtype)
        rv = (rng.random(c) * scale ** 2).astype(dtype)
        gamma = rng.standard_normal(c).astype(dtype)
        beta = rng.standard_normal(c).astype(dtype)
        _check_bn_coefficients(dtype, training, parts, shift, m, mo, eps, rm, rv, gamma, beta)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bn_grad_sums_adds_two_parts_as_a_sum_would(dtype):
    """``bn_grad_sums`` in the residual form (writing g) given the output's gradient in two
    parts (an output with two readers) writes the same g and sums, bit for bit, as given their
    NumPy sum, and those sums are the plain ReLU form's; where y = 0, g is 0 even where a part
    is inf or NaN."""
    from cnncalc.kernels import norm as kn

    rng = np.random.default_rng(12)
    n, c, hw = 3, 4, 50
    x3 = rng.standard_normal((n, c, hw)).astype(dtype)
    y3 = np.maximum(rng.standard_normal((n, c, hw)), 0).astype(dtype)
    a3 = rng.standard_normal((n, c, hw)).astype(dtype)
    b3 = (rng.standard_normal((n, c, hw)) * 1e-3).astype(dtype)
    a3[y3 == 0] = np.nan
    b3[:, :, :3] = np.inf
    y3[:, :, :3] = 0
    mean, inv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    g1, g2 = np.full_like(a3, 7), np.full_like(a3, 7)
    s1, s2 = np.empty((2, c)), np.empty((2, c))
    kn.bn_grad_sums(a3, x3, y3, mean, inv, True, s1, dy3b=b3, g3=g1)
    kn.bn_grad_sums(a3 + b3, x3, y3, mean, inv, True, s2, g3=g2)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(s1, s2)
    s3 = np.empty((2, c))
    kn.bn_grad_sums(a3 + b3, x3, y3, mean, inv, True, s3)
    np.testing.assert_array_equal(s1, s3)
    np.testing.assert_array_equal(g1, np.where(y3 > 0, a3 + b3, 0).astype(dtype))
    assert np.isfinite(s1).all() and np.count_nonzero(g1) == np.count_nonzero(y3)


@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (True, True)])
def test_bn_slice_kernels_gradcheck(relu, residual):
    """float64 centered differences of sum(w * bn(x)) (``relu``: sum(w * relu(bn(x))); with
    ``residual``: sum(w * relu(bn(x) + s)), differentiated in x and in s) through the slice
    kernels."""
    from cnncalc.kernels import norm as kn

    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 3, 5)) + 2.0
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    wt = rng.standard_normal(x.shape)
    res = rng.standard_normal(x.shape) if residual else None

    def loss(xv, sv):
        return (wt * _bn_kernels_forward(xv, gamma, beta, 1e-5, relu=relu, res=sv)[0]).sum()

    y, mean, inv = _bn_kernels_forward(x, gamma, beta, 1e-5, relu=relu, res=res)
    n, c = x.shape[:2]
    x3, dy3, y3 = x.reshape(n, c, -1), wt.reshape(n, c, -1), y.reshape(n, c, -1)
    sums, dx3, ds3 = _bn_grad_kernels(dy3, x3, y3, mean, inv, gamma * inv, relu, residual)
    h = 1e-6
    for wrt, grad in ((0, dx3), (1, ds3)) if residual else ((0, dx3),):
        v = (x, res)[wrt]
        num = np.empty_like(v)
        for i in np.ndindex(v.shape):
            vp, vm = v.copy(), v.copy()
            vp[i] += h
            vm[i] -= h
            args_p = (vp, res) if wrt == 0 else (x, vp)
            args_m = (vm, res) if wrt == 0 else (x, vm)
            num[i] = (loss(*args_p) - loss(*args_m)) / (2 * h)
        assert np.abs(grad.reshape(v.shape) - num).max() / np.abs(num).max() < 1e-6
    # dgamma, dbeta: d sum(w*y)/d gamma_c = sum(w * mask * xhat), d/d beta_c = sum(w * mask),
    # mask = [y > 0] after a ReLU, else 1
    xhat = (x - mean[None, :, None, None]) * inv[None, :, None, None]
    wm = np.where(y > 0, wt, 0) if relu else wt
    assert np.allclose(sums[1], (wm * xhat).sum(axis=(0, 2, 3)), rtol=1e-10)
    assert np.allclose(sums[0], wm.sum(axis=(0, 2, 3)), rtol=1e-10)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), ((3, 2), (1, 2))])
def test_maxpool_inside_path_matches_general(k, s):
    from cnncalc.kernels import pool as kp

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 11, 10)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    x[1, 2, 3, 3] = x[1, 2, 3, 4] = 5.0   # ties: first maximum wins
    y, am = kp.maxpool2d_forward(x, k, s)
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    y0 = np.empty_like(y)
    a0 = np.empty_like(am)
    kp._maxpool_fwd_s(x, kh, kw, sh, sw, 0, 0, 1, 1, y0, a0)
    assert np.array_equal(y, y0, equal_nan=True)
    assert np.array_equal(am, a0)


def _phase_pool_case(rng, shape, dtype):
    """Integers (many ties), a few NaNs and -inf: the first maximum must win, NaN must
    propagate."""
    x = rng.integers(-3, 3, shape).astype(dtype)
    flat = x.ravel()
    flat[rng.integers(0, x.size, max(1, x.size // 50))] = np.nan
    flat[rng.integers(0, x.size, max(1, x.size // 50))] = -np.inf
    return x


def _phase_flat_index(code, w):
    """The flat input-plane index ``row*W + col`` a window's phase ``code`` names."""
    i = np.arange(code.shape[2])[:, None]
    j = np.arange(code.shape[3])[None, :]
    return ((2 * i + code // 2) * w + 2 * j + code % 2).astype(np.int32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 16, 16), (1, 2, 32, 32),
                                   (3, 5, 6, 10), (2, 3, 2, 2), (1, 1, 4, 12)])
def test_maxpool2x2_phases_matches_maxpool(shape, dtype):
    """The phase-plane 2x2 max pooling (the shuffle intrinsic's row widths 4, 8, 16 and the
    element loops' others): the values, the chosen positions and the input gradient of
    ``maxpool2d_forward`` / ``_backward``, bit for bit, ties and NaN included, and with a
    batch norm + ReLU folded in, those of ``bn_normalise`` then pooling; its NumPy body (the
    ``NUMBA_DISABLE_JIT`` path) the same. A block of planes smaller than the batch (a scratch
    for one plane) gives the same."""
    rng = np.random.default_rng(sum(shape))
    x = _phase_pool_case(rng, shape, dtype)
    y, am = pool.maxpool2d_forward(x, 2, 2)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = pool.maxpool2d_backward(dy, am, x.shape)
    one_plane = np.empty(4 * y.shape[2] * y.shape[3], dtype)
    for fwd, bwd, ph in ((pool._maxpool2x2_phases_fwd, pool._maxpool2x2_phases_bwd, None),
                         (pool._maxpool2x2_phases_fwd, pool._maxpool2x2_phases_bwd, one_plane),
                         (pool._maxpool2x2_phases_fwd_py, pool._maxpool2x2_phases_bwd_py,
                          None)):
        scratch = pool.maxpool2x2_phases_scratch(x.shape, dtype) if ph is None else ph
        y2 = np.full_like(y, 7)
        code = np.full(y.shape, -1, np.int8)
        fwd(x, y2, code, scratch, np.zeros((4, 0)))
        np.testing.assert_array_equal(y2, y)                  # NaN == NaN here
        np.testing.assert_array_equal(_phase_flat_index(code, shape[3]), am)
        dx2 = np.full_like(dx, 7)
        bwd(dy, code, dx2, scratch)
        np.testing.assert_array_equal(dx2, dx)
        # with a batch norm + ReLU applied on the way in: bn_normalise's values, pooled
        c = shape[1]
        bn = np.stack([rng.standard_normal(c), rng.uniform(0.5, 2, c),
                       rng.uniform(-2, 2, c), rng.standard_normal(c)])
        xb = np.empty_like(x)
        norm.bn_normalise(x.reshape(shape[0], c, -1), bn[0], bn[1], bn[2], bn[3], True,
                          xb.reshape(shape[0], c, -1))
        yb, amb = pool.maxpool2d_forward(xb, 2, 2)
        fwd(x, y2, code, scratch, bn)
        if fwd is pool._maxpool2x2_phases_fwd_py:
            # NumPy rounds (x - m) * a + b twice, the compiled kernels contract it as
            # bn_normalise does
            tol = 1e-6 if dtype == np.float32 else 1e-14
            np.testing.assert_allclose(y2, yb, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(y2, yb)
            np.testing.assert_array_equal(_phase_flat_index(code, shape[3]), amb)


@pytest.mark.parametrize("k,s,pad,dil,h,w,applies", [
    (2, 2, 0, 1, 8, 8, True), ((2, 2), None, (0, 0), (1, 1), 32, 6, True),
    (2, 2, 0, 1, 9, 8, False), (2, 2, 0, 1, 8, 7, False), (2, 1, 0, 1, 8, 8, False),
    (3, 2, 0, 1, 8, 8, False), (2, 2, 1, 1, 8, 8, False), (2, 2, 0, 2, 8, 8, False)])
def test_maxpool2x2_phases_applies(k, s, pad, dil, h, w, applies):
    """The phase kernels take exactly the 2x2, stride-2, unpadded, undilated window on an
    even plane."""
    assert pool.maxpool2x2_phases_applies(k, s, pad, dil, h, w) is applies
