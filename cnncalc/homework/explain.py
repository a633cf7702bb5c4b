"""Worked formulas: each layer's rule written out with the numbers filled in, as a student would.

Nothing here computes a shape, a count or a receptive field on its own: every value comes from
the graph (the layer rules in :mod:`cnncalc.layers`, the receptive-field recurrence in
:mod:`cnncalc.receptive_field`); this module only prints the formula beside it. Each
:class:`Step`'s ``worked`` text ends with the rule's value (tests assert that).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cnncalc.errors import SpecError
from cnncalc.graph import Graph, Node
from cnncalc.layers.base import effective_kernel, out_size, prod
from cnncalc.layers.spatial import fraction_text, real_rows_unseen
from cnncalc.receptive_field import merge_fields

#: what a step is about; ``check`` matches claims to steps by topic
TOPICS = ("output", "params", "macs", "rf")


# Which formulas a layer gets follows from its options, not from its kind, so a new layer type
# needs no entry here: a window with padding slides (conv, pools), learned filters give K
# output channels (conv), a fixed unit count is a fully connected layer (fc, maxout).
def _slides(layer) -> bool:
    """A sliding-window layer: the output-size formula applies on each axis."""
    return hasattr(layer, "kernel_size") and hasattr(layer, "pads")


def _has_filters(layer) -> bool:
    return hasattr(layer, "out_channels")


def _is_dense(layer) -> bool:
    return hasattr(layer, "out_features")


@dataclass
class Step:
    """One formula: ``symbol = general = worked``; ``worked`` ends with ``value``."""

    topic: str          # output | params | macs | rf
    quantity: str       # in words, e.g. "output width"
    symbol: str         # e.g. "W2"
    general: str        # e.g. "(W1 - F + 2P)/S + 1"
    worked: str         # e.g. "(32 - 5 + 2·2)/1 + 1 = 32"
    value: object       # the rule's value (int, or a string for volumes)

    @property
    def text(self) -> str:
        head = f"{self.symbol} = {self.general}" if self.general else self.symbol
        return f"{head} = {self.worked}"

    def as_dict(self) -> dict:
        return {**asdict(self), "text": self.text}


@dataclass
class LayerExplanation:
    index: int
    name: str
    type: str
    hyper: str
    input: str
    output: str
    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def topic(self, topic: str) -> list[Step]:
        return [s for s in self.steps if s.topic == topic]

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "steps"}
        d["steps"] = [s.as_dict() for s in self.steps]
        return d


def n(v) -> str:
    """A number as written in a formula (thousands separated in results)."""
    return f"{v:,}" if isinstance(v, int) and abs(v) >= 1000 else str(v)


def _pad_terms(pb: int, pa: int) -> tuple[str, str]:
    """(general, worked) padding term of the size formula."""
    if pb == pa:
        return "2P", f"2·{pb}"
    return "P_before + P_after", f"{pb} + {pa}"


def _axis_steps(node: Node, graph: Graph) -> tuple[list[Step], list[str]]:
    """Output width/height of a sliding-window layer (conv or pool)."""
    layer, x, y = node.layer, node.in_shape, node.out_shape
    conv = graph.convention
    pads = node.pads(conv)
    ceil = layer.ceil(conv) if hasattr(layer, "ceil") else False
    axes = [("width", "W", x.w, y.w, layer.kernel_size[1], layer.stride[1], pads[1],
             layer.dilation[1]),
            ("height", "H", x.h, y.h, layer.kernel_size[0], layer.stride[0], pads[0],
             layer.dilation[0])]
    same = axes[0][2:] == axes[1][2:]
    steps, notes = [], []
    for word, letter, size_in, size_out, k, s, (pb, pa), d in (axes[:1] if same else axes):
        symbol = "W2 = H2" if same else f"{letter}2"
        in_sym = "W1" if same else f"{letter}1"
        k_eff = effective_kernel(k, d)
        f_sym = "F" if same or layer.kernel_size[0] == layer.kernel_size[1] else f"F_{letter.lower()}"
        if d != 1:
            steps.append(Step("output", f"effective {word} of the dilated kernel",
                              "F_eff" if same else f"F_eff({word})", "d·(F - 1) + 1",
                              f"{d}·({k} - 1) + 1 = {k_eff}", k_eff))
            f_sym = "F_eff"
        p_gen, p_work = _pad_terms(pb, pa)
        general = f"({in_sym} - {f_sym} + {p_gen})/S + 1"
        expr = f"({size_in} - {k_eff} + {p_work})/{s} + 1"
        res = out_size(size_in, k, s, pb, pa, d, ceil)
        if res.is_integer:
            worked = f"{expr} = {size_out}"
        else:
            how = "ceil" if ceil else "floor"
            worked = f"{expr} = {fraction_text(res.numerator, s)} → {size_out} ({how})"
            if not ceil and real_rows_unseen(res, pa, k_eff) <= 0:
                notes.append(f"{'width and height' if same else word}: floor drops only "
                             + ("padding: every input row and column is still seen"
                                if res.unseen <= pa else
                                f"what the stride skips anyway (a {k_eff}-wide kernel at "
                                f"stride {s} skips {s - k_eff} of every {s} rows)"))
        quantity = "output width and height" if same else f"output {word}"
        steps.append(Step("output", quantity, symbol, general, worked, size_out))
    # where the padding came from, when the convention or "same" chose it
    given = getattr(layer, "padding", None)
    if given == "same":
        notes.append(f"padding 'same': P = {pads[1][0]}+{pads[1][1]} (width), "
                     f"{pads[0][0]}+{pads[0][1]} (height), chosen so that W2 = ceil(W1/S)")
    elif conv.darknet and node.kind == "conv" and given and given[0][0]:
        notes.append(f"darknet: pad={given[0][0]} is a flag meaning floor(F/2) = "
                     f"{pads[1][0]} per side")
    elif conv.darknet and node.kind == "maxpool":
        total = pads[1][0] + pads[1][1]
        notes.append(f"darknet: a maxpool's pad is the total padding ({total}"
                     f"{', default F - 1' if given is None else ''}), split "
                     f"{pads[1][0]} before and {pads[1][1]} after")
    if ceil and not getattr(layer, "ceil_mode", False):
        notes.append(f"{conv.name}: pooling rounds the output size up (ceil)")
    return steps, notes


def _depth_step(node: Node) -> Step:
    y = node.out_shape
    general = "K" if _has_filters(node.layer) else "D1"
    return Step("output", "output depth", "D2", general, f"{y.c}", y.c)


def _conv_params(node: Node) -> list[Step]:
    layer, x = node.layer, node.in_shape
    kh, kw = layer.kernel_size
    g, k = layer.groups, layer.out_channels
    total = sum(prod(s) for s in node.param_shapes().values())
    d_gen, d_work = ("D1", f"{x.c}") if g == 1 else ("(D1/g)", f"({x.c}/{g})")
    per_w = f"{kh}·{kw}·{d_work}"
    ff = "F·F" if kh == kw else "F_h·F_w"
    steps = []
    if layer.bias:
        per = total // k  # every filter has the same count: weights + its bias
        steps.append(Step("params", "parameters per filter", "per filter",
                          f"{ff}·{d_gen} + 1", f"{per_w} + 1 = {n(per)}", per))
        steps.append(Step("params", "parameters", "params", f"({ff}·{d_gen})·K + K",
                          f"({per_w})·{k} + {k} = {per}·{k} = {n(total)}", total))
    else:
        steps.append(Step("params", "parameters (no bias)", "params", f"({ff}·{d_gen})·K",
                          f"({per_w})·{k} = {n(total)}", total))
    return steps


def _conv_macs(node: Node) -> Step:
    layer, x, y = node.layer, node.in_shape, node.out_shape
    kh, kw = layer.kernel_size
    g = layer.groups
    d_gen, d_work = ("D1", f"{x.c}") if g == 1 else ("(D1/g)", f"({x.c}/{g})")
    macs = layer.macs(x, y)
    ff = "F·F" if kh == kw else "F_h·F_w"
    return Step("macs", "multiply-accumulates", "MACs", f"W2·H2·K·({ff}·{d_gen})",
                f"{y.w}·{y.h}·{y.c}·({kh}·{kw}·{d_work}) = {n(macs)}", macs)


def _fc_steps(node: Node) -> list[Step]:
    layer, x, y = node.layer, node.in_shape, node.out_shape
    d_in = x.size
    steps = []
    if (x.h, x.w) != (1, 1):
        steps.append(Step("params", "inputs (flattened)", "D_in", "W1·H1·D1",
                          f"{x.w}·{x.h}·{x.c} = {n(d_in)}", d_in))
    steps.append(Step("output", "output depth", "D2", "N", f"{y.c}", y.c))
    total = sum(prod(s) for s in node.param_shapes().values())
    units = layer.out_features
    kp = getattr(layer, "pieces", None)
    if kp is None:
        if layer.bias:
            steps.append(Step("params", "parameters", "params", "D_in·N + N",
                              f"{d_in}·{units} + {units} = {n(total)}", total))
        else:
            steps.append(Step("params", "parameters (no bias)", "params", "D_in·N",
                              f"{d_in}·{units} = {n(total)}", total))
        macs = layer.macs(x, y)
        steps.append(Step("macs", "multiply-accumulates", "MACs", "D_in·N",
                          f"{d_in}·{units} = {n(macs)}", macs))
    else:  # maxout: k affine pieces per unit
        steps.append(Step("params", "parameters", "params", "k·(D_in·N + N)",
                          f"{kp}·({d_in}·{units} + {units}) = {n(total)}", total))
        macs = layer.macs(x, y)
        steps.append(Step("macs", "multiply-accumulates", "MACs", "k·D_in·N",
                          f"{kp}·{d_in}·{units} = {n(macs)}", macs))
    return steps


def _generic_params(node: Node) -> list[Step]:
    shapes = node.param_shapes()
    if not shapes:
        return []
    total = sum(prod(s) for s in shapes.values())
    parts = [f"{name} {'·'.join(str(d) for d in s)}" for name, s in shapes.items()]
    return [Step("params", "parameters", "params", "", " + ".join(parts) + f" = {n(total)}",
                 total)]


def _field_in(node: Node, graph: Graph):
    fields = [graph.field_of(src) for src in node.inputs]
    if len(fields) > 1:
        return merge_fields(fields)[0]
    return fields[0]


def _merge_steps(node: Node, graph: Graph, f_in, same: bool) -> list[Step]:
    """The union of the branches' windows, per axis: branch i sees [c_i − (r_i − 1)/2,
    c_i + (r_i − 1)/2] around its first unit's centre c_i; the merged unit sees their union."""
    fields = [graph.field_of(src) for src in node.inputs]
    out = []
    for word, a in ((("width", 1),) if same else (("width", 1), ("height", 0))):
        windows = [(f.start[a] - (f.size[a] - 1) / 2, f.start[a] + (f.size[a] - 1) / 2)
                   for f in fields]
        lo, hi = min(w[0] for w in windows), max(w[1] for w in windows)
        union = " ∪ ".join(f"{src} [{w[0]:g}, {w[1]:g}]" for src, w in zip(node.inputs, windows))
        suffix = "" if same else f" ({word})"
        out.append(Step("rf", "merged receptive field" + suffix,
                        "r_merge" + ("" if same else f"_{word[0]}"),
                        "max(c_i + (r_i - 1)/2) - min(c_i - (r_i - 1)/2) + 1",
                        f"{union} = [{lo:g}, {hi:g}]: {hi:g} - ({lo:g}) + 1 = {f_in.size[a]}",
                        f_in.size[a]))
    return out


def _rf_steps(node: Node, graph: Graph) -> tuple[list[Step], list[str]]:
    """The receptive-field recurrence r = r_in + (F - 1)·j_in, j = j_in·S per axis."""
    f_in = _field_in(node, graph)
    steps_hw = node.layer.rf_step(node.in_shape, graph.convention)
    notes = []
    axes = [("width", 1), ("height", 0)]
    same = (f_in.size[0] == f_in.size[1] and f_in.stride[0] == f_in.stride[1]
            and steps_hw[0] == steps_hw[1])
    out = []
    if len(node.inputs) > 1:
        notes.append("the merged field is the union of the branches' windows (the largest "
                     "field when their centres agree)")
        out += _merge_steps(node, graph, f_in, same)
    for word, a in (axes[:1] if same else axes):
        r_in, j_in = f_in.size[a], f_in.stride[a]
        k, s, _ = steps_hw[a]
        r, j = node.rf.size[a], node.rf.stride[a]
        suffix = "" if same else f" ({word})"
        out.append(Step("rf", "receptive field" + suffix, "r" + ("" if same else f"_{word[0]}"),
                        "r_in + (F - 1)·j_in", f"{r_in} + ({k} - 1)·{j_in} = {r}", r))
        out.append(Step("rf", "effective stride (jump)" + suffix,
                        "j" + ("" if same else f"_{word[0]}"), "j_in·S", f"{j_in}·{s} = {j}", j))
    return out, notes


def explain_node(node: Node, graph: Graph) -> LayerExplanation:
    steps: list[Step] = []
    notes: list[str] = []
    layer = node.layer
    if _slides(layer):
        axis_steps, axis_notes = _axis_steps(node, graph)
        steps += axis_steps
        notes += axis_notes
        steps.append(_depth_step(node))
        if _has_filters(layer):
            steps += _conv_params(node)
            steps.append(_conv_macs(node))
    elif _is_dense(layer):
        steps += _fc_steps(node)
    else:
        steps += _generic_params(node)
        macs = node.layer.macs(node.in_shape, node.out_shape)
        if macs:
            steps.append(Step("macs", "multiply-accumulates", "MACs", "", n(macs), macs))
    if node.shared:     # shared tensors count in the layer holding them, once
        own = node.own_param_shapes()
        total = sum(prod(s) for s in own.values())
        parts = [f"{k} {n(prod(s))}" for k, s in own.items()]
        steps = [st for st in steps if st.topic != "params"]
        steps.append(Step("params", "own parameters", "params", "the tensors not shared",
                          (" + ".join(parts) + " = " if parts else "") + n(total), total))
        notes.append("share: computes with " + ", ".join(
            f"{k} of {holder}" for k, holder in node.shared.items())
            + " (counted there, once); its MACs count at every use")
    buffers = node.own_buffer_shapes()
    if buffers:
        notes.append(f"{', '.join(buffers)}: {n(sum(prod(s) for s in buffers.values()))} buffer "
                     "values (stored, not learned): not parameters, but counted in memory")
    if not node.trainable and node.param_shapes():
        notes.append("trainable: false: these parameters are frozen (counted, not trained)")
    y = node.out_shape
    unchanged = y == node.in_shape and len(node.inputs) == 1
    steps.append(Step("output", "output volume", "volume",
                      "same as the input" if unchanged else "W2 x H2 x D2", y.lecture(),
                      y.lecture()))
    rf_steps, rf_notes = _rf_steps(node, graph)
    steps += rf_steps
    notes += rf_notes
    return LayerExplanation(index=node.index, name=node.name, type=node.kind,
                            hyper=node.layer.describe(),
                            input=" + ".join(s.lecture() for s in node.in_shapes),
                            output=node.out_shape.lecture(), steps=steps, notes=notes,
                            warnings=list(node.warnings))


def total_steps(graph: Graph) -> list[Step]:
    """Total parameters and MACs as sums of the per-layer values."""
    out = []
    for topic, symbol, get in (
            ("params", "total params",
             lambda nd: sum(prod(s) for s in nd.own_param_shapes().values())),
            ("macs", "total MACs", lambda nd: nd.layer.macs(nd.in_shape, nd.out_shape))):
        values = [get(nd) for nd in graph.nodes]
        total = sum(values)
        terms = [n(v) for v in values if v]
        worked = (" + ".join(terms) + f" = {n(total)}") if len(terms) > 1 else n(total)
        out.append(Step(topic, symbol, symbol, "", worked, total))
    return out


def explain(graph: Graph, layer: str | None = None) -> dict:
    """Worked formulas for every layer (or one, by name or 1-based index) and the totals."""
    nodes = graph.nodes
    if layer is not None:
        nodes = [select_node(graph, layer)]
    layers = [explain_node(nd, graph) for nd in nodes]
    return {
        "name": graph.name,
        "input": graph.input_shape.lecture(),
        "convention": graph.convention.name,
        "convention_rule": graph.convention.description,
        "layers": [e.as_dict() for e in layers],
        "totals": [] if layer is not None else [s.as_dict() for s in total_steps(graph)],
        "output": graph.output_shape.lecture(),
        "warnings": list(graph.warnings),
    }


def select_node(graph: Graph, ref) -> Node:
    """A node by name or by 1-based index; a clear error otherwise."""
    import difflib

    key = str(ref).strip()
    for nd in graph.nodes:
        if nd.name == key:
            return nd
    if key.isascii() and key.isdigit() and 1 <= int(key) <= len(graph.nodes):
        return graph.nodes[int(key) - 1]
    names = [nd.name for nd in graph.nodes]
    close = difflib.get_close_matches(key, names, n=1)
    raise SpecError(f"the spec has no layer '{key}'",
                    hint=(f"did you mean '{close[0]}'? " if close else "")
                    + f"layers: {', '.join(names)} (or a 1-based index)")
