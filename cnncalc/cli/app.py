"""The typer application; each command group lives in its own module."""
from __future__ import annotations

import typer

from cnncalc import __version__

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


from cnncalc.cli import analyze as _analyze  # noqa: E402,F401  (registers commands)
from cnncalc.cli import lab as _lab  # noqa: E402,F401
from cnncalc.cli import train as _train  # noqa: E402,F401
from cnncalc.cli import homework as _homework  # noqa: E402,F401
from cnncalc.cli import report as _report  # noqa: E402,F401


def main() -> None:
    app()
