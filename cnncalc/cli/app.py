"""The typer application; each command group lives in its own module."""
from __future__ import annotations

import typer

from cnncalc import __version__
from cnncalc.cli import analyze, homework, lab, report, train

app = typer.Typer(
    name="cnncalc",
    help="CNN layer calculator, shape/parameter analyzer and trainer.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"cnncalc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")):
    """CNN layer calculator, shape/parameter analyzer and trainer."""


# Each command module owns a typer of its commands and imports no other to register them;
# here they are assembled, in the order `cnncalc --help` lists them.
for _module in (analyze, lab, train, homework, report):
    app.add_typer(_module.commands)


def main() -> None:
    app()
