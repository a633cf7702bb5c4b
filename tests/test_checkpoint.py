"""Checkpoints: round trip, atomic replace, corrupt files, no pickle."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from cnncalc.errors import DataError, TrainError
from cnncalc.train import checkpoint as ckpt_mod
from cnncalc.train.checkpoint import load_checkpoint, save_checkpoint
from cnncalc.optim import create
from cnncalc.train.preprocess import Preprocessor, fit
from cnncalc.schedules import create as create_schedule


def make_state(seed=0):
    rng = np.random.default_rng(seed)
    params = {"conv1.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
              "conv1.bias": np.zeros(4, np.float32),
              "fc.weight": rng.normal(size=(10, 16)).astype(np.float32)}
    opt = create("adam", lr=0.01)
    opt.step(params, {k: np.ones_like(v) for k, v in params.items()})
    pre = fit("channel_mean_std", rng.normal(size=(20, 1, 4, 4)).astype(np.float32))
    return {
        "params": params, "buffers": {"bn.running_mean": np.arange(3.0)},
        "optimizer_state": opt.state_dict(),
        "schedule_state": create_schedule("cosine", lr=0.1, total=100, warmup=5).get_config(),
        "preprocess_state": pre.state_dict(), "spec_text": "layers:\n  - conv: {K: 4}\n",
        "seed": seed, "epoch": 3, "step": 120,
        "metrics": {"loss": [2.3, 1.1], "acc": np.float32(0.5), "best": float("inf")},
        "extra": {"note": "ünïcode", "tuple": (1, 2)}}


def test_round_trip(tmp_path):
    st = make_state()
    path = save_checkpoint(tmp_path / "run.ckpt", **st)
    assert path == tmp_path / "run.ckpt" and path.exists()
    ck = load_checkpoint(path)
    for k, v in st["params"].items():
        np.testing.assert_array_equal(ck.params[k], v)
        assert ck.params[k].dtype == v.dtype
    np.testing.assert_array_equal(ck.buffers["bn.running_mean"], np.arange(3.0))
    assert (ck.spec_text, ck.seed, ck.epoch, ck.step) == (st["spec_text"], 0, 3, 120)
    assert ck.schedule_state == st["schedule_state"]
    assert ck.metrics["loss"] == [2.3, 1.1] and ck.metrics["acc"] == 0.5
    assert math.isinf(ck.metrics["best"])
    assert ck.extra == {"note": "ünïcode", "tuple": [1, 2]}
    # the optimizer and preprocessing come back to life
    opt = create("adam", lr=0.01)
    opt.load_state_dict(ck.optimizer_state)
    assert opt.t == 1
    np.testing.assert_array_equal(opt.state["fc.weight"]["first_moment"],
                                  st["optimizer_state"]["state"]["fc.weight"]["first_moment"])
    pre = Preprocessor.from_state(ck.preprocess_state)
    np.testing.assert_array_equal(pre.std, Preprocessor.from_state(st["preprocess_state"]).std)
    sched = create_schedule(**ck.schedule_state)
    assert sched(50) == create_schedule(**st["schedule_state"])(50)


def test_no_pickle_in_file(tmp_path):
    path = save_checkpoint(tmp_path / "a.npz", **make_state())
    with np.load(path, allow_pickle=False) as z:
        assert "__meta__" in z.files and "params/conv1.weight" in z.files
        for k in z.files:
            assert z[k].dtype != object


def test_failure_during_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, **make_state(0))
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, **make_state(1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.ckpt"]  # temp file cleaned up
    monkeypatch.undo()
    assert load_checkpoint(path).seed == 0


def test_failure_before_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, **make_state(0))

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, **make_state(1))
    monkeypatch.undo()
    assert load_checkpoint(path).seed == 0 and os.listdir(tmp_path) == ["run.ckpt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "run.ckpt", **make_state())
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"hello world" * 10)
    else:
        mid = len(raw) // 3
        raw[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"run\.ckpt") as e:
        load_checkpoint(path)
    assert e.value.hint


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, x=np.zeros(3))
    with pytest.raises(DataError, match="not a cnncalc checkpoint"):
        load_checkpoint(p)
    np.savez(p, __meta__=np.array('{"format": "cnncalc-checkpoint", "version": 99}'))
    with pytest.raises(DataError, match="format version 99"):
        load_checkpoint(p)
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_unstorable_values(tmp_path):
    st = make_state()
    st["extra"] = {"obj": object()}
    with pytest.raises(TrainError, match=r"extra\.obj holds a object"):
        save_checkpoint(tmp_path / "x.ckpt", **st)
    st["extra"] = {"arr": np.array([object()])}
    with pytest.raises(TrainError, match="object array"):
        save_checkpoint(tmp_path / "x.ckpt", **st)
    assert not os.listdir(tmp_path)
