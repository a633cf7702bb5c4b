"""Convolution and explicit zero padding."""
from __future__ import annotations

from cnncalc.errors import ShapeError
from cnncalc.layers import register
from cnncalc.layers.base import Context, Layer, RFStep, Shape, effective_kernel, prod
from cnncalc.layers.options import (Option, boolean, non_negative_int, padding, positive_int,
                                    positive_pair)
from cnncalc.layers.spatial import resolve_padding, spatial_out


def _pair_text(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def pad_text(pads) -> str:
    if pads == "same":
        return "same"
    (t, b), (left, r) = pads
    if t == b == left == r:
        return str(t)
    if t == b and left == r:
        return f"{t}x{left}"
    return f"t{t} b{b} l{left} r{r}"


@register
class Conv2d(Layer):
    """2-D convolution (cross-correlation, as every framework computes it).

    Notes
    -----
    Output: W2 = (W1 − F + 2P)/S + 1 (with dilation, F_eff = d·(F − 1) + 1), D2 = K.
    Parameters: (F·F·D1/groups)·K weights + K biases.
    MACs: W2·H2·K · (D1/groups)·F·F per example.
    """

    kind = "conv"
    op = "cnncalc.engine.ops:ConvOp"
    aliases = ("conv2d", "convolution")
    prefix = "conv"
    summary = "2-D convolution: K filters of F x F, stride S, zero padding P"
    options = {
        "out_channels": Option(positive_int, required=True, doc="K, number of filters"),
        "kernel_size": Option(positive_pair, required=True, doc="F, filter size (or [h, w])"),
        "stride": Option(positive_pair, (1, 1), doc="S"),
        "padding": Option(padding, ((0, 0), (0, 0)), doc="P: int, [h, w], same or valid"),
        "dilation": Option(positive_pair, (1, 1)),
        "groups": Option(positive_int, 1, doc="groups; = input channels for depthwise"),
        "bias": Option(boolean, True),
    }

    onnx_op = "Conv"

    def to_onnx(self, g, x, node):
        (t, b), (left, r) = self.pads(node.in_shape, g.convention)
        inputs = [g.as_4d(x), g.param(node, "weight")]
        if self.bias:
            inputs.append(g.param(node, "bias"))
        return g.node("Conv", inputs, kernel_shape=list(self.kernel_size),
                      strides=list(self.stride), pads=[t, left, b, r],
                      dilations=list(self.dilation), group=self.groups)

    @classmethod
    def from_onnx(cls, n):
        weight = n.const(1)
        if weight is None or weight.ndim != 4:
            return None
        bias = n.const(2)
        dilation = tuple(n.attr("dilations", (1, 1)))
        return {"options": {"out_channels": weight.shape[0],
                            "kernel_size": tuple(weight.shape[2:]),
                            "stride": tuple(n.attr("strides", (1, 1))),
                            "padding": n.pads(weight.shape[2:]), "dilation": dilation,
                            "groups": n.attr("group", 1), "bias": bias is not None},
                "weights": {"weight": weight, "bias": bias}}

    def describe(self) -> str:
        parts = [f"{self.out_channels}@{_pair_text(self.kernel_size)}",
                 f"s{_pair_text(self.stride)}", f"p{pad_text(self.padding)}"]
        if self.dilation != (1, 1):
            parts.append(f"d{_pair_text(self.dilation)}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if not self.bias:
            parts.append("no bias")
        return " ".join(parts)

    def pads(self, in_shape: Shape, convention=None):
        """Padding ((top, bottom), (left, right)) for this input."""
        p = self.padding
        if convention is not None and convention.darknet and p != "same":
            # Darknet's conv `pad` is a flag: any non-zero pad means floor(F/2) on each side.
            (t, _), _ = p
            if t:
                p = ((self.kernel_size[0] // 2,) * 2, (self.kernel_size[1] // 2,) * 2)
        return resolve_padding(p, (in_shape.h, in_shape.w), self.kernel_size, self.stride,
                               self.dilation)

    def out_shape(self, in_shapes, ctx: Context) -> Shape:
        x = in_shapes[0]
        if x.c % self.groups or self.out_channels % self.groups:
            raise ShapeError(
                f"groups={self.groups} must divide both the input channels ({x.c}) and the "
                f"filters ({self.out_channels})", where=ctx.where, path=ctx.path,
                hint="choose groups among the common divisors, e.g. 1 or the input channels")
        pads = self.pads(x, ctx.convention)
        h, w = spatial_out(ctx, (x.h, x.w), self.kernel_size, self.stride, pads, self.dilation)
        return Shape(self.out_channels, h, w)

    def param_shapes(self, in_shape: Shape) -> dict:
        shapes = {"weight": (self.out_channels, in_shape.c // self.groups, *self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def macs(self, in_shape: Shape, out_shape: Shape) -> int:
        return out_shape.size * (in_shape.c // self.groups) * prod(self.kernel_size)

    def flops(self, in_shape: Shape, out_shape: Shape) -> int:
        return 2 * self.macs(in_shape, out_shape) + (out_shape.size if self.bias else 0)

    def rf_step(self, in_shape: Shape, convention=None):
        pads = self.pads(in_shape, convention)
        return tuple(RFStep(effective_kernel(k, d), s, p[0]) for k, s, p, d in
                     zip(self.kernel_size, self.stride, pads, self.dilation))


def _sides(v):
    """ZeroPad sides: int, [h, w], [left, right, top, bottom] (PyTorch's order) or a mapping."""
    if isinstance(v, dict):
        unknown = set(v) - {"top", "bottom", "left", "right"}
        if unknown:
            raise ValueError(f"unknown side(s) {sorted(unknown)}; use top, bottom, left, right")
        t, b, left, r = (non_negative_int(v.get(k, 0)) for k in ("top", "bottom", "left", "right"))
        return ((t, b), (left, r))
    if isinstance(v, (list, tuple)) and len(v) == 4:
        left, r, t, b = (non_negative_int(x) for x in v)
        return ((t, b), (left, r))
    return padding(v)


@register
class ZeroPad2d(Layer):
    """Explicit zero padding, per side (PyTorch's ZeroPad2d order for a list: left, right, top,
    bottom).

    Notes
    -----
    Output: (W1 + left + right) x (H1 + top + bottom) x D1. No parameters.
    """

    kind = "zeropad"
    op = "cnncalc.engine.ops:ZeroPadOp"
    aliases = ("zeropad2d", "zero_pad", "pad2d")
    prefix = "pad"
    summary = "explicit zero padding per side"
    options = {"padding": Option(_sides, required=True, doc="int, [h, w], [l, r, t, b] or map")}

    onnx_op = "Pad"

    def to_onnx(self, g, x, node):
        (t, b), (left, r) = self.padding
        return g.node("Pad", [g.as_4d(x), g.const([0, 0, t, left, 0, 0, b, r], "int64")],
                      mode="constant")

    @classmethod
    def from_onnx(cls, n):
        pads = n.const(1) if n.opset >= 11 else n.attr("pads")
        value = n.scalar(2) if n.opset >= 11 else n.attr("value", 0.0)
        if (pads is None or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5))
                or n.attr("mode", "constant") != "constant" or value not in (None, 0.0)):
            return None
        t, left, b, r = (int(pads[i]) for i in (2, 3, 6, 7))
        return {"options": {"padding": ((t, b), (left, r))}}

    def describe(self) -> str:
        return f"p{pad_text(self.padding)}"

    def out_shape(self, in_shapes, ctx: Context) -> Shape:
        x = in_shapes[0]
        (t, b), (left, r) = self.padding
        return Shape(x.c, x.h + t + b, x.w + left + r)

    def rf_step(self, in_shape: Shape, convention=None):
        (t, _), (left, _) = self.padding
        return (RFStep(1, 1, t), RFStep(1, 1, left))
