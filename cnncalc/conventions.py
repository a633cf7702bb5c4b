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
"""
from __future__ import annotations

from dataclasses import dataclass

from cnncalc.errors import SpecError


@dataclass(frozen=True)
class Convention:
    name: str
    strict: bool = False
    pool_ceil: bool = False
    darknet: bool = False

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.name]


_DESCRIPTIONS = {
    "pytorch": "floor, with a warning when (W - F + 2P)/S is not an integer",
    "cs231n": "strict: (W - F + 2P)/S + 1 must be an integer",
    "caffe": "convolutions floor, pooling rounds up (ceil)",
    "darknet": "conv pad=1 means floor(F/2); maxpool pad is the total padding (default F-1)",
}

CONVENTIONS = {
    "pytorch": Convention("pytorch"),
    "cs231n": Convention("cs231n", strict=True),
    "caffe": Convention("caffe", pool_ceil=True),
    "darknet": Convention("darknet", darknet=True),
}


def get_convention(name: str | None, strict: bool = False) -> Convention:
    """Look up a convention by name; ``strict`` upgrades the default to cs231n's rule."""
    if name is None:
        name = "cs231n" if strict else "pytorch"
    key = str(name).lower()
    if key not in CONVENTIONS:
        raise SpecError(f"unknown convention '{name}'",
                        hint=f"choose one of: {', '.join(CONVENTIONS)}")
    conv = CONVENTIONS[key]
    if strict and not conv.strict:
        conv = Convention(conv.name, strict=True, pool_ceil=conv.pool_ceil, darknet=conv.darknet)
    return conv
