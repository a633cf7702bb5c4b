"""Activation functions: curves, derivatives, properties, and dead ReLUs.

The curves and derivatives come from the kernels the engine runs
(:mod:`cnncalc.kernels.activation`: ``*_forward`` and ``*_backward`` with ``dy = 1``). The
properties are measured on those curves, not typed in:

* output range — the values at x = -1e4 and +1e4 (reported as +-inf beyond 1e3);
* zero-centred — the mean output for unit-Gaussian input (|mean| < 0.05: yes, < 0.2: nearly);
* saturates — on which side the derivative tends to 0 (|f'(+-20)| < 1e-3);
* gradient dies — the part of [-20, 20] where |f'(x)| < 1e-3;
* relative cost — forward + backward time on 2**20 float32 values, relative to ReLU (measured on
  this machine, so it varies from run to run).

The dead-ReLU experiment runs a fully connected layer + ReLU on the engine and counts the units
that output 0 for every example of the batch (their gradient is 0 for all of them: they never
learn again).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.labs import data_rng

__all__ = ["ACTIVATIONS", "ActivationLab", "ActivationProps", "DeadReluRow", "curves",
           "dead_relus", "properties", "run"]

# name -> (forward(x), derivative(x) via the backward kernel)


def _table():
    from cnncalc.kernels import activation as K

    one = np.ones_like
    return {
        "sigmoid": (K.sigmoid_forward, lambda x: K.sigmoid_backward(one(x), K.sigmoid_forward(x))),
        "tanh": (K.tanh_forward, lambda x: K.tanh_backward(one(x), K.tanh_forward(x))),
        "relu": (K.relu_forward, lambda x: K.relu_backward(one(x), x)),
        "leaky_relu": (lambda x: K.leaky_relu_forward(x, 0.01),
                       lambda x: K.leaky_relu_backward(one(x), x, 0.01)),
        "prelu": (lambda x: K.prelu_forward(x, np.array([0.25], x.dtype)),
                  lambda x: K.prelu_backward(one(x), x, np.array([0.25], x.dtype))[0]),
        "elu": (lambda x: K.elu_forward(x, 1.0), lambda x: K.elu_backward(one(x), x, 1.0)),
        "swish": (K.swish_forward, lambda x: K.swish_backward(one(x), x)),
        "mish": (K.mish_forward, lambda x: K.mish_backward(one(x), x)),
    }


ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "swish", "mish")
_NOTES = {"leaky_relu": "slope 0.01", "prelu": "alpha 0.25 (its initial value)",
          "elu": "alpha 1"}


@dataclass
class ActivationProps:
    name: str
    note: str
    output_range: tuple[float, float]
    mean_output: float          # for unit-Gaussian input
    zero_centred: str           # yes / nearly / no
    saturates: str              # both sides / negative side / positive side / no
    gradient_dies: str          # where |f'| < 1e-3
    relative_cost: float | None  # forward + backward time / ReLU's


@dataclass
class DeadReluRow:
    scenario: str
    init: str
    bias: float
    inputs: str
    dead_fraction: float        # units with zero output for every example
    zero_fraction: float        # zero outputs over all (example, unit) pairs


@dataclass
class ActivationLab:
    x: list[float] = field(repr=False)
    curves: dict = field(repr=False)           # name -> {"y": [...], "dy": [...]}
    properties: list[ActivationProps] = field(default_factory=list)
    dead: list[DeadReluRow] = field(default_factory=list)


def curves(lo: float = -5.0, hi: float = 5.0, points: int = 201, names=ACTIVATIONS):
    """``(x, {name: {"y": f(x), "dy": f'(x)}})`` on a grid."""
    if not hi > lo or points < 2:
        raise TrainError(f"need lo < hi and >= 2 points; got [{lo}, {hi}] with {points}")
    fns = _table()
    x = np.linspace(lo, hi, int(points))
    out = {}
    for n in names:
        if n not in fns:
            raise TrainError(f"unknown activation {n!r}", hint=f"one of: {', '.join(fns)}")
        f, df = fns[n]
        out[n] = {"y": np.asarray(f(x.copy()), float).tolist(),
                  "dy": np.asarray(df(x.copy()), float).tolist()}
    return x.tolist(), out


def _fmt_bound(v: float) -> float:
    return float(np.sign(v) * np.inf) if abs(v) > 1e3 else float(round(v, 6))


def _dies(x: np.ndarray, d: np.ndarray, thr: float = 1e-3) -> str:
    """The regions, connected to either end of the grid, where |f'| < thr."""
    small = np.abs(d) < thr
    if small.all():
        return "everywhere"
    left = int(np.argmin(small)) if small[0] else 0            # first index that is not small
    right = len(x) - int(np.argmin(small[::-1])) if small[-1] else len(x)
    lo = x[left - 1] if left else None                        # small for x <= lo
    hi = x[right] if right < len(x) else None                 # small for x >= hi
    if lo is None and hi is None:
        return "never"
    if lo is not None and hi is not None:
        if abs(lo + hi) < 0.05:
            return f"|x| > {hi:.1f}"
        return f"x < {lo:.1f} or x > {hi:.1f}"
    if lo is not None:
        return "x < 0" if abs(lo) < 0.05 else f"x < {lo:.1f}"
    return f"x > {hi:.1f}"


def _cost(f, df, n: int = 1 << 20, repeat: int = 3) -> float:
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    f(x[:16].copy())
    df(x[:16].copy())
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        f(x)
        df(x)
        best = min(best, time.perf_counter() - t)
    return best


def properties(names=ACTIVATIONS, measure_cost: bool = True) -> list[ActivationProps]:
    fns = _table()
    rng = np.random.default_rng(0)
    g = rng.standard_normal(100_000)
    x = np.linspace(-20, 20, 4000)  # an even count: 0 (where ReLU's derivative jumps) is skipped
    ref = _cost(*fns["relu"]) if measure_cost else None
    rows = []
    for n in names:
        f, df = fns[n]
        ends = f(np.array([-1e4, 1e4]))
        ys = np.asarray(f(x.copy()), float)
        ends = (min(float(ends[0]), float(ys.min())) + 0.0, max(float(ends[1]), float(ys.max())))
        mean = float(np.mean(f(g.copy())))
        d = np.asarray(df(x.copy()), float)
        left, right = abs(d[0]) < 1e-3, abs(d[-1]) < 1e-3
        sat = {(True, True): "both sides", (True, False): "negative side",
               (False, True): "positive side", (False, False): "no"}[(left, right)]
        zc = "yes" if abs(mean) < 0.05 else "nearly" if abs(mean) < 0.2 else "no"
        cost = _cost(f, df) / ref if measure_cost else None
        rows.append(ActivationProps(n, _NOTES.get(n, ""), (_fmt_bound(ends[0]), _fmt_bound(ends[1])),
                                    mean, zc, sat, _dies(x, d), cost))
    return rows


def dead_relus(*, units: int = 500, fan_in: int = 500, n: int = 1000, seed: int = 0,
               extra: list[tuple[str, float, str]] | None = None) -> list[DeadReluRow]:
    """Fraction of dead ReLUs of one ``fc + relu`` layer, run by the engine, per scenario.

    A scenario is ``(init, bias, inputs)`` with inputs ``"centred"`` (unit Gaussian) or
    ``"positive"`` (uniform in [0, 1], like raw pixels); ``extra`` adds scenarios.
    """
    from cnncalc.engine import Network

    scenarios = [
        ("good init, no bias", "he", 0.0, "centred"),
        ("good init, bias -1", "he", -1.0, "centred"),
        ("large negative bias", "he", -10.0, "centred"),
        ("bad init: std 0.01 (same bias -1)", "normal:0.01", -1.0, "centred"),
        ("inputs not centred (raw pixels)", "he", 0.0, "positive"),
    ]
    for init, bias, inputs in extra or []:
        scenarios.append(("custom", init, float(bias), inputs))
    spec = {"name": "dead_relu", "input": {"width": 1, "height": 1, "channels": fan_in},
            "layers": [{"fc": {"units": units}}, "relu"]}
    rows = []
    for label, init, bias, inputs in scenarios:
        if inputs not in ("centred", "positive"):
            raise TrainError(f"inputs must be 'centred' or 'positive'; got {inputs!r}")
        rng = data_rng(seed)
        x = rng.standard_normal((n, fan_in)) if inputs == "centred" else rng.uniform(0, 1, (n, fan_in))
        net = Network(spec, init=init, seed=seed, dtype="float64")
        (bkey,) = [k for k in net.params if k.endswith(".bias")]
        net.params[bkey][...] = bias
        y = net.forward(x.reshape(n, fan_in, 1, 1), training=False)
        rows.append(DeadReluRow(label, init, bias, inputs, float(np.mean(np.all(y <= 0, axis=0))),
                                float(np.mean(y <= 0))))
    return rows


def run(lo: float = -5.0, hi: float = 5.0, points: int = 201, *, measure_cost: bool = True,
        extra_dead: list[tuple[str, float, str]] | None = None, seed: int = 0) -> ActivationLab:
    x, cv = curves(lo, hi, points)
    return ActivationLab(x, cv, properties(measure_cost=measure_cost),
                         dead_relus(seed=seed, extra=extra_dead))
