"""Finding non-finite values (NaN, +inf, -inf) so that bad data and weights are refused by name.

One NaN reaching training turns every weight NaN within a step or two, and the run then reports
``acc 0.00%`` instead of an error; loaders and ``load_state_dict`` call :func:`first_nonfinite`
once, when the array arrives, never per step.
"""
from __future__ import annotations

import numpy as np

__all__ = ["first_nonfinite", "nonfinite_message"]


def first_nonfinite(a) -> tuple[tuple[int, ...], float] | None:
    """``(index, value)`` of the first NaN/inf of ``a`` in C order, or None when all are finite.

    Integer arrays are finite by construction and skip the scan.
    """
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.inexact) or a.size == 0:
        return None
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    flat = int(np.argmax(bad.ravel()))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return index, a.ravel()[flat].item()


def nonfinite_message(what: str, a) -> str | None:
    """``"<what> holds nan at index (i, j, ...) (k non-finite values)"`` or None when finite."""
    found = first_nonfinite(a)
    if found is None:
        return None
    index, value = found
    count = int(np.count_nonzero(~np.isfinite(np.asarray(a))))
    return (f"{what} holds {value} at index {list(index)} ({count} non-finite "
            f"value{'s' if count != 1 else ''} in all)")
