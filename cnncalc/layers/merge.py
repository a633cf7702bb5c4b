"""Layers that merge branches: residual ``add`` and channel ``concat``."""
from __future__ import annotations

from cnncalc.errors import ShapeError
from cnncalc.layers import register
from cnncalc.layers.base import Layer, Shape


def _same_across(in_shapes, key, ctx, message: str, hint: str) -> Shape:
    """The first input shape, after checking ``key(shape)`` is equal for every branch."""
    first = in_shapes[0]
    if any(key(other) != key(first) for other in in_shapes[1:]):
        shapes = ", ".join(s.lecture() for s in in_shapes)
        raise ShapeError(f"{message}; received {shapes}", where=ctx.where, path=ctx.path,
                         hint=hint)
    return first


@register
class Add(Layer):
    """Elementwise sum of branches (residual connection); shapes must match.

    FLOPs: (branches − 1) per output element.
    """

    kind = "add"
    op = "cnncalc.engine.ops:AddOp"
    aliases = ("residual", "sum")
    prefix = "add"
    summary = "elementwise sum of branches (residual); shapes must match"
    n_inputs = None
    onnx_ops = ("Add", "Sum")

    def to_onnx(self, g, xs, node):
        return g.node("Sum", g.same_rank(xs)) if len(xs) > 2 else g.node("Add", g.same_rank(xs))

    @classmethod
    def from_onnx(cls, n):
        return {"options": {}} if n.all_data else None

    def out_shape(self, in_shapes, ctx):
        return _same_across(in_shapes, lambda s: s, ctx, "add needs inputs of one shape",
                            "add a 1x1 conv (with the same stride) on the shortcut to match "
                            "depth and size")

    def flops(self, in_shape, out_shape):
        return out_shape.size  # per extra branch; scaled in the graph by branch count


@register
class Concat(Layer):
    """Concatenation along channels (depth); spatial sizes must match."""

    kind = "concat"
    op = "cnncalc.engine.ops:ConcatOp"
    aliases = ("concatenate", "cat")
    prefix = "concat"
    summary = "concatenate branches along depth; spatial sizes must match"
    n_inputs = None
    onnx_op = "Concat"

    def to_onnx(self, g, xs, node):
        return g.node("Concat", g.same_rank(xs), axis=1)

    @classmethod
    def from_onnx(cls, n):
        return {"options": {}} if n.all_data and n.attr("axis") in (1, -n.rank + 1) else None

    def out_shape(self, in_shapes, ctx):
        first = _same_across(in_shapes, lambda s: (s.h, s.w), ctx,
                             "concat needs equal width and height",
                             "pad or pool the branches to one spatial size")
        return Shape(sum(s.c for s in in_shapes), first.h, first.w)
