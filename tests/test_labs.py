"""The labs' numbers (not their files): lecture claims checked on what the engine computes."""
from __future__ import annotations

import itertools
import json
import math
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncalc.cli.app import app

SMALL_BN_SPEC = """\
name: small_bn
input: 8x8x2
layers:
  - conv: {filters: 4, size: 3, pad: 1, bias: false}
  - batchnorm
  - relu
  - maxpool: {size: 2}
  - flatten
  - fc: {units: 6}
  - batchnorm
  - relu
  - fc: {units: 3}
"""


# ------------------------------------------------------------------------------ init-stats
@pytest.fixture(scope="module")
def init_runs():
    from cnncalc.labs import init_stats

    runs = {key: init_stats.run(*key) for key in     # the lecture's sizes: 1000 x 500, 10 layers
            [("0.01", "tanh"), ("1.0", "tanh"), ("xavier", "tanh"), ("he", "relu")]}
    for key in [("xavier", "relu"), ("zeros", "tanh")]:  # smaller: the effect needs no more
        runs[key] = init_stats.run(*key, n=300, width=200)
    return runs


def test_init_small_weights_collapse(init_runs):
    r = init_runs[("0.01", "tanh")]
    stds = [layer.std for layer in r.layers]
    assert abs(stds[0] - 1.0) < 0.01                       # unit-Gaussian input
    assert stds[10] < 1e-5                                 # "all activations tend to zero"
    assert all(b < a for a, b in itertools.pairwise(stds[1:]))  # shrinking every layer
    assert all(layer.grad_w_std < 1e-6 for layer in r.layers[1:])


def test_init_std_one_saturates_like_the_lecture_table(init_runs):
    r = init_runs[("1.0", "tanh")]
    for layer in r.layers[1:]:
        assert layer.std == pytest.approx(0.98, abs=0.01)  # lecture: 0.981... at every layer
        assert abs(layer.mean) < 0.01
        assert layer.saturated > 0.9                        # |h| > 0.99: saturated
    # saturated tanh: the local gradients vanish, dL/dW of the last layer is tiny
    assert r.layers[10].grad_w_std < 1e-2 * r.layers[1].grad_w_std


def test_init_xavier_tanh_stays_in_a_band(init_runs):
    r = init_runs[("xavier", "tanh")]
    stds = [layer.std for layer in r.layers[1:]]
    assert all(0.2 < s < 0.7 for s in stds)
    g = [layer.grad_w_std for layer in r.layers[1:]]
    assert max(g) / min(g) < 2.0                            # gradients of similar scale


def test_init_he_for_relu_xavier_breaks(init_runs):
    he = [layer.std for layer in init_runs[("he", "relu")].layers[1:]]
    assert all(0.7 < s < 1.0 for s in he)
    xr = [layer.std for layer in init_runs[("xavier", "relu")].layers[1:]]
    assert xr[-1] < 0.1 * xr[0]                             # halves every layer


def test_init_zeros_no_symmetry_breaking(init_runs):
    r = init_runs[("zeros", "tanh")]
    assert r.symmetric
    assert all(layer.unit_grad_spread == 0.0 for layer in r.layers[1:])
    assert not init_runs[("xavier", "tanh")].symmetric
    assert any("symmetry" in n for n in r.notes)


def test_init_histograms_cover_every_activation(init_runs):
    r = init_runs[("xavier", "tanh")]
    for layer in r.layers[1:]:
        assert sum(layer.hist_counts) == r.n * r.width


def test_init_check_whole_network_matches():
    from cnncalc.labs import init_stats

    r = init_stats.run("he", "tanh", n=50, width=40, depth=3, check=True)  # raises on mismatch
    assert len(r.layers) == 4


# ------------------------------------------------------------------------------ optimizers
def test_optimizers_ravine_momentum_and_adam_beat_sgd():
    from cnncalc.labs import optimizers

    r = optimizers.run("ravine", kappa=50)
    steps = {t.optimizer: t.steps_to_tol for t in r.runs}
    assert all(s is not None for s in steps.values())
    assert steps["momentum"] < steps["sgd"]
    assert steps["adam"] < steps["sgd"]
    assert steps["nesterov"] < steps["momentum"]
    # harder ravine: plain sgd does not make it within the budget, adam does
    hard = {t.optimizer: t for t in optimizers.run("ravine", kappa=1000).runs}
    assert hard["sgd"].steps_to_tol is None and hard["adam"].steps_to_tol is not None
    assert hard["adam"].final_loss < hard["sgd"].final_loss


def test_optimizers_noise_and_other_functions():
    from cnncalc.labs import optimizers

    clean = {t.optimizer: t for t in optimizers.run("ravine").runs}
    noisy = {t.optimizer: t for t in optimizers.run("ravine", noise=0.5).runs}
    assert noisy["sgd"].final_loss > 1e3 * clean["sgd"].final_loss
    sad = optimizers.run("saddle", ["sgd", "adam"])
    for t in sad.runs:                       # both escape the saddle to a minimum (0, +-1)
        assert abs(abs(t.final_point[1]) - 1) < 1e-3
    ros = {t.optimizer: t for t in optimizers.run("rosenbrock", ["sgd", "adam"]).runs}
    assert ros["adam"].steps_to_tol is not None and ros["sgd"].steps_to_tol is None
    assert len(ros["sgd"].path) == 3001


def test_optimizers_bad_input():
    from cnncalc.errors import TrainError
    from cnncalc.labs import optimizers

    with pytest.raises(TrainError):
        optimizers.run("ravine", ["sgdd"])
    with pytest.raises(TrainError):
        optimizers.run("ravine", kappa=0.5)


# ------------------------------------------------------------------------------ schedules
def test_schedules_values():
    from cnncalc.labs import schedules

    r = schedules.run(lr=0.1, steps=100, warmup=10)
    curves = {c.label: c.lr for c in r.curves}
    assert len(r.curves) == 14
    assert curves["constant + warmup 10"][0] == pytest.approx(0.01)
    assert curves["constant + warmup 10"][9] == pytest.approx(0.1)
    assert curves["cosine"][50] == pytest.approx(0.05)
    assert curves["cosine + warmup 10"][10] == pytest.approx(0.1)
    assert curves["step"][33] == pytest.approx(0.01)
    assert curves["exponential"][99] == pytest.approx(0.1 / 100 ** 0.99)
    for label, lr in curves.items():         # after warm-up, no schedule increases
        start = 10 if "warmup" in label else 0
        assert all(b <= a + 1e-15 for a, b in zip(lr[start:], lr[start + 1:])), label


# ------------------------------------------------------------------------------ activations
def test_activation_properties_and_dead_relus():
    from cnncalc.labs import activations

    r = activations.run(measure_cost=False)
    p = {row.name: row for row in r.properties}
    assert p["sigmoid"].output_range == (0.0, 1.0)
    assert p["sigmoid"].zero_centred == "no" and p["sigmoid"].saturates == "both sides"
    assert p["tanh"].zero_centred == "yes" and p["tanh"].gradient_dies.startswith("|x| > 4")
    assert p["relu"].gradient_dies == "x < 0" and p["relu"].output_range[1] == math.inf
    assert p["leaky_relu"].gradient_dies == "never" and p["leaky_relu"].saturates == "no"
    assert p["elu"].zero_centred == "nearly" and p["elu"].output_range[0] == pytest.approx(-1.0)
    assert np.allclose(r.curves["tanh"]["dy"], 1 - np.tanh(r.x) ** 2)
    dead = {row.scenario: row for row in r.dead}
    assert dead["good init, no bias"].dead_fraction == 0.0
    assert dead["good init, no bias"].zero_fraction == pytest.approx(0.5, abs=0.02)
    assert dead["large negative bias"].dead_fraction == 1.0
    assert dead["bad init: std 0.01 (same bias -1)"].dead_fraction > 0.9
    assert dead["good init, bias -1"].dead_fraction == 0.0


# ------------------------------------------------------------------------------ equivariance
def test_equivariance_lenet(specs_dir):
    from cnncalc.labs import equivariance

    r = equivariance.run(specs_dir / "lenet5.yaml", images=2, max_shift=2)
    assert [t.layer for t in r.translation] == ["conv1", "conv2"]
    assert r.translation[1].jump == [2, 2] and r.translation[1].shift == [2, 2]
    for t in r.translation:
        assert t.positions > 0
        assert t.equivariance_error < 1e-12          # phi(gx) = g.phi(x) away from borders
        assert t.change_unaligned > 0.1              # ... but not invariant
    assert all(0 < s.relative_change < 10 for s in r.invariance)
    rot = r.rotation
    assert rot.ordinary_error > 0.1                  # conv is not rotation-equivariant
    assert rot.rotated_error < 1e-12                 # the 4-rotation layer is, up to a shift
    assert sorted(rot.rotated_errors)[1] > 0.1       # ... of exactly one cyclic permutation


# ------------------------------------------------------------------------------ bn-fold
def test_bn_fold_spec(specs_dir):
    from cnncalc.labs import bn_fold

    r = bn_fold.run(specs_dir / "cifar_bn.yaml", images=2)
    assert len(r.folded) == 5 and not r.not_folded
    assert r.agree and r.max_rel_diff < 1e-12
    channels = sum(p.channels for p in r.folded)
    # gamma, beta (params) and mean, var (buffers) gone; a bias added
    assert (r.saved["params"], r.saved["buffers"]) == (channels, 2 * channels)
    assert r.saved["bn_multiply_adds"] == 2 * 32 * 32 * 32 + 2 * 64 * 16 * 16 + 128 * 8 * 8


def test_bn_fold_checkpoint_conv_and_fc(tmp_path):
    from cnncalc.engine import Network
    from cnncalc.labs import bn_fold
    from cnncalc.train.checkpoint import save_checkpoint

    net = Network(SMALL_BN_SPEC, seed=3, dtype="float64")
    rng = np.random.default_rng(7)
    for _ in range(3):   # training-mode passes give the running statistics real values
        net.forward(rng.normal(0.5, 2.0, (16, 2, 8, 8)), training=True)
    for k, v in net.params.items():
        if ".weight" in k and v.ndim == 1 or k.endswith(".bias"):
            v[...] = rng.normal(0.5, 0.3, v.shape)
    path = save_checkpoint(tmp_path / "ck.npz", params=net.params, buffers=net.buffers,
                           optimizer_state=None, schedule_state=None, preprocess_state=None,
                           spec_text=SMALL_BN_SPEC, seed=3, epoch=1, step=1)
    r = bn_fold.run(path, images=4)
    assert r.from_checkpoint
    assert {p.kind for p in r.folded} == {"conv", "fc"}
    assert r.agree and r.max_rel_diff < 1e-12
    # 4 tensors per BN go (2 params, 2 buffers); the conv gains a bias, the fc has one
    assert (r.saved["params"], r.saved["buffers"]) == (2 * 4 - 4 + 2 * 6, 2 * 4 + 2 * 6)


# ------------------------------------------------------------------------------ preprocess
def test_preprocess_statistics_and_regression():
    from cnncalc.labs import preprocess

    r = preprocess.run("synthetic:400", n=400)
    m = {s.method: s for s in r.methods}
    assert m["none"].mean_abs > 0.1
    assert m["mean_image"].mean_abs < 1e-12
    assert abs(m["channel_mean"].channel_mean[0]) < 1e-12
    assert m["channel_mean_std"].channel_std[0] == pytest.approx(1.0)
    assert m["pca"].offdiag_abs_mean < 1e-12 < m["none"].offdiag_abs_mean
    assert m["whiten"].offdiag_abs_mean < 1e-10
    assert m["whiten"].variance_mean > 0.5            # eps keeps dead pixels below 1
    assert set(r.mean_images) == set(preprocess.METHODS)
    raw, norm = r.regression
    assert raw.condition_number > 1e9 and norm.condition_number < 10
    assert raw.steps_to_converge is None and raw.final_gap_ratio > 1e-3
    assert norm.steps_to_converge is not None and norm.steps_to_converge < 50
    assert raw.initial_grad[0] > 1e4 * raw.initial_grad[1]   # x1's weight gets the big update


# ------------------------------------------------------------------------------ CLI
runner = CliRunner()


def _json(args):
    res = runner.invoke(app, ["lab", *args, "--format", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_cli_json_outputs(specs_dir):
    d = _json(["init-stats", "--n", "200", "--width", "50", "--depth", "3", "-i", "1.0"])
    assert len(d["layers"]) == 4 and "hist_counts" not in d["layers"][1]
    assert d["layers"][3]["std"] > 0.9
    d = _json(["optimizers", "--kappa", "50", "-o", "sgd", "-o", "adam", "--lr", "adam=0.5"])
    assert [r["optimizer"] for r in d["runs"]] == ["sgd", "adam"] and d["best"] == "adam"
    d = _json(["schedules", "-T", "20", "--warmup", "0"])
    assert len(d["curves"]) == 7 and len(d["curves"][0]["lr"]) == 20
    d = _json(["activations", "--no-cost"])
    assert {p["name"]: p for p in d["properties"]}["relu"]["output_range"] == [0.0, "inf"]
    d = _json(["bn-fold", str(specs_dir / "cifar_bn.yaml"), "--images", "1"])
    assert d["agree"] is True


def test_cli_tables_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    res = runner.invoke(app, ["lab", "init-stats", "--n", "100", "--width", "40", "--depth", "3",
                              "--plot", str(tmp_path / "init.png")])
    assert res.exit_code == 0, res.output
    assert "hidden layer 3 had mean" in res.stdout
    for args in (["optimizers", "-F", "saddle"], ["schedules"], ["activations", "--no-cost"]):
        res = runner.invoke(app, ["lab", *args, "--plot", str(tmp_path / f"{args[0]}.png")])
        assert res.exit_code == 0, res.output
        assert (tmp_path / f"{args[0]}.png").stat().st_size > 1000


def test_cli_errors(monkeypatch, tmp_path):
    res = runner.invoke(app, ["lab", "optimizers", "--lr", "adam"])
    assert res.exit_code == 2 and "NAME=VALUE" in res.output
    res = runner.invoke(app, ["lab", "bn-fold", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if it were not installed
    res = runner.invoke(app, ["lab", "schedules", "--plot", str(tmp_path / "s.png")])
    assert res.exit_code == 2 and "pip install cnncalc[plot]" in res.output
