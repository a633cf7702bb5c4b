"""Softmax cross-entropy (mean over the batch), stable through log-sum-exp, in one pass."""
from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = ["softmax_cross_entropy"]


def _softmax_xent_py(logits, labels, dlogits):
    """Mean cross-entropy of softmax(logits) against integer labels; dlogits = d loss / d logits."""
    N, C = logits.shape
    inv_n = logits[0, 0] * 0 + 1.0 / N
    total = 0.0
    for i in range(N):
        m = logits[i, 0]
        for c in range(1, C):
            if logits[i, c] > m:
                m = logits[i, c]
        s = logits[i, 0] * 0
        for c in range(C):
            e = np.exp(logits[i, c] - m)
            dlogits[i, c] = e
            s += e
        total += np.log(s) + m - logits[i, labels[i]]
        r = inv_n / s
        for c in range(C):
            dlogits[i, c] *= r
        dlogits[i, labels[i]] -= inv_n
    return total / N


_softmax_xent = jit(_softmax_xent_py)


def softmax_cross_entropy(logits, labels, *, out=None):
    """``logits`` (N, classes) float, ``labels`` (N,) int class indices.

    Returns ``(mean_loss, dlogits)``: ``loss_i = logsumexp(z_i) − z_i[label_i]`` averaged over the
    batch (a Python float), ``dlogits = (softmax(z) − onehot)/N`` in the logits' dtype, written into
    ``out`` (an (N, classes) array of that dtype) when given.
    """
    z = np.ascontiguousarray(logits)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if out is None or out.shape != z.shape or out.dtype != z.dtype:
        out = np.empty_like(z)
    loss = _softmax_xent(z, labels, out)
    return float(loss), out
