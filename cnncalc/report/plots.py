"""Plots of the report as SVG: per-layer bars, training curves, the confusion matrix, the memory
split and the receptive-field picture. Text stays text; colours come from the page's CSS."""
from __future__ import annotations

import math

from cnncalc.analysis import format_bytes
from cnncalc.report.svg import compact, esc, num, rect, svg_open, text, title

__all__ = ["field_edges", "layer_bars", "line_chart", "confusion_svg", "memory_svg",
           "receptive_field_svg", "PLOT_CSS"]

PLOT_CSS = """
.plot{font-family:inherit;font-size:11px;max-width:100%;height:auto}
.plot text{fill:var(--ink)}
.plot .muted{fill:var(--muted)}
.plot .axis{stroke:var(--muted);stroke-width:1;fill:none}
.plot .grid{stroke:var(--rule);stroke-width:1}
.plot .b-params{fill:var(--c1)}
.plot .b-macs{fill:var(--c2)}
.plot .s0{stroke:var(--c1);fill:none;stroke-width:2}
.plot .s1{stroke:var(--c2);fill:none;stroke-width:2}
.plot .s2{stroke:var(--c3);fill:none;stroke-width:2}
.plot .d0{fill:var(--c1)}.plot .d1{fill:var(--c2)}.plot .d2{fill:var(--c3)}
.plot .m0{fill:var(--c1)}.plot .m1{fill:var(--c2)}.plot .m2{fill:var(--c3)}
.plot .m3{fill:var(--c4)}.plot .m4{fill:var(--c5)}
.plot .cell{fill:var(--c1)}
.plot .input-area{fill:var(--panel);stroke:var(--ink);stroke-width:1}
.plot .pad-area{fill:none;stroke:var(--muted);stroke-dasharray:4 3}
.plot .px{stroke:var(--rule);stroke-width:.5}
.plot .rf{fill:var(--c2);fill-opacity:.35;stroke:var(--c2);stroke-width:2}
.plot .rf-branch{fill:none;stroke:var(--c4);stroke-width:1.5;stroke-dasharray:2 2}
.plot .rf-next{fill:none;stroke:var(--c1);stroke-width:1.5;stroke-dasharray:5 3}
"""

NAME_W = 170


def layer_bars(rows: list[dict]) -> str:
    """Parameters and MACs per layer, as two columns of horizontal bars (layers with neither
    are left out)."""
    rows = [r for r in rows if r["params"] or r["macs"]]
    if not rows:
        return "<p>No layer has parameters or MACs.</p>"
    bar_w, row_h, top = 250, 16, 22
    width = NAME_W + 2 * (bar_w + 70)
    height = top + row_h * len(rows) + 6
    pmax = max(r["params"] for r in rows) or 1
    mmax = max(r["macs"] for r in rows) or 1
    out = [svg_open(width, height, "plot bars", "parameters and MACs per layer"),
           text(NAME_W, 13, "parameters", "muted"),
           text(NAME_W + bar_w + 70, 13, "MACs", "muted")]
    for i, r in enumerate(rows):
        y = top + i * row_h
        out.append(text(NAME_W - 6, y + 11, _cut(r["name"], 26), anchor="end",
                        tip=r["name"] if len(r["name"]) > 26 else ""))
        for j, (key, vmax) in enumerate((("params", pmax), ("macs", mmax))):
            x = NAME_W + j * (bar_w + 70)
            w = bar_w * r[key] / vmax
            out.append(rect(x, y + 2, w, row_h - 4, f"b-{key}",
                            tip=f"{r['name']}: {r[key]:,} {key}"))
            out.append(text(x + w + 4, y + 11, compact(r[key]), "muted"))
    out.append("</svg>")
    return "".join(out)


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(title_text: str, xs: list[float], series: list[tuple[str, list]],
               y_format=lambda v: f"{v:g}", width: int = 380, height: int = 210) -> str:
    """Lines over epochs; ``series`` is ``[(label, values)]`` with ``None`` for missing points."""
    left, right, top, bottom = 52, 12, 26, 34
    pts = [v for _, vals in series for v in vals if v is not None and math.isfinite(v)]
    if not xs or not pts:
        return ""
    ylo, yhi = min(pts), max(pts)
    if ylo == yhi:
        ylo, yhi = ylo - (abs(ylo) * 0.1 or 1), yhi + (abs(yhi) * 0.1 or 1)
    xlo, xhi = min(xs), max(xs)
    xspan = (xhi - xlo) or 1
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + pw * (x - xlo) / xspan if xhi > xlo else left + pw / 2

    def py(v):
        return top + ph * (1 - (v - ylo) / (yhi - ylo))

    out = [svg_open(width, height, "plot chart", title_text), text(left, 15, title_text, "name")]
    for t in _ticks(ylo, yhi):
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{num(py(t))}" '
                   f'y2="{num(py(t))}"/>')
        out.append(text(left - 5, py(t) + 4, y_format(t), "muted", "end"))
    for t in _ticks(xlo, xhi, 6) if xhi > xlo else [xlo]:
        if t == int(t):
            out.append(text(px(t), top + ph + 14, f"{int(t)}", "muted", "middle"))
    out.append(text(left + pw / 2, height - 4, "epoch", "muted", "middle"))
    out.append(f'<path class="axis" d="M{left},{top}V{top + ph}H{left + pw}"/>')
    lx = left + len(title_text) * 7.5 + 16
    for i, (label, vals) in enumerate(series):
        seg = [(px(x), py(v)) for x, v in zip(xs, vals) if v is not None and math.isfinite(v)]
        if not seg:
            continue
        d = "M" + "L".join(f"{num(a)},{num(b)}" for a, b in seg)
        out.append(f'<path class="s{i}" d="{d}"><title>{esc(label)}</title></path>')
        for (a, b), x, v in zip(seg, xs, vals):
            out.append(f'<circle class="d{i}" cx="{num(a)}" cy="{num(b)}" r="2.5">'
                       f'{title(f"{label}, epoch {x:g}: {y_format(v)}")}</circle>')
        out.append(rect(lx, 10, 10, 3, f"d{i}"))
        out.append(text(lx + 14, 15, label, "muted"))
        lx += 22 + len(label) * 6.2
    out.append("</svg>")
    return "".join(out)


def confusion_svg(matrix: list[list[int]], classes: list[str]) -> str:
    """``matrix[true][predicted]`` as a grid; shade = share of the true class's examples."""
    k = len(matrix)
    cell = 34 if k <= 12 else max(12, 400 // k)
    left, top = 80, 70
    width, height = left + cell * k + 70, top + cell * k + 10
    out = [svg_open(width, height, "plot confusion", "confusion matrix"),
           text(left + cell * k / 2, 12, "predicted class", "muted", "middle"),
           text(12, top + cell * k / 2, "true class", "muted", "middle",
                extra=f' transform="rotate(-90 12 {num(top + cell * k / 2)})"')]
    for j, c in enumerate(classes[:k]):
        x = left + j * cell + cell / 2
        out.append(text(x, top - 6, _cut(c, 9), "muted", "start",
                        extra=f' transform="rotate(-45 {num(x)} {num(top - 6)})"'))
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        y = top + i * cell
        out.append(text(left - 6, y + cell / 2 + 4, _cut(classes[i] if i < len(classes) else
                                                          str(i), 11), "muted", "end"))
        for j, v in enumerate(row):
            share = v / total
            out.append(rect(left + j * cell, y, cell - 1, cell - 1, "cell",
                            tip=f"true {classes[i]}, predicted {classes[j]}: {v}",
                            extra=f' fill-opacity="{0.06 + 0.94 * share:.2f}"'))
            if cell >= 24:
                out.append(text(left + j * cell + cell / 2, y + cell / 2 + 4, v,
                                "cnum strong" if share > 0.5 else "cnum", "middle"))
        acc = row[i] / total if i < len(row) else 0
        out.append(text(left + k * cell + 6, y + cell / 2 + 4, f"{acc:.0%}", "muted"))
    out.append("</svg>")
    return "".join(out)


MEMORY_PARTS = (("param_bytes", "parameters"), ("gradient_bytes", "gradients"),
                ("optimizer_state_bytes", "optimizer state"),
                ("activation_bytes", "activations"),
                ("activation_gradient_bytes", "activation gradients"))


def memory_svg(training: dict) -> str:
    """The training-memory estimate as one stacked bar with a legend."""
    total = training["total_bytes"] or 1
    width, bar_h = 720, 26
    out = [svg_open(width, 44 + 18 * len(MEMORY_PARTS) // 2 + 18, "plot memory",
                    "training memory")]
    x = 0.0
    for i, (key, label) in enumerate(MEMORY_PARTS):
        w = width * training.get(key, 0) / total
        out.append(rect(x, 0, w, bar_h, f"m{i}",
                        tip=f"{label}: {format_bytes(training.get(key, 0))}"))
        x += w
    for i, (key, label) in enumerate(MEMORY_PARTS):
        lx, ly = (i % 3) * 240, bar_h + 20 + (i // 3) * 18
        out.append(rect(lx, ly - 9, 10, 10, f"m{i}"))
        out.append(text(lx + 14, ly, f"{label}: {format_bytes(training.get(key, 0))}"))
    out.append("</svg>")
    return "".join(out)


def field_edges(rf: dict) -> tuple[float, float]:
    """Top and left edge of the field of unit (0, 0), in pixels: pixel ``i`` spans
    ``[i, i + 1)`` and ``start`` is the centre of the first unit, so the edge is
    ``start − (size − 1) / 2``."""
    return tuple(rf["start"][a] - (rf["size"][a] - 1) / 2 for a in (0, 1))


def receptive_field_svg(analysis: dict, size: int = 300) -> tuple[str, list[str]]:
    """The input (with the padding the fields reach into, dashed) and, per layer, a group with
    the field of output unit (0, 0) and, dashed, of its neighbour one effective stride to the
    right and down. Only the last layer's group is shown at first; the page's picker shows
    another. Returns the SVG and the group ids in layer order."""
    inp = analysis["input"]
    rows = analysis["layers"]
    W, H = inp["width"], inp["height"]
    edges = [field_edges(r["rf"]) for r in rows]
    lo_x = min([0] + [e[1] for e in edges])
    lo_y = min([0] + [e[0] for e in edges])
    hi_x = max([W] + [e[1] + r["rf"]["size"][1] + r["rf"]["stride"][1]
                      for e, r in zip(edges, rows)])
    hi_y = max([H] + [e[0] + r["rf"]["size"][0] + r["rf"]["stride"][0]
                      for e, r in zip(edges, rows)])
    span = max(hi_x - lo_x, hi_y - lo_y)
    k = size / span
    pad = 14

    def sx(v):
        return pad + (v - lo_x) * k

    def sy(v):
        return pad + (v - lo_y) * k

    width = height = size + 2 * pad
    out = [svg_open(width, height, "plot rfpic", "receptive field over the input"),
           rect(sx(lo_x), sy(lo_y), (hi_x - lo_x) * k, (hi_y - lo_y) * k, "pad-area",
                tip="padding the fields reach into"),
           rect(sx(0), sy(0), W * k, H * k, "input-area",
                tip=f"input {W}×{H}×{inp['depth']}")]
    if W <= 64 and H <= 64:
        lines = [f"M{num(sx(i))},{num(sy(0))}V{num(sy(H))}" for i in range(1, W)]
        lines += [f"M{num(sx(0))},{num(sy(j))}H{num(sx(W))}" for j in range(1, H)]
        out.append(f'<path class="px" d="{"".join(lines)}"/>')
    ids = []
    last = len(rows) - 1
    by_name = {r["name"]: r for r in rows}
    for i, r in enumerate(rows):
        rf = r["rf"]
        (h, w), (jh, jw), (y0, x0) = rf["size"], rf["stride"], field_edges(rf)
        gid = f"rf-{i}"
        ids.append(gid)
        hidden = "" if i == last else ' style="display:none"'
        branches = "".join(  # a merge also shows the field of each branch it merges
            rect(sx(e[1]), sy(e[0]), b["rf"]["size"][1] * k, b["rf"]["size"][0] * k,
                 "rf-branch", tip=f"field of branch {b['name']}, centred at "
                                  f"{b['rf']['start'][1]}, {b['rf']['start'][0]}")
            for b in (by_name[s] for s in r["inputs"] if len(r["inputs"]) > 1 and s in by_name)
            for e in [field_edges(b["rf"])])
        out.append(f'<g class="rfgroup" id="{gid}" data-layer="{esc(r["name"])}"{hidden}>'
                   + branches + rect(sx(x0 + jw), sy(y0 + jh), w * k, h * k, "rf-next",
                          tip="field of the neighbouring unit (1, 1)")
                   + rect(sx(x0), sy(y0), w * k, h * k, "rf",
                          tip=f"{r['name']}: field {w}×{h} of unit (0, 0), centred at "
                              f"{rf['start'][1]}, {rf['start'][0]}")
                   + "</g>")
    out.append("</svg>")
    return "".join(out), ids
