"""The architecture drawn as the lecture draws it, from the analysis data alone.

* Each output volume is a 3-D box: depth D runs left to right, height H up and down, and width W
  goes obliquely into the page; sizes pass through a :class:`~cnncalc.report.svg.Scale`
  (logarithmic when they span orders of magnitude). The box is labelled ``W×H×D``.
* A conv or pool layer's window is a small box on its input volume, with projection lines to
  the volume it produces. Its size and stride come from the receptive fields of the analysis:
  ``F = (r_out − r_in) / j_in + 1`` and ``S = j_out / j_in`` (``r`` field size, ``j`` effective
  stride), so dilation shows as the effective window.
* Vectors (1×1×N outputs: fully connected layers and what follows them) are bars.
* Layers that keep the shape, the receptive field and do no multiply-accumulates (ReLU,
  batch norm, dropout) are folded into the box of the layer before them, which lists them, so
  ResNet-50 stays legible.
* Branches are a graph: columns by longest path from the input, one lane per parallel branch,
  and the shapes written on the edges into merges and out of branch points. Columns wrap into
  lines at ``max_width`` pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cnncalc.report.svg import Scale, compact, esc, num, shape_text, svg_open, text, title

__all__ = ["Node", "group_layers", "window", "architecture_svg", "ARCH_CSS"]

LABEL_LINES = 3
LINE_H = 13.5
CHAR_W = 6.1  # average width of one 10.5 px sans-serif character
COL_GAP = 34
LANE_GAP = 18
ARC_ROOM = 26
LINE_GAP = 30
MARGIN = 12
NAME_CHARS = 22

#: Colours of the drawing; the page and the stand-alone SVG share them (light and dark).
ARCH_CSS = """
.cnn-arch{--ink:#1f2933;--muted:#52606d;--face:#cfe3f7;--top:#e4effa;--side:#a9c8e8;
 --edge:#7b8794;--conv:#e8590c;--pool:#2b8a3e;--bar:#7048e8;--merge:#f4d9a6;--halo:#ffffff;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;font-size:10.5px}
@media (prefers-color-scheme:dark){.cnn-arch{--ink:#e4e7eb;--muted:#9aa5b1;--face:#2f4d6b;
 --top:#3d6186;--side:#22394f;--edge:#9aa5b1;--conv:#ff922b;--pool:#51cf66;--bar:#9775fa;
 --merge:#8a6d3b;--halo:#14181d}}
.cnn-arch text{fill:var(--ink)}
.cnn-arch .muted{fill:var(--muted)}
.cnn-arch .name{font-weight:600}
.cnn-arch .face{fill:var(--face);stroke:var(--ink);stroke-width:.6}
.cnn-arch .top{fill:var(--top);stroke:var(--ink);stroke-width:.6}
.cnn-arch .side{fill:var(--side);stroke:var(--ink);stroke-width:.6}
.cnn-arch .merge .face{fill:var(--merge)}
.cnn-arch .barv{fill:var(--bar);stroke:var(--ink);stroke-width:.6}
.cnn-arch .win-conv{fill:var(--conv);fill-opacity:.55;stroke:var(--conv)}
.cnn-arch .win-pool{fill:var(--pool);fill-opacity:.55;stroke:var(--pool)}
.cnn-arch .proj-conv{stroke:var(--conv);stroke-dasharray:3 2;fill:none;stroke-width:.8}
.cnn-arch .proj-pool{stroke:var(--pool);stroke-dasharray:3 2;fill:none;stroke-width:.8}
.cnn-arch .edge{stroke:var(--edge);fill:none;stroke-width:1.2}
.cnn-arch .edgelabel{fill:var(--muted);font-size:9.5px;paint-order:stroke;stroke:var(--halo);
 stroke-width:3px;stroke-linejoin:round}
.cnn-arch .arrow{fill:var(--edge)}
.cnn-arch .node.sel .face{stroke:var(--conv);stroke-width:2}
"""


@dataclass
class Node:
    """One drawn volume: a layer and the shape-keeping layers folded into it."""

    key: str                    # name of the last layer (what later layers name as input)
    members: list[dict]         # analysis rows, first is the head
    shape: dict                 # output volume {width, height, depth}
    inputs: list[str] = field(default_factory=list)  # keys of the input nodes
    col: int = 0
    lane: int = 0
    line: int = 0
    x: float = 0.0              # left of the box area
    y: float = 0.0              # top of the lane
    box: tuple = ()             # (x0, y0, face_w, face_h, oblique) once placed

    @property
    def head(self) -> dict | None:
        return self.members[0] if self.members else None

    @property
    def is_vector(self) -> bool:
        return self.shape["width"] == 1 and self.shape["height"] == 1

    @property
    def is_merge(self) -> bool:
        return len(self.inputs) > 1


def group_layers(analysis: dict) -> list[Node]:
    """Nodes in the analysis order; the first is the input volume."""
    rows = analysis["layers"]
    consumers: dict[str, list[str]] = {}
    for r in rows:
        for src in r["inputs"]:
            consumers.setdefault(src, []).append(r["name"])
    nodes = [Node("input", [], analysis["input"])]
    owner = {"input": nodes[0]}
    for r in rows:
        prev = owner.get(r["inputs"][0]) if len(r["inputs"]) == 1 else None
        if (prev is not None and prev.members and prev.key == r["inputs"][0]
                and consumers.get(prev.key) == [r["name"]] and r["output"] == prev.shape
                and r["macs"] == 0 and r["rf"] == prev.members[-1]["rf"]):
            prev.members.append(r)
            prev.key = r["name"]
            owner[r["name"]] = prev
            continue
        node = Node(r["name"], [r], r["output"], [owner[s].key for s in r["inputs"]])
        owner[r["name"]] = node
        nodes.append(node)
    return nodes


_UNIT_FIELD = {"size": [1, 1], "stride": [1, 1], "start": [0, 0]}


def window(row: dict, input_rf: dict | None) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The (height, width) window and stride of a single-input layer, from the receptive
    fields: ``F = (r_out − r_in) / j_in + 1``, ``S = j_out / j_in``. None when the layer looks
    at one position (ReLU, 1×1 without MACs)."""
    rf_in = input_rf or _UNIT_FIELD
    out = row["rf"]
    k = tuple(int(round((out["size"][i] - rf_in["size"][i]) / rf_in["stride"][i])) + 1
              for i in (0, 1))
    s = tuple(max(1, int(round(out["stride"][i] / rf_in["stride"][i]))) for i in (0, 1))
    if k == (1, 1) and s == (1, 1) and row["macs"] == 0:
        return None
    return k, s


def _layout(nodes: list[Node], max_width: float, geo: _Geometry
            ) -> tuple[float, float, list[float]]:
    """Columns by longest path from the input, lanes by order within a column, and columns
    wrapped into lines of at most ``max_width``; returns (width, height, top of each line)."""
    by_key = {n.key: n for n in nodes}
    for n in nodes[1:]:
        n.col = 1 + max(by_key[k].col for k in n.inputs)
    ncols = max(n.col for n in nodes) + 1
    lanes_in_col = [0] * ncols
    for n in nodes:
        n.lane = lanes_in_col[n.col]
        lanes_in_col[n.col] += 1
    col_w = [0.0] * ncols
    for n in nodes:
        w = geo.extent(n)[0]
        label = max([len(t) for t in _labels(n)] + [0]) * CHAR_W
        col_w[n.col] = max(col_w[n.col], w, min(label, NAME_CHARS * CHAR_W), 40)
    # wrap columns into lines
    line_of_col, x_of_col = [], []
    line, x = 0, MARGIN
    for c in range(ncols):
        if x + col_w[c] > max_width - MARGIN and x > MARGIN:
            line, x = line + 1, MARGIN
        line_of_col.append(line)
        x_of_col.append(x)
        x += col_w[c] + COL_GAP
    nlines = line + 1
    lanes_in_line = [1] * nlines
    for c in range(ncols):
        lanes_in_line[line_of_col[c]] = max(lanes_in_line[line_of_col[c]], lanes_in_col[c])
    lane_h = geo.box_area + LABEL_LINES * LINE_H + 6
    line_top, y = [], MARGIN
    for i in range(nlines):
        line_top.append(y)
        y += ARC_ROOM + lanes_in_line[i] * (lane_h + LANE_GAP) + LINE_GAP
    width = max(x_of_col[c] + col_w[c] for c in range(ncols)) + MARGIN
    for n in nodes:
        n.line = line_of_col[n.col]
        n.x = x_of_col[n.col] + (col_w[n.col] - geo.extent(n)[0]) / 2
        n.y = line_top[n.line] + ARC_ROOM + n.lane * (lane_h + LANE_GAP)
    return width, y - LINE_GAP + MARGIN, line_top


class _Geometry:
    """Pixel sizes of boxes and bars for one network."""

    def __init__(self, nodes: list[Node]):
        vols = [n.shape for n in nodes if not n.is_vector]
        vecs = [n.shape["depth"] for n in nodes if n.is_vector]
        self.hw = Scale([v[k] for v in vols for k in ("width", "height")] or [1], 8, 86)
        self.d = Scale([v["depth"] for v in vols] or [1], 4, 40)
        self.vec = Scale(vecs or [1], 16, 86)
        self.box_area = 86 + 0.5 * 86 + 4

    def box(self, shape: dict) -> tuple[float, float, float]:
        """(face width from D, face height from H, oblique offset from W)."""
        return self.d(shape["depth"]), self.hw(shape["height"]), 0.5 * self.hw(shape["width"])

    def extent(self, n: Node) -> tuple[float, float]:
        if n.is_vector:
            return 10.0, self.vec(n.shape["depth"])
        fw, fh, ob = self.box(n.shape)
        return fw + ob, fh + ob


def _labels(n: Node) -> list[str]:
    if not n.members:
        return ["input", "", shape_text(n.shape)]
    head = n.members[0]
    names = head["name"] + (f" +{len(n.members) - 1}" if len(n.members) > 1 else "")
    kind = " · ".join(dict.fromkeys(m["type"] for m in n.members))
    hyper = head["hyper"]
    return [names, f"{kind} {hyper}".strip(), shape_text(n.shape)]


def _cut(s: str, n: int = NAME_CHARS) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _draw_node(n: Node, geo: _Geometry, prefix: str) -> str:
    ew, eh = geo.extent(n)
    x0 = n.x
    y0 = n.y + (geo.box_area - eh) / 2
    cls = "node merge" if n.is_merge else "node"
    names = " ".join(m["name"] for m in n.members) or "input"
    tip = "\n".join(f"{m['name']} ({m['type']} {m['hyper']}) → {shape_text(m['output'])}"
                    for m in n.members) or f"input {shape_text(n.shape)}"
    parts = [f'<g class="{cls}" id="{prefix}{esc(n.key)}" data-layers="{esc(names)}">'
             f"{title(tip)}"]
    if n.is_vector:
        n.box = (x0, y0, ew, eh, 0.0)
        parts.append(f'<rect class="barv" x="{num(x0)}" y="{num(y0)}" width="{num(ew)}" '
                     f'height="{num(eh)}"/>')
    else:
        fw, fh, ob = geo.box(n.shape)
        n.box = (x0, y0, fw, fh, ob)
        fy = y0 + ob
        parts.append(
            f'<polygon class="top" points="{num(x0)},{num(fy)} {num(x0 + ob)},{num(y0)} '
            f'{num(x0 + ob + fw)},{num(y0)} {num(x0 + fw)},{num(fy)}"/>'
            f'<polygon class="side" points="{num(x0 + fw)},{num(fy)} {num(x0 + fw + ob)},'
            f'{num(y0)} {num(x0 + fw + ob)},{num(y0 + fh)} {num(x0 + fw)},{num(fy + fh)}"/>'
            f'<rect class="face" x="{num(x0)}" y="{num(fy)}" width="{num(fw)}" '
            f'height="{num(fh)}"/>')
    cx = x0 + ew / 2
    ly = n.y + geo.box_area + LINE_H
    labels = _labels(n)
    parts.append(text(cx, ly, _cut(labels[0]), "name", "middle",
                      tip=labels[0] if len(labels[0]) > NAME_CHARS else ""))
    if labels[1]:
        parts.append(text(cx, ly + LINE_H, _cut(labels[1]), "muted", "middle",
                          tip=labels[1] if len(labels[1]) > NAME_CHARS else ""))
    parts.append(text(cx, ly + 2 * LINE_H, labels[2], "shape", "middle"))
    parts.append("</g>")
    return "".join(parts)


def _draw_window(n: Node, src: Node, slot: int) -> str:
    """The window of ``n`` on its input volume ``src``, and projection lines to ``n``."""
    head = n.head
    rf_in = src.members[-1]["rf"] if src.members else None
    win = window(head, rf_in)
    if win is None or n.is_vector or src.is_vector:
        return ""
    (kh, kw), (sh, sw) = win
    x0, y0, fw, fh, ob = src.box
    # true proportion of the input it covers (at least 3 px, so a 1×1 window shows)
    wh = max(3.0, min(fh * kh / src.shape["height"], fh))
    wob = max(1.5, min(ob * kw / src.shape["width"], ob))
    kind = "conv" if head["macs"] > 0 else "pool"
    wd = fw if kind == "conv" else min(3.0, fw)
    # windows of several consumers are stacked down the face
    wx = x0 + (fw - wd) * 0.5 + ob * 0.15
    wy = y0 + ob * 0.85 + 2 + slot * (wh + 3)
    if wy + wh > y0 + ob + fh:
        wy = y0 + ob + max(0.0, fh - wh)
    tip = f"{head['name']}: {kh}×{kw} window, stride {sh}×{sw}"
    out = [f'<g class="window" data-layer="{esc(head["name"])}">{title(tip)}'
           f'<polygon class="win-{kind}" points="{num(wx)},{num(wy)} {num(wx + wob)},'
           f'{num(wy - wob)} {num(wx + wob + wd)},{num(wy - wob)} {num(wx + wob + wd)},'
           f'{num(wy - wob + wh)} {num(wx + wd)},{num(wy + wh)} {num(wx)},{num(wy + wh)}"/>']
    if n.line == src.line and n.lane == src.lane and n.box:
        tx, ty, tfw, tfh, tob = n.box
        px, py = tx + tfw * 0.3, ty + tob + tfh * 0.3
        out.append(f'<path class="proj-{kind}" d="M{num(wx + wd)},{num(wy)}L{num(px)},'
                   f'{num(py)}M{num(wx + wd)},{num(wy + wh)}L{num(px)},{num(py)}"/>')
    out.append("</g>")
    return "".join(out)


def _anchor_out(n: Node) -> tuple[float, float]:
    """Middle of the right side face (of the bar, for a vector)."""
    x0, y0, fw, fh, ob = n.box
    return x0 + fw + ob, y0 + (ob + fh) / 2


def _anchor_in(n: Node) -> tuple[float, float]:
    x0, y0, fw, fh, ob = n.box
    return x0, y0 + ob + fh / 2


def _draw_edge(src: Node, dst: Node, line_top: list[float], prefix: str,
               label: str, slot: int = 0) -> str:
    """An arrow from ``src`` to ``dst``; ``slot`` spreads the edges that wrap from one line
    to the next over a few heights of the gap between lines, so they stay apart."""
    sx, sy = _anchor_out(src)
    tx, ty = _anchor_in(dst)
    if dst.line != src.line:
        gap = line_top[src.line + 1] - LINE_GAP / 2 - 8 + 6 * (slot % 3)
        d = (f"M{num(sx)},{num(sy)}H{num(sx + 8)}V{num(gap)}H{num(max(tx - 14, 2))}"
             f"V{num(ty)}H{num(tx - 2)}")
        lx, ly = sx + 12, gap - 3
    elif dst.lane == src.lane and dst.col - src.col > 1:
        # a skip connection: an arc over the boxes between
        top = line_top[src.line] + 6
        x0, y0, fw, _, ob = src.box
        d = (f"M{num(x0 + fw / 2 + ob / 2)},{num(y0)}C{num(x0 + fw / 2)},{num(top)} "
             f"{num(tx)},{num(top)} {num(tx + 2)},{num(dst.box[1] - 1)}")
        lx, ly = (sx + tx) / 2, top + 6
    else:
        mx = (sx + tx) / 2
        d = f"M{num(sx)},{num(sy)}C{num(mx)},{num(sy)} {num(mx)},{num(ty)} {num(tx - 2)},{num(ty)}"
        # the label goes on the lower lane's horizontal stretch of the curve, beside a column
        # that has no volume in that lane (the upper lane's labels sit in between)
        if dst.lane > src.lane:
            lx, ly, anchor = tx - 6, ty - 5, "end"
        elif dst.lane < src.lane:
            lx, ly, anchor = sx + 6, sy - 5, "start"
        else:
            lx, ly, anchor = mx, min(sy, ty) - 5, "middle"
        out = f'<path class="edge" d="{d}" marker-end="url(#{prefix}arrow)"/>'
        return out + (text(lx, ly, label, "edgelabel", anchor) if label else "")
    out = f'<path class="edge" d="{d}" marker-end="url(#{prefix}arrow)"/>'
    if label:
        out += text(lx, ly, label, "edgelabel", "middle")
    return out


def architecture_svg(analysis: dict, max_width: float = 1200, prefix: str = "a-",
                     standalone: bool = True) -> str:
    """The drawing as one ``<svg>`` element (with its own ``<style>`` when ``standalone``).

    ``prefix`` keeps element ids unique when one page holds several drawings.
    """
    nodes = group_layers(analysis)
    geo = _Geometry(nodes)
    width, height, line_top = _layout(nodes, max_width, geo)
    by_key = {n.key: n for n in nodes}
    consumers: dict[str, int] = {}
    for n in nodes:
        for k in n.inputs:
            consumers[k] = consumers.get(k, 0) + 1
    line_top.append(height + LINE_GAP)
    label = f"architecture of {analysis.get('name') or 'the network'}"
    out = [svg_open(width, height, "cnn-arch", label,
                    extra=f' data-scale="{"log" if geo.hw.log else "linear"}"')]
    if standalone:
        out.append(f"<style>{ARCH_CSS}</style>")
    out.append(f'<defs><marker id="{prefix}arrow" viewBox="0 0 8 8" refX="7" refY="4" '
               'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
               '<path class="arrow" d="M0,0L8,4L0,8z"/></marker></defs>')
    out += [_draw_node(n, geo, prefix) for n in nodes]
    slots: dict[str, int] = {}
    for n in nodes[1:]:
        if len(n.inputs) == 1:
            src = by_key[n.inputs[0]]
            drawn = _draw_window(n, src, slots.get(src.key, 0))
            if drawn:
                slots[src.key] = slots.get(src.key, 0) + 1
                out.append(drawn)
    wrapped: dict[int, int] = {}
    labelled_wraps: set[str] = set()
    for n in nodes[1:]:
        for k in n.inputs:
            src = by_key[k]
            label = shape_text(src.shape) if (n.is_merge or consumers[k] > 1) else ""
            slot = wrapped.get(src.line, 0)
            if n.line != src.line:
                wrapped[src.line] = slot + 1
                if src.key in labelled_wraps:  # they share the first stretch: label it once
                    label = ""
                labelled_wraps.add(src.key)
            out.append(_draw_edge(src, n, line_top, prefix, label, slot))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def legend_text(analysis: dict) -> str:
    """One line saying how sizes are scaled (shown under the drawing)."""
    nodes = group_layers(analysis)
    geo = _Geometry(nodes)
    scale = "logarithmic" if geo.hw.log else "linear"
    return (f"Boxes: depth left to right, height up, width into the page; {scale} scale "
            f"(W, H {compact(geo.hw.lo)}–{compact(geo.hw.hi)}). Orange: conv windows; green: "
            "pool windows; purple bars: vectors (fully connected). Layers that keep the shape "
            "(ReLU, batch norm, dropout) share the box of the layer before them (+n).")


