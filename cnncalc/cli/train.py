"""`cnncalc train`, `cnncalc evaluate` and `cnncalc predict`.

Thin: options are parsed here, merged and validated by :mod:`cnncalc.train.settings`, the loop is
:mod:`cnncalc.train.trainer` (which never prints); this module turns its events into a rich
progress bar, tables, a metrics CSV, a curve PNG (matplotlib, optional) or JSON lines.
"""
from __future__ import annotations

import json
import math
import sys
import time
from enum import Enum
from pathlib import Path

import typer

from cnncalc.cli.app import app
from cnncalc.cli.common import (Optimizer, TableOrJson, console, handle_errors, json_default,
                                 warn)
from cnncalc.errors import CnnCalcError, DataError


class SchedName(str, Enum):
    constant = "constant"
    step = "step"
    exponential = "exponential"
    inverse_time = "inverse_time"
    cosine = "cosine"
    linear = "linear"
    inverse_sqrt = "inverse_sqrt"


class SchedPer(str, Enum):
    step = "step"
    epoch = "epoch"


class PrepName(str, Enum):
    none = "none"
    mean_image = "mean_image"
    channel_mean = "channel_mean"
    channel_mean_std = "channel_mean_std"
    pca = "pca"
    whiten = "whiten"


_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """A one-line chart of ``values`` (used when matplotlib is absent)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_SPARK[min(7, int((v - lo) / span * 7.999))] for v in vals)


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, default=json_default) + "\n")
    sys.stdout.flush()


def _json_errors(fn):
    """In JSON mode, also report a user error as a final ``{"event": "error"}`` line."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnnCalcError as err:
            if kwargs.get("fmt") is TableOrJson.json:
                _emit_json({"event": "error", "type": type(err).__name__,
                            "message": err.message, "hint": err.hint})
            raise
    return wrapper


# ------------------------------------------------------------------------------------------------
# reporters (trainer callbacks)


class JsonReporter:
    """One JSON object per line: begin, step (every ``log_every``), epoch, checkpoint, end."""

    def __init__(self, log_every: int):
        self.log_every = max(1, int(log_every))

    def __call__(self, ev) -> None:
        from dataclasses import asdict

        from cnncalc.train import trainer as T

        if isinstance(ev, T.StepEnd):
            if ev.step % self.log_every == 0 or ev.batch == ev.steps_per_epoch:
                _emit_json({"event": "step", **asdict(ev)})
        elif isinstance(ev, T.EpochEnd):
            _emit_json({"event": "epoch", **asdict(ev)})
        elif isinstance(ev, T.TrainBegin):
            _emit_json({"event": "begin", **asdict(ev)})
        elif isinstance(ev, T.CheckpointSaved):
            _emit_json({"event": "checkpoint", **asdict(ev)})


class RichReporter:
    """A rich progress bar (loss, accuracy, lr, images/s, ETA) and one line per epoch."""

    def __init__(self, out):
        self.out = out
        self.progress = None
        self.task = None
        self._last = 0.0

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}  "
                       "lr {task.fields[lr]:.3g}  {task.fields[ips]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=self.out, transient=False, refresh_per_second=8)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, ev) -> None:
        from cnncalc.train import trainer as T

        p = self.progress
        if isinstance(ev, T.TrainBegin):
            self.epochs = ev.epochs
            self.spe = ev.steps_per_epoch
            what = (f"resumed from {ev.resumed_from} at epoch {ev.start_epoch}"
                    + (f", batch {ev.start_batch}" if ev.start_batch else "")
                    if ev.resumed_from else "training")
            p.console.print(f"{what}: {ev.n_train:,} training / {ev.n_test:,} test images, "
                            f"{ev.n_params:,} parameters, batch {ev.batch_size}, "
                            f"{ev.steps_per_epoch} steps per epoch")
            if ev.start_epoch < ev.epochs:
                self.task = p.add_task("train", total=ev.steps_per_epoch,
                                       completed=ev.start_batch, epoch=ev.start_epoch + 1,
                                       epochs=ev.epochs, loss=float("nan"), acc=0.0, lr=0.0,
                                       ips=0.0)
        elif isinstance(ev, T.StepEnd):
            now = time.perf_counter()
            if now - self._last < 0.1 and ev.batch != ev.steps_per_epoch:
                return
            self._last = now
            p.update(self.task, completed=ev.batch, epoch=ev.epoch, loss=ev.epoch_loss,
                     acc=ev.epoch_acc, lr=ev.lr, ips=ev.images_per_s)
        elif isinstance(ev, T.EpochEnd):
            test = ("" if ev.test_acc is None else
                    f"  test loss {ev.test_loss:.4f}  test acc {ev.test_acc:.2%}")
            p.console.print(f"epoch {ev.epoch}/{ev.epochs}  loss {ev.loss:.4f}  acc {ev.acc:.2%}"
                            f"{test}  lr {ev.lr:.3g}  {ev.seconds:.2f} s "
                            f"({ev.images_per_s:,.0f} img/s)")
            if ev.epoch < ev.epochs and self.task is not None:
                p.reset(self.task, total=self.spe, completed=0)
                p.update(self.task, epoch=ev.epoch + 1)
        elif isinstance(ev, T.CheckpointSaved) and ev.reason == "interrupted":
            p.console.print(f"checkpoint saved: {ev.path}")


class StepLog:
    """Keeps every step's loss (for the curve figure)."""

    def __init__(self):
        self.step: list[int] = []
        self.loss: list[float] = []

    def __call__(self, ev) -> None:
        from cnncalc.train import trainer as T

        if isinstance(ev, T.StepEnd):
            self.step.append(ev.step)
            self.loss.append(ev.loss)


# ------------------------------------------------------------------------------------------------
# figures


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
    ax1.plot(ep, [r["loss"] for r in rows], "o-", label="train (epoch mean)")
    if any(r.get("test_loss") is not None for r in rows):
        ax1.plot([r["epoch"] for r in rows if r.get("test_loss") is not None],
                 [r["test_loss"] for r in rows if r.get("test_loss") is not None], "s-",
                 label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(ep, [100 * r["acc"] for r in rows], "o-", label="train")
    if any(r.get("test_acc") is not None for r in rows):
        ax2.plot([r["epoch"] for r in rows if r.get("test_acc") is not None],
                 [100 * r["test_acc"] for r in rows if r.get("test_acc") is not None], "s-",
                 label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _summary_table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="epochs")
    for c in ("epoch", "train loss", "train acc", "test loss", "test acc", "lr", "time (s)",
              "img/s"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r["epoch"]), f"{r['loss']:.4f}", f"{r['acc']:.2%}",
                  "-" if r.get("test_loss") is None else f"{r['test_loss']:.4f}",
                  "-" if r.get("test_acc") is None else f"{r['test_acc']:.2%}",
                  f"{r['lr']:.3g}", f"{r['seconds']:.2f}", f"{r['images_per_s']:,.0f}")
    return t


# ------------------------------------------------------------------------------------------------
# train


@app.command()
@handle_errors
@_json_errors
def train(
    spec: Path = typer.Argument(None, help="YAML spec (its train: mapping gives defaults). "
                                "Optional with --resume.", show_default=False),
    data: str = typer.Option(None, "--data", "-d",
                             help="synthetic[:N] (default), mnist (env CNNCALC_MNIST_DIR), "
                                  "mnist:DIR, cifar10:DIR, npz:FILE."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Epochs (default 10)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size (default 64)."),
    optimizer: Optimizer = typer.Option(None, "--optimizer", "-o",
                                      help="sgd, momentum (default), nesterov, adagrad, "
                                           "rmsprop, adam, adamw."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate."),
    momentum: float = typer.Option(None, "--momentum", help="rho for momentum/nesterov (0.9)."),
    betas: str = typer.Option(None, "--betas", help="Adam's beta1,beta2 (0.9,0.999)."),
    eps: float = typer.Option(None, "--eps", help="Denominator epsilon (adagrad/rmsprop/adam)."),
    weight_decay: float = typer.Option(None, "--weight-decay", "--wd", help="L2 coefficient."),
    decay_rate: float = typer.Option(None, "--decay-rate", help="RMSProp's leak (0.99)."),
    no_bias_correction: bool = typer.Option(False, "--no-bias-correction",
                                            help="Adam without bias correction (lecture's "
                                                 "'Adam (almost)')."),
    schedule: SchedName = typer.Option(None, "--schedule", help="Learning-rate schedule."),
    schedule_per: SchedPer = typer.Option(None, "--schedule-per",
                                          help="Advance the schedule per step or per epoch."),
    warmup: int = typer.Option(None, "--warmup", help="Linear warm-up length (schedule units)."),
    milestones: str = typer.Option(None, "--milestones", help="Step decay points, e.g. 30,60."),
    gamma: float = typer.Option(None, "--gamma", help="Step decay factor (0.1)."),
    step_size: int = typer.Option(None, "--step-size", help="Step decay period."),
    k: float = typer.Option(None, "--k", help="Exponential / inverse_time decay rate."),
    total: int = typer.Option(None, "--total", help="Cosine/linear length (default: the run)."),
    min_lr: float = typer.Option(None, "--min-lr", help="Cosine/linear floor."),
    scale_lr_with_batch: bool = typer.Option(None, "--scale-lr-with-batch/--no-scale-lr",
                                             help="Linear scaling rule: lr x batch/base-batch."),
    base_batch: int = typer.Option(None, "--base-batch", help="Batch the lr was tuned for."),
    init: str = typer.Option(None, "--init", help="zeros, normal:0.01, xavier, he (default), "
                                                  "..."),
    preprocess: PrepName = typer.Option(None, "--preprocess",
                                        help="Fitted on the training split only."),
    seed: int = typer.Option(None, "--seed", help="Init, shuffling and dropout seed (0)."),
    deterministic: bool = typer.Option(None, "--deterministic/--parallel",
                                       help="Serial kernels: bit-reproducible runs."),
    eval_batch_size: int = typer.Option(None, "--eval-batch-size"),
    eval_every: int = typer.Option(None, "--eval-every", help="Test every N epochs (0: end)."),
    log_every: int = typer.Option(None, "--log-every", help="Steps between JSON progress "
                                                            "lines (100)."),
    out: Path = typer.Option(None, "--out", help="Write last.npz, best.npz, metrics.csv, "
                                                 "curves.png and report.html here.",
                             file_okay=False),
    resume: Path = typer.Option(None, "--resume", help="Continue from a checkpoint.",
                                dir_okay=False),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f", help="table or json "
                                  "(JSON lines: begin, step, epoch, checkpoint, end)."),
):
    """Train a spec with mini-batch SGD and report the test accuracy."""
    from cnncalc.spec import load
    from cnncalc.train import trainer as T
    from cnncalc.train.checkpoint import load_checkpoint
    from cnncalc.train.settings import resolve

    cli = {"data": data, "epochs": epochs, "batch_size": batch_size,
           "optimizer": optimizer.value if optimizer else None, "lr": lr, "momentum": momentum,
           "betas": betas, "eps": eps, "weight_decay": weight_decay, "decay_rate": decay_rate,
           "bias_correction": False if no_bias_correction else None,
           "schedule": schedule.value if schedule else None,
           "schedule_per": schedule_per.value if schedule_per else None, "warmup": warmup,
           "milestones": milestones, "gamma": gamma, "step_size": step_size, "k": k,
           "total": total, "min_lr": min_lr, "scale_lr_with_batch": scale_lr_with_batch,
           "base_batch": base_batch, "init": init,
           "preprocess": preprocess.value if preprocess else None, "seed": seed,
           "eval_batch_size": eval_batch_size, "eval_every": eval_every, "log_every": log_every}
    if deterministic is not None:
        cli["parallel"] = not deterministic
    cli = {key: v for key, v in cli.items() if v is not None}

    ckpt = load_checkpoint(resume) if resume is not None else None
    if spec is not None:
        graph = load(spec)
    elif ckpt is not None:
        graph = load(ckpt.spec_text)
    else:
        raise DataError("give a spec to train (or --resume CKPT)",
                        hint="e.g. cnncalc train specs/lenet5.yaml")
    layers = [(f"{spec or 'spec'} train:", graph.train)]
    if ckpt is not None:
        layers.append((f"checkpoint {resume}", (ckpt.extra or {}).get("settings") or {}))
    layers.append(("command line", cli))
    settings = resolve(*layers)

    json_mode = fmt is TableOrJson.json
    out_console = console()
    steplog = StepLog()
    callbacks = [steplog]
    if json_mode:
        callbacks.append(JsonReporter(settings.log_every))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        callbacks.append(T.CSVLogger(out / "metrics.csv",
                                     history=(ckpt.metrics or []) if ckpt else ()))
    interrupt_path = None if out is not None else Path(f"{graph.name or 'model'}-interrupted.npz")
    run = T.build(graph, settings, resume=ckpt, out_dir=out, interrupt_path=interrupt_path,
                  callbacks=callbacks)
    tr = run.trainer
    spe = math.ceil(len(run.x_train) / settings.batch_size)

    if json_mode:
        history = run.fit()
    else:
        reporter = RichReporter(out_console)
        tr.callbacks.append(reporter)
        with reporter:
            history = run.fit()

    rows = history.epochs
    last = history.last
    final_acc = last.get("test_acc") if last else None
    final_loss = last.get("test_loss") if last else None
    if final_acc is None and len(run.x_test):
        from cnncalc.train.evaluate import evaluate

        res = evaluate(tr.net, run.x_test, run.y_test, settings.eval_batch_size, confusion=False)
        final_acc, final_loss = res.accuracy, res.loss

    outputs = {}
    if out is not None:
        if (out / "metrics.csv").exists():
            outputs["metrics"] = str(out / "metrics.csv")
        if rows:
            png = out / "curves.png"
            if write_curves(rows, steplog.step, steplog.loss, spe, png):
                outputs["curves"] = str(png)
    if history.checkpoint:
        outputs["checkpoint"] = history.checkpoint
    if out is not None and (out / "best.npz").exists():
        outputs["best"] = str(out / "best.npz")
    if out is not None and history.checkpoint:
        from cnncalc.report import write_checkpoint_report
        outputs["report"] = str(write_checkpoint_report(history.checkpoint, out / "report.html"))

    if json_mode:
        _emit_json({"event": "end", "status": history.status, "epoch": tr.epoch,
                    "step": tr.step, "test_loss": final_loss, "test_acc": final_acc,
                    "outputs": outputs})
    else:
        if rows:
            out_console.print(_summary_table(rows))
        if "curves" not in outputs and rows:
            out_console.print(f"train loss  {sparkline([r['loss'] for r in rows])}")
            accs = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
            if accs:
                out_console.print(f"test acc    {sparkline(accs)}")
        if final_acc is not None:
            out_console.print(f"[bold]test accuracy {final_acc:.2%}[/] (loss {final_loss:.4f}) "
                              f"after {tr.epoch} epoch{'s' if tr.epoch != 1 else ''}")
        for what, path in outputs.items():
            out_console.print(f"{what}: {path}")
    if history.status == "interrupted":
        where = history.checkpoint or "(no checkpoint)"
        msg = (f"interrupted at epoch {tr.epoch + 1}, batch {tr.batch}; checkpoint: {where}. "
               f"Resume with: cnncalc train --resume {where}")
        if not json_mode:
            warn(msg)
        raise typer.Exit(code=130)


# ------------------------------------------------------------------------------------------------
# evaluate


@app.command()
@handle_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by cnncalc train.",
                                      show_default=False),
    data: str = typer.Option(None, "--data", "-d",
                             help="Data set to test on (default: the one trained on)."),
    split: str = typer.Option("test", "--split", help="test or train."),
    batch_size: int = typer.Option(1000, "--batch-size", "-b", min=1),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f"),
):
    """Accuracy, loss and confusion matrix of a checkpoint on a data set."""
    from cnncalc.train import trainer as T
    from cnncalc.train.evaluate import evaluate as run_eval
    from cnncalc.train.evaluate import load_model
    from cnncalc.train.settings import resolve

    if split not in ("test", "train"):
        raise DataError(f"--split must be test or train; got {split!r}")
    model = load_model(checkpoint)
    settings = model.settings
    if data is not None:
        settings = resolve(("checkpoint", settings.given()), ("command line", {"data": data}))
    ds = T.load_data(settings, model.graph)
    T.check_compatible(model.graph, ds)
    x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
    res = run_eval(model.net, model.prepare(x), y, batch_size, classes=ds.classes)
    if fmt is TableOrJson.json:
        _emit_json({"checkpoint": str(checkpoint), "data": settings.data, "split": split,
                    "epoch": model.checkpoint.epoch, **res.to_dict()})
        return
    from rich.table import Table

    out = console()
    out.print(f"{checkpoint}: {model.graph.name}, epoch {model.checkpoint.epoch}, "
              f"{settings.data} {split} split ({res.n:,} images)")
    k = len(res.classes)
    if k <= 20:
        t = Table(title="confusion matrix (rows: true class, columns: predicted)")
        t.add_column("true \\ pred")
        for c in res.classes:
            t.add_column(c[:8], justify="right")
        t.add_column("acc", justify="right")
        for i, c in enumerate(res.classes):
            pa = res.per_class_accuracy[i]
            t.add_row(c, *[str(int(v)) for v in res.confusion[i]],
                      "-" if pa is None else f"{pa:.1%}")
        out.print(t)
    out.print(f"[bold]accuracy {res.accuracy:.2%}[/]  loss {res.loss:.4f}")


# ------------------------------------------------------------------------------------------------
# predict


@app.command()
@handle_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by cnncalc train.",
                                      show_default=False),
    files: list[Path] = typer.Argument(..., help=".npy/.npz arrays, IDX files, or PNG/JPEG "
                                       "(with Pillow).", show_default=False),
    top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="Classes to show per image."),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows to show in the table."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f"),
):
    """Classify images with a trained checkpoint."""
    from cnncalc.train.evaluate import load_inputs, load_model
    from cnncalc.train.evaluate import predict as run_predict

    model = load_model(checkpoint)
    x, names = load_inputs(files, tuple(model.graph.input_shape))
    top, prob = run_predict(model, x, top_k=top_k)
    rows = [{"input": n, "predictions": [{"class": int(c), "name": model.classes[c]
                                          if c < len(model.classes) else str(c),
                                          "probability": float(p)}
                                         for c, p in zip(top[i], prob[i])]}
            for i, n in enumerate(names)]
    if fmt is TableOrJson.json:
        _emit_json({"checkpoint": str(checkpoint), "predictions": rows})
        return
    from rich.table import Table

    t = Table(title=f"predictions of {checkpoint}")
    t.add_column("input")
    for j in range(top.shape[1]):
        t.add_column("class" if top.shape[1] == 1 else f"#{j + 1}")
        t.add_column("p", justify="right")
    for r in rows[:limit]:
        cells = []
        for pr in r["predictions"]:
            cells += [pr["name"], f"{pr['probability']:.3f}"]
        t.add_row(r["input"], *cells)
    out = console()
    out.print(t)
    if len(rows) > limit:
        out.print(f"... {len(rows) - limit} more (use --limit or --format json)")
