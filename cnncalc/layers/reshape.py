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

    def describe(self):
        return f"p={self.p:g}"
