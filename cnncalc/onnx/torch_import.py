"""A ``torch.nn.Module`` → spec text, through ``torch.fx``: symbolic tracing gives the calls,
shape propagation on the meta device gives their shapes (no weights are allocated).

Modules and functions find their layer kind by name in the layer registry (``nn.Conv2d`` →
``conv2d`` → ``conv``; ``F.max_pool2d`` → ``maxpool2d``), and their options by name: PyTorch's
attribute and argument names are cnncalc's canonical option names (``out_channels``,
``kernel_size``, ``negative_slope``, ...). Calls that only read shapes (``x.size(0)``) are not
data; ``view``/``reshape``/``flatten`` to (N, -1) is a flatten layer. A module called again
(or one whose parameters are all another's) shares the first call's layer (``share:``), and a
module with some of another's parameters (tied weights) shares those: parameters count once,
as ``sum(p.numel() for p in m.parameters())`` counts them.
"""
from __future__ import annotations

import importlib
import inspect
import operator

from cnncalc.layers import LAYERS
from cnncalc.layers.base import Shape
from cnncalc.onnx import InteropError, require
from cnncalc.onnx.importer import ImportResult
from cnncalc.onnx.spec_text import LayerRecord, spec_text

#: positional arguments (after the input) of functions whose signature Python cannot read
_POSITIONAL = {
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
}
_MERGES = {"add": "add", "iadd": "add", "__add__": "add", "__iadd__": "add", "cat": "concat",
           "concat": "concat"}
_RESHAPES = ("view", "reshape", "flatten")
_SHAPE_READERS = ("size", "dim", "getattr", "getitem", "numel", "shape")


def load_factory(target: str):
    """The module built by ``package.module:factory`` (a function or a class)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise InteropError(f"--torch needs package.module:factory, got '{target}'",
                           hint="e.g.  --torch torchvision.models:resnet18")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise InteropError(f"cannot load {target}: {err}",
                           hint="the module must be importable from here (PYTHONPATH)") from None


def _kind_of(name: str) -> str | None:
    for candidate in (name, name.replace("_", "")):
        kind = LAYERS.canonical(candidate)
        if kind is not None:
            return kind
    return None


class TorchImporter:
    """Walks a traced ``GraphModule`` (shapes propagated) and builds layer records."""

    def __init__(self, gm, input_shape: Shape, label: str):
        self.gm, self.input_shape, self.label = gm, input_shape, label
        self.producer: dict = {}          # fx node -> record name or "input"
        self.records: list[LayerRecord] = []
        self.notes: list[str] = []
        self.owners: dict[tuple, str] = {}   # a module's parameters (ids) -> its first layer
        self.holders: dict[int, tuple] = {}  # parameter id -> (first layer holding it, suffix)

    def shape(self, node) -> tuple:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def view_of(self, node) -> Shape | None:
        dims = self.shape(node)
        if len(dims) == 4:
            return Shape(*dims[1:])
        if len(dims) == 2:
            return Shape(dims[1], 1, 1)
        return None

    def data_args(self, node) -> list:
        found = []

        def visit(a):
            if isinstance(a, (list, tuple)):
                for x in a:
                    visit(x)
            elif a in self.producer:
                found.append(a)
        visit(node.args)
        visit(list(node.kwargs.values()))
        return found

    def fail(self, node, what: str):
        raise InteropError(f"{self.label}: {what} in {node.op} '{node.name}' "
                           f"(target {node.target!r}, inputs "
                           f"{[a.name for a in self.data_args(node)]})",
                           hint="cnncalc reads only layers it can count; see README "
                                "'ONNX and PyTorch'")

    def options(self, node, cls, values: dict) -> dict:
        out = {}
        for option, opt in cls.options.items():
            if option in values and values[option] is not None:
                raw = values[option]
                raw = list(raw) if isinstance(raw, tuple) else raw
                try:
                    out[option] = opt.parse(raw)
                except (ValueError, TypeError) as err:
                    self.fail(node, f"option {option}={values[option]!r}: {err}")
        return out

    def run(self) -> ImportResult:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.producer[node] = "input"
            elif node.op == "output":
                out = node.args[0]
                if self.producer.get(out) != (self.records[-1].name if self.records else None):
                    self.fail(node, "the output is not the last layer")
            elif node.op in ("call_module", "call_function", "call_method"):
                self.visit(node)
        text = spec_text(self.label, self.input_shape, self.records, self.notes)
        return ImportResult(text, {}, {}, list(self.notes), self.label)

    def visit(self, node) -> None:
        data = self.data_args(node)
        if not data:
            return                           # constants and shape arithmetic
        if node.op == "call_module":
            sub = self.gm.get_submodule(node.target)
            name = type(sub).__name__
            if name == "Identity":
                self.producer[node] = self.producer[data[0]]
                return
            kind = _kind_of(name)
            if kind is None:
                self.fail(node, f"unsupported module {name}")
            values = {k: getattr(sub, k) for k in LAYERS.get(kind).options if hasattr(sub, k)}
            values["bias"] = getattr(sub, "bias", None) is not None
            self.check_module(node, sub, name)
            self.add(node, node.target, kind, values, data[:1])
            self.note_sharing(sub, self.records[-1])
            return
        fn = node.target
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
        if name in _SHAPE_READERS or fn in (getattr, operator.getitem):
            return
        if name in _MERGES:
            self.add(node, node.name, _MERGES[name], {}, data)
            if _MERGES[name] == "concat":
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                if dim not in (1, -3):
                    self.fail(node, f"concatenation along dim {dim}")
            return
        if name in _RESHAPES:
            self.reshape(node, data)
            return
        kind = _kind_of(name)
        if kind is None:
            self.fail(node, f"unsupported operation {name}")
        self.add(node, "", kind, self.arguments(fn, name, node), data[:1])

    def note_sharing(self, sub, rec: LayerRecord) -> None:
        """``rec`` (a call of ``sub``) shares the layer of an earlier call of a module with the
        same parameters (``share: <layer>``), or the tensors it holds of an earlier module's
        (tied: ``share: {weight: <layer>}``)."""
        named = dict(sub.named_parameters())
        ids = tuple(id(p) for p in named.values())
        if not ids:
            return
        owner = self.owners.get((rec.kind, ids))
        if owner is not None:
            rec.shares = owner
            return
        self.owners[(rec.kind, ids)] = rec.name
        shared, other = {}, []
        for suffix, p in named.items():
            holder = self.holders.setdefault(id(p), (rec.name, suffix))
            if holder[0] == rec.name:
                continue
            if holder[1] == suffix:
                shared[suffix] = holder[0]
            else:
                other.append(f"{suffix} is {holder[0]}'s {holder[1]}")
        if shared:
            rec.shares = shared
        if other:
            self.notes.append(f"layer {rec.name}: {', '.join(other)}; cnncalc counts them "
                              "in each layer")

    def check_module(self, node, sub, name: str) -> None:
        if getattr(sub, "padding_mode", "zeros") != "zeros":
            self.fail(node, f"{name} with padding_mode={sub.padding_mode}")
        if getattr(sub, "divisor_override", None) is not None:
            self.fail(node, f"{name} with divisor_override")
        if name == "Softmax" and sub.dim not in (1, -3):
            self.fail(node, f"softmax over dim {sub.dim}")
        if name == "Flatten" and sub.start_dim != 1:
            self.fail(node, f"flatten from dim {sub.start_dim}")

    def arguments(self, fn, name: str, node) -> dict:
        args = node.args[1:]
        values = dict(node.kwargs)
        if name in _POSITIONAL:
            values.update(zip(_POSITIONAL[name], args))
            return values
        try:
            bound = inspect.signature(fn).bind_partial(None, *args, **node.kwargs)
            values.update({k: v for k, v in bound.arguments.items() if k != "input"})
        except (TypeError, ValueError):
            if args:
                self.fail(node, f"arguments of {name} cannot be read")
        return values

    def reshape(self, node, data) -> None:
        x = data[0]
        if self.view_of(x) is not None and self.view_of(x) == self.view_of(node) \
                and node.target != "flatten":
            self.producer[node] = self.producer[x]
            return
        if len(self.shape(node)) != 2:
            self.fail(node, f"reshape to {list(self.shape(node))} (cnncalc flattens to (N, -1))")
        self.add(node, "", "flatten", {}, [x])

    def add(self, node, name: str, kind: str, values: dict, data) -> None:
        cls = LAYERS.get(kind)
        options = self.options(node, cls, values)
        taken = {r.name for r in self.records}
        if name in taken:       # a module called again: conv_1, as torch.onnx names it
            name = next(f"{name}_{n}" for n in range(1, len(taken) + 2)
                        if f"{name}_{n}" not in taken)
        if not name or name == "input":
            count = sum(r.kind == kind for r in self.records) + 1
            name = f"{cls.prefix}{count}"
            while name in taken:
                count += 1
                name = f"{cls.prefix}{count}"
        rec = LayerRecord(name, kind, options, [self.producer[x] for x in data])
        self.records.append(rec)
        self.producer[node] = name


def import_torch(target: str, input_size: str = "224x224x3") -> ImportResult:
    """The spec of the module ``package.module:factory`` builds, for an input ``WxHxD``."""
    torch = require("torch")
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    from cnncalc.spec.loader import SourceMap
    from cnncalc.spec.schema import parse_input

    shape = parse_input(input_size, SourceMap())
    factory = load_factory(target)
    with torch.device("meta"):
        module = factory()
    if not isinstance(module, torch.nn.Module):
        raise InteropError(f"{target} returned a {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    try:
        gm = symbolic_trace(module)
    except Exception as err:  # noqa: BLE001 - fx raises TraceError and plain errors alike
        raise InteropError(f"{target} cannot be traced symbolically: {err}",
                           hint="data-dependent control flow (if/for on tensor values) "
                                "cannot be traced; export to ONNX with torch.onnx.export and "
                                "import that file") from None
    try:
        ShapeProp(gm).propagate(torch.empty(1, shape.c, shape.h, shape.w, device="meta"))
    except Exception as err:  # noqa: BLE001 - whatever the module raises on this input
        raise InteropError(f"{target} fails on a {shape.lecture()} input: {err}",
                           hint="give the input size the model expects with --input") from None
    label = target.partition(":")[2]
    return TorchImporter(gm, shape, label).run()
