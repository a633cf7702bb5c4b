"""`cnncalc report`: one self-contained HTML page for a spec or a training checkpoint."""
from __future__ import annotations

from pathlib import Path

import typer

from cnncalc.cli.app import app
from cnncalc.cli.common import (ConventionName, ConventionOpt, Optimizer, StrictOpt, console,
                                handle_errors)


@app.command()
@handle_errors
def report(
    source: Path = typer.Argument(..., help="A YAML spec, or a checkpoint (.npz) written by "
                                  "cnncalc train.", show_default=False),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write.",
                             dir_okay=False),
    batch: int = typer.Option(None, "--batch", "-b", min=1,
                              help="Batch for the memory estimate (default: the spec's or "
                                   "checkpoint's train batch size, else 1)."),
    optimizer: Optimizer = typer.Option(None, "--optimizer",
                                        help="Optimizer for the training-memory estimate "
                                             "(default: the spec's or checkpoint's, else sgd)."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                  help="For a checkpoint: run it on its test set for the "
                                       "confusion matrix."),
):
    """Write an HTML report: the architecture drawn as volumes, the layer table, receptive
    fields, memory and warnings; for a checkpoint also its training curves, confusion matrix
    and settings. Works offline (no network requests)."""
    from cnncalc.report import write_report

    path = write_report(source, out, batch=batch,
                        optimizer=optimizer.value if optimizer else None, strict=strict,
                        convention=convention.value if convention else None, evaluate=evaluate)
    console().print(f"report: {path}")
