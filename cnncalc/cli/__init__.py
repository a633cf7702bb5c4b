"""The command-line interface: thin typer commands over the library, rendered with rich."""
from cnncalc.cli.app import app, main

__all__ = ["app", "main"]
