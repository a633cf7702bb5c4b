"""What every command shares: consoles, output formats and the error → exit-code mapping."""
from __future__ import annotations

import functools
import inspect
import os
import sys
from enum import Enum

import typer
from rich.console import Console

from cnncalc.cli.render import user_text
from cnncalc.conventions import CONVENTIONS, DEFAULT
from cnncalc.errors import CnnCalcError
from cnncalc.jsonio import dumps_json


class Format(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    csv = "csv"
    svg = "svg"  # analyze only: the architecture drawing


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


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


#: Widest source line an error shows; a longer one is cut around the column (a minified or
#: generated spec can be one line of megabytes).
SNIPPET_WIDTH = 100


def source_snippet(err: CnnCalcError) -> str | None:
    """The offending source line with a caret under the column, cut to ``SNIPPET_WIDTH``."""
    loc = err.location
    if loc is None or loc.line is None or not loc.file or not os.path.isfile(loc.file):
        return None
    try:
        with open(loc.file, encoding="utf-8", errors="replace") as fh:
            for number, text in enumerate(fh, start=1):
                if number == loc.line:
                    break
            else:
                return None
    except OSError:
        return None
    text = text.rstrip("\r\n")
    col = max(1, loc.col or 1)
    start = max(0, min(col - 1 - SNIPPET_WIDTH // 2, len(text) - SNIPPET_WIDTH))
    shown = text[start:start + SNIPPET_WIDTH]
    lead = "..." if start > 0 else ""
    tail = "..." if start + SNIPPET_WIDTH < len(text) else ""
    caret = " " * (len(lead) + col - 1 - start) + "^"
    return f"{loc.line:>5} | {lead}{shown}{tail}\n      | {caret}"


def report_error(err: CnnCalcError) -> None:
    err_console = console(stderr=True)
    err_console.print(f"[bold red]{user_text(err.headline())}[/]")
    snippet = source_snippet(err)
    if snippet:
        err_console.print(user_text(snippet, keep_newlines=True))
    if err.hint:
        err_console.print(f"  [cyan]hint:[/] {user_text(err.hint, keep_newlines=True)}")


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
    sys.stdout.write(dumps_json(data, indent=2) + "\n")


def warn(*messages: str) -> None:
    """Each message on stderr as a ``warning:`` line."""
    err = console(stderr=True)
    for message in messages:
        err.print(f"[yellow]warning:[/] {user_text(message)}")


def settings_options() -> list[inspect.Parameter]:
    """One typer option per declared :class:`TrainSettings` field: ``--field-name`` (or the
    field's own flags), its help with choices and default; every option defaults to None,
    meaning "not given", so the spec's ``train:`` and a resumed checkpoint's settings stand."""
    from rich.markup import escape

    from cnncalc.train.settings import (KEYS, default_text, meaning, option_flags, setting,
                                        value_type)

    params = []
    for name in KEYS:
        option = typer.Option(None, *option_flags(name), show_default=False,
                              help=escape(f"{meaning(name)} [default: {default_text(name)}]"),
                              metavar=setting(name).metavar)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=value_type(name) | None))
    return params
