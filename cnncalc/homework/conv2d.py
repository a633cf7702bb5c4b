"""2-D convolution and cross-correlation of small matrices, with every sum of products.

True convolution flips the kernel: (A ∗ B)ᵢⱼ = Σₛ Σₜ Aₛₜ B₍ᵢ₋ₛ,ⱼ₋ₜ₎. Cross-correlation, which
CNN layers compute, slides the kernel unflipped: out[i, j] = Σₛ Σₜ A[i·S + s, j·S + t] B[s, t].
Both are computed here as a sliding dot product of the zero-padded input with the (flipped, for
convolution) kernel; the output size is the analyzer's rule (:func:`cnncalc.layers.base.out_size`)
and "same" padding is the analyzer's (:func:`cnncalc.layers.base.same_padding`).

Matrices are lists of rows; a depth-D input is a list of D matrices (depth first), and a D-deep
kernel is summed over depth, as one filter of a conv layer is.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from cnncalc.errors import ShapeError, SpecError
from cnncalc.layers.base import out_size, same_padding

MODES = ("full", "valid", "same")
MAX_TERMS = 2_000_000  # small matrices only: this is a homework tool


# ---------------------------------------------------------------------------------------------
# Parsing


def _number(tok: str, what: str, r: int, c: int):
    t = tok.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        x = float(t)
    except ValueError:
        try:
            return Fraction(t)  # "1/9", as in an averaging kernel
        except (ValueError, ZeroDivisionError):
            raise SpecError(f"{what}: '{tok.strip()}' at row {r + 1}, column {c + 1} is not a "
                            "number", hint="write numbers like 1, -1, 0.5 or 1/9") from None
    if not math.isfinite(x):
        raise SpecError(f"{what}: '{tok.strip()}' at row {r + 1}, column {c + 1} is not finite")
    return int(x) if x.is_integer() and "." not in t and "e" not in t.lower() else x


def _rows_from_text(text: str, what: str) -> list[list]:
    rows_text = [r for r in text.replace("\n", ";").split(";") if r.strip()]
    rows = []
    for r, line in enumerate(rows_text):
        line = line.strip().strip("[]")
        toks = [t for t in line.replace(",", " ").split()]
        rows.append([_number(t, what, r, c) for c, t in enumerate(toks)])
    return rows


def _check_matrix(rows, what: str, depth: int | None = None) -> list[list]:
    label = what if depth is None else f"{what} (depth slice {depth + 1})"
    if not rows or not rows[0]:
        raise SpecError(f"{label} is empty", hint='write rows separated by ";", e.g. "1,2; 3,4"')
    width = len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != width:
            raise SpecError(f"{label} is ragged: row 1 has {width} values, row {r + 1} has "
                            f"{len(row)}", hint="every row needs the same number of values")
    return rows


def _from_data(data, what: str):
    """Nested lists (from YAML/JSON) → matrix or list of matrices."""
    def num(v, r, c):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise SpecError(f"{what}: {v!r} at row {r + 1}, column {c + 1} is not a number")
        return _number(str(v), what, r, c) if isinstance(v, str) else v

    if not isinstance(data, list) or not data:
        raise SpecError(f"{what} must be a list of rows (or of matrices, for depth)")
    if all(isinstance(row, list) for row in data) and data and all(
            isinstance(v, list) for row in data for v in row):
        return [_check_matrix([[num(v, r, c) for c, v in enumerate(row)] for r, row in
                               enumerate(sl)], what, d) for d, sl in enumerate(data)]
    if all(isinstance(row, list) for row in data):
        return [_check_matrix([[num(v, r, c) for c, v in enumerate(row)]
                               for r, row in enumerate(data)], what)]
    raise SpecError(f"{what} must be a list of rows, e.g. [[1, 2], [3, 4]]")


def parse_matrix(text: str, what: str = "matrix") -> list[list[list]]:
    """An inline matrix (``"1,3,1; 0,-1,1; 2,2,-1"``, depth slices separated by ``|``), a
    ``[[...]]`` list, or a file (rows on lines, values by spaces or commas, depth slices
    separated by a blank line; or YAML/JSON nested lists). Returns depth × rows × columns."""
    raw = str(text).strip()
    if not raw:
        raise SpecError(f"{what} is empty", hint='write rows separated by ";", e.g. "1,2; 3,4"')
    path = Path(raw)
    is_file = False
    try:
        is_file = len(raw) < 4096 and "\n" not in raw and path.is_file()
    except OSError:
        pass
    if not is_file and path.suffix.lower() in (".txt", ".csv", ".yaml", ".yml", ".json", ".dat"):
        raise SpecError(f"{what} file '{raw}' not found",
                        hint='give an existing file, or the matrix inline: "1,2; 3,4"')
    if is_file:
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"cannot read {what} file '{path}': {err}") from None
        what = f"{what} ('{path}')"
        slices = [s for s in _split_blank(raw)]
    else:
        slices = raw.split("|")
    if raw.lstrip().startswith("["):
        import yaml
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError:
            data = None
        if isinstance(data, list):
            return _from_data(data, what)
    mats = [_check_matrix(_rows_from_text(s, what), what, d if len(slices) > 1 else None)
            for d, s in enumerate(slices)]
    shapes = {(len(m), len(m[0])) for m in mats}
    if len(shapes) > 1:
        raise SpecError(f"{what}: depth slices differ in size "
                        f"({', '.join(f'{h}x{w}' for h, w in sorted(shapes))})",
                        hint="every depth slice needs the same rows and columns")
    return mats


def _split_blank(text: str) -> list[str]:
    blocks, cur = [], []
    for line in text.splitlines():
        s = line.split("#", 1)[0].strip()
        if s:
            cur.append(s)
        elif cur:
            blocks.append("\n".join(cur))
            cur = []
    if cur:
        blocks.append("\n".join(cur))
    return blocks or [""]


# ---------------------------------------------------------------------------------------------
# Computing


def rotate180(m: list[list]) -> list[list]:
    return [list(reversed(row)) for row in reversed(m)]


def _plain(v):
    if isinstance(v, Fraction):
        return int(v) if v.denominator == 1 else float(v)
    if isinstance(v, float) and v.is_integer():
        return v
    return v


def conv2d(a, b, *, mode: str = "full", stride: int = 1, pad: int = 0,
           correlate: bool = False, steps: bool = False) -> dict:
    """Convolve (or cross-correlate) ``a`` (depth × H × W, or H × W) with kernel ``b``.

    ``mode``: ``full`` (every overlap; pads k − 1 on each side), ``valid`` (the kernel inside
    the input) or ``same`` (the analyzer's "same" padding: ceil(n/S) outputs). ``pad`` adds
    zeros on every side first (not with ``same``). Returns plain data.
    """
    a = _as_volume(a, "input")
    b = _as_volume(b, "kernel")
    if mode not in MODES:
        raise SpecError(f"unknown mode '{mode}'", hint="use full, valid or same")
    if not isinstance(stride, int) or stride < 1:
        raise SpecError(f"stride must be a positive integer, got {stride!r}")
    if not isinstance(pad, int) or pad < 0:
        raise SpecError(f"pad must be a non-negative integer, got {pad!r}")
    if mode == "same" and pad:
        raise SpecError("--pad contradicts --mode same (same chooses the padding itself)",
                        hint="use --mode valid --pad P for explicit padding")
    if len(a) != len(b):
        raise ShapeError(f"the input has depth {len(a)} but the kernel has depth {len(b)}",
                         hint="a filter must be as deep as its input (one kernel slice per "
                              "input depth slice)")
    depth = len(a)
    h, w = len(a[0]), len(a[0][0])
    kh, kw = len(b[0]), len(b[0][0])
    pads = []
    for n, k, axis in ((h, kh, "rows"), (w, kw, "columns")):
        if mode == "full":
            pb = pa = k - 1 + pad
        elif mode == "same":
            pb, pa = same_padding(n, k, stride)
        else:
            pb = pa = pad
        res = out_size(n, k, stride, pb, pa)
        if res.numerator < 0:
            raise ShapeError(f"the kernel ({kh}x{kw}) is larger than the input ({h}x{w}) "
                             f"in {mode} mode: {k} {axis} do not fit in {n + pb + pa}",
                             hint="use --mode full or same, add --pad, or swap the arguments "
                                  "(convolution is commutative in full mode)")
        pads.append((pb, pa, res))
    (pt, pbm, res_h), (pl, pr, res_w) = pads
    oh, ow = res_h.size, res_w.size
    if oh * ow * depth * kh * kw > MAX_TERMS:
        raise SpecError(f"{oh}x{ow} outputs of {depth * kh * kw} products each is too much "
                        "for this homework tool", hint="use small matrices")
    kern = [sl if correlate else rotate180(sl) for sl in b]

    def at(d, r, c):
        r -= pt
        c -= pl
        if 0 <= r < h and 0 <= c < w:
            return a[d][r][c]
        return 0

    out, step_rows = [], []
    for i in range(oh):
        row = []
        for j in range(ow):
            terms = []
            total = 0
            for d in range(depth):
                for s in range(kh):
                    for t in range(kw):
                        x = at(d, i * stride + s, j * stride + t)
                        y = kern[d][s][t]
                        total += x * y
                        if steps:
                            terms.append([_plain(x), _plain(y)])
            row.append(_plain(total))
            if steps:
                step_rows.append({"index": [i, j], "terms": terms, "value": _plain(total)})
        out.append(row)
    notes = []
    for res, axis in ((res_h, "rows"), (res_w, "columns")):
        if not res.is_integer:
            notes.append(f"the stride does not divide the padded {axis}: the last "
                         f"{res.numerator % stride} {axis} are never reached (floor)")
    result = {
        "operation": "cross-correlation" if correlate else "convolution",
        "flipped": not correlate,
        "formula": ("out[i,j] = Σ_s Σ_t A[i·S + s, j·S + t]·B[s,t]  (kernel not flipped)"
                    if correlate else
                    "(A ∗ B)[i,j] = Σ_s Σ_t A[s,t]·B[i - s, j - t]  (kernel rotated 180°)"),
        "mode": mode,
        "stride": stride,
        "padding": [[pt, pbm], [pl, pr]],
        "input_shape": [depth, h, w] if depth > 1 else [h, w],
        "kernel_shape": [depth, kh, kw] if depth > 1 else [kh, kw],
        "kernel_used": [[[_plain(v) for v in r] for r in sl] for sl in kern] if depth > 1
        else [[_plain(v) for v in r] for r in kern[0]],
        "output_shape": [oh, ow],
        "output": out,
        "notes": notes,
    }
    if steps:
        result["steps"] = step_rows
    return result


def _as_volume(m, what: str):
    if isinstance(m, str):
        return parse_matrix(m, what)
    if not isinstance(m, list) or not m:
        raise SpecError(f"{what} must be a non-empty matrix")
    return _from_data(m, what)
