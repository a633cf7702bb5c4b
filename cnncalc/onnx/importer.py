"""ONNX model → cnncalc layer records → spec text, plus the model's weights.

Each ONNX node that computes on the data is handed to the layer kinds that declare its op type
(``Layer.onnx_op_types``); the first whose ``from_onnx`` accepts it becomes the layer. What
is not data is folded away: initializers, ``Constant`` nodes, ``Identity`` on initializers
(followed back to the initializer; see :meth:`OnnxImporter._share` for when two layers reading
one initializer share it), and
the shape arithmetic of ``x.view(N, -1)`` (Shape → Gather → Unsqueeze → Concat → Reshape),
whose result ``onnx.shape_inference`` (with data propagation) gives. Reshapes that do not
change cnncalc's view of a tensor ((N, C) is 1 x 1 x C) are aliases, and so is a flatten that
only feeds fully connected layers (which flatten their input themselves). A constant added to
a bias-free conv or fc becomes its bias (MatMul + Add is a Linear).

An op no layer accepts stops the import with the op, the node and its inputs: nothing is
silently counted as zero.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cnncalc.layers import LAYERS
from cnncalc.layers.base import Shape, prod
from cnncalc.onnx import InteropError, require
from cnncalc.onnx.spec_text import LayerRecord, spec_text
from cnncalc.shapes import same_padding

#: ops that never change cnncalc's view of a tensor when shapes agree (and the Slice cnncalc's
#: export puts after a ceil-mode pool whose last ONNX window PyTorch drops)
_RESHAPES = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice")
_CEIL_POOLS = ("maxpool", "avgpool")
#: ops that only read a tensor's shape (their outputs are not data)
_SHAPE_READERS = ("Shape", "Size")
#: layer kinds that flatten their input themselves
_SELF_FLATTENING = ("Gemm", "MatMul")


@dataclass
class ImportResult:
    """An imported model: its spec text, weights (``params``), BN statistics (``buffers``)
    and notes for the user (also written as comments at the top of the spec)."""

    spec_text: str
    params: dict
    buffers: dict
    notes: list[str] = field(default_factory=list)
    name: str = ""


def _float(value: float) -> float:
    """An ONNX float (float32) as the shortest decimal that reads back to it (1e-05, not
    9.99999974e-06)."""
    import numpy as np

    return float(str(np.float32(value)))


def node_scope(node) -> str:
    """The module path in a node name as PyTorch writes it: ``/layer1/layer1.0/conv1/Conv``
    is ``layer1.0.conv1``; '' when the name has no path."""
    parts = [p for p in (node.name or "").strip("/").split("/") if p]
    if len(parts) < 2 or not (parts[-1] == node.op_type or parts[-1].startswith(node.op_type)):
        return ""
    parts = parts[:-1]
    kept = [p for i, p in enumerate(parts)
            if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return re.sub(r"[^A-Za-z0-9_.]+", "_", ".".join(kept)).strip("._")


#: initializers larger than this reach shape inference as typed inputs, without their values
#: (only small constants, shapes and axes, matter to data propagation)
_INFERENCE_CONST_LIMIT = 1024


def _for_shape_inference(model):
    """A light copy of ``model`` for ``onnx.shape_inference``: the data inputs get batch 1
    (with a symbolic batch, data propagation cannot resolve the -1 of ``x.view(N, -1)``), and
    large initializers become typed graph inputs, so that inference does not serialise the
    weights (VGG-16's are over 500 MB) again and again."""
    onnx = require("onnx")
    fixed = onnx.ModelProto()
    fixed.ir_version = model.ir_version
    fixed.opset_import.extend(model.opset_import)
    fixed.functions.extend(model.functions)
    graph, src = fixed.graph, model.graph
    graph.name = src.name
    graph.node.extend(src.node)
    graph.input.extend(src.input)
    graph.output.extend(src.output)
    graph.value_info.extend(src.value_info)
    declared = {vi.name for vi in src.input}
    for init in src.initializer:
        if prod(init.dims) <= _INFERENCE_CONST_LIMIT:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type,
                                                                  list(init.dims)))
    initializers = {i.name for i in src.initializer}
    for vi in graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in initializers and len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return fixed


class NodeView:
    """What ``Layer.from_onnx`` sees of one ONNX node: attributes, constant inputs, shapes."""

    def __init__(self, node, importer: OnnxImporter):
        self.node, self.imp = node, importer
        self.op = node.op_type
        self.name = node.name
        self.opset = importer.opset
        self.outputs = [o for o in node.output if o]
        self._attrs = {a.name: a for a in node.attribute}

    def attr(self, name: str, default=None):
        a = self._attrs.get(name)
        if a is None:
            return default
        value = require("onnx").helper.get_attribute_value(a)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, float):
            return _float(value)
        if isinstance(value, list):
            return [_float(v) if isinstance(v, float) else v for v in value]
        return value

    def const(self, i: int):
        """Input ``i`` as an array when it is a constant; None when absent or data."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self.imp.consts.get(self.node.input[i])

    def scalar(self, i: int):
        value = self.const(i)
        return None if value is None or value.size != 1 else _float(value.reshape(-1)[0])

    @property
    def data_inputs(self) -> list[str]:
        return [x for x in self.node.input if x in self.imp.data]

    @property
    def all_data(self) -> bool:
        return all(x in self.imp.data for x in self.node.input if x)

    @property
    def rank(self) -> int:
        return len(self.imp.dims(self.data_inputs[0], self))

    @property
    def out_rank(self) -> int:
        return len(self.imp.dims(self.outputs[0], self))

    @property
    def in_shape(self) -> Shape:
        return self.imp.shape_of(self.data_inputs[0], self)

    def pads(self, kernel) -> tuple:
        """((top, bottom), (left, right)) from ``pads`` ([top, left, bottom, right]) or
        ``auto_pad``."""
        auto = self.attr("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            x = self.in_shape
            strides = self.attr("strides", (1, 1))
            dilations = self.attr("dilations", (1, 1))
            both = [same_padding(n, k, s, d)
                    for n, k, s, d in zip((x.h, x.w), kernel, strides, dilations)]
            return tuple(p if auto == "SAME_UPPER" else p[::-1] for p in both)
        t, left, b, r = self.attr("pads", [0, 0, 0, 0]) if auto != "VALID" else (0, 0, 0, 0)
        return ((t, b), (left, r))

    def describe(self) -> str:
        ins = ", ".join(f"{x} {self.imp.dims_text(x)}" for x in self.node.input if x)
        return f"{self.op} node '{self.name or self.outputs[0]}' (inputs: {ins or 'none'})"


class OnnxImporter:
    """One import: walks the model's nodes in order and builds :class:`LayerRecord` s."""

    def __init__(self, model, source: str = "model"):
        onnx = require("onnx")
        import numpy

        self.np = numpy
        self.source = source
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          1)
        try:
            inferred = onnx.shape_inference.infer_shapes(_for_shape_inference(model),
                                                         data_prop=True)
        except Exception as err:  # noqa: BLE001 - onnx raises several kinds
            raise InteropError(f"{source}: shape inference failed: {err}") from None
        self.graph = inferred.graph
        self.consts: dict = {i.name: onnx.numpy_helper.to_array(i)
                             for i in model.graph.initializer}
        self.initializer_names = set(self.consts)
        self.shapes: dict[str, list] = {}
        for vi in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                        for d in vi.type.tensor_type.shape.dim]
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise InteropError(f"{source}: cnncalc reads models with one input; this one has "
                               f"{len(inputs)} ({', '.join(i.name for i in inputs)})")
        self.input = inputs[0].name
        self.data: set[str] = {self.input}
        self.producer: dict[str, str] = {self.input: "input"}   # data tensor -> record name
        self.records: list[LayerRecord] = []
        self.by_name: dict[str, LayerRecord] = {}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for x in node.input:
                self.consumers.setdefault(x, []).append(node)
        self.root: dict[str, str] = {}           # Identity of an initializer -> the initializer
        self.reads: dict[str, list] = {}         # record name -> [(initializer, direct)]
        self.notes: list[str] = []

    # ---- shapes ------------------------------------------------------------------------
    def dims(self, name: str, view: NodeView | None = None) -> list:
        dims = self.shapes.get(name)
        if dims is None:
            where = view.describe() if view else name
            raise InteropError(f"{self.source}: shape of '{name}' is unknown", where=where,
                               hint="export the model with fixed input sizes")
        return dims

    def dims_text(self, name: str) -> str:
        if name in self.consts:
            return f"constant {list(self.consts[name].shape)}"
        dims = self.shapes.get(name)
        return "?" if dims is None else "[" + ", ".join("N" if d is None else str(d)
                                                        for d in dims) + "]"

    def shape_of(self, name: str, view: NodeView | None = None) -> Shape:
        """cnncalc's view of a data tensor: (C, H, W); a (N, C) tensor is C x 1 x 1."""
        dims = self.dims(name, view)
        if len(dims) == 2 and dims[1]:
            return Shape(dims[1], 1, 1)
        if len(dims) == 4 and all(dims[1:]):
            return Shape(*dims[1:])
        raise InteropError(f"{self.source}: tensor '{name}' has shape {self.dims_text(name)}; "
                           "cnncalc handles (N, C, H, W) and (N, C) tensors",
                           where=view.describe() if view else None)

    # ---- walking -------------------------------------------------------------------------
    def run(self) -> ImportResult:
        handlers: dict[str, list] = {}
        for kind in LAYERS.names():
            cls = LAYERS.get(kind)
            for op in cls.onnx_op_types():
                handlers.setdefault(op, []).append(cls)
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                self._unsupported(NodeView(node, self), f"operator domain '{node.domain}'")
            self._visit(node, handlers)
        self._check_output()
        self._share()
        self._note_folded_bn()
        return self._result()

    def _visit(self, node, handlers) -> None:
        onnx = require("onnx")
        view = NodeView(node, self)
        if node.op_type == "Constant":
            value = node.attribute[0]
            self.consts[node.output[0]] = onnx.numpy_helper.to_array(value.t) \
                if value.type == onnx.AttributeProto.TENSOR \
                else self.np.asarray(onnx.helper.get_attribute_value(value))
            return
        if not view.data_inputs or node.op_type in _SHAPE_READERS:
            self._fold_constant(node)
            return
        if len(view.data_inputs) == 1 and self._is_alias(view):
            self.producer[view.outputs[0]] = self.producer[view.data_inputs[0]]
            self.data.add(view.outputs[0])
            return
        if node.op_type in ("Add", "Sum") and self._fold_bias(view):
            return
        for cls in handlers.get(node.op_type, ()):
            found = cls.from_onnx(view)
            if found is not None:
                self._add(view, cls, found)
                return
        self._unsupported(view)

    def _fold_constant(self, node) -> None:
        """A node computed from constants (or shapes) only. Its value matters only for an
        Identity of an initializer (PyTorch's de-duplicated parameters), which is kept; the
        rest is shape arithmetic, whose result shape inference already gave."""
        if node.op_type == "Identity" and node.input[0] in self.consts:
            self.consts[node.output[0]] = self.consts[node.input[0]]
            if node.input[0] in self.initializer_names or node.input[0] in self.root:
                self.root[node.output[0]] = self.root.get(node.input[0], node.input[0])

    def _is_alias(self, view: NodeView) -> bool:
        if view.op not in _RESHAPES:
            return False
        x, out = view.data_inputs[0], view.outputs[0]
        if view.op == "Identity":
            return True
        if view.op == "Slice":       # cnncalc's export, after a ceil-mode pool: see _Pool2d
            rec = self.by_name.get(self.producer[x])
            return (rec is not None and rec.kind in _CEIL_POOLS and rec.options.get("ceil_mode")
                    and node_scope(view.node) == rec.name)
        if view.op != "Flatten" and len(self.dims(out, view)) in (2, 4) \
                and self.shape_of(x, view) == self.shape_of(out, view):
            return True
        # the flatten a fully connected layer emitted for its own input (same /layer/ scope:
        # cnncalc's export); a model's own flatten stays a layer
        readers = self.consumers.get(out, [])
        scope = node_scope(view.node)
        return (len(self.dims(out, view)) == 2 and bool(scope) and bool(readers)
                and all(r.op_type in _SELF_FLATTENING and r.input[0] == out
                        and node_scope(r) == scope for r in readers))

    def _fold_bias(self, view: NodeView) -> bool:
        """``y = layer(x) + b`` with a constant ``b``: the bias of a bias-free conv or fc."""
        data, consts = view.data_inputs, [x for x in view.node.input if x in self.consts]
        if len(data) != 1 or len(consts) != 1:
            return False
        rec = self.by_name.get(self.producer[data[0]])
        bias = self.consts[consts[0]]
        if (rec is None or rec is not self.records[-1] or rec.options.get("bias") is not False
                or len(self.consumers.get(data[0], [])) != 1):
            return False
        if bias.size != self.shape_of(data[0], view).c:
            return False
        rec.options["bias"] = True
        rec.weights["bias"] = bias.reshape(-1)
        self._note_reads(rec.name, consts)
        self.producer[view.outputs[0]] = rec.name
        self.data.add(view.outputs[0])
        return True

    def _add(self, view: NodeView, cls, found: dict) -> None:
        name = self._layer_name(view, cls)
        inputs = [self.producer[x] for x in view.data_inputs]
        weights = {k: self.np.asarray(v, dtype=self.np.float32)
                   for k, v in (found.get("weights") or {}).items() if v is not None}
        self._note_reads(name, view.node.input)
        rec = LayerRecord(name, cls.kind, dict(found["options"]), inputs, weights)
        self.records.append(rec)
        self.by_name[name] = rec
        for out in view.outputs[:1]:
            self.producer[out] = name
            self.data.add(out)

    def _note_reads(self, name: str, inputs) -> None:
        """Remember which initializers the record ``name`` reads, and whether directly."""
        for x in inputs:
            if x in self.initializer_names or x in self.root:
                self.reads.setdefault(name, []).append((self.root.get(x, x), x not in self.root))

    def _layer_name(self, view: NodeView, cls) -> str:
        """The node's name made a valid, unique layer name (see :func:`node_scope`)."""
        base = node_scope(view.node)
        if not base and not view.name.strip("/").startswith(view.op):  # '/Relu_1' says nothing
            base = re.sub(r"[^A-Za-z0-9_.]+", "_", view.name).strip("._")
        if not base or base == "input":
            base = f"{cls.prefix}{sum(r.kind == cls.kind for r in self.records) + 1}"
        name, n = base, 1
        while name in self.by_name or name == "input":
            n += 1
            name = f"{base}_{n}"
        return name

    def _unsupported(self, view: NodeView, what: str | None = None):
        raise InteropError(
            f"{self.source}: unsupported {what or 'operator ' + repr(view.op)} in "
            f"{view.describe()}", hint="cnncalc reads only operators it can count; see "
                                       "README 'ONNX and PyTorch' for the list")

    # ---- after the walk -------------------------------------------------------------------
    def _check_output(self) -> None:
        if not self.records:
            raise InteropError(f"{self.source}: the model has no layers cnncalc counts")
        outputs = [o.name for o in self.graph.output]
        last = self.producer.get(outputs[0])
        if last != self.records[-1].name:
            raise InteropError(f"{self.source}: output '{outputs[0]}' is not computed by the "
                               "last layer", hint="cnncalc specs end at their output layer")
        if len(outputs) > 1:
            self.notes.append(f"the model has {len(outputs)} outputs; only '{outputs[0]}' "
                              "is imported")

    def _share(self) -> None:
        """Initializers count once. A layer reading the same initializers as an earlier layer
        of its kind shares that layer (``share: <layer>``): PyTorch exports a module called
        twice that way. One reading some of another layer's initializers (a tied weight with a
        bias of its own) shares those tensors (``share: {weight: <layer>}``). Reached through
        ``Identity`` nodes initializers are shared only when a weight has two or more
        dimensions: PyTorch's exporter also de-duplicates *separate* parameters that merely
        hold equal values through Identity (fresh batch norm scales, zero biases), and those
        stay one parameter per layer, as the model counts them."""
        owners: dict[tuple, LayerRecord] = {}
        for rec in self.records:
            reads = self.reads.get(rec.name)
            if not reads:
                continue
            owner = owners.setdefault((rec.kind, tuple(root for root, _ in reads)), rec)
            direct = all(d for _, d in reads)
            matrix = any(getattr(v, "ndim", 0) >= 2 for v in rec.weights.values())
            if owner is not rec and (direct or matrix) \
                    and rec.weights.keys() == owner.weights.keys() \
                    and self._same(rec, owner, rec.weights):
                rec.shares, rec.weights = owner.name, {}
        holders: dict[str, LayerRecord] = {}   # initializer -> the layer holding it
        unshared: dict[str, set] = {}
        for rec in self.records:
            if isinstance(rec.shares, str):
                continue
            for root, direct in self.reads.get(rec.name, ()):
                holder = holders.setdefault(root, rec) if direct else rec
                if holder is rec:
                    continue
                size = self.consts[root].size     # which tensor the initializer is
                tensor = next((k for k, v in rec.weights.items()
                               if v.size == size and self._same(rec, holder, [k])), None)
                if tensor is None:     # read as another tensor (transposed, another role)
                    unshared.setdefault(root, {holder.name}).add(rec.name)
                    continue
                rec.shares = {**(rec.shares or {}), tensor: holder.name}
                del rec.weights[tensor]
        for init, names in sorted(unshared.items()):
            size = int(self.consts[init].size)
            self.notes.append(
                f"layers {', '.join(sorted(names))} read the initializer '{init}' ({size:,} "
                "values) as different tensors; cnncalc counts it in each layer, "
                f"{size * (len(names) - 1):,} more than the model holds")

    def _same(self, rec: LayerRecord, other: LayerRecord, tensors) -> bool:
        """Whether ``rec``'s ``tensors`` (suffixes) equal ``other``'s, value for value."""
        return all(k in other.weights and rec.weights[k].shape == other.weights[k].shape
                   and self.np.array_equal(rec.weights[k], other.weights[k]) for k in tensors)

    def _note_folded_bn(self) -> None:
        """PyTorch's exporter folds eval-mode BN into the preceding conv and names the fused
        weights ``onnx::Conv_*``: the BN layers and their statistics are then gone."""
        has_bn = any(r.kind == "batchnorm" for r in self.records)
        fused = [n.name for n in self.graph.node if n.op_type == "Conv" and len(n.input) > 1
                 and n.input[1].startswith("onnx::")]
        if fused and not has_bn:
            self.notes.append(
                f"batch norm appears folded into {len(fused)} conv layer(s) by the exporter "
                "(fused weights named onnx::Conv_*): BN layers, their parameters and buffers "
                "are not in this model")

    def _result(self) -> ImportResult:
        params, buffers = {}, {}
        for rec in self.records:
            cls = LAYERS.get(rec.kind)
            buffer_names = set(cls(**rec.options).buffer_shapes(Shape(1, 1, 1)))
            for suffix, value in rec.weights.items():
                (buffers if suffix in buffer_names else params)[f"{rec.name}.{suffix}"] = value
        name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(self.source).stem
                      if self.source.endswith(".onnx") else self.graph.name or "model")
        text = spec_text(name, self.shape_of(self.input), self.records, self.notes)
        return ImportResult(text, params, buffers, list(self.notes), name)


def read_model(source):
    """A ``ModelProto`` from a path (or the model itself)."""
    onnx = require("onnx")
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    if not path.is_file():
        raise InteropError(f"ONNX file '{path}' not found")
    try:
        return onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf decode errors vary
        raise InteropError(f"cannot read ONNX file '{path}': {err}") from None


def import_model(source) -> ImportResult:
    """An ONNX model (path or ``ModelProto``) as spec text plus weights."""
    label = str(source) if isinstance(source, (str, Path)) else "model"
    return OnnxImporter(read_model(source), label).run()
