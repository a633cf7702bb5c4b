"""The output-size rule shared by every sliding-window layer (conv and pools).

It applies the chosen convention and raises on impossible sizes. When (W − F + 2P)/S + 1 is
not an integer, strict conventions (cs231n) fail, suggesting a padding or stride that fits;
the default warns only when real input rows or columns are never seen, and suggests a fix
only when it keeps the output size the following layers were built on. Floor dropping only
padding is not a warning (``explain`` shows it as a note).
"""
from __future__ import annotations

from fractions import Fraction

from cnncalc.errors import ShapeError
from cnncalc.layers.base import Context, OutSize, effective_kernel, out_size, same_padding

AXIS_NAMES = ("height", "width", "width and height")
AXIS_UNITS = ("rows", "columns", "rows and columns")


def fits(n: int, k_eff: int, s: int, pad_total: int) -> bool:
    return n + pad_total - k_eff >= 0 and (n + pad_total - k_eff) % s == 0


def smallest_fitting_pad(n: int, k_eff: int, s: int, start: int) -> int | None:
    """The smallest padding per side p ≥ ``start`` with (n + 2p − F_eff) divisible by S, solved
    as the congruence 2p ≡ F_eff − n (mod S) rather than by trying up to S paddings."""
    r = (k_eff - n) % s
    if s % 2 == 0:
        if r % 2:
            return None
        target, m = r // 2, s // 2
    else:
        target, m = (r * (s + 1) // 2) % s, s     # (s + 1)/2 is 2's inverse modulo odd s
    p = start + (target - start) % m
    while n + 2 * p - k_eff < 0:                 # at most one step per S rows of kernel
        p += m
    return p


def closest_dividing_stride(span: int, s: int, limit: int) -> int | None:
    """The stride t ≠ S in 1..``limit`` closest to S that divides ``span`` exactly; found from
    the divisors of ``span`` (at most √span trials), never by counting up to S."""
    if span < 0:
        return None
    if span == 0:   # every stride divides 0: the neighbour of S
        return s - 1 if s > 1 else (2 if limit >= 2 else None)
    divisors, i = set(), 1
    while i * i <= span:
        if span % i == 0:
            divisors.update((i, span // i))
        i += 1
    fitting = [t for t in divisors if t != s and t <= limit]
    return min(fitting, key=lambda t: (abs(t - s), t)) if fitting else None


def suggest_fit(n: int, k: int, s: int, pad_total: int, dilation: int = 1) -> str:
    """A padding or stride that makes (W − F + 2P)/S + 1 an integer, in words."""
    k_eff = effective_kernel(k, dilation)
    ideas = []
    p = smallest_fitting_pad(n, k_eff, s, pad_total // 2)
    if p is not None and p <= pad_total // 2 + s:
        ideas.append(f"pad {p} (output {(n + 2 * p - k_eff) // s + 1})")
    best = closest_dividing_stride(n + pad_total - k_eff, s, max(k_eff, s))
    if best is not None:
        ideas.append(f"stride {best} (output {(n + pad_total - k_eff) // best + 1})")
    return "use " + " or ".join(ideas) if ideas else "change the kernel size, stride or padding"


def real_rows_unseen(res: OutSize, pad_after: int, k_eff: int) -> int:
    """Real input rows (columns) at the far edge that floor leaves unseen, beyond the gap of
    ``max(0, S − F_eff)`` rows a kernel narrower than its stride leaves between any two windows
    (when there are two): ``unseen − P_after − max(0, S − F_eff)`` (≤ 0: nothing is lost that
    the layer does not skip anyway)."""
    gap = max(0, res.stride - k_eff) if res.size > 1 else 0   # one window: no gaps to match
    return res.unseen - pad_after - gap


def suggest_same_size(n: int, k: int, s: int, pad_total: int, dilation: int, size: int) -> str:
    """A stride, kernel or padding that tiles the input *and* keeps the output size ``size``
    that the following layers were built on; "" when there is none.

    Kept size with an exact fit means ``n + P − F_eff = (size − 1)·S``: for a stride,
    S' = (n + P − F_eff)/(size − 1); for a kernel, F' = n + P − (size − 1)·S; for a padding,
    P' = (size − 1)·S + F_eff − n (split evenly)."""
    k_eff = effective_kernel(k, dilation)
    span = n + pad_total - k_eff
    ideas = []
    if size > 1 and span % (size - 1) == 0 and span // (size - 1) != s:
        ideas.append(f"stride {span // (size - 1)}")
    if dilation == 1:
        kernel = n + pad_total - (size - 1) * s
        if kernel != k and kernel >= 1:
            ideas.append(f"kernel {kernel}")
    pad = (size - 1) * s + k_eff - n
    if pad >= 0 and pad % 2 == 0 and pad != pad_total:
        ideas.append(f"pad {pad // 2}")
    if not ideas:
        return ""
    keeps = "each keeps" if len(ideas) > 1 else "keeps"
    return "use " + " or ".join(ideas) + f" ({keeps} output {size})"


def fraction_text(numerator: int, s: int) -> str:
    """(numerator)/s + 1 in two decimals, or as a fraction when two decimals would hide that
    it is not an integer (29/10⁹ + 1 is not "1")."""
    q = Fraction(numerator, s) + 1
    if q.denominator == 1:
        return str(q)
    text = f"{float(q):.2f}".rstrip("0").rstrip(".")
    return text if "." in text else f"{q.numerator}/{q.denominator}"


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
        if ctx.convention.strict:
            # the lecture's rule: the layer must tile the input exactly
            if not ceil_mode:
                raise ShapeError(
                    f"output {axis_name} {formula} = {frac} is not an integer "
                    f"({ctx.convention.name} convention: the layer does not tile the input)",
                    where=ctx.where, path=ctx.path, hint=suggest_fit(n, k, s, pb + pa, dilation))
            ctx.warn(f"output {axis_name} {formula} = {frac}; ceil mode gives {res.size}")
        elif not ceil_mode and real_rows_unseen(res, pa, k_eff) > 0:
            lost = res.unseen - pa
            rows = AXIS_UNITS[axis]
            seen_txt = (f"input {rows} {n - lost}..{n - 1} (0-based) are never seen"
                        if lost > 1 else f"the last input {rows} ({n - 1}, 0-based) "
                                         "are never seen" if axis == 2 else
                        f"input {rows[:-1]} {n - 1} (0-based) is never seen")
            fix = suggest_same_size(n, k, s, pb + pa, dilation, res.size)
            ctx.warn(f"output {axis_name} {formula} = {frac} is not an integer; floor gives "
                     f"{res.size}, so {seen_txt}" + (f"; {fix}" if fix else ""))
        # Otherwise nothing is lost: floor drops only padding (ResNet's 7x7/2 stem), a kernel
        # narrower than its stride skips the last row as it skips every other one (ResNet's
        # 1x1/2 shortcut), or ceil mode covers every row. `explain` shows the rounding.
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
