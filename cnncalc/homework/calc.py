"""The one-line layer calculator: one layer on one input volume, with the worked formulas.

It builds a one-layer spec ``{"input": ..., "layers": [{kind: opts}]}`` and loads it through
:func:`cnncalc.load`, so option aliases, conventions, warnings and errors are the analyzer's.
"""
from __future__ import annotations

from cnncalc.errors import SpecError
from cnncalc.spec import load
from cnncalc.homework.explain import explain_node
from cnncalc.layers import LAYERS
from cnncalc.layers.options import canonical_option


def input_spec(text: str):
    """``32x32x3``, ``32x32`` (depth 1), or a bare ``400`` (a 1x1x400 vector, for fc)."""
    raw = str(text).strip()
    if raw.isdigit():
        return f"1x1x{raw}"
    return raw


def layer_calc(kind: str, input: str, options: dict, *, strict: bool = False,
               convention: str | None = None) -> dict:
    """Output volume, parameters, MACs and receptive field of one layer, with the worked steps.

    ``options`` are spec options under any spelling the analyzer accepts (``filters``/``K``,
    ``size``/``F``, ...); ``None`` values are left out.
    """
    canon = LAYERS.canonical(kind)
    if canon is None:
        close = LAYERS.suggest(kind, n=3)
        raise SpecError(f"unknown layer type '{kind}'",
                        hint=(f"did you mean {' or '.join(repr(c) for c in close)}? "
                              if close else "") + "use conv, pool (maxpool, avgpool) or fc")
    opts = {k: v for k, v in options.items() if v is not None}
    layer_cls = LAYERS.get(canon)
    accepted = {k: v for k, v in opts.items() if _takes(layer_cls, k)}
    ignored = sorted(set(opts) - set(accepted))
    if ignored:
        raise SpecError(f"{canon} does not take {', '.join('--' + k for k in ignored)}",
                        hint=f"{canon} takes: {', '.join(layer_cls.options) or 'no options'}")
    spec = {"name": f"{canon} layer", "input": input_spec(input),
            "layers": [{canon: accepted} if accepted else canon]}
    graph = load(spec, strict=strict, convention=convention)
    node = graph.nodes[0]
    row = graph.analyze()["layers"][0]
    exp = explain_node(node, graph)
    return {
        "type": canon,
        "hyper": row["hyper"],
        "convention": graph.convention.name,
        "input": node.in_shape.lecture(),
        "output": node.out_shape.lecture(),
        "output_shape": row["output"],
        "params": row["params"],
        "weights": row["weights"],
        "biases": row["biases"],
        "macs": row["macs"],
        "flops": row["flops"],
        "rf": row["rf"],
        "steps": [s.as_dict() for s in exp.steps],
        "notes": exp.notes,
        "warnings": list(node.warnings),
    }


def _takes(layer_cls, key: str) -> bool:
    return canonical_option(layer_cls, key) is not None
