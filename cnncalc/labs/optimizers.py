"""Optimizer trajectories on 2-D test functions (the lecture's SGD problems).

Every update is :mod:`cnncalc.optim`'s (``create(name, lr=...)`` then
``opt.step({"xy": p}, {"xy": g})``); this module only supplies the functions and their gradients.

Functions (``f*`` is the minimum value):

* ``ravine`` — ill-conditioned quadratic ``f = (x**2 + kappa * y**2) / 2``: Hessian eigenvalues 1
  and ``kappa`` (the condition number), minimum 0 at the origin. "Very slow progress along the
  shallow dimension, jitter along the steep one."
* ``saddle`` — ``f = x**2 / 2 + y**4 / 4 - y**2 / 2``: a saddle point at the origin (zero
  gradient), minima ``-1/4`` at ``(0, +-1)``. The start sits next to the saddle.
* ``rosenbrock`` — ``f = (1 - x)**2 + 100 (y - x**2)**2``, minimum 0 at (1, 1) at the bottom of a
  curved valley.

``noise`` adds ``noise * N(0, I)`` to every gradient (the minibatch effect); the noise sequence is
the same for every optimizer (one ``seed``). Progress is ``f - f*``; "steps to tol" is the first
step after which ``f - f* <= tol``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.limits import Bound
from cnncalc.optim import OPTIMIZERS as _REGISTRY

__all__ = ["FUNCTIONS", "OPTIMIZERS", "OptimizerLab", "TestFunction", "Trajectory", "run"]

#: every registered optimizer but adamw, which on these unregularised functions is adam
OPTIMIZERS = tuple(name for name in _REGISTRY.names() if name != "adamw")


@dataclass(frozen=True)
class TestFunction:
    name: str
    start: tuple[float, float]
    box: tuple[float, float, float, float]       # xmin, xmax, ymin, ymax for the contour plot
    minimum: float
    argmin: tuple[tuple[float, float], ...]
    tol: float
    steps: int
    lrs: dict                                     # default learning rate per optimizer
    kappa: float = 1.0

    def f(self, p):
        x, y = p[0], p[1]
        if self.name == "ravine":
            return 0.5 * (x * x + self.kappa * y * y)
        if self.name == "saddle":
            return 0.5 * x * x + 0.25 * y ** 4 - 0.5 * y * y
        return (1 - x) ** 2 + 100.0 * (y - x * x) ** 2

    def grad(self, p):
        x, y = float(p[0]), float(p[1])
        if self.name == "ravine":
            return np.array([x, self.kappa * y])
        if self.name == "saddle":
            return np.array([x, y ** 3 - y])
        return np.array([-2 * (1 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


def _ravine(kappa: float) -> TestFunction:
    # sgd: 1.8/kappa, just under the 2/kappa stability limit of the steep direction (it jitters
    # there); momentum/nesterov (rho 0.9): 1/kappa, well inside their limit 3.8/kappa.
    s = 1.0 / kappa
    return TestFunction(
        "ravine", start=(-8.0, 1.0), box=(-9.0, 3.0, -1.6, 1.6), minimum=0.0,
        argmin=((0.0, 0.0),), tol=1e-4, steps=300, kappa=kappa,
        lrs={"sgd": 1.8 * s, "momentum": s, "nesterov": s,
             "adagrad": 1.0, "rmsprop": 0.1, "adam": 0.5})


FUNCTIONS = {
    "ravine": _ravine,
    "saddle": lambda kappa=None: TestFunction(
        "saddle", start=(-1.5, 1e-3), box=(-1.8, 1.8, -1.5, 1.5), minimum=-0.25,
        argmin=((0.0, 1.0), (0.0, -1.0)), tol=1e-4, steps=300,
        lrs={"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.5, "rmsprop": 0.05,
             "adam": 0.1}),
    "rosenbrock": lambda kappa=None: TestFunction(
        "rosenbrock", start=(-1.2, 1.0), box=(-2.0, 2.0, -1.0, 3.0), minimum=0.0,
        argmin=((1.0, 1.0),), tol=1e-3, steps=3000,
        lrs={"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 1.0, "rmsprop": 1e-3,
             "adam": 0.05}),
}


@dataclass
class Trajectory:
    optimizer: str
    lr: float
    steps_to_tol: int | None     # None: never reached the tolerance within the budget
    final_loss: float            # f - f* at the end
    final_point: list[float]
    diverged: bool
    path: list[list[float]] = field(default_factory=list, repr=False)


@dataclass
class OptimizerLab:
    function: str
    kappa: float | None
    start: list[float]
    tol: float
    steps: int
    noise: float
    seed: int
    minimum: float
    box: list[float]
    argmin: list[list[float]]
    runs: list[Trajectory]

    def best(self) -> str | None:
        done = [r for r in self.runs if r.steps_to_tol is not None]
        return min(done, key=lambda r: r.steps_to_tol).optimizer if done else None


def get_function(name: str, kappa: float = 50.0) -> TestFunction:
    key = str(name).strip().lower()
    if key not in FUNCTIONS:
        raise TrainError(f"unknown test function {name!r}", hint=f"one of: {', '.join(FUNCTIONS)}")
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa >= 1):
        raise TrainError(f"condition number must be >= 1; got {kappa!r}")
    return FUNCTIONS[key](float(kappa))


def trajectory(fn: TestFunction, name: str, lr: float, *, steps: int, tol: float, noise: float,
               seed: int, start=None) -> Trajectory:
    from cnncalc import optim

    opt = optim.create(name, lr=lr)
    p = np.array(start if start is not None else fn.start, dtype=np.float64)
    params = {"xy": p}
    rng = np.random.default_rng(seed)
    path = [p.tolist()]
    hit = 0 if fn.f(p) - fn.minimum <= tol else None
    diverged = False
    for t in range(1, steps + 1):
        g = fn.grad(p)
        if noise:
            g = g + noise * rng.standard_normal(2)
        opt.step(params, {"xy": g})
        path.append(p.tolist())
        gap = fn.f(p) - fn.minimum
        if not np.all(np.isfinite(p)) or not math.isfinite(gap) or np.max(np.abs(p)) > 1e6:
            diverged = True
            break
        if hit is None and gap <= tol:
            hit = t
    gap = float(fn.f(p) - fn.minimum) if not diverged else math.inf
    return Trajectory(name, float(lr), hit, gap, [float(v) for v in p], diverged, path)


#: each optimizer takes one Python-level step per iteration and keeps its whole path
STEPS = Bound("--steps", 1, 100_000, "each optimizer takes one step per iteration and "
              "keeps its path")


def run(function: str = "ravine", optimizers=OPTIMIZERS, *, kappa: float = 50.0,
        noise: float = 0.0, steps: int | None = None, tol: float | None = None,
        lrs: dict | None = None, seed: int = 0, start=None) -> OptimizerLab:
    """Run each optimizer from the same start; ``lrs`` overrides the default rates by name."""
    fn = get_function(function, kappa)
    steps = fn.steps if steps is None else int(steps)
    tol = fn.tol if tol is None else float(tol)
    STEPS.check(steps)
    if not tol > 0:
        raise TrainError(f"tol must be > 0; got {tol}")
    if noise < 0:
        raise TrainError(f"noise must be >= 0; got {noise}")
    lrs = {_REGISTRY.canonical(k) or k: v for k, v in (lrs or {}).items()}
    unknown = [k for k in lrs if k not in OPTIMIZERS]
    names = [_REGISTRY.canonical(o) or str(o) for o in optimizers]
    bad = [o for o in names if o not in OPTIMIZERS] + unknown
    if bad:
        raise TrainError(f"unknown optimizer(s): {', '.join(bad)}",
                         hint=f"one of: {', '.join(OPTIMIZERS)}")
    if start is not None and len(start) != 2:
        raise TrainError(f"start must be two numbers x, y; got {start!r}")
    runs = [trajectory(fn, o, lrs.get(o, fn.lrs[o]), steps=steps, tol=tol, noise=noise,
                       seed=seed, start=start) for o in names]
    return OptimizerLab(fn.name, fn.kappa if fn.name == "ravine" else None,
                        list(start if start is not None else fn.start), tol, steps,
                        float(noise), seed, fn.minimum, list(fn.box),
                        [list(a) for a in fn.argmin], runs)
