"""Learning-rate schedules: pure callables ``sched(t) -> lr``, with ``t`` counted from 0.

A schedule never touches the optimizer (keras ``LearningRateSchedule`` style): the trainer computes
``lr = sched(step)`` and passes it to ``optimizer.step(..., lr=lr)``. ``t`` is whatever unit the
caller counts (iterations or epochs); the schedule does not care.

The lecture's rules (alpha0 = ``lr``):

* ``constant``: alpha0
* ``step``: alpha0 * gamma ** (t // step_size), or alpha0 * gamma ** #{m in milestones: m <= t}
  (``step_size`` | ``milestones``, ``gamma`` = 0.1)
* ``exponential``: alpha0 * exp(-k t)  (``k``)
* ``inverse_time``: alpha0 / (1 + k t)  (``k``)
* ``cosine``: min_lr + (alpha0 - min_lr) * (1 + cos(pi t / T)) / 2, held at min_lr for t >= T
  (``total`` = T, ``min_lr`` = 0)
* ``linear``: min_lr + (alpha0 - min_lr) * (1 - t / T), held at min_lr for t >= T
  (``total`` = T, ``min_lr`` = 0)
* ``inverse_sqrt``: alpha0 / sqrt(max(t, 1)), so lr(0) = lr(1) = alpha0

**Warm-up** (``warmup=W`` in :func:`create`, or :class:`WithWarmup`) is composed, not a flag: for
``t < W`` the rate rises linearly, ``lr(t) = alpha0 * (t + 1) / W`` (never 0, reaching alpha0 at
``t = W - 1``), and for ``t >= W`` the decay schedule runs on shifted time, ``inner(t - W)``,
so decay starts from alpha0 right after the warm-up (the keras / PyTorch ``SequentialLR`` /
Hugging Face convention).
In :func:`create`, ``total`` and ``milestones`` count from the start of the run, warm-up included
(``cosine`` with ``total=100, warmup=10`` reaches 0 at t = 100; ``step`` with milestones
[30, 60] drops at t = 30 and 60); ``step_size`` is a period and counts from the end of warm-up.

:func:`scale_lr_with_batch` is Goyal et al.'s linear scaling rule.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

from cnncalc.errors import TrainError
from cnncalc.registry import Param, Registry, doc_line, signature_params

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "Exponential",
    "InverseSqrt",
    "InverseTime",
    "Linear",
    "Schedule",
    "Step",
    "WithWarmup",
    "create",
    "get",
    "scale_lr_with_batch",
]


def _num(name: str, value: Any, *, lo: float = 0.0, lo_open: bool = False,
         hi: float = math.inf, hi_open: bool = True, hint: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TrainError(f"{name} must be a number; got {value!r}", hint=hint)
    v = float(value)
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        hi_txt = "inf" if math.isinf(hi) else f"{hi:g}"
        raise TrainError(f"{name} must be in {lb}{lo:g}, {hi_txt}{rb}; got {value}", hint=hint)
    return v


def _int(name: str, value: Any, *, lo: int = 1, hint: str | None = None) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or
                                       (isinstance(value, float) and value.is_integer())):
        if hasattr(value, "__index__"):
            value = int(value.__index__())
        else:
            raise TrainError(f"{name} must be an integer; got {value!r}", hint=hint)
    v = int(value)
    if v < lo:
        raise TrainError(f"{name} must be >= {lo}; got {v}", hint=hint)
    return v


def _t(t: Any) -> int:
    if isinstance(t, bool) or not hasattr(t, "__index__") and not (
            isinstance(t, float) and t.is_integer()):
        raise TrainError(f"schedule step must be an integer; got {t!r}")
    t = int(t)
    if t < 0:
        raise TrainError(f"schedule step must be >= 0; got {t}")
    return t


class Schedule:
    """Base: ``__call__(t) -> float`` (pure) and ``get_config()``."""

    name: ClassVar[str] = ""
    #: one line of help per constructor parameter (subclasses add theirs); the registry pairs
    #: them with the signature's defaults
    param_help: ClassVar[dict[str, str]] = {"lr": "the initial learning rate alpha0"}

    def __init__(self, lr: float):
        self.lr = _num("lr", lr, hint="the initial learning rate alpha0, e.g. 0.1")

    def __call__(self, t: int) -> float:
        return self._at(_t(t))

    def _at(self, t: int) -> float:
        raise NotImplementedError

    def _hyper(self) -> dict[str, Any]:
        return {}

    def get_config(self) -> dict[str, Any]:
        """``{"name", "lr", ...}``; ``create(**get_config())`` rebuilds the schedule."""
        return {"name": self.name, "lr": self.lr, **self._hyper()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """``lr(t) = alpha0``."""

    name = "constant"

    def _at(self, t):
        return self.lr


class Step(Schedule):
    """Step decay: multiply by ``gamma`` every ``step_size`` steps or at each of ``milestones``.

    Notes
    -----
    ``lr(t) = alpha0 * gamma ** (t // step_size)`` or
    ``alpha0 * gamma ** #{m in milestones: m <= t}``
    (ResNet: milestones [30, 60, 90], gamma 0.1, t in epochs). Exactly one of ``step_size`` /
    ``milestones`` must be given. ``gamma`` defaults to 0.1 and must be in (0, 1].
    """

    name = "step"
    param_help = {"step_size": "step decay period", "milestones": "step decay at these t",
                  "gamma": "step decay factor"}

    def __init__(self, lr: float, step_size: int | None = None,
                 milestones: list[int] | None = None, gamma: float = 0.1):
        super().__init__(lr)
        if (step_size is None) == (milestones is None):
            raise TrainError("step schedule needs exactly one of step_size or milestones",
                             hint="e.g. step_size: 10, or milestones: [30, 60, 90]")
        self.gamma = _num("gamma", gamma, lo=0.0, lo_open=True, hi=1.0, hi_open=False,
                          hint="the factor applied at each drop, e.g. 0.1 or 0.5")
        self.step_size = None if step_size is None else _int("step_size", step_size)
        self.milestones: list[int] | None = None
        if milestones is not None:
            if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
                raise TrainError(f"milestones must be a list of steps; got {milestones!r}",
                                 hint="e.g. milestones: [30, 60, 90]")
            ms = [_int("milestone", m, lo=1) for m in milestones]
            if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
                raise TrainError(f"milestones must be strictly increasing; got {ms}",
                                 hint="e.g. milestones: [30, 60, 90]")
            self.milestones = ms

    def _hyper(self):
        if self.milestones is not None:
            return {"milestones": list(self.milestones), "gamma": self.gamma}
        return {"step_size": self.step_size, "gamma": self.gamma}

    def _at(self, t):
        if self.milestones is not None:
            n = sum(1 for m in self.milestones if m <= t)
        else:
            n = t // self.step_size
        return self.lr * self.gamma ** n


class _RateK(Schedule):
    """A decay with one rate ``k >= 0``."""

    param_help = {"k": "a decay rate"}

    def __init__(self, lr: float, k: float):
        super().__init__(lr)
        self.k = _num("k", k, hint="the decay rate, e.g. 0.1")

    def _hyper(self):
        return {"k": self.k}


class Exponential(_RateK):
    """``lr(t) = alpha0 * exp(-k * t)``, ``k >= 0``."""

    name = "exponential"

    def _at(self, t):
        return self.lr * math.exp(-self.k * t)


class InverseTime(_RateK):
    """``lr(t) = alpha0 / (1 + k * t)`` (the lecture's 1/t decay), ``k >= 0``."""

    name = "inverse_time"

    def _at(self, t):
        return self.lr / (1.0 + self.k * t)


class _ToTotal(Schedule):
    param_help = {"total": "T, the length of cosine / linear",
                  "min_lr": "floor of cosine / linear"}

    def __init__(self, lr: float, total: int, min_lr: float = 0.0):
        super().__init__(lr)
        self.total = _int("total", total, hint="T, the number of steps (or epochs) of the run")
        self.min_lr = _num("min_lr", min_lr, hint="the rate at the end, e.g. 0")
        if self.min_lr > self.lr:
            raise TrainError(f"min_lr ({self.min_lr:g}) must not exceed lr ({self.lr:g})")

    def _hyper(self):
        return {"total": self.total, "min_lr": self.min_lr}


class Cosine(_ToTotal):
    """``lr(t) = min_lr + (alpha0 - min_lr) * (1 + cos(pi * t / T)) / 2`` for t <= T, then min_lr.

    With ``min_lr = 0`` (default) it is the lecture's ``1/2 alpha0 (1 + cos(t pi / T))``.
    """

    name = "cosine"

    def _at(self, t):
        if t >= self.total:
            return self.min_lr
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t
                                                                              / self.total))


class Linear(_ToTotal):
    """``lr(t) = min_lr + (alpha0 - min_lr) * (1 - t / T)`` for t <= T, then min_lr."""

    name = "linear"

    def _at(self, t):
        if t >= self.total:
            return self.min_lr
        return self.min_lr + (self.lr - self.min_lr) * (1.0 - t / self.total)


class InverseSqrt(Schedule):
    """``lr(t) = alpha0 / sqrt(max(t, 1))``: the lecture's alpha0/sqrt(t), with t = 0 read as 1."""

    name = "inverse_sqrt"

    def _at(self, t):
        return self.lr / math.sqrt(max(t, 1))


class WithWarmup(Schedule):
    """Linear warm-up over ``warmup`` steps, then ``inner`` on shifted time.

    Notes
    -----
    ``lr(t) = inner(0) * (t + 1) / W`` for ``t < W``; ``inner(t - W)`` for ``t >= W``.
    ``get_config()`` reports the inner schedule's parameters in absolute time (``total`` and
    ``milestones`` plus W) with ``warmup=W``, so ``create(**cfg)`` rebuilds it.
    """

    name = "warmup"

    def __init__(self, inner: Schedule, warmup: int):
        if not isinstance(inner, Schedule):
            raise TrainError(f"warm-up needs a schedule to wrap; got {inner!r}")
        self.inner = inner
        self.lr = inner.lr
        self.warmup = _int("warmup", warmup, hint="the number of warm-up steps, e.g. 5")

    def _at(self, t):
        w = self.warmup
        if t < w:
            return self.inner._at(0) * (t + 1) / w
        return self.inner._at(t - w)

    def get_config(self):
        cfg = self.inner.get_config()
        if "total" in cfg:
            cfg["total"] += self.warmup
        if cfg.get("milestones") is not None:
            cfg["milestones"] = [m + self.warmup for m in cfg["milestones"]]
        cfg["warmup"] = self.warmup
        return cfg


SCHEDULES = Registry("schedule", error=TrainError)

#: ``create``'s own parameter, accepted by every schedule
WARMUP = Param("warmup", 0, "linear warm-up length (0: none)")


def _register(cls: type[Schedule], *aliases: str) -> None:
    SCHEDULES.add(cls.name, cls, aliases=aliases, params=(*signature_params(cls), WARMUP),
                  help=doc_line(cls))


_register(Constant, "none", "fixed")
_register(Step, "multistep")
_register(Exponential, "exp")
_register(InverseTime, "1/t", "inverse")
_register(Cosine, "cos")
_register(Linear)
_register(InverseSqrt, "rsqrt")


def create(name: str, lr: float, *, warmup: int | None = None, **kw: Any) -> Schedule:
    """Build a schedule by name: ``create("cosine", lr=0.1, total=100, warmup=5)``.

    ``total`` and ``milestones`` count from the start of the run, warm-up included (see the module
    docstring). ``warmup=0`` or ``None`` means none.

    Raises
    ------
    TrainError
        Unknown name or argument, a value out of range, or a warm-up that does not fit.
    """
    entry = SCHEDULES.lookup(name)
    key, cls = entry.name, entry.obj
    unknown = [k for k in kw if k not in entry.param_names]
    if unknown:
        raise TrainError(f"unknown argument(s) for schedule {key}: {', '.join(unknown)}",
                         hint=f"{key} accepts: {', '.join(entry.param_names)}")
    missing = [p.name for p in entry.params
               if p.required and p.name != "lr" and kw.get(p.name) is None]
    if missing:
        raise TrainError(f"schedule {key} needs {', '.join(missing)}",
                         hint=f"e.g. {key}: {{lr: 0.1, {missing[0]}: "
                              f"{'100' if missing[0] == 'total' else '0.1'}}}")
    w = 0 if warmup is None else _int("warmup", warmup, lo=0)
    if w:
        if "total" in kw:
            total = _int("total", kw["total"], hint="T, the number of steps of the run")
            if total <= w:
                raise TrainError(f"total ({total}) must be larger than warmup ({w})",
                                 hint="total counts the whole run, warm-up included")
            kw["total"] = total - w
        if kw.get("milestones") is not None:
            ms = list(kw["milestones"])
            if any(_int("milestone", m) <= w for m in ms):
                raise TrainError(f"milestones {ms} must all come after the warm-up ({w} steps)",
                                 hint="milestones count from the start of the run")
            kw["milestones"] = [int(m) - w for m in ms]
        return WithWarmup(cls(lr, **kw), w)
    return cls(lr, **kw)


def get(identifier: str | dict | Schedule, lr: float | None = None) -> Schedule:
    """A schedule from an instance, a ``{"name": ..., "lr": ...}`` dict, or a name plus ``lr``."""
    if isinstance(identifier, Schedule):
        return identifier
    if isinstance(identifier, str):
        if lr is None:
            raise TrainError(f"schedule {identifier!r} needs a learning rate")
        return create(identifier, lr=lr)
    if isinstance(identifier, dict):
        cfg = dict(identifier)
        if "name" not in cfg:
            raise TrainError("schedule config needs a 'name'",
                             hint=f"one of: {', '.join(SCHEDULES.names())}")
        if "lr" not in cfg:
            if lr is None:
                raise TrainError("schedule config needs an 'lr'")
            cfg["lr"] = lr
        return create(cfg.pop("name"), **cfg)
    raise TrainError(f"cannot make a schedule from {identifier!r}",
                     hint="give a name, a dict with 'name', or a Schedule")


def scale_lr_with_batch(lr: float, batch: int, base_batch: int = 256) -> float:
    """Goyal et al.'s linear scaling rule: ``lr * batch / base_batch``.

    >>> scale_lr_with_batch(0.1, 1024)
    0.4
    """
    lr = _num("lr", lr)
    batch = _int("batch", batch)
    base_batch = _int("base_batch", base_batch)
    return lr * batch / base_batch
