"""Fold each batch norm into the conv or fc layer before it, for inference.

In evaluation mode batch norm is an affine map per channel,
``y = gamma * (z - mean) / sqrt(var + eps) + beta``, with the running statistics. When ``z`` is a
conv/fc output ``z = W x + b``, the two collapse into one layer::

    s  = gamma / sqrt(var + eps)          (one factor per output channel)
    W' = W * s[:, None, ...]              b' = (b - mean) * s + beta

The folded network has no batch-norm layers; its conv/fc layers gain a bias where they had none.
A batch norm is folded only when its input is a conv/fc whose output feeds nothing else. Both
networks run on the engine (eval mode) on the same images and must agree to 1e-5 (relative to
the output's scale). The savings (parameters, MACs, FLOPs, activations) are the difference of
:meth:`Graph.analyze` totals, plus ``bn_multiply_adds``: an eval-mode batch norm costs one
multiply-add per element (scale and shift), which the analyzer counts as 2 FLOPs rather than as
MACs; folding removes them all.

From a spec (no trained statistics) the batch norms get random statistics first (gamma in
[0.5, 1.5], beta ~ N(0, 0.1^2), mean ~ N(0, 0.1^2), var in [0.5, 2], seeded), otherwise the fold
would be nearly the identity and prove little. From a checkpoint the saved values are used.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncalc.labs import data_rng
from cnncalc.limits import Bound, check_network_memory

__all__ = ["BnFoldLab", "FoldedPair", "fold_graph", "fold_state", "run"]

TOL = 1e-5


@dataclass
class FoldedPair:
    batchnorm: str
    into: str
    kind: str               # conv / fc
    channels: int


@dataclass
class BnFoldLab:
    source: str             # spec / checkpoint path or spec name
    from_checkpoint: bool
    dtype: str
    folded: list[FoldedPair]
    not_folded: list[str]   # batch norms without a conv/fc of their own before them
    images: int
    max_abs_diff: float
    max_rel_diff: float     # max |diff| / max |output|
    agree: bool             # max_rel_diff <= 1e-5
    before: dict            # analyze() totals: params, macs, flops, activations
    after: dict
    saved: dict
    notes: list[str] = field(default_factory=list)


def _pairs(graph):
    users: dict[str, list[str]] = {}
    for n in graph.nodes:
        for s in n.inputs:
            users.setdefault(s, []).append(n.name)
    byname = {n.name: n for n in graph.nodes}
    pairs, skipped = [], []
    for n in graph.nodes:
        if n.kind != "batchnorm":
            continue
        src = byname.get(n.inputs[0]) if len(n.inputs) == 1 else None
        if src is not None and src.kind in ("conv", "fc") and users.get(src.name) == [n.name]:
            pairs.append((n, src))
        else:
            skipped.append(n.name)
    return pairs, skipped


def fold_graph(graph):
    """The graph without its foldable batch norms (their conv/fc gain a bias)."""
    from cnncalc.graph import Graph

    pairs, _ = _pairs(graph)
    bn_to_src = {bn.name: src.name for bn, src in pairs}
    srcs = set(bn_to_src.values())
    nodes = []
    for n in graph.nodes:
        if n.name in bn_to_src:
            continue
        layer = n.layer
        if n.name in srcs and not layer.bias:
            layer = copy.copy(layer)
            layer.bias = True
        inputs = [bn_to_src.get(s, s) for s in n.inputs]
        nodes.append(dataclasses.replace(n, layer=layer, inputs=inputs))
    return Graph(name=f"{graph.name} (bn folded)", input_shape=graph.input_shape, nodes=nodes,
                 convention=graph.convention, train=dict(graph.train))


def fold_state(graph, state: dict) -> dict:
    """The folded network's parameters from the original's ``state_dict()``."""
    pairs, _ = _pairs(graph)
    out = {k: np.array(v, dtype=np.float64) for k, v in state.items()}
    for bn, src in pairs:
        b = bn.name
        c = int(out[f"{b}.running_mean"].shape[0])
        gamma = out.pop(f"{b}.weight", np.ones(c))
        beta = out.pop(f"{b}.bias", np.zeros(c))
        mean = out.pop(f"{b}.running_mean")
        var = out.pop(f"{b}.running_var")
        out.pop(f"{b}.num_batches_tracked", None)
        s = gamma / np.sqrt(var + float(bn.layer.eps))
        w = out[f"{src.name}.weight"]
        out[f"{src.name}.weight"] = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        bias = out.get(f"{src.name}.bias", np.zeros(c))
        out[f"{src.name}.bias"] = (bias - mean) * s + beta
    return out


def _totals(graph) -> dict:
    t = graph.analyze()["totals"]
    return {k: int(t[k]) for k in ("params", "trainable_params", "non_trainable_params",
                                   "buffers", "macs", "flops", "activations")}


def _load(source, seed: int, dtype: str):
    from cnncalc.engine import Network

    path = Path(source) if isinstance(source, (str, Path)) and "\n" not in str(source) else None
    if path is not None and path.suffix == ".npz":
        from cnncalc.train.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        net = Network(ck.spec_text, seed=seed, dtype=dtype)
        net.load_state_dict({**ck.params, **(ck.buffers or {})})
        return net, str(path), True
    net = Network(source, seed=seed, dtype=dtype)
    rng = data_rng(seed)
    for n in net.graph.nodes:
        if n.kind != "batchnorm":
            continue
        c = net.buffers[f"{n.name}.running_mean"].shape[0]
        if f"{n.name}.weight" in net.params:
            net.params[f"{n.name}.weight"][...] = rng.uniform(0.5, 1.5, c)
            net.params[f"{n.name}.bias"][...] = rng.normal(0, 0.1, c)
        net.buffers[f"{n.name}.running_mean"][...] = rng.normal(0, 0.1, c)
        net.buffers[f"{n.name}.running_var"][...] = rng.uniform(0.5, 2.0, c)
    name = str(path) if path is not None else net.graph.name
    return net, name, False


#: test images run through the network and its folded copy
IMAGES = Bound("--images", 1, 1024, "each image runs through the network twice")


def run(source, *, images: int = 8, seed: int = 0, dtype: str = "float64") -> BnFoldLab:
    """Fold ``source`` (spec path / YAML text / dict, or a ``.npz`` checkpoint); check; count."""
    from cnncalc.engine import Network
    from cnncalc.labs.equivariance import _images

    IMAGES.check(images)
    net, name, from_ck = _load(source, seed, dtype)
    graph = net.graph
    check_network_memory(graph, f"lab bn-fold on {name}", batch=images,
                         dtype_bytes=np.dtype(dtype).itemsize, hint="use fewer --images")
    pairs, skipped = _pairs(graph)
    notes = []
    if not pairs:
        notes.append("no batch norm directly after a conv/fc layer: nothing to fold")
    folded_graph = fold_graph(graph)
    fnet = Network(folded_graph, seed=seed, dtype=dtype)
    fnet.load_state_dict(fold_state(graph, net.state_dict()))
    x = _images(graph.input_shape, images, seed)
    y = net.forward(x, training=False)
    fy = fnet.forward(x, training=False)
    diff = float(np.max(np.abs(y - fy)))
    rel = diff / max(float(np.max(np.abs(y))), 1e-300)
    before, after = _totals(graph), _totals(folded_graph)
    saved = {k: before[k] - after[k] for k in before}
    # eval-mode batch norm is one multiply-add per element (the analyzer counts it as 2 FLOPs,
    # not as MACs); folding removes exactly these
    saved["bn_multiply_adds"] = int(sum(bn.out_shape.size for bn, _ in pairs))
    return BnFoldLab(name, from_ck, str(dtype),
                     [FoldedPair(bn.name, src.name, src.kind, int(bn.out_shape.c))
                      for bn, src in pairs], skipped, int(images), diff, rel, rel <= TOL,
                     before, after, saved, notes)
