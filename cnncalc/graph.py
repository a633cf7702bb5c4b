"""Spec data → layer graph: named nodes in topological order with shapes and receptive fields.

Data flows one way: spec text → (data, source map) → :class:`Graph` → analysis / engine.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from cnncalc.conventions import Convention, get_convention
from cnncalc.errors import CnnCalcError, ShapeError, SpecError
from cnncalc.layers import REGISTRY, resolve_kind, suggest_kind
from cnncalc.layers.base import Context, Layer, Shape, prod
from cnncalc.layers.options import OPTION_ALIASES, boolean, positive_int
from cnncalc.receptive_field import RField, compose, input_field, merge_fields
from cnncalc.spec.loader import SourceMap, parse_yaml

TOP_LEVEL_KEYS = ("name", "description", "input", "layers", "blocks", "strict", "convention",
                  "train", "classes")
LAYER_META_KEYS = ("type", "name", "from", "init")
INPUT_NAME = "input"
# Dimensions beyond this overflow 32-bit indexing in every framework's kernels.
MAX_DIM = 2**31 - 1


@dataclass
class Node:
    """One layer instance in the graph."""

    index: int                      # 1-based position in the flattened spec
    name: str
    kind: str
    layer: Layer
    inputs: list[str]               # names of the nodes (or "input") feeding this one
    in_shapes: list[Shape]
    out_shape: Shape
    rf: RField
    path: tuple                     # where the layer sits in the spec data (for locations)
    block: str | None = None        # the block it was expanded from
    init: object = None             # per-layer init override for the trainer
    warnings: list[str] = field(default_factory=list)

    @property
    def in_shape(self) -> Shape:
        return self.in_shapes[0]

    @property
    def label(self) -> str:
        return f"layer {self.index} '{self.name}' ({self.kind})"

    def param_shapes(self) -> dict[str, tuple]:
        return self.layer.param_shapes(self.in_shape)

    def buffer_shapes(self) -> dict[str, tuple]:
        return self.layer.buffer_shapes(self.in_shape)

    def pads(self, convention: Convention | None = None):
        """((top, bottom), (left, right)) for sliding-window layers."""
        return self.layer.pads(self.in_shape, convention)


@dataclass
class Graph:
    """The layer graph of one spec."""

    name: str
    input_shape: Shape
    nodes: list[Node]
    convention: Convention
    source: str = ""
    file: str | None = None
    train: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source_map: SourceMap | None = None

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def output_shape(self) -> Shape:
        return self.nodes[-1].out_shape

    def shape_of(self, name: str) -> Shape:
        return self.input_shape if name == INPUT_NAME else self.node(name).out_shape

    def param_shapes(self) -> dict[str, tuple]:
        """All trainable tensors keyed ``<layer>.weight`` / ``<layer>.bias`` (PyTorch's names)."""
        return {f"{n.name}.{k}": s for n in self.nodes for k, s in n.param_shapes().items()}

    def buffer_shapes(self) -> dict[str, tuple]:
        return {f"{n.name}.{k}": s for n in self.nodes for k, s in n.buffer_shapes().items()}

    def analyze(self, batch: int = 1, optimizer: str | None = None, dtype_bytes: int = 4):
        """Per-layer and total counts as plain data (the JSON contract)."""
        from cnncalc.analysis import analyze
        return analyze(self, batch=batch, optimizer=optimizer, dtype_bytes=dtype_bytes)

    def locate(self, path):
        return self.source_map.locate(path) if self.source_map else None


# ---------------------------------------------------------------------------------------------
# Loading


def load(spec, *, strict: bool = False, convention: str | None = None,
         file: str | None = None) -> Graph:
    """Build a :class:`Graph` from a spec file path, YAML text, or already-parsed data.

    ``strict``/``convention`` override what the spec says (cs231n's integer rule, Caffe's ceil
    pooling, Darknet's padding; see :mod:`cnncalc.conventions`).
    """
    text = None
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec
                                  and spec.strip().endswith((".yaml", ".yml"))):
        path = Path(spec)
        if not path.exists():
            raise SpecError(f"spec file '{path}' not found",
                            hint="give the path of a YAML spec, e.g. specs/lenet5.yaml")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"cannot read spec file '{path}': {err}") from None
        file = file or str(path)
    elif isinstance(spec, str):
        text = spec
    if text is not None:
        data, smap = parse_yaml(text, file)
    else:
        data, smap = spec, SourceMap(file=file)
    builder = _Builder(data, smap, text or "", strict, convention)
    return builder.build()


_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


@dataclass
class _Item:
    """A layer entry after block expansion, before its options are parsed."""

    raw_kind: object
    name: str | None
    opts: dict
    path: tuple
    source: object = None
    scope: str | None = None        # instance prefix inside a block ("layer1.0")
    block: str | None = None
    init: object = None
    block_input: str | None = None   # the block entry's `from:` (its first instance's input)
    kind_path: tuple = ()            # where the type name sits (for "unknown type" errors)
    opts_path: tuple = ()            # where the options sit


class _Builder:
    def __init__(self, data, smap: SourceMap, text: str, strict: bool, convention):
        self.data = data
        self.smap = smap
        self.text = text
        self.strict_override = strict
        self.convention_override = convention
        self.block_counter: dict[str, int] = {}

    def error(self, cls, message, path=None, where=None, hint=None):
        return cls(message, where=where, hint=hint, location=self.smap.locate(path), path=path)

    # ---- top level ---------------------------------------------------------------------------
    def build(self) -> Graph:
        data = self.data
        if not isinstance(data, dict):
            raise self.error(SpecError, "a spec must be a YAML mapping with 'input' and 'layers'",
                             (), hint="start with:  name: mynet\\n  input: 32x32x3\\n  layers: ...")
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
                raise self.error(SpecError, f"unknown top-level key '{key}'", (key,),
                                 hint=(f"did you mean '{close[0]}'?" if close else
                                       f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}"))
        strict = self.strict_override
        if "strict" in data and not strict:
            try:
                strict = boolean(data["strict"])
            except ValueError as err:
                raise self.error(SpecError, f"strict: {err}", ("strict",)) from None
        try:
            convention = get_convention(self.convention_override or data.get("convention"),
                                        strict)
        except SpecError as err:
            raise self.error(SpecError, err.message, ("convention",), hint=err.hint) from None
        if "input" not in data:
            raise self.error(SpecError, "the spec has no 'input'", (),
                             hint="add e.g.  input: 32x32x3   (width x height x depth)")
        input_shape = self.parse_input(data["input"])
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise self.error(SpecError, "'layers' must be a non-empty list",
                             ("layers",) if "layers" in data else (),
                             hint="list the layers under 'layers:', one '- ' item each")
        blocks = data.get("blocks") or {}
        if not isinstance(blocks, dict):
            raise self.error(SpecError, "'blocks' must map block names to lists of layers",
                             ("blocks",))
        self.blocks = blocks
        items = self.expand(layers, ("layers",), scope=None, args={}, depth=0)
        train = data.get("train") or {}
        if not isinstance(train, dict):
            raise self.error(SpecError, "'train' must be a mapping of training settings",
                             ("train",))
        graph = Graph(name=str(data.get("name", "network")), input_shape=input_shape, nodes=[],
                      convention=convention, source=self.text, file=self.smap.file,
                      train=train, source_map=self.smap)
        self.connect(graph, items)
        return graph

    def parse_input(self, raw) -> Shape:
        path = ("input",)
        hint = "write the input as WxHxD, e.g. 32x32x3, or {width: 32, height: 32, channels: 3}"
        try:
            if isinstance(raw, str):
                parts = [p.strip() for p in raw.lower().replace("×", "x").split("x")]
                if len(parts) == 2:
                    parts.append("1")
                if len(parts) != 3:
                    raise ValueError
                w, h, c = (positive_int(p) for p in parts)
            elif isinstance(raw, dict):
                unknown = set(raw) - {"width", "height", "channels", "depth", "W", "H", "D", "C"}
                if unknown:
                    raise ValueError
                w = positive_int(raw.get("width", raw.get("W")))
                h = positive_int(raw.get("height", raw.get("H")))
                c = positive_int(raw.get("channels", raw.get("depth", raw.get("D",
                                                                             raw.get("C", 1)))))
            elif isinstance(raw, list) and len(raw) == 3:
                w, h, c = (positive_int(p) for p in raw)
            else:
                raise ValueError
        except (ValueError, TypeError):
            raise self.error(SpecError, f"malformed input {raw!r}: sizes must be positive "
                             "integers", path, hint=hint) from None
        if max(w, h, c) > MAX_DIM:
            raise self.error(ShapeError, f"input {w}x{h}x{c} has a dimension over 2^31 - 1",
                             path, hint="check the input size")
        return Shape(c, h, w)

    # ---- block expansion -------------------------------------------------------------------
    def expand(self, entries, path, scope, args, depth, block=None) -> list[_Item]:
        if depth > 16:
            raise self.error(SpecError, "blocks nest more than 16 deep (a block uses itself?)",
                             path)
        items: list[_Item] = []
        for i, entry in enumerate(entries):
            p = path + (i,)
            if isinstance(entry, dict) and ("block" in entry or "repeat" in entry):
                items.extend(self.expand_block(entry, p, scope, args, depth))
                continue
            items.append(self.parse_item(entry, p, scope, args, block))
        return items

    def expand_block(self, entry, p, scope, args, depth):
        allowed = {"block", "repeat", "name", "with", "layers", "from"}
        for key in entry:
            if key not in allowed:
                raise self.error(SpecError, f"unknown key '{key}' in a block entry", p + (key,),
                                 hint=f"a block entry takes: {', '.join(sorted(allowed))}")
        try:
            repeat = positive_int(entry.get("repeat", 1))
        except ValueError as err:
            raise self.error(SpecError, f"repeat: {err}", p + ("repeat",)) from None
        if "block" in entry:
            bname = entry["block"]
            if bname not in self.blocks:
                close = difflib.get_close_matches(str(bname), [str(b) for b in self.blocks], n=1)
                raise self.error(SpecError, f"unknown block '{bname}'", p + ("block",),
                                 hint=(f"did you mean '{close[0]}'?" if close else
                                       (f"defined blocks: {', '.join(map(repr, self.blocks))}"
                                        if self.blocks else
                                        "define it under the top-level 'blocks:'")))
            body = self.blocks[bname]
            body_path = ("blocks", bname)
            defaults = {}
            if isinstance(body, dict):
                defaults = body.get("params") or {}
                body = body.get("layers")
                body_path = body_path + ("layers",)
            if not isinstance(body, list) or not body:
                raise self.error(SpecError, f"block '{bname}' must be a non-empty list of layers",
                                 ("blocks", bname))
        else:
            bname = None
            body = entry.get("layers")
            body_path = p + ("layers",)
            defaults = {}
            if not isinstance(body, list) or not body:
                raise self.error(SpecError, "a 'repeat' entry needs a non-empty 'layers' list",
                                 p, hint="e.g.  - repeat: 3\n    layers: [conv: {...}, relu]")
        with_args = entry.get("with") or {}
        if not isinstance(with_args, dict):
            raise self.error(SpecError, "'with' must map block parameters to values",
                             p + ("with",))
        new_args = {**args, **defaults, **self.substitute(with_args, args, p + ("with",))}
        base = entry.get("name")
        if base is None:
            key = bname or "block"
            self.block_counter[key] = self.block_counter.get(key, 0) + 1
            base = f"{key}{self.block_counter[key]}"
        base = f"{scope}.{base}" if scope else str(base)
        first_from = entry.get("from")
        items = []
        for r in range(repeat):
            inst = f"{base}.{r}" if repeat > 1 else base
            inner = self.expand(body, body_path, inst, new_args, depth + 1, bname)
            if r == 0 and first_from is not None:
                for it in inner:
                    it.block_input = first_from
            items.extend(inner)
        return items

    def substitute(self, value, args, path):
        if isinstance(value, str):
            m = _VAR.match(value.strip())
            if m:
                name = m.group(1)
                if name not in args:
                    raise self.error(SpecError, f"block parameter '${name}' has no value",
                                     path, hint=f"pass it with  with: {{{name}: ...}}")
                return args[name]
            return value
        if isinstance(value, list):
            return [self.substitute(v, args, path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.substitute(v, args, path + (k,)) for k, v in value.items()}
        return value

    def parse_item(self, entry, p, scope, args, block) -> _Item:
        if isinstance(entry, str):
            return _Item(entry, None, {}, p, None, scope, block, kind_path=p, opts_path=p)
        if not isinstance(entry, dict) or not entry:
            raise self.error(SpecError, f"a layer must be a type name or a mapping, got {entry!r}",
                             p, hint="e.g.  - relu   or   - conv: {filters: 6, size: 5}")
        entry = self.substitute(entry, args, p)
        if "type" in entry:
            opts = {k: v for k, v in entry.items() if k not in LAYER_META_KEYS}
            opts_path = p
            kind = entry["type"]
            name, source, init = entry.get("name"), entry.get("from"), entry.get("init")
            kind_path = p + ("type",)
        else:
            meta = {k: v for k, v in entry.items() if k in ("name", "from", "init")}
            rest = [k for k in entry if k not in meta]
            if len(rest) != 1:
                raise self.error(SpecError, "a layer mapping needs exactly one layer type key, "
                                 f"got {rest or 'none'}", p,
                                 hint="write  - conv: {filters: 6, size: 5}  or use  type: conv")
            kind = rest[0]
            kind_path = p + (kind,)
            body = entry[kind]
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise self.error(SpecError, f"the options of '{kind}' must be a mapping, "
                                 f"got {body!r}", kind_path,
                                 hint=f"e.g.  - {kind}: {{...}}")
            opts = {k: v for k, v in body.items() if k not in LAYER_META_KEYS}
            opts_path = kind_path
            name = body.get("name", meta.get("name"))
            source = body.get("from", meta.get("from"))
            init = body.get("init", meta.get("init"))
            if "type" in body:
                raise self.error(SpecError, "'type' inside a one-key layer mapping",
                                 kind_path + ("type",), hint="use one form or the other")
        return _Item(kind, None if name is None else str(name), opts, p, source, scope, block,
                     init, kind_path=kind_path, opts_path=opts_path)

    # ---- options, names, shapes ------------------------------------------------------------
    def make_layer(self, item: _Item, where: str) -> Layer:
        kind = resolve_kind(item.raw_kind) if isinstance(item.raw_kind, str) else None
        kind_path = item.kind_path
        if kind is None:
            close = suggest_kind(str(item.raw_kind))
            raise self.error(SpecError, f"unknown layer type '{item.raw_kind}'", kind_path,
                             where=where,
                             hint=(f"did you mean {' or '.join(repr(c) for c in close)}? "
                                   if close else "") + "`cnncalc layers` lists every type")
        cls = REGISTRY[kind]
        opts_path = item.opts_path
        parsed: dict = {}
        spelled: dict = {}
        for key, value in item.opts.items():
            canon = cls.option_aliases.get(key, OPTION_ALIASES.get(key))
            if canon is None or canon not in cls.options:
                names = [*cls.options, *[a for a, c in OPTION_ALIASES.items()
                                         if c in cls.options], *cls.option_aliases]
                close = difflib.get_close_matches(str(key), names, n=1)
                valid = ", ".join(cls.options) or "none"
                raise self.error(SpecError, f"unknown option '{key}' for {kind}",
                                 opts_path + (key,), where=where,
                                 hint=(f"did you mean '{close[0]}'? " if close else "")
                                 + f"{kind} takes: {valid}")
            if canon in parsed:
                raise self.error(SpecError, f"'{key}' and '{spelled[canon]}' both set {canon}",
                                 opts_path + (key,), where=where, hint="keep one of them")
            try:
                parsed[canon] = cls.options[canon].parse(value)
            except ValueError as err:
                raise self.error(SpecError, f"{key}: {err}", opts_path + (key,), where=where,
                                 hint=cls.options[canon].doc or None) from None
            spelled[canon] = key
        for canon, opt in cls.options.items():
            if opt.required and canon not in parsed:
                spellings = [a for a, c in OPTION_ALIASES.items() if c == canon]
                raise self.error(SpecError, f"{kind} needs '{canon}'"
                                 + (f" (also written {', '.join(spellings[:3])})"
                                    if spellings else ""), opts_path, where=where,
                                 hint=opt.doc or None)
        return cls(**parsed)

    def connect(self, graph: Graph, items: list[_Item]) -> None:
        seen: dict[str, Node] = {}
        counters: dict[str, int] = {}
        prev = INPUT_NAME
        block_inputs: dict[str, str] = {}
        input_field_ = input_field()
        for idx, item in enumerate(items, start=1):
            kind_guess = resolve_kind(item.raw_kind) if isinstance(item.raw_kind, str) else None
            if item.name is not None:
                local_name = item.name
            else:
                prefix = REGISTRY[kind_guess].prefix if kind_guess else "layer"
                ckey = (item.scope or "") + "/" + prefix
                counters[ckey] = counters.get(ckey, 0) + 1
                local_name = f"{prefix}{counters[ckey]}"
            name = f"{item.scope}.{local_name}" if item.scope else local_name
            where = f"layer {idx} '{name}'" + (f" ({kind_guess})" if kind_guess else "")
            if name == INPUT_NAME or name in seen:
                raise self.error(SpecError, f"layer name '{name}' is used twice" if name in seen
                                 else "'input' is reserved for the network input",
                                 item.path, where=where, hint="give each layer a unique name:")
            layer = self.make_layer(item, where)
            # Inside a block, `from: input` means the block's input: the layer before the
            # block instance (or the block entry's own `from:`).
            block_in = None
            if item.scope is not None:
                if item.scope not in block_inputs:
                    block_inputs[item.scope] = (
                        self.lookup(item.block_input, item, seen, None, item.path, where)
                        if item.block_input is not None else prev)
                    prev = block_inputs[item.scope]
                block_in = block_inputs[item.scope]
            sources = item.source
            if sources is None:
                inputs = [prev]
            else:
                raw_list = sources if isinstance(sources, list) else [sources]
                inputs = []
                for j, src in enumerate(raw_list):
                    src_path = (item.opts_path + ("from",)
                                if not isinstance(sources, list) else
                                item.opts_path + ("from", j))
                    if not isinstance(src, str):
                        raise self.error(SpecError, f"'from' must name layers, got {src!r}",
                                         src_path, where=where)
                    inputs.append(self.lookup(src, item, seen, block_in, src_path, where))
            if layer.n_inputs == 1 and len(inputs) != 1:
                raise self.error(SpecError, f"{layer.kind} takes one input, got {len(inputs)}",
                                 item.path, where=where,
                                 hint="merge branches first with 'add' or 'concat'")
            if layer.n_inputs is None and len(inputs) < 2:
                raise self.error(SpecError, f"{layer.kind} merges branches: give 'from' a list "
                                 "of two or more layer names", item.path, where=where,
                                 hint="e.g.  from: [conv2, input]")
            in_shapes = [graph.shape_of(n) for n in inputs]
            ctx = Context(graph.convention, where=f"{where}", path=item.path)
            try:
                out = layer.out_shape(in_shapes, ctx)
            except CnnCalcError as err:
                if err.location is None:
                    err.location = self.smap.locate(item.opts_path)
                if err.where is None:
                    err.where = where
                raise
            if max(out) > MAX_DIM or out.size > 2**48:
                raise self.error(ShapeError, f"output {out.lecture()} is absurdly large "
                                 f"({out.size:,} values per example)", item.path, where=where,
                                 hint="check the input size and the number of filters")
            in_fields = [input_field_ if n == INPUT_NAME else seen[n].rf for n in inputs]
            rf_warnings = []
            if len(in_fields) > 1:
                field_in, aligned = merge_fields(in_fields)
                if not aligned:
                    rf_warnings.append(
                        "merged branches are not aligned (their effective strides or centres "
                        "differ: " + "; ".join(
                            f"{n}: stride {f.stride[0]}x{f.stride[1]}, start "
                            f"{f.start[0]:g},{f.start[1]:g}" for n, f in zip(inputs, in_fields))
                        + "); the receptive field is then not shift-invariant")
            else:
                field_in = in_fields[0]
            rf = compose(field_in, layer.rf_step(in_shapes[0], graph.convention))
            node = Node(index=idx, name=name, kind=layer.kind, layer=layer, inputs=inputs,
                        in_shapes=in_shapes, out_shape=out, rf=rf, path=item.path,
                        block=item.block, init=item.init,
                        warnings=[*ctx.warnings, *rf_warnings])
            graph.nodes.append(node)
            for w in node.warnings:
                graph.warnings.append(f"{node.label}: {w}")
            seen[name] = node
            prev = name

    def lookup(self, src: str, item: _Item, seen, block_in, path, where) -> str:
        if src == INPUT_NAME:
            return block_in if block_in is not None else INPUT_NAME
        candidates = []
        if item.scope:
            candidates.append(f"{item.scope}.{src}")
        candidates.append(src)
        for cand in candidates:
            if cand in seen:
                return cand
        close = difflib.get_close_matches(src, [*seen, INPUT_NAME], n=1)
        raise self.error(SpecError, f"'from: {src}' names no earlier layer", path, where=where,
                         hint=(f"did you mean '{close[0]}'? " if close else "")
                         + "a layer can only take inputs from layers above it, or 'input'")


def total_params(graph: Graph) -> int:
    return sum(prod(s) for s in graph.param_shapes().values())
