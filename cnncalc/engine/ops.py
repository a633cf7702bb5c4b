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

    def forward(self, xs, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy, need):  # pragma: no cover - abstract
        raise NotImplementedError


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


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

    def forward(self, xs, training):
        x = xs[0]
        self.x = x
        n = x.shape[0]
        o = self.node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        return kconv.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                    self.stride, self.pad, self.dilation, self.groups,
                                    self.out_hw, out=y, parallel=self.parallel)

    def backward(self, dy, need):
        has_bias = "bias" in self.params
        dx, dw, db = kconv.conv2d_backward(dy, self.x, self.params["weight"], self.stride,
                                           self.pad, self.dilation, self.groups,
                                           need_dx=need[0], has_bias=has_bias,
                                           parallel=self.parallel)
        self.grads["weight"][...] = dw
        if has_bias:
            self.grads["bias"][...] = db
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
        x = xs[0]
        self.x_shape = x.shape
        y, self.am = kpool.maxpool2d_forward(x, self.k, self.stride, self.pad, self.out_hw,
                                             self.dilation, parallel=self.parallel)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [kpool.maxpool2d_backward(dy, self.am, self.x_shape, parallel=self.parallel)]


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
        x = xs[0]
        self.x_shape = x.shape
        return kpool.avgpool2d_forward(x, self.k, self.stride, self.pad, self.out_hw,
                                       self.include, pad_after=self.pad_after,
                                       parallel=self.parallel)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [kpool.avgpool2d_backward(dy, self.x_shape, self.k, self.stride, self.pad,
                                         self.include, pad_after=self.pad_after,
                                         parallel=self.parallel)]


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
        self.x_shape = xs[0].shape
        return kpool.adaptive_avgpool_forward(xs[0], self.node.layer.output_size,
                                              parallel=self.parallel)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [kpool.adaptive_avgpool_backward(dy, self.x_shape, parallel=self.parallel)]


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
        x = xs[0]
        n = x.shape[0]
        self.x_shape = x.shape
        self.x2d = x2d = x.reshape(n, -1)
        w = self.params["weight"]
        y = self._buf("y", (n, w.shape[0]))
        klin.linear_forward(x2d, w, self.params.get("bias"), out=y)
        return y.reshape(n, w.shape[0], 1, 1)

    def backward(self, dy, need):
        dy2 = dy.reshape(dy.shape[0], -1)
        dx, dw, db = klin.linear_backward(dy2, self.x2d, self.params["weight"],
                                          need_dx=need[0])
        self.grads["weight"][...] = dw
        if "bias" in self.grads:
            self.grads["bias"][...] = db
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
        x = xs[0]
        self.y = act.relu_forward(x, out=self._buf("y", x.shape), parallel=self.parallel)
        return self.y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [act.relu_backward(dy, self.y, out=self._buf("dx", dy.shape),
                                  parallel=self.parallel)]


class LeakyReluOp(Op):
    kind = "leaky_relu"

    def forward(self, xs, training):
        x = self.x = xs[0]
        return act.leaky_relu_forward(x, self.node.layer.negative_slope,
                                      out=self._buf("y", x.shape), parallel=self.parallel)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [act.leaky_relu_backward(dy, self.x, self.node.layer.negative_slope,
                                        out=self._buf("dx", dy.shape), parallel=self.parallel)]


class _XOp(Op):
    """Activation whose backward needs the input x: ``fwd(x, *args)``, ``bwd(dy, x, *args)``."""

    fwd = bwd = None

    def args(self):
        return ()

    def forward(self, xs, training):
        self.x = xs[0]
        return type(self).fwd(self.x, *self.args()).astype(self.dtype, copy=False)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [type(self).bwd(dy, self.x, *self.args()).astype(self.dtype, copy=False)]


class _YOp(Op):
    """Activation whose backward needs the output y: ``fwd(x)``, ``bwd(dy, y)``."""

    fwd = bwd = None

    def forward(self, xs, training):
        self.y = type(self).fwd(xs[0]).astype(self.dtype, copy=False)
        return self.y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [type(self).bwd(dy, self.y).astype(self.dtype, copy=False)]


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

    def forward(self, xs, training):
        gamma = self.params["weight"] if self.affine else self.gamma
        beta = self.params["bias"] if self.affine else self.beta
        y, self.cache = knorm.batchnorm_forward(xs[0], gamma, beta, self.rm, self.rv,
                                                bool(training), self.momentum, self.eps)
        return y.astype(self.dtype, copy=False)

    def backward(self, dy, need):
        dx, dgamma, dbeta = knorm.batchnorm_backward(dy, self.cache)
        if self.affine:
            self.grads["weight"][...] = dgamma
            self.grads["bias"][...] = dbeta
        return [dx.astype(self.dtype, copy=False) if need[0] else None]


class LRNOp(Op):
    kind = "lrn"

    def args(self):
        L = self.node.layer
        return (L.size, L.alpha, L.beta, L.k)

    def forward(self, xs, training):
        self.x = xs[0]
        return knorm.lrn_forward(self.x, *self.args()).astype(self.dtype, copy=False)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [knorm.lrn_backward(dy, self.x, *self.args()).astype(self.dtype, copy=False)]


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
