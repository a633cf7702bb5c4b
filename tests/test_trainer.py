"""The trainer: a real (tiny) run, exact resume, guard rails, settings validation, evaluation."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import mnist_dir

import cnncalc
from cnncalc.errors import DataError, TrainError
from cnncalc.train import trainer as T
from cnncalc.train.checkpoint import load_checkpoint
from cnncalc.train.settings import TrainSettings, resolve

TINY = """name: tiny
input: 12x12x1
layers:
  - conv: {filters: 4, size: 3, pad: 1}
  - relu
  - maxpool: {size: 2}
  - flatten
  - fc: {units: 16}
  - relu
  - fc: {units: 4}
"""

BASE = {"data": "synthetic:256", "batch_size": 32, "parallel": False, "lr": 0.05}


def _run(overrides=None, spec=TINY, **kw):
    g = cnncalc.load(spec)
    s = resolve(("test", {**BASE, **(overrides or {})}))
    return T.build(g, s, **kw)


def test_loss_falls_on_synthetic_data():
    events = []
    run = _run({"epochs": 4}, callbacks=[events.append])
    h = run.fit()
    losses = [e["loss"] for e in h.epochs]
    assert h.status == "completed" and len(losses) == 4
    assert losses[-1] < 0.8 * losses[0]
    assert h.epochs[-1]["test_acc"] > 0.4          # 4 classes: chance is 0.25
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "TrainBegin" and kinds[-1] == "TrainEnd"
    assert kinds.count("EpochEnd") == 4 and kinds.count("StepEnd") == 4 * 8
    steps = [e for e in events if isinstance(e, T.StepEnd)]
    assert [e.step for e in steps] == list(range(1, 33))
    assert all(np.isfinite(e.loss) and 0 <= e.acc <= 1 for e in steps)


def test_training_accuracy_matches_predictions():
    # the trainer recovers argmax(logits) from dlogits; check it against a forward pass
    run = _run({"epochs": 1})
    net = run.trainer.net
    x, y = run.x_train[:32], run.y_train[:32]
    logits = net.forward(x, training=True)
    _loss, d = net.loss(x, y, training=True)
    p = d.copy()
    p[np.arange(32), y] += 1 / 32
    np.testing.assert_array_equal(p.argmax(1), logits.argmax(1))


@pytest.mark.parametrize("opt", [{"optimizer": "momentum", "schedule": "step",
                                  "milestones": [10]},
                                 {"optimizer": "adam", "lr": 0.01, "schedule": "cosine",
                                  "total": 32, "warmup": 3}])
def test_resume_equals_uninterrupted_run(tmp_path, opt):
    full = _run({"epochs": 2, **opt})
    full.fit()
    first = _run({"epochs": 1, **opt}, out_dir=tmp_path)
    first.fit()
    ckpt = load_checkpoint(tmp_path / "last.npz")
    assert ckpt.epoch == 1 and ckpt.step == 8
    second = _run({"epochs": 2, **opt}, resume=ckpt)
    h = second.fit()
    assert [e["epoch"] for e in h.epochs] == [1, 2]
    np.testing.assert_array_equal(second.trainer.net.flat_params, full.trainer.net.flat_params)
    assert h.epochs[-1]["loss"] == full.trainer.history.epochs[-1]["loss"]


def test_ctrl_c_saves_and_resumes_mid_epoch(tmp_path):
    full = _run({"epochs": 2})
    full.fit()

    def interrupt(ev):
        if isinstance(ev, T.StepEnd) and ev.step == 11:
            os.kill(os.getpid(), signal.SIGINT)     # what Ctrl-C sends

    part = _run({"epochs": 2}, out_dir=tmp_path, callbacks=[interrupt])
    h = part.fit()
    assert h.status == "interrupted"
    ckpt = load_checkpoint(tmp_path / "last.npz")
    assert (ckpt.epoch, ckpt.step, ckpt.extra["batch"]) == (1, 11, 3)
    rest = _run({"epochs": 2}, resume=ckpt)
    h2 = rest.fit()
    assert h2.status == "completed"
    np.testing.assert_array_equal(rest.trainer.net.flat_params, full.trainer.net.flat_params)
    assert h2.epochs[-1]["loss"] == pytest.approx(full.trainer.history.epochs[-1]["loss"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    _run({"epochs": 1}, out_dir=tmp_path).fit()
    last = tmp_path / "last.npz"
    before = last.read_bytes()
    ckpt = load_checkpoint(last)
    run = _run({"epochs": 3, "lr": 1e12}, resume=ckpt, out_dir=tmp_path)
    with pytest.raises(T.DivergedError) as ei:
        run.fit()
    msg = str(ei.value)
    assert "diverged" in msg and "learning rate 1e+12" in msg and "step" in msg
    assert str(last) in msg
    assert last.read_bytes() == before
    assert run.trainer.history.status == "diverged"


def test_class_count_mismatch_refused_before_training(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "d.npz"
    np.savez(f, x=rng.random((40, 1, 12, 12)).astype(np.float32), y=np.arange(40) % 10)
    with pytest.raises(TrainError, match="4 outputs but d has 10 classes"):
        _run({"data": f"npz:{f}"})


def test_input_shape_mismatch_refused(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((40, 3, 16, 16), np.float32), y=np.arange(40) % 4)
    with pytest.raises(TrainError, match=r"input is 12x12x1 .* 16x16x3"):
        _run({"data": f"npz:{f}"})


def test_non_classifier_output_refused():
    spec = TINY.replace("  - flatten\n  - fc: {units: 16}\n  - relu\n  - fc: {units: 4}\n", "")
    with pytest.raises(TrainError, match="must end in 1x1xK"):
        _run(spec=spec)


def test_corrupt_data_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="cannot read"):
        _run({"data": f"npz:{bad}"})
    d = tmp_path / "mnist"
    d.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / stem).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")   # header only: truncated
    with pytest.raises(DataError, match="truncated"):
        _run({"data": f"mnist:{d}"})


def test_settings_merge_and_validation():
    s = resolve(("spec", {"epochs": 3, "lr": 0.1, "optimizer": "sgd"}),
                ("cli", {"lr": 0.5, "epochs": None}))
    assert (s.epochs, s.lr, s.optimizer) == (3, 0.5, "sgd")
    assert s.sources["lr"] == "cli" and s.sources["epochs"] == "spec"
    with pytest.raises(TrainError, match="unknown training setting 'lrate'"):
        resolve(("spec", {"lrate": 0.1}))
    with pytest.raises(TrainError, match="did you mean 'epochs'"):
        resolve(("spec", {"epoch_count": 1}))
    with pytest.raises(TrainError, match="momentum: must be in"):
        resolve(("spec", {"momentum": 1.5}))
    with pytest.raises(TrainError, match="not used by the adam optimizer"):
        resolve(("spec", {"optimizer": "adam", "momentum": 0.9}))
    with pytest.raises(TrainError, match="needs a decay rate k"):
        resolve(("spec", {"schedule": "exponential"}))
    with pytest.raises(TrainError, match="betas"):
        resolve(("cli", {"optimizer": "adam", "betas": "0.9"}))
    s = resolve(("cli", {"optimizer": "adam", "betas": "0.8,0.99", "no_bias_correction": True,
                         "lr": 0.004, "scale_lr_with_batch": True, "batch_size": 512}))
    assert s.optimizer_hyper() == {"weight_decay": 0.0, "lr": 0.008, "betas": (0.8, 0.99),
                                   "eps": 1e-8, "bias_correction": False}
    assert TrainSettings().optimizer == "momentum"


def test_schedule_per_epoch_and_warmup():
    seen = []
    run = _run({"epochs": 3, "schedule": "step", "schedule_per": "epoch", "step_size": 1,
                "gamma": 0.5}, callbacks=[lambda e: seen.append(e) if isinstance(e, T.StepEnd)
                                          else None])
    run.fit()
    lrs = sorted({(e.epoch, e.lr) for e in seen})
    assert lrs == [(1, 0.05), (2, 0.025), (3, 0.0125)]
    seen.clear()
    run = _run({"epochs": 1, "schedule": "cosine", "warmup": 4},
               callbacks=[lambda e: seen.append(e.lr) if isinstance(e, T.StepEnd) else None])
    run.fit()
    assert seen[:4] == pytest.approx([0.0125, 0.025, 0.0375, 0.05])
    assert seen[-1] < seen[4]


def test_spec_layer_init_override_and_init_option():
    spec = TINY.replace("  - fc: {units: 4}", "  - {fc: {units: 4}, init: zeros}")
    with pytest.warns(UserWarning, match="symmetry"):
        run = _run({"init": "normal:0.01"}, spec=spec)
    p = run.trainer.net.params
    assert np.all(p["fc2.weight"] == 0)
    assert 0.005 < p["conv1.weight"].std() < 0.02


def test_preprocessing_fitted_on_train_and_saved(tmp_path):
    run = _run({"epochs": 1, "preprocess": "channel_mean_std"}, out_dir=tmp_path)
    x = run.x_train
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    run.fit()
    ckpt = load_checkpoint(tmp_path / "last.npz")
    assert ckpt.preprocess_state["name"] == "channel_mean_std"
    from cnncalc.train.evaluate import evaluate, load_model

    m = load_model(tmp_path / "last.npz")
    res = evaluate(m.net, m.prepare(run.dataset.x_test), run.dataset.y_test)
    assert res.accuracy == pytest.approx(run.trainer.history.epochs[-1]["test_acc"])
    assert res.confusion.sum() == len(run.dataset.y_test)
    assert res.confusion.shape == (4, 4)


def test_batchnorm_spec_trains_and_evaluates_with_running_stats(tmp_path):
    spec = """name: bn
input: 16x16x3
layers:
  - conv: {filters: 8, size: 3, pad: 1, bias: false}
  - batchnorm
  - relu
  - maxpool: {size: 2}
  - global_avgpool
  - flatten
  - fc: {units: 4}
"""
    run = _run({"epochs": 2, "optimizer": "adam", "lr": 0.01}, spec=spec, out_dir=tmp_path)
    run.fit()
    buffers = run.trainer.net.buffers
    assert any(k.endswith("running_mean") for k in buffers)
    assert not all(np.all(v == 0) for k, v in buffers.items() if k.endswith("running_mean"))
    ckpt = load_checkpoint(tmp_path / "last.npz")
    for k, v in buffers.items():
        np.testing.assert_array_equal(ckpt.buffers[k], v)


def test_fit_function_entry_point():
    g = cnncalc.load(TINY)
    from cnncalc.train import data

    ds = data.synthetic(128, 32, shape=(1, 12, 12), num_classes=4)
    net = cnncalc.Network(g, seed=0, parallel=False)
    h = T.fit(net, ds, "sgd", epochs=2, batch_size=32, lr=0.05)
    assert len(h.epochs) == 2
    with pytest.raises(TrainError, match="unknown training setting"):
        T.fit(net, ds, "sgd", epochs=1, batch_size=32, learning_rat=0.1)


@pytest.mark.mnist
def test_mnist_short_run_learns():
    d = mnist_dir()
    if d is None:
        pytest.skip("CNNCALC_MNIST_DIR not set")
    from cnncalc.train import data

    ds = data.load(f"mnist:{d}")
    ds.x_train, ds.y_train = ds.x_train[:6000], ds.y_train[:6000]
    ds.x_test, ds.y_test = ds.x_test[:2000], ds.y_test[:2000]
    g = cnncalc.load(os.path.join(os.path.dirname(__file__), "..", "specs", "lenet5_mnist.yaml"))
    s = resolve(("spec", g.train), ("test", {"epochs": 1, "parallel": False, "warmup": 20}))
    h = T.build(g, s, dataset=ds).fit()
    assert h.epochs[-1]["test_acc"] > 0.88      # 94 steps; the full recipe: bench/bench_train.py
