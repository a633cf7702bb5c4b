"""Pooling layers: no parameters, a fixed function of each window."""
from __future__ import annotations

from cnncalc.layers import register
from cnncalc.layers.base import Context, Layer, RFStep, Shape
from cnncalc.layers.conv import _pair_text, pad_text
from cnncalc.layers.options import Option, boolean, padding, positive_pair
from cnncalc.layers.spatial import resolve_padding, spatial_out
from cnncalc.shapes import out_size


class _Pool2d(Layer):
    """Shared rules of max and average pooling.

    Notes
    -----
    Output: W2 = (W1 − F + 2P)/S + 1 (floor; ceil with ``ceil_mode`` or the Caffe convention),
    D2 = D1. Stride defaults to F. No parameters.
    """

    options = {
        "kernel_size": Option(positive_pair, required=True, doc="F, window size"),
        "stride": Option(positive_pair, None, doc="S (default: F)"),
        "padding": Option(padding, None, doc="P (not common for pooling)"),
        "dilation": Option(positive_pair, (1, 1)),
        "ceil_mode": Option(boolean, False, doc="round the output size up"),
    }

    def __init__(self, **opts):
        super().__init__(**opts)
        if self.stride is None:
            self.stride = self.kernel_size

    def describe(self) -> str:
        text = f"{_pair_text(self.kernel_size)} s{_pair_text(self.stride)}"
        if self.padding not in (None, ((0, 0), (0, 0))):
            text += f" p{pad_text(self.padding)}"
        if self.ceil_mode:
            text += " ceil"
        return text

    def pads(self, in_shape: Shape, convention=None):
        if convention is not None and convention.darknet and self.kind == "maxpool":
            # Darknet: `pad` is the total padding (default F − 1), split before/after.
            totals = ([self.kernel_size[0] - 1, self.kernel_size[1] - 1] if self.padding is None
                      else [self.padding[0][0], self.padding[1][0]])
            return tuple((t // 2, t - t // 2) for t in totals)
        p = self.padding if self.padding is not None else ((0, 0), (0, 0))
        return resolve_padding(p, (in_shape.h, in_shape.w), self.kernel_size, self.stride,
                               self.dilation)

    def ceil(self, convention=None) -> bool:
        return self.ceil_mode or bool(convention is not None and convention.pool_ceil)

    def out_shape(self, in_shapes, ctx: Context) -> Shape:
        x = in_shapes[0]
        pads = self.pads(x, ctx.convention)
        ceil = self.ceil(ctx.convention)
        h, w = spatial_out(ctx, (x.h, x.w), self.kernel_size, self.stride, pads, self.dilation,
                           ceil, what="window")
        return Shape(x.c, h, w)

    def rf_step(self, in_shape: Shape, convention=None):
        pads = self.pads(in_shape, convention)
        return tuple(RFStep(d * (k - 1) + 1, s, p[0]) for k, s, p, d in
                     zip(self.kernel_size, self.stride, pads, self.dilation))

    def to_onnx(self, g, x, node):
        (t, b), (left, r) = self.pads(node.in_shape, g.convention)
        attrs = {"kernel_shape": list(self.kernel_size), "strides": list(self.stride),
                 "pads": [t, left, b, r], "ceil_mode": int(self.ceil(g.convention))}
        if self.dilation != (1, 1):
            attrs["dilations"] = list(self.dilation)
        if "count_include_pad" in self.options:  # ONNX's default (0) is PyTorch's opposite
            attrs["count_include_pad"] = int(self.count_include_pad)
        y = g.node(self.onnx_op, [g.as_4d(x)], **attrs)
        # ONNX's ceil mode keeps a last window that starts in the bottom/right padding, which
        # PyTorch (and cnncalc) drop: cut that row/column off again
        onnx_out = [out_size(n, k, s, p0, p1, d, attrs["ceil_mode"], keep_padded_window=True).size
                    for n, (p0, p1), k, s, d in zip(node.in_shape[1:], ((t, b), (left, r)),
                                                    self.kernel_size, self.stride, self.dilation)]
        out = [node.out_shape.h, node.out_shape.w]
        if onnx_out != out:
            y = g.node("Slice", [y, g.const([0, 0], "int64"), g.const(out, "int64"),
                                 g.const([2, 3], "int64")])
        return y

    @classmethod
    def from_onnx(cls, n):
        kernel = tuple(n.attr("kernel_shape", ()))
        if len(kernel) != 2:
            return None
        pads = n.pads(kernel)
        options = {"kernel_size": kernel, "stride": tuple(n.attr("strides", (1, 1))),
                   "padding": None if pads == ((0, 0), (0, 0)) else pads,
                   "dilation": tuple(n.attr("dilations", (1, 1))),
                   "ceil_mode": bool(n.attr("ceil_mode", 0))}
        if "count_include_pad" in cls.options and options["padding"] is not None:
            options["count_include_pad"] = bool(n.attr("count_include_pad", 0))
        return {"options": options}


@register
class MaxPool2d(_Pool2d):
    kind = "maxpool"
    op = "cnncalc.engine.ops:MaxPoolOp"
    aliases = ("maxpool2d", "max_pool", "pool")
    prefix = "pool"
    summary = "max pooling over F x F windows with stride S"
    onnx_op = "MaxPool"

    def flops(self, in_shape: Shape, out_shape: Shape) -> int:
        return out_shape.size * (self.kernel_size[0] * self.kernel_size[1] - 1)


@register
class AvgPool2d(_Pool2d):
    kind = "avgpool"
    op = "cnncalc.engine.ops:AvgPoolOp"
    aliases = ("avgpool2d", "avg_pool", "averagepool")
    prefix = "avgpool"
    summary = "average pooling over F x F windows with stride S"
    onnx_op = "AveragePool"
    options = {**_Pool2d.options,
               "count_include_pad": Option(boolean, True, doc="padding counts in the divisor")}

    def flops(self, in_shape: Shape, out_shape: Shape) -> int:
        return out_shape.size * self.kernel_size[0] * self.kernel_size[1]


@register
class GlobalAvgPool(Layer):
    """Average over the whole spatial extent: W1 x H1 x D1 → 1 x 1 x D1."""

    kind = "global_avgpool"
    op = "cnncalc.engine.ops:GlobalAvgPoolOp"
    aliases = ("globalavgpool", "gap", "global_average_pool", "global_avg_pool")
    prefix = "gap"
    summary = "global average pooling to 1 x 1 x D"
    onnx_op = "GlobalAveragePool"

    def to_onnx(self, g, x, node):
        return g.node("GlobalAveragePool", [g.as_4d(x)])

    def out_shape(self, in_shapes, ctx):
        return Shape(in_shapes[0].c, 1, 1)

    def flops(self, in_shape, out_shape):
        return in_shape.size

    def rf_step(self, in_shape, convention=None):
        return (RFStep(in_shape.h, 1, 0), RFStep(in_shape.w, 1, 0))


def adaptive_bins(n: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling bins: [floor(i·n/out), ceil((i+1)·n/out))."""
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


@register
class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed output size (torchvision's AlexNet and VGG use 6x6 / 7x7).

    Notes
    -----
    Bin i covers input rows [floor(i·H1/H2), ceil((i+1)·H1/H2)). Smaller inputs are upsampled by
    repetition, as PyTorch does.
    """

    kind = "adaptive_avgpool"
    op = "cnncalc.engine.ops:AdaptiveAvgPoolOp"
    aliases = ("adaptiveavgpool", "adaptive_avgpool2d", "adaptive_avg_pool",
               "adaptiveavgpool2d")  # the last: PyTorch's class name
    prefix = "avgpool"
    summary = "average pooling to a fixed output size (bins as PyTorch)"
    options = {"output_size": Option(positive_pair, required=True, doc="output H x W")}
    option_aliases = {"size": "output_size"}

    def describe(self):
        return f"to {_pair_text(self.output_size)}"

    def to_onnx(self, g, x, node):
        """ONNX has no adaptive pooling: equal bins are an AveragePool; unequal ones are
        averaged one by one (Slice, ReduceMean) and concatenated back."""
        x = g.as_4d(x)
        n_h, n_w = node.in_shape.h, node.in_shape.w
        out_h, out_w = self.output_size
        if n_h % out_h == 0 and n_w % out_w == 0:
            k = [n_h // out_h, n_w // out_w]
            return g.node("AveragePool", [x], kernel_shape=k, strides=k)
        rows = []
        for top, bottom in adaptive_bins(n_h, out_h):
            cells = [g.reduce("ReduceMean", g.node("Slice", [
                x, g.const([top, left], "int64"), g.const([bottom, right], "int64"),
                g.const([2, 3], "int64")]), [2, 3]) for left, right in adaptive_bins(n_w, out_w)]
            rows.append(g.node("Concat", cells, axis=3) if len(cells) > 1 else cells[0])
        return g.node("Concat", rows, axis=2) if len(rows) > 1 else rows[0]

    def out_shape(self, in_shapes, ctx):
        return Shape(in_shapes[0].c, *self.output_size)

    def flops(self, in_shape, out_shape):
        bh = adaptive_bins(in_shape.h, out_shape.h)
        bw = adaptive_bins(in_shape.w, out_shape.w)
        return in_shape.c * sum(e - s for s, e in bh) * sum(e - s for s, e in bw)

    def rf_step(self, in_shape, convention=None):
        steps = []
        for n, out in zip((in_shape.h, in_shape.w), self.output_size):
            k = max(e - s for s, e in adaptive_bins(n, out))
            stride = max(1, n // out) if n >= out else 1
            steps.append(RFStep(k, stride, 0))
        return tuple(steps)
