"""The report's "Filters" section: each conv layer's trained filters as SVG tiles.

Every filter is normalised on its own to [0, 1] (:func:`cnncalc.labs.filters.filter_tiles`) and
drawn as one square per weight in grey, or in colour for a first layer on a 3-channel input;
filters with several input channels are shown as their channel mean. At most
:data:`MAX_FILTERS` filters of a layer are drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from cnncalc.report.svg import esc, rect, svg_open, text

__all__ = ["FilterGrid", "MAX_FILTERS", "filter_grids", "filters_section", "filters_svg"]

MAX_FILTERS = 64
TILE_PX = 48          # at least this many pixels a side per filter
COLUMNS = 16          # filters per row
GAP, LABEL_H = 6, 14


@dataclass
class FilterGrid:
    layer: str
    shape: list[int]              # K, C, FH, FW
    how: str                      # "grey", "colour" or "channel mean"
    tiles: list                   # K' x FH x FW (x 3) values in [0, 1], K' <= MAX_FILTERS
    norms: list[float]            # ||W_k||_2 of the tiles shown


def filter_grids(graph, params: dict) -> list[FilterGrid]:
    """The filters of every conv layer of ``graph`` with weights ``params["<layer>.weight"]``."""
    import numpy as np

    from cnncalc.labs.filters import filter_tiles, in_colour

    grids = []
    for node in graph.nodes:
        w = params.get(f"{node.name}.weight") if node.kind == "conv" else None
        if w is None:
            continue
        w = np.asarray(w, dtype=np.float64)[:MAX_FILTERS]
        c = w.shape[1]
        colour = in_colour(node, c)
        mean = c > 1 and not colour
        tiles = filter_tiles(w, colour=colour, mean=mean)[:, 0]
        how = "colour" if colour else "channel mean" if mean else "grey"
        shape = [int(s) for s in np.shape(params[f"{node.name}.weight"])]
        grids.append(FilterGrid(node.name, shape, how, tiles.tolist(),
                                [float(v) for v in np.linalg.norm(w.reshape(len(w), -1), axis=1)]))
    return grids


def _grey(v) -> str:
    if isinstance(v, list):  # colour: [r, g, b]
        r, g, b = (round(255 * x) for x in v)
    else:
        r = g = b = round(255 * v)
    return f"#{r:02x}{g:02x}{b:02x}"


def filters_svg(grid: FilterGrid) -> str:
    """One layer's filters, ``COLUMNS`` a row, numbered, with the norm as a tooltip."""
    fh, fw = grid.shape[2], grid.shape[3]
    px = max(2, math.ceil(TILE_PX / max(fh, fw)))
    tw, th = fw * px, fh * px
    k = len(grid.tiles)
    cols = min(k, COLUMNS)
    rows = -(-k // cols)
    width = cols * (tw + GAP)
    height = rows * (th + GAP + LABEL_H)
    parts = [svg_open(width, height, "plot filters", f"{grid.layer} filters")]
    for i, tile in enumerate(grid.tiles):
        x0 = (i % cols) * (tw + GAP)
        y0 = (i // cols) * (th + GAP + LABEL_H) + LABEL_H
        parts.append(text(x0, y0 - 3, f"#{i}", "muted"))
        parts.append(f'<g class="filter"><title>{esc(grid.layer)} #{i}: norm '
                     f'{grid.norms[i]:.4g}</title>')
        for y, line in enumerate(tile):
            for x, v in enumerate(line):
                parts.append(rect(x0 + x * px, y0 + y * px, px, px, extra=f' fill="{_grey(v)}"'))
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def filters_section(grids: list[FilterGrid]) -> str:
    """The "Filters" section of a checkpoint's report."""
    parts = ['<section id="filters"><h2>Filters</h2><p class="sub">Each conv layer\'s '
             "trained filters, each normalised on its own to black..white; several input "
             "channels are shown as their mean. <code>cnncalc lab filters CKPT --layer L</code> "
             "lists their norms and dead filters.</p>"]
    for g in grids:
        k, c, fh, fw = g.shape
        more = f", first {len(g.tiles)} shown" if len(g.tiles) < k else ""
        parts.append(f"<h3>{esc(g.layer)}: {k} filters {fh}x{fw}x{c} ({esc(g.how)}{more})</h3>"
                     f'<div class="scroll">{filters_svg(g)}</div>')
    parts.append("</section>")
    return "".join(parts)
