"""The output-size rule, in one place: layers, kernels and the generated chain kernels use it.

Pure Python (no numpy, no numba), so the analyzer and the generator can import it freely.

* :func:`effective_kernel` — span of a dilated kernel, ``d·(k − 1) + 1``;
* :func:`out_size` — ``floor((n + p_before + p_after − k_eff)/s) + 1`` (or ceil, PyTorch's way);
* :func:`same_padding` — the padding that gives ``ceil(n / s)`` outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OutSize", "effective_kernel", "out_size", "same_padding"]


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
             ceil_mode: bool = False, keep_padded_window: bool = False) -> OutSize:
    """Output length on one axis.

    Notes
    -----
    ``out = floor((n + p_before + p_after − d·(k−1) − 1)/s) + 1``, the lecture's
    ``(W − F + 2P)/S + 1`` with PyTorch's floor. With ``ceil_mode`` the division rounds up, and (as
    PyTorch does) a last window that would start entirely inside the right padding is dropped;
    ``keep_padded_window`` keeps it, as ONNX's ``ceil_mode`` does.

    >>> out_size(32, 5, 1, 2, 2).size
    32
    >>> round(out_size(7, 3, 3, 0, 0).exact, 4)
    2.3333
    """
    k_eff = effective_kernel(k, dilation)
    numerator = n + pad_before + pad_after - k_eff
    if numerator < 0:
        return OutSize(size=0, exact=numerator / s + 1, numerator=numerator, stride=s, unseen=0)
    if ceil_mode:
        size = -(-numerator // s) + 1
        if not keep_padded_window and (size - 1) * s >= n + pad_before:
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
