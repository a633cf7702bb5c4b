"""The NumPy tier: the engine's ops in plain NumPy (BLAS GEMMs and stride tricks), no numba.

Why it exists: on a fresh install the numba kernels compile for 12-14 s before the first step.
The trainer runs its first steps on this tier while a background process compiles the kernels
(:mod:`cnncalc.engine.warmup`), then switches the network back to the compiled ops
(:meth:`cnncalc.Network.use_tier`). Nothing here calls numba, so the tier is ready at once.

Every op keeps the contract of :mod:`cnncalc.engine.ops` (``forward(xs, training) -> y``,
``backward(dy, need) -> [dx, ...]``, parameter gradients *written* into the network's gradient
views) and reads the network's parameters, buffers and dropout RNG, so a network can change tier
between two steps and training continues where it was. The ops run on the calling thread only:
during a cold start the other core is compiling.

Formulas (``x`` zero padded by the node's ``((top, bottom), (left, right))``; ``-inf`` padded for
max pooling):

* conv (im2col, in a (C, H, W, N) layout with the batch innermost):
  ``cols[(c, a, b), (i, j, n)] = xpad[c, i*sh + a*dh, j*sw + b*dw, n]`` (a strided view,
  copied for a band of output rows at a time), ``y = W @ cols + b``, ``dW = dy @ cols.T``,
  ``db = sum dy``, ``dx``: ``W.T @ dy`` added back tap by tap (col2im).
* max pooling: the first maximum of each window in (row, column) order wins (the numba kernel's
  rule); the backward adds ``dy`` at that tap.
* average pooling: window sums over zeros divided by PyTorch's divisor: the window clipped to
  the padded extent (``count_include_pad``) or to the input. Adaptive average pooling:
  ``y = R @ x @ C.T`` per plane, ``R``/``C`` averaging PyTorch's row/column bins.
* batch norm: the NumPy kernels the engine runs on (N, F) inputs, on every shape:
  ``y = (x - mean) * inv_std * gamma + beta``, ``dx = gamma inv_std (dy - mean(dy) - xhat
  mean(dy xhat))``; running statistics take the unbiased variance.
* relu / leaky ReLU: ``x if x > 0 else slope * x``. Every other element-wise kind already runs
  on its layer's NumPy kernel pair; fully connected, flatten, dropout, add, concat, zero
  padding, global average pooling, PReLU and maxout run on the engine's own (NumPy) ops.
* softmax cross-entropy: log-sum-exp, the mean over the batch accumulated in float64.

A graph with a node this tier cannot run (:func:`unsupported`) is never switched to it.
"""
from __future__ import annotations

import inspect

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["COLS_BUDGET", "NUMPY_TIER", "NumpyTier", "build_plan", "softmax_cross_entropy",
           "unsupported"]

#: im2col values built at once by a convolution (4 Mi: 16 MiB in float32)
COLS_BUDGET = 1 << 22


# ------------------------------------------------------------------------------- helpers
def _padded(x, top: int, left: int, need_h: int, need_w: int, fill) -> np.ndarray:
    """``x`` placed at (top, left) in a ``fill``-ed array at least ``need_h`` x ``need_w``."""
    n, c, h, w = x.shape
    xp = np.full((n, c, max(need_h, top + h), max(need_w, left + w)), fill, x.dtype)
    xp[:, :, top:top + h, left:left + w] = x
    return xp


def _windows(xp, k, stride, dilation, out_hw) -> np.ndarray:
    """Read-only view ``v[n, c, a, b, i, j] = xp[n, c, i*sh + a*dh, j*sw + b*dw]``."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k, stride, dilation, out_hw
    s = xp.strides
    return as_strided(xp, (xp.shape[0], xp.shape[1], kh, kw, oh, ow),
                      (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)


def _extent(k, stride, dilation, out_hw) -> tuple[int, int]:
    """Rows and columns of the padded input the windows read."""
    return tuple((o - 1) * s + (kk - 1) * d + 1 for kk, s, d, o in zip(k, stride, dilation, out_hw))


def _tap(a: np.ndarray, ai: int, bi: int, stride, dilation, out_hw) -> np.ndarray:
    """The (N, C, OH, OW) view of padded ``a`` that window tap (ai, bi) reads."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    r, c = ai * dh, bi * dw
    return a[:, :, r:r + (oh - 1) * sh + 1:sh, c:c + (ow - 1) * sw + 1:sw]


class _Op:
    """Shared set-up: the node, its parameter/gradient views, options (as :class:`ops.Op`)."""

    def __init__(self, node, ctx):
        self.node = node
        self.kind = node.kind
        self.name = node.name
        self.ctx = ctx
        self.dtype = ctx.dtype
        self.params = ctx.params.get(node.name, {})
        self.grads = ctx.grads.get(node.name, {})
        if hasattr(node.layer, "pads"):   # sliding-window layers
            (self.top, self.bottom), (self.left, self.right) = node.pads(ctx.convention)
        o = node.out_shape
        self.out_hw = (o.h, o.w)
        self.setup()

    def setup(self) -> None:
        """Read the layer options once (subclasses)."""

    def _unpad(self, dxp, x_shape) -> np.ndarray:
        h, w = x_shape[2:]
        return np.ascontiguousarray(dxp[:, :, self.top:self.top + h, self.left:self.left + w])


# ------------------------------------------------------------------------------- conv
class Conv(_Op):
    """Convolution as im2col + GEMMs in a (C, H, W, N) layout: the batch is the innermost axis,
    so the window copies and the col2im additions move runs of ``OW * N`` contiguous values
    rather than rows of ``OW``. The columns are built for a band of output rows at a time
    (at most :data:`COLS_BUDGET` values) and rebuilt in the backward, so memory stays bounded
    for large inputs and evaluation batches."""

    def setup(self):
        L = self.node.layer
        self.stride, self.dilation, self.groups = tuple(L.stride), tuple(L.dilation), L.groups

    def _bands(self, n):
        """Output row ranges whose im2col columns fit :data:`COLS_BUDGET`."""
        _, cg, kh, kw = self.params["weight"].shape
        oh, ow = self.out_hw
        rows = max(1, COLS_BUDGET // (cg * kh * kw * ow * n))
        return [(i, min(i + rows, oh)) for i in range(0, oh, rows)]

    def _cols(self, g, i0, i1):
        """``cols[(c, a, b), (i, j, n)]`` of group ``g`` for output rows ``i0 <= i < i1``."""
        _, cg, kh, kw = self.params["weight"].shape
        band = self.win[g * cg:(g + 1) * cg, :, :, i0:i1]
        return band.reshape(cg * kh * kw, -1)

    def forward(self, xs, training):
        x = xs[0]
        w, b = self.params["weight"], self.params.get("bias")
        K, cg, kh, kw = w.shape
        kg, n, (oh, ow) = K // self.groups, x.shape[0], self.out_hw
        self.x_shape = x.shape
        need_h, need_w = _extent((kh, kw), self.stride, self.dilation, self.out_hw)
        # xt[c, i, j, n]: x moved to (C, H, W, N) and zero padded
        xt = np.ascontiguousarray(_padded(x.transpose(1, 0, 2, 3), self.top, self.left, need_h,
                                          need_w, 0).transpose(0, 2, 3, 1))
        s = xt.strides
        (sh, sw), (dh, dw) = self.stride, self.dilation
        self.win = as_strided(xt, (xt.shape[0], kh, kw, oh, ow, n),
                              (s[0], s[1] * dh, s[2] * dw, s[1] * sh, s[2] * sw, s[3]),
                              writeable=False)
        self.xt_shape = xt.shape
        y = np.empty((K, oh, ow * n), self.dtype)
        for i0, i1 in self._bands(n):
            for g in range(self.groups):
                yg = w[g * kg:(g + 1) * kg].reshape(kg, -1) @ self._cols(g, i0, i1)
                y[g * kg:(g + 1) * kg, i0:i1] = yg.reshape(kg, i1 - i0, ow * n)
        if b is not None:
            y += b.reshape(-1, 1, 1)
        return np.ascontiguousarray(y.reshape(K, oh, ow, n).transpose(3, 0, 1, 2))

    def backward(self, dy, need):
        w = self.params["weight"]
        K, cg, kh, kw = w.shape
        kg, n, (oh, ow) = K // self.groups, dy.shape[0], self.out_hw
        dyt = np.ascontiguousarray(dy.transpose(1, 2, 3, 0)).reshape(K, oh, ow * n)
        dxt = np.zeros(self.xt_shape, self.dtype) if need[0] else None
        (sh, sw), (dh, dw) = self.stride, self.dilation
        dw_ = np.zeros((K, cg * kh * kw), self.dtype)
        for i0, i1 in self._bands(n):
            for g in range(self.groups):
                dyg = dyt[g * kg:(g + 1) * kg, i0:i1].reshape(kg, -1)
                dw_[g * kg:(g + 1) * kg] += dyg @ self._cols(g, i0, i1).T
                if dxt is None:
                    continue
                # dcols[(a, b, c), (i, j, n)]: the weights reordered so each tap is one block
                wr = w[g * kg:(g + 1) * kg].transpose(0, 2, 3, 1).reshape(kg, -1)
                dcols = (wr.T @ dyg).reshape(kh, kw, cg, i1 - i0, ow, n)
                part = dxt[g * cg:(g + 1) * cg]
                for a in range(kh):
                    r = a * dh + i0 * sh
                    for bb in range(kw):
                        part[:, r:r + (i1 - i0 - 1) * sh + 1:sh,
                             bb * dw:bb * dw + (ow - 1) * sw + 1:sw] += dcols[a, bb]
        self.grads["weight"][...] = dw_.reshape(K, cg, kh, kw)
        if "bias" in self.grads:
            self.grads["bias"][...] = dyt.sum(axis=(1, 2))
        if dxt is None:
            return [None]
        h, w_ = self.x_shape[2:]
        return [np.ascontiguousarray(
            dxt[:, self.top:self.top + h, self.left:self.left + w_].transpose(3, 0, 1, 2))]


# ------------------------------------------------------------------------------- pools
class MaxPool(_Op):
    def setup(self):
        L = self.node.layer
        self.k, self.stride, self.dilation = tuple(L.kernel_size), tuple(L.stride), \
            tuple(L.dilation)

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        n, c = x.shape[:2]
        kh, kw = self.k
        self.x_shape = x.shape
        xp = _padded(x, self.top, self.left, *_extent(self.k, self.stride, self.dilation,
                                                      self.out_hw), -np.inf)
        self.xp_shape = xp.shape
        win = _windows(xp, self.k, self.stride, self.dilation, self.out_hw)
        y = win[:, :, 0, 0].copy()
        am = self.am = np.zeros(y.shape, np.int8 if kh * kw < 128 else np.int32)
        for t in range(1, kh * kw):   # a later tap wins only when strictly greater
            v = win[:, :, t // kw, t % kw]
            np.copyto(am, t, where=v > y)
            np.maximum(y, v, out=y)      # (a NaN propagates)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        dxp = np.zeros(self.xp_shape, self.dtype)
        zero = self.dtype.type(0)
        for t in range(self.k[0] * self.k[1]):
            a, b = divmod(t, self.k[1])
            _tap(dxp, a, b, self.stride, self.dilation, self.out_hw)[...] += \
                np.where(self.am == t, dy, zero)
        return [self._unpad(dxp, self.x_shape)]


def _avg_divisor(out: int, stride: int, pad: int, k: int, size: int, pad_after: int,
                 include_pad: bool) -> np.ndarray:
    """PyTorch's per-window divisor along one axis: the window clipped to the padded extent
    (``include_pad``) or to the input (the compiled kernel's
    :func:`cnncalc.kernels.pool._avg_bounds`, called as plain Python)."""
    from cnncalc.kernels.pool import _avg_bounds

    spans = [_avg_bounds(i, stride, pad, k, size, pad_after) for i in range(out)]
    return np.array([full if include_pad else end - start for start, end, full in spans])


class AvgPool(_Op):
    def setup(self):
        L = self.node.layer
        self.k, self.stride = tuple(L.kernel_size), tuple(L.stride)
        self.include = bool(getattr(L, "count_include_pad", True))

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        h, w = x.shape[2:]
        xp = _padded(x, self.top, self.left, *_extent(self.k, self.stride, (1, 1), self.out_hw),
                     0)
        self.xp_shape = xp.shape
        (oh, ow), (kh, kw), (sh, sw) = self.out_hw, self.k, self.stride
        rows = _avg_divisor(oh, sh, self.top, kh, h, self.bottom, self.include)
        cols = _avg_divisor(ow, sw, self.left, kw, w, self.right, self.include)
        self.div = np.outer(rows, cols).astype(self.dtype)
        return _windows(xp, self.k, self.stride, (1, 1), self.out_hw).sum(axis=(2, 3)) / self.div

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        g = dy / self.div
        dxp = np.zeros(self.xp_shape, self.dtype)
        for a in range(self.k[0]):
            for b in range(self.k[1]):
                _tap(dxp, a, b, self.stride, (1, 1), self.out_hw)[...] += g
        return [self._unpad(dxp, self.x_shape)]


def _bins(out: int, size: int, dtype) -> np.ndarray:
    """(out, size) membership of PyTorch's adaptive bins ``[floor(i*size/out),
    ceil((i+1)*size/out))``, each row divided by its bin's length."""
    i = np.arange(out)[:, None]
    r = np.arange(size)[None, :]
    inside = (r >= (i * size) // out) & (r < -((-(i + 1) * size) // out))
    return (inside / inside.sum(axis=1, keepdims=True)).astype(dtype)


class AdaptiveAvgPool(_Op):
    """``y = R @ x @ C.T`` per plane, ``R``/``C`` the row/column bin averages (separable)."""

    def forward(self, xs, training):
        x = xs[0]
        self.x_shape = x.shape
        (oh, ow), (h, w) = self.out_hw, x.shape[2:]
        self.rows, self.cols = _bins(oh, h, self.dtype), _bins(ow, w, self.dtype)
        return np.matmul(np.matmul(self.rows, x), self.cols.T)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [np.matmul(np.matmul(self.rows.T, dy), self.cols)]


# ------------------------------------------------------------------------------- batch norm
class BatchNorm(_Op):
    """Batch norm on the NumPy :func:`cnncalc.kernels.norm.batchnorm_forward` /
    ``batchnorm_backward`` for every input shape (the engine's op runs them on (N, F) inputs
    and numba kernels on (N, C, H, W))."""

    def setup(self):
        L = self.node.layer
        c = self.node.in_shape.c
        self.rm = self.ctx.buffers[f"{self.name}.running_mean"]
        self.rv = self.ctx.buffers[f"{self.name}.running_var"]
        self.affine = bool(L.affine)
        self.gamma = self.params["weight"] if self.affine else np.ones(c, self.dtype)
        self.beta = self.params["bias"] if self.affine else np.zeros(c, self.dtype)
        self.momentum = 0.1 if L.momentum is None else float(L.momentum)
        self.eps = float(L.eps)

    def forward(self, xs, training):
        from cnncalc.kernels import norm

        y, self.cache = norm.batchnorm_forward(xs[0], self.gamma, self.beta, self.rm, self.rv,
                                               bool(training), self.momentum, self.eps)
        return y.astype(self.dtype, copy=False)

    def backward(self, dy, need):
        from cnncalc.kernels import norm

        dx, dgamma, dbeta = norm.batchnorm_backward(dy, self.cache)
        if self.affine:
            self.grads["weight"][...] = dgamma
            self.grads["bias"][...] = dbeta
        return [dx.astype(self.dtype, copy=False) if need[0] else None]


# ------------------------------------------------------------------------------- element-wise
def _leaky_forward(x, slope=0.0):
    if slope == 0:
        return np.maximum(x, x.dtype.type(0))
    return np.where(x > 0, x, x * x.dtype.type(slope))


def _leaky_backward(dy, x, slope=0.0):
    if slope == 0:
        return dy * (x > 0)
    return np.where(x > 0, dy, dy * dy.dtype.type(slope))


#: NumPy stand-ins for the element-wise kernels that are numba code (by kernel name)
_NUMPY_KERNELS = {"relu_forward": _leaky_forward, "relu_backward": _leaky_backward,
                  "leaky_relu_forward": _leaky_forward, "leaky_relu_backward": _leaky_backward}


def _numpy_kernel(fn):
    """``fn`` when it is a NumPy kernel (returns its result, takes no ``out=``), its NumPy
    stand-in when it is a numba one, else None."""
    if fn.__name__ in _NUMPY_KERNELS:
        return _NUMPY_KERNELS[fn.__name__]
    return None if "out" in inspect.signature(fn).parameters else fn


class Elementwise(_Op):
    """``y = forward(x, *args)``, ``dx = backward(dy, saved, *args)`` (the layer's pair)."""

    def setup(self):
        layer = self.node.layer
        self.fwd, self.bwd = (_numpy_kernel(f) for f in layer.kernel_pair())
        self.args = layer.kernel_values()
        self.keep_y = layer.saves == "y"

    def forward(self, xs, training):
        x = xs[0]
        y = self.fwd(x, *self.args).astype(self.dtype, copy=False)
        self.saved = y if self.keep_y else x
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [self.bwd(dy, self.saved, *self.args).astype(self.dtype, copy=False)]


# ------------------------------------------------------------------------------- the tier
def _implementations() -> dict:
    """Engine op class -> the class this tier runs instead (the engine's NumPy-only ops run
    as they are)."""
    from cnncalc.engine import ops

    table = {cls: cls for cls in (ops.LinearOp, ops.FlattenOp, ops.DropoutOp, ops.AddOp,
                                  ops.ConcatOp, ops.ZeroPadOp, ops.GlobalAvgPoolOp, ops.PReluOp,
                                  ops.MaxoutOp)}
    table.update({ops.ConvOp: Conv, ops.MaxPoolOp: MaxPool, ops.AvgPoolOp: AvgPool,
                  ops.AdaptiveAvgPoolOp: AdaptiveAvgPool, ops.BatchNormOp: BatchNorm,
                  ops.ElementwiseOp: Elementwise})
    return table


def _op_class(node):
    from cnncalc.engine import ops

    engine_cls = type(node.layer).op_class()
    cls = _implementations().get(engine_cls)
    if cls is Elementwise or engine_cls is ops.ElementwiseOp:
        if any(_numpy_kernel(f) is None for f in node.layer.kernel_pair()):
            return None
    return cls


def unsupported(graph) -> list[str]:
    """The kinds of ``graph``'s nodes this tier cannot run (sorted; empty: it runs them all)."""
    return sorted({n.kind for n in graph.nodes if _op_class(n) is None})


class _SerialContext:
    """The network's op context with one thread: this tier's ops run on the calling thread."""

    threads = 1

    def __init__(self, base):
        self._base = base

    def __getattr__(self, key):
        return getattr(self._base, key)


def build_plan(graph, ctx) -> list:
    """One step per node (no fusion), every op from this tier; ``ctx`` is the network's."""
    from cnncalc.engine.plan import Step
    from cnncalc.errors import TrainError

    missing = unsupported(graph)
    if missing:
        raise TrainError(f"the NumPy tier cannot run {', '.join(missing)}",
                         hint="run these layers on the compiled kernels")
    serial = _SerialContext(ctx)
    return [Step(_op_class(n)(n, serial), list(n.inputs), n.name, [n.name], None,
                 bool(n.param_shapes())) for n in graph.nodes]


def softmax_cross_entropy(logits, labels, *, out=None):
    """``(mean loss, dlogits)`` as :func:`cnncalc.kernels.loss.softmax_cross_entropy`:
    ``loss_i = logsumexp(z_i) - z_i[label_i]``, ``dlogits = (softmax(z) - onehot) / N``."""
    z = np.ascontiguousarray(logits)
    y = np.asarray(labels, dtype=np.int64)
    n = z.shape[0]
    rows = np.arange(n)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    losses = np.log(s[:, 0]).astype(np.float64) + m[:, 0] - z[rows, y]
    if out is None or out.shape != z.shape or out.dtype != z.dtype:
        out = np.empty_like(z)
    inv_n = z.dtype.type(1.0 / n)
    np.multiply(e, inv_n / s, out=out)
    out[rows, y] -= inv_n
    return float(losses.sum() / n), out


class NumpyTier:
    """What :meth:`cnncalc.Network.use_tier` needs from a tier: its plan, its loss, and
    whether its engine calls set flush-to-zero (that switch is itself a numba kernel)."""

    name = "numpy"
    flush_denormals = False

    build_plan = staticmethod(build_plan)
    softmax_cross_entropy = staticmethod(softmax_cross_entropy)
    unsupported = staticmethod(unsupported)


NUMPY_TIER = NumpyTier()
