"""Centered-difference checks (float64, h = 1e-6, max relative error < 1e-6) of every backward."""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import away_from, check
from reference import ELEMENTWISE, KINDS, case_layer

from cnncalc.kernels import activation as act
from cnncalc.kernels import conv, dropout, linear, loss, norm, pool


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ conv
CONV_CASES = [
    # N, C, H, W, K, kh, kw, stride, pad_before, dilation, groups, pad_after
    (2, 3, 6, 5, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, (1, 1)),
    (2, 2, 7, 6, 3, 3, 2, (2, 2), (1, 0), (1, 1), 1, (0, 1)),   # stride 2, asymmetric pad
    (1, 2, 7, 7, 2, 3, 3, (1, 1), (2, 2), (2, 2), 1, (2, 2)),   # dilation 2
    (2, 4, 5, 5, 4, 3, 3, (1, 2), (1, 1), (1, 1), 2, (1, 1)),   # groups 2
    (2, 3, 5, 6, 6, 3, 3, (1, 1), (0, 1), (1, 1), 3, (2, 1)),   # depthwise x2, "same"-like
    (2, 3, 4, 4, 5, 1, 1, (1, 1), (0, 0), (1, 1), 1, (0, 0)),   # 1x1 fast path
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("algo", ["im2col", "implicit", "simd", "rows"])
def test_conv_grad(case, algo):
    n, c, h, w, k, kh, kw, s, p, d, g, pa = case
    rng = _rng(1)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c // g, kh, kw))
    b = rng.standard_normal(k)
    ho, wo = conv.conv2d_out_hw(h, w, (kh, kw), s, p, pa, d)

    def f():
        return conv.conv2d_forward(x, wt, b, s, p, d, g, (ho, wo), algo=algo)

    dout = rng.standard_normal((n, k, ho, wo))
    dx, dw, db = conv.conv2d_backward(dout, x, wt, s, p, d, g, algo=algo)
    check(f, {"x": x, "w": wt, "b": b}, {"x": dx, "w": dw, "b": db}, dout)


# ------------------------------------------------------------------------------------ pools
def _tie_free(shape, rng):
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0).astype(np.float64)


@pytest.mark.parametrize("k,s,p,out_hw", [((2, 2), (2, 2), (0, 0), (3, 3)),
                                          ((3, 3), (2, 2), (1, 1), (4, 4)),   # ceil-mode size
                                          ((3, 2), (1, 2), (1, 0), (7, 3))])
def test_maxpool_grad(k, s, p, out_hw):
    rng = _rng(2)
    x = _tie_free((2, 2, 7, 6), rng)
    y, am = pool.maxpool2d_forward(x, k, s, p, out_hw)
    dout = rng.standard_normal(y.shape)
    dx = pool.maxpool2d_backward(dout, am, x.shape)
    check(lambda: pool.maxpool2d_forward(x, k, s, p, out_hw)[0], {"x": x}, {"x": dx}, dout)


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("k,s,p,out_hw", [((2, 2), (2, 2), (0, 0), (3, 3)),
                                          ((3, 3), (2, 2), (1, 1), (4, 4)),
                                          ((3, 2), (2, 1), (1, 1), (4, 7))])
def test_avgpool_grad(k, s, p, out_hw, include):
    rng = _rng(3)
    x = rng.standard_normal((2, 2, 7, 6))
    y = pool.avgpool2d_forward(x, k, s, p, out_hw, include)
    dout = rng.standard_normal(y.shape)
    dx = pool.avgpool2d_backward(dout, x.shape, k, s, p, include)
    check(lambda: pool.avgpool2d_forward(x, k, s, p, out_hw, include), {"x": x}, {"x": dx}, dout)


@pytest.mark.parametrize("out_hw", [(1, 1), (3, 2), (4, 5)])
def test_adaptive_avgpool_grad(out_hw):
    rng = _rng(4)
    x = rng.standard_normal((2, 2, 7, 6))
    dout = rng.standard_normal((2, 2) + out_hw)
    dx = pool.adaptive_avgpool_backward(dout, x.shape)
    check(lambda: pool.adaptive_avgpool_forward(x, out_hw), {"x": x}, {"x": dx}, dout)


def test_global_avgpool_grad():
    rng = _rng(5)
    x = rng.standard_normal((2, 3, 4, 5))
    dout = rng.standard_normal((2, 3, 1, 1))
    dx = pool.global_avgpool_backward(dout, x.shape)
    check(lambda: pool.global_avgpool_forward(x), {"x": x}, {"x": dx}, dout)


# ------------------------------------------------------------------------------------ activations
@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_elementwise_grad(kind):
    """The kernel pair a layer kind names: backward against centred differences of forward."""
    layer = case_layer(kind)
    fwd, bwd = layer.kernel_pair()
    args = layer.kernel_values()
    rng = _rng(6)
    x = away_from(rng.standard_normal((3, 4, 2, 3)) * KINDS[kind].scale, KINDS[kind].kinks)
    dout = rng.standard_normal(x.shape)
    y = fwd(x, *args)
    dx = bwd(dout, y if layer.saves == "y" else x, *args)
    check(lambda: fwd(x, *args), {"x": x}, {"x": dx}, dout)


@pytest.mark.parametrize("shape", [(4, 6), (2, 5, 3, 2)])
def test_softmax_grad(shape):
    rng = _rng(7)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    dx = act.softmax_backward(dout, act.softmax_forward(x))
    check(lambda: act.softmax_forward(x), {"x": x}, {"x": dx}, dout)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 2)])
def test_prelu_grad(shared, shape):
    rng = _rng(8)
    x = away_from(rng.standard_normal(shape))
    alpha = rng.uniform(0.05, 0.4, size=1 if shared else shape[1])
    dout = rng.standard_normal(shape)
    dx, dalpha = act.prelu_backward(dout, x, alpha)
    assert dalpha.shape == alpha.shape
    check(lambda: act.prelu_forward(x, alpha), {"x": x, "alpha": alpha},
          {"x": dx, "alpha": dalpha}, dout)


def test_maxout_grad():
    rng = _rng(9)
    n, fin, units, pieces = 4, 5, 3, 3
    x = rng.standard_normal((n, fin))
    w = rng.standard_normal((units * pieces, fin))
    b = rng.standard_normal(units * pieces)
    y, am = act.maxout_forward(x, w, b, pieces)
    z = (x @ w.T + b).reshape(n, units, pieces)
    top2 = np.sort(z, axis=2)[:, :, -2:]
    assert (top2[:, :, 1] - top2[:, :, 0]).min() > 1e-4  # no near-ties: the argmax is stable
    dout = rng.standard_normal(y.shape)
    dx, dw, db = act.maxout_backward(dout, x, w, am, pieces)
    check(lambda: act.maxout_forward(x, w, b, pieces)[0], {"x": x, "w": w, "b": b},
          {"x": dx, "w": dw, "b": db}, dout)


# ------------------------------------------------------------------------------------ norms
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 2)])
def test_batchnorm_grad(training, shape):
    rng = _rng(10)
    x = rng.standard_normal(shape) * 2 + 0.5
    c = shape[1]
    gamma = rng.uniform(0.5, 1.5, c)
    beta = rng.standard_normal(c)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def f():
        return norm.batchnorm_forward(x, gamma, beta, rm0.copy(), rv0.copy(), training)[0]

    dout = rng.standard_normal(shape)
    _, cache = norm.batchnorm_forward(x, gamma, beta, rm0.copy(), rv0.copy(), training)
    dx, dgamma, dbeta = norm.batchnorm_backward(dout, cache)
    check(f, {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta},
          dout)


@pytest.mark.parametrize("size", [5, 4, 1])
def test_lrn_grad(size):
    rng = _rng(11)
    x = rng.standard_normal((2, 6, 2, 3)) * 3
    args = (size, 0.3, 0.75, 1.5)   # a large alpha so the cross-channel term matters
    dout = rng.standard_normal(x.shape)
    dx = norm.lrn_backward(dout, x, *args)
    check(lambda: norm.lrn_forward(x, *args), {"x": x}, {"x": dx}, dout)


# ------------------------------------------------------------------------------------ misc
def test_linear_grad():
    rng = _rng(12)
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    dout = rng.standard_normal((4, 3))
    dx, dw, db = linear.linear_backward(dout, x, w)
    check(lambda: linear.linear_forward(x, w, b), {"x": x, "w": w, "b": b},
          {"x": dx, "w": dw, "b": db}, dout)


def test_softmax_cross_entropy_grad():
    rng = _rng(13)
    z = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    _, dz = loss.softmax_cross_entropy(z, labels)
    check(lambda: loss.softmax_cross_entropy(z, labels)[0], {"z": z}, {"z": dz})


def test_dropout_grad():
    rng = _rng(14)
    x = rng.standard_normal((3, 7))
    _, mask = dropout.dropout_forward(x, 0.4, np.random.default_rng(0))
    dout = rng.standard_normal(x.shape)
    dx = dropout.dropout_backward(dout, mask)
    check(lambda: x * mask, {"x": x}, {"x": dx}, dout)
