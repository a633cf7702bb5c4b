"""Strict JSON out: the one encoder for ``--format json`` and the files cnncalc writes.

Python's ``json`` writes ``NaN`` and ``Infinity``, which JSON parsers reject; a diverged loss or
an undefined ratio must still leave the output parseable, so non-finite numbers become ``null``
("no finite value"). NumPy scalars and arrays become plain numbers and lists, paths strings.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["dumps_json", "json_default", "write_json"]


def json_default(obj):
    """JSON for numpy scalars and arrays, and paths."""
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json_safe(obj):
    """``obj`` with numpy values made plain and non-finite floats replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if type(obj).__module__ == "numpy":
        return _json_safe(json_default(obj))
    return obj


def dumps_json(data, indent: int | None = None, *,
               fallback: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON text of ``data``; ``fallback`` (e.g. ``str``) encodes any other type."""
    def default(obj):
        try:
            return json_default(obj)
        except TypeError:
            if fallback is None:
                raise
            return fallback(obj)

    return json.dumps(_json_safe(data), indent=indent, allow_nan=False, default=default)


def write_json(path: str | os.PathLike, data, indent: int = 1) -> None:
    """Write ``data`` as strict JSON atomically (a temporary name unique to this process, then
    a rename), so a reader never sees half a file; unknown types are written as strings."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps_json(data, indent=indent, fallback=str))
    os.replace(tmp, path)
