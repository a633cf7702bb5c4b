"""Pictures for the labs (``--plot FILE.png``). matplotlib is optional: ``pip install cnncalc[plot]``.

matplotlib is imported only when a picture is drawn, with the non-interactive ``Agg`` backend.
Each function takes a lab result and a path, writes the file and returns the path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncalc.errors import CnnCalcError

__all__ = ["activations", "init_stats", "optimizers", "preprocess", "pyplot", "schedules"]


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


def _save(fig, path) -> Path:
    path = Path(path)
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
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
