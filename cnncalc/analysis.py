"""Graph → per-layer rows and totals as plain data (the ``--format json`` contract).

Counting conventions (stated once; README repeats them):

=================  ==========================================================================
params             learnable tensors (weights + biases; batchnorm γ, β; PReLU α), as torchvision,
                   torchinfo and the papers count them. ``trainable_params`` are the ones
                   trained, ``non_trainable_params`` the frozen ones (``trainable: false``).
                   A tensor a layer shares with another (``share:``) counts in the layer
                   holding it only: once
buffers            state that is not learned: batchnorm running mean and variance. Not in
                   ``params``; counted in ``param_bytes`` (it is stored and loaded)
MACs               multiply-accumulates of learned weights only: conv (H2·W2·K·(D1/g)·F·F),
                   fc (D_in·N), maxout (k·D_in·N), at every use of shared weights. Everything
                   else is 0 MACs.
FLOPs              2·MACs + one add per bias; max-pool F·F − 1 compares per output; avg-pool
                   F·F per output; activations 1 per element (softmax 3); batchnorm 2 per
                   element; add (branches − 1) per element; LRN 2n + 3 per element; dropout,
                   flatten, concat, zero padding 0
training MACs      forward + backward per example: the forward MACs, the input gradient dX
                   (the same multiply-adds again for every learned layer except those fed by
                   the network input, whose dX nobody needs) and the weight gradient dW (the
                   same again for every trained layer); per step = per example · batch
activations        output values of each layer, per example
bytes              float32 forward activations (input + every layer's output) per example
=================  ==========================================================================
Everything is per example; ``batch`` scales the activation memory.
"""
from __future__ import annotations

from cnncalc.layers.base import prod
from cnncalc.limits import format_bytes

ABSURD_BYTES = 1 << 40  # 1 TiB


def layer_row(node) -> dict:
    layer, x, y = node.layer, node.in_shape, node.out_shape
    shapes = node.own_param_shapes()
    weights = sum(prod(s) for k, s in shapes.items() if k != "bias")
    biases = prod(shapes["bias"]) if "bias" in shapes else 0
    buffers = sum(prod(s) for s in node.own_buffer_shapes().values())
    flops = layer.flops(x, y)
    if node.kind == "add":
        flops *= len(node.inputs) - 1
    rf = node.rf
    return {
        "index": node.index,
        "name": node.name,
        "type": node.kind,
        "hyper": layer.describe(),
        "inputs": list(node.inputs),
        "input": x.as_dict(),
        "output": y.as_dict(),
        "params": weights + biases,
        "weights": weights,
        "biases": biases,
        "buffers": buffers,
        "trainable": node.trainable,
        "shares": dict(node.shared),
        "macs": layer.macs(x, y),
        "flops": flops,
        "activations": y.size,
        "rf": rf.as_dict(),
        "rf_exceeds_input": False,
        "warnings": list(node.warnings),
    }


def analyze(graph, batch: int = 1, optimizer: str | None = None, dtype_bytes: int = 4) -> dict:
    """Per-layer and total counts; see the module docstring for what is counted."""
    from cnncalc.errors import SpecError

    if batch < 1:
        raise SpecError(f"batch must be a positive integer, got {batch}")
    if optimizer is not None:
        optimizer, state = optimizer_state(optimizer)
    inp = graph.input_shape
    rows = [layer_row(n) for n in graph.nodes]
    for row, node in zip(rows, graph.nodes):
        size = node.rf.size
        if size[0] > inp.h or size[1] > inp.w:
            row["rf_exceeds_input"] = True
    params = sum(r["params"] for r in rows)
    trainable = sum(r["params"] for r in rows if r["trainable"])
    buffers = sum(r["buffers"] for r in rows)
    activations = sum(r["activations"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    backward_input = sum(r["macs"] for r in rows if r["inputs"] != ["input"])
    backward_weights = sum(r["macs"] for r in rows if r["trainable"])
    train_macs = macs + backward_input + backward_weights
    per_example = (inp.size + activations) * dtype_bytes
    totals = {
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "buffers": buffers,
        "macs": macs,
        "flops": sum(r["flops"] for r in rows),
        "train_macs": {"forward": macs, "backward_input": backward_input,
                       "backward_weights": backward_weights, "per_example": train_macs,
                       "per_step": train_macs * batch},
        "activations": activations,
        "bytes": per_example,
        "batch": batch,
        "batch_bytes": per_example * batch,
        "param_bytes": (params + buffers) * dtype_bytes,
    }
    warnings = list(graph.warnings)
    if optimizer is not None:
        training = {
            "optimizer": optimizer,
            "param_bytes": (params + buffers) * dtype_bytes,
            "gradient_bytes": trainable * dtype_bytes,         # frozen tensors get none
            "optimizer_state_bytes": state * trainable * dtype_bytes,
            "activation_bytes": per_example * batch,
            "activation_gradient_bytes": per_example * batch,
        }
        training["total_bytes"] = sum(v for k, v in training.items() if k.endswith("_bytes"))
        totals["training"] = training
    peak = totals.get("training", {}).get("total_bytes", totals["batch_bytes"])
    if peak > ABSURD_BYTES:
        warnings.append(f"memory estimate {format_bytes(peak)} exceeds 1 TiB: check the input "
                        "size, the number of filters and the batch")
    return {
        "name": graph.name,
        "input": inp.as_dict(),
        "convention": graph.convention.name,
        "layers": rows,
        "totals": totals,
        "output": graph.output_shape.as_dict(),
        "warnings": warnings,
    }


def optimizer_state(name: str) -> tuple[str, int]:
    """``(canonical name, state arrays kept per parameter)`` of an optimizer: its registry
    entry's ``state`` (momentum's velocity: 1; Adam's two moments: 2)."""
    from cnncalc.errors import SpecError
    from cnncalc.optim import OPTIMIZERS  # numpy: loaded only for a training-memory estimate

    canonical = OPTIMIZERS.canonical(name)
    if canonical is None:
        raise SpecError(f"unknown optimizer '{name}'",
                        hint=f"choose one of: {', '.join(OPTIMIZERS.names())}")
    return canonical, OPTIMIZERS.lookup(canonical).extra["state"]
