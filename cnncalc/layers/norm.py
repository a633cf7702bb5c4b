"""Normalisation layers: batch norm and AlexNet's local response normalisation."""
from __future__ import annotations

from cnncalc.layers import register
from cnncalc.layers.base import Layer
from cnncalc.layers.options import Option, boolean, number, positive_int, positive_number


@register
class BatchNorm(Layer):
    """Batch normalisation per channel: y = γ·(x − μ)/√(σ² + ε) + β.

    Notes
    -----
    Parameters: γ and β, D1 each (trainable, ``weight``/``bias``); running mean and variance,
    D1 each (non-trainable buffers). FLOPs at inference: 2 per element (scale and shift).
    """

    kind = "batchnorm"
    op = "cnncalc.engine.ops:BatchNormOp"
    aliases = ("batchnorm2d", "batch_norm", "bn", "batchnorm1d")
    prefix = "bn"
    summary = "batch normalisation: learned γ, β; running mean/var buffers"
    options = {"eps": Option(positive_number, 1e-5), "momentum": Option(number, 0.1),
               "affine": Option(boolean, True)}

    onnx_op = "BatchNormalization"

    def to_onnx(self, g, x, node):
        """Inference mode; ONNX's momentum weighs the old running value (1 − PyTorch's)."""
        c = node.in_shape.c
        scale, shift = ((g.param(node, "weight"), g.param(node, "bias")) if self.affine
                        else (g.const([1.0] * c), g.const([0.0] * c)))
        return g.node("BatchNormalization", [x, scale, shift, g.param(node, "running_mean"),
                                             g.param(node, "running_var")],
                      epsilon=self.eps, momentum=1.0 - self.momentum)

    @classmethod
    def from_onnx(cls, n):
        arrays = [n.const(i) for i in range(1, 5)]
        if any(a is None for a in arrays) or len(n.outputs) > 1:
            return None
        return {"options": {"eps": n.attr("epsilon", 1e-5),
                            "momentum": round(1.0 - n.attr("momentum", 0.9), 7)},
                "weights": dict(zip(("weight", "bias", "running_mean", "running_var"),
                                    arrays))}

    def describe(self):
        return f"eps={self.eps:g} momentum={self.momentum:g}"

    def param_shapes(self, in_shape):
        if not self.affine:
            return {}
        return {"weight": (in_shape.c,), "bias": (in_shape.c,)}

    def buffer_shapes(self, in_shape):
        return {"running_mean": (in_shape.c,), "running_var": (in_shape.c,)}

    def flops(self, in_shape, out_shape):
        return 2 * out_shape.size


@register
class LocalResponseNorm(Layer):
    """AlexNet's local response normalisation across channels (PyTorch's LocalResponseNorm):
    b_c = a_c · (k + α/n · Σ a²)^(−β), the sum over n neighbouring channels.

    Defaults are the AlexNet paper's: n = 5, α = 1e-4, β = 0.75, k = 2.
    FLOPs: 2n + 3 per element (n squares and adds, scale, power, multiply).
    """

    kind = "lrn"
    kernels = ("cnncalc.kernels.norm:lrn_forward", "cnncalc.kernels.norm:lrn_backward")
    kernel_args = ("size", "alpha", "beta", "k")
    aliases = ("localresponsenorm", "local_response_norm")
    prefix = "lrn"
    summary = "local response normalisation across channels (AlexNet)"
    options = {"size": Option(positive_int, 5, doc="n, channels in the window"),
               "alpha": Option(number, 1e-4), "beta": Option(number, 0.75),
               "k": Option(number, 2.0)}
    option_aliases = {"size": "size", "n": "size"}
    # ONNX's LRN is PyTorch's: alpha is divided by size, bias is k
    onnx_op = "LRN"
    onnx_attrs = {"size": "size", "alpha": "alpha", "beta": "beta", "bias": "k"}

    def to_onnx(self, g, x, node):
        return super().to_onnx(g, g.as_4d(x), node)

    @classmethod
    def from_onnx(cls, n):
        found = super().from_onnx(n)
        found["options"]["k"] = n.attr("bias", 1.0)  # ONNX's default bias is 1, not 2
        return found

    def describe(self):
        return f"n={self.size} α={self.alpha:g} β={self.beta:g} k={self.k:g}"

    def flops(self, in_shape, out_shape):
        return (2 * self.size + 3) * out_shape.size
