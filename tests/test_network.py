"""cnncalc.Network: forward of every layer kind against naive references (float64), the planner,
branches, state dicts, batch-size changes, dtypes, dropout and errors.

Serial networks (``parallel=False``: one thread) keep the run short.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import reference as ref
from reference import spec_text as _spec

import cnncalc
from cnncalc.errors import TrainError

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _net(spec, dtype="float64", **kw):
    kw.setdefault("parallel", False)
    return cnncalc.Network(spec, dtype=dtype, seed=kw.pop("seed", 0), **kw)


def _x(shape, n=2, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)


def _one(input_, layer, n=2, **kw):
    net = _net(_spec(input_, [layer]), **kw)
    rng = np.random.default_rng(7)
    for v in net.params.values():
        if v.ndim == 1:
            v[...] += 0.3 * rng.standard_normal(v.shape)
    x = _x(net.graph.input_shape, n)
    return net, x, net.forward(x)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ forward vs references
CONV = [
    # input, options, stride, pad (t, l), dilation, groups
    ("7x6x3", "{filters: 4, size: 3, stride: 2, pad: 1}", (2, 2), (1, 1), (1, 1), 1),
    ("6x7x2", "{filters: 3, size: [3, 2], stride: [1, 2], pad: [1, 0, 0, 1]}", (1, 2), (1, 0),
     (1, 1), 1),
    ("7x7x2", "{filters: 2, size: 3, pad: 2, dilation: 2}", (1, 1), (2, 2), (2, 2), 1),
    ("5x5x4", "{filters: 6, size: 3, pad: 1, groups: 2, bias: false}", (1, 1), (1, 1), (1, 1), 2),
    ("6x5x3", "{filters: 3, size: 3, stride: 2, pad: same, groups: 3}", (2, 2), (0, 0), (1, 1), 3),
    ("8x8x2", "{filters: 3, size: 5, pad: 2}", (1, 1), (2, 2), (1, 1), 1),
]


@pytest.mark.parametrize("case", range(len(CONV)))
def test_conv_forward(case):
    input_, opts, stride, pad, dil, groups = CONV[case]
    net, x, y = _one(input_, f"conv: {opts}")
    node = net.graph.nodes[0]
    (t, _), (l, _) = node.pads(net.graph.convention)
    assert (t, l) == pad or opts.endswith("groups: 3}")
    o = node.out_shape
    y_ref = ref.conv2d_forward(x, net.params["conv1.weight"], net.params.get("conv1.bias"),
                               stride, (t, l), dil, groups, (o.h, o.w))
    _close(y, y_ref)


POOLS = [
    ("7x7x2", "maxpool: {size: 3, stride: 2}"),
    ("6x6x2", "maxpool: {size: 3, stride: 2, pad: 1, ceil_mode: true}"),
    ("7x7x2", "maxpool: {size: 2, ceil_mode: true}"),
    ("7x7x2", "maxpool: {size: 2, dilation: 2, stride: 1}"),
    ("6x6x2", "avgpool: {size: 3, stride: 2, pad: 1}"),
    ("7x7x2", "avgpool: {size: 3, stride: 2, pad: 1, ceil_mode: true, count_include_pad: false}"),
    ("7x7x2", "avgpool: {size: 2, ceil_mode: true}"),
]


@pytest.mark.parametrize("case", range(len(POOLS)))
def test_pool_forward(case):
    input_, layer = POOLS[case]
    net, x, y = _one(input_, layer)
    node = net.graph.nodes[0]
    L = node.layer
    (t, b), (l, r) = node.pads(net.graph.convention)
    o = node.out_shape
    if node.kind == "maxpool":
        y_ref, _ = ref.maxpool2d_forward(x, L.kernel_size, L.stride, (t, l), (o.h, o.w),
                                         L.dilation)
    else:
        y_ref = ref.avgpool2d_forward(x, L.kernel_size, L.stride, (t, l), (o.h, o.w),
                                      L.count_include_pad, (b, r))
    _close(y, y_ref)


def test_adaptive_and_global_pool_forward():
    for input_, size in (("7x5x2", "[2, 3]"), ("2x3x2", "4")):
        net, x, y = _one(input_, f"adaptive_avgpool: {{output_size: {size}}}")
        o = net.graph.output_shape
        _close(y, ref.adaptive_avgpool_forward(x, (o.h, o.w)))
    net, x, y = _one("4x3x3", "global_avgpool")
    assert y.shape == (2, 3)
    _close(y, x.mean(axis=(2, 3)))


ACTIVATIONS = {
    "relu": lambda x, p: ref.relu(x),
    "leaky_relu: {slope: 0.2}": lambda x, p: ref.leaky_relu(x, 0.2),
    "elu: {alpha: 0.7}": lambda x, p: ref.elu(x, 0.7),
    "sigmoid": lambda x, p: ref.sigmoid(x),
    "tanh": lambda x, p: ref.tanh(x),
    "mish": lambda x, p: ref.mish(x),
    "swish": lambda x, p: ref.swish(x),
    "softmax": lambda x, p: ref.softmax(x),
    "prelu": lambda x, p: ref.prelu(x, p["prelu1.weight"]),
    "prelu: {per_channel: true}": lambda x, p: ref.prelu(x, p["prelu1.weight"]),
    "lrn: {size: 3, alpha: 0.1, beta: 0.75, k: 1.5}":
        lambda x, p: ref.lrn_forward(x, 3, 0.1, 0.75, 1.5),
    "dropout: {p: 0.5}": lambda x, p: x,  # evaluation mode below
}


@pytest.mark.parametrize("layer", sorted(ACTIVATIONS))
def test_elementwise_forward(layer):
    net, x, _ = _one("4x3x5", layer)
    y = net.forward(x, training=False)
    _close(y, ACTIVATIONS[layer](x, net.params))


def test_prelu_starts_at_torch_default():
    net = _net(_spec("3x3x4", ["prelu: {per_channel: true}"]))
    np.testing.assert_array_equal(net.params["prelu1.weight"], np.full(4, 0.25))


def test_fc_flattens_nchw_and_maxout():
    net, x, y = _one("3x2x4", "fc: {units: 5}")
    _close(y, ref.linear(x.reshape(2, -1), net.params["fc1.weight"], net.params["fc1.bias"]))
    net, x, y = _one("3x2x4", "maxout: {units: 3, pieces: 2}")
    y_ref, _ = ref.maxout(x.reshape(2, -1), net.params["maxout1.weight"],
                          net.params["maxout1.bias"], 2)
    _close(y, y_ref)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_forward_and_running_stats(training):
    net = _net(_spec("4x3x3", ["batchnorm: {momentum: 0.2, eps: 0.001}"]))
    rng = np.random.default_rng(2)
    for v in (*net.params.values(), *net.buffers.values()):
        v[...] = rng.uniform(0.5, 1.5, v.shape)
    rm, rv = net.buffers["bn1.running_mean"].copy(), net.buffers["bn1.running_var"].copy()
    x = _x((3, 3, 4), 5)
    y = net.forward(x, training=training)
    y_ref, rm2, rv2 = ref.batchnorm_forward(x, net.params["bn1.weight"], net.params["bn1.bias"],
                                            rm, rv, training, 0.2, 0.001)
    _close(y, y_ref)
    _close(net.buffers["bn1.running_mean"], rm2)
    _close(net.buffers["bn1.running_var"], rv2)


def test_zeropad_add_concat_forward():
    net, x, y = _one("3x4x2", "zeropad: {padding: [1, 2, 0, 3]}")  # left, right, top, bottom
    _close(y, np.pad(x, ((0, 0), (0, 0), (0, 3), (1, 2))))
    net = _net(_spec("3x3x2", ["tanh: {name: a}", "sigmoid: {name: b, from: input}",
                               "add: {name: s, from: [a, b, input]}",
                               "concat: {from: [b, s, input]}"]))
    x = _x((2, 3, 3))
    s = np.tanh(x) + ref.sigmoid(x) + x
    _close(net.forward(x), np.concatenate([ref.sigmoid(x), s, x], axis=1))


def test_lenet_forward_matches_layerwise_reference():
    net = _net(SPECS / "lenet5.yaml")
    assert [line.split(":")[0] for line in net.plan] == [
        "conv_relu_maxpool", "conv_relu_maxpool", "flatten", "linear_relu", "linear_relu",
        "linear"]
    p = net.params
    x = _x((1, 28, 28), 2)
    h = ref.relu(ref.conv2d_forward(x, p["conv1.weight"], p["conv1.bias"], (1, 1), (2, 2),
                                    (1, 1), 1, (28, 28)))
    h, _ = ref.maxpool2d_forward(h, (2, 2), (2, 2), (0, 0), (14, 14))
    h = ref.relu(ref.conv2d_forward(h, p["conv2.weight"], p["conv2.bias"], (1, 1), (0, 0),
                                    (1, 1), 1, (10, 10)))
    h, _ = ref.maxpool2d_forward(h, (2, 2), (2, 2), (0, 0), (5, 5))
    h = h.reshape(2, -1)
    h = ref.relu(h @ p["fc1.weight"].T + p["fc1.bias"])
    h = ref.relu(h @ p["fc2.weight"].T + p["fc2.bias"])
    _close(net.forward(x), h @ p["fc3.weight"].T + p["fc3.bias"])
    # the generic (unfused) path computes the same
    net2 = _net(SPECS / "lenet5.yaml", fuse=False)
    net2.load_state_dict(net.state_dict())
    _close(net2.forward(x), net.forward(x))


# ------------------------------------------------------------------------------ planner
def test_planner_does_not_fuse_used_intermediates():
    spec = _spec("8x8x1", [
        "conv: {name: c1, filters: 2, size: 3, pad: 1}", "relu: {name: r1}",
        "maxpool: {name: p1, size: 2}",
        "conv: {name: c2, from: r1, filters: 2, size: 3, stride: 2, pad: 1}",  # r1 used twice
        "add: {name: s, from: [p1, c2]}",
        "conv: {name: c3, filters: 2, size: 3, pad: 1}", "relu: {name: r3}",
        "maxpool: {name: p3, size: 2, stride: 1}",                           # stride != size
        "conv: {name: c4, filters: 2, size: 2, pad: 0}", "relu: {name: r4}",
        "maxpool: {name: p4, size: 2}", "flatten",
        "fc: {name: f1, units: 3}", "relu: {name: fr}",
        "fc: {name: f2, from: f1, units: 3}", "add: {from: [fr, f2]}"])       # f1 used twice
    net = _net(spec)
    fused = [line for line in net.plan if line.startswith(("conv_relu", "linear_relu"))]
    assert fused == ["conv_relu_maxpool: c4 + r4 + p4 <- p3"]
    x = _x((1, 8, 8))
    ref_net = _net(spec, fuse=False)
    ref_net.load_state_dict(net.state_dict())
    _close(net.forward(x), ref_net.forward(x))
    dout = np.random.default_rng(0).standard_normal((2, 3))
    _close(net.backward(dout), ref_net.backward(dout))
    for k in net.grads:
        _close(net.grads[k], ref_net.grads[k])


def test_planner_runs_convolutions_that_read_one_value_together():
    """A convolution reading a value an earlier step read moves up to run right after it (the
    value still in cache): resnet20_cifar's projection shortcut right after its block's conv1,
    the inception block's three 1x1 branch heads together; every step still runs after the
    steps that make its inputs, and a training step computes bit for bit what the node order
    does."""
    from cnncalc.engine import plan

    for name, together in (("resnet20_cifar", [["layer2.0.conv1", "layer2.0.downsample.0"],
                                                ["layer3.0.conv1", "layer3.0.downsample.0"]]),
                           ("inception_block", [["b1_1x1", "b2_reduce", "b3_reduce"]])):
        net = _net(SPECS / f"{name}.yaml", dtype="float32")
        names = [st.op.name for st in net.steps]
        for group in together:
            i = names.index(group[0])
            assert names[i:i + len(group)] == group, names
        made = {"input"}
        for st in net.steps:
            assert made.issuperset(st.inputs), st.op.name
            made.add(st.output)
    real = plan._readers_together
    try:
        plan._readers_together = list
        in_node_order = _net(SPECS / "resnet20_cifar.yaml", dtype="float32", threads=2,
                             parallel=True)
    finally:
        plan._readers_together = real
    together = _net(SPECS / "resnet20_cifar.yaml", dtype="float32", threads=2, parallel=True)
    assert [st.op.name for st in in_node_order.steps] != [st.op.name for st in together.steps]
    x, y = _x((3, 32, 32), 4, dtype=np.float32), np.array([1, 2, 3, 4])
    assert in_node_order.loss_and_grads(x, y) == together.loss_and_grads(x, y)
    np.testing.assert_array_equal(in_node_order.flat_grads, together.flat_grads)


def test_conv_without_bias_fuses():
    spec = _spec("8x8x2", ["conv: {filters: 3, size: 3, pad: 1, bias: false}", "relu",
                           "maxpool: {size: 2}", "flatten", "fc: {units: 2, bias: false}",
                           "relu"])
    net, ref_net = _net(spec), _net(spec, fuse=False)
    assert net.plan[0].startswith("conv_relu_maxpool") and "linear_relu" in net.plan[2]
    ref_net.load_state_dict(net.state_dict())
    x = _x((2, 8, 8), 3)
    _close(net.forward(x), ref_net.forward(x))
    d = np.ones((3, 2))
    _close(net.backward(d), ref_net.backward(d))
    for k in net.grads:
        _close(net.grads[k], ref_net.grads[k])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_relu_fuses(training):
    """batchnorm -> relu runs as one batchnorm_relu step, on (N, C, H, W) (the slice kernels)
    and on (N, F) (NumPy), and agrees with the unfused plan; a batchnorm whose output is read
    by more than the ReLU stays unfused."""
    spec = _spec("6x6x2", ["conv: {filters: 3, size: 3, pad: 1}", "batchnorm", "relu",
                           "flatten", "fc: {units: 5}", "batchnorm", "relu",
                           "fc: {units: 5}", "batchnorm: {name: b3}", "relu: {name: r3}",
                           "add: {from: [r3, b3]}", "fc: {units: 2}"])
    net, ref_net = _net(spec, threads=2), _net(spec, fuse=False)
    assert [ln.split(":")[0] for ln in net.plan].count("batchnorm_relu") == 2
    _same_as_unfused(net, ref_net, training)


def _same_as_unfused(net, ref_net, training):
    """Outputs, input gradients, parameter gradients and running statistics of a fused plan
    and the one-op-per-node plan (same weights) agree, on a (6, 2, 6, 6) batch."""
    ref_net.load_state_dict(net.state_dict())
    x = _x((2, 6, 6), 6)
    _close(net.forward(x, training), ref_net.forward(x, training))
    d = np.random.default_rng(4).standard_normal((6, 2))
    _close(net.backward(d), ref_net.backward(d))
    for k in net.grads:
        _close(net.grads[k], ref_net.grads[k])
    for k in net.buffers:
        _close(net.buffers[k], ref_net.buffers[k])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_add_relu_fuses(training):
    """batchnorm -> add -> relu runs as one batchnorm_add_relu step when the add's other input
    already exists: the identity block fuses its bn2, the projection block its shortcut's
    batch norm (whose partner comes first), on (N, C, H, W) and on (N, F); outputs, gradients
    (the input's too: it feeds both branches) and running statistics agree with the unfused
    plan. A batchnorm whose add partner comes later (and is no batch norm) or whose add is not
    followed by a ReLU stays unfused."""
    spec = _spec("6x6x2", [
        "conv: {name: c0, filters: 3, size: 3, pad: 1}",
        "conv: {name: c1, filters: 3, size: 3, pad: 1}", "batchnorm: {name: b1}",
        "add: {name: a1, from: [b1, c0]}", "relu: {name: r1}",
        "conv: {name: c2, filters: 4, size: 3, stride: 2, pad: 1}", "batchnorm: {name: b2}",
        "conv: {name: p2, from: r1, filters: 4, size: 1, stride: 2}",
        "batchnorm: {name: q2}", "add: {name: a2, from: [b2, q2]}", "relu: {name: r2}",
        "flatten: {name: fl}", "fc: {name: g3, units: 5}", "fc: {name: f3, from: fl, units: 5}",
        "batchnorm: {name: b3}", "add: {name: a3, from: [g3, b3]}", "relu: {name: r3}",
        "fc: {name: f4, units: 5}", "batchnorm: {name: b4}", "fc: {name: g4, from: r3, units: 5}",
        "add: {name: a4, from: [b4, g4]}", "relu: {name: r4}",
        "fc: {name: f5, units: 5}", "batchnorm: {name: b5}", "add: {name: a5, from: [b5, r4]}",
        "fc: {units: 2}"])
    net, ref_net = _net(spec, threads=2), _net(spec, fuse=False)
    fused = [ln for ln in net.plan if ln.startswith("batchnorm_add_relu")]
    assert [ln.split(": ")[1].split(" <-")[0] for ln in fused] == [
        "b1 + a1 + r1", "q2 + a2 + r2", "b3 + a3 + r3"]
    _same_as_unfused(net, ref_net, training)


def _same_bits_over_steps(folded, plain, x, d, training, steps: int) -> None:
    """Two plans of one net (same weights) give the same outputs, input and parameter
    gradients and running statistics, bit for bit, over ``steps`` steps that change the
    weights (a gradient step scaled to stay finite)."""
    for _ in range(steps):
        np.testing.assert_array_equal(folded.forward(x, training), plain.forward(x, training))
        np.testing.assert_array_equal(folded.backward(d), plain.backward(d))
        np.testing.assert_array_equal(folded.flat_grads, plain.flat_grads)
        assert np.isfinite(folded.flat_grads).all()
        for k in folded.buffers:
            np.testing.assert_array_equal(folded.buffers[k], plain.buffers[k])
        lr = 0.01 / (1.0 + np.abs(folded.flat_grads).max())
        for net in (folded, plain):
            net.flat_params -= lr * net.flat_grads


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_relu_folded_into_lanes_conv(training):
    """float32 ``conv -> batchnorm -> relu -> conv`` where the second conv runs Winograd in the
    vector lanes: that conv applies the batch norm + ReLU as it reads its input (the plan says
    so), and every output, gradient and running statistic equals, bit for bit, the same plan
    with the batch norm's own normalising pass; a batch norm whose ReLU output has a second
    reader is not folded."""
    spec = _spec("8x8x16", [
        "conv: {name: c1, filters: 16, size: 3, pad: 1, bias: false}",
        "batchnorm: {name: b1}", "relu: {name: r1}",
        "conv: {name: c2, filters: 16, size: 3, pad: 1}", "batchnorm: {name: b2}",
        "relu: {name: r2}", "conv: {name: c3, filters: 16, size: 3, pad: 1}",
        "add: {from: [c3, r2]}", "flatten", "fc: {units: 3}"])
    folded, plain = (_net(spec, dtype="float32", threads=2, seed=3) for _ in range(2))
    assert "batchnorm_relu: b1 + r1 <- c1 (applied by c2; input gradient by c1)" in folded.plan
    assert "batchnorm_relu: b2 + r2 <- c2" in folded.plan          # r2 has two readers
    for st in plain.steps:                                          # undo the fold
        if getattr(st.op, "folded_into", None) is not None:
            st.op.folded_into.input_bn, st.op.folded_into = None, None
    assert not any("applied by" in ln for ln in plain.plan)
    x = _x((16, 8, 8), 5, dtype=np.float32) * 2 + 0.5
    d = np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32)
    _same_bits_over_steps(folded, plain, x, d, training, 2)
    # and both against the one-op-per-node plan, to float32 rounding
    ref_net = _net(spec, dtype="float32", fuse=False)
    ref_net.load_state_dict(folded.state_dict())
    np.testing.assert_allclose(folded.forward(x, training), ref_net.forward(x, training),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_relu_folded_into_maxpool(training):
    """``batchnorm -> relu -> maxpool`` (2x2 on an even plane): the pooling applies the batch
    norm + ReLU as it reads its input (the plan says so), and every output, gradient and
    running statistic equals, bit for bit, the same plan with the batch norm's own
    normalising pass, over steps that change the weights (float32 and float64); an odd plane
    (the pooling's general kernel) is not folded."""
    for dtype in ("float32", "float64"):
        spec = _spec("8x8x3", [
            "conv: {name: c1, filters: 4, size: 3, pad: 1}", "batchnorm: {name: b1}",
            "relu: {name: r1}", "maxpool: {name: p1, size: 2}",
            "conv: {name: c2, filters: 4, size: 2}", "batchnorm: {name: b2}",
            "relu: {name: r2}", "maxpool: {name: p2, size: 2}", "flatten",
            "fc: {units: 3}"])
        folded, plain = (_net(spec, dtype=dtype, threads=2, seed=3) for _ in range(2))
        assert "batchnorm_relu: b1 + r1 <- c1 (applied by p1)" in folded.plan
        assert "batchnorm_relu: b2 + r2 <- c2" in folded.plan      # 7x7: not folded
        for st in plain.steps:                                      # undo the fold
            if getattr(st.op, "folded_into", None) is not None:
                st.op.folded_into.input_bn, st.op.folded_into = None, None
        assert not any("applied by" in ln for ln in plain.plan)
        x = _x((3, 8, 8), 5, dtype=np.dtype(dtype).type)
        d = np.random.default_rng(4).standard_normal((5, 3)).astype(dtype)
        _same_bits_over_steps(folded, plain, x, d, training, 2)


def _undo_grad_folds(net) -> int:
    """Undo the planner's batch-norm input-gradient folds: the batch norms run their own
    input-gradient pass again. The number undone."""
    undone = 0
    for st in net.steps:
        if getattr(st.op, "grad_folded_into", None) is not None:
            st.op.grad_folded_into = None
            undone += 1
    return undone


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_input_gradient_folded_into_lanes_conv(training, threads):
    """float32: a batch norm (plain, + ReLU, + residual + ReLU) whose input only a Winograd
    lanes conv without bias makes has its input-gradient pass applied by that conv's backward
    (the plan says so), and every output, gradient and running statistic equals, bit for bit,
    the same plan with the batch norms' own input-gradient passes, over steps that change the
    weights. Not folded: a conv with bias, a conv whose output has a second reader. b1's output
    gradient is the sum of two readers' (a join buffer, held until c1 has read it: c0's
    backward, between b1's and c1's, joins the input's gradient in a buffer of that shape);
    b4 is folded both ways (its normalising pass into c5)."""
    spec = _spec("8x8x16", [
        "conv: {name: c1, filters: 16, size: 3, pad: 1, bias: false}",
        "conv: {name: c0, from: input, filters: 16, size: 3, pad: 1}",
        "batchnorm: {name: b1, from: c1}", "relu: {name: r1}",
        "conv: {name: c2, filters: 16, size: 3, pad: 1, bias: false}",
        "batchnorm: {name: b2}", "add: {name: a2, from: [b2, r1]}", "relu: {name: r2}",
        "conv: {name: c3, filters: 16, size: 3, pad: 1, bias: false}",
        "batchnorm: {name: b3}",
        "conv: {name: c4, filters: 16, size: 3, pad: 1, bias: false}",
        "batchnorm: {name: b4}", "relu: {name: r4}",
        "conv: {name: c5, filters: 16, size: 3, pad: 1, bias: false}",
        "conv: {name: c6, filters: 16, size: 3, pad: 1}", "batchnorm: {name: b6}",
        "conv: {name: c7, filters: 16, size: 3, pad: 1, bias: false}",
        "add: {name: a7, from: [c7, b6]}", "batchnorm: {name: b7, from: c7}",
        "add: {name: a8, from: [a7, b7]}", "add: {name: a0, from: [c0, input]}",
        "add: {name: a9, from: [a8, a0]}", "flatten", "fc: {units: 3}"])
    folded, plain = (_net(spec, dtype="float32", threads=threads, seed=3) for _ in range(2))
    plan = "\n".join(folded.plan)
    for line in ("batchnorm_relu: b1 + r1 <- c1 (input gradient by c1)",
                 "batchnorm_add_relu: b2 + a2 + r2 <- c2, r1 (input gradient by c2)",
                 "batchnorm: b3 <- c3 (input gradient by c3)",
                 "batchnorm_relu: b4 + r4 <- c4 (applied by c5; input gradient by c4)",
                 "batchnorm: b6 <- c6", "batchnorm: b7 <- c7"):
        assert line in folded.plan, plan
    assert _undo_grad_folds(plain) == 4
    assert not any("input gradient" in ln for ln in plain.plan)
    x = _x((16, 8, 8), 6, dtype=np.float32) * 2 + 0.5
    d = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    _same_bits_over_steps(folded, plain, x, d, training, 3)
    # and both against the one-op-per-node plan, to float32 rounding
    ref_net = _net(spec, dtype="float32", fuse=False)
    ref_net.load_state_dict(folded.state_dict())
    np.testing.assert_allclose(folded.forward(x, training), ref_net.forward(x, training),
                               rtol=1e-4, atol=1e-4)
    gf, gr = folded.backward(d), ref_net.backward(d)
    np.testing.assert_allclose(gf, gr, rtol=1e-3, atol=1e-3 * np.abs(gr).max())


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_weights_made_before_the_forward_follow_the_weights(threads, monkeypatch):
    """The Winograd layers' weight transforms run together before a forward
    (``Op.weight_work``), and the layers then skip their own: every forward sees the weights
    as they are then (changed in place between forwards), bit for bit as a layer that makes
    its own; and the forward does run them (a transform that is not made fails the check)."""
    from cnncalc.engine import network as netmod

    spec = _spec("8x8x16", [
        "conv: {name: c1, filters: 32, size: 3, pad: 1}", "relu",
        "conv: {name: c2, filters: 16, size: 3, pad: 1}", "flatten", "fc: {units: 3}"])
    made, own = (_net(spec, dtype="float32", threads=threads, seed=3) for _ in range(2))
    assert sum(bool(st.op.weight_work()) for st in made.steps) == 2
    x = _x((16, 8, 8), 4, dtype=np.float32)
    d = np.random.default_rng(4).standard_normal((4, 3)).astype(np.float32)
    calls = []
    real = netmod.Network._weight_work

    def counted(self):
        calls.append(self)
        if self is own:    # ``own``: no work made ahead, each conv makes its own
            self._ctx.forward_count += 1
            return None
        return real(self)

    monkeypatch.setattr(netmod.Network, "_weight_work", counted)
    for training in (True, False, True):
        np.testing.assert_array_equal(made.forward(x, training), own.forward(x, training))
        np.testing.assert_array_equal(made.backward(d), own.backward(d))
        np.testing.assert_array_equal(made.flat_grads, own.flat_grads)
        for net in (made, own):
            net.flat_params -= 0.5 * net.flat_grads
    assert calls.count(made) == 3
    # a forward whose weight work did not run would use the previous weights: it differs
    made.flat_params += 0.25
    monkeypatch.setattr(netmod.Network, "_weight_work", lambda self: None)
    stale = made.forward(x, True)
    monkeypatch.setattr(netmod.Network, "_weight_work", real)
    assert not np.array_equal(stale, made.forward(x, True))


def test_batchnorm_add_relu_shortcut_gradient_alone():
    """When only the shortcut needs its gradient, the fused step still gives it: the same
    values (ReLU-masked dy, zero where the ReLU is off) as beside the batch norm's dx."""
    spec = _spec("6x6x2", ["conv: {name: c0, filters: 3, size: 3, pad: 1}",
                           "conv: {name: c1, filters: 3, size: 3, pad: 1}",
                           "batchnorm: {name: b1}", "add: {name: a1, from: [b1, c0]}",
                           "relu: {name: r1}", "flatten", "fc: {units: 2}"])
    op = next(st.op for st in _net(spec).steps if st.fused == "batchnorm_add_relu")
    rng = np.random.default_rng(0)
    y = op.forward([rng.standard_normal((4, 3, 6, 6)), rng.standard_normal((4, 3, 6, 6))], True)
    dy = rng.standard_normal(y.shape)
    both = op.backward(dy, [True, True])[1].copy()
    dx, ds = op.backward(dy, [False, True])
    assert dx is None
    np.testing.assert_array_equal(ds, np.where(y > 0, dy, 0))
    np.testing.assert_array_equal(ds, both)


# -------------------------------------------------------------------------------- properties
def test_conv_commutes_with_translation():
    net = _net(_spec("16x16x2", ["conv: {filters: 3, size: 3, pad: 1}", "relu",
                                 "conv: {filters: 2, size: 3, pad: 1}"]))
    x = np.zeros((1, 2, 16, 16))
    x[:, :, 5:9, 4:8] = _x((2, 4, 4), 1)
    y = net.forward(x)
    for dy_, dx_ in ((2, 3), (-1, 2), (3, -2)):
        ys = net.forward(np.roll(x, (dy_, dx_), axis=(2, 3)))
        # away from the borders (the support stays inside) shifting commutes with the network
        _close(ys[:, :, 3:13, 3:13], np.roll(y, (dy_, dx_), axis=(2, 3))[:, :, 3:13, 3:13])


def test_state_dict_round_trip_and_copies():
    spec = SPECS / "cifar_bn.yaml"
    a = _net(spec, dtype="float32", seed=1)
    b = _net(spec, dtype="float32", seed=2)
    sd = a.state_dict()
    assert set(sd) == set(a.params) | set(a.buffers)
    assert "stage1.0.bn1.running_var" in sd or any(k.endswith("running_var") for k in sd)
    sd[next(iter(sd))][...] = 123.0  # a copy: the network is untouched
    assert not np.any(a.flat_params == 123.0)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    x = _x((3, 32, 32), 2, dtype=np.float32)
    np.testing.assert_array_equal(a.forward(x, training=False), b.forward(x, training=False))


def test_load_state_dict_errors():
    net = _net(SPECS / "lenet5.yaml")
    sd = net.state_dict()
    bad = dict(sd)
    del bad["fc1.bias"]
    with pytest.raises(TrainError, match="missing keys: fc1.bias"):
        net.load_state_dict(bad)
    with pytest.raises(TrainError, match="unexpected keys: extra.weight"):
        net.load_state_dict({**sd, "extra.weight": np.zeros(2)})
    bad = dict(sd, **{"conv1.weight": np.zeros((6, 1, 3, 3))})
    with pytest.raises(TrainError, match=r"'conv1.weight' has shape \(6, 1, 3, 3\)"):
        net.load_state_dict(bad)
    before = net.flat_params.copy()
    with pytest.raises(TrainError):  # nothing is changed when one entry is wrong
        net.load_state_dict(dict({k: v + 1 for k, v in sd.items()},
                                 **{"fc3.bias": np.zeros(3)}))
    np.testing.assert_array_equal(net.flat_params, before)
    net.load_state_dict({**sd, "bn.num_batches_tracked": np.array(3)})  # torch's extra key


def test_params_are_views_of_flat_buffers():
    net = _net(SPECS / "lenet5.yaml", dtype="float32")
    assert net.flat_params.size == 61706 == net.n_params
    for k, v in net.params.items():
        assert np.shares_memory(v, net.flat_params) and v.dtype == np.float32
        assert np.shares_memory(net.grads[k], net.flat_grads)
        assert v.shape == net.graph.param_shapes()[k]
    net.flat_params[...] = 0
    assert not net.params["fc3.weight"].any()
    x = _x((1, 28, 28), 4, dtype=np.float32)
    net.flat_params[...] = np.random.default_rng(0).standard_normal(net.n_params) * 0.1
    net.loss_and_grads(x, np.array([1, 2, 3, 4]))
    assert np.abs(net.grads["conv1.weight"]).sum() > 0  # written through to flat_grads
    assert np.abs(net.flat_grads[:150]).sum() > 0


def test_batch_size_change_and_predict():
    net = _net(SPECS / "lenet5.yaml", dtype="float32")
    x = _x((1, 28, 28), 7, dtype=np.float32)
    full = net.forward(x, training=False)
    for n in (3, 7, 1):
        np.testing.assert_allclose(net.forward(x[:n], training=False), full[:n], rtol=1e-5,
                                   atol=1e-6)
        loss = net.loss_and_grads(x[:n], np.arange(n) % 10)
        assert np.isfinite(loss)
    np.testing.assert_allclose(net.predict(x, batch_size=3), full, rtol=1e-5, atol=1e-6)


def test_gradients_independent_of_buffer_reuse():
    """Two identical steps give identical gradients; a different batch in between does not
    leak into the next step's results."""
    net = _net(SPECS / "lenet5.yaml", dtype="float32")
    x = _x((1, 28, 28), 4, dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    l1 = net.loss_and_grads(x, y)
    g1 = net.flat_grads.copy()
    net.loss_and_grads(_x((1, 28, 28), 5, seed=9, dtype=np.float32), np.arange(5))
    l2 = net.loss_and_grads(x, y)
    assert l1 == l2
    np.testing.assert_array_equal(g1, net.flat_grads)


def test_gradient_sums_of_shared_inputs_reuse_buffers():
    """Where a value has several readers (the input of the inception block feeds four
    branches; a residual block's input two), its gradient is summed into buffers the network
    keeps: two identical steps repeat bit for bit across a different batch in between, the
    returned dx is the caller's own (not a buffer the next backward writes), and it equals the
    sum over the readers (the float64 engine against plain additions)."""
    net = _net(SPECS / "inception_block.yaml", dtype="float64")
    shape = net.graph.input_shape
    x = _x(shape, 3)
    dout = np.random.default_rng(3).standard_normal((3, net.graph.output_shape.size))
    net.forward(x)
    dx1 = net.backward(dout)
    g1 = net.flat_grads.copy()
    net.forward(_x(shape, 3, seed=9))
    net.backward(dout * 2)
    net.forward(x)
    dx2 = net.backward(dout)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(g1, net.flat_grads)
    assert not np.shares_memory(dx1, dx2)
    plain = _net(SPECS / "inception_block.yaml", dtype="float64")
    plain._join_sum = lambda a, b, out: a + b
    plain.forward(x)
    np.testing.assert_allclose(plain.backward(dout), dx1, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(plain.flat_grads, g1, rtol=1e-13, atol=1e-15)


def test_residual_gradient_parts_summed_by_the_batch_norm_as_the_join_would():
    """A residual block's output has two readers (the next block's conv1 and its shortcut):
    its two gradient parts reach the ``batchnorm_add_relu`` step's backward unsummed, and the
    step adds them as it reads them. Gradients and dx equal, bit for bit, those of the same
    network summing the parts in a pass of its own first (float32, 2 threads)."""
    x = _x((3, 32, 32), 4, dtype=np.float32)
    y = np.array([0, 3, 5, 9])
    nets = [_net(SPECS / "resnet20_cifar.yaml", dtype="float32", threads=2, parallel=True)
            for _ in range(2)]
    joined = nets[1]
    joined._takes_parts = dict.fromkeys(joined._takes_parts, False)
    parts_seen = []
    for st in nets[0].steps:
        if st.op.takes_gradient_parts:
            def spy(dy, need, real=st.op.backward):
                parts_seen.append(isinstance(dy, tuple))
                return real(dy, need)
            st.op.backward = spy
    results = []
    for net in nets:
        net.forward(x)
        loss, dl = net.loss(x, y)
        dx = net.backward(dl)
        results.append((loss, dx, net.flat_grads.copy()))
    # layer1.0 .. layer3.1 end in a batchnorm_add_relu whose output two layers read
    assert parts_seen.count(True) == 8 and len(parts_seen) == 9
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])


def test_residual_gradient_parts_on_features():
    """The same on (N, F) features: a ``batchnorm_add_relu`` after an fc whose output two
    layers read gets its gradient in two parts, and the network agrees with the unfused one
    (float64)."""
    spec = _spec("1x1x6", [
        "fc: {name: f0, units: 6}", "relu: {name: r0}",
        "fc: {name: f1, units: 6}", "batchnorm: {name: b1}", "add: {name: a1, from: [b1, r0]}",
        "relu: {name: r1}",
        "fc: {name: f2, units: 6}", "batchnorm: {name: b2}", "add: {name: a2, from: [b2, r1]}",
        "relu: {name: r2}", "fc: {name: out, units: 3}"])
    net, ref = _net(spec), _net(spec, fuse=False)
    ref.load_state_dict(net.state_dict())
    assert net._takes_parts["r1"] and "batchnorm_add_relu: b1 + a1 + r1 <- f1, r0" in net.plan
    x = _x((6, 1, 1), 5)
    d = np.random.default_rng(1).standard_normal((5, 3))
    _close(net.forward(x), ref.forward(x))
    _close(net.backward(d), ref.backward(d))
    for k in net.grads:
        _close(net.grads[k], ref.grads[k])


def test_residual_gradient_of_three_readers():
    """A ``batchnorm_add_relu`` output that three convolutions read: the first two parts wait
    as a pair, the third makes the network sum them (a join buffer) and add it; the result
    agrees with the unfused network and repeats bit for bit on the next step."""
    spec = _spec("8x8x4", [
        "conv: {name: c0, filters: 4, size: 3, pad: 1}", "relu: {name: r0}",
        "conv: {name: c1, filters: 4, size: 3, pad: 1}", "batchnorm: {name: b1}",
        "add: {name: a1, from: [b1, r0]}", "relu: {name: r1}",
        "conv: {name: p1, from: r1, filters: 4, size: 3, pad: 1}",
        "conv: {name: p2, from: r1, filters: 4, size: 1}",
        "conv: {name: p3, from: r1, filters: 4, size: 3, pad: 1}",
        "add: {name: s1, from: [p1, p2]}", "add: {name: s2, from: [s1, p3]}",
        "global_avgpool: {name: g}", "flatten", "fc: {name: out, units: 3}"])
    net, ref = _net(spec, threads=2, parallel=True), _net(spec, fuse=False)
    ref.load_state_dict(net.state_dict())
    assert net._takes_parts["r1"]
    x = _x((4, 8, 8), 6)
    d = np.random.default_rng(1).standard_normal((6, 3))
    _close(net.forward(x), ref.forward(x))
    dx = net.backward(d)
    _close(dx, ref.backward(d))
    for k in net.grads:
        _close(net.grads[k], ref.grads[k])
    net.forward(x)
    np.testing.assert_array_equal(net.backward(d), dx)


def test_float32_matches_float64():
    n64 = _net(SPECS / "lenet5.yaml", dtype="float64")
    n32 = _net(SPECS / "lenet5.yaml", dtype="float32")
    n32.load_state_dict(n64.state_dict())
    x = _x((1, 28, 28), 4)
    y64, y32 = n64.forward(x), n32.forward(x)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    d = np.random.default_rng(0).standard_normal(y64.shape)
    dx64, dx32 = n64.backward(d), n32.backward(d)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx64, rtol=1e-3, atol=1e-5)
    for k in n64.grads:
        scale = np.abs(n64.grads[k]).max()
        np.testing.assert_allclose(n32.grads[k], n64.grads[k], atol=1e-4 * scale, err_msg=k)


def test_dropout_training_and_eval():
    net = _net(_spec("10x10x4", ["dropout: {p: 0.25}"]), seed=3)
    x = np.ones((8, 4, 10, 10))
    np.testing.assert_array_equal(net.forward(x, training=False), x)
    y = net.forward(x, training=True)
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert 0.15 < (y == 0).mean() < 0.35
    dx = net.backward(np.full(y.shape, 2.0))
    np.testing.assert_array_equal(dx, 2.0 * y)  # the same mask scales the gradient
    again = _net(_spec("10x10x4", ["dropout: {p: 0.25}"]), seed=3)
    np.testing.assert_array_equal(again.forward(x), y)  # the seed fixes the masks
    again.rng = np.random.default_rng(3)  # a new generator is used from then on
    np.testing.assert_array_equal(again.forward(x), _net(_spec("10x10x4", [
        "dropout: {p: 0.25}"]), seed=3).forward(x))


def test_init_seed_and_overrides():
    spec = _spec("6x6x1", ["conv: {filters: 2, size: 3, init: zeros}", "flatten",
                           "fc: {units: 3, init: 'normal:0.5'}"])
    with pytest.warns(UserWarning, match="symmetry"):
        a = _net(spec, init="he", seed=4)
    with pytest.warns(UserWarning):
        b = _net(spec, init="he", seed=4)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not a.params["conv1.weight"].any()
    assert 0.2 < a.params["fc1.weight"].std() < 1.0
    assert not a.params["fc1.bias"].any()


def test_network_accepts_path_text_and_graph():
    text = (SPECS / "lenet5.yaml").read_text()
    for g in (str(SPECS / "lenet5.yaml"), text, cnncalc.load(text)):
        assert _net(g, dtype="float32").n_params == 61706


def test_errors():
    with pytest.raises(TrainError, match="float32 or float64"):
        _net(SPECS / "lenet5.yaml", dtype="int32")
    net = _net(SPECS / "lenet5.yaml")
    with pytest.raises(TrainError, match="backward"):
        net.backward(np.zeros((2, 10)))
    with pytest.raises(TrainError, match=r"expects \(N, 1, 28, 28\)"):
        net.forward(np.zeros((2, 3, 28, 28)))
    net.forward(np.zeros((2, 28, 28)))  # a channel axis of 1 may be left out
    with pytest.raises(TrainError, match="dout has shape"):
        net.backward(np.zeros((3, 10)))
    with pytest.raises(TrainError, match=r"labels must lie in \[0, 10\)"):
        net.loss(np.zeros((2, 1, 28, 28)), np.array([0, 10]))
    with pytest.raises(TrainError, match="integer class indices"):
        net.loss(np.zeros((2, 1, 28, 28)), np.array([0.0, 1.0]))


def test_engine_not_imported_by_analysis():
    import subprocess

    code = ("import sys, cnncalc; g = cnncalc.load('specs/lenet5.yaml'); g.analyze(); "
            "assert 'cnncalc.engine' not in sys.modules and 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SPECS.parent)


def test_need_dx_false_and_flush_denormals():
    def flushing():
        return np.float32(np.finfo(np.float32).tiny) * np.float32(0.5) == 0

    assert not flushing()
    net = _net(SPECS / "lenet5.yaml", dtype="float32")
    assert not flushing()               # creating a network leaves the caller's thread alone
    if not numba.config.DISABLE_JIT:
        with net.thread_state():
            assert flushing()           # FTZ on during an engine call ...
        assert not flushing()           # ... and restored afterwards
    x = _x((1, 28, 28), 3, dtype=np.float32)
    d = np.ones((3, 10), np.float32)
    net.forward(x)
    dx = net.backward(d)
    assert not flushing()
    g = net.flat_grads.copy()
    net.forward(x)
    assert net.backward(d, need_dx=False) is None
    np.testing.assert_array_equal(net.flat_grads, g)
    assert dx.shape == x.shape and np.abs(dx).sum() > 0
