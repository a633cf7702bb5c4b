"""The layer graph: named nodes in topological order, their connections, shapes and receptive
fields.

Data flows one way: the spec language (:mod:`cnncalc.spec`) reads YAML, expands blocks and
resolves names into :class:`LayerEntry` values; :func:`build_graph` connects them here, one at a
time, propagating shapes and receptive fields; analysis and the engine read the :class:`Graph`.
This module knows nothing of YAML or blocks.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cnncalc.conventions import Convention
from cnncalc.errors import CnnCalcError, ShapeError, SpecError
from cnncalc.layers.base import Context, Layer, Shape
from cnncalc.receptive_field import RField, compose, input_field, merge_fields

INPUT_NAME = "input"
# Dimensions beyond this overflow 32-bit indexing in every framework's kernels.
MAX_DIM = 2**31 - 1
# More values per example than this is a typo in the spec, not a network.
MAX_VALUES = 2**48


def layer_label(index: int, name: str, kind: str | None = None) -> str:
    """How messages name a layer: ``layer 3 'conv2' (conv)``."""
    return f"layer {index} '{name}'" + (f" ({kind})" if kind else "")


@dataclass
class LayerEntry:
    """One spec layer ready to connect: its final name, the built layer and resolved inputs."""

    name: str
    layer: Layer
    inputs: list[str]               # names of earlier nodes, or INPUT_NAME
    path: tuple = ()                # where the entry sits in the spec data (for locations)
    opts_path: tuple = ()           # where its options sit (shape errors point there)
    block: str | None = None        # the block it was expanded from
    init: object = None             # per-layer init override for the trainer
    trainable: bool = True          # False: parameters frozen (counted, not trained)
    shares: str | dict | None = None  # an earlier layer whose parameters (all) this one uses,
    #                                 or {tensor suffix: earlier layer} for some of them


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
    trainable: bool = True          # False: parameters frozen (counted, not trained)
    shares: str | None = None       # the layer whose every parameter and buffer this one uses
    shared: dict = field(default_factory=dict)  # tensor suffix -> the layer holding it

    @property
    def in_shape(self) -> Shape:
        return self.in_shapes[0]

    def param_key(self, suffix: str) -> str:
        """Where this layer's tensor ``suffix`` (a parameter or a buffer) is stored:
        ``<layer>.<suffix>`` of the layer holding it (this one, or the one it shares it with)."""
        return f"{self.shared.get(suffix) or self.shares or self.name}.{suffix}"

    @property
    def label(self) -> str:
        return layer_label(self.index, self.name, self.kind)

    def param_shapes(self) -> dict[str, tuple]:
        """The tensors this layer computes with (its own or the shared ones)."""
        return self.layer.param_shapes(self.in_shape)

    def buffer_shapes(self) -> dict[str, tuple]:
        return self.layer.buffer_shapes(self.in_shape)

    def own_param_shapes(self) -> dict[str, tuple]:
        """The tensors this layer holds: those it does not share with another layer."""
        return {k: v for k, v in self.param_shapes().items() if k not in self.shared}

    def own_buffer_shapes(self) -> dict[str, tuple]:
        return {} if self.shares else self.buffer_shapes()

    def pads(self, convention: Convention | None = None):
        """((top, bottom), (left, right)) for sliding-window layers."""
        return self.layer.pads(self.in_shape, convention)


@dataclass
class Graph:
    """The layer graph of one spec.

    ``source_map`` is anything with ``locate(path) -> Location | None`` (the spec loader's
    source map), so errors found while connecting point at the spec line.
    """

    name: str
    input_shape: Shape
    nodes: list[Node]
    convention: Convention
    source: str = ""
    file: str | None = None
    train: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source_map: object = None
    # name -> node, so that connecting n layers costs n lookups, not n²/2 comparisons
    _by_name: dict[str, Node] = field(default_factory=dict, init=False, repr=False,
                                      compare=False)

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: str) -> bool:
        return self._find(name) is not None

    def node(self, name: str) -> Node:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        return found

    def _find(self, name: str) -> Node | None:
        if len(self._by_name) != len(self.nodes):
            # `nodes` was grown or trimmed in place rather than through connect: index it again
            self._by_name = {n.name: n for n in self.nodes}
        return self._by_name.get(name)

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def output_shape(self) -> Shape:
        return self.nodes[-1].out_shape

    def shape_of(self, name: str) -> Shape:
        return self.input_shape if name == INPUT_NAME else self.node(name).out_shape

    def field_of(self, name: str) -> RField:
        """The receptive field of a node's output (the identity field for the input)."""
        return input_field() if name == INPUT_NAME else self.node(name).rf

    def param_shapes(self) -> dict[str, tuple]:
        """All learnable tensors keyed ``<layer>.weight`` / ``<layer>.bias`` (PyTorch's names),
        once each: a layer adds none of the tensors it shares with another (``share:``)."""
        return {f"{n.name}.{k}": s for n in self.nodes for k, s in n.own_param_shapes().items()}

    def buffer_shapes(self) -> dict[str, tuple]:
        return {f"{n.name}.{k}": s for n in self.nodes
                for k, s in n.own_buffer_shapes().items()}

    def analyze(self, batch: int = 1, optimizer: str | None = None, dtype_bytes: int = 4):
        """Per-layer and total counts as plain data (the JSON contract)."""
        from cnncalc.analysis import analyze
        return analyze(self, batch=batch, optimizer=optimizer, dtype_bytes=dtype_bytes)

    def locate(self, path):
        return self.source_map.locate(path) if self.source_map else None

    # ---- connecting ------------------------------------------------------------------------
    def connect(self, entry: LayerEntry) -> Node:
        """Append ``entry`` as the next node: check its inputs, propagate shape and field.

        Every input must already be a node (or the network input); the output shape is the
        layer's rule under the graph's convention and the receptive field composes the inputs'
        (merged first when several branches meet).
        """
        index = len(self.nodes) + 1
        layer = entry.layer
        where = layer_label(index, entry.name, layer.kind)
        # The spec language reports these with suggestions; this guards direct callers.
        if entry.name == INPUT_NAME or entry.name in self:
            raise self._error(SpecError, f"layer name '{entry.name}' is taken", entry.path,
                              where, hint="give each layer a unique name other than 'input'")
        missing = [src for src in entry.inputs if src != INPUT_NAME and src not in self]
        if missing:
            raise self._error(SpecError, f"inputs {missing} are not earlier layers", entry.path,
                              where, hint="a layer takes inputs from layers above it")
        inputs = list(entry.inputs)
        if layer.n_inputs == 1 and len(inputs) != 1:
            raise self._error(SpecError, f"{layer.kind} takes one input, got {len(inputs)}",
                              entry.path, where,
                              hint="merge branches first with 'add' or 'concat'")
        if layer.n_inputs is None and len(inputs) < 2:
            raise self._error(SpecError, f"{layer.kind} merges branches: give 'from' a list "
                              "of two or more layer names", entry.path, where,
                              hint="e.g.  from: [conv2, input]")
        in_shapes = [self.shape_of(n) for n in inputs]
        ctx = Context(self.convention, where=where, path=entry.path)
        try:
            out = layer.out_shape(in_shapes, ctx)
        except CnnCalcError as err:
            if err.location is None:
                err.location = self.locate(entry.opts_path)
            if err.where is None:
                err.where = where
            raise
        if max(out) > MAX_DIM or out.size > MAX_VALUES:
            raise self._error(ShapeError, f"output {out.lecture()} is absurdly large "
                              f"({out.size:,} values per example)", entry.path, where,
                              hint="check the input size and the number of filters")
        in_fields = [self.field_of(n) for n in inputs]
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
        rf = compose(field_in, layer.rf_step(in_shapes[0], self.convention))
        owner, shared = None, {}
        if isinstance(entry.shares, str):
            owner = self._share_owner(entry, in_shapes[0], where)
            shared = {k: owner.shared.get(k, owner.name) for k in owner.param_shapes()}
        elif entry.shares:
            shared = self._shared_tensors(entry, in_shapes[0], where)
        node = Node(index=index, name=entry.name, kind=layer.kind, layer=layer, inputs=inputs,
                    in_shapes=in_shapes, out_shape=out, rf=rf, path=entry.path,
                    block=entry.block, init=entry.init, warnings=[*ctx.warnings, *rf_warnings],
                    trainable=owner.trainable if owner else entry.trainable,
                    shares=owner.name if owner else None, shared=shared)
        self.nodes.append(node)
        self._by_name[node.name] = node
        self.warnings.extend(f"{node.label}: {w}" for w in node.warnings)
        return node

    def _share_owner(self, entry: LayerEntry, in_shape: Shape, where: str) -> Node:
        """The node whose parameters ``entry`` uses (``share:``): an earlier layer of the same
        kind with tensors of the same shapes (a layer sharing a sharing layer shares its
        owner). Its init and trainable flag are the owner's."""
        layer, path = entry.layer, entry.path
        owner = self._earlier(entry.shares, path, where)
        if owner.shares:
            owner = self.node(owner.shares)
        mine = layer.param_shapes(in_shape)
        if not mine:
            raise self._error(SpecError, f"{layer.kind} has no parameters to share", path,
                              where, hint="remove 'share'")
        if owner.kind != layer.kind:
            raise self._error(SpecError, f"share: '{owner.name}' is a {owner.kind} layer; a "
                              f"{layer.kind} layer can only share a {layer.kind} layer's "
                              "parameters", path, where, hint="name a layer of the same type")
        theirs = owner.param_shapes()
        if mine != theirs or layer.buffer_shapes(in_shape) != owner.buffer_shapes():
            def show(shapes):
                return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
            raise self._error(ShapeError, f"share: this layer's tensors would be {show(mine)}; "
                              f"'{owner.name}' holds {show(theirs)}", path, where,
                              hint="a shared layer needs the same input depth and options "
                                   "that give the same tensors")
        if entry.init is not None:
            raise self._error(SpecError, f"'init' on a layer that shares '{owner.name}'", path,
                              where, hint=f"its parameters are {owner.name}'s: set init there")
        if not entry.trainable and owner.trainable:
            raise self._error(SpecError, f"'trainable: false' on a layer that shares "
                              f"'{owner.name}'", path, where,
                              hint=f"its parameters are {owner.name}'s: freeze them there")
        return owner

    def _shared_tensors(self, entry: LayerEntry, in_shape: Shape, where: str) -> dict:
        """``share: {tensor: layer}``: some tensors are an earlier layer's (a tied weight with
        a bias of its own), any kind holding a tensor of that name and shape, trained alike.
        Returns tensor -> the layer holding it (followed through layers that share it)."""
        layer, path = entry.layer, entry.path
        mine = layer.param_shapes(in_shape)
        shared = {}
        for tensor, target in entry.shares.items():
            if tensor not in mine:
                raise self._error(SpecError, f"share: {layer.kind} has no tensor '{tensor}'"
                                  + (f" (it has {', '.join(mine)})" if mine else ""), path,
                                  where, hint="share: {weight: <layer>} names the tensors "
                                              "to share")
            owner = self._earlier(target, path, where)
            holder = self.node(owner.shared.get(tensor, owner.name))
            theirs = holder.param_shapes().get(tensor)
            if theirs != mine[tensor]:
                raise self._error(ShapeError, f"share: this layer's {tensor} would be "
                                  f"{tuple(mine[tensor])}; '{target}' holds "
                                  + (f"{tuple(theirs)}" if theirs else f"no '{tensor}'"),
                                  path, where, hint="a shared tensor needs the same shape")
            if holder.trainable != entry.trainable:
                raise self._error(SpecError, f"share: '{holder.name}' is "
                                  f"{'trained' if holder.trainable else 'frozen'} and this "
                                  "layer is not", path, where,
                                  hint="layers sharing a tensor are trained (or frozen) alike")
            shared[tensor] = holder.name
        return shared

    def _earlier(self, target: str, path, where: str) -> Node:
        """The earlier layer ``target`` that a ``share:`` names."""
        if target not in self:
            raise self._error(SpecError, f"share: '{target}' is not an earlier layer", path,
                              where, hint="name a layer above this one")
        return self.node(target)

    def _error(self, cls, message, path, where, hint=None):
        return cls(message, where=where, hint=hint, location=self.locate(path), path=path)


def build_graph(entries: Iterable[LayerEntry], *, name: str, input_shape: Shape,
                convention: Convention, **details) -> Graph:
    """Connect ``entries`` in order into a :class:`Graph`.

    ``entries`` may be a generator: each entry is connected before the next is read, so a
    spec's errors surface in the order of its layers. ``details`` are the other
    :class:`Graph` fields (``source``, ``file``, ``train``, ``source_map``).
    """
    graph = Graph(name=name, input_shape=input_shape, nodes=[], convention=convention,
                  **details)
    for entry in entries:
        graph.connect(entry)
    return graph
