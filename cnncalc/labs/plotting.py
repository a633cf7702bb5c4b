"""Pictures for the labs (``--plot FILE.png``). matplotlib is optional: ``pip install cnncalc[plot]``.

matplotlib is imported only when a picture is drawn, with the non-interactive ``Agg`` backend.
Each function takes a lab result and a path, writes the file and returns the path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncalc.errors import CnnCalcError

__all__ = ["activation_maps", "activations", "filters", "grid_pixels", "init_stats", "optimizers",
           "preprocess", "pyplot", "schedules"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or a clear error if matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise CnnCalcError("--plot needs matplotlib, which is not installed",
                           hint="pip install cnncalc[plot]") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, *, tight: bool = True, dpi: int = 110) -> Path:
    """Write ``fig``; ``tight=False`` keeps the figure's own size (``figsize x dpi`` pixels)."""
    path = Path(path)
    try:
        fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
    except (OSError, ValueError) as e:
        raise CnnCalcError(f"cannot write plot {path}: {e}",
                           hint="check the folder exists and the extension (.png, .pdf, .svg)"
                           ) from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def init_stats(lab, path) -> Path:
    plt = pyplot()
    layers = lab.layers[1:]
    n = len(layers)
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n, 6.5), squeeze=False)
    idx = [layer.layer for layer in lab.layers]
    ax = plt.subplot2grid((3, n), (0, 0), colspan=n // 2, fig=fig)
    ax.plot(idx, [layer.mean for layer in lab.layers], "o-")
    ax.set_title("layer mean")
    ax.set_xlabel("layer")
    ax2 = plt.subplot2grid((3, n), (0, n // 2), colspan=n - n // 2, fig=fig)
    ax2.plot(idx, [layer.std for layer in lab.layers], "o-", color="C1")
    ax2.set_title("layer std")
    ax2.set_xlabel("layer")
    for a in axes[0]:
        a.set_visible(False)
    for i, layer in enumerate(layers):
        a = axes[1][i]
        edges = np.asarray(layer.hist_edges)
        a.bar(edges[:-1], layer.hist_counts, width=np.diff(edges), align="edge")
        a.set_title(f"layer {layer.layer}", fontsize=8)
        a.tick_params(labelsize=6)
        a.set_yticks([])
    gax = plt.subplot2grid((3, n), (2, 0), colspan=n, fig=fig)
    for a in axes[2]:
        a.set_visible(False)
    g = [layer.grad_w_std or 0.0 for layer in layers]
    gax.semilogy([layer.layer for layer in layers], np.maximum(g, 1e-300), "s-", color="C3")
    gax.set_title("std of dL/dW per layer (one backward pass)")
    gax.set_xlabel("layer")
    fig.suptitle(f"init {lab.init} ({lab.init_spec}), {lab.nonlinearity}: "
                 f"{lab.depth} x {lab.width} units, {lab.n} inputs")
    fig.tight_layout()
    return _save(fig, path)


def optimizers(lab, path, fn=None) -> Path:
    from cnncalc.labs.optimizers import get_function

    plt = pyplot()
    fn = fn or get_function(lab.function, lab.kappa or 1.0)
    x0, x1, y0, y1 = lab.box
    xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    z = fn.f(np.stack([xs, ys])) - lab.minimum
    fig, ax = plt.subplots(figsize=(8, 6))
    levels = np.quantile(z, np.linspace(0.0, 0.95, 25) ** 2) + 1e-12
    ax.contour(xs, ys, z, levels=np.unique(levels), cmap="Greys", linewidths=0.7)
    for r in lab.runs:
        p = np.asarray(r.path)
        p = p[np.all(np.isfinite(p), axis=1)]
        label = f"{r.optimizer} (lr {r.lr:g}): " + (
            f"{r.steps_to_tol} steps" if r.steps_to_tol is not None else "not reached")
        ax.plot(p[:, 0], p[:, 1], ".-", ms=2, lw=1, label=label)
    ax.plot(*lab.start, "k*", ms=12)
    for m in lab.argmin:
        ax.plot(*m, "r+", ms=14)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    title = f"{lab.function}" + (f" (condition number {lab.kappa:g})" if lab.kappa else "")
    ax.set_title(title + (f", gradient noise {lab.noise:g}" if lab.noise else ""))
    ax.legend(fontsize=8)
    return _save(fig, path)


def schedules(lab, path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    t = np.arange(lab.steps)
    for c in lab.curves:
        ax = axes[1 if c.warmup else 0]
        ax.plot(t, c.lr, label=c.name)
    axes[0].set_title("no warm-up")
    axes[1].set_title(f"linear warm-up, {lab.warmup} steps")
    for ax in axes:
        ax.set_xlabel("step t")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("learning rate")
    return _save(fig, path)


def activations(lab, path) -> Path:
    plt = pyplot()
    names = list(lab.curves)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, n in zip(axes.ravel(), names):
        ax.plot(lab.x, lab.curves[n]["y"], label="f(x)")
        ax.plot(lab.x, lab.curves[n]["dy"], "--", label="f'(x)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(n)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def preprocess(lab, path) -> Path:
    plt = pyplot()
    means = lab.mean_images
    covs = lab.covariances
    m = list(means)
    fig, axes = plt.subplots(3, len(m), figsize=(2.6 * len(m), 8), squeeze=False)
    for i, name in enumerate(m):
        img = np.asarray(means[name])
        img = img[0] if img.shape[0] in (1,) else np.moveaxis(img, 0, -1)
        if img.ndim == 3:
            lo, hi = img.min(), img.max()
            img = (img - lo) / (hi - lo) if hi > lo else img * 0
        axes[0][i].imshow(img, cmap="gray")
        axes[0][i].set_title(f"mean image\n{name}", fontsize=8)
        axes[0][i].axis("off")
        if name in covs:
            c = np.asarray(covs[name])
            v = float(np.max(np.abs(c))) or 1.0
            axes[1][i].imshow(c, cmap="RdBu_r", vmin=-v, vmax=v)
            axes[1][i].set_title("covariance", fontsize=8)
        axes[1][i].axis("off")
        axes[2][i].set_visible(False)
    ax = plt.subplot2grid((3, len(m)), (2, 0), colspan=len(m), fig=fig)
    for r in lab.regression:
        ax.bar(r.features, r.condition_number, color="C0" if r.features == "raw" else "C2")
    ax.set_yscale("log")
    ax.set_ylabel("condition number")
    ax.set_title("regression x1 ~ 100s, x2 ~ 0.001s: " + "; ".join(
        f"{r.features}: " + (f"{r.steps_to_converge} GD steps" if r.steps_to_converge
                             else f"not converged in {lab.max_steps}")
        for r in lab.regression), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------- tile pictures
#: Filter and activation-map pictures are grids of square tiles of ``TILE_INCHES``, with a
#: title band of ``TITLE_INCHES``, drawn at ``TILE_DPI``: a grid of R x C tiles is exactly
#: ``grid_pixels(R, C)`` pixels.
TILE_INCHES, TITLE_INCHES, TILE_DPI = 1.0, 0.5, 100
#: tiles per row: filters of one-tile-per-filter layers, and activation maps
GRID_COLUMNS = 8
#: at most this many maps of one layer are drawn (the first ones, in channel order)
MAX_MAPS = 32


def grid_pixels(rows: int, cols: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a picture of ``rows`` x ``cols`` tiles."""
    return (round(cols * TILE_INCHES * TILE_DPI),
            round((rows * TILE_INCHES + TITLE_INCHES) * TILE_DPI))


def _tile_figure(plt, rows: int, cols: int, title: str):
    w, h = cols * TILE_INCHES, rows * TILE_INCHES + TITLE_INCHES
    fig, axes = plt.subplots(rows, cols, figsize=(w, h), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - TITLE_INCHES / h,
                        wspace=0.15, hspace=0.35)
    fig.suptitle(title, fontsize=9, y=1 - 0.1 * TITLE_INCHES / h)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)
    return fig, axes


def _show(ax, img, title: str = "", **kw) -> None:
    """One tile: (H, W) in grey or (C, H, W) with C = 1 or 3."""
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    ax.set_visible(True)
    ax.imshow(img, cmap=kw.pop("cmap", "gray"), interpolation="nearest", **kw)
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def _box(ax, box, colour: str = "red") -> None:
    """The field ``[top, left, bottom, right]`` (inclusive pixels) as a rectangle."""
    from matplotlib.patches import Rectangle

    top, left, bottom, right = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                           fill=False, edgecolor=colour, linewidth=1.2))


def filters(lab, path) -> Path:
    """The filters of ``lab`` (:class:`cnncalc.labs.filters.FilterLab`) as a grid: one tile per
    filter (8 a row), or one row per filter with a tile per input channel."""
    plt = pyplot()
    tiles = lab.tiles
    k, t = tiles.shape[:2]
    rows, cols = (-(-k // min(k, GRID_COLUMNS)), min(k, GRID_COLUMNS)) if t == 1 else (k, t)
    how = "colour" if lab.colour else "channel mean" if lab.mean_over_channels else \
        "grey" if t == 1 else "one tile per input channel"
    dead = "" if lab.dead_share is None else f", dead {lab.dead_share:.0%}"
    fig, axes = _tile_figure(plt, rows, cols, f"{lab.layer}: {k} filters "
                             f"{lab.shape[2]}x{lab.shape[3]}x{lab.shape[1]} ({how}, each "
                             f"normalised){dead}")
    for i in range(k):
        tag = f"#{i}" + (" dead" if lab.rows[i].dead else "")
        if t == 1:
            _show(axes.ravel()[i], tiles[i, 0], tag, vmin=0, vmax=1)
            continue
        for c in range(t):
            _show(axes[i][c], tiles[i, c], f"{tag} ch{c}" if c == 0 else f"ch{c}",
                  vmin=0, vmax=1)
    return _save(fig, path, tight=False, dpi=TILE_DPI)


def activation_maps_grid(lab) -> tuple[int, int]:
    """``(rows, cols)`` of tiles in :func:`activation_maps`' picture of ``lab``."""
    rows = 1 + sum(-(-min(m.shape[0], MAX_MAPS) // GRID_COLUMNS) for m in lab.layers)
    return rows, GRID_COLUMNS


def activation_maps(lab, path) -> Path:
    """First row: the input with the unit's receptive field, then the top test images with the
    field where the unit's channel peaks. Then each layer's maps (one shared grey scale per
    layer), labelled with the layer's output volume."""
    plt = pyplot()
    rows, cols = activation_maps_grid(lab)
    fig, axes = _tile_figure(plt, rows, cols, f"{lab.image}: predicted {lab.predicted} "
                             f"({lab.probability:.0%})")
    u = lab.unit
    _show(axes[0][0], lab.input_image,
          "input" + (f", field of\n{u.layer}[{u.channel}]@{u.row},{u.col}" if u else ""))
    if u is not None:
        _box(axes[0][0], u.box)
    for j, top in enumerate(lab.top[:cols - 1]):
        _show(axes[0][j + 1], top.image, f"top {j + 1}: {top.label}\n{top.value:.3g}")
        _box(axes[0][j + 1], top.box)
    r = 1
    for m in lab.layers:
        n = min(m.shape[0], MAX_MAPS)
        lo, hi = m.min, m.max if m.max > m.min else m.min + 1.0
        for c in range(n):
            ax = axes[r + c // cols][c % cols]
            _show(ax, m.maps[c], m.label if c == 0 else str(c), vmin=lo, vmax=hi)
        r += -(-n // cols)
    return _save(fig, path, tight=False, dpi=TILE_DPI)
