"""The learning rate of every schedule of :mod:`cnncalc.schedules` over ``T`` steps.

Each schedule is built with ``schedules.create(name, lr, warmup=, **kw)`` and evaluated at
``t = 0 .. T-1``, once without and once with linear warm-up. The decay constants are chosen from
``T`` so that the curves are comparable:

* ``step``: ``step_size = T // 3`` (gamma 0.1) — two drops;
* ``exponential``: ``k = ln(100) / T`` — lr falls 100x by t = T;
* ``inverse_time``: ``k = 10 / T`` — lr / 11 at t = T;
* ``cosine``, ``linear``: ``total = T``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from cnncalc.errors import TrainError
from cnncalc.limits import Bound

__all__ = ["ScheduleCurve", "ScheduleLab", "run", "schedule_kwargs"]


@dataclass
class ScheduleCurve:
    name: str
    warmup: int
    config: dict
    lr: list[float]          # lr(t) for t = 0 .. T-1

    @property
    def label(self) -> str:
        return f"{self.name} + warmup {self.warmup}" if self.warmup else self.name


@dataclass
class ScheduleLab:
    lr: float
    steps: int
    warmup: int
    probes: list[int]        # the steps shown in the table
    curves: list[ScheduleCurve]


def schedule_kwargs(name: str, steps: int) -> dict:
    """The decay constants used for ``name`` over ``steps`` steps (see the module docstring)."""
    return {
        "constant": {},
        "step": {"step_size": max(1, steps // 3), "gamma": 0.1},
        "exponential": {"k": math.log(100.0) / steps},
        "inverse_time": {"k": 10.0 / steps},
        "cosine": {"total": steps},
        "linear": {"total": steps},
        "inverse_sqrt": {},
    }[name]


#: every schedule is evaluated (twice: without and with warm-up) at each of the T steps
STEPS = Bound("-T/--steps", 2, 100_000, "every schedule is evaluated at each step")


def run(lr: float = 0.1, steps: int = 100, warmup: int | None = None,
        names=None) -> ScheduleLab:
    """Every schedule (or ``names``) without and with ``warmup`` steps (default ``steps // 10``)."""
    from cnncalc import schedules

    steps = STEPS.check(steps)
    warmup = max(1, steps // 10) if warmup is None else int(warmup)
    if not 0 <= warmup < steps:
        raise TrainError(f"warmup must be in [0, steps); got {warmup}",
                         hint=f"e.g. --warmup {max(1, steps // 10)}")
    names = (list(schedules.SCHEDULES.names()) if names is None
             else [schedules.SCHEDULES.lookup(str(n)).name for n in names])
    curves = []
    for name in names:
        for w in ((0, warmup) if warmup else (0,)):
            kw = schedule_kwargs(name, steps)
            if w and name == "step":
                kw["step_size"] = max(1, (steps - w) // 3)
            sched = schedules.create(name, lr, warmup=w or None, **kw)
            curves.append(ScheduleCurve(name, w, sched.get_config(),
                                        [float(sched(t)) for t in range(steps)]))
    probes = sorted({0, max(warmup - 1, 0), warmup, steps // 4, steps // 2, 3 * steps // 4,
                     steps - 1})
    return ScheduleLab(float(lr), steps, warmup, probes, curves)
