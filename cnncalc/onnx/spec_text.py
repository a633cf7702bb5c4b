"""Layer records → readable spec YAML (what ``cnncalc import`` writes).

Each option is written in the shortest spelling that the layer's own parser reads back to the
same value (``3`` rather than ``[3, 3]``), options at their default are left out, and ``from:``
appears only where the graph branches; a layer using another's parameters says ``share:``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from cnncalc.layers import LAYERS

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


@dataclass
class LayerRecord:
    """One layer of an imported model: name, kind, options (canonical values), inputs
    (record names or ``input``) and its tensors by state-dict suffix."""

    name: str
    kind: str
    options: dict
    inputs: list[str]
    weights: dict = field(default_factory=dict)
    shares: str | dict | None = None  # the record whose parameters this one uses, or
    #                                   {tensor: record} for some of them


def scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if _PLAIN.match(value) and value.lower() not in _YAML_WORDS \
            else json.dumps(value)
    return str(value)


def flow(value) -> str:
    """``value`` in YAML flow style."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return scalar(value)


def _spellings(value):
    """Readable forms of a canonical option value, shortest first."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, tuple) for v in value):
        (t, b), (left, r) = value
        yield t
        yield [t, left]
        yield [t, b, left, r]
        yield {"top": t, "bottom": b, "left": left, "right": r}
    elif isinstance(value, tuple) and len(value) == 2:
        yield value[0]
        yield list(value)
    yield value


def option_text(cls, option: str, value):
    """The shortest spelling of ``value`` that ``cls``'s parser reads back to it."""
    parse = cls.options[option].parse
    for form in _spellings(value):
        try:
            if parse(form) == value:
                return form
        except (ValueError, TypeError):
            continue
    return value


def spec_text(name: str, input_shape, records: list[LayerRecord], notes: list[str] = ()) -> str:
    """The spec of ``records`` (in order; the last is the output)."""
    lines = [f"# {note}" for note in notes]
    lines += [f"name: {scalar(name)}", f"input: {input_shape.lecture()}", "layers:"]
    previous = "input"
    for rec in records:
        cls = LAYERS.get(rec.kind)
        body = {"name": rec.name}
        if rec.inputs != [previous]:
            body["from"] = rec.inputs[0] if len(rec.inputs) == 1 else list(rec.inputs)
        for option, value in rec.options.items():
            if value != cls.options[option].default:
                body[option] = option_text(cls, option, value)
        if rec.shares:
            body["share"] = rec.shares
        lines.append(f"  - {rec.kind}: {flow(body)}")
        previous = rec.name
    return "\n".join(lines) + "\n"
