"""`cnncalc analyze` and `cnncalc layers`."""
from __future__ import annotations

from pathlib import Path

import typer

from cnncalc.cli import render
from cnncalc.cli.common import (ConventionName, ConventionOpt, Format, SpecArg, StrictOpt,
                                console, handle_errors, print_json, warn)
from cnncalc.optim import OPTIMIZERS

#: this module's commands; cnncalc.cli.app adds them to the root application
commands = typer.Typer()


@commands.command()
@handle_errors
def analyze(
    spec: Path = SpecArg,
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, json, markdown, csv."),
    batch: int = typer.Option(1, "--batch", "-b", min=1, help="Batch size for memory totals."),
    optimizer: str = typer.Option(None, "--optimizer", metavar="NAME",
                                  help="Add gradients and optimizer state to the memory "
                                       "estimate (training memory): "
                                       f"{', '.join(OPTIMIZERS.names())}."),
    strict: bool = StrictOpt,
    convention: ConventionName = ConventionOpt,
):
    """Per-layer output volumes, parameters, MACs, memory and receptive fields, with totals."""
    from cnncalc.graph import load

    graph = load(spec, strict=strict, convention=convention.value if convention else None)
    report = graph.analyze(batch=batch, optimizer=optimizer)
    if fmt is Format.json:
        print_json(report)
        return
    if fmt is Format.markdown:
        typer.echo(render.analysis_markdown(report), nl=False)
        return
    if fmt is Format.csv:
        typer.echo(render.analysis_csv(report), nl=False)
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
    warn(*report["warnings"])


@commands.command("layers")
def list_layers(fmt: Format = typer.Option(Format.table, "--format", "-f")):
    """List every layer type, its aliases and options."""
    from rich.table import Table

    from cnncalc.layers import REGISTRY
    from cnncalc.layers.options import OPTION_ALIASES

    rows = []
    for kind, cls in sorted(REGISTRY.items()):
        opts = []
        for name, opt in cls.options.items():
            spellings = [a for a, c in {**OPTION_ALIASES, **cls.option_aliases}.items()
                         if c == name and a != name]
            default = "required" if opt.required else f"default {opt.default!r}"
            opts.append({"name": name, "aliases": spellings, "default": default, "doc": opt.doc})
        rows.append({"type": kind, "aliases": list(cls.aliases), "summary": cls.summary,
                     "options": opts})
    if fmt is Format.json:
        print_json(rows)
        return
    table = Table(title="layer types")
    for c in ("type", "aliases", "options", "what"):
        table.add_column(c)
    for r in rows:
        opt_text = ", ".join(
            o["name"] + (f" ({'/'.join(o['aliases'])})" if o["aliases"] else "")
            for o in r["options"])
        table.add_row(r["type"], ", ".join(r["aliases"]), opt_text, r["summary"])
    console().print(table)
