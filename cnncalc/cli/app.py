"""The typer application; each command group lives in its own module."""
from __future__ import annotations

import functools
import importlib

import typer
from typer.core import TyperGroup
from typer.main import get_group

from cnncalc import __version__

#: Which module defines each command, in the order `cnncalc --help` lists them. A module is
#: imported only when one of its commands runs (or for the full help), so `cnncalc analyze`
#: never loads the trainer's settings, numpy or numba. Each module owns a typer of its
#: commands and imports no other module to register them; tests check this table against
#: what the modules define.
COMMAND_MODULES: dict[str, str] = {
    "analyze": "analyze", "layers": "analyze",
    "lab": "lab",
    "train": "train", "evaluate": "train", "predict": "train",
    "layer": "homework", "explain": "homework", "check": "homework", "conv": "homework",
    "solve": "homework",
    "report": "report",
    "import": "interop", "export": "interop",
    "sweep": "sweep",
}


@functools.cache
def module_group(module: str) -> TyperGroup:
    """The click group of one command module's ``commands`` typer."""
    return get_group(importlib.import_module(f"cnncalc.cli.{module}").commands)


class LazyCommands(TyperGroup):
    """The root group: resolves a command by importing only the module that defines it."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx, name: str):
        module = COMMAND_MODULES.get(name)
        if module is None:
            return None
        group = module_group(module)  # a module may be one command group itself (lab)
        return group if group.name == name else group.get_command(ctx, name)


app = typer.Typer(
    cls=LazyCommands,
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


def main() -> None:
    app()
