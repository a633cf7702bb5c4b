"""Name lookup shared by the optimizer and schedule tables."""
from __future__ import annotations

import difflib

from cnncalc.errors import TrainError


def lookup(what: str, name, table: dict, aliases: dict):
    """``(key, entry)`` for ``name`` in ``table`` (case, '-' and aliases forgiven)."""
    if not isinstance(name, str):
        raise TrainError(f"{what} name must be a string; got {name!r}",
                         hint=f"one of: {', '.join(table)}")
    key = name.strip().lower().replace("-", "_")
    key = aliases.get(key, key)
    if key not in table:
        close = difflib.get_close_matches(key, [*table, *aliases], n=1)
        raise TrainError(f"unknown {what} {name!r}",
                         hint=(f"did you mean {close[0]!r}? " if close else "")
                         + f"one of: {', '.join(table)}")
    return key, table[key]
