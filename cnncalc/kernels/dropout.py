"""Inverted dropout: kept units are scaled by 1/(1-p) at training time, so inference is a no-op."""
from __future__ import annotations

import numpy as np

__all__ = ["dropout_forward", "dropout_backward"]


def dropout_forward(x, p, rng):
    """Returns ``(y, mask)``; ``mask`` has x's dtype and holds 0 or 1/(1-p), so ``y = x*mask``.

    ``rng`` is a ``numpy.random.Generator``. ``p`` in [0, 1); ``p == 0`` keeps everything.
    """
    x = np.asarray(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if p == 0.0:
        mask = np.ones(x.shape, dtype=dt)
    else:
        mask = (rng.random(x.shape, dtype=dt) >= p).astype(dt)
        mask *= dt.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dy, mask):
    """``dx = dy * mask`` (the mask already carries the 1/(1-p) scale)."""
    return dy * mask
