"""One small op class per layer kind: the binding between a graph node and its kernels.

Contract (every op):

* ``forward(xs, training) -> y``: ``xs`` is the list of input arrays (N, C, H, W) in the node's
  ``inputs`` order; ``y`` is (N, C, H, W) (fully connected outputs are (N, K, 1, 1) views). The op
  keeps what its backward needs (its cache) on ``self``.
* ``backward(dy, need) -> list``: ``dy`` is d loss / d y (shape of ``y``); ``need[i]`` says
  whether the gradient of input ``i`` is wanted. Returns one array (or ``None``) per input and
  *writes* (never accumulates) the parameter gradients into the views ``self.grads[...]``.

Parameters and gradients are views into the network's flat buffers, so an op reads the current
weights on every call and a gradient lands directly in ``net.flat_grads``.

Arrays an op returns may live in its reusable buffers (``self._buf``): they stay valid until the
op's next call in the same direction. Buffers are reallocated when the batch size changes.

Threads: every op calls the SERIAL (cached, ``nogil``) kernels only (``parallel=False``), so no
process ever compiles a ``prange`` kernel for the engine. Ops whose work pays for a hand-over
(conv, pools, fully connected, element-wise activations, LRN on large tensors) split the batch
into ``ctx.threads`` contiguous slices and run them on the engine's thread pool
(:mod:`cnncalc.kernels.fast.threads`, ``ctx.run``): each slice writes its rows of the shared output
buffer, and parameter gradients come from per-slice buffers summed in slice order, so results
are bitwise repeatable for a thread count and agree with one thread to float rounding. Batch
norm on (N, C, H, W) splits too, its per-slice float64 statistics combined in slice order;
dropout (masks from ``ctx.rng``), merges and reshapes run on the calling thread.
"""
from __future__ import annotations

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.kernels import activation as act
from cnncalc.kernels import conv as kconv
from cnncalc.kernels import dropout as kdrop
from cnncalc.kernels import linear as klin
from cnncalc.kernels import norm as knorm
from cnncalc.kernels import pool as kpool

__all__ = ["OPS", "Op", "make_op"]

# Smallest work worth splitting over threads: a hand-over costs a few us (spinning workers) to
# ~40 us (a blocked one), so an op splits only when each slice still has a few tens of us of work.
MIN_MACS = 1 << 20      # conv / fully connected: multiply-adds
MIN_ELEMS = 1 << 16     # numba element-wise / pooling kernels: elements touched
MIN_ELEMS_NP = 1 << 17  # NumPy element-wise expressions (several passes, temporaries)


class Op:
    """Base class: holds the node, its parameter/gradient views and reusable buffers."""

    kind = ""

    def __init__(self, node, ctx):
        self.node = node
        self.name = node.name
        self.ctx = ctx
        self.dtype = ctx.dtype
        self.params = ctx.params.get(node.name, {})
        self.grads = ctx.grads.get(node.name, {})
        self.parallel = ctx.parallel
        self.threads = max(1, int(getattr(ctx, "threads", 1)))
        self.bufs: dict = {}
        self.setup()

    def setup(self) -> None:
        """Read the layer options once (subclasses)."""

    def _buf(self, key, shape, dtype=None):
        """A reusable array ``key`` of ``shape``; reallocated when the shape changes."""
        dtype = self.dtype if dtype is None else dtype
        a = self.bufs.get(key)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = np.empty(shape, dtype)
            self.bufs[key] = a
        return a

    def _slices(self, n: int, work: int = 0, min_work: int = 0) -> list[tuple[int, int]]:
        """Contiguous batch slices, one per thread (one slice when ``work < min_work``)."""
        T = min(self.threads, n)
        if T > 1 and work < min_work:
            T = 1
        return [(t * n // T, (t + 1) * n // T) for t in range(max(1, T))]

    def _run(self, fn, sl) -> list:
        """``[fn(0), fn(1), ...]`` for the slices ``sl``; several run on the thread pool."""
        if len(sl) == 1:
            return [fn(0)]
        return self.ctx.run(fn, len(sl))

    def _rows(self, key, shape, fn):
        """A per-sample NumPy computation ``fn(a, b) -> rows a..b`` into buffer ``key``; split
        over threads when large (NumPy releases the GIL in its loops). One slice: ``fn``'s own
        result, cast to the network's dtype."""
        n = shape[0]
        sl = self._slices(n, int(np.prod(shape)), MIN_ELEMS_NP)
        if len(sl) == 1:
            return fn(0, n).astype(self.dtype, copy=False)
        out = self._buf(key, shape)

        def work(t):
            a, b = sl[t]
            out[a:b] = fn(a, b)

        self._run(work, sl)
        return out

    def forward(self, xs, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy, need):  # pragma: no cover - abstract
        raise NotImplementedError


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def _sum_into(dst, parts) -> None:
    """``dst[...] = parts[0] + parts[1] + ...``, summed in slice order (deterministic)."""
    dst[...] = parts[0]
    for p in parts[1:]:
        dst += p


# ------------------------------------------------------------------------------- conv, pools
class ConvOp(Op):
    kind = "conv"

    def setup(self):
        L = self.node.layer
        (t, _), (l, _) = self.node.pads(self.ctx.convention)
        self.pad = (t, l)
        self.stride, self.dilation, self.groups = L.stride, L.dilation, L.groups
        o = self.node.out_shape
        self.out_hw = (o.h, o.w)

    def _slices_for(self, n):
        w = self.params["weight"]
        o = self.node.out_shape
        return self._slices(n, n * w.size * o.h * o.w, MIN_MACS)

    def forward(self, xs, training):
        x = self.x = np.ascontiguousarray(xs[0])
        n = x.shape[0]
        o = self.node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        w, b = self.params["weight"], self.params.get("bias")
        sl = self._slices_for(n)

        def work(t):
            a, c = sl[t]
            kconv.conv2d_forward(x[a:c], w, b, self.stride, self.pad, self.dilation, self.groups,
                                 self.out_hw, out=y[a:c], parallel=False)

        self._run(work, sl)
        return y

    def backward(self, dy, need):
        has_bias = "bias" in self.params
        x, w = self.x, self.params["weight"]
        dy = np.ascontiguousarray(dy)
        dx = self._buf("dx", x.shape) if need[0] else None
        sl = self._slices_for(x.shape[0])

        def work(t):
            a, c = sl[t]
            _, dw, db = kconv.conv2d_backward(
                dy[a:c], x[a:c], w, self.stride, self.pad, self.dilation, self.groups,
                need_dx=bool(need[0]), has_bias=has_bias, parallel=False,
                out_dx=None if dx is None else dx[a:c])
            return dw, db

        parts = self._run(work, sl)
        _sum_into(self.grads["weight"], [p[0] for p in parts])
        if has_bias:
            _sum_into(self.grads["bias"], [p[1] for p in parts])
        return [dx]


class MaxPoolOp(Op):
    kind = "maxpool"

    def setup(self):
        L = self.node.layer
        (t, _), (l, _) = self.node.pads(self.ctx.convention)
        self.pad = (t, l)
        o = self.node.out_shape
        self.k, self.stride, self.dilation, self.out_hw = L.kernel_size, L.stride, \
            L.dilation, (o.h, o.w)

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        n, c = x.shape[:2]
        shape = (n, c) + tuple(self.out_hw)
        y = self._buf("y", shape)
        am = self.am = self._buf("am", shape, np.int32)
        sl = self._slices(n, y.size * self.k[0] * self.k[1], MIN_ELEMS)

        def work(t):
            a, b = sl[t]
            kpool.maxpool2d_forward(x[a:b], self.k, self.stride, self.pad, self.out_hw,
                                    self.dilation, parallel=False, out=y[a:b],
                                    out_argmax=am[a:b])

        self._run(work, sl)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        dy = np.ascontiguousarray(dy)
        dx = self._buf("dx", self.x_shape)
        sl = self._slices(dy.shape[0], dx.size, MIN_ELEMS)

        def work(t):
            a, b = sl[t]
            kpool.maxpool2d_backward(dy[a:b], self.am[a:b], dx[a:b].shape, parallel=False,
                                     out=dx[a:b])

        self._run(work, sl)
        return [dx]


class AvgPoolOp(Op):
    kind = "avgpool"

    def setup(self):
        L = self.node.layer
        if tuple(L.dilation) != (1, 1):
            raise TrainError(f"{self.node.label}: dilated average pooling cannot be trained",
                             hint="remove 'dilation' (PyTorch's AvgPool2d has none either)")
        (t, b), (l, r) = self.node.pads(self.ctx.convention)
        self.pad, self.pad_after = (t, l), (b, r)
        o = self.node.out_shape
        self.k, self.stride, self.out_hw = L.kernel_size, L.stride, (o.h, o.w)
        self.include = bool(getattr(L, "count_include_pad", True))

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        n, c = x.shape[:2]
        y = self._buf("y", (n, c) + tuple(self.out_hw))
        sl = self._slices(n, y.size * self.k[0] * self.k[1], MIN_ELEMS)

        def work(t):
            a, b = sl[t]
            kpool.avgpool2d_forward(x[a:b], self.k, self.stride, self.pad, self.out_hw,
                                    self.include, pad_after=self.pad_after, parallel=False,
                                    out=y[a:b])

        self._run(work, sl)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        dy = np.ascontiguousarray(dy)
        dx = self._buf("dx", self.x_shape)
        sl = self._slices(dy.shape[0], dx.size, MIN_ELEMS)

        def work(t):
            a, b = sl[t]
            kpool.avgpool2d_backward(dy[a:b], dx[a:b].shape, self.k, self.stride, self.pad,
                                     self.include, pad_after=self.pad_after, parallel=False,
                                     out=dx[a:b])

        self._run(work, sl)
        return [dx]


class GlobalAvgPoolOp(Op):
    kind = "global_avgpool"

    def forward(self, xs, training):
        self.x_shape = xs[0].shape
        return kpool.global_avgpool_forward(xs[0]).astype(self.dtype, copy=False)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [kpool.global_avgpool_backward(dy, self.x_shape).astype(self.dtype, copy=False)]


class AdaptiveAvgPoolOp(Op):
    kind = "adaptive_avgpool"

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        o = self.node.out_shape
        y = self._buf("y", (x.shape[0], x.shape[1], o.h, o.w))
        sl = self._slices(x.shape[0], x.size, MIN_ELEMS)

        def work(t):
            a, b = sl[t]
            kpool.adaptive_avgpool_forward(x[a:b], (o.h, o.w), parallel=False, out=y[a:b])

        self._run(work, sl)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        dy = np.ascontiguousarray(dy)
        dx = self._buf("dx", self.x_shape)
        sl = self._slices(dy.shape[0], dx.size, MIN_ELEMS)

        def work(t):
            a, b = sl[t]
            kpool.adaptive_avgpool_backward(dy[a:b], dx[a:b].shape, parallel=False, out=dx[a:b])

        self._run(work, sl)
        return [dx]


class ZeroPadOp(Op):
    kind = "zeropad"

    def forward(self, xs, training):
        x = xs[0]
        (t, _), (l, _) = self.node.layer.padding
        n, _, h, w = x.shape
        o = self.node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        y[...] = 0
        y[:, :, t:t + h, l:l + w] = x
        self.hw = (h, w)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        (t, _), (l, _) = self.node.layer.padding
        h, w = self.hw
        return [np.ascontiguousarray(dy[:, :, t:t + h, l:l + w])]


# --------------------------------------------------------------------------- fully connected
class LinearOp(Op):
    kind = "fc"

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        n = x.shape[0]
        self.x_shape = x.shape
        self.x2d = x2d = x.reshape(n, -1)
        w, b = self.params["weight"], self.params.get("bias")
        y = self._buf("y", (n, w.shape[0]))
        sl = self._slices(n, n * w.size, MIN_MACS)

        def work(t):
            a, c = sl[t]
            klin.linear_forward(x2d[a:c], w, b, out=y[a:c])

        self._run(work, sl)
        return y.reshape(n, w.shape[0], 1, 1)

    def backward(self, dy, need):
        dy2 = np.ascontiguousarray(dy.reshape(dy.shape[0], -1))
        n = dy2.shape[0]
        w = self.params["weight"]
        dx = self._buf("dx", self.x2d.shape) if need[0] else None
        sl = self._slices(n, n * w.size, MIN_MACS)

        def work(t):
            a, c = sl[t]
            d, dw, db = klin.linear_backward(dy2[a:c], self.x2d[a:c], w, need_dx=bool(need[0]))
            if dx is not None:
                dx[a:c] = d
            return dw, db

        parts = self._run(work, sl)
        _sum_into(self.grads["weight"], [p[0] for p in parts])
        if "bias" in self.grads:
            _sum_into(self.grads["bias"], [p[1] for p in parts])
        return [None if dx is None else dx.reshape(self.x_shape)]


class MaxoutOp(Op):
    kind = "maxout"

    def forward(self, xs, training):
        x = xs[0]
        n = x.shape[0]
        self.x_shape = x.shape
        self.x2d = x.reshape(n, -1)
        y, self.am = act.maxout_forward(self.x2d, self.params["weight"], self.params["bias"],
                                        self.node.layer.pieces)
        return y.reshape(n, -1, 1, 1)

    def backward(self, dy, need):
        dx, dw, db = act.maxout_backward(np.ascontiguousarray(dy.reshape(dy.shape[0], -1)),
                                         self.x2d, self.params["weight"], self.am,
                                         self.node.layer.pieces)
        self.grads["weight"][...] = dw
        self.grads["bias"][...] = db
        return [dx.reshape(self.x_shape) if need[0] else None]


class FlattenOp(Op):
    kind = "flatten"

    def forward(self, xs, training):
        x = xs[0]
        self.x_shape = x.shape
        return np.ascontiguousarray(x).reshape(x.shape[0], -1, 1, 1)

    def backward(self, dy, need):
        return [dy.reshape(self.x_shape) if need[0] else None]


# ------------------------------------------------------------------------------ activations
class ReluOp(Op):
    kind = "relu"

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        y = self.y = self._buf("y", x.shape)
        sl = self._slices(x.shape[0], x.size, MIN_ELEMS)
        self._run(lambda t: act.relu_forward(x[sl[t][0]:sl[t][1]], out=y[sl[t][0]:sl[t][1]],
                                             parallel=False), sl)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        dy = np.ascontiguousarray(dy)
        dx, y = self._buf("dx", dy.shape), self.y
        sl = self._slices(dy.shape[0], dy.size, MIN_ELEMS)
        self._run(lambda t: act.relu_backward(dy[sl[t][0]:sl[t][1]], y[sl[t][0]:sl[t][1]],
                                              out=dx[sl[t][0]:sl[t][1]], parallel=False), sl)
        return [dx]


class LeakyReluOp(Op):
    kind = "leaky_relu"

    def forward(self, xs, training):
        x = self.x = np.ascontiguousarray(xs[0])
        s = self.node.layer.negative_slope
        y = self._buf("y", x.shape)
        sl = self._slices(x.shape[0], x.size, MIN_ELEMS)
        self._run(lambda t: act.leaky_relu_forward(x[sl[t][0]:sl[t][1]], s,
                                                   out=y[sl[t][0]:sl[t][1]], parallel=False), sl)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        dy = np.ascontiguousarray(dy)
        s, x = self.node.layer.negative_slope, self.x
        dx = self._buf("dx", dy.shape)
        sl = self._slices(dy.shape[0], dy.size, MIN_ELEMS)
        self._run(lambda t: act.leaky_relu_backward(dy[sl[t][0]:sl[t][1]], x[sl[t][0]:sl[t][1]],
                                                    s, out=dx[sl[t][0]:sl[t][1]],
                                                    parallel=False), sl)
        return [dx]


class _XOp(Op):
    """Activation whose backward needs the input x: ``fwd(x, *args)``, ``bwd(dy, x, *args)``."""

    fwd = bwd = None

    def args(self):
        return ()

    def forward(self, xs, training):
        self.x = x = xs[0]
        fwd, args = type(self).fwd, self.args()
        return self._rows("y", x.shape, lambda a, b: fwd(x[a:b], *args))

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        bwd, args, x = type(self).bwd, self.args(), self.x
        return [self._rows("dx", dy.shape, lambda a, b: bwd(dy[a:b], x[a:b], *args))]


class _YOp(Op):
    """Activation whose backward needs the output y: ``fwd(x)``, ``bwd(dy, y)``."""

    fwd = bwd = None

    def forward(self, xs, training):
        x, fwd = xs[0], type(self).fwd
        self.y = self._rows("y", x.shape, lambda a, b: fwd(x[a:b]))
        return self.y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        bwd, y = type(self).bwd, self.y
        return [self._rows("dx", dy.shape, lambda a, b: bwd(dy[a:b], y[a:b]))]


class EluOp(_XOp):
    kind = "elu"
    fwd, bwd = staticmethod(act.elu_forward), staticmethod(act.elu_backward)

    def args(self):
        return (self.node.layer.alpha,)


class MishOp(_XOp):
    kind = "mish"
    fwd, bwd = staticmethod(act.mish_forward), staticmethod(act.mish_backward)


class SwishOp(_XOp):
    kind = "swish"
    fwd, bwd = staticmethod(act.swish_forward), staticmethod(act.swish_backward)


class SigmoidOp(_YOp):
    kind = "sigmoid"
    fwd, bwd = staticmethod(act.sigmoid_forward), staticmethod(act.sigmoid_backward)


class TanhOp(_YOp):
    kind = "tanh"
    fwd, bwd = staticmethod(act.tanh_forward), staticmethod(act.tanh_backward)


class SoftmaxOp(_YOp):
    kind = "softmax"
    fwd, bwd = staticmethod(act.softmax_forward), staticmethod(act.softmax_backward)


class PReluOp(Op):
    kind = "prelu"

    def forward(self, xs, training):
        self.x = xs[0]
        return act.prelu_forward(self.x, self.params["weight"]).astype(self.dtype, copy=False)

    def backward(self, dy, need):
        dx, dalpha = act.prelu_backward(dy, self.x, self.params["weight"])
        self.grads["weight"][...] = dalpha
        return [dx.astype(self.dtype, copy=False) if need[0] else None]


# ---------------------------------------------------------------------------- norm, dropout
class BatchNormOp(Op):
    """Batch norm. (N, C, H, W) inputs run the serial numba kernels of
    :mod:`cnncalc.kernels.norm` (``bn_sums``/``bn_normalise``, ``bn_grad_sums``/
    ``bn_grad_input``) on batch slices: per-slice, per-channel float64 partial sums combined in
    slice order, so the batch statistics do not depend on the thread count beyond rounding and
    are bitwise repeatable for one; the element-wise passes split over threads. (N, F) inputs
    use the NumPy :func:`cnncalc.kernels.norm.batchnorm_forward` on the calling thread."""

    kind = "batchnorm"

    def setup(self):
        c = self.node.in_shape.c
        L = self.node.layer
        self.rm = self.ctx.buffers[f"{self.name}.running_mean"]
        self.rv = self.ctx.buffers[f"{self.name}.running_var"]
        self.affine = bool(L.affine)
        if not self.affine:
            self.gamma = np.ones(c, self.dtype)
            self.beta = np.zeros(c, self.dtype)
        self.momentum = 0.1 if L.momentum is None else float(L.momentum)
        self.eps = float(L.eps)

    def _gb(self):
        gamma = self.params["weight"] if self.affine else self.gamma
        beta = self.params["bias"] if self.affine else self.beta
        return gamma, beta

    def _csum(self, parts):
        """Per-channel totals of per-slice (C,) float64 partial sums, in slice order."""
        tot = parts[0].copy()
        for q in parts[1:]:
            tot += q
        return tot

    def forward(self, xs, training):
        gamma, beta = self._gb()
        x = xs[0]
        if x.ndim != 4:
            self.sliced = False
            y, self.cache = knorm.batchnorm_forward(x, gamma, beta, self.rm, self.rv,
                                                    bool(training), self.momentum, self.eps)
            return y.astype(self.dtype, copy=False)
        # numba kernels on batch slices: per-slice float64 partial sums combined in slice order
        # (bitwise repeatable for a thread count); xhat is recomputed from x in backward (x is
        # the previous op's buffer, valid until its next forward).
        self.sliced, self.training = True, bool(training)
        x = self.x = np.ascontiguousarray(x, dtype=self.dtype)
        n, c, h, w = x.shape
        hw = h * w
        x3 = self.x3 = x.reshape(n, c, hw)
        y = self._buf("y", x.shape)
        y3 = y.reshape(n, c, hw)
        sl = self._slices(n, x.size, MIN_ELEMS)
        if training:
            m = n * hw
            shift = x3[0, :, 0].astype(np.float64)
            parts = self._run(lambda t: self._sums(x3[sl[t][0]:sl[t][1]], shift), sl)
            s = self._csum(parts)
            d = s[0] / m
            mean64 = shift + d
            var64 = np.maximum(s[1] / m - d * d, 0.0)
            unbiased = (var64 * (m / (m - 1)) if m > 1 else var64).astype(self.dtype)
            mean = mean64.astype(self.dtype)
            var = var64.astype(self.dtype)
            mo = self.momentum
            self.rm *= 1 - mo
            self.rm += mo * mean
            self.rv *= 1 - mo
            self.rv += mo * unbiased
        else:
            mean = np.asarray(self.rm, dtype=self.dtype)
            var = np.asarray(self.rv, dtype=self.dtype)
        dt = self.dtype.type
        inv_std = (1 / np.sqrt(var + dt(self.eps))).astype(self.dtype)
        # the kernels take float64 per-channel vectors (values rounded as the dtype's)
        self.mean64 = mean.astype(np.float64)
        self.inv_std64 = inv_std.astype(np.float64)
        g64 = np.asarray(gamma, self.dtype).astype(np.float64)
        b64 = np.asarray(beta, self.dtype).astype(np.float64)
        self._run(lambda t: knorm.bn_normalise(x3[sl[t][0]:sl[t][1]], self.mean64,
                                               self.inv_std64, g64, b64,
                                               y3[sl[t][0]:sl[t][1]]), sl)
        self.gamma_used = np.array(gamma, self.dtype)
        return y

    @staticmethod
    def _sums(x3, shift):
        out = np.empty((2, x3.shape[1]), np.float64)
        knorm.bn_sums(x3, shift, out)
        return out

    def backward(self, dy, need):
        if not self.sliced:
            dx, dgamma, dbeta = knorm.batchnorm_backward(dy, self.cache)
            if self.affine:
                self.grads["weight"][...] = dgamma
                self.grads["bias"][...] = dbeta
            return [dx.astype(self.dtype, copy=False) if need[0] else None]
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        n, c = dy.shape[:2]
        hw = dy.size // (n * c)
        dy3 = dy.reshape(n, c, hw)
        x3 = self.x3
        sl = self._slices(n, dy.size, MIN_ELEMS)

        def sums(t):
            a, b = sl[t]
            out = np.empty((2, c), np.float64)
            knorm.bn_grad_sums(dy3[a:b], x3[a:b], self.mean64, self.inv_std64, out)
            return out

        tot = self._csum(self._run(sums, sl))
        dbeta = tot[0].astype(self.dtype)
        dgamma = tot[1].astype(self.dtype)
        if self.affine:
            self.grads["weight"][...] = dgamma
            self.grads["bias"][...] = dbeta
        if not need[0]:
            return [None]
        scale = (self.gamma_used * self.inv_std64.astype(self.dtype)).astype(np.float64)
        dx = self._buf("dx", dy.shape)
        dx3 = dx.reshape(n, c, hw)
        m = n * hw
        if self.training:
            mb = dbeta.astype(np.float64) / m
            mg = dgamma.astype(np.float64) / m
        else:
            mb = mg = np.zeros(c, np.float64)
        # dx = gamma*inv_std * (dy - mean(dy) - xhat*mean(dy*xhat))
        self._run(lambda t: knorm.bn_grad_input(dy3[sl[t][0]:sl[t][1]], x3[sl[t][0]:sl[t][1]],
                                                self.mean64, self.inv_std64, scale, mb, mg,
                                                dx3[sl[t][0]:sl[t][1]]), sl)
        return [dx]


class LRNOp(Op):
    kind = "lrn"

    def args(self):
        L = self.node.layer
        return (L.size, L.alpha, L.beta, L.k)

    def forward(self, xs, training):
        self.x = x = xs[0]
        args = self.args()
        return self._rows("y", x.shape, lambda a, b: knorm.lrn_forward(x[a:b], *args))

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        args, x = self.args(), self.x
        return [self._rows("dx", dy.shape, lambda a, b: knorm.lrn_backward(dy[a:b], x[a:b],
                                                                          *args))]


class DropoutOp(Op):
    kind = "dropout"

    def forward(self, xs, training):
        p = float(self.node.layer.p)
        if not training or p == 0.0:
            self.mask = None
            return xs[0]
        y, self.mask = kdrop.dropout_forward(xs[0], p, self.ctx.rng)
        return y.astype(self.dtype, copy=False)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        if self.mask is None:
            return [dy]
        return [kdrop.dropout_backward(dy, self.mask).astype(self.dtype, copy=False)]


# ----------------------------------------------------------------------------------- merges
class AddOp(Op):
    kind = "add"

    def forward(self, xs, training):
        self.n_in = len(xs)
        y = self._buf("y", xs[0].shape)
        np.add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            y += x
        return y

    def backward(self, dy, need):
        return [dy if nd else None for nd in need]


class ConcatOp(Op):
    kind = "concat"

    def forward(self, xs, training):
        n = xs[0].shape[0]
        o = self.node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        self.bounds = []
        c0 = 0
        for x in xs:
            c1 = c0 + x.shape[1]
            y[:, c0:c1] = x
            self.bounds.append((c0, c1))
            c0 = c1
        return y

    def backward(self, dy, need):
        return [np.ascontiguousarray(dy[:, c0:c1]) if nd else None
                for (c0, c1), nd in zip(self.bounds, need)]


OPS: dict[str, type[Op]] = {cls.kind: cls for cls in (
    ConvOp, MaxPoolOp, AvgPoolOp, GlobalAvgPoolOp, AdaptiveAvgPoolOp, ZeroPadOp, LinearOp,
    MaxoutOp, FlattenOp, ReluOp, LeakyReluOp, EluOp, MishOp, SwishOp, SigmoidOp, TanhOp,
    SoftmaxOp, PReluOp, BatchNormOp, LRNOp, DropoutOp, AddOp, ConcatOp)}


def make_op(node, ctx) -> Op:
    """The generic op for ``node`` (raises :class:`TrainError` for a kind without kernels)."""
    cls = OPS.get(node.kind)
    if cls is None:
        raise TrainError(f"{node.label}: layer type '{node.kind}' cannot be executed yet",
                         hint=f"executable types: {', '.join(sorted(OPS))}")
    return cls(node, ctx)
