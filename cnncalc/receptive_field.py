"""Receptive fields, after Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
Neural Networks" (Distill, 2019).

Per axis, walking forward from the input (size 1, jump 1, centre 0 in 0-based pixel coordinates):

* ``jump_out  = jump_in · s``                              (effective stride)
* ``size_out  = size_in + (k_eff − 1) · jump_in``          (k_eff = d·(k − 1) + 1)
* ``start_out = start_in + ((k_eff − 1)/2 − p_before) · jump_in``  (centre of the first unit)
"""
from __future__ import annotations

from dataclasses import dataclass

from cnncalc.layers.base import RFStep


@dataclass(frozen=True)
class RField:
    """Receptive field of a layer's output units, per axis (height, width)."""

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[float, float]

    def as_dict(self) -> dict:
        return {"size": list(self.size), "stride": list(self.stride),
                "start": [_num(s) for s in self.start]}


def _num(x: float):
    return int(x) if float(x).is_integer() else float(x)


def input_field() -> RField:
    return RField((1, 1), (1, 1), (0.0, 0.0))


def step_axis(size: int, jump: int, start: float, step: RFStep) -> tuple[int, int, float]:
    """One layer's recurrence on one axis; returns (size, jump, start) of its output."""
    k, s, p = step
    return size + (k - 1) * jump, jump * s, start + ((k - 1) / 2 - p) * jump


def compose(field: RField, steps: tuple[RFStep, RFStep]) -> RField:
    axes = [step_axis(field.size[a], field.stride[a], field.start[a], steps[a]) for a in (0, 1)]
    return RField(size=(axes[0][0], axes[1][0]), stride=(axes[0][1], axes[1][1]),
                  start=(axes[0][2], axes[1][2]))


def merge_axis(sizes, jumps, starts) -> tuple[int, int, float]:
    """The union of the branches' windows on one axis: ``(size, jump, start)``.

    Branch i's first unit sees ``[start_i − (size_i − 1)/2, start_i + (size_i − 1)/2]``; the
    merged unit sees the union ``[lo, hi]``, so ``size = hi − lo + 1`` and ``start = (lo + hi)/2``.
    When the centres agree this is the largest branch's field. The effective stride is the
    branches' common one (a merge needs equal output sizes, which in practice means equal
    strides); if they differ, the largest is taken and the merge is reported as not aligned.
    """
    lo = min(c - (n - 1) / 2 for n, c in zip(sizes, starts))
    hi = max(c + (n - 1) / 2 for n, c in zip(sizes, starts))
    return int(round(hi - lo)) + 1, max(jumps), (lo + hi) / 2


def merge_fields(fields: list[RField]) -> tuple[RField, bool]:
    """The field after a merge (``add``, ``concat``): per axis, the union of the inputs' windows
    (:func:`merge_axis`). ``aligned`` is False when the branches' effective strides or centres
    differ: the merged field is then not shift-invariant."""
    axes = [merge_axis([f.size[a] for f in fields], [f.stride[a] for f in fields],
                       [f.start[a] for f in fields]) for a in (0, 1)]
    merged = RField(size=(axes[0][0], axes[1][0]), stride=(axes[0][1], axes[1][1]),
                    start=(axes[0][2], axes[1][2]))
    aligned = all(f.stride == fields[0].stride and f.start == fields[0].start for f in fields)
    return merged, aligned
