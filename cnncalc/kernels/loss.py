"""Softmax cross-entropy (mean over the batch), stable through log-sum-exp."""
from __future__ import annotations

import numpy as np

__all__ = ["softmax_cross_entropy"]


def softmax_cross_entropy(logits, labels):
    """``logits`` (N, classes) float, ``labels`` (N,) int class indices.

    Returns ``(mean_loss, dlogits)``: ``mean_loss`` a Python float,
    ``loss_i = logsumexp(z_i) - z_i[label_i]``, ``dlogits = (softmax(z) - onehot) / N`` in the
    logits' dtype.
    """
    z = np.asarray(logits)
    labels = np.asarray(labels).astype(np.intp, copy=False)
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    log_p = shifted[rows, labels] - np.log(s[:, 0])
    loss = float(-log_p.astype(np.float64).sum() / n)
    grad = e / s
    grad[rows, labels] -= 1
    grad /= n
    return loss, grad
