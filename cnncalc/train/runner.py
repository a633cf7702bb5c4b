"""One training run from a spec: ``cnncalc.train.run(spec, overrides, out_dir=, resume=)``.

What ``cnncalc train`` does, as a library call that never prints: merge the settings (the
spec's ``train:`` < a resumed checkpoint's < ``overrides``), load and check the data, train,
evaluate on the test split when the last epoch did not, and write the outputs into ``out_dir``:
``last.npz`` (every epoch), ``best.npz`` (best test accuracy), ``metrics.csv`` and ``curves.png``
(loss and accuracy; needs matplotlib). Progress goes to ``callbacks`` as the trainer's events.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunResult", "StepLog", "run", "write_curves"]


@dataclass
class RunResult:
    """What :func:`run` returns.

    ``status`` is ``"completed"`` or ``"interrupted"`` (Ctrl-C: a resumable checkpoint was
    written to ``checkpoint``); ``epochs`` holds one record per epoch (the trainer's
    :class:`~cnncalc.train.trainer.EpochEnd` as a dict); ``test_loss``/``test_acc`` are the
    final test-split numbers (None without test data); ``outputs`` maps ``metrics``,
    ``curves``, ``checkpoint`` and ``best`` to the files written. ``timings`` breaks this run's
    seconds down: ``data`` (load and preprocess), ``compile`` (compiling or loading kernels in
    this process, outside the epochs), ``train`` (the epochs), ``eval`` (test evaluations), and
    says which ``tier`` the network ended on (``"compiled"`` or ``"numpy"``), the ``start``
    (``"warm"``, ``"background"`` or ``"wait"``: :mod:`cnncalc.train.kernels`) and
    ``switched_at_step`` (the step from which the compiled kernels ran; None: never).
    """

    status: str
    settings: Any
    epoch: int
    step: int
    batch: int
    epochs: list[dict]
    test_loss: float | None
    test_acc: float | None
    checkpoint: str | None
    outputs: dict[str, str] = field(default_factory=dict)
    net: Any = field(default=None, repr=False)
    steps_per_epoch: int = 0
    timings: dict[str, Any] = field(default_factory=dict)


class StepLog:
    """Callback that keeps every step's loss (for the curve figure)."""

    def __init__(self):
        self.step: list[int] = []
        self.loss: list[float] = []

    def __call__(self, event) -> None:
        from cnncalc.train.trainer import StepEnd

        if isinstance(event, StepEnd):
            self.step.append(event.step)
            self.loss.append(event.loss)


def write_curves(rows: list[dict], steps: list[int], step_loss: list[float],
                 steps_per_epoch: int, path: Path) -> bool:
    """Loss and accuracy curves as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if step_loss and steps_per_epoch:
        xs = [t / steps_per_epoch for t in steps]
        ax1.plot(xs, step_loss, color="0.75", lw=0.6, label="train (per step)")
    ep = [r["epoch"] for r in rows]
    tested = [r for r in rows if r.get("test_acc") is not None]
    ax1.plot(ep, [r["loss"] for r in rows], "o-", label="train (epoch mean)")
    if tested:
        ax1.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested], "s-",
                 label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(ep, [100 * r["acc"] for r in rows], "o-", label="train")
    if tested:
        ax2.plot([r["epoch"] for r in tested], [100 * r["test_acc"] for r in tested], "s-",
                 label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(spec: Any = None, overrides: Mapping[str, Any] | None = None, *,
        out_dir: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        callbacks: Iterable[Any] = (), source: str = "overrides",
        overwrite: bool = False) -> RunResult:
    """Train ``spec`` (a path, YAML text or a loaded graph; optional with ``resume``).

    ``overrides`` are training settings that win over the spec's ``train:`` mapping and the
    resumed checkpoint's (``source`` names them in error messages). Without ``out_dir`` no
    files are written, except that Ctrl-C saves ``<name>-interrupted.npz`` in the working
    directory so the run can be resumed (its name made safe from the spec's ``name``).

    ``out_dir`` is checked and locked before any work
    (:func:`~cnncalc.train.outputs.claim_out_dir`): it must be writable, free of another live
    run, and hold no earlier run's files unless ``resume`` or ``overwrite`` is given.

    Raises
    ------
    TrainError / DataError / SpecError
        Bad settings, unreadable or mismatched data, a bad spec; a diverging loss
        (:class:`~cnncalc.train.trainer.DivergedError`).
    """
    from cnncalc.train.outputs import claim_out_dir

    if out_dir is None:
        return _run(spec, overrides, None, resume, callbacks, source)
    with claim_out_dir(out_dir, resume=resume is not None, overwrite=overwrite) as claimed:
        return _run(spec, overrides, claimed.path, resume, callbacks, source)


def _run(spec, overrides, out, resume, callbacks, source) -> RunResult:
    from cnncalc import load
    from cnncalc.errors import DataError
    from cnncalc.train import trainer as T
    from cnncalc.train.checkpoint import load_checkpoint
    from cnncalc.train.evaluate import evaluate
    from cnncalc.train.outputs import interrupt_checkpoint_name
    from cnncalc.train.settings import resolve

    ckpt = load_checkpoint(resume) if resume is not None else None
    if spec is None and ckpt is None:
        raise DataError("give a spec to train (or resume a checkpoint)",
                        hint="e.g. cnncalc train specs/lenet5.yaml")
    if spec is None:
        graph = load(ckpt.spec_text)
    elif isinstance(spec, (str, os.PathLike)):
        graph = load(spec)
    else:
        graph = spec
    named = isinstance(spec, os.PathLike) or (isinstance(spec, str) and "\n" not in spec)
    layers = [(f"{spec if named else 'spec'} train:", graph.train)]
    if ckpt is not None:
        layers.append((f"checkpoint {resume}", (ckpt.extra or {}).get("settings") or {}))
    layers.append((source, overrides))
    settings = resolve(*layers)

    steplog = StepLog()
    hooks: list[Any] = [steplog]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        hooks.append(T.CSVLogger(out / "metrics.csv",
                                 history=ckpt.epoch_history() if ckpt else ()))
    interrupt_path = None if out is not None else interrupt_checkpoint_name(graph.name)
    built = T.build(graph, settings, resume=ckpt, out_dir=out, interrupt_path=interrupt_path,
                    callbacks=[*hooks, *callbacks])
    history = built.fit()
    trainer = built.trainer
    new_epochs = history.epochs[len(ckpt.metrics or []) if ckpt else 0:]
    kernels = trainer.kernels
    timings = {"data": built.data_seconds, "compile": kernels.seconds,
               "train": sum(e["seconds"] for e in new_epochs),
               "eval": sum(e["eval_seconds"] for e in new_epochs), "tier": kernels.tier,
               "start": kernels.mode, "switched_at_step": kernels.switched_at}

    last = history.last
    test_acc = last.get("test_acc") if last else None
    test_loss = last.get("test_loss") if last else None
    if test_acc is None and len(built.x_test):
        t0 = time.perf_counter()
        res = evaluate(trainer.net, built.x_test, built.y_test, settings.eval_batch_size,
                       confusion=False)
        test_acc, test_loss = res.accuracy, res.loss
        timings["eval"] += time.perf_counter() - t0

    spe = math.ceil(len(built.x_train) / settings.batch_size)
    outputs: dict[str, str] = {}
    if out is not None:
        if (out / "metrics.csv").exists():
            outputs["metrics"] = str(out / "metrics.csv")
        if history.epochs and write_curves(history.epochs, steplog.step, steplog.loss, spe,
                                           out / "curves.png"):
            outputs["curves"] = str(out / "curves.png")
    if history.checkpoint:
        outputs["checkpoint"] = history.checkpoint
    if out is not None and (out / "best.npz").exists():
        outputs["best"] = str(out / "best.npz")
    return RunResult(status=history.status, settings=settings, epoch=trainer.epoch,
                     step=trainer.step, batch=trainer.batch, epochs=history.epochs,
                     test_loss=test_loss, test_acc=test_acc, checkpoint=history.checkpoint,
                     outputs=outputs, net=trainer.net, steps_per_epoch=spe, timings=timings)
