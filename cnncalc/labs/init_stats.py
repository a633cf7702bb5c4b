"""The lecture's weight-initialisation experiment, run by the engine.

1000 unit-Gaussian inputs of 500 dimensions go through 10 fully connected layers of 500 units
(no bias) with ``tanh`` or ``relu``; for each layer we report the mean and std of its activations
(the lecture's "hidden layer 1 had mean ... and std ..." table), a histogram, and after one
backward pass the scale of the gradients.

How the engine is used: the whole 10-layer spec (a dict) is built by :class:`cnncalc.Network`,
which initialises every weight with the chosen scheme. ``Network.forward`` returns only the last
output, so to *see* every layer the same weights are also loaded into one small Network per
layer (``fc`` + nonlinearity) and those are chained, forward and backward: exactly the same
arithmetic, on the same kernels.

The backward pass uses a fixed random upstream gradient ``dL/dout = r / N`` with ``r`` unit
Gaussian (the loss ``L = sum(out * r) / N``), so every layer's gradient is well defined.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.labs import data_rng
from cnncalc.limits import Bound, check_memory

__all__ = ["INITS", "NONLINEARITIES", "InitStats", "LayerStats", "init_spec", "run"]

INITS = ("0.01", "1.0", "xavier", "he", "zeros")
NONLINEARITIES = ("tanh", "relu")
_INIT_SPEC = {"0.01": "normal:0.01", "1.0": "normal:1.0"}


@dataclass
class LayerStats:
    """Statistics of one layer's activations and gradients (layer 0 is the input)."""

    layer: int
    name: str
    mean: float
    std: float
    saturated: float            # fraction of |h| > 0.99 (tanh) / of h == 0 (relu)
    grad_w_std: float | None    # std of dL/dW of this layer's weights
    grad_h_std: float | None    # std of dL/dh, the gradient reaching this layer's output
    unit_grad_spread: float | None  # max over units of |dW[unit] - mean over units|
    hist_counts: list[int] = field(default_factory=list)
    hist_edges: list[float] = field(default_factory=list)


@dataclass
class InitStats:
    init: str
    init_spec: str
    nonlinearity: str
    n: int
    width: int
    depth: int
    seed: int
    layers: list[LayerStats]
    symmetric: bool                 # every unit of every layer got the same gradient
    notes: list[str] = field(default_factory=list)


#: layers of the experiment: each is a network of its own and a pass forward and back
DEPTH = Bound("--depth", 1, 1000, "each layer is a network of its own, run forward and back")
#: inputs and units per layer; their product (times the depth) is also held to the memory budget
N = Bound("--n", 1, 10_000_000, "every layer keeps n x width activations")
WIDTH = Bound("--width", 1, 100_000, "every layer holds width x width weights")


def init_spec(init: str) -> str:
    """The lecture's names ("0.01", "1.0") as :mod:`cnncalc.engine.init` specs."""
    return _INIT_SPEC.get(str(init).strip(), str(init).strip())


def _spec(width: int, depth: int, nonlin: str) -> dict:
    return {"name": "init_stats",
            "input": {"width": 1, "height": 1, "channels": width},
            "layers": [{"fc": {"units": width, "bias": False}}, nonlin] * depth}


def run(init: str = "xavier", nonlinearity: str = "tanh", *, n: int = 1000, width: int = 500,
        depth: int = 10, seed: int = 0, bins: int = 40, dtype: str = "float64", check: bool = False) -> InitStats:
    """Run the experiment; returns per-layer statistics (layer 0 = the input).

    ``check=True`` also runs the whole 10-layer network and verifies that its output equals the
    chained per-layer networks' (costs one more forward pass).
    """
    from cnncalc.engine import Network

    nonlin = str(nonlinearity).strip().lower()
    if nonlin not in NONLINEARITIES:
        raise TrainError(f"nonlinearity must be one of {', '.join(NONLINEARITIES)}; got "
                         f"{nonlinearity!r}")
    N.check(n)
    WIDTH.check(width)
    DEPTH.check(depth)
    # float64: every layer keeps its n x width activations and their gradients, and its
    # width x width weights twice (the whole network and the layer's own probe) plus gradients
    activations, weights = 2 * (depth + 1) * n * width * 8, 3 * depth * width * width * 8
    check_memory(activations + weights, "lab init-stats",
                 breakdown=f"{depth + 1} x {n:,} x {width:,} activations and gradients, "
                           f"{depth} x {width:,}^2 weights",
                 hint="use a smaller --n, --width or --depth")
    spec = init_spec(init)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = Network(_spec(width, depth, nonlin), init=spec, seed=seed, dtype=dtype)
    notes += sorted({str(w.message) for w in caught})
    fcs = [nd.name for nd in net.graph.nodes if nd.kind == "fc"]
    layer_spec = _spec(width, 1, nonlin)
    probes = []
    for name in fcs:
        p = Network(layer_spec, init="xavier", seed=seed, dtype=dtype)
        (pkey,) = [k for k in p.params]
        p.load_state_dict({pkey: net.params[f"{name}.weight"]})
        probes.append((p, pkey))

    rng = data_rng(seed)  # not the Network's stream: its weights come from default_rng(seed)
    x = rng.standard_normal((n, width))
    hs = [x]
    h = x
    for p, _ in probes:
        h = p.forward(h.reshape(n, width, 1, 1), training=True)
        hs.append(h)
    if check:
        out = net.forward(x.reshape(n, width, 1, 1), training=True)
        if not np.allclose(out, hs[-1], rtol=1e-6, atol=1e-300):
            raise TrainError("the layer-by-layer networks disagree with the whole network",
                             hint="this is a bug in cnncalc's engine; please report it")
    r = rng.standard_normal(hs[-1].shape) / n
    dh = [None] * (depth + 1)
    gw = [None] * (depth + 1)
    d = r
    dh[depth] = d
    for i in range(depth, 0, -1):
        p, key = probes[i - 1]
        d = p.backward(d.reshape(n, width, 1, 1) if d.ndim != 2 else d, need_dx=True)
        d = d.reshape(n, width)
        gw[i] = p.grads[key].copy()
        dh[i - 1] = d

    layers = []
    finite_all = np.concatenate([a.ravel() for a in hs[1:]])
    finite_all = finite_all[np.isfinite(finite_all)]
    lo, hi = (-1.0, 1.0) if nonlin == "tanh" else (0.0, max(float(np.max(finite_all, initial=0)),
                                                           1e-12))
    symmetric = True
    for i, a in enumerate(hs):
        counts, edges = np.histogram(a, bins=bins, range=(lo, hi) if i else None)
        sat = float(np.mean(np.abs(a) > 0.99)) if nonlin == "tanh" else float(np.mean(a == 0))
        spread = None
        if gw[i] is not None:
            g = gw[i].reshape(width, -1)
            spread = float(np.max(np.abs(g - g.mean(axis=0, keepdims=True))))
            scale = float(np.max(np.abs(g)))
            if spread > 1e-12 * max(scale, 1e-300) and spread > 0:
                symmetric = False
        layers.append(LayerStats(
            layer=i, name="input" if i == 0 else fcs[i - 1], mean=float(a.mean()),
            std=float(a.std()), saturated=0.0 if i == 0 else sat,
            grad_w_std=None if gw[i] is None else float(gw[i].std()),
            grad_h_std=float(np.asarray(dh[i]).std()),
            unit_grad_spread=spread,
            hist_counts=[int(c) for c in counts], hist_edges=[float(e) for e in edges]))
    if symmetric:
        notes.append("every unit of each layer received the same gradient: no symmetry breaking")
    return InitStats(init=str(init), init_spec=spec, nonlinearity=nonlin, n=n, width=width,
                     depth=depth, seed=seed, layers=layers, symmetric=symmetric, notes=notes)
