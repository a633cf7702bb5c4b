"""`cnncalc train / evaluate / predict` through typer's CliRunner, in tmp_path."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncalc.cli.app import app
from cnncalc.train.checkpoint import load_checkpoint

TINY = """name: tiny
input: 12x12x1
train: {epochs: 2, batch_size: 32, optimizer: momentum, lr: 0.05}
layers:
  - conv: {filters: 4, size: 3, pad: 1}
  - relu
  - maxpool: {size: 2}
  - flatten
  - fc: {units: 16}
  - relu
  - fc: {units: 4}
"""

runner = CliRunner()


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


def _train(*args):
    return runner.invoke(app, ["train", "--data", "synthetic:256", "--deterministic",
                               *map(str, args)])


def test_train_evaluate_predict_round_trip(tmp_path, spec):
    out = tmp_path / "run"
    r = _train(spec, "--out", out, "--preprocess", "channel_mean")
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and "epochs" in r.output
    for f in ("last.npz", "best.npz", "metrics.csv"):
        assert (out / f).exists()
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,loss,acc,test_loss,test_acc") and len(lines) == 3
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.epoch == 2 and ckpt.seed == 0 and "tiny" in ckpt.spec_text
    assert ckpt.optimizer_state["name"] == "momentum"
    assert ckpt.optimizer_state["state"]["all"]["velocity"].shape == (sum(
        v.size for v in ckpt.params.values()),)

    r = runner.invoke(app, ["evaluate", str(out / "last.npz"), "--format", "json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    final = float(lines[-1].split(",")[5])
    assert ev["accuracy"] == pytest.approx(final)
    assert np.sum(ev["confusion"]) == ev["n"] == 64
    r = runner.invoke(app, ["evaluate", str(out / "last.npz")])
    assert r.exit_code == 0 and "confusion matrix" in r.output and "accuracy" in r.output

    from cnncalc.train import data

    ds = data.synthetic(256, 64, seed=0, shape=(1, 12, 12), num_classes=4)
    np.save(tmp_path / "x.npy", ds.x_test[:5])
    np.save(tmp_path / "one.npy", ds.x_test[0, 0])           # a single (H, W) image
    r = runner.invoke(app, ["predict", str(out / "last.npz"), str(tmp_path / "x.npy"),
                            str(tmp_path / "one.npy"), "--format", "json", "--top-k", "2"])
    assert r.exit_code == 0, r.output
    preds = json.loads(r.output)["predictions"]
    assert len(preds) == 6 and len(preds[0]["predictions"]) == 2
    assert preds[0]["predictions"][0]["class"] == preds[5]["predictions"][0]["class"]
    assert preds[0]["predictions"][0]["name"] in data.SYNTHETIC_CLASSES
    r = runner.invoke(app, ["predict", str(out / "last.npz"), str(tmp_path / "x.npy")])
    assert r.exit_code == 0 and "x.npy[4]" in r.output


def test_predict_reads_idx_and_rejects_bad_shapes(tmp_path, spec):
    out = tmp_path / "run"
    assert _train(spec, "--out", out, "--epochs", "1").exit_code == 0
    imgs = (np.random.default_rng(0).random((3, 12, 12)) * 255).astype(np.uint8)
    idx = tmp_path / "imgs-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big")
                                                    for d in imgs.shape) + imgs.tobytes())
    r = runner.invoke(app, ["predict", str(out / "last.npz"), str(idx), "-f", "json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["predictions"]) == 3
    np.save(tmp_path / "bad.npy", np.zeros((2, 10, 10), np.float32))
    r = runner.invoke(app, ["predict", str(out / "last.npz"), str(tmp_path / "bad.npy")])
    assert r.exit_code == 2 and "does not fit the network's input" in r.output


def test_json_progress_lines_parse(spec):
    r = _train(spec, "--format", "json", "--log-every", "3")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    assert kinds.count("epoch") == 2 and "step" in kinds
    assert events[0]["settings"]["lr"] == 0.05 and events[0]["steps_per_epoch"] == 8
    steps = [e for e in events if e["event"] == "step"]
    assert all({"loss", "acc", "lr", "images_per_s", "epoch", "batch"} <= set(e) for e in steps)
    end = events[-1]
    assert end["status"] == "completed" and 0 <= end["test_acc"] <= 1


def test_cli_overrides_spec_and_resume_matches(tmp_path, spec):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(spec, "--out", a, "--epochs", "2", "--optimizer", "nesterov").exit_code == 0
    assert _train(spec, "--out", b, "--epochs", "1", "--optimizer", "nesterov").exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(b / "last.npz"), "--epochs", "2",
                            "--out", str(b)])
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output
    ca, cb = load_checkpoint(a / "last.npz"), load_checkpoint(b / "last.npz")
    assert cb.epoch == 2 and cb.extra["settings"]["optimizer"] == "nesterov"
    for k in ca.params:
        np.testing.assert_array_equal(ca.params[k], cb.params[k])
    assert len((b / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "lr: must be in"),
    (["--betas", "0.9", "--optimizer", "adam"], "betas"),
    (["--momentum", "0.9", "--optimizer", "adam"], "not used by the adam optimizer"),
    (["--schedule", "exponential"], "needs a decay rate k"),
    (["--init", "bogus"], "unknown init"),
    (["--data", "nosuch:thing"], "unknown data source"),
])
def test_bad_settings_exit_2(spec, args, message):
    r = _train(spec, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_corrupt_data_and_mismatch_exit_2(tmp_path, spec):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    r = runner.invoke(app, ["train", str(spec), "--data", f"npz:{bad}"])
    assert r.exit_code == 2 and "cannot read" in r.output
    f = tmp_path / "ten.npz"
    np.savez(f, x=np.zeros((20, 1, 12, 12), np.uint8), y=np.arange(20) % 10)
    r = runner.invoke(app, ["train", str(spec), "--data", f"npz:{f}", "--format", "json"])
    assert r.exit_code == 2 and "4 outputs but ten has 10 classes" in r.output
    assert json.loads(r.stdout.splitlines()[-1])["event"] == "error"
    r = runner.invoke(app, ["evaluate", str(bad)])
    assert r.exit_code == 2 and "checkpoint" in r.output


def test_nan_guard_exit_2(tmp_path, spec):
    r = _train(spec, "--lr", "1e12", "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert "diverged" in r.output and "learning rate" in r.output


def test_sparkline():
    from cnncalc.cli.train import sparkline

    assert sparkline([3, 2, 1]) == "█▄▁"
    assert sparkline([]) == ""
