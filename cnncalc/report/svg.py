"""Small SVG writing helpers shared by the drawing and the plots (standard library only).

Every number written into an SVG goes through :func:`num`, so the files are stable byte for
byte (the golden tests pin them) and short.
"""
from __future__ import annotations

import math
from html import escape

__all__ = ["esc", "num", "compact", "Scale", "text", "rect", "title", "svg_open", "shape_text"]


def esc(value) -> str:
    """``value`` as text safe inside XML/HTML element content and attribute values."""
    return escape(str(value), quote=True)


def num(x: float) -> str:
    """A coordinate with at most one decimal: ``12``, ``12.5``."""
    r = round(float(x), 1)
    return str(int(r)) if r == int(r) else f"{r:.1f}"


def compact(n: float) -> str:
    """``61706`` → ``61.7k``; ``1.8e9`` → ``1.81G`` (3 significant digits above 1000)."""
    n = float(n)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.3g}" if n != int(n) else str(int(n))


def shape_text(shape: dict) -> str:
    """A volume the way the lecture writes it: ``W×H×D``."""
    return f"{shape['width']}×{shape['height']}×{shape['depth']}"


class Scale:
    """Maps sizes ``lo..hi`` onto pixels ``px_lo..px_hi``.

    Linear when the sizes span less than a factor ``log_above``; otherwise logarithmic,
    ``px = px_lo + (px_hi - px_lo) · log(v / lo) / log(hi / lo)``, so a 224-wide input and a
    7-wide map both stay visible.
    """

    def __init__(self, values, px_lo: float, px_hi: float, log_above: float = 8.0):
        vals = [max(1.0, float(v)) for v in values] or [1.0]
        self.lo, self.hi = min(vals), max(vals)
        self.px_lo, self.px_hi = px_lo, px_hi
        self.log = self.hi / self.lo >= log_above

    def __call__(self, v: float) -> float:
        v = min(max(float(v), 1.0), self.hi)
        if self.hi == self.lo:
            return self.px_hi
        if self.log:
            t = math.log(max(v, self.lo) / self.lo) / math.log(self.hi / self.lo)
        else:
            t = (v - self.lo) / (self.hi - self.lo) if v >= self.lo else 0.0
        return self.px_lo + (self.px_hi - self.px_lo) * t


def title(tip: str) -> str:
    return f"<title>{esc(tip)}</title>" if tip else ""


def text(x: float, y: float, content, cls: str = "", anchor: str = "start", tip: str = "",
         extra: str = "") -> str:
    """A ``<text>`` element: real, selectable text (never converted to paths)."""
    attrs = f' class="{cls}"' if cls else ""
    if anchor != "start":
        attrs += f' text-anchor="{anchor}"'
    return (f'<text x="{num(x)}" y="{num(y)}"{attrs}{extra}>{esc(content)}{title(tip)}</text>')


def rect(x: float, y: float, w: float, h: float, cls: str = "", tip: str = "",
         extra: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    body = title(tip)
    end = f">{body}</rect>" if body else "/>"
    return (f'<rect x="{num(x)}" y="{num(y)}" width="{num(max(w, 0))}" '
            f'height="{num(max(h, 0))}"{attrs}{extra}{end}')


def svg_open(width: float, height: float, cls: str, label: str, extra: str = "") -> str:
    """An ``<svg>`` root with a viewBox, so it scales down inside narrow pages."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{num(width)}" '
            f'height="{num(height)}" viewBox="0 0 {num(width)} {num(height)}" role="img" '
            f'aria-label="{esc(label)}"{extra}>')
