"""Hyperparameter parsing: one alias table for the lecture's letters, short names and PyTorch's.

Every parser takes the raw YAML value and returns a canonical Python value, or raises
:class:`ValueError` with a message the caller turns into a :class:`SpecError` with a location.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

#: spec spelling → canonical option name, shared by every layer (a layer may add its own).
OPTION_ALIASES: dict[str, str] = {
    "K": "out_channels", "filters": "out_channels", "out_channels": "out_channels",
    "F": "kernel_size", "size": "kernel_size", "kernel": "kernel_size",
    "kernel_size": "kernel_size",
    "S": "stride", "stride": "stride",
    "P": "padding", "pad": "padding", "padding": "padding",
    "dilation": "dilation", "groups": "groups", "bias": "bias",
    "units": "out_features", "out_features": "out_features", "outputs": "out_features",
    "slope": "negative_slope", "negative_slope": "negative_slope",
    "alpha": "alpha",
    "p": "p", "rate": "p",
    "ceil_mode": "ceil_mode",
    "count_include_pad": "count_include_pad",
    "eps": "eps", "momentum": "momentum", "affine": "affine",
    "pieces": "pieces",
    "output_size": "output_size", "output": "output_size",
    "per_channel": "per_channel", "num_parameters": "num_parameters",
    "beta": "beta", "k": "k",
}



def canonical_option(layer_cls, key) -> str | None:
    """The option of ``layer_cls`` that the spelling ``key`` sets, or None.

    The layer's own spellings (``option_aliases``) are checked before the shared table.
    """
    canon = layer_cls.option_aliases.get(key, OPTION_ALIASES.get(key))
    return canon if canon in layer_cls.options else None


def other_spellings(layer_cls, option: str) -> list[str]:
    """The spellings of ``option`` besides its canonical name, as ``layer_cls`` reads them."""
    table = {**OPTION_ALIASES, **layer_cls.option_aliases}
    return [a for a, c in table.items() if c == option and a != option]


def all_spellings(layer_cls) -> list[str]:
    """Every spelling ``layer_cls`` accepts: canonical names, then the other spellings."""
    return [*layer_cls.options,
            *(a for option in layer_cls.options for a in other_spellings(layer_cls, option))]

@dataclass(frozen=True)
class Option:
    """A layer option: its parser, default (when not ``required``) and one line of help."""

    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    doc: str = ""


#: the largest integer an option may take: sizes past 2^31 - 1 overflow every framework's
#: 32-bit indexing, and checking here keeps huge numbers out of the shape arithmetic
MAX_INT = 2**31 - 1


def shown(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes a huge input."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    if isinstance(value, int) and abs(value) > 10**limit:
        return f"an integer of more than {limit} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_int(v, what: str) -> int:
    """An integer from an int, a whole float or a decimal string, at most :data:`MAX_INT` in
    magnitude."""
    n = None
    if _is_int(v):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = v if abs(v) <= MAX_INT else MAX_INT + 1
    elif isinstance(v, str):
        digits = v.strip().lstrip("+-")
        if digits.isascii() and digits.isdigit():
            n = int(v) if len(digits) <= 12 else MAX_INT + 1
    if n is None:
        raise ValueError(f"expected {what}, got {shown(v)}")
    if abs(n) > MAX_INT:
        raise ValueError(f"expected {what} of at most {MAX_INT:,} (2^31 - 1), got {shown(v)}")
    return int(n)


def positive_int(v) -> int:
    n = _as_int(v, "a positive integer")
    if n <= 0:
        raise ValueError(f"expected a positive integer, got {shown(v)}")
    return n


def non_negative_int(v) -> int:
    n = _as_int(v, "a non-negative integer")
    if n < 0:
        raise ValueError(f"expected a non-negative integer, got {shown(v)}")
    return n


def _pair_of(parse_one, what: str):
    def parse(v) -> tuple[int, int]:
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError(f"expected {what} or a pair [h, w], got {shown(v)}")
            return parse_one(v[0]), parse_one(v[1])
        if isinstance(v, str) and "x" in v.lower():
            parts = v.lower().split("x")
            if len(parts) == 2:
                return parse_one(parts[0]), parse_one(parts[1])
        one = parse_one(v)
        return one, one
    return parse


positive_pair = _pair_of(positive_int, "a positive integer")


def padding(v):
    """``int``, ``[h, w]``, ``[top, bottom, left, right]``, ``"same"`` or ``"valid"``.

    Returns ``"same"`` or ``((top, bottom), (left, right))``.
    """
    if isinstance(v, str):
        low = v.strip().lower()
        if low == "same":
            return "same"
        if low == "valid":
            return ((0, 0), (0, 0))
    if isinstance(v, (list, tuple)):
        if len(v) == 2:
            ph, pw = non_negative_int(v[0]), non_negative_int(v[1])
            return ((ph, ph), (pw, pw))
        if len(v) == 4:
            t, b, left, r = (non_negative_int(x) for x in v)
            return ((t, b), (left, r))
        raise ValueError(f"expected padding as an int, [h, w], [top, bottom, left, right], "
                         f"'same' or 'valid', got {shown(v)}")
    try:
        p = non_negative_int(v)
    except ValueError:
        raise ValueError(f"expected padding as a non-negative int, [h, w], 'same' or 'valid', "
                         f"got {shown(v)}") from None
    return ((p, p), (p, p))


def boolean(v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "false", "no", "off"):
        return v.lower() in ("true", "yes", "on")
    raise ValueError(f"expected true or false, got {shown(v)}")


def number(v) -> float:
    """A finite float (NaN, infinities and numbers past float's range are refused)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {shown(v)}")
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"expected a finite number, got {shown(v)}") from None
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {shown(v)}")
    return x


def positive_number(v) -> float:
    x = number(v)
    if not x > 0:
        raise ValueError(f"expected a positive number, got {shown(v)}")
    return x


def probability(v) -> float:
    x = number(v)
    if not 0 <= x < 1:
        raise ValueError(f"expected a probability in [0, 1), got {shown(v)}")
    return x
