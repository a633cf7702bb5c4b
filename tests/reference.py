"""Naive NumPy references for every kernel in ``cnncalc.kernels``.

Written for clarity, not speed: direct nested sums, explicit windows. Never imported by the
package. All references compute in the dtype they are given (tests pass float64).
"""
from __future__ import annotations

import math

import numpy as np


# ------------------------------------------------------------------------------------- conv
def conv2d_forward(x, w, b, stride, pad, dilation, groups, out_hw):
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    sh, sw = stride
    pt, pl = pad
    dh, dw = dilation
    ho, wo = out_hw
    kg = k // groups
    y = np.zeros((n, k, ho, wo), dtype=x.dtype)
    for f in range(k):
        g = f // kg
        for i in range(ho):
            for j in range(wo):
                acc = np.zeros(n, dtype=x.dtype)
                for cc in range(cg):
                    ch = g * cg + cc
                    for a in range(kh):
                        ih = i * sh - pt + a * dh
                        if not 0 <= ih < h:
                            continue
                        for bb in range(kw):
                            iw = j * sw - pl + bb * dw
                            if not 0 <= iw < wd:
                                continue
                            acc += x[:, ch, ih, iw] * w[f, cc, a, bb]
                y[:, f, i, j] = acc + (b[f] if b is not None else 0)
    return y


def conv2d_backward(dy, x, w, stride, pad, dilation, groups):
    """Returns (dx, dw, db) by scattering each output gradient over its window."""
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    sh, sw = stride
    pt, pl = pad
    dh, dw_ = dilation
    _, _, ho, wo = dy.shape
    kg = k // groups
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for f in range(k):
        g = f // kg
        for i in range(ho):
            for j in range(wo):
                d = dy[:, f, i, j]
                for cc in range(cg):
                    ch = g * cg + cc
                    for a in range(kh):
                        ih = i * sh - pt + a * dh
                        if not 0 <= ih < h:
                            continue
                        for bb in range(kw):
                            iw = j * sw - pl + bb * dw_
                            if not 0 <= iw < wd:
                                continue
                            dx[:, ch, ih, iw] += d * w[f, cc, a, bb]
                            dw[f, cc, a, bb] += np.sum(d * x[:, ch, ih, iw])
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


# ------------------------------------------------------------------------------------- pools
def _window(i, s, p, k, d, size):
    return [i * s - p + a * d for a in range(k) if 0 <= i * s - p + a * d < size]


def maxpool2d_forward(x, k, stride, pad, out_hw, dilation=(1, 1)):
    n, c, h, w = x.shape
    ho, wo = out_hw
    y = np.full((n, c, ho, wo), -np.inf, dtype=x.dtype)
    am = np.full((n, c, ho, wo), -1, dtype=np.int32)
    for nn in range(n):
        for cc in range(c):
            for i in range(ho):
                for j in range(wo):
                    for ih in _window(i, stride[0], pad[0], k[0], dilation[0], h):
                        for iw in _window(j, stride[1], pad[1], k[1], dilation[1], w):
                            v = x[nn, cc, ih, iw]
                            if v > y[nn, cc, i, j] or am[nn, cc, i, j] < 0:
                                y[nn, cc, i, j] = v
                                am[nn, cc, i, j] = ih * w + iw
    return y, am


def maxpool2d_backward(dy, argmax, x_shape):
    dx = np.zeros(x_shape, dtype=dy.dtype)
    n, c, h, w = x_shape
    for nn in range(n):
        for cc in range(c):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    a = argmax[nn, cc, i, j]
                    if a >= 0:
                        dx[nn, cc, a // w, a % w] += dy[nn, cc, i, j]
    return dx


def _avg_windows(h, w, k, stride, pad, out_hw, count_include_pad, pad_after=None):
    """[(i, j, rows, cols, divisor)] with PyTorch's rules (window clipped to input+padding)."""
    pa = pad if pad_after is None else pad_after
    out = []
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            hs = i * stride[0] - pad[0]
            ws = j * stride[1] - pad[1]
            he = min(hs + k[0], h + pa[0])
            we = min(ws + k[1], w + pa[1])
            size = (he - hs) * (we - ws)
            rows = range(max(hs, 0), min(he, h))
            cols = range(max(ws, 0), min(we, w))
            div = size if count_include_pad else len(rows) * len(cols)
            out.append((i, j, rows, cols, div))
    return out


def avgpool2d_forward(x, k, stride, pad, out_hw, count_include_pad=True, pad_after=None):
    n, c, h, w = x.shape
    y = np.zeros((n, c) + tuple(out_hw), dtype=x.dtype)
    for i, j, rows, cols, div in _avg_windows(h, w, k, stride, pad, out_hw, count_include_pad,
                                              pad_after):
        s = np.zeros((n, c), dtype=x.dtype)
        for r in rows:
            for q in cols:
                s += x[:, :, r, q]
        y[:, :, i, j] = s / div
    return y


def avgpool2d_backward(dy, x_shape, k, stride, pad, count_include_pad=True, pad_after=None):
    n, c, h, w = x_shape
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i, j, rows, cols, div in _avg_windows(h, w, k, stride, pad, dy.shape[2:],
                                              count_include_pad, pad_after):
        for r in rows:
            for q in cols:
                dx[:, :, r, q] += dy[:, :, i, j] / div
    return dx


def adaptive_avgpool_forward(x, out_hw):
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        for j in range(ow):
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3)) / ((r1 - r0) * (c1 - c0))
    return y


def adaptive_avgpool_backward(dy, x_shape):
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        for j in range(ow):
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            dx[:, :, r0:r1, c0:c1] += (dy[:, :, i, j] / ((r1 - r0) * (c1 - c0)))[:, :, None, None]
    return dx


# ------------------------------------------------------------------------------------- activations
def relu(x):
    return np.where(x > 0, x, 0).astype(x.dtype)


def leaky_relu(x, slope):
    return np.where(x > 0, x, slope * x).astype(x.dtype)


def elu(x, alpha):
    return np.array([v if v > 0 else alpha * (math.exp(v) - 1) for v in x.ravel()],
                    dtype=x.dtype).reshape(x.shape)


def sigmoid(x):
    return np.array([1 / (1 + math.exp(-v)) for v in x.ravel()], dtype=x.dtype).reshape(x.shape)


def tanh(x):
    return np.array([math.tanh(v) for v in x.ravel()], dtype=x.dtype).reshape(x.shape)


def mish(x):
    return np.array([v * math.tanh(math.log1p(math.exp(v))) for v in x.ravel()],
                    dtype=x.dtype).reshape(x.shape)


def swish(x):
    return np.array([v / (1 + math.exp(-v)) for v in x.ravel()], dtype=x.dtype).reshape(x.shape)


def softmax(x):
    """Softmax over axis 1, row by row."""
    y = np.empty_like(x)
    x2 = np.moveaxis(x, 1, -1)
    y2 = np.moveaxis(y, 1, -1)
    for idx in np.ndindex(x2.shape[:-1]):
        row = x2[idx]
        e = np.array([math.exp(v - row.max()) for v in row])
        y2[idx] = e / e.sum()
    return y


def prelu(x, alpha):
    y = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        a = alpha[0] if alpha.shape[0] == 1 else alpha[idx[1]]
        y[idx] = x[idx] if x[idx] > 0 else a * x[idx]
    return y


def maxout(x, w, b, pieces):
    n = x.shape[0]
    units = w.shape[0] // pieces
    y = np.empty((n, units), dtype=x.dtype)
    am = np.empty((n, units), dtype=np.int32)
    for s in range(n):
        for j in range(units):
            vals = [sum(w[j * pieces + p, i] * x[s, i] for i in range(x.shape[1])) + b[j * pieces + p]
                    for p in range(pieces)]
            am[s, j] = int(np.argmax(vals))
            y[s, j] = vals[am[s, j]]
    return y, am


# ------------------------------------------------------------------------------------- norms
def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                      eps=1e-5):
    """Returns (y, new_running_mean, new_running_var); does not modify its inputs."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    m = x.size // x.shape[1]
    if training:
        mean = np.array([x.take(c, axis=1).sum() / m for c in range(x.shape[1])])
        var = np.array([((x.take(c, axis=1) - mean[c]) ** 2).sum() / m for c in range(x.shape[1])])
        rm = (1 - momentum) * running_mean + momentum * mean
        rv = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        mean, var = running_mean, running_var
        rm, rv = running_mean.copy(), running_var.copy()
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) \
        + beta.reshape(shape)
    del axes
    return y.astype(x.dtype), rm, rv


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    n, c = x.shape[:2]
    y = np.empty_like(x)
    lo, hi = size // 2, (size - 1) // 2
    for ch in range(c):
        s = np.zeros_like(x[:, 0])
        for c2 in range(ch - lo, ch + hi + 1):
            if 0 <= c2 < c:
                s += x[:, c2] ** 2
        y[:, ch] = x[:, ch] * (k + alpha / size * s) ** (-beta)
    return y


# ------------------------------------------------------------------------------------- misc
def linear(x, w, b):
    y = np.zeros((x.shape[0], w.shape[0]), dtype=x.dtype)
    for s in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[s, o] = sum(w[o, i] * x[s, i] for i in range(x.shape[1])) + (0 if b is None else b[o])
    return y


def softmax_cross_entropy(logits, labels):
    n = logits.shape[0]
    total = 0.0
    grad = np.zeros_like(logits)
    for s in range(n):
        row = logits[s].astype(np.float64)
        mx = row.max()
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        total += lse - row[labels[s]]
        p = np.exp(row - lse)
        p[labels[s]] -= 1
        grad[s] = p / n
    return total / n, grad
