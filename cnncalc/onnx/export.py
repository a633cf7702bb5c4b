"""Graph + weights → ONNX model. Each layer emits its own nodes (``Layer.to_onnx``); the
:class:`Builder` here holds the tensors, initializers and the few conversions layers share.

The model's input is ``input`` (N, C, H, W) float32 with a symbolic batch; its output is
``output``: (N, K) logits when the network ends in 1 x 1 x K, else (N, C, H, W). Tensors stay
2-D after a fully connected layer (Gemm's output) and get back to 4-D (Unsqueeze) only where a
spatial op needs it.
"""
from __future__ import annotations

from cnncalc.graph import INPUT_NAME, Graph
from cnncalc.onnx import DEFAULT_OPSET, InteropError, require

INPUT = "input"
OUTPUT = "output"


class Builder:
    """Collects ONNX nodes and initializers for one export.

    ``params`` maps ``"<layer>.<suffix>"`` to arrays (weights and buffers); ``convention`` is
    the graph's (padding and ceil rules); ``opset`` the target opset.
    """

    def __init__(self, params: dict, convention, opset: int):
        self.onnx = require("onnx")
        import numpy as np

        self.np = np
        self.params = params
        self.convention = convention
        self.opset = opset
        self.nodes: list = []
        self.initializers: dict = {}
        self.ranks: dict[str, int] = {}
        self.scope = ""             # the layer being emitted
        self.node_names: set[str] = set()
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    # ---- what layers call ------------------------------------------------------------------
    def node(self, op: str, inputs: list[str], **attrs) -> str:
        """Append an ``op`` node; returns its (single) output's name."""
        out = self._fresh(op.lower())
        # named as PyTorch names them, /<layer>/<Op>: the importer gives the layer its name back
        name = f"/{self.scope}/{op}" if self.scope else out
        if name in self.node_names:
            name = f"{name}_{self._count}"
        self.node_names.add(name)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out],
                                                     name=name, **attrs))
        self.ranks[out] = self._rank_after(op, inputs, attrs)
        return out

    def _rank_after(self, op: str, inputs: list[str], attrs: dict) -> int:
        if op in ("Gemm", "Flatten", "Squeeze"):
            return 2
        if op == "Reshape":     # the rank of its constant target shape
            return int(self.initializers[inputs[1]].dims[0])
        if op in ("ReduceMax", "ReduceMean"):
            return self.ranks.get(inputs[0], 4) - (0 if attrs.get("keepdims", 1) else 1)
        if op == "Unsqueeze":
            return 4
        return self.ranks.get(inputs[0], 4)

    def param(self, node, suffix: str, shape: tuple | None = None) -> str:
        """The initializer of the layer's tensor ``suffix`` (weights, BN statistics),
        reshaped to ``shape`` when given. A layer that shares another's parameters reads the
        owner's initializer (one tensor, as PyTorch exports a module called twice)."""
        key = node.param_key(suffix)
        if key not in self.params:
            raise InteropError(f"no value for {key}", where=node.label,
                               hint="the checkpoint does not match its spec")
        value = self.np.asarray(self.params[key], dtype=self.np.float32)
        if shape is not None:
            value = value.reshape(shape)
        if key not in self.initializers:
            self.initializers[key] = self.onnx.numpy_helper.from_array(value, key)
        return key

    def const(self, values, dtype: str = "float32") -> str:
        """A constant initializer (shape arguments, clip bounds)."""
        name = self._fresh("const")
        self.initializers[name] = self.onnx.numpy_helper.from_array(
            self.np.asarray(values, dtype=dtype), name)
        return name

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        """``ReduceMean``/``ReduceMax`` over ``axes``: an attribute before opset 18, an input
        from 18 on."""
        if self.opset >= 18:
            return self.node(op, [x, self.const(axes, "int64")], keepdims=keepdims)
        return self.node(op, [x], axes=axes, keepdims=keepdims)

    def rank(self, x: str) -> int:
        return self.ranks.get(x, 4)

    def as_4d(self, x: str) -> str:
        """``x`` as (N, C, H, W): a (N, C) tensor gets H = W = 1."""
        if self.rank(x) == 4:
            return x
        return self.node("Unsqueeze", [x, self.const([2, 3], "int64")])

    def as_2d(self, x: str) -> str:
        """``x`` as (N, C·H·W), PyTorch's flatten order."""
        return x if self.rank(x) == 2 else self.node("Flatten", [x], axis=1)

    def same_rank(self, xs: list[str]) -> list[str]:
        """Branches to merge, all 4-D when any is."""
        return [self.as_4d(x) for x in xs] if len({self.rank(x) for x in xs}) > 1 else xs

    def unsupported(self, node):
        raise InteropError(f"{node.kind} has no ONNX form", where=node.label,
                           hint="replace the layer, or analyze the spec without exporting it")


def ir_version_for(opset: int) -> int:
    """The oldest IR version that carries ``opset``: ``make_model`` stamps the newest, which
    older runtimes refuse."""
    helper = require("onnx").helper
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


def export_graph(graph: Graph, params: dict, *, opset: int = DEFAULT_OPSET,
                 preprocessor=None, check: bool = True):
    """The ``ModelProto`` of ``graph`` with the weights and buffers in ``params``.

    ``preprocessor`` (a checkpoint's) is emitted first, as ONNX ops, so the model takes the raw
    input that ``cnncalc predict`` takes. ``check`` runs ``onnx.checker`` with ``full_check``.
    """
    onnx = require("onnx")
    if opset < 13:
        raise InteropError(f"opset {opset} is too old", hint="export with --opset 13 or newer")
    b = Builder(params, graph.convention, opset)
    c, h, w = graph.input_shape
    values = {INPUT_NAME: INPUT}
    b.ranks[INPUT] = 4
    x = INPUT
    if preprocessor is not None:
        to_onnx = getattr(preprocessor, "to_onnx", None)
        if to_onnx is None:
            raise InteropError(f"preprocessing '{preprocessor.name}' has no ONNX form",
                               hint="export the spec instead and preprocess before running it")
        x = to_onnx(b, x)
    values[INPUT_NAME] = x
    for node in graph.nodes:
        inputs = [values[s] for s in node.inputs]
        b.scope = node.name
        values[node.name] = node.layer.to_onnx(b, inputs if node.layer.n_inputs != 1
                                               else inputs[0], node)
    b.scope = ""
    last = values[graph.output.name]
    out_shape = graph.output_shape
    if out_shape.h == out_shape.w == 1:  # logits (N, K); Squeeze, so no flatten layer appears
        if b.rank(last) == 4:
            last = b.node("Squeeze", [last, b.const([2, 3], "int64")])
        dims = ["N", out_shape.c]
    else:
        last, dims = b.as_4d(last), ["N", *out_shape]
    b.nodes.append(onnx.helper.make_node("Identity", [last], [OUTPUT], name=OUTPUT))
    f32 = onnx.TensorProto.FLOAT
    model_graph = onnx.helper.make_graph(
        b.nodes, graph.name or "cnncalc",
        [onnx.helper.make_tensor_value_info(INPUT, f32, ["N", c, h, w])],
        [onnx.helper.make_tensor_value_info(OUTPUT, f32, dims)],
        initializer=list(b.initializers.values()))
    model = onnx.helper.make_model(model_graph, opset_imports=[onnx.helper.make_opsetid("",
                                                                                         opset)],
                                   producer_name="cnncalc", ir_version=ir_version_for(opset))
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as err:
            raise InteropError(f"the exported model fails onnx.checker: {err}") from None
    return model


def export_spec(spec, *, init: str = "he", seed: int = 0, opset: int = DEFAULT_OPSET):
    """A spec (path, text or graph) with freshly initialised weights (``init``, ``seed``) and
    BN statistics at their start values (mean 0, variance 1)."""
    import numpy as np

    from cnncalc.spec import load
    from cnncalc.engine.init import init_params

    graph = spec if isinstance(spec, Graph) else load(spec)
    overrides = {n.name: n.init for n in graph.nodes if n.init is not None}
    params = init_params({**graph.param_shapes(), **graph.buffer_shapes()}, init,
                         np.random.default_rng(seed), overrides=overrides)
    return export_graph(graph, params, opset=opset)


def export_checkpoint(path, *, opset: int = DEFAULT_OPSET):
    """A training checkpoint: its trained weights, BN statistics and preprocessing."""
    from cnncalc.spec import load
    from cnncalc.train import preprocess
    from cnncalc.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    graph = load(ckpt.spec_text)
    prep = preprocess.from_state(ckpt.preprocess_state) if ckpt.preprocess_state else None
    return export_graph(graph, {**ckpt.params, **(ckpt.buffers or {})}, opset=opset,
                        preprocessor=prep)


def save(model, path) -> None:
    require("onnx").save(model, str(path))
