"""How other counting tools would report a network: one table of counting conventions.

"My number doesn't match the paper" is the question FLOP counters get most, because each tool
counts differently. Every entry of :data:`COUNTERS` computes, from cnncalc's per-layer rows
(:func:`cnncalc.analysis.analyze`), the totals that tool prints for the same network written
as torchvision writes its models (one ``nn`` module per layer; residual adds, concatenation
and ``torch.flatten`` as tensor expressions). Its ``help`` says in one line what it counts,
its ``rule`` gives the per-layer rule in full (README's table is :func:`counters_table`), and
``version`` names the release whose real output the tests pin the rule against.

Rows give, per layer: ``type``, ``params``, ``biases``, ``macs``, ``flops`` and the
input/output volumes. Papers mix GMACs and GFLOPs (1 MAC = 2 FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass

from cnncalc.errors import SpecError
from cnncalc.registry import Registry

#: ptflops hooks these modules (1 per output element) and also patches the ``torch.nn.
#: functional`` call that the module makes (1 more per input element): 2 per element
_PTFLOPS_TWICE = frozenset({"relu", "elu", "prelu"})
#: hooked modules whose functional call ptflops does not patch (ReLU6 calls F.hardtanh)
_PTFLOPS_ONCE = frozenset({"relu6", "leaky_relu"})
#: modules ptflops does not hook whose functional call it patches (F.silu, F.softmax)
_PTFLOPS_FUNCTIONAL = frozenset({"swish", "softmax"})
_POOLS = frozenset({"maxpool", "avgpool", "adaptive_avgpool", "global_avgpool"})
_ADAPTIVE = frozenset({"adaptive_avgpool", "global_avgpool"})   # both nn.AdaptiveAvgPool2d


def _size(volume: dict) -> int:
    return volume["width"] * volume["height"] * volume["depth"]


def _spatial(volume: dict) -> int:
    return volume["width"] * volume["height"]


def _lrn_window(row: dict) -> int:
    """n, the channels in an LRN window, from the row's FLOPs (analysis: 2n + 3 per element)."""
    return (row["flops"] // _size(row["output"]) - 3) // 2


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
    # LayerInfo.calculate_macs: a conv's weight and bias times the output positions; any other
    # module's parameters once per example
    ops = sum(r["params"] * (_spatial(r["output"]) if r["type"] == "conv" else 1)
              for r in report["layers"])
    return Counted(report["totals"]["params"], batch * ops, "Total mult-adds", True)


def _fvcore(report, batch):
    # FlopCountAnalysis' default handles, model in eval mode; every other op (relu, pools,
    # add, cat, LRN's tensor arithmetic) is skipped
    ops = 0
    for r in report["layers"]:
        kind = r["type"]
        if kind in ("conv", "fc"):
            ops += r["macs"]
        elif kind == "batchnorm":
            ops += _size(r["input"]) * (2 if r["params"] else 1)
        elif kind in _ADAPTIVE:
            ops += _size(r["input"])
    return Counted(report["totals"]["params"], batch * ops, "flops", True)


def _ptflops(report, batch):
    # the default (pytorch) backend at its batch of 1: module hooks plus patched functionals
    ops = 0
    for r in report["layers"]:
        kind, inp, out = r["type"], _size(r["input"]), _size(r["output"])
        if kind in ("conv", "fc", "maxout"):
            ops += r["macs"] + r["biases"] * (_spatial(r["output"]) if kind == "conv" else 1)
        elif kind == "batchnorm":
            ops += inp * (2 if r["params"] else 1)
        elif kind in _PTFLOPS_TWICE:
            ops += out + inp        # the hook counts the output, the functional the input
        elif kind in _POOLS:
            ops += 2 * inp          # both count the input
        elif kind in _PTFLOPS_ONCE:
            ops += out
        elif kind in _PTFLOPS_FUNCTIONAL:
            ops += inp
        elif kind == "lrn":
            # F.local_response_norm's x·x, ·α and +k (1 each per element), and its average
            # pool over the channel-padded squares: (C + n − 1)·H·W inputs
            padded = (r["input"]["depth"] + _lrn_window(r) - 1) * _spatial(r["input"])
            ops += 3 * inp + padded
    return Counted(report["totals"]["trainable_params"], ops, "MACs", False)


def _thop(report, batch):
    # thop.profile's module hooks; each hook truncates its batch total to an integer
    ops = 0
    for r in report["layers"]:
        kind, out = r["type"], batch * _size(r["output"])
        if kind in ("conv", "fc"):
            ops += batch * r["macs"]
        elif kind == "batchnorm":
            ops += batch * _size(r["input"]) * (4 if r["params"] else 2)
        elif kind == "avgpool":
            ops += out
        elif kind in _ADAPTIVE:
            window = ((r["input"]["height"] / r["output"]["height"])
                      * (r["input"]["width"] / r["output"]["width"]))
            ops += int((window + 1) * out)
        elif kind == "prelu":
            ops += out
        elif kind == "softmax":
            depth = r["output"]["depth"]
            ops += out // depth * (3 * depth - 1)
    return Counted(report["totals"]["params"], ops, "MACs", True)


COUNTERS = Registry("counting convention", error=SpecError)
COUNTERS.add("cnncalc", _cnncalc, help="params = learnable tensors (no buffers); MACs = "
             "multiply-adds of learned weights only, per example",
             rule="see the table above", version="")
COUNTERS.add("torchinfo", _torchinfo, help="Total mult-adds: a conv's parameters (bias too) "
             "times its output positions, other layers' parameter counts; times the batch",
             rule="conv: (weights + biases)·H2·W2; every other layer with parameters (fc, "
             "batchnorm γ β, PReLU α): its parameter count; parameter-free layers 0; times "
             "the batch. Params: all parameters", version="torchinfo 1.8.0")
COUNTERS.add("fvcore", _fvcore, help="one 'flop' per multiply-add of conv and linear layers "
             "(no bias), batchnorm 1 or 2 per element, adaptive average pooling 1 per input "
             "element; times the batch",
             rule="conv and fc: MACs (no bias); batchnorm (eval mode): 1 per element, 2 with "
             "γ β; adaptive and global average pooling: 1 per input element; activations, "
             "max and average pooling, add, concat, LRN, dropout: 0 (skipped ops); times the "
             "batch. Params: all parameters", version="fvcore 0.1.5")
COUNTERS.add("ptflops", _ptflops, help="MACs plus bias adds, batchnorm, activations and pools "
             "(ReLU and pools counted twice: module hook and patched functional), per "
             "example; params = trainable",
             rule="conv and fc: MACs + 1 per bias output; batchnorm: 1 per element, 2 with γ β; "
             "ReLU, ELU, PReLU: 2 per element and max, average and adaptive pooling: 2 per "
             "input element (the module hook and the patched torch.nn.functional call both "
             "count); ReLU6 and LeakyReLU: 1 (their functional is not patched); SiLU and "
             "softmax: 1 (functional only); sigmoid, tanh, Mish, hardswish, hardsigmoid, "
             "add, concat, dropout: 0; LRN: 3 per element + (C + n − 1)·H·W (the tensor ops "
             "inside F.local_response_norm). Per example (the default pytorch backend); "
             "params: those with requires_grad", version="ptflops 0.7.5")
COUNTERS.add("thop", _thop, help="multiply-adds of conv and linear layers without the bias, "
             "batchnorm 4 per element, average pools per output; times the batch",
             rule="conv and fc: MACs (no bias); batchnorm: 2 per element, 4 with γ β; "
             "average pooling: 1 per output element; adaptive and global average pooling: "
             "(H1/H2·W1/W2 + 1) per output element; PReLU (eval) 1 per element; softmax "
             "3·D − 1 per position; ReLU, ReLU6, LeakyReLU, max pooling, dropout: 0; modules "
             "thop has no rule for (sigmoid, tanh, ELU, Mish, SiLU, hardswish, hardsigmoid, "
             "LRN) and tensor expressions (add, concat): 0; times the batch. Params: "
             "parameters of the modules it hooks", version="thop 0.1.1")


def count_like(report: dict, tool: str, batch: int = 1) -> Counted:
    """The totals ``tool`` would print for the analysed network (``batch`` inputs)."""
    return COUNTERS.lookup(tool).obj(report, batch)


def other_tools(report: dict, batch: int = 1) -> dict[str, Counted]:
    """Every other tool's totals whose figures differ from cnncalc's."""
    ours = count_like(report, "cnncalc", batch)
    return {e.name: c for e in COUNTERS if e.name != "cnncalc"
            for c in [e.obj(report, batch)]
            if (c.params, c.ops) != (ours.params, ours.ops * (batch if c.per_batch else 1))}


def counters_table() -> str:
    """README's table of the other tools' rules: tool (release pinned), what it counts."""
    rows = ["| tool | counts |", "|---|---|"]
    rows += [f"| {e.extra['version']} | {e.extra['rule']} |" for e in COUNTERS
             if e.name != "cnncalc"]
    return "\n".join(rows) + "\n"
