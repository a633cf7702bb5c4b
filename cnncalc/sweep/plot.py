"""``sweep.png``: test accuracy against each numeric parameter, and the best trials' curves."""
from __future__ import annotations

from pathlib import Path

from cnncalc.sweep.space import Dimension

#: learning curves drawn in the last panel
BEST_CURVES = 5


def write_sweep_plot(records: list[dict], dims: list[Dimension], path: Path) -> bool:
    """One panel per numeric parameter (final test accuracy of every finished trial against
    the parameter, log x axis for ``log:`` ranges) and one of the per-epoch test accuracy of
    the best trials. False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    numeric = [d for d in dims if d.numeric]
    done = [r for r in records if r.get("test_acc") is not None
            and r["status"] in ("completed", "pruned")]
    panels = len(numeric) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    for ax, d in zip(axes[0], numeric):
        for status, marker in (("completed", "o"), ("pruned", "x")):
            pts = [(r["params"][d.key], 100 * r["test_acc"]) for r in done
                   if r["status"] == status]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=status)
        if d.log_scale:
            ax.set_xscale("log")
        ax.set_xlabel(d.key)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if done:
            ax.legend(fontsize="small")
    ax = axes[0][-1]
    best = sorted(done, key=lambda r: (-r["epochs"], -r["test_acc"]))[:BEST_CURVES]
    for r in best:
        curve = [(i + 1, 100 * a) for i, a in enumerate(r.get("curve") or []) if a is not None]
        if curve:
            label = r["id"] + ": " + ", ".join(f"{k}={v}" for k, v in r["params"].items())
            ax.plot(*zip(*curve), "o-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"best {len(best)} trials")
    ax.grid(alpha=0.3)
    if best:
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
