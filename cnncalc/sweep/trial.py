"""One trial, as it runs on a Dask worker: an ordinary :func:`cnncalc.train.run` in its folder.

The task carries the spec's text (so workers need no copy of the spec file) and the trial's
settings; the worker loads the data itself (``synthetic`` is generated, a path must exist on
that node). The folder ``DIR/trials/<id>/`` ends up holding ``spec.yaml``, ``hparams.yaml``
(the resolved settings), ``metrics.csv``, ``last.npz``/``best.npz`` and ``result.json``, the
record the driver reads back (and finds again when a sweep resumes).

A trial never raises: a diverging loss is ``status: diverged`` and any other exception
``status: failed`` with its message, so one bad configuration does not stop the sweep.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncalc.jsonio import write_json

__all__ = ["RESULT_FILE", "TrialTask", "load_result", "pin_threads", "run_trial"]

#: the record of a trial's last run, in its folder
RESULT_FILE = "result.json"


def pin_threads(threads: int) -> None:
    """Hold this process's BLAS pools to ``threads``: workers share the node's cores.

    The kernels themselves are serial (a trial with one thread runs ``parallel: false``), and
    ``NUMBA_NUM_THREADS`` only acts before numba starts, so the local cluster sets it in its
    workers' environment; this also covers BLAS in workers started by hand.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def load_result(folder: Path) -> dict | None:
    """The trial's ``result.json``, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class TrialTask:
    """What the driver sends a worker for one trial: callable with no arguments.

    ``overrides`` are the trial's settings (the sweep's fixed options and the sampled
    parameters, ``epochs`` included); ``threads`` its share of the node's cores;
    ``tensorboard`` a folder for TensorBoard event files, or None.
    """

    trial_id: str
    params: dict
    spec_text: str
    spec_name: str
    folder: str
    overrides: dict
    threads: int
    tensorboard: str | None = None

    def __call__(self) -> dict:
        return run_trial(self)


def _resumable(folder: Path):
    """The trial's own ``last.npz`` (an earlier rung of successive halving, or a run cut short
    by a dead worker or Ctrl-C) when it loads; else None."""
    path = folder / "last.npz"
    if not path.exists():
        return None
    from cnncalc.errors import DataError
    from cnncalc.train.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except DataError:   # a torn file from a killed worker: train from the start
        return None
    return path


def run_trial(task: TrialTask) -> dict:
    """Train one configuration; returns (and writes as ``result.json``) its record."""
    from cnncalc.errors import CnnCalcError
    from cnncalc.train import run
    from cnncalc.train.settings import resolve
    from cnncalc.train.trainer import DivergedError

    pin_threads(task.threads)
    folder = Path(task.folder)
    folder.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"id": task.trial_id, "params": task.params, "status": "failed",
                              "epochs": 0, "test_acc": None, "best_test_acc": None,
                              "loss": None, "test_loss": None, "seconds": 0.0,
                              "curve": [], "message": None}
    spec_file = folder / "spec.yaml"
    spec_file.write_text(task.spec_text)
    callbacks = []
    start = time.perf_counter()
    try:
        import yaml

        from cnncalc import load

        graph = load(task.spec_text)
        settings = resolve((f"{task.spec_name} train:", graph.train),
                           (f"trial {task.trial_id}", task.overrides))
        (folder / "hparams.yaml").write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
        if task.tensorboard:
            from cnncalc.train.tensorboard import TensorBoardLogger

            callbacks.append(TensorBoardLogger(task.tensorboard))
        resume = _resumable(folder)
        # the folder is this trial's own: without a usable checkpoint, start it afresh
        result = run(graph, task.overrides, out_dir=folder, resume=resume, callbacks=callbacks,
                     source=f"trial {task.trial_id}", overwrite=resume is None)
        rows = result.epochs
        record.update(status=result.status, epochs=result.epoch, test_acc=result.test_acc,
                      test_loss=result.test_loss, loss=rows[-1]["loss"] if rows else None)
    except DivergedError as err:
        record.update(status="diverged", message=err.message)
    except CnnCalcError as err:
        record.update(message=err.headline())
    except Exception as err:   # the sweep goes on; the message says what happened
        record.update(message=f"{type(err).__name__}: {err}")
    finally:
        for cb in callbacks:
            cb.close()
    record["seconds"] = round(time.perf_counter() - start, 3)
    record.update(_curve(folder / "metrics.csv"))
    if record["status"] == "diverged":
        record["epochs"] = len(record["curve"])
    write_json(folder / RESULT_FILE, record)
    return record


def _curve(metrics: Path) -> dict:
    """Per-epoch test accuracy and the best of it, from the trial's ``metrics.csv``."""
    import csv

    if not metrics.exists():
        return {}
    with open(metrics, newline="") as fh:
        rows = list(csv.DictReader(fh))
    curve = [float(r["test_acc"]) if r.get("test_acc") else None for r in rows]
    tested = [a for a in curve if a is not None]
    return {"curve": curve, "best_test_acc": max(tested) if tested else None}
