"""`cnncalc analyze` and `cnncalc layers`."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from cnncalc.cli import render
from cnncalc.cli.common import (ConventionName, ConventionOpt, Format, StrictOpt, console,
                                handle_errors, print_json, warn)
from cnncalc.counting import COUNTERS, count_like, other_tools
from cnncalc.optim import OPTIMIZERS

#: this module's commands; cnncalc.cli.app adds them to the root application
commands = typer.Typer()

#: --counts-like choices, from the one table of counting conventions
CounterName = Enum("CounterName", {e.name: e.name for e in COUNTERS}, type=str)

SpecArg = typer.Argument(..., help="YAML architecture spec (see specs/).", show_default=False)


@commands.command()
@handle_errors
def analyze(
    spec: Path = SpecArg,
    fmt: Format = typer.Option(Format.table, "--format", "-f",
                               help="table, json, markdown, csv, svg (the drawing)."),
    batch: int = typer.Option(1, "--batch", "-b", min=1, help="Batch size for memory totals."),
    optimizer: str = typer.Option(None, "--optimizer", metavar="NAME",
                                  help="Add gradients and optimizer state to the memory "
                                       "estimate (training memory): "
                                       f"{', '.join(OPTIMIZERS.names())}."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
    counts_like: CounterName = typer.Option(
        None, "--counts-like", case_sensitive=False,
        help="Print the totals as another counting tool would: " + "; ".join(
            f"{e.name}: {e.help}" for e in COUNTERS) + "."),
):
    """Per-layer output volumes, parameters, MACs, memory and receptive fields, with totals."""
    from cnncalc.spec import load

    graph = load(spec, strict=strict, convention=convention.value if convention else None)
    report = graph.analyze(batch=batch, optimizer=optimizer)
    if counts_like is not None:
        entry = COUNTERS.lookup(counts_like.value)
        counted = count_like(report, entry.name, batch)
        if fmt is Format.json:
            print_json({"tool": entry.name, "counts": entry.help, "params": counted.params,
                        "ops": counted.ops, "ops_name": counted.ops_name,
                        "per_batch": counted.per_batch, "batch": batch})
            return
        for line in render.counted_lines(entry.name, entry.help, counted, batch):
            typer.echo(line)
        return
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
    footer = render.other_tools_line(other_tools(report, batch))
    if footer:
        out.print(footer)
    if any(r["rf_exceeds_input"] for r in report["layers"]):
        out.print("! receptive field larger than the input (it covers padding)")
    warn(*report["warnings"])


@commands.command("layers")
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
