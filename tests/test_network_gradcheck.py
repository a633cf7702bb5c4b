"""Float64 centred-difference checks (h = 1e-6, max relative error < 1e-6) of whole networks.

The loss is ``sum(out * R)`` for a fixed random R; every parameter tensor (about a dozen sampled
coordinates each) and the input gradient are checked (:func:`gradcheck.check_network`). Every
registered layer kind is checked alone, from its entry in :data:`reference.KINDS`, plus the
variants and combinations below. One thread (``parallel=False``) keeps the run short.
"""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import TOL, away_from, centred_difference, check_network, rel_error
from reference import ANALYSIS_ONLY, KINDS, case_spec
from reference import spec_text as _spec

import cnncalc
from cnncalc.errors import TrainError
from cnncalc.layers import REGISTRY

EXECUTABLE = sorted(kind for kind, cls in REGISTRY.items() if cls.executable())
ELEMENTWISE = sorted(kind for kind in EXECUTABLE if KINDS[kind].forward is not None)


def _net(spec, **kw):
    kw.setdefault("parallel", False)
    return cnncalc.Network(spec, dtype="float64", seed=kw.pop("seed", 0), **kw)


def _x(net, n=2, seed=1):
    return np.random.default_rng(seed).standard_normal((n, *net.graph.input_shape))


# ----------------------------------------------------------------------------- whole networks
LENET12 = _spec("12x12x1", [
    "conv: {filters: 4, size: 5, pad: 2}", "relu", "maxpool: {size: 2}",
    "conv: {filters: 6, size: 3}", "relu", "maxpool: {size: 2}", "flatten",
    "fc: {units: 12}", "relu", "fc: {units: 10}", "relu", "fc: {units: 5}"], "lenet12")

RESNET_BLOCK = """
name: resblock
input: 6x6x3
blocks:
  basic:
    - conv: {name: conv1, filters: $c, size: 3, pad: 1, bias: false}
    - batchnorm: {name: bn1}
    - relu: {name: relu1}
    - conv: {name: conv2, filters: $c, size: 3, pad: 1, bias: false}
    - batchnorm: {name: bn2}
    - add: {name: add, from: [bn2, input]}
    - relu: {name: relu2}
  down:
    - conv: {name: conv1, filters: $c, size: 3, stride: 2, pad: 1, bias: false}
    - batchnorm: {name: bn1}
    - relu: {name: relu1}
    - conv: {name: conv2, filters: $c, size: 3, pad: 1, bias: false}
    - batchnorm: {name: bn2}
    - conv: {name: proj, from: input, filters: $c, size: 1, stride: 2, bias: false}
    - batchnorm: {name: proj_bn}
    - add: {name: add, from: [bn2, proj_bn]}
    - relu: {name: relu2}
layers:
  - conv: {name: stem, filters: 3, size: 3, pad: 1}
  - {block: basic, name: layer1, with: {c: 3}}
  - {block: down, name: layer2, with: {c: 4}}
  - global_avgpool
  - flatten
  - fc: {name: fc, units: 3}
"""

BN_NET = _spec("6x6x2", [
    "conv: {filters: 3, size: 3, pad: 1}", "batchnorm", "relu", "maxpool: {size: 2}",
    "flatten", "fc: {units: 4}", "batchnorm: {name: bn1d}", "tanh", "fc: {units: 3}"], "bn")

INCEPTION = _spec("5x5x3", [
    "conv: {name: b1, from: input, filters: 2, size: 1}", "relu: {name: b1r}",
    "conv: {name: b2a, from: input, filters: 2, size: 1}", "relu: {name: b2ar}",
    "conv: {name: b2b, filters: 3, size: 3, pad: 1}", "relu: {name: b2br}",
    "maxpool: {name: b3, from: input, size: 3, stride: 1, pad: 1}",
    "conv: {name: b3p, filters: 2, size: 1}",
    "concat: {name: cat, from: [b1r, b2br, b3p]}",
    "conv: {name: head, filters: 2, size: 3}"], "inception")


@pytest.mark.parametrize("fuse", [True, False])
def test_lenet_gradcheck(fuse):
    net = _net(LENET12, fuse=fuse)
    assert any(s.startswith("conv_relu_maxpool") for s in net.plan) == fuse
    check_network(net, _x(net, 3))


def test_resnet_block_gradcheck():
    net = _net(RESNET_BLOCK)
    check_network(net, _x(net, 3))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_net_gradcheck(training):
    net = _net(BN_NET)
    rng = np.random.default_rng(5)
    for b in net.buffers.values():
        b[...] = rng.uniform(0.5, 1.5, b.shape)
    check_network(net, _x(net, 4), training=training)


def test_inception_concat_gradcheck():
    net = _net(INCEPTION)
    check_network(net, _x(net, 2))


def test_softmax_cross_entropy_gradcheck():
    net = _net(LENET12)
    x = _x(net, 4)
    labels = np.array([0, 4, 2, 4])
    net.loss_and_grads(x, labels)
    analytic = {k: g.copy() for k, g in net.grads.items()}

    def f():
        return net.loss(x, labels)[0]

    rng = np.random.default_rng(0)
    for name, arr in net.params.items():
        for i in rng.choice(arr.size, size=min(6, arr.size), replace=False):
            idx = np.unravel_index(i, arr.shape)
            num = centred_difference(f, arr, idx)
            assert rel_error(analytic[name][idx], num) < TOL, name


# --------------------------------------------------------------------------- layer by layer
# variants and combinations beyond each kind's own case (reference.KINDS)
LAYER_CASES = {
    "conv_rect_asym": ("6x7x2", [
        "conv: {filters: 3, size: [3, 2], stride: [1, 2], pad: [1, 0, 0, 1]}"]),
    "conv_dilation": ("7x7x2", ["conv: {filters: 2, size: 3, pad: 2, dilation: 2}"]),
    "conv_groups": ("5x5x4", ["conv: {filters: 6, size: 3, pad: 1, groups: 2, bias: false}"]),
    "conv_depthwise_same": ("6x5x3", [
        "conv: {filters: 3, size: 3, stride: 2, pad: same, groups: 3}"]),
    "conv_1x1": ("4x4x3", ["conv: {filters: 5, size: 1}"]),
    "maxpool_pad_ceil": ("6x6x2", ["maxpool: {size: 3, stride: 2, pad: 1, ceil_mode: true}"]),
    "maxpool_ceil": ("7x7x2", ["maxpool: {size: 2, ceil_mode: true}"]),
    "avgpool_nopadcount_ceil": ("7x7x2", [
        "avgpool: {size: 3, stride: 2, pad: 1, ceil_mode: true, count_include_pad: false}"]),
    "adaptive_up": ("2x3x2", ["adaptive_avgpool: {output_size: 4}"]),
    "zeropad_conv": ("3x4x2", ["zeropad: {padding: [1, 2, 0, 3]}", "conv: {filters: 2, size: 2}"]),
    "fc_no_bias": ("3x3x2", ["fc: {units: 4, bias: false}", "relu"]),
    "prelu_shared": ("4x4x2", ["prelu"]),
    "lrn_even": ("3x2x5", ["lrn: {size: 4, alpha: 0.2, beta: 0.5, k: 1.0}"]),
    "batchnorm_no_affine": ("3x3x2", ["batchnorm: {affine: false}"]),
    "dropout_eval_path": ("3x3x2", ["dropout: {p: 0.0}", "fc: {units: 2}"]),
    "add_three": ("3x3x2", ["conv: {name: a, filters: 2, size: 1}",
                            "tanh: {name: b, from: input}",
                            "add: {from: [a, b, input]}"]),
    "reuse_twice": ("3x3x2", ["tanh: {name: t}", "conv: {name: c, filters: 2, size: 1}",
                              "add: {name: s, from: [t, c]}",
                              "concat: {from: [input, t, s]}"]),
}


def _off_round_values(net, seed=3):
    """Move biases and PReLU's α off their round initial values."""
    rng = np.random.default_rng(seed)
    for v in net.params.values():
        if v.ndim == 1:
            v[...] += 0.3 * rng.standard_normal(v.shape)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_gradcheck(case):
    input_, layers = LAYER_CASES[case]
    net = _net(_spec(input_, layers, case))
    _off_round_values(net)
    check_network(net, _x(net, 2), n_coords=10)


# ------------------------------------------------------------------------- every kind, alone
def test_every_registered_kind_runs_or_is_listed_analysis_only():
    for kind, cls in REGISTRY.items():
        assert cls.executable() != (kind in ANALYSIS_ONLY), (
            f"{kind}: executable={cls.executable()}, but "
            f"{'listed' if kind in ANALYSIS_ONLY else 'not listed'} in ANALYSIS_ONLY")
        if kind in ANALYSIS_ONLY:
            with pytest.raises(TrainError, match="cannot be executed"):
                _net(case_spec(kind))


@pytest.mark.parametrize("kind", EXECUTABLE)
def test_kind_gradcheck(kind):
    case = KINDS[kind]
    net = _net(case_spec(kind))
    assert net.graph.nodes[-1].kind == kind
    _off_round_values(net)
    x = away_from(case.scale * _x(net, 2), case.kinks)
    check_network(net, x, n_coords=10)


def _with_kinks(x, kinks):
    """``x`` with its first entries set to the kinks exactly (and just either side of them)."""
    points = [p for k in kinks for p in (k, k - 0.25, k + 0.25)]
    flat = x.reshape(-1)
    flat[:len(points)] = points
    return x


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_kind_forward_and_derivative_match_reference(kind):
    """The network's output is the NumPy reference; at the kinks, d/dx is PyTorch's choice."""
    case = KINDS[kind]
    net = _net(case_spec(kind))
    args = net.graph.nodes[-1].layer.kernel_values()
    x = _with_kinks(case.scale * _x(net, 2, seed=4), case.kinks)
    y = net.forward(x, training=False)
    np.testing.assert_allclose(y, case.forward(x, *args), rtol=1e-12, atol=1e-14)
    if case.derivative is not None:
        dx = net.backward(np.ones_like(y))
        np.testing.assert_array_equal(dx, case.derivative(x, *args))
