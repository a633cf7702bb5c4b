"""Each layer type's shape, parameter, MAC and receptive-field rules against hand-worked values:
one case per registered kind (reference.KINDS) and the lecture's examples below."""
import pytest
from reference import KINDS, case_spec

import cnncalc
from cnncalc.layers.base import Shape, out_size, same_padding


def one_layer(layer: dict, inp: str = "32x32x3", **kw):
    g = cnncalc.load({"input": inp, "layers": [layer]}, **kw)
    return g, g.analyze()["layers"][0]


# (layer spec, input, output WxHxD, params, MACs, rf size, rf stride) -- worked by hand
RULES = [
    # lecture: 32x32x3, ten 5x5 filters, stride 1, pad 2 -> 32x32x10; 5*5*3+1 = 76 per filter
    ({"conv": {"K": 10, "F": 5, "S": 1, "P": 2}}, "32x32x3", (32, 32, 10), 760,
     32 * 32 * 10 * 75, 5, 1),
    # lecture 7x7 cases: stride 1 -> 5x5, stride 2 -> 3x3, pad 1 -> 7x7
    ({"conv": {"K": 1, "F": 3, "S": 1}}, "7x7x1", (5, 5, 1), 10, 25 * 9, 3, 1),
    ({"conv": {"K": 1, "F": 3, "S": 2}}, "7x7x1", (3, 3, 1), 10, 9 * 9, 3, 2),
    ({"conv": {"K": 1, "F": 3, "S": 1, "P": 1}}, "7x7x1", (7, 7, 1), 10, 49 * 9, 3, 1),
    # PyTorch names, rectangular kernel, no bias
    ({"conv": {"out_channels": 4, "kernel_size": [3, 5], "padding": [1, 2], "bias": False}},
     "10x8x2", (10, 8, 4), 4 * 2 * 15, 10 * 8 * 4 * 30, (3, 5), 1),
    # dilation 2: effective 5x5
    ({"conv": {"filters": 2, "size": 3, "dilation": 2}}, "9x9x1", (5, 5, 2), 20, 25 * 2 * 9, 5, 1),
    # depthwise: groups = channels; (3*3*1)*8 + 8
    ({"conv": {"filters": 8, "size": 3, "pad": 1, "groups": 8}}, "6x6x8", (6, 6, 8), 80,
     36 * 8 * 9, 3, 1),
    # 1x1 conv as feature pooling: 64 -> 16 channels
    ({"conv": {"filters": 16, "size": 1}}, "28x28x64", (28, 28, 16), 64 * 16 + 16,
     28 * 28 * 16 * 64, 1, 1),
    # same padding, stride 2 (TensorFlow rule): ceil(7/2) = 4
    ({"conv": {"filters": 1, "size": 3, "stride": 2, "pad": "same"}}, "7x7x1", (4, 4, 1), 10,
     16 * 9, 3, 2),
    ({"maxpool": {"size": 2}}, "28x28x6", (14, 14, 6), 0, 0, 2, 2),
    ({"maxpool": {"size": 3, "stride": 2}}, "55x55x96", (27, 27, 96), 0, 0, 3, 2),
    ({"maxpool": {"size": 2, "ceil_mode": True}}, "5x5x1", (3, 3, 1), 0, 0, 2, 2),
    ({"avgpool": {"size": 2, "stride": 1}}, "4x4x2", (3, 3, 2), 0, 0, 2, 1),
    ({"global_avgpool": None}, "7x7x512", (1, 1, 512), 0, 0, 7, 1),
    ({"adaptive_avgpool": {"output_size": 6}}, "13x13x256", (6, 6, 256), 0, 0, 3, 2),
    ({"zeropad": {"padding": [1, 2, 3, 4]}}, "5x5x1", (8, 12, 1), 0, 0, 1, 1),
    ({"flatten": None}, "5x5x16", (1, 1, 400), 0, 0, 5, 1),
    ({"fc": {"units": 120}}, "1x1x400", (1, 1, 120), 48120, 48000, 1, 1),
    ({"fc": {"units": 10}}, "5x5x16", (1, 1, 10), 4010, 4000, 5, 1),  # FC as whole-input conv
    ({"linear": {"out_features": 3, "bias": False}}, "1x1x4", (1, 1, 3), 12, 12, 1, 1),
    ({"maxout": {"units": 5, "pieces": 3}}, "1x1x4", (1, 1, 5), 3 * (4 * 5 + 5), 60, 1, 1),
    ({"batchnorm": None}, "8x8x16", (8, 8, 16), 32, 0, 1, 1),
    ({"prelu": None}, "8x8x16", (8, 8, 16), 1, 0, 1, 1),
    ({"prelu": {"per_channel": True}}, "8x8x16", (8, 8, 16), 16, 0, 1, 1),
    ({"lrn": None}, "8x8x16", (8, 8, 16), 0, 0, 1, 1),
    ("relu", "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ({"leaky_relu": {"slope": 0.1}}, "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ({"elu": {"alpha": 1.0}}, "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ("sigmoid", "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ("tanh", "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ("mish", "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ("silu", "8x8x3", (8, 8, 3), 0, 0, 1, 1),
    ("softmax", "1x1x10", (1, 1, 10), 0, 0, 1, 1),
    ({"dropout": {"p": 0.3}}, "1x1x10", (1, 1, 10), 0, 0, 1, 1),
]


@pytest.mark.parametrize("layer,inp,out,params,macs,rf,jump", RULES,
                         ids=[str(r[0])[:40] for r in RULES])
def test_rule_table(layer, inp, out, params, macs, rf, jump):
    _, row = one_layer(layer, inp)
    o = row["output"]
    assert (o["width"], o["height"], o["depth"]) == out
    assert row["params"] == params
    assert row["macs"] == macs
    rf_hw = rf if isinstance(rf, tuple) else (rf, rf)
    assert tuple(row["rf"]["size"]) == rf_hw
    assert tuple(row["rf"]["stride"]) == (jump, jump)


def test_every_registered_kind_has_a_reference_case():
    from cnncalc.layers import REGISTRY
    assert set(KINDS) == set(REGISTRY)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_rule(kind):
    rule = KINDS[kind].rule
    row = cnncalc.load(case_spec(kind)).analyze()["layers"][-1]
    assert row["type"] == kind
    o = row["output"]
    assert (o["width"], o["height"], o["depth"]) == rule.out
    assert (row["params"], row["macs"], row["flops"]) == (rule.params, rule.macs, rule.flops)
    assert tuple(row["rf"]["size"]) == rule.rf
    assert tuple(row["rf"]["stride"]) == (rule.jump, rule.jump)


def test_weights_and_biases_split():
    _, row = one_layer({"conv": {"K": 10, "F": 5, "P": 2}})
    assert (row["weights"], row["biases"]) == (750, 10)


def test_batchnorm_running_statistics_are_buffers_not_params():
    g, row = one_layer({"batchnorm": None}, "4x4x16")
    assert (row["params"], row["buffers"]) == (32, 32)
    t = g.analyze()["totals"]
    assert (t["params"], t["trainable_params"], t["non_trainable_params"], t["buffers"]) == \
        (32, 32, 0, 32)
    assert t["param_bytes"] == 4 * (32 + 32)    # buffers are stored: they count in memory
    assert g.buffer_shapes() == {"bn1.running_mean": (16,), "bn1.running_var": (16,)}


def test_param_shapes_follow_pytorch():
    g = cnncalc.load({"input": "10x10x4", "layers": [
        {"conv": {"K": 6, "F": 3, "groups": 2}}, "flatten", {"fc": {"units": 7}}]})
    assert g.param_shapes() == {"conv1.weight": (6, 2, 3, 3), "conv1.bias": (6,),
                                "fc1.weight": (7, 6 * 8 * 8), "fc1.bias": (7,)}


def test_flops_convention():
    # conv: 2*MACs + one add per output for the bias
    _, row = one_layer({"conv": {"K": 10, "F": 5, "P": 2}})
    assert row["flops"] == 2 * 768000 + 32 * 32 * 10
    _, row = one_layer({"maxpool": {"size": 2}}, "4x4x1")
    assert row["flops"] == 4 * 3          # F*F - 1 compares per output
    _, row = one_layer({"avgpool": {"size": 2}}, "4x4x1")
    assert row["flops"] == 4 * 4
    _, row = one_layer("relu", "4x4x2")
    assert row["flops"] == 32
    _, row = one_layer({"batchnorm": None}, "4x4x2")
    assert row["flops"] == 64
    _, row = one_layer("flatten", "4x4x2")
    assert row["flops"] == 0


@pytest.mark.parametrize("n,k,s,p,d,ceil,expected", [
    (32, 5, 1, 2, 1, False, 32), (7, 3, 2, 0, 1, False, 3), (7, 3, 3, 0, 1, False, 2),
    (224, 7, 2, 3, 1, False, 112), (5, 2, 2, 0, 1, True, 3), (6, 3, 3, 1, 1, True, 3),
    (9, 3, 1, 0, 2, False, 5),
])
def test_out_size(n, k, s, p, d, ceil, expected):
    assert out_size(n, k, s, p, p, d, ceil).size == expected


def test_ceil_mode_drops_window_starting_in_padding():
    # PyTorch: MaxPool2d(2, stride=2, padding=1, ceil_mode=True) on 4 -> 3, not 4
    assert out_size(4, 2, 2, 1, 1, 1, True).size == 3


@pytest.mark.parametrize("n,k,s", [(7, 3, 1), (32, 5, 1), (7, 3, 2), (8, 4, 2), (10, 2, 3)])
def test_same_padding_gives_ceil_n_over_s(n, k, s):
    pb, pa = same_padding(n, k, s)
    assert out_size(n, k, s, pb, pa).size == -(-n // s)
    if s == 1 and k % 2:
        assert pb == pa == (k - 1) // 2   # the lecture's (F - 1)/2


def test_shape_lecture_notation():
    assert Shape(3, 32, 16).lecture() == "16x32x3"
