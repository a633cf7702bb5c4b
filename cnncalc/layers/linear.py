"""Fully connected layers: the lecture's view of FC as a conv covering the whole input."""
from __future__ import annotations

from cnncalc.layers import register
from cnncalc.layers.base import Layer, RFStep, Shape
from cnncalc.layers.options import Option, boolean, positive_int


def _whole_input_rf(in_shape: Shape):
    return (RFStep(in_shape.h, 1, 0), RFStep(in_shape.w, 1, 0))


@register
class Linear(Layer):
    """Fully connected layer; a spatial input is flattened (C·H·W features, NCHW order).

    Notes
    -----
    Output: 1 x 1 x N. Parameters: D_in·N weights + N biases. MACs: D_in·N.
    """

    kind = "fc"
    op = "cnncalc.engine.ops:LinearOp"
    aliases = ("linear", "dense", "fully_connected")
    prefix = "fc"
    summary = "fully connected: N units over all inputs (output 1 x 1 x N)"
    options = {"out_features": Option(positive_int, required=True, doc="N, number of units"),
               "bias": Option(boolean, True)}

    def describe(self):
        return f"{self.out_features} units" + ("" if self.bias else " no bias")

    def out_shape(self, in_shapes, ctx):
        return Shape(self.out_features, 1, 1)

    def param_shapes(self, in_shape):
        shapes = {"weight": (self.out_features, in_shape.size)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def macs(self, in_shape, out_shape):
        return in_shape.size * self.out_features

    def flops(self, in_shape, out_shape):
        return 2 * self.macs(in_shape, out_shape) + (self.out_features if self.bias else 0)

    def rf_step(self, in_shape, convention=None):
        return _whole_input_rf(in_shape)


@register
class Maxout(Layer):
    """Maxout: max over k affine pieces, max(w₁ᵀx + b₁, …, w_kᵀx + b_k), per unit.

    Notes
    -----
    Output: 1 x 1 x N. Parameters: k·(D_in·N + N); weight (N·k, D_in), row j·k + p is unit j's
    piece p. MACs: k·D_in·N; plus (k − 1)·N comparisons.
    """

    kind = "maxout"
    op = "cnncalc.engine.ops:MaxoutOp"
    prefix = "maxout"
    summary = "maxout: max of k affine pieces per unit (output 1 x 1 x N)"
    options = {"out_features": Option(positive_int, required=True, doc="N, units"),
               "pieces": Option(positive_int, 2, doc="k, affine pieces per unit")}
    option_aliases = {"k": "pieces"}

    def describe(self):
        return f"{self.out_features} units x {self.pieces} pieces"

    def out_shape(self, in_shapes, ctx):
        return Shape(self.out_features, 1, 1)

    def param_shapes(self, in_shape):
        rows = self.out_features * self.pieces
        return {"weight": (rows, in_shape.size), "bias": (rows,)}

    def macs(self, in_shape, out_shape):
        return in_shape.size * self.out_features * self.pieces

    def flops(self, in_shape, out_shape):
        rows = self.out_features * self.pieces
        return 2 * self.macs(in_shape, out_shape) + rows + (self.pieces - 1) * self.out_features

    def rf_step(self, in_shape, convention=None):
        return _whole_input_rf(in_shape)


@register
class Flatten(Layer):
    """Flatten to a vector (NCHW order, like torch.flatten(x, 1)); shown as 1 x 1 x C·H·W."""

    kind = "flatten"
    op = "cnncalc.engine.ops:FlattenOp"
    prefix = "flatten"
    summary = "reshape to 1 x 1 x (C·H·W)"

    def out_shape(self, in_shapes, ctx):
        return Shape(in_shapes[0].size, 1, 1)

    def rf_step(self, in_shape, convention=None):
        return _whole_input_rf(in_shape)
