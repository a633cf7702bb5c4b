"""Layers that keep the shape and have no parameters besides their options."""
from __future__ import annotations

from cnncalc.layers import register
from cnncalc.layers.base import Layer
from cnncalc.layers.options import Option, probability


@register
class Dropout(Layer):
    """Inverted dropout: zero each unit with probability p while training, scale by 1/(1 − p);
    the identity at inference (0 FLOPs counted)."""

    kind = "dropout"
    op = "cnncalc.engine.ops:DropoutOp"
    prefix = "dropout"
    summary = "inverted dropout with drop probability p"
    options = {"p": Option(probability, 0.5, doc="drop probability")}

    onnx_op = "Dropout"

    def to_onnx(self, g, x, node):
        return g.node("Dropout", [x, g.const(self.p)])

    @classmethod
    def from_onnx(cls, n):
        ratio = n.scalar(1) if n.opset >= 12 else n.attr("ratio", 0.5)
        return {"options": {"p": 0.5 if ratio is None else ratio}}

    def describe(self):
        return f"p={self.p:g}"
