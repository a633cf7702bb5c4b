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

    def __init__(self, **opts):
        for key, opt in self.options.items():
            setattr(self, key, opts.get(key, opt.default))

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


def prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
