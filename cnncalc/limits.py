"""How much work and memory one command may ask for: declared bounds and the memory budget.

Two kinds of limit, each stated once:

* a :class:`Bound` on a number the user supplies that drives a loop or an allocation (a lab's
  ``--steps``, ``--images``, ``synthetic:N``); each is declared next to the function that takes
  the value, and :meth:`Bound.check` names the value, the range and why it is bounded;
* the **memory budget**: an estimate in bytes of what a command is about to allocate (a
  network's parameters, gradients, optimizer state and a batch's activations; a lab's arrays)
  is compared with :func:`memory_budget` before anything is allocated. The budget is
  ``$CNNCALC_MAX_MEMORY`` (bytes, or with a unit: ``512M``, ``8G``, ``1T``) when set, else
  :data:`DEFAULT_MEMORY_FRACTION` of the machine's physical memory.

Both raise :class:`~cnncalc.errors.LimitError` (exit code 2 on the command line).
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

from cnncalc.errors import LimitError

__all__ = ["Bound", "DEFAULT_MEMORY_FRACTION", "MEMORY_ENV", "check_memory", "format_bytes",
           "memory_budget", "physical_memory"]

#: the environment variable that sets the memory budget
MEMORY_ENV = "CNNCALC_MAX_MEMORY"
#: share of the physical memory a command may plan to use when ``$CNNCALC_MAX_MEMORY`` is unset
DEFAULT_MEMORY_FRACTION = 0.75
#: budget when the physical memory cannot be read (no ``os.sysconf``)
FALLBACK_MEMORY = 8 << 30
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Bound:
    """An inclusive range ``[lo, hi]`` for a user-supplied number named ``name`` (as the user
    writes it, e.g. ``"--steps"``); ``why`` says what the number costs, for the hint."""

    name: str
    lo: float
    hi: float
    why: str = ""

    def check(self, value, where: str | None = None):
        """``value`` itself when it is a number in range; else :class:`LimitError`."""
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and (not isinstance(value, float) or math.isfinite(value))
              and self.lo <= value <= self.hi)
        if not ok:
            raise LimitError(f"{self.name} must be in {self.lo:,}..{self.hi:,}; got {value!r}",
                             where=where,
                             hint=(f"{self.why}; " if self.why else "")
                             + f"use at most {self.hi:,}")
        return value


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or None where the platform does not say."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _parse_bytes(text: str) -> int:
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS and raw[-1:] else ""
    number = raw[:-1] if unit else raw
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value * _UNITS[unit] > 1 << 62:
        raise LimitError(f"${MEMORY_ENV} must be a positive size such as 512M, 8G or "
                         f"17179869184; got {text!r}",
                         hint=f"unset {MEMORY_ENV} to use {DEFAULT_MEMORY_FRACTION:.0%} of "
                              "the physical memory")
    return int(value * _UNITS[unit])


def memory_budget() -> int:
    """Bytes one command may plan to allocate: ``$CNNCALC_MAX_MEMORY`` or
    ``DEFAULT_MEMORY_FRACTION`` x physical memory."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        return _parse_bytes(text)
    total = physical_memory()
    return int(total * DEFAULT_MEMORY_FRACTION) if total else FALLBACK_MEMORY


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit below 1024 of it: ``"134.11 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            break
        n /= 1024
    if unit == "B":
        return f"{n:.0f} B"
    return f"{n:.2f} {unit}" if abs(n) < 1e6 else f"{n:.3g} {unit}"   # 1e6 and more: EiB only


def check_memory(estimate: float, what: str, *, breakdown: str = "", hint: str = "",
                 where: str | None = None) -> None:
    """Refuse to go on when ``estimate`` bytes (what ``what`` is about to allocate) exceed
    :func:`memory_budget`; the message names the estimate, its ``breakdown`` and the limit."""
    budget = memory_budget()
    if estimate <= budget:
        return
    source = (f"${MEMORY_ENV}" if os.environ.get(MEMORY_ENV, "").strip()
              else f"{DEFAULT_MEMORY_FRACTION:.0%} of physical memory")
    raise LimitError(f"{what} needs about {format_bytes(estimate)}"
                     + (f" ({breakdown})" if breakdown else "")
                     + f", over the memory limit of {format_bytes(budget)} ({source})",
                     where=where,
                     hint=(f"{hint}; " if hint else "")
                     + f"or raise the limit with {MEMORY_ENV}=SIZE (e.g. 64G)")


def network_bytes(graph, *, batch: int, dtype_bytes: int = 4,
                  optimizer: str | None = None) -> tuple[int, str]:
    """``(bytes, breakdown)`` a network of ``graph`` needs for a batch of ``batch``: the
    analyzer's memory figures (parameters and buffers; with ``optimizer``, gradients, optimizer
    state and the activations' gradients too; the batch's forward activations)."""
    totals = graph.analyze(batch=batch, optimizer=optimizer, dtype_bytes=dtype_bytes)["totals"]
    if optimizer is None:
        parts = {"parameters": totals["param_bytes"], "gradients": totals["param_bytes"],
                 f"activations of {batch:,}": totals["batch_bytes"]}
    else:
        t = totals["training"]
        parts = {"parameters": t["param_bytes"], "gradients": t["gradient_bytes"],
                 f"{t['optimizer']} state": t["optimizer_state_bytes"],
                 f"activations of {batch:,} and their gradients":
                     t["activation_bytes"] + t["activation_gradient_bytes"]}
    shown = ", ".join(f"{name} {format_bytes(v)}" for name, v in parts.items() if v)
    return sum(parts.values()), shown


def check_network_memory(graph, what: str, *, batch: int, dtype_bytes: int = 4,
                         optimizer: str | None = None, hint: str = "") -> None:
    """:func:`check_memory` for running ``graph`` on batches of ``batch`` (see
    :func:`network_bytes`)."""
    estimate, breakdown = network_bytes(graph, batch=batch, dtype_bytes=dtype_bytes,
                                        optimizer=optimizer)
    check_memory(estimate, what, breakdown=breakdown,
                 hint=hint or "lower the batch, the input size or the number of filters")
