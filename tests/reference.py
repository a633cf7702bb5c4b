"""The tests' reference data: naive NumPy references for every kernel in ``cnncalc.kernels``,
and one table, :data:`KINDS`, with an entry per registered layer kind that every test level
parametrises over (analysis rules, kernels, gradient checks, networks, PyTorch).

The references are written for clarity, not speed: direct nested sums, explicit windows. Never
imported by the package. All references compute in the dtype they are given (tests pass
float64).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


def spec_text(input_, layers, name="t") -> str:
    """A spec's YAML from an input and a list of layer lines."""
    body = "\n".join(f"  - {line}" for line in layers)
    return f"name: {name}\ninput: {input_}\nlayers:\n{body}\n"


# ------------------------------------------------------------------------------------- conv
def _conv_taps(x_shape, w_shape, stride, pad, dilation, groups, out_hw):
    """Every (filter f, output i, j, input channel ch, weight channel cc, tap a, bb, input
    row ih, column iw) product of a convolution that lands inside the input."""
    _, _, h, wd = x_shape
    k, cg, kh, kw = w_shape
    kg = k // groups
    for f in range(k):
        g = f // kg
        for i in range(out_hw[0]):
            for j in range(out_hw[1]):
                for cc in range(cg):
                    for a in range(kh):
                        ih = i * stride[0] - pad[0] + a * dilation[0]
                        if not 0 <= ih < h:
                            continue
                        for bb in range(kw):
                            iw = j * stride[1] - pad[1] + bb * dilation[1]
                            if 0 <= iw < wd:
                                yield f, i, j, g * cg + cc, cc, a, bb, ih, iw


def conv2d_forward(x, w, b, stride, pad, dilation, groups, out_hw):
    y = np.zeros((x.shape[0], w.shape[0]) + tuple(out_hw), dtype=x.dtype)
    for f, i, j, ch, cc, a, bb, ih, iw in _conv_taps(x.shape, w.shape, stride, pad, dilation,
                                                      groups, out_hw):
        y[:, f, i, j] += x[:, ch, ih, iw] * w[f, cc, a, bb]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv2d_backward(dy, x, w, stride, pad, dilation, groups):
    """Returns (dx, dw, db) by scattering each output gradient over its window."""
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for f, i, j, ch, cc, a, bb, ih, iw in _conv_taps(x.shape, w.shape, stride, pad, dilation,
                                                      groups, dy.shape[2:]):
        d = dy[:, f, i, j]
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


def hardswish(x):
    return np.array([v * min(max(v + 3, 0.0), 6.0) / 6 for v in x.ravel()],
                    dtype=x.dtype).reshape(x.shape)


def hardsigmoid(x):
    return np.array([min(max(v + 3, 0.0), 6.0) / 6 for v in x.ravel()],
                    dtype=x.dtype).reshape(x.shape)


def relu6(x):
    return np.array([min(max(v, 0.0), 6.0) for v in x.ravel()], dtype=x.dtype).reshape(x.shape)


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


# ------------------------------------------------------------------------------------- kinds
class Rule(NamedTuple):
    """Hand-worked analysis of one layer: output (W, H, D), params, MACs, FLOPs, receptive
    field (h, w) and its stride (jump)."""

    out: tuple[int, int, int]
    params: int
    macs: int
    flops: int
    rf: tuple[int, int]
    jump: int


@dataclass(frozen=True)
class KindCase:
    """One registered layer kind, as every test level sees it.

    ``layers``: spec lines of a small network whose LAST layer is the kind (merges need their
    branches first); ``input``: its input ``WxHxD``; ``rule``: that layer's analysis, worked by
    hand. Elementwise kinds (a kernel pair) add ``forward(x, *args)``, the NumPy reference
    (``args``: the layer's kernel arguments, from its options), and optionally
    ``derivative(x, *args)``, f'(x) with PyTorch's value at the kinks, ``kinks`` (where f'
    jumps: numeric checks keep their inputs away), ``scale`` (input spread that reaches every
    piece) and ``torch(F, x, *args)``, the same function in ``torch.nn.functional``;
    ``torch_rtol64`` loosens the float64 comparison where PyTorch itself rounds a constant to
    float32 (the default asks for 1e-10).
    """

    layers: tuple[str, ...]
    input: str
    rule: Rule
    forward: Callable | None = None
    derivative: Callable | None = None
    kinks: tuple[float, ...] = ()
    scale: float = 2.0
    torch: Callable[..., Any] | None = None
    torch_rtol64: float = 1e-10


def _step(x, lo, hi, inside=1.0, below=0.0, above=0.0):
    """``inside`` on lo < x < hi, ``below`` for x <= lo, ``above`` for x >= hi."""
    return np.where(x <= lo, below, np.where(x >= hi, above, inside)).astype(x.dtype)


KINDS: dict[str, KindCase] = {
    # conv: W2 = (7 - 3 + 2)/2 + 1 = 4, H2 = floor((6 - 3 + 2)/2) + 1 = 3; 4·(3·3·3) + 4 params;
    # MACs 48 outputs · 27; FLOPs 2·MACs + 48 bias adds
    "conv": KindCase(("conv: {filters: 4, size: 3, stride: 2, pad: 1}",), "7x6x3",
                     Rule((4, 3, 4), 112, 1296, 2640, (3, 3), 2)),
    # (7 - 3)/2 + 1 = 3; FLOPs F·F - 1 compares per output
    "maxpool": KindCase(("maxpool: {size: 3, stride: 2}",), "7x7x2",
                        Rule((3, 3, 2), 0, 0, 18 * 8, (3, 3), 2)),
    # floor((6 - 3 + 2)/2) + 1 = 3; FLOPs F·F per output
    "avgpool": KindCase(("avgpool: {size: 3, stride: 2, pad: 1}",), "6x6x2",
                        Rule((3, 3, 2), 0, 0, 18 * 9, (3, 3), 2)),
    # one add per input element; the field is the whole (h, w) = (3, 4) input
    "global_avgpool": KindCase(("global_avgpool",), "4x3x3", Rule((1, 1, 3), 0, 0, 36, (3, 4), 1)),
    # bins: rows [0, 3) [2, 5), columns [0, 3) [2, 5) [4, 7): 2·(3 + 3)·(3 + 3 + 3) adds
    "adaptive_avgpool": KindCase(("adaptive_avgpool: {output_size: [2, 3]}",), "7x5x2",
                                 Rule((3, 2, 2), 0, 0, 108, (3, 3), 2)),
    # [left, right, top, bottom] = [1, 2, 0, 3]: 3 + 3 wide, 4 + 3 high
    "zeropad": KindCase(("zeropad: {padding: [1, 2, 0, 3]}",), "3x4x2",
                        Rule((6, 7, 2), 0, 0, 0, (1, 1), 1)),
    "flatten": KindCase(("flatten",), "3x2x2", Rule((1, 1, 12), 0, 0, 0, (2, 3), 1)),
    # 18 inputs: 18·4 + 4 params, 72 MACs, 2·72 + 4 FLOPs
    "fc": KindCase(("fc: {units: 4}",), "3x3x2", Rule((1, 1, 4), 76, 72, 148, (3, 3), 1)),
    # 12 inputs, 3 units x 3 pieces: 3·(12·3 + 3) params, 108 MACs, 2·108 + 9 + 2·3 FLOPs
    "maxout": KindCase(("maxout: {units: 3, pieces: 3}",), "3x2x2",
                       Rule((1, 1, 3), 117, 108, 231, (2, 3), 1)),
    "relu": KindCase(("relu",), "4x4x2", Rule((4, 4, 2), 0, 0, 32, (1, 1), 1), relu,
                     lambda x: _step(x, 0.0, np.inf), kinks=(0.0,),
                     torch=lambda F, x: F.relu(x)),
    "leaky_relu": KindCase(("leaky_relu: {slope: 0.2}",), "4x4x2",
                           Rule((4, 4, 2), 0, 0, 32, (1, 1), 1), leaky_relu,
                           lambda x, s: _step(x, 0.0, np.inf, below=s), kinks=(0.0,),
                           torch=lambda F, x, s: F.leaky_relu(x, s)),
    "elu": KindCase(("elu: {alpha: 0.7}",), "4x4x2", Rule((4, 4, 2), 0, 0, 32, (1, 1), 1), elu,
                    kinks=(0.0,), torch=lambda F, x, a: F.elu(x, a)),
    "prelu": KindCase(("prelu: {per_channel: true}",), "4x4x3",
                      Rule((4, 4, 3), 3, 0, 48, (1, 1), 1)),
    "sigmoid": KindCase(("sigmoid",), "3x3x2", Rule((3, 3, 2), 0, 0, 18, (1, 1), 1), sigmoid,
                        torch=lambda F, x: F.sigmoid(x)),
    "tanh": KindCase(("tanh",), "3x3x2", Rule((3, 3, 2), 0, 0, 18, (1, 1), 1), tanh,
                     torch=lambda F, x: F.tanh(x)),
    "mish": KindCase(("mish",), "3x3x2", Rule((3, 3, 2), 0, 0, 18, (1, 1), 1), mish,
                     torch=lambda F, x: F.mish(x)),
    "swish": KindCase(("swish",), "3x3x2", Rule((3, 3, 2), 0, 0, 18, (1, 1), 1), swish,
                      torch=lambda F, x: F.silu(x)),
    # PyTorch: d/dx = 0 at x = -3, 1 at x = 3
    "hardswish": KindCase(("hardswish",), "4x4x2", Rule((4, 4, 2), 0, 0, 32, (1, 1), 1),
                          hardswish,
                          lambda x: np.where(x <= -3, 0.0, np.where(x < 3, x / 3 + 0.5, 1.0)),
                          kinks=(-3.0, 3.0), scale=3.0, torch=lambda F, x: F.hardswish(x)),
    # PyTorch: d/dx = 0 at both kinks; its float64 backward multiplies by 1/6 rounded to
    # float32 (relative error 3e-8), the kernel by 1/6
    "hardsigmoid": KindCase(("hardsigmoid",), "4x4x2", Rule((4, 4, 2), 0, 0, 32, (1, 1), 1),
                            hardsigmoid, lambda x: _step(x, -3.0, 3.0, inside=1 / 6),
                            kinks=(-3.0, 3.0), scale=3.0, torch=lambda F, x: F.hardsigmoid(x),
                            torch_rtol64=1e-7),
    # PyTorch: d/dx = 0 at both kinks; scale 4 puts inputs beyond 6
    "relu6": KindCase(("relu6",), "4x4x2", Rule((4, 4, 2), 0, 0, 32, (1, 1), 1), relu6,
                      lambda x: _step(x, 0.0, 6.0), kinks=(0.0, 6.0), scale=4.0,
                      torch=lambda F, x: F.relu6(x)),
    # exp, sum and divide: 3 FLOPs per element
    "softmax": KindCase(("softmax",), "3x3x4", Rule((3, 3, 4), 0, 0, 108, (1, 1), 1), softmax,
                        torch=lambda F, x: F.softmax(x, dim=1)),
    # (2n + 3) FLOPs per element, n = 3
    "lrn": KindCase(("lrn: {size: 3, alpha: 0.1, beta: 0.75, k: 1.5}",), "3x3x6",
                    Rule((3, 3, 6), 0, 0, 9 * 54, (1, 1), 1), lrn_forward,
                    torch=lambda F, x, n, a, b, k: F.local_response_norm(x, n, a, b, k)),
    # γ and β per channel; 2 FLOPs (scale, shift) per element
    "batchnorm": KindCase(("batchnorm",), "3x3x2", Rule((3, 3, 2), 4, 0, 36, (1, 1), 1)),
    # p = 0 keeps the network deterministic, so a centred difference can check it
    "dropout": KindCase(("dropout: {p: 0.0}",), "3x3x2", Rule((3, 3, 2), 0, 0, 0, (1, 1), 1)),
    # one add per element per extra branch
    "add": KindCase(("tanh: {name: t}", "add: {from: [t, input]}"), "3x3x2",
                    Rule((3, 3, 2), 0, 0, 18, (1, 1), 1)),
    "concat": KindCase(("tanh: {name: t}", "concat: {from: [input, t]}"), "3x3x2",
                       Rule((3, 3, 4), 0, 0, 0, (1, 1), 1)),
}

#: registered kinds the engine does not run (analysis only); every other kind must be executable
ANALYSIS_ONLY: frozenset[str] = frozenset()


def case_spec(kind: str) -> str:
    """The spec text of ``kind``'s sample network."""
    case = KINDS[kind]
    return spec_text(case.input, case.layers, kind)


def case_layer(kind: str):
    """The layer object of ``kind``'s sample network (options parsed as a spec would be)."""
    import cnncalc

    return cnncalc.load(case_spec(kind)).nodes[-1].layer


#: kinds run by a kernel pair that have a NumPy reference forward
ELEMENTWISE = sorted(k for k, c in KINDS.items() if c.forward is not None)
