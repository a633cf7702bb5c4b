"""`cnncalc train`, `cnncalc evaluate` and `cnncalc predict`.

Thin: ``train``'s setting options are built from :class:`cnncalc.train.settings.TrainSettings`'
declared fields (name, default, help, choices written once there), the run is
:func:`cnncalc.train.run` (which never prints); this module turns its events into a rich
progress bar and tables, or JSON lines.
"""
from __future__ import annotations

import inspect
import math
import sys
import time
from pathlib import Path

import typer

from cnncalc.cli.common import (TableOrJson, console, dumps_json, handle_errors, settings_options,
                                warn)
from cnncalc.cli.render import user_text as _u
from cnncalc.errors import CnnCalcError, DataError


#: this module's commands; cnncalc.cli.app adds them to the root application
commands = typer.Typer()


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
    sys.stdout.write(dumps_json(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------
# reporters (trainer callbacks)


class JsonReporter:
    """One JSON object per line: begin, step (every ``log_every`` steps, from the run's
    settings), epoch, checkpoint."""

    log_every = 1

    def __call__(self, ev) -> None:
        from dataclasses import asdict

        from cnncalc.train import trainer as T

        if isinstance(ev, T.TrainBegin):
            self.log_every = max(1, int(ev.settings["log_every"]))
        if isinstance(ev, T.StepEnd):
            if ev.step % self.log_every == 0 or ev.batch == ev.steps_per_epoch:
                _emit_json({"event": "step", **asdict(ev)})
        elif isinstance(ev, T.EpochEnd):
            _emit_json({"event": "epoch", **asdict(ev)})
        elif isinstance(ev, T.TrainBegin):
            _emit_json({"event": "begin", **asdict(ev)})
        elif isinstance(ev, T.CheckpointSaved):
            _emit_json({"event": "checkpoint", **asdict(ev)})
        elif isinstance(ev, (T.Compiling, T.CompileEnd)):
            console(stderr=True).print(compile_text(ev))   # stdout stays JSON lines


def compile_text(ev) -> str:
    """The line a :class:`~cnncalc.train.kernels.Compiling` or ``CompileEnd`` event prints."""
    from cnncalc.train import trainer as T

    if isinstance(ev, T.Compiling):
        return f"{ev.message}: {'in the background; ' if ev.mode == 'background' else ''}" \
               f"{_u(ev.reason)}"
    if ev.tier == "compiled":
        return (f"kernels ready after {ev.seconds:.1f} s (not counted in the epoch time); "
                f"compiled kernels from step {ev.step + 1}")
    return f"background compile failed (see {_u(ev.log)}); training stays on the NumPy tier"


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
            what = (f"resumed from {_u(ev.resumed_from)} at epoch {ev.start_epoch}"
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
            p.console.print(f"checkpoint saved: {_u(ev.path)}")
        elif isinstance(ev, (T.Compiling, T.CompileEnd)):
            p.console.print(compile_text(ev))


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


def train(
    spec: Path = typer.Argument(None, help="YAML spec (its train: mapping gives defaults). "
                                "Optional with --resume.", show_default=False),
    out: str = typer.Option(None, "--out", help="Write last.npz, best.npz, metrics.csv, "
                                                "curves.png and report.html here (checked "
                                                "and locked before any work).",
                            show_default=False),
    resume: Path = typer.Option(None, "--resume", help="Continue from a checkpoint.",
                                dir_okay=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in "
                                   "--out (without it, such a folder is refused)."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f", help="table or json "
                                    "(JSON lines: begin, step, epoch, checkpoint, end)."),
    tensorboard: Path = typer.Option(None, "--tensorboard", file_okay=False,
                                     help="Write TensorBoard event files here (needs "
                                     "cnncalc[tensorboard])."),
    **overrides,
):
    """Train a spec with mini-batch SGD and report the test accuracy."""
    from cnncalc.train import run

    json_mode = fmt is TableOrJson.json
    out_console = console()
    given = {k: v for k, v in overrides.items() if v is not None}
    logs = []
    if tensorboard is not None:
        from cnncalc.train.tensorboard import TensorBoardLogger

        logs.append(TensorBoardLogger(tensorboard))
    try:
        if json_mode:
            result = run(spec, given, out_dir=out, resume=resume,
                         callbacks=[JsonReporter(), *logs], source="command line",
                         overwrite=overwrite)
        else:
            with RichReporter(out_console) as reporter:
                result = run(spec, given, out_dir=out, resume=resume,
                             callbacks=[reporter, *logs], source="command line",
                             overwrite=overwrite)
    except CnnCalcError as err:
        if json_mode:   # scripts read the reason from the last line too
            _emit_json({"event": "error", "type": type(err).__name__, "message": err.message,
                        "hint": err.hint})
        raise
    finally:
        for log in logs:
            log.close()
    if out is not None and result.checkpoint:
        from cnncalc.report import write_checkpoint_report

        # evaluated on the tier the run ended on: a cold run does not compile here either
        result.outputs["report"] = str(write_checkpoint_report(
            result.checkpoint, Path(out) / "report.html", tier=result.net.tier))
    _report(result, json_mode, out_console)


def _report(result, json_mode: bool, out_console) -> None:
    rows, outputs = result.epochs, result.outputs
    if json_mode:
        _emit_json({"event": "end", "status": result.status, "epoch": result.epoch,
                    "step": result.step, "test_loss": result.test_loss,
                    "test_acc": result.test_acc, "outputs": outputs,
                    "timings": result.timings})
    else:
        if rows:
            out_console.print(_summary_table(rows))
        if "curves" not in outputs and rows:
            out_console.print(f"train loss  {sparkline([r['loss'] for r in rows])}")
            accs = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
            if accs:
                out_console.print(f"test acc    {sparkline(accs)}")
        if result.test_acc is not None:
            out_console.print(f"[bold]test accuracy {result.test_acc:.2%}[/] (loss "
                              f"{result.test_loss:.4f}) after {result.epoch} "
                              f"epoch{'s' if result.epoch != 1 else ''}")
        for what, path in outputs.items():
            out_console.print(f"{what}: {_u(path)}")
    if result.status == "interrupted":
        where = result.checkpoint or "(no checkpoint)"
        msg = (f"interrupted at epoch {result.epoch + 1}, batch {result.batch}; checkpoint: "
               f"{where}. Resume with: cnncalc train --resume {where}")
        if not json_mode:
            warn(msg)
        raise typer.Exit(code=130)


_train_signature = inspect.signature(train)
train.__signature__ = _train_signature.replace(parameters=[
    *(p for p in _train_signature.parameters.values() if p.kind is not p.VAR_KEYWORD),
    *settings_options()])
commands.command("train")(handle_errors(train))


# ------------------------------------------------------------------------------------------------
# evaluate


@commands.command("evaluate")
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
    out.print(f"{_u(checkpoint)}: {_u(model.graph.name)}, epoch {model.checkpoint.epoch}, "
              f"{_u(settings.data)} {split} split ({res.n:,} images)")
    k = len(res.classes)
    if k <= 20:
        t = Table(title="confusion matrix (rows: true class, columns: predicted)")
        t.add_column("true \\ pred")
        for c in res.classes:
            t.add_column(_u(c[:8]), justify="right")
        t.add_column("acc", justify="right")
        for i, c in enumerate(res.classes):
            pa = res.per_class_accuracy[i]
            t.add_row(_u(c), *[str(int(v)) for v in res.confusion[i]],
                      "-" if pa is None else f"{pa:.1%}")
        out.print(t)
    out.print(f"[bold]accuracy {res.accuracy:.2%}[/]  loss {res.loss:.4f}")


# ------------------------------------------------------------------------------------------------
# predict


@commands.command("predict")
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

    t = Table(title=f"predictions of {_u(checkpoint)}")
    t.add_column("input")
    for j in range(top.shape[1]):
        t.add_column("class" if top.shape[1] == 1 else f"#{j + 1}")
        t.add_column("p", justify="right")
    for r in rows[:limit]:
        cells = []
        for pr in r["predictions"]:
            cells += [_u(pr["name"]), f"{pr['probability']:.3f}"]
        t.add_row(_u(r["input"]), *cells)
    out = console()
    out.print(t)
    if len(rows) > limit:
        out.print(f"... {len(rows) - limit} more (use --limit or --format json)")
