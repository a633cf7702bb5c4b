"""`cnncalc analyze` and `cnncalc layers`."""
from __future__ import annotations

from pathlib import Path

import typer

from cnncalc.cli import render
from cnncalc.cli.app import app
from cnncalc.cli.common import (ConventionName, ConventionOpt, Format, Optimizer, StrictOpt,
                                console, handle_errors, print_json, warn)

SpecArg = typer.Argument(..., help="YAML architecture spec (see specs/).", show_default=False)


@app.command()
@handle_errors
def analyze(
    spec: Path = SpecArg,
    fmt: Format = typer.Option(Format.table, "--format", "-f",
                               help="table, json, markdown, csv, svg (the drawing)."),
    batch: int = typer.Option(1, "--batch", "-b", min=1, help="Batch size for memory totals."),
    optimizer: Optimizer = typer.Option(None, "--optimizer",
                                        help="Add gradients and optimizer state to the memory "
                                             "estimate (training memory)."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
):
    """Per-layer output volumes, parameters, MACs, memory and receptive fields, with totals."""
    from cnncalc.spec import load

    graph = load(spec, strict=strict, convention=convention.value if convention else None)
    report = graph.analyze(batch=batch, optimizer=optimizer.value if optimizer else None)
    if fmt is Format.json:
        print_json(report)
        return
    if fmt is Format.markdown:
        typer.echo(render.analysis_markdown(report), nl=False)
        return
    if fmt is Format.csv:
        typer.echo(render.analysis_csv(report), nl=False)
        return
    if fmt is Format.svg:
        from cnncalc.report import architecture_svg
        typer.echo(architecture_svg(report), nl=False)
        return
    out = console()
    if len(report["layers"]) > render.RICH_TABLE_MAX_ROWS:
        out.file.write(render.plain_table(report))
    else:
        out.print(render.analysis_table(report))
    for line in render.totals_lines(report):
        out.print(line)
    if any(r["rf_exceeds_input"] for r in report["layers"]):
        out.print("! receptive field larger than the input (it covers padding)")
    for w in report["warnings"]:
        warn(w)


@app.command("layers")
def list_layers(fmt: Format = typer.Option(Format.table, "--format", "-f")):
    """List every layer type, its aliases and options."""
    from cnncalc.layers import LAYERS
    from cnncalc.layers.options import other_spellings

    rows = []
    for entry in sorted(LAYERS, key=lambda e: e.name):
        opts = [{"name": p.name, "aliases": other_spellings(entry.obj, p.name),
                 "default": "required" if p.required else f"default {p.default!r}",
                 "doc": p.help} for p in entry.params]
        rows.append({"type": entry.name, "aliases": list(entry.aliases), "summary": entry.help,
                     "options": opts})
    if fmt is Format.json:
        print_json(rows)
        return
    console().print(render.layers_table(rows))
