"""The cold start (cnncalc.train.kernels, cnncalc.engine.warmup): the probe, the background
compile, the switch from the NumPy tier to the compiled kernels mid-run, the --deterministic
wait, the message, compile time kept out of the epoch time, and no process left behind.

A cold cache is simulated by making the probe report a miss: the kernels this process uses are
compiled (and cached) already, so the background process only loads them and the tests stay
short. Every test points CNNCALC_CACHE_DIR at its own temporary folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from reference import spec_text
from typer.testing import CliRunner

import cnncalc
from cnncalc.cli.app import app
from cnncalc.engine import warmup
from cnncalc.train import kernels as K
from cnncalc.train import run
from cnncalc.train import trainer as T

ROOT = Path(__file__).resolve().parent.parent
# batch norm keeps it off the generated chain: the background process loads generic kernels only
SMALL = spec_text("10x10x1", ["conv: {filters: 3, size: 3, pad: 1}", "batchnorm", "relu",
                             "avgpool: {size: 2}", "flatten", "fc: {units: 8}", "relu",
                             "fc: {units: 4}"], name="small")
SETTINGS = {"data": "synthetic:192", "batch_size": 32, "epochs": 2, "lr": 0.05,
            "optimizer": "momentum"}


@pytest.fixture(scope="module", autouse=True)
def compiled_once(tmp_path_factory):
    """Compile what SMALL's training uses before any test here, waiting for it: on a fresh
    machine this module may be the first to need these kernels, and the tests below take them
    as cached."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNCALC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run(SMALL, {**SETTINGS, "compile": "wait", "epochs": 1})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A kernel cache per test, and every background process waited for (none is left)."""
    monkeypatch.setenv("CNNCALC_CACHE_DIR", str(tmp_path / "cache"))
    yield
    warmup.BackgroundCompile.wait_all(timeout=300)
    assert not warmup.BackgroundCompile.started


@pytest.fixture
def cold(monkeypatch):
    """The first probe of the run reports a cache miss; later ones really probe."""
    real = warmup.probe
    calls = []

    def probe(net, batch):
        calls.append(net.tier)
        return False if len(calls) == 1 else real(net, batch)

    monkeypatch.setattr(warmup, "probe", probe)
    return calls


class Recorder:
    """Keeps the events; at ``wait_at`` steps waits for the background compile, so that the
    switch happens at the next step, deterministically."""

    def __init__(self, wait_at: int | None = None):
        self.events = []
        self.wait_at = wait_at

    def __call__(self, ev):
        self.events.append(ev)
        if isinstance(ev, T.StepEnd) and ev.step == self.wait_at:
            warmup.BackgroundCompile.wait_all(timeout=300)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


def test_warm_run_probes_and_trains_on_the_compiled_kernels():
    rec = Recorder()
    res = run(SMALL, SETTINGS, callbacks=[rec])
    assert not rec.of(K.Compiling) and not rec.of(K.CompileEnd)
    assert res.timings["start"] == "warm" and res.timings["tier"] == "compiled"
    assert res.net.tier is None and not warmup.BackgroundCompile.started
    assert set(res.timings) >= {"data", "compile", "train", "eval"}


def test_cold_run_switches_to_the_compiled_kernels_mid_run(cold):
    rec = Recorder(wait_at=3)
    res = run(SMALL, SETTINGS, callbacks=[rec])
    (begin,) = rec.of(K.Compiling)
    assert begin.mode == "background" and begin.message == K.COMPILING_MESSAGE
    (end,) = rec.of(K.CompileEnd)
    assert end.tier == "compiled" and end.step == 3 and end.log is None
    assert res.timings["switched_at_step"] == 3 and res.timings["tier"] == "compiled"
    assert res.net.tier is None
    # the same run warm throughout: equal to float rounding, same optimizer state layout
    ref = run(SMALL, SETTINGS)
    np.testing.assert_allclose(res.net.flat_params, ref.net.flat_params, rtol=1e-3, atol=1e-4)
    for k in ref.net.buffers:
        np.testing.assert_allclose(res.net.buffers[k], ref.net.buffers[k], rtol=1e-3,
                                   atol=1e-4)
    assert [e["loss"] for e in res.epochs] == pytest.approx([e["loss"] for e in ref.epochs],
                                                            rel=1e-3)


def test_run_that_ends_first_stays_on_the_numpy_tier_and_leaves_the_compile_running(cold):
    rec = Recorder()
    res = run(SMALL, {**SETTINGS, "epochs": 1}, callbacks=[rec])
    assert res.timings["start"] == "background"
    if res.timings["switched_at_step"] is None:   # the usual case: the run was quicker
        assert res.net.tier is not None and res.net.tier.name == "numpy"
        assert res.timings["tier"] == "numpy" and not rec.of(K.CompileEnd)
    (proc,) = warmup.BackgroundCompile.started
    assert proc.wait(timeout=300) == 0   # it finishes on its own (and fills the cache)


def test_deterministic_runs_wait_for_the_compiler(cold, monkeypatch):
    started = []
    monkeypatch.setattr(warmup.BackgroundCompile, "start",
                        classmethod(lambda cls, *a: started.append(a)))
    rec = Recorder()
    res = run(SMALL, {**SETTINGS, "parallel": False}, callbacks=[rec])
    (begin,) = rec.of(K.Compiling)
    assert begin.mode == "wait" and "deterministic" in begin.reason
    (end,) = rec.of(K.CompileEnd)
    assert end.tier == "compiled" and end.step == 0
    assert not started and res.net.tier is None and res.timings["start"] == "wait"
    # and they repeat bit for bit against a warm run
    warm = run(SMALL, {**SETTINGS, "parallel": False})
    np.testing.assert_array_equal(res.net.flat_params, warm.net.flat_params)


def test_compile_wait_setting_and_kinds_without_a_numpy_tier_wait(monkeypatch):
    from cnncalc.engine import numpy_tier

    monkeypatch.setattr(warmup, "probe", lambda net, batch: False)   # always cold
    rec = Recorder()
    run(SMALL, {**SETTINGS, "compile": "wait", "epochs": 1}, callbacks=[rec])
    assert rec.of(K.Compiling)[0].reason == "compile: wait"
    monkeypatch.setattr(numpy_tier, "unsupported", lambda graph: ["batchnorm"])
    rec = Recorder()
    run(SMALL, {**SETTINGS, "epochs": 1}, callbacks=[rec])
    assert rec.of(K.Compiling)[0].reason == "no NumPy tier for batchnorm"
    assert not warmup.BackgroundCompile.started


def test_compile_and_load_time_is_not_epoch_time(cold, monkeypatch):
    """A fake clock jumps 1000 s whenever the kernels are probed or loaded: the epochs do not
    see the jump, the compile timing does."""
    jump = [0.0]
    real_clock = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + jump[0])
    probe = warmup.probe

    def slow_probe(net, batch):
        jump[0] += 1000.0
        return probe(net, batch)

    monkeypatch.setattr(warmup, "probe", slow_probe)
    rec = Recorder(wait_at=2)
    res = run(SMALL, SETTINGS, callbacks=[rec])
    assert rec.of(K.CompileEnd)[0].step == 2
    assert all(e.seconds < 1000 for e in rec.of(T.EpochEnd))
    assert all(e.seconds < 1000 for e in rec.of(T.StepEnd))
    assert res.timings["compile"] >= 2000 and res.timings["train"] < 1000


def test_message_on_the_console_and_stderr_in_json_mode(cold, tmp_path, monkeypatch):
    from cnncalc.train import evaluate

    tiers = []
    load_model = evaluate.load_model
    monkeypatch.setattr(evaluate, "load_model",
                        lambda path, tier=None: tiers.append(tier) or load_model(path, tier))
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL)
    args = ["train", str(spec), "--data", "synthetic:64", "--epochs", "1"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert K.COMPILING_MESSAGE in r.stdout
    # the report's evaluation runs on the tier the run ended on (no compile at the end either)
    assert (tmp_path / "run" / "report.html").exists()
    assert [getattr(t, "name", "compiled") for t in tiers] == \
        ["numpy" if "compiled kernels from step" not in r.stdout else "compiled"]
    warmup.BackgroundCompile.wait_all(timeout=300)
    r = CliRunner().invoke(app, [*args, "--format", "json", "--compile", "wait"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]   # stdout: JSON lines only
    assert lines[-1]["event"] == "end" and lines[-1]["timings"]["start"] in ("warm", "wait")
    assert K.COMPILING_MESSAGE in r.stderr or lines[-1]["timings"]["start"] == "warm"


def test_probe_leaves_the_network_as_it_was():
    net = cnncalc.Network(SMALL.replace("- relu", "- relu\n  - dropout: {p: 0.5}"),
                          parallel=False)
    before = net.state_dict()
    rng_state = net.rng.bit_generator.state
    assert warmup.probe(net, 8)
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert net.rng.bit_generator.state == rng_state and not net.flat_grads.any()


def test_numpy_tier_compiles_nothing(tmp_path):
    """In a process with an empty numba cache, training steps on the NumPy tier trigger no
    numba compilation at all (the point of the tier)."""
    code = textwrap.dedent(f"""
        import numpy as np
        from numba.core import event
        import cnncalc
        from cnncalc.engine.numpy_tier import NUMPY_TIER
        compiled = []

        class Count(event.Listener):
            def on_start(self, ev):
                compiled.append(ev.data["dispatcher"].__name__)
            def on_end(self, ev):
                pass

        with event.install_listener("numba:compile", Count()):
            for spec in ({str(ROOT / 'specs/lenet5.yaml')!r}, {SMALL!r}):
                net = cnncalc.Network(spec)
                net.use_tier(NUMPY_TIER)
                x = np.ones((4, *net.graph.input_shape), np.float32)
                loss, dl = net.loss(x, np.arange(4) % 4)
                net.backward(dl, need_dx=False)
                with net.thread_state():
                    pass
                net.forward(x, training=False)
        print("COMPILED", compiled)
    """)
    env = dict(os.environ, CNNCALC_CACHE_DIR=str(tmp_path / "c"),
               NUMBA_CACHE_DIR=str(tmp_path / "nb"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "COMPILED []" in out.stdout
