"""Elementwise activations (shape unchanged; PReLU has parameters).

FLOPs: one per element for every activation function (an exp or tanh counts as one op, and so
does a piecewise-linear one such as hardswish);
softmax counts three per element (exp, sum, divide).
"""
from __future__ import annotations

from cnncalc.layers import register
from cnncalc.layers.base import Layer, Shape
from cnncalc.layers.options import Option, boolean, number, positive_int


_KERNELS = "cnncalc.kernels.activation"


def activation_kernels(name: str) -> tuple[str, str]:
    """The ``name_forward``/``name_backward`` pair of :mod:`cnncalc.kernels.activation`."""
    return f"{_KERNELS}:{name}_forward", f"{_KERNELS}:{name}_backward"


class _Elementwise(Layer):
    def flops(self, in_shape: Shape, out_shape: Shape) -> int:
        return out_shape.size


def _activation(kind: str, summary: str, aliases: tuple = (), options: dict | None = None,
                describe=None, saves: str = "x") -> type[Layer]:
    """A parameter-free activation run by the kernel pair ``kind_forward``/``kind_backward``
    (its options, in order, follow the array); ``saves``: what the backward reads."""
    options = options or {}
    cls = type(kind.title().replace("_", ""), (_Elementwise,), {
        "kind": kind, "aliases": aliases, "prefix": kind, "summary": summary,
        "options": options, "__doc__": summary, "kernels": activation_kernels(kind), "saves": saves,
        "kernel_args": tuple(options),
    })
    if describe is not None:
        cls.describe = describe
    return register(cls)


ReLU = _activation("relu", "ReLU: max(0, x)", saves="y")
LeakyReLU = _activation(
    "leaky_relu", "Leaky ReLU: max(slope·x, x), slope 0.01 by default", ("leakyrelu", "lrelu"),
    {"negative_slope": Option(number, 0.01, doc="slope for x < 0")},
    lambda self: f"slope={self.negative_slope:g}")
ELU = _activation(
    "elu", "ELU: x if x > 0 else α(eˣ − 1)", (),
    {"alpha": Option(number, 1.0, doc="α")}, lambda self: f"α={self.alpha:g}")
Sigmoid = _activation("sigmoid", "sigmoid: 1/(1 + e⁻ˣ)", ("logistic",), saves="y")
Tanh = _activation("tanh", "tanh(x)", saves="y")
Mish = _activation("mish", "Mish: x·tanh(ln(1 + eˣ))")
Swish = _activation("swish", "Swish/SiLU: x·σ(x)", ("silu",))
Hardswish = _activation("hardswish", "Hardswish (MobileNetV3): x·min(max(x + 3, 0), 6)/6",
                        ("hard_swish",))
Hardsigmoid = _activation("hardsigmoid", "Hardsigmoid: min(max(x + 3, 0), 6)/6",
                          ("hard_sigmoid",))
ReLU6 = _activation("relu6", "ReLU6 (MobileNet): min(max(x, 0), 6)")


@register
class Softmax(_Elementwise):
    """Softmax over the channel (depth) axis."""

    kind = "softmax"
    prefix = "softmax"
    summary = "softmax over the depth axis"
    kernels = activation_kernels("softmax")
    saves = "y"

    def flops(self, in_shape, out_shape):
        return 3 * out_shape.size


@register
class PReLU(_Elementwise):
    """Parametric ReLU: max(αx, x) with α learned, shared (1 parameter) or one per channel.

    Notes
    -----
    Parameters: 1 (PyTorch's default) or D1 with ``per_channel: true``; initialised to 0.25.
    """

    kind = "prelu"
    prefix = "prelu"
    op = "cnncalc.engine.ops:PReluOp"
    summary = "parametric ReLU with learned α (shared or per channel)"
    options = {"per_channel": Option(boolean, False, doc="one α per channel"),
               "num_parameters": Option(positive_int, None, doc="1 or the channel count")}

    def describe(self):
        return "α per channel" if self._per_channel() else "shared α"

    def _per_channel(self) -> bool:
        return bool(self.per_channel or (self.num_parameters or 1) > 1)

    def out_shape(self, in_shapes, ctx):
        x = in_shapes[0]
        if self.num_parameters not in (None, 1, x.c):
            from cnncalc.errors import ShapeError
            raise ShapeError(f"num_parameters={self.num_parameters} must be 1 or the number "
                             f"of channels ({x.c})", where=ctx.where, path=ctx.path,
                             hint="use per_channel: true for one α per channel")
        return x

    def param_shapes(self, in_shape):
        return {"weight": (in_shape.c if self._per_channel() else 1,)}
