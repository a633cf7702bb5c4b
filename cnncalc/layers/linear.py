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

    onnx_ops = ("Gemm", "MatMul")

    def to_onnx(self, g, x, node):
        # Gemm wants 2-D input (cnncalc flattens implicitly) and, with PyTorch-layout
        # (out, in) weights, transB=1.
        inputs = [g.as_2d(x), g.param(node, "weight")]
        if self.bias:
            inputs.append(g.param(node, "bias"))
        return g.node("Gemm", inputs, transB=1)

    @classmethod
    def from_onnx(cls, n):
        """Gemm (y = α·A·B' + β·C) or MatMul by a constant (in, out) matrix; a following
        constant Add becomes the bias (the importer folds it)."""
        weight = n.const(1)
        if weight is None or weight.ndim != 2 or n.rank != 2:
            return None
        if n.op == "MatMul":
            return {"options": {"out_features": weight.shape[1], "bias": False},
                    "weights": {"weight": weight.T}}
        if n.attr("transA", 0):
            return None
        weight = weight if n.attr("transB", 0) else weight.T
        if n.attr("alpha", 1.0) != 1.0:      # (a copy: VGG's first fc has 103 M weights)
            weight = weight * n.attr("alpha", 1.0)
        bias = n.const(2)
        if bias is not None:
            bias = (bias * n.attr("beta", 1.0)).reshape(-1)
            if bias.size != weight.shape[0]:
                return None
        return {"options": {"out_features": weight.shape[0], "bias": bias is not None},
                "weights": {"weight": weight, "bias": bias}}

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

    def to_onnx(self, g, x, node):
        """Gemm to N·k rows (row j·k + p is unit j's piece p), then the max over pieces."""
        rows = g.node("Gemm", [g.as_2d(x), g.param(node, "weight"), g.param(node, "bias")],
                      transB=1)
        pieces = g.node("Reshape", [rows, g.const([0, self.out_features, self.pieces],
                                                  "int64")])
        return g.reduce("ReduceMax", pieces, [2], keepdims=0)

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
    onnx_ops = ("Flatten", "Reshape")

    def to_onnx(self, g, x, node):
        return g.node("Flatten", [x], axis=1)

    @classmethod
    def from_onnx(cls, n):
        """Flatten from axis 1, or a Reshape to (N, -1) (``x.view(N, -1)``)."""
        if n.op == "Flatten" and n.attr("axis", 1) != 1:
            return None
        if n.op == "Reshape" and n.out_rank != 2:
            return None
        return {"options": {}}

    def out_shape(self, in_shapes, ctx):
        return Shape(in_shapes[0].size, 1, 1)

    def rf_step(self, in_shape, convention=None):
        return _whole_input_rf(in_shape)
