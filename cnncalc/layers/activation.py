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
                describe=None, saves: str = "x", onnx: str = "", onnx_attrs: dict | None = None,
                **methods) -> type[Layer]:
    """A parameter-free activation run by the kernel pair ``kind_forward``/``kind_backward``
    (its options, in order, follow the array); ``saves``: what the backward reads; ``onnx``:
    the ONNX op it is, ``onnx_attrs`` its attributes (ONNX name -> option)."""
    options = options or {}
    cls = type(kind.title().replace("_", ""), (_Elementwise,), {
        "kind": kind, "aliases": aliases, "prefix": kind, "summary": summary,
        "options": options, "__doc__": summary, "kernels": activation_kernels(kind), "saves": saves,
        "kernel_args": tuple(options), "onnx_op": onnx, "onnx_attrs": onnx_attrs or {},
        **methods,
    })
    if describe is not None:
        cls.describe = describe
    return register(cls)


# ---- ONNX forms that are not one op with option attributes
def _mish_to_onnx(self, g, x, node):
    if g.opset >= 18:
        return g.node("Mish", [x])
    return g.node("Mul", [x, g.node("Tanh", [g.node("Softplus", [x])])])


def _swish_to_onnx(self, g, x, node):
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


def _hardsigmoid_to_onnx(self, g, x, node):
    return g.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)  # ONNX's default alpha is 0.2


@classmethod
def _hardsigmoid_from_onnx(cls, n):
    if abs(n.attr("alpha", 0.2) - 1 / 6) > 1e-6 or abs(n.attr("beta", 0.5) - 0.5) > 1e-6:
        return None
    return {"options": {}}


def _relu6_to_onnx(self, g, x, node):
    return g.node("Clip", [x, g.const(0.0), g.const(6.0)])


@classmethod
def _relu6_from_onnx(cls, n):
    """Clip(0, 6) only; bounds are inputs from opset 11, attributes before."""
    low, high = ((n.scalar(1), n.scalar(2)) if n.opset >= 11
                 else (n.attr("min", None), n.attr("max", None)))
    if (low, high) != (0.0, 6.0):
        return None
    return {"options": {}}


ReLU = _activation("relu", "ReLU: max(0, x)", saves="y", onnx="Relu")
LeakyReLU = _activation(
    "leaky_relu", "Leaky ReLU: max(slope·x, x), slope 0.01 by default", ("leakyrelu", "lrelu"),
    {"negative_slope": Option(number, 0.01, doc="slope for x < 0")},
    lambda self: f"slope={self.negative_slope:g}", onnx="LeakyRelu",
    onnx_attrs={"alpha": "negative_slope"})
ELU = _activation(
    "elu", "ELU: x if x > 0 else α(eˣ − 1)", (),
    {"alpha": Option(number, 1.0, doc="α")}, lambda self: f"α={self.alpha:g}", onnx="Elu",
    onnx_attrs={"alpha": "alpha"})
Sigmoid = _activation("sigmoid", "sigmoid: 1/(1 + e⁻ˣ)", ("logistic",), saves="y",
                      onnx="Sigmoid")
Tanh = _activation("tanh", "tanh(x)", saves="y", onnx="Tanh")
Mish = _activation("mish", "Mish: x·tanh(ln(1 + eˣ))", onnx="Mish", to_onnx=_mish_to_onnx)
Swish = _activation("swish", "Swish/SiLU: x·σ(x)", ("silu",), to_onnx=_swish_to_onnx)
Hardswish = _activation("hardswish", "Hardswish (MobileNetV3): x·min(max(x + 3, 0), 6)/6",
                        ("hard_swish",), onnx="HardSwish")
Hardsigmoid = _activation("hardsigmoid", "Hardsigmoid: min(max(x + 3, 0), 6)/6",
                          ("hard_sigmoid",), onnx="HardSigmoid", to_onnx=_hardsigmoid_to_onnx,
                          from_onnx=_hardsigmoid_from_onnx)
ReLU6 = _activation("relu6", "ReLU6 (MobileNet): min(max(x, 0), 6)", onnx="Clip",
                    to_onnx=_relu6_to_onnx, from_onnx=_relu6_from_onnx)


@register
class Softmax(_Elementwise):
    """Softmax over the channel (depth) axis."""

    kind = "softmax"
    prefix = "softmax"
    summary = "softmax over the depth axis"
    kernels = activation_kernels("softmax")
    saves = "y"
    onnx_op = "Softmax"

    def to_onnx(self, g, x, node):
        return g.node("Softmax", [x], axis=1)

    @classmethod
    def from_onnx(cls, n):
        return {"options": {}} if n.attr("axis", -1) in (1, -n.rank + 1) else None

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

    onnx_op = "PRelu"

    def to_onnx(self, g, x, node):
        shape = (-1, 1, 1) if self._per_channel() and g.rank(x) == 4 else (-1,)
        return g.node("PRelu", [x, g.param(node, "weight", shape)])

    @classmethod
    def from_onnx(cls, n):
        slope = n.const(1)
        if slope is None or slope.size not in (1, n.in_shape.c):
            return None
        return {"options": {"per_channel": slope.size > 1},
                "weights": {"weight": slope.reshape(-1)}}

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
