"""One error hierarchy for every user mistake cnncalc can detect.

The CLI maps :class:`CnnCalcError` to exit code 2 and prints ``str(err)``; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a spec file: 1-based line and column."""

    file: str | None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<spec>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


class CnnCalcError(Exception):
    """A user error: what is wrong, where, and how to fix it.

    Parameters
    ----------
    message : what is wrong (what was expected, what was received).
    where : the layer or key it concerns, e.g. ``"layer 3 'pool1' (maxpool)"``.
    hint : how to fix it.
    location : file/line/column when the loader can tell.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None,
                 location: Location | None = None, path: tuple | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.location = location
        self.path = path

    def headline(self) -> str:
        """``file:line:col: error: where: message``, without the hint."""
        head = f"{self.location}: " if self.location else ""
        where = f"{self.where}: " if self.where else ""
        return f"{head}error: {where}{self.message}"

    def __str__(self) -> str:
        text = self.headline()
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecError(CnnCalcError):
    """The spec text or its structure is wrong (YAML syntax, unknown keys, bad values)."""


class ShapeError(CnnCalcError):
    """Shapes do not work out (kernel larger than input, mismatched merge, non-integer size)."""


class TrainError(CnnCalcError):
    """Training or execution input is wrong (data files, dtypes, settings)."""


class DataError(TrainError):
    """A data file is missing, corrupt or does not match what was expected."""


class LimitError(CnnCalcError):
    """The input asks for more work or memory than cnncalc allows (a loop length, an array
    size, the memory budget); the message names the value and the limit."""
