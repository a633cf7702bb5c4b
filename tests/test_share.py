"""`share: <layer>`: a layer computing with an earlier layer's parameters (a module called
twice, tied weights). Its parameters count once, its MACs at every use; the engine runs it on
the owner's arrays and sums the gradients of the uses."""
from __future__ import annotations

import numpy as np
import pytest

import cnncalc
from cnncalc.errors import ShapeError, SpecError

SHARED = """
name: shared
input: 8x8x2
layers:
  - conv: {name: c1, filters: 2, size: 3, pad: 1}
  - batchnorm: {name: bn}
  - relu
  - conv: {name: c2, filters: 2, size: 3, pad: 1, share: c1}
  - batchnorm: {share: bn}
  - flatten
  - fc: {name: f0, units: 5}
  - relu
  - fc: {name: f1, units: 5}
  - relu
  - {type: fc, units: 5, share: f1}
"""


def test_a_sharing_layer_holds_no_parameters_but_computes_at_every_use():
    report = cnncalc.load(SHARED).analyze(optimizer="sgd")
    rows = {r["name"]: r for r in report["layers"]}
    assert (rows["c2"]["params"], rows["c2"]["shares"], rows["c2"]["macs"]) \
        == (0, {"weight": "c1", "bias": "c1"}, rows["c1"]["macs"])
    assert (rows["bn1"]["params"], rows["bn1"]["buffers"], rows["bn1"]["shares"]) \
        == (0, 0, {"weight": "bn", "bias": "bn"})
    assert (rows["fc1"]["params"], rows["fc1"]["shares"], rows["fc1"]["macs"]) \
        == (0, {"weight": "f1", "bias": "f1"}, 25)
    assert rows["c1"]["shares"] == {}
    t = report["totals"]
    assert t["params"] == (2 * 18 + 2) + 4 + (128 * 5 + 5) + (5 * 5 + 5)
    assert t["buffers"] == 4
    assert t["macs"] == 2 * 64 * 2 * 18 + 128 * 5 + 2 * 25
    assert t["training"]["gradient_bytes"] == 4 * t["params"]
    assert set(cnncalc.load(SHARED).param_shapes()) == {
        "c1.weight", "c1.bias", "bn.weight", "bn.bias", "f0.weight", "f0.bias", "f1.weight",
        "f1.bias"}


def test_text_table_says_which_layer_holds_the_weights():
    from cnncalc.cli.render import row_cells

    row = next(r for r in cnncalc.load(SHARED).analyze()["layers"] if r["name"] == "c2")
    assert "shares c1" in row_cells(row)


#: what the share errors below follow: a conv c1 (8x8x3 -> 8x8x3) and a relu r; an fc f (3 -> 3)
AFTER_CONV = "input: 8x8x3\nlayers:\n  - conv: {name: c1, filters: 3, size: 3, pad: 1}\n" \
             "  - relu: {name: r}\n"
AFTER_FC = "input: 1x1x3\nlayers:\n  - fc: {name: f, units: 3}\n"


@pytest.mark.parametrize("base, layer, message", [
    (AFTER_CONV, "conv: {filters: 2, size: 3, share: nothere}", "'share: nothere' names no"),
    (AFTER_CONV, "conv: {filters: 2, size: 3, share: input}", "'share' must name an earlier"),
    (AFTER_CONV, "conv: {filters: 2, size: 3, share: [c1]}", "'share' must name an earlier"),
    (AFTER_CONV, "relu: {share: r}", "relu has no parameters to share"),
    (AFTER_CONV, "fc: {units: 2, share: c1}", "'c1' is a conv layer"),
    (AFTER_CONV, "conv: {filters: 4, size: 3, share: c1}", "weight (4, 3, 3, 3)"),
    (AFTER_CONV, "conv: {filters: 3, size: 3, share: c1, init: xavier}", "'init' on a layer"),
    (AFTER_CONV, "conv: {filters: 3, size: 3, share: c1, trainable: false}",
     "'trainable: false'"),
    (AFTER_FC, "fc: {units: 3, share: {kernel: f}}", "fc has no tensor 'kernel' (it has "
                                                      "weight, bias)"),
    (AFTER_FC, "fc: {units: 3, share: {weight: nothere}}", "'share: nothere' names no"),
    (AFTER_FC, "fc: {units: 4, share: {weight: f}}", "weight would be (4, 3)"),
    (AFTER_FC, "fc: {units: 3, share: {weight: f}, trainable: false}", "'f' is trained"),
])
def test_share_errors_name_the_problem(base, layer, message):
    with pytest.raises((SpecError, ShapeError)) as err:
        cnncalc.load(f"{base}  - {layer}\n")
    assert message in str(err.value)
    assert err.value.location is not None


def test_a_frozen_owner_freezes_its_sharer():
    rows = cnncalc.load("""
input: 8x8x3
layers:
  - conv: {name: c1, filters: 3, size: 3, pad: 1, trainable: false}
  - conv: {filters: 3, size: 3, pad: 1, share: c1}
""").analyze()["layers"]
    assert [r["trainable"] for r in rows] == [False, False]


def test_share_inside_a_block_finds_the_instance_layer_first():
    g = cnncalc.load("""
input: 8x8x4
blocks:
  twice:
    - conv: {name: a, filters: 4, size: 3, pad: 1}
    - conv: {name: b, filters: 4, size: 3, pad: 1, share: a}
layers:
  - {block: twice, name: s, repeat: 2}
""")
    assert [(n.name, n.shares) for n in g.nodes] == [
        ("s.0.a", None), ("s.0.b", "s.0.a"), ("s.1.a", None), ("s.1.b", "s.1.a")]


def test_the_engine_sums_the_gradients_of_every_use_as_torch_does():
    torch = pytest.importorskip("torch")
    from cnncalc.engine.network import Network

    graph = cnncalc.load(SHARED)
    net = Network(graph, seed=1, dtype="float64", parallel=False)
    rng = np.random.default_rng(0)
    for key in net.buffers:
        net.buffers[key][...] = rng.uniform(0.5, 1.5, net.buffers[key].shape)
    x = rng.normal(size=(4, 2, 8, 8))
    labels = np.array([0, 1, 4, 2])
    loss = net.loss_and_grads(x, labels)

    t = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    F = torch.nn.functional

    def bn(v):
        return F.batch_norm(v, None, None, t["bn.weight"], t["bn.bias"], training=True)

    def conv(v):
        return F.conv2d(v, t["c1.weight"], t["c1.bias"], padding=1)

    h = bn(conv(F.relu(bn(conv(torch.tensor(x)))))).flatten(1)
    h = F.relu(F.linear(h, t["f0.weight"], t["f0.bias"]))
    h = F.linear(F.relu(F.linear(h, t["f1.weight"], t["f1.bias"])), t["f1.weight"],
                 t["f1.bias"])
    expected = F.cross_entropy(h, torch.tensor(labels))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-10)
    for key, value in t.items():
        np.testing.assert_allclose(net.grads[key], value.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_train_runs_a_sharing_spec_and_its_checkpoint_keeps_one_copy(tmp_path):
    from typer.testing import CliRunner

    from cnncalc.cli.app import app
    from cnncalc.train.evaluate import load_model

    spec = tmp_path / "shared.yaml"
    spec.write_text(SHARED)
    result = CliRunner().invoke(app, ["train", str(spec), "--data", "synthetic:64",
                                      "--epochs", "1", "--deterministic",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "last.npz")
    assert set(model.net.params) == set(cnncalc.load(SHARED).param_shapes())


def test_explain_and_check_count_a_shared_layer_as_zero():
    from cnncalc.homework.explain import explain_node, total_steps

    graph = cnncalc.load(SHARED)
    exp = explain_node(graph.node("c2"), graph)
    assert [st.value for st in exp.steps if st.topic == "params"] == [0]
    assert any("weight of c1, bias of c1" in note for note in exp.notes)
    params = next(st for st in total_steps(graph) if st.topic == "params")
    assert params.value == graph.analyze()["totals"]["params"]


TIED = """
input: 4x4x2
layers:
  - flatten
  - fc: {name: enc, units: 32}
  - relu
  - fc: {name: dec, units: 32, share: {weight: enc}}
"""


def test_a_tied_weight_with_its_own_bias_counts_once():
    rows = {r["name"]: r for r in cnncalc.load(TIED).analyze()["layers"]}
    assert (rows["dec"]["params"], rows["dec"]["biases"], rows["dec"]["shares"]) \
        == (32, 32, {"weight": "enc"})
    assert cnncalc.load(TIED).analyze()["totals"]["params"] == 32 * 32 + 32 + 32
    from cnncalc.cli.render import row_cells

    assert "32 + weight of enc" in row_cells(rows["dec"])


def test_the_engine_sums_a_tied_weights_gradients_and_keeps_the_biases_apart():
    from gradcheck import centred_difference

    from cnncalc.engine.network import Network

    net = Network(cnncalc.load(TIED), seed=2, dtype="float64", parallel=False)
    assert set(net.params) == {"enc.weight", "enc.bias", "dec.bias"}
    x = np.random.default_rng(3).normal(size=(5, 2, 4, 4))
    labels = np.array([1, 7, 30, 2, 2])
    net.loss_and_grads(x, labels)
    grads = {k: v.copy() for k, v in net.grads.items()}
    for key, idx in (("enc.weight", (3, 5)), ("enc.weight", (0, 31)), ("dec.bias", (4,)),
                     ("enc.bias", (7,))):
        numeric = centred_difference(lambda: net.loss(x, labels)[0], net.params[key], idx)
        assert grads[key][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_a_frozen_owner_and_its_sharer_stay_out_of_the_trained_slice():
    from cnncalc.engine.network import Network

    net = Network(cnncalc.load("""
input: 8x8x3
layers:
  - conv: {name: c1, filters: 3, size: 3, pad: 1, trainable: false}
  - relu
  - conv: {filters: 3, size: 3, pad: 1, share: c1}
  - flatten
  - fc: {name: f, units: 4}
"""), parallel=False)
    assert set(net.params) == {"c1.weight", "c1.bias", "f.weight", "f.bias"}
    assert net.n_trainable == 192 * 4 + 4
    before = net.params["c1.weight"].copy()
    net.loss_and_grads(np.ones((2, 3, 8, 8), np.float32), np.array([0, 3]))
    net.trainable_params -= 0.1 * net.trainable_grads
    np.testing.assert_array_equal(net.params["c1.weight"], before)
