"""What every command shares: consoles, output formats and the error → exit-code mapping."""
from __future__ import annotations

import functools
import json
import os
import sys
from enum import Enum

import typer
from rich.console import Console

from cnncalc.analysis import OPTIMIZER_STATE
from cnncalc.conventions import CONVENTIONS, DEFAULT
from cnncalc.errors import CnnCalcError


class Format(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    csv = "csv"


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


#: Optimizer choices on the command line, from the analyzer's table (which imports no numpy).
Optimizer = Enum("Optimizer", {name: name for name in OPTIMIZER_STATE}, type=str)

#: Convention choices on the command line, from the convention registry.
ConventionName = Enum("ConventionName", {name: name for name in CONVENTIONS.names()}, type=str)
ConventionOpt = typer.Option(
    None, "--convention",
    help="Rounding/padding convention: " + ", ".join(
        f"{name} (default)" if name == DEFAULT else name for name in CONVENTIONS.names()) + ".")
StrictOpt = typer.Option(False, "--strict",
                         help="cs231n's rule: a non-integer (W - F + 2P)/S + 1 is an error.")


def console(stderr: bool = False) -> Console:
    """A console per call; a fixed width when not on a terminal so output is stable."""
    width = None
    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty():
        width = int(os.environ.get("COLUMNS", "160"))
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def source_snippet(err: CnnCalcError) -> str | None:
    loc = err.location
    if loc is None or loc.line is None or not loc.file or not os.path.exists(loc.file):
        return None
    try:
        with open(loc.file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    if not 1 <= loc.line <= len(lines):
        return None
    text = lines[loc.line - 1]
    caret = " " * ((loc.col or 1) - 1) + "^"
    return f"{loc.line:>5} | {text}\n      | {caret}"


def report_error(err: CnnCalcError) -> None:
    err_console = console(stderr=True)
    err_console.print(f"[bold red]{_escape(str(err).splitlines()[0])}[/]")
    snippet = source_snippet(err)
    if snippet:
        err_console.print(_escape(snippet))
    if err.hint:
        err_console.print(f"  [cyan]hint:[/] {_escape(err.hint)}")


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def handle_errors(fn):
    """Turn user errors into one clear message on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnnCalcError as err:
            report_error(err)
            raise typer.Exit(code=2) from None
    return wrapper


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(obj):
    """JSON for numpy scalars and arrays, and paths."""
    import numpy as np
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def warn(message: str) -> None:
    console(stderr=True).print(f"[yellow]warning:[/] {_escape(message)}")
