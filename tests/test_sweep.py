"""`cnncalc sweep` on real Dask clusters: a LocalCluster of 2 worker processes, `dask scheduler`
with two `dask worker` processes, resuming, trial failures and a worker killed mid-trial."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnncalc.cli.app import app
from reference import spec_text

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.dask

ROOT = Path(__file__).resolve().parent.parent

#: conv, relu, fc on 8x8 images; its train: mapping is what every trial starts from
TINY = ("train: {epochs: 1, batch_size: 16, optimizer: momentum, lr: 0.05, "
        "data: \"synthetic:64\"}\n"
        + spec_text("8x8x1", ["conv: {filters: 4, size: 3, pad: 1}", "relu", "flatten",
                              "fc: {units: 4}"], name="tiny"))

runner = CliRunner()


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    p.write_text(TINY)
    return p


def _results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _sweep(*args) -> list[dict]:
    """Run `cnncalc sweep ... -f json`; returns its JSON lines."""
    r = runner.invoke(app, ["sweep", *map(str, args), "--format", "json"])
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def local_sweep(spec, tmp_path_factory):
    """A 4-trial random sweep on the default LocalCluster (2 worker processes)."""
    out = tmp_path_factory.mktemp("sweep")
    tb = out / "tb"
    events = _sweep(spec, "--param", "lr=log:1e-3:1e-1", "--param", "optimizer=sgd,adam",
                    "--trials", "4", "--workers", "2", "--out", out, "--tensorboard", tb)
    return out, events


def test_local_cluster_sweep_records_every_trial(spec, local_sweep):
    out, events = local_sweep
    trials = [e for e in events if e["event"] == "trial"]
    end = events[-1]
    assert end["event"] == "end" and end["status"] == "completed" and end["trials"] == 4
    rows = _results(out)
    assert [r["id"] for r in rows] == ["000", "001", "002", "003"]
    assert list(rows[0]) == ["id", "lr", "optimizer", "status", "test_acc", "best_test_acc",
                             "loss", "test_loss", "epochs", "seconds", "message"]
    assert {r["status"] for r in rows} == {"completed"} and {r["epochs"] for r in rows} == {"1"}
    by_id = {t["id"]: t for t in trials}
    for r in rows:
        folder = out / "trials" / r["id"]
        assert {"spec.yaml", "hparams.yaml", "metrics.csv", "last.npz", "result.json"} <= {
            p.name for p in folder.iterdir()}
        assert (folder / "spec.yaml").read_text() == TINY
        hp = yaml.safe_load((folder / "hparams.yaml").read_text())
        assert hp["lr"] == pytest.approx(float(r["lr"])) and hp["optimizer"] == r["optimizer"]
        assert hp["epochs"] == 1 and hp["data"] == "synthetic:64" and hp["parallel"] is False
        assert 1e-3 <= float(r["lr"]) <= 0.1 and r["optimizer"] in ("sgd", "adam")
        metrics = list(csv.DictReader(open(folder / "metrics.csv")))
        assert float(r["test_acc"]) == pytest.approx(float(metrics[-1]["test_acc"]))
        assert by_id[r["id"]]["test_acc"] == pytest.approx(float(r["test_acc"]))
        assert list((out / "tb" / r["id"]).glob("events.out.tfevents.*"))
    best = max(rows, key=lambda r: (float(r["test_acc"]), -int(r["id"])))
    assert end["best"]["id"] == best["id"]
    assert end["command"].startswith(f"cnncalc train {spec} --lr {end['best']['params']['lr']}"
                                     f" --optimizer {best['optimizer']}")
    saved = json.loads((out / "results.json").read_text())
    assert [t["id"] for t in saved["trials"]] == ["000", "001", "002", "003"]
    assert saved["best"]["id"] == best["id"]
    if "plot" in end["outputs"]:
        assert (out / "sweep.png").stat().st_size > 0


def test_rerun_resumes_without_training_again(spec, local_sweep):
    out, _ = local_sweep
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("trials/*/result.json")}
    (out / "trials" / "002" / "result.json").unlink()   # as if 002 had not finished
    events = _sweep(spec, "--param", "lr=log:1e-3:1e-1", "--param", "optimizer=sgd,adam",
                    "--trials", "4", "--workers", "2", "--out", out)
    assert events[-1]["reused"] == 3
    assert [e["id"] for e in events if e["event"] == "trial"].count("002") == 1
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("trials/*/result.json")}
    assert {k: after[k] for k in ("000", "001", "003")} == {
        k: before[k] for k in ("000", "001", "003")}
    assert len(_results(out)) == 4
    # another sweep in the same folder is refused, not mixed in
    r = runner.invoke(app, ["sweep", str(spec), "--param", "lr=log:1e-2:1e-1", "--trials", "4",
                            "--out", str(out)])
    assert r.exit_code == 2 and "holds a different sweep" in r.output


# ------------------------------------------------------------------------------------------------
# an existing cluster


@pytest.fixture(scope="module")
def cluster():
    from cnncalc.sweep.driver import thread_env

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env=thread_env(1)) as c:
        yield c


def _config(spec, out, scheduler, params, **kw):
    from cnncalc.sweep.driver import SweepConfig

    return SweepConfig(spec=spec, params=params, out=out, scheduler=scheduler, **kw)


def test_failed_and_diverged_trials_are_recorded(spec, tmp_path, cluster):
    from cnncalc.sweep.driver import run_sweep

    result = run_sweep(_config(spec, tmp_path, cluster.scheduler_address,
                               ["lr=0.05,1e12", "data=synthetic:64,missing.npz"],
                               method="grid", fixed={"optimizer": "sgd"}))
    status = {(r["params"]["lr"], r["params"]["data"]): r for r in result.records}
    assert status[0.05, "synthetic:64"]["status"] == "completed"
    assert status[1e12, "synthetic:64"]["status"] == "diverged"
    assert "diverged" in status[1e12, "synthetic:64"]["message"]
    for lr in (0.05, 1e12):
        assert status[lr, "missing.npz"]["status"] == "failed"
        assert "missing.npz" in status[lr, "missing.npz"]["message"]
    assert result.best["params"] == {"lr": 0.05, "data": "synthetic:64"}
    assert [r["status"] for r in _results(tmp_path)] == [r["status"] for r in result.records]


def test_halving_promotes_the_best_and_prunes_the_rest(spec, tmp_path, cluster):
    from cnncalc.sweep.driver import run_sweep

    result = run_sweep(_config(spec, tmp_path, cluster.scheduler_address,
                               ["lr=log:1e-3:0.3"], method="halving", trials=4, eta=2,
                               fixed={"epochs": 2}))
    assert len(result.records) == 4
    done = [r for r in result.records if r["status"] == "completed"]
    pruned = [r for r in result.records if r["status"] == "pruned"]
    # Asynchronous halving promotes on what has finished so far, so how many move up depends on
    # the finishing order (1 to 3 of 4 at eta 2); what holds in every order: the best floor(4/2)
    # of rung 0 were promoted, and the worst never was.
    assert len(done) + len(pruned) == 4 and 1 <= len(done) <= 3
    assert {r["epochs"] for r in done} == {2} and {r["epochs"] for r in pruned} == {1}
    first = {r["id"]: r["curve"][0] if r["curve"][0] is not None else float("-inf")
             for r in result.records}
    rung0 = sorted(result.records, key=lambda r: (-first[r["id"]], r["id"]))
    assert {r["id"] for r in rung0[:2]} <= {r["id"] for r in done}
    assert rung0[-1]["status"] == "pruned"
    # a promoted trial resumed its own checkpoint: one metrics row per epoch
    for r in done:
        assert len(r["curve"]) == 2
    assert result.best["epochs"] == 2


def test_killed_worker_reruns_its_trial(spec, tmp_path, cluster):
    from cnncalc.sweep.driver import run_sweep

    client = distributed.Client(cluster)
    cfg = _config(spec, tmp_path, cluster.scheduler_address, ["lr=log:1e-3:1e-1"], trials=4,
                  fixed={"data": "synthetic:4000", "epochs": 2})
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=run_sweep(cfg)))
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        busy = [w for w, keys in client.processing().items()
                if any(str(k).startswith("cnncalc-trial") for k in keys)]
        if busy and list(tmp_path.glob("trials/*/hparams.yaml")):
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.05)
    thread.join(timeout=240)
    client.close()
    assert killed is not None, "no trial was running to kill"
    result = box["result"]
    assert [r["id"] for r in result.records] == ["000", "001", "002", "003"]
    assert {r["status"] for r in result.records} == {"completed"}
    assert {r["epochs"] for r in result.records} == {2}
    assert len(_results(tmp_path)) == 4


# ------------------------------------------------------------------------------------------------
# `dask scheduler` and two `dask worker` processes, as a user starts them on each node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_processes():
    dask = shutil.which("dask") or pytest.skip("no `dask` command on PATH")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), "NUMBA_NUM_THREADS": "1"}
    procs = []
    try:
        procs.append(subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        for _ in range(2):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_sweep_on_dask_scheduler_and_workers(spec, tmp_path, dask_processes):
    events = _sweep(spec, "--param", "lr=log:1e-3:1e-1", "--param", "init=he,xavier",
                    "--trials", "4", "--scheduler", dask_processes, "--out", tmp_path)
    assert events[-1]["status"] == "completed" and events[-1]["trials"] == 4
    assert [r["status"] for r in _results(tmp_path)] == ["completed"] * 4
    again = _sweep(spec, "--param", "lr=log:1e-3:1e-1", "--param", "init=he,xavier",
                   "--trials", "4", "--scheduler", dask_processes, "--out", tmp_path)
    assert again[-1]["reused"] == 4


def test_sweep_cli_errors_are_one_line(spec, tmp_path):
    r = runner.invoke(app, ["sweep", str(spec), "--param", "lr=log:1e-3", "--out",
                            str(tmp_path)])
    assert r.exit_code == 2 and "expected log:LOW:HIGH" in r.output
    r = runner.invoke(app, ["sweep", str(spec), "--param", "lr=0.1", "--lr", "0.2", "--out",
                            str(tmp_path)])
    assert r.exit_code == 2 and "both swept (--param) and fixed" in r.output
    r = runner.invoke(app, ["sweep", str(spec), "--param", "lr=0.1", "--workers", "999",
                            "--threads-per-trial", "2", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "exceed the" in r.output
    assert sys.modules.get("distributed") is distributed
