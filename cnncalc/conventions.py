"""Rounding and padding conventions of the courses and frameworks students meet.

One implementation serves ``analyze``, ``layer``, ``explain`` and ``check``:

========  =====================================================================================
pytorch   floor((W − F + 2P)/S) + 1; a non-integer quotient is allowed with a visible warning
          (real networks such as ResNet's 7x7/2 stem rely on it). Pools floor unless ceil_mode.
cs231n    (W − F + 2P)/S + 1 must be an integer: otherwise the layer is invalid (``--strict``).
caffe     convolutions floor; pooling rounds *up* (Caffe's pooling layer always uses ceil).
darknet   ``pad: 1`` on a conv is a flag meaning ⌊F/2⌋ per side; a maxpool's ``pad`` is the
          *total* padding (default F − 1) and out = ⌊(W + P − F)/S⌋ + 1.
========  =====================================================================================

:data:`CONVENTIONS` is the one table of them: each entry's ``help`` is the one-line rule shown
by ``explain`` and the CLI, and its ``extra`` holds the flags the shape rules read.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from cnncalc.errors import SpecError
from cnncalc.registry import Registry

DEFAULT = "pytorch"
#: the convention ``strict`` selects when none is named
STRICT_DEFAULT = "cs231n"


@dataclass(frozen=True)
class Convention:
    """``strict``: a non-integer output size is an error; ``pool_ceil``: pooling rounds up;
    ``darknet``: Darknet's conv pad flag and maxpool total padding."""

    name: str
    strict: bool = False
    pool_ceil: bool = False
    darknet: bool = False

    @property
    def description(self) -> str:
        return CONVENTIONS.lookup(self.name).help


CONVENTIONS = Registry("convention", error=SpecError)


def _add(name: str, help: str, **flags: bool) -> None:
    CONVENTIONS.add(name, Convention(name, **flags), help=help, **flags)


_add("pytorch", "floor, with a warning when (W - F + 2P)/S is not an integer")
_add("cs231n", "strict: (W - F + 2P)/S + 1 must be an integer", strict=True)
_add("caffe", "convolutions floor, pooling rounds up (ceil)", pool_ceil=True)
_add("darknet", "conv pad=1 means floor(F/2); maxpool pad is the total padding (default F-1)",
     darknet=True)


def get_convention(name: str | None, strict: bool = False) -> Convention:
    """Look up a convention by name; ``strict`` upgrades the default to cs231n's rule."""
    if name is None:
        name = STRICT_DEFAULT if strict else DEFAULT
    key = CONVENTIONS.canonical(str(name))
    if key is None:
        close = CONVENTIONS.suggest(str(name))
        raise SpecError(f"unknown convention '{name}'",
                        hint=(f"did you mean '{close[0]}'? " if close else "")
                        + f"choose one of: {', '.join(CONVENTIONS.names())}")
    conv = CONVENTIONS.get(key)
    return replace(conv, strict=True) if strict and not conv.strict else conv
