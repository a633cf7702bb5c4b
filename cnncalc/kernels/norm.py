"""Batch normalisation and local response normalisation (PyTorch semantics), NumPy.

Batch norm works on (N, C, H, W) (statistics over N, H, W) and (N, F) (over N). Training uses
the batch mean and the biased batch variance to normalise and updates the running statistics in
place with PyTorch's rule ``running = (1 - m)*running + m*batch``, using the *unbiased* batch
variance for ``running_var``. Evaluation normalises with the running statistics.

LRN follows ``torch.nn.LocalResponseNorm``:
``b_c = a_c * (k + alpha/n * sum_{c' in window(c)} a_{c'}^2) ** -beta`` with the window
``[c - n//2, c + (n-1)//2]`` zero-padded across channels (axis 1).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._jit import jit

__all__ = ["BatchNormCache", "batchnorm_forward", "batchnorm_backward", "lrn_forward",
           "lrn_backward", "bn_sums", "bn_normalise", "bn_grad_sums", "bn_grad_input",
           "bn_coefficients", "bn_grad_terms"]


class BatchNormCache(NamedTuple):
    xhat: np.ndarray        # normalised input, x's shape
    inv_std: np.ndarray     # (C,) 1/sqrt(var + eps) of the statistics used
    gamma: np.ndarray       # (C,)
    training: bool          # batch statistics (True) or running ones (False)


def _axes_shape(x):
    if x.ndim == 2:
        return (0,), (1, -1)
    if x.ndim == 4:
        return (0, 2, 3), (1, -1, 1, 1)
    raise ValueError(f"batch norm expects (N, F) or (N, C, H, W), got shape {x.shape}")


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                      eps=1e-5):
    """Returns ``(y, cache)``; in training mode ``running_mean``/``running_var`` are updated in
    place (they must be writable float arrays of shape (C,))."""
    x = np.asarray(x)
    axes, shape = _axes_shape(x)
    dt = x.dtype.type
    if training:
        m = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        xc = x - mean.reshape(shape)
        var = (xc * xc).mean(axis=axes)
        unbiased = var * dt(m / (m - 1)) if m > 1 else var
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * unbiased
    else:
        mean = np.asarray(running_mean, dtype=x.dtype)
        var = np.asarray(running_var, dtype=x.dtype)
        xc = x - mean.reshape(shape)
    inv_std = (1 / np.sqrt(var + dt(eps))).astype(x.dtype, copy=False)
    xhat = xc * inv_std.reshape(shape)
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    return y, BatchNormCache(xhat, inv_std, np.asarray(gamma), bool(training))


def batchnorm_backward(dy, cache: BatchNormCache):
    """Returns ``(dx, dgamma, dbeta)``."""
    xhat, inv_std, gamma, training = cache
    axes, shape = _axes_shape(dy)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    scale = (gamma * inv_std).reshape(shape)
    if not training:
        return dy * scale, dgamma, dbeta
    m = dy.size // dy.shape[1]
    # dx = gamma*inv_std/m * (m*dy - sum(dy) - xhat*sum(dy*xhat))
    dx = (dy - (dbeta / m).reshape(shape) - xhat * (dgamma / m).reshape(shape)) * scale
    return dx, dgamma, dbeta


def _channel_window_sum(a, before, after):
    """s[:, c] = sum of a[:, c-before : c+after+1] (zero outside), axis 1."""
    c = a.shape[1]
    s = a.copy()
    for d in range(1, before + 1):
        if d < c:
            s[:, d:] += a[:, :c - d]
    for d in range(1, after + 1):
        if d < c:
            s[:, :c - d] += a[:, d:]
    return s


def _lrn_scale(x, size, alpha, k):
    dt = x.dtype.type
    s = _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    return dt(k) + dt(alpha / size) * s


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """``y = x * scale**-beta``, ``scale = k + alpha/size * windowed sum of x^2`` (axis 1)."""
    x = np.asarray(x)
    return x * _lrn_scale(x, size, alpha, k) ** x.dtype.type(-beta)


def lrn_backward(dy, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """Needs the forward input ``x`` (the scale is recomputed). Returns ``dx``.

    ``dx_j = dy_j s_j^-beta - 2 alpha beta / n * x_j * sum_{c: j in window(c)} dy_c x_c s_c^(-beta-1)``
    """
    x = np.asarray(x)
    dt = x.dtype.type
    s = _lrn_scale(x, size, alpha, k)
    sb = s ** dt(-beta)
    t = dy * x * sb / s
    # j in window(c) = [c - size//2, c + (size-1)//2]  <=>  c in [j - (size-1)//2, j + size//2]
    u = _channel_window_sum(t, (size - 1) // 2, size // 2)
    return dy * sb - dt(2 * alpha * beta / size) * x * u


# --------------------------------------------------------------------------------------------
# NCHW batch-slice kernels (serial, cached, nogil): the engine runs them on batch slices over
# its thread pool and combines the per-slice float64 per-channel partial sums in slice order.
# ``x3`` etc. are (n, C, H*W) C-contiguous slices; statistics vectors are float64 (C,).
# --------------------------------------------------------------------------------------------
@jit
def bn_sums(x3, shift, out):
    """out[0, c] = sum (x - shift[c]), out[1, c] = sum (x - shift[c])**2 over the slice, float64.

    The shift (the same for every slice, e.g. one value of each channel) keeps the one-pass
    variance free of cancellation: var = S2/m - (S1/m)**2 with S taken about the shift."""
    n, c_n, hw = x3.shape
    for c in range(c_n):
        out[0, c] = 0.0
        out[1, c] = 0.0
    for i in range(n):
        for c in range(c_n):
            k = shift[c]
            src = x3[i, c]
            a1 = 0.0
            a2 = 0.0
            for j in range(hw):
                d = np.float64(src[j]) - k
                a1 += d
                a2 += d * d
            out[0, c] += a1
            out[1, c] += a2


def _bn_coefficients_py(training, parts, shift, m, momentum, eps, running_mean, running_var,
                        gamma, beta, coef, gamma_used):
    """The normalising pass's per-channel coefficients, in one call (the engine's calling
    thread ran ~25 small NumPy operations here between two pool runs while the worker waited).

    Training, from the batch's float64 sums about ``shift`` over ``m`` values a channel, given
    as the batch chunks' ``parts`` (P, 2, C) of :func:`bn_sums` and added in chunk order:
    d = S1/m, mean = shift + d, var = max(S2/m - d**2, 0) (biased), and the
    running statistics updated in place, ``running = (1 - momentum)*running +
    momentum*batch`` with the unbiased variance var * m/(m - 1). Evaluation: mean and var are
    the running statistics. Then inv_std = 1/sqrt(var + eps), and ``coef`` (4, C) float64
    receives mean, inv_std, gamma and beta, each rounded to the network's dtype first;
    ``gamma_used`` (dtype) a copy of gamma for the backward.

    Every value rounds as the NumPy expressions of ``batchnorm_forward``'s slice form did (the
    dtype's arithmetic for the running update and inv_std, float64 for the sums; compiled
    without fast-math, so nothing is contracted or reassociated): the same bits."""
    t = np.empty(8, running_mean.dtype)   # scalars in the network's dtype
    t[0] = 1.0 - momentum                 # NumPy casts a Python float to the array's dtype
    t[1] = momentum
    t[2] = eps
    t[3] = 1.0
    for ch in range(coef.shape[1]):
        if training:
            s1 = parts[0, 0, ch]
            s2 = parts[0, 1, ch]
            for p in range(1, parts.shape[0]):
                s1 += parts[p, 0, ch]
                s2 += parts[p, 1, ch]
            d = s1 / m
            var64 = s2 / m - d * d
            if var64 < 0.0:               # np.maximum(.., 0): NaN stays NaN
                var64 = 0.0
            t[4] = shift[ch] + d          # mean
            t[5] = var64
            t[6] = var64 * (m / (m - 1)) if m > 1 else var64
            running_mean[ch] = running_mean[ch] * t[0]
            running_mean[ch] = running_mean[ch] + t[1] * t[4]
            running_var[ch] = running_var[ch] * t[0]
            running_var[ch] = running_var[ch] + t[1] * t[6]
        else:
            t[4] = running_mean[ch]
            t[5] = running_var[ch]
        t[7] = t[3] / np.sqrt(t[5] + t[2])
        coef[0, ch] = t[4]
        coef[1, ch] = t[7]
        gamma_used[ch] = gamma[ch]
        coef[2, ch] = gamma_used[ch]
        t[5] = beta[ch]
        coef[3, ch] = t[5]


bn_coefficients = jit(_bn_coefficients_py, fastmath=False)


def _bn_grad_terms_py(parts, coef, gamma_used, m, training, dgamma, dbeta, terms):
    """The input-gradient pass's per-channel terms from the backward's float64 sums (the batch
    chunks' ``parts`` (P, 2, C) of :func:`bn_grad_sums`, Σg and Σg·xhat, added in chunk
    order): dbeta = Σg and dgamma = Σg·xhat in the dtype (into
    ``dbeta``, ``dgamma``), and ``terms`` (3, C) float64: scale = gamma·inv_std (the dtype's
    product), mb = dbeta/m and mg = dgamma/m in training, 0 in evaluation (``m`` values a
    channel). Rounds as the NumPy expressions it replaces (no fast-math)."""
    t = np.empty(2, gamma_used.dtype)
    for ch in range(coef.shape[1]):
        s1 = parts[0, 0, ch]
        s2 = parts[0, 1, ch]
        for p in range(1, parts.shape[0]):
            s1 += parts[p, 0, ch]
            s2 += parts[p, 1, ch]
        dbeta[ch] = s1
        dgamma[ch] = s2
        t[0] = coef[1, ch]
        t[1] = gamma_used[ch] * t[0]
        terms[0, ch] = t[1]
        if training:
            terms[1, ch] = np.float64(dbeta[ch]) / m
            terms[2, ch] = np.float64(dgamma[ch]) / m
        else:
            terms[1, ch] = 0.0
            terms[2, ch] = 0.0


bn_grad_terms = jit(_bn_grad_terms_py, fastmath=False)


@jit
def bn_normalise(x3, mean, inv_std, gamma, beta, relu, y3, s3=None):
    """y = (x - mean) * inv_std * gamma + beta per channel (one fused pass); with ``s3``,
    y = that + s (a residual added in the same pass: batch norm feeding an ``add``); with
    ``relu``, y = max(..., 0) (the ReLU that follows)."""
    n, c_n, hw = x3.shape
    dt = y3.dtype.type
    zero = dt(0)
    for c in range(c_n):
        m = dt(mean[c])
        a = dt(inv_std[c] * gamma[c])
        b = dt(beta[c])
        for i in range(n):
            src = x3[i, c]
            dst = y3[i, c]
            if s3 is not None:
                res = s3[i, c]
                if relu:
                    for j in range(hw):
                        dst[j] = max((src[j] - m) * a + b + res[j], zero)
                else:
                    for j in range(hw):
                        dst[j] = (src[j] - m) * a + b + res[j]
            elif relu:
                for j in range(hw):
                    dst[j] = max((src[j] - m) * a + b, zero)
            else:
                for j in range(hw):
                    dst[j] = (src[j] - m) * a + b


@jit
def bn_grad_sums(dy3, x3, y3, mean, inv_std, relu, out, gamma=None, beta=None, dy3b=None,
                 g3=None):
    """out[0, c] = sum g, out[1, c] = sum g * xhat over the slice (float64), with
    xhat = (x - mean) * inv_std recomputed from ``x`` and g = dy, or with ``relu``
    g = dy * [y > 0] (``y`` the ReLU's output: the ReLU's backward in the same pass). With
    ``gamma`` and ``beta`` (those :func:`bn_normalise` took), ``y > 0`` is recomputed from
    ``x`` by the normalising pass's own expression (the same bits), and ``y3`` is not read:
    one stream less through memory.

    With ``relu`` reading ``y`` (the residual form, ``y = max(bn(x) + s, 0)``), ``g3`` (or
    None) receives g, which is ``s``'s gradient and the ``dy`` the input-gradient pass then
    reads (without ``relu``: neither ``dy`` nor ``y`` again); ``dy3b`` (or None) is a second
    part of the output's gradient, added here instead of in a pass of its own (an output with
    two readers: a residual block's output feeds the next block's conv1 and its shortcut).
    float32 ``dy + dyb`` rounds as a separate sum would."""
    n, c_n, hw = x3.shape
    dt = dy3.dtype.type
    zero = dt(0)
    for c in range(c_n):
        out[0, c] = 0.0
        out[1, c] = 0.0
    for i in range(n):
        for c in range(c_n):
            m = mean[c]
            d = dy3[i, c]
            src = x3[i, c]
            yc = y3[i, c]
            a1 = 0.0
            a2 = 0.0
            if relu and gamma is not None:
                mt = dt(mean[c])
                at = dt(inv_std[c] * gamma[c])
                bt = dt(beta[c])
                for j in range(hw):
                    g = np.float64(d[j] if (src[j] - mt) * at + bt > zero else zero)
                    a1 += g
                    a2 += g * (np.float64(src[j]) - m)
            elif relu and g3 is not None and dy3b is not None:
                gc = g3[i, c]
                e = dy3b[i, c]
                for j in range(hw):
                    gt = d[j] + e[j] if yc[j] > zero else zero
                    gc[j] = gt
                    a1 += np.float64(gt)
                    a2 += np.float64(gt) * (np.float64(src[j]) - m)
            elif relu and g3 is not None:
                gc = g3[i, c]
                for j in range(hw):
                    gt = d[j] if yc[j] > zero else zero
                    gc[j] = gt
                    a1 += np.float64(gt)
                    a2 += np.float64(gt) * (np.float64(src[j]) - m)
            elif relu:
                for j in range(hw):
                    g = np.float64(d[j] if yc[j] > zero else zero)
                    a1 += g
                    a2 += g * (np.float64(src[j]) - m)
            else:
                for j in range(hw):
                    g = np.float64(d[j])
                    a1 += g
                    a2 += g * (np.float64(src[j]) - m)
            out[0, c] += a1
            out[1, c] += a2 * inv_std[c]


@jit
def bn_relu_open(x, m, a, b, zero):
    """Whether ``max((x - m) * a + b, 0)``, :func:`bn_normalise`'s batch norm + ReLU, passes
    ``x``: its expression with its compiler flags (the multiply-add contracted as there), for
    the kernels compiled without fast-math that recompute the ReLU's mask."""
    return (x - m) * a + b > zero


def _bn_grad_input_py(dy3, x3, y3, mean, inv_std, scale, mb, mg, relu, dx3, gamma=None,
                      beta=None):
    """dx = scale * (g - mb - xhat * mg) per channel, xhat = (x - mean) * inv_std, g = dy or,
    with ``relu``, dy * [y > 0] (training: mb = mean(g), mg = mean(g * xhat); evaluation:
    mb = mg = 0). With ``gamma`` and ``beta``, ``y > 0`` is recomputed from ``x`` as in
    :func:`bn_grad_sums`. (The residual form passes the g that
    :func:`bn_grad_sums` wrote, without ``relu``.)"""
    n, c_n, hw = x3.shape
    dt = dx3.dtype.type
    zero = dt(0)
    for c in range(c_n):
        m = dt(mean[c])
        a = dt(scale[c])
        k = dt(scale[c] * mg[c] * inv_std[c])
        b = dt(scale[c] * mb[c])
        for i in range(n):
            d = dy3[i, c]
            src = x3[i, c]
            yc = y3[i, c]
            dst = dx3[i, c]
            if relu and gamma is not None:
                at = dt(inv_std[c] * gamma[c])
                bt = dt(beta[c])
                for j in range(hw):
                    g = d[j]
                    g = g if bn_relu_open(src[j], m, at, bt, zero) else zero
                    dst[j] = a * g - k * (src[j] - m) - b
            elif relu:
                for j in range(hw):
                    g = d[j] if yc[j] > zero else zero
                    dst[j] = a * g - k * (src[j] - m) - b
            else:
                for j in range(hw):
                    dst[j] = a * d[j] - k * (src[j] - m) - b


# Without fast-math: the expressions round as written (no contraction into fused
# multiply-adds, no reassociation), so the same pass folded into a convolution's backward
# (``winograd._lanes_output_grad``, compiled the same way) gives the same bits wherever the
# compiler puts it.
bn_grad_input = jit(_bn_grad_input_py, fastmath=False)
