"""How other counting tools would report a network: one table of counting conventions.

"My number doesn't match the paper" is the question FLOP counters get most, because each tool
counts differently. Every entry of :data:`COUNTERS` computes, from cnncalc's per-layer rows
(:func:`cnncalc.analysis.analyze`), the totals that tool prints, and its ``help`` says in one
line what it counts. Rows give, per layer: ``type``, ``params``, ``biases``, ``macs`` and the
input/output volumes.

=========  ==================================================================================
cnncalc    params = learnable tensors; MACs = multiply-adds of learned weights, per example
torchinfo  Total mult-adds = batch · Σ (conv: params·H2·W2, i.e. MACs plus one per bias per
           output; every other layer with parameters: its parameter count)
fvcore     flops = batch · MACs of conv and linear layers (one "flop" per multiply-add, no bias)
ptflops    MACs + one per bias output + batchnorm 1 per element (2 with γ, β) + activations 1
           per element + pools 1 per input element, per example ("GMac")
thop       MACs of conv and linear layers without bias + batchnorm 2 per element, per batch
=========  ==================================================================================

These follow each tool's documented rules; papers mix GMACs and GFLOPs (1 MAC = 2 FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass

from cnncalc.errors import SpecError
from cnncalc.registry import Registry

#: layer kinds ptflops gives one operation per output element
_ELEMENTWISE = frozenset({"relu", "relu6", "leaky_relu", "prelu", "elu", "sigmoid", "tanh",
                          "hardswish", "hardsigmoid", "swish", "mish"})
_POOLS = frozenset({"maxpool", "avgpool", "adaptive_avgpool", "global_avgpool"})


def _size(volume: dict) -> int:
    return volume["width"] * volume["height"] * volume["depth"]


def _spatial(volume: dict) -> int:
    return volume["width"] * volume["height"]


@dataclass(frozen=True)
class Counted:
    """What a tool prints: its parameter figure, its operation count and that count's name."""

    params: int
    ops: int
    ops_name: str          # e.g. "Total mult-adds", "flops", "GMac"
    per_batch: bool        # whether ``ops`` is for the whole batch


def _cnncalc(report, batch):
    return Counted(report["totals"]["params"], report["totals"]["macs"], "MACs", False)


def _torchinfo(report, batch):
    ops = sum(r["params"] * (_spatial(r["output"]) if r["type"] == "conv" else 1)
              for r in report["layers"])
    return Counted(report["totals"]["params"], batch * ops, "Total mult-adds", True)


def _fvcore(report, batch):
    ops = sum(r["macs"] for r in report["layers"] if r["type"] in ("conv", "fc"))
    return Counted(report["totals"]["params"], batch * ops, "flops", True)


def _ptflops(report, batch):
    ops = 0
    for r in report["layers"]:
        kind, out = r["type"], _size(r["output"])
        if kind in ("conv", "fc", "maxout"):
            ops += r["macs"] + r["biases"] * (_spatial(r["output"]) if kind == "conv" else 1)
        elif kind == "batchnorm":
            ops += out * (2 if r["params"] else 1)
        elif kind in _ELEMENTWISE:
            ops += out
        elif kind in _POOLS:
            ops += _size(r["input"])
    return Counted(report["totals"]["trainable_params"], ops, "MACs", False)


def _thop(report, batch):
    ops = sum(r["macs"] for r in report["layers"] if r["type"] in ("conv", "fc"))
    ops += sum(2 * _size(r["output"]) for r in report["layers"]
               if r["type"] == "batchnorm" and r["params"])
    return Counted(report["totals"]["params"], batch * ops, "MACs", True)


COUNTERS = Registry("counting convention", error=SpecError)
COUNTERS.add("cnncalc", _cnncalc, help="params = learnable tensors (no buffers); MACs = "
             "multiply-adds of learned weights only, per example")
COUNTERS.add("torchinfo", _torchinfo, help="Total mult-adds: a conv's parameters (bias too) "
             "times its output positions, other layers' parameter counts; times the batch")
COUNTERS.add("fvcore", _fvcore, help="one 'flop' per multiply-add of conv and linear layers "
             "(the paper's GMACs), no bias; times the batch")
COUNTERS.add("ptflops", _ptflops, help="MACs plus bias adds, batchnorm, activations (1 per "
             "element) and pools (1 per input element), per example; params = trainable")
COUNTERS.add("thop", _thop, help="multiply-adds of conv and linear layers without the bias, "
             "plus batchnorm 2 per element; times the batch")


def count_like(report: dict, tool: str, batch: int = 1) -> Counted:
    """The totals ``tool`` would print for the analysed network (``batch`` inputs)."""
    return COUNTERS.lookup(tool).obj(report, batch)


def other_tools(report: dict, batch: int = 1) -> dict[str, Counted]:
    """Every other tool's totals whose figures differ from cnncalc's."""
    ours = count_like(report, "cnncalc", batch)
    return {e.name: c for e in COUNTERS if e.name != "cnncalc"
            for c in [e.obj(report, batch)]
            if (c.params, c.ops) != (ours.params, ours.ops * (batch if c.per_batch else 1))}
