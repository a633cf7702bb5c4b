"""`trainable: false`: frozen parameters are counted apart, and training leaves them as they are
(no update, no weight decay, no optimizer state) while gradients flow through them."""
from pathlib import Path

import numpy as np
import pytest

import cnncalc
from cnncalc.errors import SpecError

FROZEN = """
input: 8x8x3
layers:
  - conv: {filters: 4, size: 3, pad: 1, trainable: false}
  - batchnorm
  - flatten
  - fc: {units: 2}
"""


def test_frozen_layer_params_are_split_from_the_trained_ones():
    report = cnncalc.load(FROZEN).analyze(optimizer="adam")
    conv, bn, _, fc = report["layers"]
    assert (conv["params"], conv["trainable"]) == (4 * 27 + 4, False)
    assert (bn["params"], bn["buffers"], bn["trainable"]) == (8, 8, True)
    t = report["totals"]
    assert t["params"] == 112 + 8 + 8 * 8 * 4 * 2 + 2
    assert t["non_trainable_params"] == 112
    assert t["trainable_params"] == t["params"] - 112
    assert t["buffers"] == 8
    assert t["param_bytes"] == 4 * (t["params"] + t["buffers"])
    tr = t["training"]
    assert tr["gradient_bytes"] == 4 * t["trainable_params"]
    assert tr["optimizer_state_bytes"] == 2 * 4 * t["trainable_params"]


def test_a_block_entry_can_freeze_every_layer_of_its_instances():
    g = cnncalc.load("""
input: 8x8x3
blocks:
  unit: [conv: {filters: 3, size: 3, pad: 1}, relu]
layers:
  - {block: unit, repeat: 2, trainable: false}
  - conv: {filters: 3, size: 1}
""")
    t = g.analyze()["totals"]
    assert t["non_trainable_params"] == 2 * (3 * 27 + 3)
    assert t["trainable_params"] == 3 * 3 + 3


@pytest.mark.parametrize("value", ["maybe", 3, [True]])
def test_trainable_must_be_a_boolean(value):
    with pytest.raises(SpecError, match="trainable") as err:
        cnncalc.load({"input": "8x8x3", "layers": [{"conv": {"K": 1, "F": 1,
                                                              "trainable": value}}]})
    assert "trainable: false" in err.value.hint


#: a trained stem, a frozen conv + batchnorm in the middle (dx must flow through them) and a
#: trained head
MIDDLE = """
input: 6x6x2
layers:
  - conv: {name: stem, filters: 3, size: 3, pad: 1}
  - relu: {name: stem_relu}
  - conv: {name: body, filters: 4, size: 3, pad: 1, trainable: false}
  - batchnorm: {name: body_bn, trainable: false}
  - relu: {name: body_relu}
  - flatten
  - fc: {name: head, units: 3}
"""


#: LeNet-5 (a conv -> relu -> maxpool -> fc chain) with its last layer frozen: the fused fast
#: path computes every gradient and the optimizer's view leaves the frozen ones out. Frozen
#: tensors go last in the flat buffer, so freezing the last layer keeps LeNet-5's layout (and
#: its compiled kernels)
CHAIN = (Path(__file__).resolve().parent.parent / "specs" / "lenet5.yaml").read_text().replace(
    "- fc: {units: 10}", "- fc: {units: 10, trainable: false}")


def _data(graph, n=24, seed=0):
    from cnncalc.train.data import Dataset

    classes = graph.output_shape.c
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *graph.input_shape))
    y = rng.integers(0, classes, n)
    return Dataset(x, y, x[:6], y[:6], [str(c) for c in range(classes)], "random")


def _train(spec, optimizer, steps=3, dtype="float64", **hyper):
    from cnncalc import optim
    from cnncalc.train.trainer import fit

    net = cnncalc.Network(spec, seed=1, dtype=dtype, parallel=False)
    start = {k: v.copy() for k, v in net.state_dict().items()}
    data = _data(net.graph)
    opt = optim.create(optimizer, **hyper)
    fit(net, data, optimizer=opt, epochs=1, batch_size=len(data.x_train) // steps,
        shuffle=False, eval_every=0, parallel=False, dtype=dtype, lr=hyper["lr"])
    return net, opt, start, data


@pytest.mark.parametrize("spec,frozen", [(MIDDLE, ("body", "body_bn")),
                                         (FROZEN, ("conv1",)), (CHAIN, ("fc3",))],
                         ids=["frozen-middle", "frozen-stem", "fast-chain"])
@pytest.mark.parametrize("optimizer,hyper", [
    ("momentum", {"lr": 0.1, "weight_decay": 0.05}), ("adam", {"lr": 0.01, "weight_decay": 0.05}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.05})])
def test_frozen_layers_stay_bit_identical_while_the_others_train(spec, frozen, optimizer, hyper):
    net, opt, start, _ = _train(spec, optimizer, dtype="float32", **hyper)
    assert (net.fast_path is not None) == (spec is CHAIN)
    for key, value in net.params.items():
        if key.rpartition(".")[0] in frozen:
            np.testing.assert_array_equal(value, start[key], err_msg=key)
        else:
            assert not np.array_equal(value, start[key]), key
    # the optimizer keeps state for the trained values only: one flat array of that size
    t = cnncalc.load(spec).analyze()["totals"]
    assert net.n_trainable == t["trainable_params"] < net.flat_params.size
    for slot in opt.state["all"].values():
        assert slot.shape == (t["trainable_params"],)


def test_a_frozen_batchnorm_still_updates_its_running_statistics():
    # PyTorch's rule: requires_grad=False freezes γ and β, not the statistics of train mode
    net, _, start, _ = _train(MIDDLE, "sgd", lr=0.1)
    assert not np.array_equal(net.buffers["body_bn.running_mean"],
                              start["body_bn.running_mean"])


def test_a_frozen_stem_gets_no_backward_at_all():
    net = cnncalc.Network(FROZEN, seed=0, parallel=False)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    net.grads["conv1.weight"][...] = 7.0
    net.loss_and_grads(x, np.array([0, 1, 0, 1]))
    assert (net.grads["conv1.weight"] == 7.0).all()     # never written: no dW computed
    assert np.abs(net.grads["bn1.weight"]).sum() > 0


def test_frozen_layers_survive_a_checkpoint_and_resume(tmp_path):
    from cnncalc.train import run

    spec = tmp_path / "frozen.yaml"
    spec.write_text(FROZEN.replace("input: 8x8x3", "name: frozen\ninput: 8x8x3"))
    settings = {"data": "synthetic:64", "batch_size": 16, "parallel": False, "epochs": 1,
                "optimizer": "adam", "weight_decay": 0.1}
    first = run(spec, settings, out_dir=tmp_path / "a")
    init = cnncalc.Network(cnncalc.load(spec), seed=0).params["conv1.weight"]
    np.testing.assert_array_equal(first.net.params["conv1.weight"], init)
    second = run(spec, {**settings, "epochs": 2}, resume=first.checkpoint)
    np.testing.assert_array_equal(second.net.params["conv1.weight"], init)
    assert not np.array_equal(second.net.params["fc1.weight"], first.net.params["fc1.weight"])


TORCH_OPTIMIZERS = [("momentum", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, "SGD",
                     {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}),
                    ("adam", {"lr": 0.01, "weight_decay": 0.05}, "Adam",
                     {"lr": 0.01, "weight_decay": 0.05}),
                    ("adamw", {"lr": 0.01, "weight_decay": 0.05}, "AdamW",
                     {"lr": 0.01, "weight_decay": 0.05})]


@pytest.mark.torch
@pytest.mark.parametrize("spec", [MIDDLE, FROZEN], ids=["frozen-middle", "frozen-stem"])
@pytest.mark.parametrize("ours,hyper,tcls,thyper", TORCH_OPTIMIZERS,
                         ids=[c[0] for c in TORCH_OPTIMIZERS])
def test_training_with_frozen_layers_matches_torch_requires_grad_false(spec, ours, hyper, tcls,
                                                                        thyper):
    torch = pytest.importorskip("torch")
    from torch_graph import torch_module

    steps = 3
    net, _, start, data = _train(spec, ours, steps=steps, **hyper)
    module = torch_module(net.graph, "cpu").double().train()
    names = {f"layers.{i}.{k}": f"{n.name}.{k}" for i, n in enumerate(net.graph.nodes)
             for k in (*n.param_shapes(), *n.buffer_shapes())}
    module.load_state_dict({t: torch.from_numpy(start[ours_key].copy())
                            for t, ours_key in names.items()}, strict=False)
    opt = getattr(torch.optim, tcls)(module.parameters(), **thyper)
    size = len(data.x_train) // steps
    for b in range(steps):
        x = torch.from_numpy(data.x_train[b * size:(b + 1) * size])
        y = torch.from_numpy(data.y_train[b * size:(b + 1) * size])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
    state = module.state_dict()
    for t, ours_key in names.items():
        value = {**net.params, **net.buffers}[ours_key]
        np.testing.assert_allclose(value, state[t].numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=ours_key)
