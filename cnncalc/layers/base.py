"""Shapes and the shared size rules every layer uses.

A spec shape is ``Shape(c, h, w)`` (channels, height, width) without the batch; the lecture writes
the same volume as ``W x H x D``.
"""
from __future__ import annotations

from typing import NamedTuple

# the size rules live in a pure module (kernels and the generator use them too)
from cnncalc.shapes import OutSize, effective_kernel, out_size, same_padding  # noqa: F401


class Shape(NamedTuple):
    """A volume without the batch: channels (D), height (H), width (W)."""

    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        return self.c * self.h * self.w

    def lecture(self) -> str:
        """The lecture's ``W x H x D`` notation, e.g. ``32x32x3``."""
        return f"{self.w}x{self.h}x{self.c}"

    def as_dict(self) -> dict:
        return {"width": self.w, "height": self.h, "depth": self.c}


class Context:
    """What a shape rule needs besides the input: the convention and a place for warnings."""

    def __init__(self, convention, where: str = "", path: tuple | None = None):
        self.convention = convention
        self.where = where
        self.path = path
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class RFStep(NamedTuple):
    """One layer's receptive-field step on one axis: effective kernel, stride, padding before."""

    kernel: int
    stride: int
    pad: int


IDENTITY_RF = (RFStep(1, 1, 0), RFStep(1, 1, 0))


class Layer:
    """A layer type: its options and its shape, parameter, MAC, FLOP and receptive-field rules.

    Subclasses set ``kind`` (the spec name), ``options`` (canonical name → :class:`Option`) and
    override the rules that differ from an elementwise, parameter-free layer. Instances hold
    the parsed options as attributes.
    """

    kind: str = ""
    aliases: tuple[str, ...] = ()
    prefix: str = ""            # default layer names: conv1, pool1, fc1 ...
    summary: str = ""           # one line for `cnncalc layers`
    options: dict = {}
    option_aliases: dict = {}   # layer-specific spellings, checked before the shared table
    n_inputs: int | None = 1    # None: any number >= 2 (merges)

    # ---- execution binding: the engine builds a node's op from these, nothing else. Names are
    # "module:attribute" strings, imported at engine build time, so importing the layers (and
    # `cnncalc analyze`) never imports numba. A kind with neither is analysis-only.
    op: str = ""                # the op class, e.g. "cnncalc.engine.ops:ConvOp"
    kernels: tuple[str, str] | None = None  # (forward, backward) of an elementwise pair, run by
    #                           the engine's ElementwiseOp: forward(x, *args) -> y and
    #                           backward(dy, saved, *args) -> dx
    saves: str = "x"            # what that backward reads: the input "x" or the output "y"
    kernel_args: tuple[str, ...] = ()  # options passed after the array, in order

    # ---- ONNX mapping, read only by cnncalc.onnx (which alone imports the onnx package).
    # The common case is declarative: one ONNX op whose attributes are options
    # (``onnx_attrs``: ONNX attribute -> option). A kind that needs more overrides
    # :meth:`to_onnx`/:meth:`from_onnx`. ``onnx_ops``: the op types the importer hands to
    # this kind (default: ``(onnx_op,)``).
    onnx_op: str = ""
    onnx_attrs: dict[str, str] = {}
    onnx_ops: tuple[str, ...] = ()

    def __init__(self, **opts):
        for key, opt in self.options.items():
            setattr(self, key, opts.get(key, opt.default))

    @classmethod
    def executable(cls) -> bool:
        """Whether the engine can run this kind (it names an op class or a kernel pair)."""
        return bool(cls.op or cls.kernels)

    @classmethod
    def op_class(cls):
        """The engine's op class for this kind, imported now; None for an analysis-only kind.
        A kernel pair without an op class runs on ``cnncalc.engine.ops:ElementwiseOp``."""
        if cls.op:
            return resolve_name(cls.op)
        if cls.kernels:
            return resolve_name("cnncalc.engine.ops:ElementwiseOp")
        return None

    @classmethod
    def kernel_pair(cls):
        """``(forward, backward)``: the functions :attr:`kernels` names, imported now."""
        return tuple(resolve_name(name) for name in cls.kernels)

    def kernel_values(self) -> tuple:
        """The option values :attr:`kernel_args` names, in order."""
        return tuple(getattr(self, a) for a in self.kernel_args)

    # ---- ONNX ----------------------------------------------------------------------------
    @classmethod
    def onnx_op_types(cls) -> tuple[str, ...]:
        """The ONNX op types the importer maps to this kind."""
        return cls.onnx_ops or ((cls.onnx_op,) if cls.onnx_op else ())

    def to_onnx(self, g, x: str, node) -> str:
        """Emit this layer's ONNX nodes on the builder ``g`` for input tensor(s) ``x`` (a
        list for a merge); return the output tensor's name. ``node`` is the graph node."""
        if not self.onnx_op:
            g.unsupported(node)
        attrs = {a: getattr(self, o) for a, o in self.onnx_attrs.items()}
        return g.node(self.onnx_op, [x], **attrs)

    @classmethod
    def from_onnx(cls, n) -> dict | None:
        """Options (``{"options": ..., "weights": {suffix: array}}``) of the layer an ONNX
        node ``n`` (the importer's view) stands for, or None when it is not this kind."""
        return {"options": {o: n.attr(a, cls.options[o].default)
                            for a, o in cls.onnx_attrs.items()}}

    # ---- description -------------------------------------------------------------------
    def hyper(self) -> dict:
        """The options that matter for display, canonical names."""
        return {k: getattr(self, k) for k in self.options}

    def describe(self) -> str:
        return ""

    # ---- rules ------------------------------------------------------------------------
    def out_shape(self, in_shapes: list[Shape], ctx: Context) -> Shape:
        return in_shapes[0]

    def param_shapes(self, in_shape: Shape) -> dict[str, tuple]:
        """Trainable tensors, PyTorch's shapes, keyed by the state-dict suffix."""
        return {}

    def buffer_shapes(self, in_shape: Shape) -> dict[str, tuple]:
        """Non-trainable state (running statistics)."""
        return {}

    def macs(self, in_shape: Shape, out_shape: Shape) -> int:
        """Multiply-accumulates of learned weights per example (0 for everything else)."""
        return 0

    def flops(self, in_shape: Shape, out_shape: Shape) -> int:
        """Floating-point operations per example; see README "Counting conventions"."""
        return 0

    def rf_step(self, in_shape: Shape, convention=None) -> tuple[RFStep, RFStep]:
        """Per axis (height, width): effective kernel d·(k − 1) + 1, stride, padding before."""
        return IDENTITY_RF


def resolve_name(name: str):
    """The object a ``"package.module:attribute"`` string names (imported on first use)."""
    from importlib import import_module

    module, _, attr = name.partition(":")
    return getattr(import_module(module), attr)


def prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
