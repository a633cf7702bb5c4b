"""The output-size rule shared by every sliding-window layer (conv and pools).

It applies the chosen convention, raises on impossible sizes, and warns (or, in strict mode,
fails) when (W − F + 2P)/S + 1 is not an integer, suggesting a padding or stride that fits.
"""
from __future__ import annotations

from fractions import Fraction

from cnncalc.errors import ShapeError
from cnncalc.layers.base import Context, OutSize, effective_kernel, out_size, same_padding

AXIS_NAMES = ("height", "width", "width and height")
AXIS_UNITS = ("rows", "columns", "rows and columns")


def fits(n: int, k_eff: int, s: int, pad_total: int) -> bool:
    return n + pad_total - k_eff >= 0 and (n + pad_total - k_eff) % s == 0


def suggest_fit(n: int, k: int, s: int, pad_total: int, dilation: int = 1) -> str:
    """A padding or stride that makes (W − F + 2P)/S + 1 an integer, in words."""
    k_eff = effective_kernel(k, dilation)
    ideas = []
    for p in range(pad_total // 2, pad_total // 2 + s + 1):
        if fits(n, k_eff, s, 2 * p):
            out = (n + 2 * p - k_eff) // s + 1
            ideas.append(f"pad {p} (output {out})")
            break
    strides = [t for t in range(1, max(k_eff, s) + 1) if t != s and fits(n, k_eff, t, pad_total)]
    if strides:
        best = min(strides, key=lambda t: abs(t - s))
        ideas.append(f"stride {best} (output {(n + pad_total - k_eff) // best + 1})")
    return "use " + " or ".join(ideas) if ideas else "change the kernel size, stride or padding"


def fraction_text(numerator: int, s: int) -> str:
    q = Fraction(numerator, s) + 1
    return f"{float(q):.2f}".rstrip("0").rstrip(".") if q.denominator != 1 else str(q)


def axis_out(ctx: Context, axis: int, n: int, k: int, s: int, pads: tuple[int, int],
             dilation: int = 1, ceil_mode: bool = False, what: str = "filter") -> int:
    """Output length on one axis under ``ctx.convention``; warnings go to ``ctx``."""
    pb, pa = pads
    res: OutSize = out_size(n, k, s, pb, pa, dilation, ceil_mode)
    k_eff = effective_kernel(k, dilation)
    axis_name = AXIS_NAMES[axis]
    pad_term = f"2·{pb}" if pb == pa else f"{pb}+{pa}"
    formula = f"({n} - {k_eff} + {pad_term})/{s} + 1"
    if res.numerator < 0:
        raise ShapeError(
            f"the {k_eff}-wide {what} is larger than the padded input {axis_name} "
            f"{n + pb + pa} ({n} + padding {pb + pa})",
            where=ctx.where, path=ctx.path,
            hint=f"use a smaller {what}, or pad the input by at least "
                 f"{-(-(k_eff - n) // 2)} on each side")
    if res.size <= 0:
        raise ShapeError(f"computed output {axis_name} is {res.size}", where=ctx.where,
                         path=ctx.path, hint="use a smaller kernel or stride")
    if not res.is_integer:
        frac = fraction_text(res.numerator, s)
        fix = suggest_fit(n, k, s, pb + pa, dilation)
        if ctx.convention.strict and not ceil_mode:
            raise ShapeError(
                f"output {axis_name} {formula} = {frac} is not an integer "
                f"({ctx.convention.name} convention: the layer does not tile the input)",
                where=ctx.where, path=ctx.path, hint=fix)
        if not ceil_mode:
            rows = AXIS_UNITS[axis]
            lost = res.unseen - pa  # trailing input rows/columns no window covers
            if lost > 0:
                seen_txt = (f"input {rows} {n - lost}..{n - 1} (0-based) are never seen"
                            if lost > 1 else f"the last input {rows} ({n - 1}, 0-based) "
                                             "are never seen" if axis == 2 else
                            f"input {rows[:-1]} {n - 1} (0-based) is never seen")
            else:
                seen_txt = (f"every input {rows[:-1] if axis < 2 else 'row and column'} is still "
                            f"seen (only padding is dropped)")
            # When only padding is dropped nothing is lost: no fix to suggest.
            ctx.warn(f"output {axis_name} {formula} = {frac} is not an integer; floor gives "
                     f"{res.size}, so {seen_txt}" + (f"; {fix}" if lost > 0 else ""))
        else:
            ctx.warn(f"output {axis_name} {formula} = {frac}; ceil mode gives {res.size}")
    return res.size


def resolve_padding(padding, in_hw: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)):
    """Turn ``"same"`` into explicit ``((top, bottom), (left, right))``."""
    if padding == "same":
        return tuple(same_padding(n, k, s, d)
                     for n, k, s, d in zip(in_hw, kernel, stride, dilation))
    return padding


def spatial_out(ctx: Context, in_hw: tuple[int, int], kernel, stride, pads, dilation=(1, 1),
                ceil_mode: bool = False, what: str = "filter") -> tuple[int, int]:
    """Output (height, width); a square case is checked (and warned about) once."""
    args = [(in_hw[a], kernel[a], stride[a], tuple(pads[a]), dilation[a]) for a in (0, 1)]
    if args[0] == args[1]:
        size = axis_out(ctx, 2, *args[0], ceil_mode=ceil_mode, what=what)
        return size, size
    return tuple(axis_out(ctx, a, *args[a], ceil_mode=ceil_mode, what=what) for a in (0, 1))
