"""Shapes and the shared size rules every layer uses.

A spec shape is ``Shape(c, h, w)`` (channels, height, width) without the batch; the lecture writes
the same volume as ``W x H x D``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


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


@dataclass(frozen=True)
class OutSize:
    """The result of the output-size formula on one axis, before rounding is applied.

    ``exact`` is the fraction (n + p_total - k_eff)/s + 1; ``size`` the integer the convention
    chose; ``unseen`` how many input rows/columns at the far edge no window covers (with floor).
    """

    size: int
    exact: float
    numerator: int
    stride: int
    unseen: int

    @property
    def is_integer(self) -> bool:
        return self.numerator % self.stride == 0


def effective_kernel(k: int, dilation: int = 1) -> int:
    """Span of a dilated kernel: ``d·(k − 1) + 1``."""
    return dilation * (k - 1) + 1


def out_size(n: int, k: int, s: int, pad_before: int, pad_after: int, dilation: int = 1,
             ceil_mode: bool = False) -> OutSize:
    """Output length on one axis.

    Notes
    -----
    ``out = floor((n + p_before + p_after − d·(k−1) − 1)/s) + 1``, the lecture's
    ``(W − F + 2P)/S + 1`` with PyTorch's floor. With ``ceil_mode`` the division rounds up, and (as
    PyTorch does) a last window that would start entirely inside the right padding is dropped.

    >>> out_size(32, 5, 1, 2, 2).size
    32
    >>> out_size(7, 3, 3, 0, 0).exact
    2.3333333333333335
    """
    k_eff = effective_kernel(k, dilation)
    numerator = n + pad_before + pad_after - k_eff
    if numerator < 0:
        return OutSize(size=0, exact=numerator / s + 1, numerator=numerator, stride=s, unseen=0)
    if ceil_mode:
        size = -(-numerator // s) + 1
        if (size - 1) * s >= n + pad_before:
            size -= 1
    else:
        size = numerator // s + 1
    unseen = max(0, numerator - (numerator // s) * s) if not ceil_mode else 0
    return OutSize(size=size, exact=numerator / s + 1, numerator=numerator, stride=s,
                   unseen=unseen)


def same_padding(n: int, k: int, s: int, dilation: int = 1) -> tuple[int, int]:
    """Padding (before, after) that gives ``ceil(n / s)`` outputs (TensorFlow's/PyTorch's "same").

    With stride 1 this is ``(k_eff − 1)/2`` on each side, the lecture's ``(F − 1)/2``; an odd total
    puts the extra row after, as TensorFlow and PyTorch do.
    """
    k_eff = effective_kernel(k, dilation)
    out = math.ceil(n / s)
    total = max(0, (out - 1) * s + k_eff - n)
    return total // 2, total - total // 2


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
