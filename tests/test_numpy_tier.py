"""The NumPy tier (cnncalc.engine.numpy_tier) against the compiled kernels: every layer kind of
reference.KINDS plus the conv/pool option mixes of test_network, forward, input gradient,
parameter gradients and batch-norm running statistics, in float64 and float32; the tier switch
on a live network; the NumPy softmax cross-entropy.
"""
from __future__ import annotations

import numpy as np
import pytest
from reference import KINDS, case_spec
from reference import spec_text as _spec
from test_network import CONV, POOLS

import cnncalc
from cnncalc.engine import numpy_tier
from cnncalc.engine.numpy_tier import NUMPY_TIER

SPECS = {f"kind-{k}": case_spec(k) for k in sorted(KINDS)}
SPECS.update({f"conv-{i}": _spec(c[0], [f"conv: {c[1]}"]) for i, c in enumerate(CONV)})
SPECS.update({f"pool-{i}": _spec(p[0], [p[1]]) for i, p in enumerate(POOLS)})
SPECS["bn-conv"] = _spec("6x5x3", ["conv: {filters: 4, size: 3, pad: 1}", "batchnorm",
                                   "relu", "maxpool: {size: 2}", "flatten", "fc: {units: 3}"])
SPECS["adaptive-up"] = _spec("2x3x2", ["adaptive_avgpool: {output_size: 4}"])
SPECS["frozen-stem"] = _spec("6x6x2", ["conv: {filters: 3, size: 3, trainable: false}",
                                       "batchnorm: {trainable: false}", "relu", "flatten",
                                       "fc: {units: 3}"])
SPECS["bn-fc"] = _spec("3x3x2", ["flatten", "fc: {units: 5}", "batchnorm", "relu",
                                 "fc: {units: 3}"])
TOL = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-4, atol=2e-5)}


def _pair(spec, dtype):
    """Two identical serial networks, the second on the NumPy tier."""
    nets = [cnncalc.Network(spec, dtype=dtype, seed=3, parallel=False) for _ in range(2)]
    rng = np.random.default_rng(5)
    for key, v in nets[0].params.items():   # biases and batch-norm gammas off their defaults
        if v.ndim == 1:
            v[...] += 0.3 * rng.standard_normal(v.shape)
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    nets[1].use_tier(NUMPY_TIER)
    return nets


def _step(net, x, dout, training):
    y = net.forward(x, training=training)
    dx = net.backward(dout)
    return y, dx, {k: v.copy() for k, v in net.grads.items()}, net.state_dict()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_tier_equals_compiled_kernels(name, dtype):
    graph = cnncalc.load(SPECS[name])
    if numpy_tier.unsupported(graph):
        pytest.skip(f"not on the NumPy tier: {numpy_tier.unsupported(graph)}")
    compiled, tier = _pair(graph, dtype)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, *graph.input_shape)).astype(dtype)
    out = compiled.forward(x, training=False)   # the shape only: no statistics updated
    dout = rng.standard_normal(out.shape).astype(dtype)
    for training in (True, False):
        want = _step(compiled, x, dout, training)
        got = _step(tier, x, dout, training)
        for a, b in zip(got[:2], want[:2]):
            assert a.dtype == b.dtype == np.dtype(dtype)
            np.testing.assert_allclose(a, b, **TOL[dtype])
        for d_got, d_want in zip(got[2:], want[2:]):
            assert d_got.keys() == d_want.keys()
            for k in d_want:
                np.testing.assert_allclose(d_got[k], d_want[k], err_msg=k, **TOL[dtype])


def test_every_kind_has_a_numpy_tier_and_a_missing_one_is_named(monkeypatch):
    assert all(not numpy_tier.unsupported(cnncalc.load(case_spec(k))) for k in KINDS)
    from cnncalc.engine import ops

    table = numpy_tier._implementations()
    del table[ops.AdaptiveAvgPoolOp]
    monkeypatch.setattr(numpy_tier, "_implementations", lambda: table)
    assert numpy_tier.unsupported(cnncalc.load(case_spec("adaptive_avgpool"))) == \
        ["adaptive_avgpool"]
    assert numpy_tier.unsupported(cnncalc.load(SPECS["bn-conv"])) == []
    with pytest.raises(cnncalc.errors.TrainError, match="adaptive_avgpool"):
        cnncalc.Network(case_spec("adaptive_avgpool"), parallel=False).use_tier(NUMPY_TIER)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_cross_entropy_matches_kernel(dtype):
    from cnncalc.kernels.loss import softmax_cross_entropy

    rng = np.random.default_rng(0)
    z = (4 * rng.standard_normal((7, 5))).astype(dtype)
    y = rng.integers(0, 5, 7)
    loss, d = numpy_tier.softmax_cross_entropy(z, y)
    want_loss, want_d = softmax_cross_entropy(z, y)
    assert d.dtype == np.dtype(dtype)
    assert loss == pytest.approx(want_loss, rel=1e-6 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(d, want_d, **TOL[dtype])


def test_switching_tiers_mid_training_matches_compiled_training():
    """LeNet-5 (the generated-chain path) trained 6 SGD steps on the compiled kernels equals,
    to float rounding, 2 steps on the NumPy tier, then 4 compiled ones on the same buffers."""
    from cnncalc import optim

    rng = np.random.default_rng(2)
    xs = rng.standard_normal((6, 16, 1, 28, 28)).astype(np.float32)
    ys = rng.integers(0, 10, (6, 16))

    def train(switch_at):
        net = cnncalc.Network("specs/lenet5.yaml", dtype="float32", seed=0, threads=1)
        opt = optim.create("momentum", lr=0.05)
        losses = []
        for t in range(6):
            net.use_tier(NUMPY_TIER if t < switch_at else None)
            loss, dl = net.loss(xs[t], ys[t])
            net.backward(dl, need_dx=False)
            opt.step({"all": net.flat_params}, {"all": net.flat_grads}, lr=0.05)
            losses.append(loss)
        return net, losses, opt

    ref_net, ref_losses, ref_opt = train(0)
    net, losses, opt = train(2)
    assert net.tier is None and net.fast_path is not None    # back on the generated chain
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    np.testing.assert_allclose(net.flat_params, ref_net.flat_params, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(opt.state_dict()["state"]["all"]["velocity"],
                               ref_opt.state_dict()["state"]["all"]["velocity"],
                               rtol=1e-3, atol=1e-5)
    # the parameter views still alias the flat buffer the optimizer updates
    assert np.shares_memory(net.params["conv1.weight"], net.flat_params)


def test_tier_changes_nothing_at_construction():
    net = cnncalc.Network("specs/lenet5.yaml", parallel=False)
    assert net.tier is None and net.fast_path is not None
    net.use_tier(NUMPY_TIER)
    assert net.tier is NUMPY_TIER and net.fast_path is None
    assert all(st.op.__module__ in ("cnncalc.engine.numpy_tier", "cnncalc.engine.ops")
               for st in net.steps)


@pytest.mark.parametrize("name", [k for k in sorted(SPECS) if k.startswith("conv-")])
def test_conv_in_bands_of_output_rows_equals_whole(name, monkeypatch):
    """A column budget of one value: every output row is its own im2col band."""
    monkeypatch.setattr(numpy_tier, "COLS_BUDGET", 1)
    compiled, tier = _pair(SPECS[name], "float64")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, *compiled.graph.input_shape))
    dout = rng.standard_normal(compiled.forward(x, training=False).shape)
    for a, b in zip(_step(tier, x, dout, True), _step(compiled, x, dout, True)):
        if isinstance(a, dict):
            for k in b:
                np.testing.assert_allclose(a[k], b[k], err_msg=k, **TOL["float64"])
        else:
            np.testing.assert_allclose(a, b, **TOL["float64"])
