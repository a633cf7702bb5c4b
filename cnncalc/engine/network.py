"""``cnncalc.Network``: execute a layer graph forward and backward on the numba kernels.

Contract
--------
* ``Network(graph, init="he", seed=0, dtype="float32")``; ``graph`` is a :class:`Graph`, a spec
  path or YAML text (passed to :func:`cnncalc.load`).
* ``forward(x, training=True)``: ``x`` (N, C, H, W) → the output, (N, K) when the graph's output
  is 1 x 1 x K, else (N, C, H, W). The returned array is a fresh copy.
* ``backward(dout, need_dx=True)``: ``dout`` is d loss / d output (shape of the output);
  *overwrites* ``grads`` (one backward = the gradients of the last forward) and returns d loss /
  d x (``None`` with ``need_dx=False``, which also skips the first layer's input gradient).
* ``params`` / ``grads``: ``"<layer>.weight"`` / ``"<layer>.bias"`` with PyTorch's shapes, views into
  one flat buffer each (``flat_params`` / ``flat_grads``), so one optimizer kernel can update them
  all. ``buffers``: batch-norm ``running_mean`` / ``running_var``. A tensor a layer shares with
  another (``share:``) has one entry, the holder's: the layer computes with it, and its gradient
  is added into the holder's (the sum over the uses).
* Frozen layers (``trainable: false``): their tensors sit after the trained ones in the flat
  buffers, so ``trainable_params`` / ``trainable_grads`` (the first ``n_trainable`` values) are
  one contiguous view that an optimizer updates without a mask; ``backward`` stops where no
  trained parameter lies upstream (a frozen stem gets neither dW nor dx). A frozen layer between
  trained ones still passes dx on; its dW lands in ``grads`` and is never read.
* ``state_dict()`` / ``load_state_dict(d)``: params + buffers as numpy copies.
* ``loss(x, labels)`` → ``(loss, dlogits)``; ``loss_and_grads(x, labels)`` → loss (forward, softmax
  cross-entropy, backward); ``predict(x, batch_size)`` (evaluation mode, batched).
* ``activations(x, layers)`` → ``{layer: output}`` of one forward pass (intermediate values, on
  the unfused step plan).

Fast path: when the planner recognises the graph as a conv→relu→maxpool … → fc chain
(:func:`cnncalc.engine.plan.find_chain`), ``forward``/``backward``/``loss``/``loss_and_grads``/
``predict`` run on shape-specialised generated kernels (:mod:`cnncalc.kernels.fast.gen`, cached
on disk) split over the batch on ``threads`` threads (:mod:`cnncalc.kernels.fast.threads`): each
thread runs the whole chain on its slice with its own buffers and flat gradient buffer, and the
gradients are summed in slice order (deterministic). ``threads=1`` (or ``parallel=False``)
writes straight into ``flat_grads``. ``fast_path`` describes it (None: not used).

Every other graph runs the step plan (:mod:`cnncalc.engine.plan`, :mod:`cnncalc.engine.ops`) on
serial, cached kernels only (no ``prange`` kernel is ever compiled by the engine, so a second
process compiles nothing); ops with enough work split the batch over the same ``threads``-thread
pool and sum parameter gradients in slice order (bitwise repeatable; ``threads=1`` agrees with
``threads=2`` to float rounding).

Tiers: ``use_tier(tier)`` runs the graph on another implementation of the ops from the next
call on, sharing the parameters, gradients, buffers and RNG (the trainer's cold start runs the
NumPy tier, :mod:`cnncalc.engine.numpy_tier`, while the kernels compile in the background:
:mod:`cnncalc.engine.warmup`); ``use_tier(None)`` goes back to the compiled kernels. A network
never changes tier by itself.

Thread state: ``forward``/``backward``/``loss``/``loss_and_grads``/``predict`` (and
``with net.thread_state():``, for an optimizer step) run with flush-to-zero on (unless
``flush_denormals=False``) and BLAS at one thread on the calling thread, and put both back when
they return (:class:`cnncalc.kernels.fast.thread_state.EngineCall`); the engine's worker threads
flush for their lifetime. Creating a network changes no thread's state.

Threads: a network is safe to share between threads. Every call (``forward``, ``backward``,
``loss``, ``loss_and_grads``, ``predict``, ``state_dict``, ``load_state_dict`` and the
``thread_state()`` block an optimizer step runs in) holds the network's re-entrant lock
(``net.lock``), so concurrent calls run one after another and each gets the result it would
get alone. A *sequence* of calls that shares caches (``forward`` then ``backward``, or ``loss``
then using its ``dlogits`` buffer) must hold the lock across the sequence: ``with net.lock:``.

Execution: steps (:mod:`cnncalc.engine.plan`) run in node order; a value is dropped after its last
consumer; backward runs in reverse order and sums the gradients of values with several consumers.
Ops keep reusable output buffers, reallocated when the batch size changes.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from types import SimpleNamespace

import numpy as np

from cnncalc.engine.plan import build_plan, find_chain
from cnncalc.errors import TrainError
from cnncalc.graph import INPUT_NAME, Graph
from cnncalc.kernels.fast.threads import default_threads, get_pool, split
from cnncalc.limits import check_network_memory
from cnncalc.spec import load

__all__ = ["Network"]

_DTYPES = {"float32": np.float32, "float64": np.float64}
# Batch chunks per thread on the generated chain, claimed dynamically by the pool's threads (a
# worker that has not woken yet leaves its chunk to the caller). One: each chunk is a composite
# kernel call, and LeNet-5 at batch 64 ran 2.71x/2.30x PyTorch with one chunk per thread
# against 2.14x/2.16x with two (same session).
_CHAIN_CHUNKS_PER_THREAD = 1


def _dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in _DTYPES:
        raise TrainError(f"dtype must be float32 or float64, got {dtype!r}",
                         hint="use dtype='float32' (training) or 'float64' (gradient checks)")
    return dt


def _engine_call(method):
    """Run ``method`` holding the network's lock, under the engine's thread state (FTZ, BLAS at
    one thread), restored after."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self.lock, self._engine_state():
            return method(self, *args, **kwargs)

    return call


class Network:
    """An executable, trainable network built from a layer graph.

    Parameters
    ----------
    graph : Graph, spec path or YAML text
    init : weight init scheme for conv/fc weights ("he", "xavier", "normal:0.01", ...); a
        layer's ``init:`` in the spec overrides it.
    seed : seeds ``np.random.default_rng`` (initialisation, then dropout masks).
    dtype : "float32" (default) or "float64".
    fuse : use the fused fast-path kernels where the planner finds their patterns.
    parallel : ``False`` means one thread (exact and deterministic) unless ``threads`` says
        otherwise; ``None``/``True``: ``threads`` threads. The engine always runs serial cached
        kernels (never numba's ``prange`` variants).
    flush_denormals : flush denormals to zero (FTZ/DAZ) in the engine's workers, and in the
        calling thread during each engine call (restored afterwards).
    threads : threads over which the batch is split, on the fast path and in the step plan
        (``None``: ``min(2, os.cpu_count())``; 1 with ``parallel=False``).

    Thread safety: every method call holds ``lock`` (a ``threading.RLock``), so threads sharing
    one network get the same outputs as serial calls; hold ``with net.lock:`` around a
    ``forward``/``backward`` pair that must not interleave with another thread's calls.
    """

    def __init__(self, graph, init="he", seed=0, dtype="float32", *, fuse: bool = True,
                 parallel: bool | None = None, flush_denormals: bool = True,
                 threads: int | None = None):
        if not isinstance(graph, Graph):
            graph = load(graph)
        self.graph = graph
        self.lock = threading.RLock()   # one call at a time: the ops share buffers and caches
        self.dtype = _dtype(dtype)
        self.seed = seed
        # forward_count: the forward now running (Network._weight_work)
        self._ctx = SimpleNamespace(rng=np.random.default_rng(seed), forward_count=0)

        # ---- parameters: one flat buffer, views per tensor; trained tensors first ------------
        # refused before allocating when the parameters, gradients and one example's
        # activations alone exceed the memory budget (a spec with ``filters: 1e9``)
        check_network_memory(graph, f"network '{graph.name}'", batch=1,
                             dtype_bytes=self.dtype.itemsize)
        shapes = graph.param_shapes()
        self.param_shapes = dict(shapes)
        frozen = {f"{n.name}.{k}" for n in graph.nodes if not n.trainable
                  for k in n.own_param_shapes()}
        total = sum(math.prod(s) for s in shapes.values())
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self._offsets: dict[str, int] = {}
        off = 0
        for key in sorted(shapes, key=lambda k: k in frozen):   # stable: graph order within
            self._offsets[key] = off
            off += math.prod(shapes[key])
        self.n_trainable = sum(math.prod(s) for k, s in shapes.items() if k not in frozen)
        self.trainable_params = self.flat_params[:self.n_trainable]
        self.trainable_grads = self.flat_grads[:self.n_trainable]
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for key, shape in shapes.items():
            off, size = self._offsets[key], math.prod(shape)
            self.params[key] = self.flat_params[off:off + size].reshape(shape)
            self.grads[key] = self.flat_grads[off:off + size].reshape(shape)
        self._init_params(init)
        self.buffers: dict[str, np.ndarray] = {}
        for key, shape in graph.buffer_shapes().items():
            fill = 1.0 if key.endswith("running_var") else 0.0
            self.buffers[key] = np.full(shape, fill, self.dtype)

        # ---- plan ------------------------------------------------------------------------------
        per_node_p: dict[str, dict] = {}
        per_node_g: dict[str, dict] = {}
        for key in shapes:
            layer, _, pname = key.rpartition(".")
            per_node_p.setdefault(layer, {})[pname] = self.params[key]
            per_node_g.setdefault(layer, {})[pname] = self.grads[key]
        # a tensor a layer shares with another (`share:`) is the holder's array; the layer
        # writes its gradient to a scratch array, added into the holder's after each backward:
        # the gradient of a weight used twice is the sum over its uses
        self._shared_grads: list[tuple[np.ndarray, np.ndarray]] = []
        # free buffers for the sums of gradients where a value has several readers (a residual
        # block's input), by (shape, dtype): see _join_sum
        self._join_free: dict[tuple, list[np.ndarray]] = {}
        op_buffers = self.buffers
        for n in graph.nodes:
            for k, holder in n.shared.items():
                scratch = np.zeros_like(per_node_g[holder][k])
                per_node_p.setdefault(n.name, {})[k] = per_node_p[holder][k]
                per_node_g.setdefault(n.name, {})[k] = scratch
                self._shared_grads.append((per_node_g[holder][k], scratch))
            if n.shares and n.buffer_shapes():  # a batch norm used twice: one set of statistics
                if op_buffers is self.buffers:
                    op_buffers = dict(self.buffers)
                op_buffers.update({f"{n.name}.{k}": self.buffers[f"{n.shares}.{k}"]
                                   for k in n.buffer_shapes()})
        if threads is None:
            threads = 1 if parallel is False else default_threads()
        if int(threads) < 1:
            raise TrainError(f"threads must be at least 1, got {threads}")
        self.threads = int(threads)
        self.flush_denormals = bool(flush_denormals)
        ctx = self._ctx
        ctx.__dict__.update(params=per_node_p, grads=per_node_g, buffers=op_buffers,
                            dtype=self.dtype, parallel=parallel, convention=graph.convention,
                            threads=self.threads, run=self._pool_run)
        self.fuse = bool(fuse)
        self.steps = build_plan(graph, ctx, fuse=self.fuse)
        self._chain = None
        # the generated chain reads each layer's own weights: not for shared ones
        spec = (find_chain(graph, self._offsets, self.dtype)
                if fuse and not self._shared_grads else None)
        if spec is not None:
            from cnncalc.kernels.fast.chain import FastChain

            self._chain = FastChain(spec, self.threads, self.flat_grads)
        self._cbuf: dict = {}  # reused buffers: logits, dlogits
        self.output_name = graph.output.name
        self._liveness()
        self._batch: int | None = None
        self._unfused_steps: list | None = None  # activations()'s plan, built on first use
        self.tier = None                 # None: the compiled kernels; else see use_tier()
        self._compiled = (self.steps, self._chain)

    # ------------------------------------------------------------------------------ set-up
    def _init_params(self, init) -> None:
        from cnncalc.engine.init import init_params

        overrides = {n.name: n.init for n in self.graph.nodes
                     if n.init is not None and n.param_shapes()}
        values = init_params(self.param_shapes, init, self.rng, self.dtype, overrides)
        for key, v in values.items():
            self.params[key][...] = v
        for n in self.graph.nodes:  # PReLU's α starts at 0.25, as in PyTorch
            if n.kind == "prelu" and n.init is None and "weight" not in n.shared:
                self.params[f"{n.name}.weight"][...] = 0.25

    def _liveness(self) -> None:
        last: dict[str, int] = {}
        for i, st in enumerate(self.steps):
            for src in st.inputs:
                last[src] = i
        self._free_after: list[list[str]] = [[] for _ in self.steps]
        for name, i in last.items():
            if name != self.output_name:
                self._free_after[i].append(name)
        # values whose gradient may reach their op's backward as a tuple of two parts, left
        # unsummed (``Op.takes_gradient_parts``)
        self._takes_parts = {st.output: bool(getattr(st.op, "takes_gradient_parts", False))
                             for st in self.steps}
        # which values need a gradient: those with trained parameters upstream (or the input,
        # on demand); frozen layers' weights need none
        trained = {n.name for n in self.graph.nodes if n.trainable and n.param_shapes()}
        self._needs = {}
        for want_dx in (False, True):
            needs = {INPUT_NAME: want_dx}
            for st in self.steps:
                trains = st.has_params and not trained.isdisjoint(st.nodes)
                needs[st.output] = trains or any(needs.get(s, False) for s in st.inputs)
            self._needs[want_dx] = needs

    def use_tier(self, tier=None) -> None:
        """Run on another implementation of the ops from the next call on (``None``: the
        compiled kernels, the default).

        ``tier`` (e.g. :data:`cnncalc.engine.numpy_tier.NUMPY_TIER`) gives ``build_plan(graph,
        ctx)`` (steps with the op contract of :mod:`cnncalc.engine.ops`),
        ``softmax_cross_entropy(logits, labels, out=)`` and ``flush_denormals`` (whether its
        calls may set flush-to-zero). Parameters, gradients, buffers and the RNG are shared,
        so training continues where it was; call it between steps, not between a ``forward``
        and its ``backward``.
        """
        with self.lock:
            self.steps, self._chain = (self._compiled if tier is None
                                       else (tier.build_plan(self.graph, self._ctx), None))
            self.tier = tier
            self._batch = None
            self._liveness()

    def thread_state(self):
        """Context manager: the calling thread runs with FTZ/DAZ (per ``flush_denormals``) and
        BLAS at one thread inside it, as during an engine call; both are restored on exit.

        Wrap an optimizer step on ``flat_params`` in it: momentum of dead units decays into
        denormals, which are ~20x slower to compute on. The block holds the network's lock.
        """
        return self._locked_state()

    @contextlib.contextmanager
    def _locked_state(self):
        with self.lock, self._engine_state():
            yield

    def _engine_state(self):
        from cnncalc.kernels.fast.thread_state import EngineCall

        tier_flushes = self.tier is None or self.tier.flush_denormals
        return EngineCall(self.flush_denormals and tier_flushes)

    @property
    def rng(self) -> np.random.Generator:
        """The generator for initialisation and dropout masks (assignable)."""
        return self._ctx.rng

    @rng.setter
    def rng(self, value: np.random.Generator) -> None:
        self._ctx.rng = value

    @property
    def plan(self) -> list[str]:
        """One line per execution step (shows what the planner fused)."""
        return [st.describe() for st in self.steps]

    @property
    def fast_path(self) -> str | None:
        """What the whole-network fast path runs, or None when the steps run."""
        if self._chain is None:
            return None
        sp = self._chain.spec
        parts = [f"conv{b.F}x{b.F}({b.C}->{b.K},{sp.method(i)})+relu+maxpool{b.pool}"
                 for i, b in enumerate(sp.blocks)]
        parts += [f"fc({d.I}->{d.O}{',relu' if d.relu else ''})" for d in sp.dense]
        return f"generated chain [{self.threads} thread(s)]: " + " -> ".join(parts)

    @property
    def n_params(self) -> int:
        return int(self.flat_params.size)

    # ------------------------------------------------------------------------------ running
    def _as_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        want = tuple(self.graph.input_shape)
        if x.ndim == 3 and want[0] == 1 and x.shape[1:] == want[1:]:
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            c, h, w = want
            raise TrainError(f"input batch has shape {x.shape}; the network expects "
                             f"(N, {c}, {h}, {w})",
                             hint="arrange the batch as (N, channels, height, width)")
        if x.shape[0] == 0:
            raise TrainError("input batch is empty")
        return np.ascontiguousarray(x, dtype=self.dtype)

    # ----------------------------------------------------------------------- fast path
    def _cb(self, key, shape):
        a = self._cbuf.get(key)
        if a is None or a.shape != shape:
            a = self._cbuf[key] = np.empty(shape, self.dtype)
        return a

    def _split(self, n: int):
        sl = split(n, self.threads, _CHAIN_CHUNKS_PER_THREAD)
        self._chain.slot(len(sl) - 1)  # every chunk's slot exists before the threads run
        return len(sl), sl

    def parallel(self, fn, n: int) -> list:
        """``[fn(0), ..., fn(n - 1)]`` on the network's threads (the calling thread takes part),
        e.g. ``opt.step(params, grads, run=net.parallel)`` inside ``thread_state()``. Runs
        serially with one thread, and on the NumPy tier (whose point is to need no compiled
        kernel: the pool's hand-over is one)."""
        if self.threads == 1 or n == 1 or self.tier is not None:
            return [fn(i) for i in range(n)]
        return self._pool_run(fn, n)

    def _pool_run(self, fn, T):
        """``[fn(0), ..., fn(T - 1)]`` on the shared pool (the ops' ``ctx.run``)."""
        return get_pool(self.threads).run(fn, T, flush=self.flush_denormals)

    def _dispatch(self, fn, T):
        if T == 1:
            return [fn(0)]
        return self._pool_run(fn, T)

    def _reduce(self, T) -> None:
        g = self.flat_grads
        for t in range(1, T):
            np.add(g, self._chain.slot(t).grads, out=g)

    def _chain_forward(self, x):
        """The chain has no training-only layers: training and evaluation run the same."""
        ch = self._chain
        n = x.shape[0]
        K = ch.spec.dense[-1].O
        logits = self._cb("logits", (n, K))
        T, sl = self._split(n)
        p = self.flat_params
        ch.prepare(p)

        def work(t):
            ch.forward_slice(ch.slot(t), x, sl[t][0], sl[t][1], p, logits)

        self._dispatch(work, T)
        self._batch = n
        self._cx = x
        return logits

    def _chain_backward(self, dlogits, need_dx):
        ch = self._chain
        n = self._batch
        T, sl = self._split(n)
        p = self.flat_params
        logits = self._cbuf["logits"]
        x = self._cx
        dx = np.empty(x.shape, self.dtype) if need_dx else None
        ch.prepare(p)  # the weights as they are now, like the generic ops

        def work(t):
            ch.backward_slice(ch.slot(t), x, sl[t][0], sl[t][1], p, logits, dlogits, need_dx,
                              dx)

        self._dispatch(work, T)
        self._reduce(T)
        return dx

    def _chain_step(self, x, y):
        """forward + softmax CE + backward in one dispatch; returns the mean loss."""
        ch = self._chain
        n = x.shape[0]
        K = ch.spec.dense[-1].O
        y = self._labels(y, n, K)
        logits = self._cb("logits", (n, K))
        dl = self._cb("dlogits", (n, K))
        T, sl = self._split(n)
        p = self.flat_params
        ch.prepare(p)
        inv_n = self.dtype.type(1.0 / n)

        def work(t):
            return ch.step_slice(ch.slot(t), x, y, sl[t][0], sl[t][1], inv_n, p, logits, dl)

        losses = self._dispatch(work, T)
        self._reduce(T)
        self._batch = n
        self._cx = x
        return float(sum(losses) / n)

    def _forward(self, x, training: bool) -> np.ndarray:
        x = self._as_input(x)
        if self._chain is not None:
            out = self._chain_forward(x)
            return out.reshape(out.shape[0], out.shape[1], 1, 1)
        self._batch = x.shape[0]
        self._weight_work()
        vals = {INPUT_NAME: x}
        for i, st in enumerate(self.steps):
            vals[st.output] = st.op.forward([vals[s] for s in st.inputs], training)
            for name in self._free_after[i]:
                vals.pop(name, None)
        return vals[self.output_name]

    def _weight_work(self) -> None:
        """The ops' work on their weights alone (:meth:`cnncalc.engine.ops.Op.weight_work`:
        the Winograd transforms), all in one pool run, largest first, before the forward's
        steps; each op skips its own in this forward (``ctx.forward_count``). One by one on
        the calling thread, between pool runs, ``resnet20_cifar``'s 16 took 1.0-1.2 ms a step
        while the worker waited (0.7-0.8 ms in one run)."""
        self._ctx.forward_count += 1
        self._run_work([w for st in self.steps
                        for w in getattr(st.op, "weight_work", lambda: [])()])

    def _run_work(self, work) -> None:
        """``[(cost, fn), ...]``: every ``fn()`` in one pool run, the costliest first (the
        threads claim them in turn)."""
        if work:
            work = sorted(work, key=lambda cw: -cw[0])
            self._dispatch(lambda t: work[t][1](), len(work))

    def _shape_out(self, y: np.ndarray) -> np.ndarray:
        if y.ndim == 4 and y.shape[2] == 1 and y.shape[3] == 1:
            return y.reshape(y.shape[0], y.shape[1])
        return y

    @_engine_call
    def forward(self, x, training: bool = True) -> np.ndarray:
        """Run the network; returns a copy of the output, (N, K) or (N, C, H, W)."""
        return self._shape_out(self._forward(x, training)).copy()

    __call__ = forward

    @_engine_call
    def backward(self, dout, need_dx: bool = True):
        """Backpropagate ``dout`` (d loss / d output); overwrites ``grads``; returns dx or None."""
        if self._batch is None:
            raise TrainError("backward() before forward()",
                             hint="call net.forward(x) first; backward uses its caches")
        o = self.graph.output_shape
        dout = np.asarray(dout)
        if dout.size != self._batch * o.size or dout.shape[0] != self._batch:
            raise TrainError(f"dout has shape {dout.shape}; the output of the last forward is "
                             f"({self._batch}, {o.c}, {o.h}, {o.w})",
                             hint="pass d loss / d output with the output's shape")
        dout = np.ascontiguousarray(dout, dtype=self.dtype).reshape(self._batch, *o)
        if self._chain is not None:
            return self._chain_backward(dout.reshape(self._batch, o.c), bool(need_dx))
        needs = self._needs[bool(need_dx)]
        for _, scratch in self._shared_grads:
            scratch[...] = 0
        grads = {self.output_name: dout}
        joined: dict[int, np.ndarray] = {}     # join buffers in use, by id
        # the ops' work on weight gradients alone, run together after their backwards
        self._ctx.weight_grad_work = work = []
        try:
            self._backward_steps(grads, joined, needs)
            self._run_work(work)
        finally:
            self._ctx.weight_grad_work = None
        for holder, scratch in self._shared_grads:
            holder += scratch
        dx = grads.get(INPUT_NAME) if need_dx else None
        dx = None if dx is None else np.array(dx, dtype=self.dtype)
        for buf in joined.values():            # e.g. the input's, when it has several readers
            self._join_free[(buf.shape, buf.dtype.str)].append(buf)
        if not need_dx:
            return None
        if dx is None:
            return np.zeros((self._batch, *self.graph.input_shape), self.dtype)
        return dx

    def _backward_steps(self, grads: dict, joined: dict, needs: dict) -> None:
        """The steps' backwards in reverse order: each output's gradient (``grads``, by value
        name; two readers' parts summed into join buffers, or left as a pair for an op that
        takes them) in, its inputs' out."""
        for st in reversed(self.steps):
            dy = grads.pop(st.output, None)
            if dy is None or not needs[st.output]:
                continue
            need = [needs.get(s, False) for s in st.inputs]
            dxs = st.op.backward(dy, need)
            # read: the buffer is free again, unless a batch norm's deferred input gradient
            # (read by the conv before it, later) still holds it
            if id(dy) in joined and not any(getattr(d, "dy", None) is dy for d in dxs):
                self._join_free[(dy.shape, dy.dtype.str)].append(joined.pop(id(dy)))
            for src, nd, dx in zip(st.inputs, need, dxs):
                if not nd or dx is None:
                    continue
                prev = grads.get(src)
                if prev is None:
                    grads[src] = dx
                elif isinstance(prev, tuple):   # a third part: sum the pending two first
                    total = self._join_sum(*prev, self._join_buffer(prev[0], joined))
                    grads[src] = self._join_sum(total, dx, total)
                elif prev.shape != dx.shape or prev.dtype != dx.dtype:
                    grads[src] = prev + dx
                elif self._takes_parts.get(src, False) and id(prev) not in joined:
                    # the op that made ``src`` adds the two parts as it reads them
                    grads[src] = (prev, dx)
                else:
                    out = prev if id(prev) in joined else self._join_buffer(prev, joined)
                    grads[src] = self._join_sum(prev, dx, out)

    def _join_buffer(self, like: np.ndarray, joined: dict) -> np.ndarray:
        """A free buffer of ``like``'s shape and dtype for a gradient sum, marked in use."""
        free = self._join_free.setdefault((like.shape, like.dtype.str), [])
        out = free.pop() if free else np.empty(like.shape, like.dtype)
        joined[id(out)] = out
        return out

    def _join_sum(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out = a + b`` in row slices on the network's threads (``out`` may be ``a``): the
        gradient of a value with several readers. One 4 MiB sum into a fresh array on the
        calling thread took ~0.3 ms per residual block of ``resnet20_cifar``."""
        rows = split(a.shape[0], self.threads)
        self.parallel(lambda i: np.add(a[rows[i][0]:rows[i][1]], b[rows[i][0]:rows[i][1]],
                                       out=out[rows[i][0]:rows[i][1]]), len(rows))
        return out

    # ------------------------------------------------------------------------ intermediates
    @_engine_call
    def activations(self, x, layers=None, training: bool = False) -> dict[str, np.ndarray]:
        """The outputs of the nodes named in ``layers`` (every node when None) for one forward
        pass of ``x``: ``{name: (N, C, H, W) copy}`` in node order.

        Runs the graph's one-op-per-node step plan (built on first use; it shares this
        network's parameters and buffers), because the fused steps and the whole-network fast
        path never materialise the values inside a ``conv → relu → maxpool`` block. Its output
        equals :meth:`forward`'s to float rounding (exactly when ``fuse=False``).
        """
        names = [n.name for n in self.graph.nodes]
        wanted = names if layers is None else list(layers)
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise TrainError(f"no layer named {', '.join(map(repr, unknown))} in the network",
                             hint=f"layers: {', '.join(names)}")
        if self._unfused_steps is None:
            self._unfused_steps = build_plan(self.graph, self._ctx, fuse=False)
        x = self._as_input(x)
        steps = self._unfused_steps
        last_use = {src: i for i, st in enumerate(steps) for src in st.inputs}
        vals = {INPUT_NAME: x}
        kept: dict[str, np.ndarray] = {}
        for i, st in enumerate(steps):
            if len(kept) == len(set(wanted)):
                break  # the layers after the last one wanted need not run
            vals[st.output] = st.op.forward([vals[s] for s in st.inputs], training)
            if st.output in wanted:
                kept[st.output] = np.array(vals[st.output], copy=True)
            for src in st.inputs:
                if last_use[src] == i:
                    vals.pop(src, None)
        return {name: kept[name] for name in wanted}

    # ------------------------------------------------------------------------------ loss
    def _labels(self, labels, n: int, k: int) -> np.ndarray:
        y = np.asarray(labels)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise TrainError(f"labels must be {n} integer class indices (shape ({n},)), got "
                             f"shape {y.shape} dtype {y.dtype}",
                             hint="pass labels as an int array, one class index per example")
        if n and (y.min() < 0 or y.max() >= k):
            raise TrainError(f"labels must lie in [0, {k}), got values in [{y.min()}, {y.max()}]",
                             hint="the last layer's width sets the number of classes")
        return np.ascontiguousarray(y, dtype=np.int64)

    @_engine_call
    def loss(self, x, labels, training: bool = True):
        """Forward plus mean softmax cross-entropy. Returns ``(loss, dlogits)`` (N, K)."""
        out = self._forward(x, training)
        if out.ndim != 4 or out.shape[2:] != (1, 1):
            raise TrainError("softmax cross-entropy needs a 1 x 1 x K output",
                             hint="end the network with fc (or global_avgpool + flatten)")
        logits = np.ascontiguousarray(out.reshape(out.shape[0], -1))
        y = self._labels(labels, *logits.shape)
        if self._chain is not None:
            n, k = logits.shape
            dl = self._cb("dlogits", (n, k))
            total = self._chain.loss_slice(y, 0, n, self.dtype.type(1.0 / n), logits, dl)
            return float(total / n), dl
        if self.tier is not None:
            softmax_cross_entropy = self.tier.softmax_cross_entropy
        else:
            from cnncalc.kernels.loss import softmax_cross_entropy
        return softmax_cross_entropy(logits, y, out=self._cb("dlogits", logits.shape))

    @_engine_call
    def loss_and_grads(self, x, labels) -> float:
        """Training-mode forward, softmax cross-entropy and backward; returns the loss."""
        if self._chain is not None:
            return self._chain_step(self._as_input(x), labels)
        loss, dlogits = self.loss(x, labels, training=True)
        self.backward(dlogits, need_dx=False)
        return loss

    @_engine_call
    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Evaluation-mode outputs for ``x`` in batches of ``batch_size``."""
        x = np.asarray(x)
        if batch_size < 1:
            raise TrainError(f"batch_size must be positive, got {batch_size}")
        outs = [self._shape_out(self._forward(x[i:i + batch_size], False)).copy()
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters then buffers, as independent numpy copies."""
        with self.lock:
            return self._state_dict()

    def _state_dict(self) -> dict[str, np.ndarray]:
        d = {k: v.copy() for k, v in self.params.items()}
        d.update({k: v.copy() for k, v in self.buffers.items()})
        return d

    def load_state_dict(self, state, strict: bool = True) -> None:
        """Copy ``state`` into the parameters and buffers (cast to the network's dtype).

        PyTorch's ``num_batches_tracked`` entries are ignored. Raises :class:`TrainError` on
        missing or unexpected keys (``strict``), shape mismatches and NaN/inf values (naming the
        entry and the first bad index), before changing anything.
        """
        from cnncalc.engine.finite import nonfinite_message

        targets = {**self.params, **self.buffers}
        state = {k: v for k, v in dict(state).items() if not k.endswith("num_batches_tracked")}
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(missing[:8])}"
                             + (" ..." if len(missing) > 8 else ""))
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(unexpected[:8])}"
                             + (" ..." if len(unexpected) > 8 else ""))
            raise TrainError("state dict does not match the network: " + "; ".join(parts),
                             hint="was it saved from a network built from the same spec?")
        arrays = {}
        for k, v in state.items():
            if k not in targets:
                continue
            a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            if a.shape != targets[k].shape:
                raise TrainError(f"state dict entry '{k}' has shape {a.shape}; the network's is "
                                 f"{targets[k].shape}",
                                 hint="the spec's layer sizes differ from the saved network's")
            if not np.issubdtype(a.dtype, np.number):
                raise TrainError(f"state dict entry '{k}' is not numeric ({a.dtype})")
            bad = nonfinite_message(f"state dict entry '{k}'", a)
            if bad is not None:
                raise TrainError(bad, hint="the weights are damaged (a diverged run?); load "
                                           "an earlier checkpoint")
            arrays[k] = a
        with self.lock:
            for k, a in arrays.items():
                targets[k][...] = a

    def __repr__(self) -> str:
        return (f"Network({self.graph.name!r}, {self.n_params:,} params, {self.dtype.name}, "
                f"{len(self.steps)} steps)")
