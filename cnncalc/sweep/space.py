"""The search space of a sweep: ``--param KEY=RANGE`` parsed into dimensions.

A key is any :class:`~cnncalc.train.settings.TrainSettings` setting (aliases forgiven) and every
value a dimension can produce is checked by that setting's own declared parser, so a sweep
accepts exactly what ``cnncalc train`` accepts. The range forms are one table, :data:`RANGES`:

* ``log:a:b`` — log-uniform in [a, b]: ``exp(U(ln a, ln b))`` (a learning rate's scale matters,
  not its digits); a grid takes ``n`` points equally spaced in ``ln``;
* ``lin:a:b`` — uniform in [a, b]; a grid takes ``n`` equally spaced points;
* ``int:a:b`` — an integer uniform in {a, ..., b}; a grid takes every integer;
* ``v1,v2,...`` — one of the listed values (a single value fixes the setting).

``log:1e-4:1e-1:4`` gives a grid 4 points instead of ``--grid-points``. On an integer setting
(``batch_size=log:16:256``) a sampled number is rounded.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from cnncalc.errors import CnnCalcError
from cnncalc.registry import Param, Registry

__all__ = ["RANGES", "Dimension", "SweepError", "parse_param", "parse_params"]


class SweepError(CnnCalcError):
    """A sweep's parameters, cluster or output folder are wrong."""


def _log_sample(lo: float, hi: float, rng: random.Random) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _log_grid(lo: float, hi: float, n: int) -> list[float]:
    if n == 1:
        return [math.sqrt(lo * hi)]
    step = (math.log(hi) - math.log(lo)) / (n - 1)
    return [math.exp(math.log(lo) + i * step) for i in range(n)]


def _lin_grid(lo: float, hi: float, n: int) -> list[float]:
    if n == 1:
        return [(lo + hi) / 2]
    return [lo + i * (hi - lo) / (n - 1) for i in range(n)]


def _int_grid(lo: int, hi: int, n: int) -> list[int]:
    return list(range(lo, hi + 1))


#: the range forms: entry object ``(sample(lo, hi, rng), grid(lo, hi, n))``; ``bound`` converts
#: the two ends, ``positive`` says whether they must be > 0
RANGES = Registry("range", error=SweepError)
RANGES.add("log", (_log_sample, _log_grid), bound=float, positive=True,
           params=(Param("a", help="low end (> 0)"), Param("b", help="high end")),
           help="log-uniform: exp(U(ln LOW, ln HIGH))")
RANGES.add("lin", (lambda lo, hi, rng: rng.uniform(lo, hi), _lin_grid), bound=float,
           positive=False, params=(Param("a", help="low end"), Param("b", help="high end")),
           help="uniform in [LOW, HIGH]")
RANGES.add("int", (lambda lo, hi, rng: rng.randint(lo, hi), _int_grid), bound=int,
           positive=False, params=(Param("a", help="low end"), Param("b", help="high end")),
           help="an integer uniform in {LOW, ..., HIGH}")


@dataclass(frozen=True)
class Dimension:
    """One swept setting: ``key`` (canonical setting name) and either ``kind`` (a
    :data:`RANGES` name) with ``low``/``high``, or ``kind="choice"`` with ``values``."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()
    grid_points: int | None = None
    text: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind != "choice" or all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    @property
    def log_scale(self) -> bool:
        return self.kind == "log"

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        sample, _ = RANGES.get(self.kind)
        return self._value(sample(self.low, self.high, rng))

    def grid(self, default_points: int) -> list[Any]:
        if self.kind == "choice":
            return list(self.values)
        _, grid = RANGES.get(self.kind)
        points = grid(self.low, self.high, self.grid_points or default_points)
        return list(dict.fromkeys(self._value(v) for v in points))

    def _value(self, v: Any) -> Any:
        """Round to the setting's type and check with its declared parser."""
        from cnncalc.train.settings import setting, value_type

        if value_type(self.key) is int:
            v = int(round(v))
        elif isinstance(v, float):
            v = float(f"{v:.6g}")   # results and command lines stay readable
        return setting(self.key).parse(self.key, v, f"--param {self.text}")


def _number(text: str, kind: str, where: str) -> float:
    convert = RANGES.lookup(kind).extra["bound"]
    try:
        return convert(text)
    except ValueError:
        raise SweepError(f"{kind}: range ends must be {convert.__name__} numbers; received "
                         f"{text!r}", where=where, hint=f"e.g. {kind}:1e-4:1e-1"
                         if kind == "log" else f"e.g. {kind}:1:10") from None


def parse_param(text: str) -> Dimension:
    """``KEY=RANGE`` -> :class:`Dimension` (see the module docstring for the forms).

    Raises
    ------
    SweepError / TrainError
        No ``=``, an unknown key (with the closest one), a bad range, or a value the setting
        refuses.
    """
    from cnncalc.train.settings import normalise_key, setting

    where = f"--param {text}"
    key, eq, rng_text = text.partition("=")
    if not eq or not key.strip() or not rng_text.strip():
        raise SweepError("expected KEY=RANGE", where=where,
                         hint="e.g. --param lr=log:1e-4:1e-1 or --param optimizer=sgd,adam")
    key = normalise_key(key, where)
    rng_text = rng_text.strip()
    head, colon, rest = rng_text.partition(":")
    if colon and RANGES.canonical(head) is not None and "," not in rng_text:
        kind = RANGES.canonical(head)
        parts = rest.split(":")
        if len(parts) not in (2, 3):
            raise SweepError(f"{kind}: expected {kind}:LOW:HIGH[:POINTS]; received "
                             f"{rng_text!r}", where=where)
        lo, hi = (_number(p, kind, where) for p in parts[:2])
        points = None
        if len(parts) == 3:
            points = _number(parts[2], "int", where)
            if points < 1:
                raise SweepError(f"grid points must be >= 1; received {points}", where=where)
        if hi < lo or (RANGES.lookup(kind).extra["positive"] and lo <= 0):
            need = "0 < LOW <= HIGH" if RANGES.lookup(kind).extra["positive"] else "LOW <= HIGH"
            raise SweepError(f"{kind}: needs {need}; received {rng_text!r}", where=where)
        dim = Dimension(key, kind, lo, hi, grid_points=points, text=text)
        for v in (lo, hi):
            dim._value(v)   # the ends must be values the setting takes
        return dim
    parse = setting(key).parse
    values = tuple(dict.fromkeys(parse(key, v.strip(), where) for v in rng_text.split(",")
                                 if v.strip()))
    if not values:
        raise SweepError("no values given", where=where, hint="e.g. optimizer=sgd,momentum")
    return Dimension(key, "choice", values=values, text=text)


def parse_params(texts: list[str]) -> list[Dimension]:
    """Every ``--param``; a setting swept twice is an error."""
    dims: list[Dimension] = []
    for t in texts:
        d = parse_param(t)
        if any(o.key == d.key for o in dims):
            raise SweepError(f"{d.key} is swept twice", where=f"--param {t}",
                             hint="give each setting one --param")
        dims.append(d)
    return dims
