"""Data integrity: NaN/inf never pass silently (data, weights, every kernel, the divergence guard)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from reference import KINDS, case_spec

from cnncalc.engine.network import Network
from cnncalc.errors import DataError, TrainError

# a conv→relu→maxpool chain the planner runs on the generated fast path, and the same layers with
# a batchnorm in between so the step plan runs its fused conv+relu+maxpool and fc+relu ops
FAST_CHAIN = """name: chain
input: 12x12x1
layers:
  - conv: {filters: 3, size: 3, pad: 1}
  - relu
  - maxpool: {size: 2, stride: 2}
  - conv: {filters: 4, size: 3}
  - relu
  - maxpool: {size: 2, stride: 2}
  - flatten
  - fc: {units: 6}
  - relu
  - fc: {units: 3}
"""
FUSED_STEPS = FAST_CHAIN.replace("  - conv: {filters: 4", "  - batchnorm\n  - conv: {filters: 4")
NETWORKS = {f"kind:{k}": case_spec(k) for k in KINDS} | {"fast-chain": FAST_CHAIN,
                                                        "fused-steps": FUSED_STEPS}
# zeropad's border is zeros whatever the input: those outputs stay finite
PADDING = {"kind:zeropad"}


def _nan_batch(net, pattern: str) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((3, *net.graph.input_shape)).astype(net.dtype)
    if pattern == "all":
        x[0] = np.nan
    else:                       # every pixel of the first sample NaN except one finite column
        x[0] = np.nan
        x[0, :, :, 0] = 1.0
    return x


@pytest.mark.parametrize("fuse", [True, False], ids=["fuse", "nofuse"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_nan_input_gives_nan_output_on_every_path(name, fuse):
    net = Network(NETWORKS[name], seed=0, fuse=fuse, parallel=False)
    if name == "fast-chain":
        assert (net.fast_path is not None) == fuse
    for pattern in ("all", "mostly"):
        x = _nan_batch(net, pattern)
        y = net.forward(x, training=False).reshape(3, -1)
        nan_rows = np.isnan(y[0])
        if name in PADDING:
            assert nan_rows.any() and np.isfinite(y[1:]).all()
        elif pattern == "all" or name.startswith(("fast", "fused")):
            assert nan_rows.all(), f"{name} {pattern}: {y[0]}"
        else:
            assert nan_rows.any(), f"{name} {pattern}: {y[0]}"
        if name.startswith("kind:"):
            assert np.isfinite(y[1:]).all()  # other samples are untouched (no BN across batch here)


@pytest.mark.parametrize("fuse", [True, False], ids=["fuse", "nofuse"])
def test_nan_input_gives_nan_loss_and_gradients(fuse):
    net = Network(FAST_CHAIN, seed=0, fuse=fuse, parallel=False)
    x = _nan_batch(net, "all")
    y = np.array([0, 1, 2])
    assert np.isnan(net.loss(x, y)[0])
    assert np.isnan(net.loss_and_grads(x, y))
    assert np.isnan(net.flat_grads).any()


def test_fast_chain_matches_generic_with_inf_input():
    fast = Network(FAST_CHAIN, seed=0, fuse=True, parallel=False)
    slow = Network(FAST_CHAIN, seed=0, fuse=False, parallel=False)
    x = _nan_batch(fast, "all")
    x[0] = np.inf
    a, b = fast.forward(x, training=False), slow.forward(x, training=False)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[1:], b[1:], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# refused at load: data, state dicts, checkpoints

TINY = """name: tiny
input: 4x4x1
layers:
  - flatten
  - fc: {units: 3}
"""


def _npz(tmp_path, bad_value, key="x"):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.random((12, 1, 4, 4)).astype(np.float32), "y": np.arange(12) % 3,
              "x_test": rng.random((6, 1, 4, 4)).astype(np.float32), "y_test": np.arange(6) % 3}
    arrays[key][3, 0, 2, 1] = bad_value
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("key", ["x", "x_test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_npz_data_is_refused_naming_array_and_index(tmp_path, key, bad):
    from cnncalc.train.data import load

    with pytest.raises(DataError) as e:
        load(f"npz:{_npz(tmp_path, bad, key)}")
    assert f"'{key}'" in e.value.message and "[3, 0, 2, 1]" in e.value.message


def test_float64_data_overflowing_float32_is_refused(tmp_path):
    from cnncalc.train.data import load

    path = tmp_path / "big.npz"
    np.savez(path, x=np.full((4, 1, 4, 4), 1e300), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"inf at index \[0, 0, 0, 0\]"):
        load(f"npz:{path}")


def test_nonfinite_data_from_cli_exits_2_without_writing(tmp_path):
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(spec), "--data", f"npz:{_npz(tmp_path, np.nan)}",
                                 "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "[3, 0, 2, 1]" in r.output and not (out / "last.npz").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_state_dict_refuses_nonfinite_weights(bad):
    net = Network(TINY, seed=0)
    before = net.state_dict()
    state = net.state_dict()
    name = next(k for k in state if k.endswith(".weight"))
    state[name][2, 5] = bad
    with pytest.raises(TrainError, match=rf"'{name}' holds {bad} at index \[2, 5\]"):
        net.load_state_dict(state)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def _trainer(tmp_path, **kw):
    from cnncalc.train.settings import resolve
    from cnncalc.train.trainer import Trainer

    net = Network(TINY, seed=0, parallel=False)
    settings = resolve(("test", {"epochs": 1, "batch_size": 4, **kw}))
    return Trainer(net, settings, spec_text=TINY, out_dir=tmp_path)


def test_checkpoint_with_nonfinite_weights_is_neither_saved_nor_loaded(tmp_path):
    from cnncalc.train.checkpoint import load_checkpoint, save_checkpoint

    tr = _trainer(tmp_path)
    good = tr.save(tmp_path / "last.npz")
    state = tr.state()
    name = next(iter(state["params"]))
    state["params"][name].flat[1] = np.nan
    with pytest.raises(TrainError, match="NaN|nan"):
        save_checkpoint(good, **state)
    assert np.isfinite(load_checkpoint(good).params[name]).all()   # the good one is kept
    # a NaN checkpoint written by something else is refused on load (and so on --resume)
    arrays = dict(np.load(good, allow_pickle=False))
    key = f"params/{name}"
    arrays[key] = arrays[key].copy()
    arrays[key].flat[1] = np.nan
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=rf"params entry '{name}' holds nan at index"):
        load_checkpoint(tmp_path / "bad.npz")


def test_guard_stops_when_the_update_makes_weights_nonfinite(tmp_path):
    from cnncalc.train.trainer import DivergedError

    tr = _trainer(tmp_path, lr=1e38, momentum=0.0)
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 4, 4)).astype(np.float32) * 1e3
    y = np.arange(8) % 3
    with pytest.raises(DivergedError, match=r"weights NaN/inf at step 1 \(epoch 1, batch 1/2\)"):
        tr.fit(x, y)
    assert not (tmp_path / "last.npz").exists()


def test_guard_stops_on_nonfinite_loss_naming_the_step(tmp_path):
    from cnncalc.train.trainer import DivergedError

    tr = _trainer(tmp_path)
    x = np.random.default_rng(0).random((8, 1, 4, 4)).astype(np.float32)
    x[5] = np.nan
    with pytest.raises(DivergedError, match=r"loss became nan at step \d+ \(epoch 1"):
        tr.fit(x, np.arange(8) % 3, )
    assert not (tmp_path / "last.npz").exists()


# ------------------------------------------------------------------------------------------------
# runs are never overwritten or lost


def _cli(*args):
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny_spec(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    return spec


def _train(spec, out, *args):
    return _cli("train", spec, "--data", "npz:" + str(_tiny_npz(spec.parent)), "--epochs", "1",
                "--batch-size", "8", "--out", out, *args)


def _tiny_npz(folder):
    path = folder / "tiny.npz"
    if not path.exists():
        rng = np.random.default_rng(1)
        np.savez(path, x=rng.random((24, 1, 4, 4)).astype(np.float32), y=np.arange(24) % 3)
    return path


@pytest.mark.parametrize("case", ["parent-is-file", "proc", "last-is-dir", "empty",
                                  "read-only"])
def test_unwritable_out_is_refused_before_any_work(tmp_path, tiny_spec, case, monkeypatch):
    monkeypatch.chdir(tmp_path)      # `--out ''` once meant the working folder: keep it a temp one
    if case == "parent-is-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
    elif case == "proc":
        out = "/proc/cnncalc-run"
    elif case == "last-is-dir":
        out = tmp_path / "run"
        (out / "last.npz").mkdir(parents=True)
    elif case == "empty":
        out = ""
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    r = _train(tiny_spec, out)
    assert r.exit_code == 2, r.output
    assert "cannot write the run's outputs" in r.output and "Traceback" not in r.output
    assert "epoch 1" not in r.output      # refused before training


def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path, tiny_spec):
    out = tmp_path / "run"
    assert _train(tiny_spec, out, "--epochs", "2").exit_code == 0
    before = (out / "last.npz").read_bytes()
    r = _train(tiny_spec, out)
    assert r.exit_code == 2 and "already holds a run" in r.output, r.output
    assert (out / "last.npz").read_bytes() == before
    r = _cli("train", "--resume", out / "last.npz", "--epochs", "3", "--out", out)
    assert r.exit_code == 0, r.output
    r = _train(tiny_spec, out, "--overwrite")
    assert r.exit_code == 0, r.output
    from cnncalc.train.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.npz").epoch == 1


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_first(tmp_path, tiny_spec):
    import json
    import socket
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "run.lock").write_text(json.dumps({"pid": holder.pid,
                                                  "host": socket.gethostname()}))
        r = _train(tiny_spec, out)
        assert r.exit_code == 2, r.output
        assert f"process {holder.pid} on host" in r.output
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale and is taken over
    (out / ".last.npz.abc123.tmp").write_bytes(b"\0" * 100)
    (out / ".metrics.csv.tmp").write_text("partial")
    r = _train(tiny_spec, out)
    assert r.exit_code == 0, r.output
    assert not (out / "run.lock").exists()                      # released at the end
    assert not list(out.glob(".*.tmp"))                          # stale temporaries cleaned


def test_metrics_temporary_name_is_unique_per_process(tmp_path, monkeypatch):
    from cnncalc.train.trainer import CSVLogger, EpochEnd

    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    (tmp_path / ".metrics.csv.tmp").mkdir()        # a fixed name would collide with this
    log = CSVLogger(tmp_path / "metrics.csv")
    log(EpochEnd(1, 1, 0.5, 0.5, 0.1, None, None, 1.0, 0.0, 10.0, 3))
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 2
    assert seen and seen[0] != ".metrics.csv.tmp"


@pytest.mark.parametrize("name", ["../../evil", "nodir/x", "/abs/path", "..", "a\\b", ""])
def test_interrupt_checkpoint_name_stays_in_the_working_folder(tmp_path, name):
    from cnncalc.train.outputs import interrupt_checkpoint_name

    p = interrupt_checkpoint_name(name, tmp_path)
    assert p.parent == tmp_path and p.name.endswith("-interrupted.npz")
    assert "/" not in p.name and "\\" not in p.name and ".." not in p.name


def test_interrupt_without_out_saves_inside_the_working_folder(tmp_path, monkeypatch):
    import signal

    from cnncalc.train import run
    from cnncalc.train.trainer import StepEnd

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    text = TINY.replace("name: tiny", 'name: "../../evil/x"')

    def stop(event):
        if isinstance(event, StepEnd):
            os.kill(os.getpid(), signal.SIGINT)

    result = run(text, {"data": f"npz:{_tiny_npz(tmp_path)}", "epochs": 2, "batch_size": 4},
                 callbacks=[stop])
    assert result.status == "interrupted"
    saved = Path(result.checkpoint).resolve()
    assert saved.parent == work and saved.exists()
    assert not (tmp_path / "evil").exists()


# ------------------------------------------------------------------------------------------------
# threads sharing one Network


@pytest.mark.parametrize("spec", ["fast-chain", "fused-steps"])
def test_two_threads_on_one_network_get_the_serial_results(spec):
    import threading

    net = Network(NETWORKS[spec], seed=0, parallel=False)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 5, 1, 12, 12)).astype(np.float32) for i in range(40)]
    labels = [np.arange(len(x)) % 3 for x in inputs]
    expected = [net.forward(x, training=False) for x in inputs]
    expected_p = [net.predict(x, batch_size=2) for x in inputs]
    expected_loss = [net.loss(x, y, training=False)[0] for x, y in zip(inputs, labels)]
    got: dict[tuple[int, int], tuple] = {}
    errors = []

    def hammer(worker):
        try:
            for rep in range(3):
                for i in range(worker, len(inputs), 2):
                    y = net.forward(inputs[i], training=False)
                    p = net.predict(inputs[i], batch_size=2)
                    loss = net.loss(inputs[i], labels[i], training=False)[0]
                    got[(i, rep)] = (y, p, loss)
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (i, _), (y, p, loss) in got.items():
        np.testing.assert_array_equal(y, expected[i])
        np.testing.assert_array_equal(p, expected_p[i])
        assert loss == expected_loss[i]


def test_network_lock_is_documented_and_reentrant():
    net = Network(TINY, seed=0)
    assert "thread" in Network.__doc__.lower() and "lock" in Network.__doc__
    with net.lock:   # a forward/backward pair held together
        net.forward(np.zeros((2, 1, 4, 4), np.float32))
        net.backward(np.ones((2, 3), np.float32))
