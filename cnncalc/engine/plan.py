"""Execution plan: graph nodes → steps, fusing the patterns that have fast kernels.

Patterns (:mod:`cnncalc.kernels.fast.fused`), fused only when every intermediate output is used
by the next layer of the chain alone (and is not the network output):

* ``conv → relu → maxpool``: conv with stride 1, dilation 1, groups 1, a square kernel and the same
  zero padding on all four sides; max-pool with a square window k, stride k, no padding, no
  dilation and floor rounding (``1 <= k <= 11``). Runs as one ``conv_relu_maxpool`` step; only
  the pooled output (and an int8 argmax) is stored.
* ``fc → relu``: one ``linear_relu`` step. A lone ``fc`` also runs on the fused linear kernel
  (with the ReLU off).
* ``batchnorm → relu``: one ``batchnorm_relu`` step (:class:`BatchNormReluOp`): the ReLU is
  applied in batch norm's normalising pass and its backward inside batch norm's gradient passes.
* ``batchnorm → add → relu`` (a residual block's tail, ``relu(bn(x) + s)`` with ``s`` the add's
  other input, computed before the batch norm): one ``batchnorm_add_relu`` step
  (:class:`BatchNormAddReluOp`): the sum in the normalising pass, ``s``'s gradient written by
  the backward's first pass, which also adds the two parts of the output's gradient when the
  output has two readers (``Op.takes_gradient_parts``).

Whole-network fast path (:func:`find_chain`): when the graph is exactly
``input → (conv → relu → maxpool)* → [flatten] → (fc [→ relu])* → fc`` (every block fusable as
above, each value used only by the next node), the network also gets a :class:`ChainSpec` and runs
on shape-specialised generated kernels (:mod:`cnncalc.kernels.fast.gen`), split over the batch
on worker threads (:mod:`cnncalc.kernels.fast.threads`). The steps stay the reference path.

Every step calls serial (cached) kernels only; the fused ops, like the generic ones, split the
batch over the engine's thread pool when the work pays (per-slice scratch and gradient buffers,
gradients summed in slice order).

Everything else runs one generic op per node (:mod:`cnncalc.engine.ops`). A step is placed at its
first node's position in the (topological) node order: its inputs exist there, and nothing
between its first and last node can read the hidden intermediates. Then a convolution that
reads a value an earlier step read moves up to run right after that step, where its inputs
exist (:func:`_readers_together`: a projection shortcut beside its block's first conv).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncalc.engine.ops import (MIN_MACS, BatchNormOp, ConvOp, MaxPoolOp, Op, _sum_into,
                                make_op)
from cnncalc.graph import INPUT_NAME
from cnncalc.kernels.fast import fused as _fused

__all__ = ["Step", "build_plan", "find_chain"]


@dataclass
class Step:
    """One executable unit: ``op`` reads ``inputs`` and produces the value named ``output``."""

    op: Op
    inputs: list[str]
    output: str
    nodes: list[str]
    fused: str | None = None
    has_params: bool = False

    def describe(self) -> str:
        what = self.fused or self.op.kind
        names = " + ".join(self.nodes)
        folded = getattr(self.op, "folded_into", None)
        grad_folded = getattr(self.op, "grad_folded_into", None)
        by = ([f"applied by {folded.name}"] if folded is not None else []) + (
            [f"input gradient by {grad_folded.name}"] if grad_folded is not None else [])
        return f"{what}: {names} <- {', '.join(self.inputs)}" + (
            f" ({'; '.join(by)})" if by else "")


# ------------------------------------------------------------------------------- fused ops
def _chunk_outs(op, chunks: int) -> None:
    """Grow ``op.bwd_out`` (and ``op.fwd_out`` where the op has one) to one buffer dict per
    batch chunk: scratch, and the dw/db of chunks 1.. (chunk 0 writes its dw/db straight into
    the gradient views); the chunks' gradients are summed in chunk order."""
    for outs in (getattr(op, "fwd_out", None), op.bwd_out):
        while outs is not None and len(outs) < chunks:
            outs.append({})
    d = op.bwd_out[0]
    if "dw" not in d:
        d["dw"] = op.grads["weight"]
        if op.has_bias:
            d["db"] = op.grads["bias"]


class ConvReluPoolOp(Op):
    """``maxpool(relu(conv(x)))`` on :func:`fused.conv_relu_maxpool_forward`."""

    kind = "conv_relu_maxpool"

    def __init__(self, conv_node, pool_node, ctx):
        self.pool_node = pool_node
        super().__init__(conv_node, ctx)

    def setup(self):
        (t, _), _ = self.node.pads(self.ctx.convention)
        self.pad = t
        self.pool = self.pool_node.layer.kernel_size[0]
        k = self.node.layer.out_channels
        self.has_bias = "bias" in self.params
        self.b = self.params["bias"] if self.has_bias else np.zeros(k, self.dtype)
        self.fwd_out, self.bwd_out = [], []
        _chunk_outs(self, 1)

    def _slices_for(self, n):
        o = self.node.out_shape
        return self._slices(n, n * self.params["weight"].size * o.h * o.w, MIN_MACS)

    def forward(self, xs, training):
        self.x = x = np.ascontiguousarray(xs[0])
        n = x.shape[0]
        o = self.pool_node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        am = self.am = self._buf("am", (n, o.c, o.h, o.w), np.int8)
        w = self.params["weight"]
        sl = self._slices_for(n)
        _chunk_outs(self, len(sl))

        def work(t):
            a, c = sl[t]
            d = self.fwd_out[t]
            d["y"], d["argmax"] = y[a:c], am[a:c]
            _fused.conv_relu_maxpool_forward(x[a:c], w, self.b, self.pad, self.pool, out=d)

        self._run(work, sl)
        return y

    def backward(self, dy, need):
        dy = np.ascontiguousarray(dy)
        x, w, am = self.x, self.params["weight"], self.am
        need_dx = bool(need[0])
        dx = self._buf("dx", x.shape) if need_dx else None
        sl = self._slices_for(x.shape[0])
        _chunk_outs(self, len(sl))

        def work(t):
            a, c = sl[t]
            d = self.bwd_out[t]
            if need_dx:
                d["dx"] = dx[a:c]
            return _fused.conv_relu_maxpool_backward(dy[a:c], x[a:c], w, am[a:c], self.pad,
                                                     self.pool, need_dx=need_dx, out=d)

        parts = self._run(work, sl)
        _sum_into(self.grads["weight"], [p[1] for p in parts])
        if self.has_bias:
            _sum_into(self.grads["bias"], [p[2] for p in parts])
        return [dx]


class LinearReluOp(Op):
    """``relu(x @ w.T + b)`` (or without the ReLU) on :func:`fused.linear_relu_forward`."""

    kind = "linear_relu"

    def __init__(self, fc_node, relu: bool, ctx):
        self.relu = relu
        super().__init__(fc_node, ctx)

    def setup(self):
        o = self.node.layer.out_features
        self.has_bias = "bias" in self.params
        self.b = self.params["bias"] if self.has_bias else np.zeros(o, self.dtype)
        self.bwd_out = []
        _chunk_outs(self, 1)

    def forward(self, xs, training):
        x = xs[0]
        n = x.shape[0]
        self.x_shape = x.shape
        self.x2d = x2d = np.ascontiguousarray(x).reshape(n, -1)
        w = self.params["weight"]
        y = self.y = self._buf("y", (n, w.shape[0]))
        sl = self._slices(n, n * w.size, MIN_MACS)

        def work(t):
            a, c = sl[t]
            _fused.linear_relu_forward(x2d[a:c], w, self.b, self.relu, out={"y": y[a:c]})

        self._run(work, sl)
        return y.reshape(n, -1, 1, 1)

    def backward(self, dy, need):
        dy2 = np.ascontiguousarray(dy.reshape(dy.shape[0], -1))
        n = dy2.shape[0]
        w, x2d, y = self.params["weight"], self.x2d, self.y
        need_dx = bool(need[0])
        dx = self._buf("dx", x2d.shape) if need_dx else None
        sl = self._slices(n, n * w.size, MIN_MACS)
        _chunk_outs(self, len(sl))

        def work(t):
            a, c = sl[t]
            d = self.bwd_out[t]
            if need_dx:
                d["dx"] = dx[a:c]
            return _fused.linear_relu_backward(dy2[a:c], x2d[a:c], w, y[a:c], self.relu,
                                               need_dx=need_dx, out=d)

        parts = self._run(work, sl)
        _sum_into(self.grads["weight"], [p[1] for p in parts])
        if self.has_bias:
            _sum_into(self.grads["bias"], [p[2] for p in parts])
        return [None if dx is None else dx.reshape(self.x_shape)]


class BatchNormReluOp(BatchNormOp):
    """``relu(batchnorm(x))``: the ReLU runs inside batch norm's passes (forward: the
    normalising pass clamps; backward: the two gradient passes mask ``dy`` with ``y > 0``), so
    it costs no pass and no buffer of its own."""

    kind = "batchnorm_relu"
    relu = True


class BatchNormAddReluOp(BatchNormOp):
    """``relu(batchnorm(x) + s)``: inputs ``[x, s]``; the sum and the ReLU run in batch norm's
    normalising pass, and ``ds = dy * [y > 0]`` is written by its backward's first pass (with
    batch norm's sums), which the input-gradient pass then reads as its ``dy``, so neither the
    ``add`` nor the ReLU costs a pass over memory or a buffer of its own; when its output has
    two readers, that first pass also adds the two parts of ``dy``."""

    kind = "batchnorm_add_relu"
    relu = True
    residual = True


# ------------------------------------------------------------------------------- planning
def _consumers(graph) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for node in graph.nodes:
        for src in node.inputs:
            users.setdefault(src, []).append(node.name)
    return users


def _only_user(users, name, graph_out) -> str | None:
    u = users.get(name, [])
    return u[0] if len(u) == 1 and name != graph_out else None


def _conv_fusable(node, convention) -> bool:
    L = node.layer
    if tuple(L.stride) != (1, 1) or tuple(L.dilation) != (1, 1) or L.groups != 1:
        return False
    if L.kernel_size[0] != L.kernel_size[1]:
        return False
    (t, b), (left, r) = node.pads(convention)
    return t == b == left == r


def _pool_fusable(pool, conv, convention) -> bool:
    L = pool.layer
    k = L.kernel_size[0]
    if L.kernel_size[1] != k or tuple(L.stride) != (k, k) or not 1 <= k <= 11:
        return False
    if tuple(L.dilation) != (1, 1) or pool.pads(convention) != ((0, 0), (0, 0)):
        return False
    co = conv.out_shape
    return (pool.out_shape.h, pool.out_shape.w) == (co.h // k, co.w // k)


def build_plan(graph, ctx, *, fuse: bool = True) -> list[Step]:
    """Steps in execution order. ``ctx`` carries params/grads/buffers views, dtype, rng, etc."""
    users = _consumers(graph)
    out_name = graph.output.name
    byname = {n.name: n for n in graph.nodes}
    conv_ = graph.convention
    taken: set[str] = set()
    produced = {INPUT_NAME}   # values the steps so far have made
    steps: list[Step] = []
    for node in graph.nodes:
        if node.name in taken:
            continue
        step = None
        if fuse and node.kind == "conv" and _conv_fusable(node, conv_):
            r = _only_user(users, node.name, out_name)
            relu = byname.get(r) if r else None
            if relu is not None and relu.kind == "relu":
                p = _only_user(users, relu.name, out_name)
                pool = byname.get(p) if p else None
                if pool is not None and pool.kind == "maxpool" and \
                        _pool_fusable(pool, node, conv_):
                    step = Step(ConvReluPoolOp(node, pool, ctx), list(node.inputs), pool.name,
                                [node.name, relu.name, pool.name], "conv_relu_maxpool", True)
        elif fuse and node.kind == "batchnorm":
            r = _only_user(users, node.name, out_name)
            reader = byname.get(r) if r else None
            if reader is not None and reader.kind == "relu":
                step = Step(BatchNormReluOp(node, ctx), list(node.inputs), reader.name,
                            [node.name, reader.name], "batchnorm_relu", True)
            elif reader is not None and reader.kind == "add":
                step = _bn_add_relu_step(node, reader, users, out_name, byname, produced, ctx)
        elif fuse and node.kind == "fc":
            r = _only_user(users, node.name, out_name)
            relu = byname.get(r) if r else None
            if relu is not None and relu.kind == "relu":
                step = Step(LinearReluOp(node, True, ctx), list(node.inputs), relu.name,
                            [node.name, relu.name], "linear_relu", True)
            else:
                step = Step(LinearReluOp(node, False, ctx), list(node.inputs), node.name,
                            [node.name], "linear", True)
        if step is None:
            step = Step(make_op(node, ctx), list(node.inputs), node.name, [node.name],
                        None, bool(node.param_shapes()))
        taken.update(step.nodes)
        produced.add(step.output)
        steps.append(step)
    if fuse:
        steps = _readers_together(steps)
        _fold_batchnorm_relu(steps, users, out_name)
        _fold_batchnorm_grad(steps, users, out_name)
    return steps


def _readers_together(steps: list[Step]) -> list[Step]:
    """``steps`` with each convolution that reads a value an earlier step also reads moved up
    to just after that step (and its other readers moved so far), when all of its inputs
    exist there: the value is read again while it is still in cache. Only convolutions move
    (no RNG, no order-dependent state), and only up, past steps it does not depend on, so the
    order stays topological. ``resnet20_cifar``'s 1x1 stride-2 shortcut reads its block's
    input right after the 3x3 stride-2 conv1 instead of four steps later: its forward 1.47 ->
    0.98 ms per step (the fast-path README)."""
    order = list(steps)
    ready = {INPUT_NAME}     # the values made by order[:i + 1], which no move changes
    for i in range(len(order)):
        ready.add(order[i].output)
        reads = set(order[i].inputs)
        at = i + 1
        for k in range(i + 1, len(order)):
            cand = order[k]
            if (k > at and isinstance(cand.op, ConvOp) and reads.intersection(cand.inputs)
                    and ready.issuperset(cand.inputs)):
                order.insert(at, order.pop(k))
                at += 1
            elif k == at and reads.intersection(cand.inputs):
                at += 1   # already right after: keep the readers' order
    return order


def _fold_batchnorm_relu(steps, users, out_name) -> None:
    """A ``batchnorm_relu`` step whose output only a Winograd lanes convolution or a 2x2 max
    pooling on phase planes reads is applied by that reader as it reads its input
    (:meth:`BatchNormOp.fold_into`): one pass over memory and one buffer less per block."""
    by_output = {st.output: st for st in steps}
    for st in steps:
        readers = users.get(st.output, [])
        if not isinstance(st.op, BatchNormReluOp) or len(readers) != 1 or \
                st.output == out_name:
            continue
        reader = next((c for c in steps if c.nodes == [readers[0]]), None)
        if reader is not None and isinstance(reader.op, (ConvOp, MaxPoolOp)) and \
                reader.inputs == [st.output] and by_output.get(reader.output) is reader:
            st.op.fold_into(reader.op)


def _fold_batchnorm_grad(steps, users, out_name) -> None:
    """A batch norm step (with or without ReLU or residual) whose input is made by a Winograd
    lanes convolution without bias that nothing else reads has its input-gradient pass
    applied by that convolution's backward as it reads the gradient
    (:meth:`BatchNormOp.fold_grad_into`): the batch norm's ``dx`` is neither written nor
    read back."""
    by_output = {st.output: st for st in steps}
    for st in steps:
        if not isinstance(st.op, BatchNormOp) or not st.inputs:
            continue
        conv = by_output.get(st.inputs[0])
        if conv is None or not isinstance(conv.op, ConvOp) or conv.output == out_name or \
                users.get(conv.output, []) != [st.nodes[0]]:
            continue
        st.op.fold_grad_into(conv.op)


def _bn_add_relu_step(bn, add, users, out_name, byname, produced, ctx) -> Step | None:
    """``batchnorm → add → relu`` as one step, when the add has two inputs, the ReLU is its only
    reader and the other input already exists (the step runs at the batch norm's place: in a
    ResNet's downsampling block the shortcut's batch norm comes later, and it is the one
    fused)."""
    if len(add.inputs) != 2:
        return None
    r = _only_user(users, add.name, out_name)
    relu = byname.get(r) if r else None
    other = add.inputs[1] if add.inputs[0] == bn.name else add.inputs[0]
    if relu is None or relu.kind != "relu" or other == bn.name or other not in produced:
        return None
    return Step(BatchNormAddReluOp(bn, ctx), [*bn.inputs, other], relu.name,
                [bn.name, add.name, relu.name], "batchnorm_add_relu", True)


def find_chain(graph, offsets: dict[str, int], dtype) -> object | None:
    """The :class:`cnncalc.kernels.fast.gen.ChainSpec` of ``graph``, or None when it is not a chain.

    ``offsets`` maps ``"<layer>.weight"`` / ``"<layer>.bias"`` to their offset in the flat
    parameter buffer.
    """
    from cnncalc.kernels.fast.gen import Block, ChainSpec, Dense

    dtype = np.dtype(dtype)
    if dtype.name not in ("float32", "float64"):
        return None
    nodes = list(graph.nodes)
    users = _consumers(graph)
    prev = INPUT_NAME
    for nd in nodes:  # a straight line: each node reads the previous one, which nobody else reads
        if list(nd.inputs) != [prev] or len(users.get(prev, [])) != 1:
            return None
        prev = nd.name
    if not nodes or nodes[-1].name != graph.output.name:
        return None
    conv_ = graph.convention
    c, h, w = graph.input_shape
    blocks, dense = [], []
    i = 0

    def off(node, key):
        return offsets.get(f"{node.name}.{key}", -1)

    while i + 2 < len(nodes) and nodes[i].kind == "conv":
        cv, r, pl = nodes[i:i + 3]
        if r.kind != "relu" or pl.kind != "maxpool" or not _conv_fusable(cv, conv_) or \
                not _pool_fusable(pl, cv, conv_):
            return None
        (pad, _), _ = cv.pads(conv_)
        k = cv.layer.out_channels
        F = cv.layer.kernel_size[0]
        b = Block(C=c, H=h, W=w, K=k, F=F, pad=pad, pool=pl.layer.kernel_size[0],
                  woff=off(cv, "weight"), boff=off(cv, "bias"))
        if b.Hp < 1 or b.Wp < 1 or b.woff < 0:
            return None
        blocks.append(b)
        c, h, w = k, b.Hp, b.Wp
        i += 3
    if i < len(nodes) and nodes[i].kind == "flatten":
        i += 1
    width = c * h * w
    while i < len(nodes):
        fc = nodes[i]
        if fc.kind != "fc" or off(fc, "weight") < 0:
            return None
        relu = i + 1 < len(nodes) and nodes[i + 1].kind == "relu"
        dense.append(Dense(I=width, O=fc.layer.out_features, relu=relu, woff=off(fc, "weight"),
                           boff=off(fc, "bias")))
        width = fc.layer.out_features
        i += 2 if relu else 1
    if not dense or dense[-1].relu:
        return None
    return ChainSpec(dtype=dtype.name, blocks=tuple(blocks), dense=tuple(dense),
                     n_params=sum(int(np.prod(s)) for s in graph.param_shapes().values()))
