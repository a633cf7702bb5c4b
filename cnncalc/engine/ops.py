"""The engine's op classes: the binding between a graph node and its kernels.

A layer type names how it runs (:class:`cnncalc.layers.base.Layer`): an op class here
(``op = "cnncalc.engine.ops:ConvOp"``) or, for elementwise layers, a forward/backward kernel
pair that :class:`ElementwiseOp` runs. :func:`make_op` builds a node's op from that binding, so
there is no separate table of kinds here; the names are imported when a network is built, never
when the layers are.

Contract (every op):

* ``forward(xs, training) -> y``: ``xs`` is the list of input arrays (N, C, H, W) in the node's
  ``inputs`` order; ``y`` is (N, C, H, W) (fully connected outputs are (N, K, 1, 1) views). The op
  keeps what its backward needs (its cache) on ``self``.
* ``backward(dy, need) -> list``: ``dy`` is d loss / d y (shape of ``y``); ``need[i]`` says
  whether the gradient of input ``i`` is wanted. Returns one array (or ``None``) per input and
  *writes* (never accumulates) the parameter gradients into the views ``self.grads[...]``.

Parameters and gradients are views into the network's flat buffers, so an op reads the current
weights on every call and a gradient lands directly in ``net.flat_grads``.

Arrays an op returns may live in its reusable buffers (``self._buf``): they stay valid until the
op's next call in the same direction. Buffers are reallocated when the batch size changes.

Threads: every kernel is serial (cached, ``nogil``); no process compiles a ``prange`` kernel.
Ops whose work pays for a hand-over (conv, pools, fully connected, elementwise kernels, batch
norm on (N, C, H, W)) split the batch into contiguous chunks with :meth:`Op._split` (several
per thread: :func:`cnncalc.kernels.fast.threads.split`, fewer for large weights:
:func:`weight_chunks`) and run them on the engine's thread pool
(:mod:`cnncalc.kernels.fast.threads`, ``ctx.run``), whose threads claim chunks dynamically:
each chunk writes its rows of the shared output buffer, and parameter gradients (and batch
norm's float64 statistics) come from per-chunk buffers summed in chunk order, so results are
bitwise repeatable for a thread count whichever thread ran a chunk, and agree with one thread
to float rounding. Dropout (masks from ``ctx.rng``), merges and reshapes run on the calling
thread.
"""
from __future__ import annotations

import functools
import inspect
import math

import numpy as np

from cnncalc.errors import TrainError
from cnncalc.kernels import activation as act
from cnncalc.kernels import conv as kconv
from cnncalc.kernels import dropout as kdrop
from cnncalc.kernels import linear as klin
from cnncalc.kernels import norm as knorm
from cnncalc.kernels import pool as kpool
from cnncalc.kernels import winograd as kwino
from cnncalc.kernels.fast.threads import CHUNKS_PER_THREAD, split

__all__ = ["ElementwiseOp", "Op", "executable_kinds", "make_op"]

# Smallest work worth splitting over threads: a hand-over costs a few us (spinning workers) to
# ~40 us (a blocked one), so an op splits only when each slice still has a few tens of us of work.
MIN_MACS = 1 << 20      # conv / fully connected: multiply-adds
MIN_ELEMS = 1 << 16     # numba element-wise / pooling kernels: elements touched
MIN_ELEMS_NP = 1 << 17  # NumPy element-wise expressions (several passes, temporaries)
# Weight transforms (Winograd's U = G g G^T per filter, and dW = G^T dU G) split over output
# channels from this many transformed values: one call on 64 -> 64 channels (65,536 values)
# takes 30 us (U) and 44 us (dW) on one thread, less than the ~70 us a hand-over to a worker
# costs inside a step (the fast-path README's anatomy), so it runs serially
MIN_WEIGHT_ELEMS = 1 << 18
# Winograd layers with output planes up to this many pixels run position-parallel
# (kernels.winograd.ByPosition); larger planes run batch chunks end to end
BY_POSITION_MAX_PLANE = 64


class Op:
    """Base class: holds the node, its parameter/gradient views and reusable buffers."""

    kind = ""  # fused ops name their pattern; a generic op reports its node's kind
    # backward may be given its output's gradient as a tuple of two parts (an output with two
    # readers) and add them as it reads them; otherwise the network sums them first
    takes_gradient_parts = False

    def __init__(self, node, ctx):
        self.node = node
        self.kind = type(self).kind or node.kind
        self.name = node.name
        self.ctx = ctx
        self.dtype = ctx.dtype
        self.params = ctx.params.get(node.name, {})
        self.grads = ctx.grads.get(node.name, {})
        self.threads = max(1, int(getattr(ctx, "threads", 1)))
        self.bufs: dict = {}
        self.setup()

    def setup(self) -> None:
        """Read the layer options once (subclasses)."""

    def _buf(self, key, shape, dtype=None):
        """A reusable array ``key`` of ``shape``; reallocated when the shape changes."""
        dtype = self.dtype if dtype is None else dtype
        a = self.bufs.get(key)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = np.empty(shape, dtype)
            self.bufs[key] = a
        return a

    def _scratch(self, key, shape):
        """A ``shape`` buffer shared by all the network's ops (they run one at a time), valid
        only within the current call: workspace no op keeps across calls needs no memory per
        op."""
        pool = self.ctx.__dict__.setdefault("scratch", {})
        size = math.prod(shape)
        a = pool.get(key)
        if a is None or a.size < size or a.dtype != self.dtype:
            a = pool[key] = np.empty(size, self.dtype)
        return a[:size].reshape(shape)

    def _slices(self, n: int, work: int = 0, min_work: int = 0) -> list[tuple[int, int]]:
        """Contiguous batch chunks (:func:`cnncalc.kernels.fast.threads.split`: several per
        thread, claimed dynamically by the pool's threads); one when ``work < min_work``.
        Fewer where the op's weights are large for its work (:func:`weight_chunks`)."""
        if work < min_work:
            return split(n, 1)
        w = self.params.get("weight")
        per_thread = CHUNKS_PER_THREAD if w is None else weight_chunks(work, w.size,
                                                                       self.threads)
        return split(n, self.threads, per_thread)

    def _run(self, fn, sl) -> list:
        """``[fn(0), fn(1), ...]`` for the slices ``sl``; several run on the thread pool."""
        if len(sl) == 1:
            return [fn(0)]
        return self.ctx.run(fn, len(sl))

    def _split(self, n: int, work: int, min_work: int, fn) -> list:
        """``[fn(a, b) for each batch chunk [a, b)]``, in chunk order: contiguous chunks run on
        the pool when ``work`` (multiply-adds or elements) reaches ``min_work``; else
        ``[fn(0, n)]`` on the calling thread."""
        sl = self._slices(n, work, min_work)
        return self._run(lambda t: fn(*sl[t]), sl)

    def _fill(self, key, shape, work: int, min_work: int, fn):
        """Buffer ``key`` of ``shape``, each batch slice written by ``fn(a, b, rows)`` where
        ``rows`` is the buffer's slice ``[a:b]``."""
        out = self._buf(key, shape)
        self._split(shape[0], work, min_work, lambda a, b: fn(a, b, out[a:b]))
        return out

    def _rows(self, key, shape, fn):
        """A per-sample NumPy computation ``fn(a, b) -> rows a..b`` into buffer ``key``; split
        over threads when large (NumPy releases the GIL in its loops). One slice: ``fn``'s own
        result, cast to the network's dtype."""
        n = shape[0]
        size = math.prod(shape)
        if len(self._slices(n, size, MIN_ELEMS_NP)) == 1:
            return fn(0, n).astype(self.dtype, copy=False)

        def rows(a, b, out):
            out[...] = fn(a, b)

        return self._fill(key, shape, size, MIN_ELEMS_NP, rows)

    def _input_grad(self, dy, need, shape, work: int, fn) -> list:
        """``[dx]`` for a one-input op whose ``dx`` (of ``shape``) is written per batch slice
        by ``fn(dy_rows, a, b, dx_rows)``; ``[None]`` when the input needs no gradient."""
        if not need[0]:
            return [None]
        dy = np.ascontiguousarray(dy)
        return [self._fill("dx", shape, work, MIN_ELEMS, lambda a, b, dx: fn(dy[a:b], a, b, dx))]

    def weight_work(self) -> list:
        """``[(cost, fn), ...]``: work on this op's weights alone that its next forward needs
        (e.g. a transform of them). The network runs the work of all its ops together, in one
        pool run before the forward, where each op would run its own on one thread between
        its pool runs; the op then skips it in that forward. None by default."""
        return []

    def _pads(self):
        """``((top, left), (bottom, right))`` zero padding of this node's input."""
        (t, b), (l, r) = self.node.pads(self.ctx.convention)
        return (t, l), (b, r)

    def forward(self, xs, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy, need):  # pragma: no cover - abstract
        raise NotImplementedError


# A chunk of a layer with weights should do at least this many multiply-adds per weight: each
# chunk adds a weight-sized partial gradient into the sum (and rearranges it).
MIN_MACS_PER_WEIGHT = 256


def weight_chunks(work: int, weights: int, threads: int) -> int:
    """Chunks per thread for an op with ``weights`` parameters doing ``work`` multiply-adds
    (or elements) per batch: up to ``CHUNKS_PER_THREAD``, fewer while a chunk would do less
    than ``MIN_MACS_PER_WEIGHT`` per weight (at least one per thread)."""
    per = work // max(1, weights * MIN_MACS_PER_WEIGHT * threads)
    return max(1, min(CHUNKS_PER_THREAD, per))


def _sum_parts_weight_grad(parts, du, dw, k0, k1) -> None:
    """Output channels k0..k1 of a lanes layer's weight gradient: its batch chunks' dU
    ``parts`` summed in chunk order into ``du``, then dW = G^T dU G into ``dw``."""
    kwino.sum_parts(parts, du, k0, k1)
    kwino.weight_grad(du, dw, k0, k1)


def _sum_into(dst, parts) -> None:
    """``dst[...] = parts[0] + parts[1] + ...``, summed in slice order (deterministic)."""
    dst[...] = parts[0]
    for p in parts[1:]:
        dst += p


# ------------------------------------------------------------------------------- conv, pools
class ConvOp(Op):
    """Convolution on batch chunks. Where the kernels take Winograd F(2x2, 3x3)
    (:func:`cnncalc.kernels.conv.uses_winograd`), the weight transform ``U`` is made once per
    forward (in output-channel ranges; inside a network, with every layer's before the
    forward: :meth:`weight_work`) and kept for the backward, and the chunks' ``dU`` are
    summed (chunk order) before one ``dW = G^T dU G`` (inside a network, the lanes layers'
    after the whole backward: :meth:`_weight_grad`)."""

    def setup(self):
        L = self.node.layer
        self.pad, _ = self._pads()
        self.stride, self.dilation, self.groups = L.stride, L.dilation, L.groups
        o = self.node.out_shape
        self.out_hw = (o.h, o.w)
        i = self.node.in_shape
        self.winograd = kconv.uses_winograd(self.params["weight"].shape, self.stride, self.pad,
                                            self.dilation, self.groups, self.out_hw,
                                            dtype=self.dtype, in_hw=(i.h, i.w))
        # Winograd with the tiles in the vector lanes ("same" layers on planes from 8x8) ...
        self.lanes = self.winograd and kwino.lanes_applies(*self.pad, i.h, i.w, o.h, o.w)
        # ... else small planes (weights large next to the activations): position-parallel
        # phases
        self.by_position = (kwino.ByPosition(self.pad, self.out_hw)
                            if self.winograd and not self.lanes
                            and o.h * o.w <= BY_POSITION_MAX_PLANE else None)
        self.shared: dict = {}
        # the batch norm + ReLU whose normalising pass this (lanes) conv applies to its input
        # as it reads it (the planner's fold: :meth:`BatchNormOp.fold_into`)
        self.input_bn: BatchNormOp | None = None
        # the network's forward count that weight_work last made U for (None: never)
        self.weights_made = None

    def _macs(self, n):
        return n * self.params["weight"].size * self.out_hw[0] * self.out_hw[1]

    def _pool(self, fn, n: int) -> list:
        """``[fn(0), ..., fn(n - 1)]`` on the pool (the ``run`` of :class:`ByPosition`)."""
        return self._run(fn, range(n))

    def _out_channel_ranges(self, k_out: int, work: int) -> list[tuple[int, int]]:
        """Output-channel ranges for work on the weights alone: one per thread where ``work``
        (values) pays for a hand-over, else one."""
        return split(k_out, self.threads if work >= MIN_WEIGHT_ELEMS else 1)

    def _by_out_channel(self, fn, k_out: int, work: int) -> None:
        """``fn(k0, k1)`` over output-channel ranges, on the pool when ``work`` pays."""
        sl = self._out_channel_ranges(k_out, work)
        self._run(lambda t: fn(*sl[t]), sl)

    def _weight_grad(self, du) -> None:
        """dW = G^T dU G into the weight gradient, now (the lanes layers inside a network
        make theirs after the whole backward: :meth:`backward`)."""
        dw = self.grads["weight"]
        self._by_out_channel(lambda k0, k1: kwino.weight_grad(du, dw, k0, k1), dw.shape[0],
                             du.size)

    def _winograd_weights(self):
        """(U, U^T or None, ``fn(k0, k1)`` filling their rows k0..k1): U = G w G^T, and for the
        lanes layers the input gradient's U^T (the backward's) with it."""
        w = self.params["weight"]
        u = self._buf("winograd_u", (kwino.TILES, w.shape[0], w.shape[1]))
        ut = (self._buf("winograd_dx", (kwino.TILES, w.shape[1], w.shape[0]))
              if self.lanes else None)
        return u, ut, lambda k0, k1: kwino.weight_transform(w, u, k0, k1, ut)

    def weight_work(self) -> list:
        """The Winograd weight transform (:meth:`Op.weight_work`), in output-channel ranges
        where it is large enough to split."""
        if not self.winograd:
            return []
        u, _, fill = self._winograd_weights()
        k_out = u.shape[1]
        # made for the forward about to run (the network counts them)
        self.weights_made = getattr(self.ctx, "forward_count", None)
        return [(u.size * (k1 - k0) // k_out, functools.partial(fill, k0, k1))
                for k0, k1 in self._out_channel_ranges(k_out, u.size)]

    def forward(self, xs, training):
        x = self.x = np.ascontiguousarray(xs[0])
        n = x.shape[0]
        w, b = self.params["weight"], self.params.get("bias")
        # the weights rearranged once for all chunks, and kept for the backward
        shared = self.shared = {}
        if self.winograd:
            # lanes: the input gradient's U^T (the backward's) made with U, once per forward
            u, ut, fill = self._winograd_weights()
            made = self.weights_made
            if made is None or made != getattr(self.ctx, "forward_count", None):
                self._by_out_channel(fill, w.shape[0], u.size)   # not made by weight_work
            shared["winograd"] = u
            if self.lanes:
                shared["winograd_dx"] = ut
            else:
                # U^T for the forward GEMMs: network-wide scratch, valid during this forward
                # only (the backward uses U)
                ut = shared["winograd_t"] = kwino.forward_weights(
                    u, self._scratch("winograd_ut", (kwino.TILES, w.shape[1], w.shape[0])))
            if self.by_position is not None:
                y = self._buf("y", (n, self.node.out_shape.c, *self.out_hw))
                return self.by_position.forward(x, ut, b, y, self._pool,
                                                split(n, self.threads), self._scratch)
        if self.lanes:
            # one compiled call per chunk, without conv2d_forward's checks in between
            y = self._buf("y", (n, self.node.out_shape.c, *self.out_hw))
            bn = shared["bn"] = (None if self.input_bn is None else
                                 self.input_bn.folded_coefficients(x))
            rows = kwino.lanes_forward_rows(x, shared["winograd"], b, y, bn)
            self._split(n, self._macs(n), MIN_MACS, rows)
            return y
        return self._fill("y", (n, self.node.out_shape.c, *self.out_hw), self._macs(n), MIN_MACS,
                          lambda a, c, y: kconv.conv2d_forward(
                              x[a:c], w, b, self.stride, self.pad, self.dilation, self.groups,
                              self.out_hw, out=y, shared=shared))

    def backward(self, dy, need):
        has_bias = "bias" in self.params
        x, w = self.x, self.params["weight"]
        out_bn = None
        if isinstance(dy, BatchNormInputGrad):
            if self.lanes and not has_bias:
                dy, out_bn = dy.dy, dy.lanes_args()
            else:
                dy = dy.materialize()
        dy = np.ascontiguousarray(dy)
        dx = self._buf("dx", x.shape) if need[0] else None
        shared = self.shared
        if self.winograd:
            u = shared["winograd"]
            if self.lanes:
                # each chunk's dU into a slot of its own, summed (chunk order) where dW is made:
                # inside a network in the run of every layer's after the backward
                # (``ctx.weight_grad_work``, :meth:`Network.backward`: it only reads the slots,
                # then this op's, valid until its next backward), else now
                n = x.shape[0]
                sl = self._slices(n, self._macs(n), MIN_MACS)
                later = getattr(self.ctx, "weight_grad_work", None)
                parts = (self._scratch if later is None else self._buf)(
                    "winograd_du_parts", (len(sl), *u.shape))
                rows = kwino.lanes_backward_rows(dy, x, u, bool(need[0]), dx,
                                                 u_dx=shared["winograd_dx"], bn=shared["bn"],
                                                 out_bn=out_bn)
                self._run(lambda t: rows(*sl[t], parts[t]), sl)
                du = self._buf("lanes_du", u.shape)
                if later is not None:
                    dw = self.grads["weight"]
                    k_out = dw.shape[0]
                    later.extend((du.size * (k1 - k0) // k_out,
                                  functools.partial(_sum_parts_weight_grad, parts, du, dw, k0,
                                                    k1))
                                 for k0, k1 in self._out_channel_ranges(k_out, du.size))
                else:
                    self._by_out_channel(lambda k0, k1: kwino.sum_parts(parts, du, k0, k1),
                                         u.shape[1], du.size)
                    self._weight_grad(du)
            else:
                du = self._scratch("winograd_du", u.shape)
                if self.by_position is not None:
                    self.by_position.backward(dy, x, u, du, dx, self._pool,
                                              split(x.shape[0], self.threads), self._scratch)
                else:
                    def work_du(a, c):
                        return kwino.backward_du(dy[a:c], x[a:c], u, self.pad, bool(need[0]),
                                                 out_dx=None if dx is None else dx[a:c])[1]

                    _sum_into(du, self._split(x.shape[0], self._macs(x.shape[0]), MIN_MACS,
                                              work_du))
                self._weight_grad(du)
            if has_bias:
                self.grads["bias"][...] = dy.sum(axis=(0, 2, 3))
            return [dx]

        def work(a, c):
            _, dw, db = kconv.conv2d_backward(
                dy[a:c], x[a:c], w, self.stride, self.pad, self.dilation, self.groups,
                need_dx=bool(need[0]), has_bias=has_bias,
                out_dx=None if dx is None else dx[a:c], shared=shared)
            return dw, db

        parts = self._split(x.shape[0], self._macs(x.shape[0]), MIN_MACS, work)
        _sum_into(self.grads["weight"], [p[0] for p in parts])
        if has_bias:
            _sum_into(self.grads["bias"], [p[1] for p in parts])
        return [dx]


class MaxPoolOp(Op):
    def setup(self):
        L = self.node.layer
        self.pad, _ = self._pads()
        o = self.node.out_shape
        self.k, self.stride, self.dilation, self.out_hw = L.kernel_size, L.stride, \
            L.dilation, (o.h, o.w)
        i = self.node.in_shape
        # 2x2 / stride 2 on even planes: the phase-plane kernels (the same values; the window's
        # choice kept as its phase)
        self.phases = kpool.maxpool2x2_phases_applies(self.k, self.stride, self.pad,
                                                      self.dilation, i.h, i.w)
        # the batch norm + ReLU whose normalising pass the phase kernels apply to the input
        # as they read it (the planner's fold: :meth:`BatchNormOp.fold_into`)
        self.input_bn: BatchNormOp | None = None

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        n, c = x.shape[:2]
        shape = (n, c) + tuple(self.out_hw)
        y = self._buf("y", shape)
        if self.phases:
            code = self.code = self._buf("code", shape, np.int8)
            bn = None if self.input_bn is None else self.input_bn.folded_coefficients(x)
            self._split(n, x.size, MIN_ELEMS,
                        lambda a, b: kpool.maxpool2x2_phases_forward(x[a:b], y[a:b],
                                                                     code[a:b], bn=bn))
            return y
        am = self.am = self._buf("am", shape, np.int32)
        self._split(n, y.size * self.k[0] * self.k[1], MIN_ELEMS,
                    lambda a, b: kpool.maxpool2d_forward(
                        x[a:b], self.k, self.stride, self.pad, self.out_hw, self.dilation, out=y[a:b], out_argmax=am[a:b]))
        return y

    def backward(self, dy, need):
        if self.phases:
            return self._input_grad(dy, need, self.x_shape, math.prod(self.x_shape),
                                    lambda d, a, b, dx: kpool.maxpool2x2_phases_backward(
                                        d, self.code[a:b], dx))
        return self._input_grad(dy, need, self.x_shape, math.prod(self.x_shape),
                                lambda d, a, b, dx: kpool.maxpool2d_backward(
                                    d, self.am[a:b], dx.shape, out=dx))


class AvgPoolOp(Op):
    def setup(self):
        L = self.node.layer
        if tuple(L.dilation) != (1, 1):
            raise TrainError(f"{self.node.label}: dilated average pooling cannot be trained",
                             hint="remove 'dilation' (PyTorch's AvgPool2d has none either)")
        self.pad, self.pad_after = self._pads()
        o = self.node.out_shape
        self.k, self.stride, self.out_hw = L.kernel_size, L.stride, (o.h, o.w)
        self.include = bool(getattr(L, "count_include_pad", True))

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        shape = x.shape[:2] + tuple(self.out_hw)
        return self._fill("y", shape, math.prod(shape) * self.k[0] * self.k[1], MIN_ELEMS,
                          lambda a, b, y: kpool.avgpool2d_forward(
                              x[a:b], self.k, self.stride, self.pad, self.out_hw, self.include,
                              pad_after=self.pad_after, out=y))

    def backward(self, dy, need):
        return self._input_grad(dy, need, self.x_shape, math.prod(self.x_shape),
                                lambda d, a, b, dx: kpool.avgpool2d_backward(
                                    d, dx.shape, self.k, self.stride, self.pad, self.include,
                                    pad_after=self.pad_after, out=dx))


class GlobalAvgPoolOp(Op):
    def forward(self, xs, training):
        self.x_shape = xs[0].shape
        return kpool.global_avgpool_forward(xs[0]).astype(self.dtype, copy=False)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [kpool.global_avgpool_backward(dy, self.x_shape).astype(self.dtype, copy=False)]


class AdaptiveAvgPoolOp(Op):
    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        self.x_shape = x.shape
        o = self.node.out_shape
        return self._fill("y", (x.shape[0], x.shape[1], o.h, o.w), x.size, MIN_ELEMS,
                          lambda a, b, y: kpool.adaptive_avgpool_forward(
                              x[a:b], (o.h, o.w), out=y))

    def backward(self, dy, need):
        return self._input_grad(dy, need, self.x_shape, math.prod(self.x_shape),
                                lambda d, a, b, dx: kpool.adaptive_avgpool_backward(
                                    d, dx.shape, out=dx))


class ZeroPadOp(Op):
    def forward(self, xs, training):
        x = xs[0]
        (t, _), (l, _) = self.node.layer.padding
        n, _, h, w = x.shape
        o = self.node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        y[...] = 0
        y[:, :, t:t + h, l:l + w] = x
        self.hw = (h, w)
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        (t, _), (l, _) = self.node.layer.padding
        h, w = self.hw
        return [np.ascontiguousarray(dy[:, :, t:t + h, l:l + w])]


# --------------------------------------------------------------------------- fully connected
class LinearOp(Op):
    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        n = x.shape[0]
        self.x_shape = x.shape
        self.x2d = x2d = x.reshape(n, -1)
        w, b = self.params["weight"], self.params.get("bias")
        y = self._fill("y", (n, w.shape[0]), n * w.size, MIN_MACS,
                       lambda a, c, y: klin.linear_forward(x2d[a:c], w, b, out=y))
        return y.reshape(n, w.shape[0], 1, 1)

    def backward(self, dy, need):
        dy2 = np.ascontiguousarray(dy.reshape(dy.shape[0], -1))
        n = dy2.shape[0]
        w = self.params["weight"]
        dx = self._buf("dx", self.x2d.shape) if need[0] else None

        def work(a, c):
            d, dw, db = klin.linear_backward(dy2[a:c], self.x2d[a:c], w, need_dx=bool(need[0]))
            if dx is not None:
                dx[a:c] = d
            return dw, db

        parts = self._split(n, n * w.size, MIN_MACS, work)
        _sum_into(self.grads["weight"], [p[0] for p in parts])
        if "bias" in self.grads:
            _sum_into(self.grads["bias"], [p[1] for p in parts])
        return [None if dx is None else dx.reshape(self.x_shape)]


class MaxoutOp(Op):
    def forward(self, xs, training):
        x = xs[0]
        n = x.shape[0]
        self.x_shape = x.shape
        self.x2d = x.reshape(n, -1)
        y, self.am = act.maxout_forward(self.x2d, self.params["weight"], self.params["bias"],
                                        self.node.layer.pieces)
        return y.reshape(n, -1, 1, 1)

    def backward(self, dy, need):
        dx, dw, db = act.maxout_backward(np.ascontiguousarray(dy.reshape(dy.shape[0], -1)),
                                         self.x2d, self.params["weight"], self.am,
                                         self.node.layer.pieces)
        self.grads["weight"][...] = dw
        self.grads["bias"][...] = db
        return [dx.reshape(self.x_shape) if need[0] else None]


class FlattenOp(Op):
    def forward(self, xs, training):
        x = xs[0]
        self.x_shape = x.shape
        return np.ascontiguousarray(x).reshape(x.shape[0], -1, 1, 1)

    def backward(self, dy, need):
        return [dy.reshape(self.x_shape) if need[0] else None]


# ----------------------------------------------------------------------- elementwise kernels
def _writes_out(fn) -> bool:
    """Whether a kernel writes into a given ``out=`` (the one-pass numba kernels) rather than
    returning a new array (the NumPy ones)."""
    return "out" in inspect.signature(fn).parameters


class ElementwiseOp(Op):
    """The kernel pair a layer type names (:attr:`Layer.kernels`): ``y = forward(x, *args)``,
    ``dx = backward(dy, saved, *args)`` with ``saved`` the input ``x`` or the output ``y``
    (:attr:`Layer.saves`) and ``args`` the options :attr:`Layer.kernel_args` names.

    The kernels act on each sample on its own, so any batch slice can run on its own thread.
    A kernel with an ``out=`` argument writes its slice of the op's buffer; a NumPy kernel returns its rows, copied into the buffer only when the
    batch is split.
    """

    def setup(self):
        layer = self.node.layer
        self.fwd, self.bwd = layer.kernel_pair()
        self.args = layer.kernel_values()
        self.keep_y = layer.saves == "y"
        self.writes_out = {fn: _writes_out(fn) for fn in (self.fwd, self.bwd)}

    def _map(self, key, fn, arrays):
        """``fn(*rows of arrays, *args)`` over the batch, into buffer ``key``."""
        shape, args = arrays[0].shape, self.args
        if self.writes_out[fn]:
            return self._fill(key, shape, arrays[0].size, MIN_ELEMS,
                              lambda a, b, out: fn(*(v[a:b] for v in arrays), *args, out=out))
        return self._rows(key, shape, lambda a, b: fn(*(v[a:b] for v in arrays), *args))

    def forward(self, xs, training):
        x = np.ascontiguousarray(xs[0])
        y = self._map("y", self.fwd, (x,))
        self.saved = y if self.keep_y else x
        return y

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        return [self._map("dx", self.bwd, (np.ascontiguousarray(dy), self.saved))]


class PReluOp(Op):
    def forward(self, xs, training):
        self.x = xs[0]
        return act.prelu_forward(self.x, self.params["weight"]).astype(self.dtype, copy=False)

    def backward(self, dy, need):
        dx, dalpha = act.prelu_backward(dy, self.x, self.params["weight"])
        self.grads["weight"][...] = dalpha
        return [dx.astype(self.dtype, copy=False) if need[0] else None]


# ---------------------------------------------------------------------------- norm, dropout
_NO_SUMS = np.zeros((1, 2, 0), np.float64)


class BatchNormOp(Op):
    """Batch norm. (N, C, H, W) inputs run the serial numba kernels of
    :mod:`cnncalc.kernels.norm` (``bn_sums``/``bn_normalise``, ``bn_grad_sums``/
    ``bn_grad_input``) on batch slices: per-slice, per-channel float64 partial sums combined in
    slice order, so the batch statistics do not depend on the thread count beyond rounding and
    are bitwise repeatable for one; the element-wise passes split over threads. (N, F) inputs
    use the NumPy :func:`cnncalc.kernels.norm.batchnorm_forward` on the calling thread.

    ``relu`` (the planner's ``batchnorm_relu`` step, :mod:`cnncalc.engine.plan`): the output is
    ``max(bn(x), 0)``, and the ReLU's backward (``dy * [y > 0]``) runs inside batch norm's
    backward passes: no separate ReLU pass or buffer.

    ``residual`` (the planner's ``batchnorm_add_relu`` step): a second input ``s`` is added in
    the normalising pass, ``y = max(bn(x) + s, 0)``, and its gradient g = ``dy * [y > 0]`` is
    written by the backward's first pass (with the sums), which the input-gradient pass then
    reads in place of ``dy`` and ``y``: the ``add`` and the ReLU cost no pass of their own.
    Its backward may take ``dy`` as two parts (``takes_gradient_parts``)."""

    relu = False
    residual = False   # a second input added before the ReLU (``batchnorm_add_relu``)
    folded_into = None  # the conv that applies this op's normalising pass (fold_into)
    grad_folded_into = None  # the conv that applies its input-gradient pass (fold_grad_into)

    def setup(self):
        c = self.node.in_shape.c
        L = self.node.layer
        self.rm = self.ctx.buffers[f"{self.name}.running_mean"]
        self.rv = self.ctx.buffers[f"{self.name}.running_var"]
        self.affine = bool(L.affine)
        if not self.affine:
            self.gamma = np.ones(c, self.dtype)
            self.beta = np.zeros(c, self.dtype)
        self.momentum = 0.1 if L.momentum is None else float(L.momentum)
        self.eps = float(L.eps)
        self.folded = None     # the input the last folded forward passed on

    def fold_into(self, reader) -> bool:
        """Let ``reader``, the only reader of this ``batchnorm → relu``'s output, apply the
        normalising pass as it reads its input (Winograd lanes convolutions and 2x2 max
        pooling, in their phase split): the forward then only takes the statistics and passes
        its input on, and the output is never written to memory. The backward is unchanged (it
        recomputes the ReLU's mask from ``x``). False where the reader cannot."""
        if not (self.relu and not self.residual and (getattr(reader, "lanes", False) or
                                                     getattr(reader, "phases", False))):
            return False
        self.folded_into, reader.input_bn = reader, self
        return True

    def fold_grad_into(self, conv) -> bool:
        """Let ``conv``, the Winograd lanes layer (without bias) whose output only this batch
        norm reads, apply this op's input-gradient pass as its backward reads its output
        gradient (:func:`cnncalc.kernels.winograd._lanes_output_grad`): the backward then
        takes the sums and their terms and hands the conv a :class:`BatchNormInputGrad`, and
        the batch norm's ``dx`` is never written to memory. False where the conv cannot."""
        if not getattr(conv, "lanes", False) or "bias" in conv.params:
            return False
        self.grad_folded_into = conv
        return True

    def folded_coefficients(self, x) -> np.ndarray:
        """(4, C) float64: mean, inv_std, gamma, beta of the forward that passed ``x`` on (for
        the conv it was folded into)."""
        if self.folded is not x:
            raise TrainError(f"{self.name}: the folded batch norm did not run before "
                             f"{self.folded_into.name}",
                             hint="run the network's steps in plan order")
        return self.coef

    def _gb(self):
        gamma = self.params["weight"] if self.affine else self.gamma
        beta = self.params["bias"] if self.affine else self.beta
        return gamma, beta

    def forward(self, xs, training):
        gamma, beta = self._gb()
        x = xs[0]
        if x.ndim != 4:
            self.sliced = False
            y, self.cache = knorm.batchnorm_forward(x, gamma, beta, self.rm, self.rv,
                                                    bool(training), self.momentum, self.eps)
            if self.residual:
                y = y + xs[1].reshape(y.shape)
            if self.relu:
                y = self.y2d = np.maximum(y, 0)
            return y.astype(self.dtype, copy=False)
        # numba kernels on batch slices: per-slice float64 partial sums combined in slice order
        # (bitwise repeatable for a thread count); xhat is recomputed from x in backward (x is
        # the previous op's buffer, valid until its next forward).
        self.sliced, self.training = True, bool(training)
        x = self.x = np.ascontiguousarray(x, dtype=self.dtype)
        n, c, h, w = x.shape
        hw = h * w
        x3 = self.x3 = x.reshape(n, c, hw)
        # folded (fold_into): no output of its own; y3 stands in for the kernels' argument
        y = x if self.folded_into is not None else self._buf("y", x.shape)
        y3 = self.y3 = y.reshape(n, c, hw)
        s3 = (np.ascontiguousarray(xs[1], dtype=self.dtype).reshape(n, c, hw) if self.residual
              else None)
        if training:
            shift = x3[0, :, 0].astype(np.float64)
            s = self._chunk_sums(n, x.size, c,
                                 lambda a, b, out: knorm.bn_sums(x3[a:b], shift, out))
        else:   # unread: the running statistics are used
            s, shift = _NO_SUMS, _NO_SUMS[0, 0]
        # mean, inv_std, gamma, beta (float64 of the dtype's values); the running statistics
        # updated in training
        # a fresh (7, C): the forward's mean, inv_std, gamma, beta, then the backward's
        # terms (the rows the conv folding the input-gradient pass reads, without a copy)
        self.coef7 = np.empty((7, c), np.float64)
        coef = self.coef = self.coef7[:4]
        self.gamma_used = np.empty(c, self.dtype)
        knorm.bn_coefficients(bool(training), s, shift, n * hw, self.momentum, self.eps,
                              self.rm, self.rv, gamma, beta, coef, self.gamma_used)
        self.mean64, self.inv_std64, g64, b64 = coef
        self.g64, self.b64 = g64, b64
        if self.folded_into is not None:
            # the conv that reads the output applies the pass (fold_into): pass x on
            self.folded = x
            return x
        self._split(n, x.size, MIN_ELEMS,
                    lambda a, b: knorm.bn_normalise(x3[a:b], self.mean64, self.inv_std64, g64,
                                                    b64, self.relu, y3[a:b],
                                                    None if s3 is None else s3[a:b]))
        return y

    def _chunk_sums(self, n: int, size: int, c: int, fn) -> np.ndarray:
        """The batch chunks' float64 per-channel sums (chunks, 2, C), ``fn(a, b, out)`` writing
        chunk ``[a, b)``'s into ``out``; the kernels that read them (``bn_coefficients``,
        ``bn_grad_terms``) add them in chunk order."""
        sl = self._slices(n, size, MIN_ELEMS)
        parts = np.empty((len(sl), 2, c), np.float64)
        self._run(lambda t: fn(*sl[t], parts[t]), sl)
        return parts

    @property
    def takes_gradient_parts(self) -> bool:
        """The network may pass ``backward`` its output's gradient as a tuple of two parts (an
        output with two readers), which the residual form's first pass adds as it reads them
        (:func:`cnncalc.kernels.norm.bn_grad_sums`) instead of a pass of its own."""
        return self.residual

    def backward(self, dy, need):
        if self.sliced and self.residual:
            return self._residual_backward(dy if isinstance(dy, tuple) else (dy,), need)
        if isinstance(dy, tuple):
            dy = dy[0] + dy[1]
        if not self.sliced:
            if self.relu:
                dy = np.where(self.y2d > 0, dy, 0).astype(dy.dtype, copy=False)
            dx, dgamma, dbeta = knorm.batchnorm_backward(dy, self.cache)
            if self.affine:
                self.grads["weight"][...] = dgamma
                self.grads["bias"][...] = dbeta
            dx = dx.astype(self.dtype, copy=False) if need[0] else None
            return [dx, dy.astype(self.dtype, copy=False)] if self.residual else [dx]
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        n, c = dy.shape[:2]
        hw = dy.size // (n * c)
        dy3 = dy.reshape(n, c, hw)
        x3, y3, relu = self.x3, self.y3, self.relu
        # batch norm + ReLU: the ReLU's mask recomputed from x by the forward's own expression
        # instead of read from y (one stream less in both passes; with a residual, y = max(bn(x)
        # + s, 0) would need s read instead)
        gb = (self.g64, self.b64) if relu else (None, None)

        parts = self._chunk_sums(n, dy.size, c, lambda a, b, out: knorm.bn_grad_sums(
            dy3[a:b], x3[a:b], y3[a:b], self.mean64, self.inv_std64, relu, out, *gb))
        scale, mb, mg = self._grad_terms(parts, dy.size // c)
        if not need[0]:
            return [None]
        grad = BatchNormInputGrad(self, dy, (scale, mb, mg), relu)
        return [grad if self.grad_folded_into is not None else grad.materialize()]

    def _grad_terms(self, parts, m: int):
        """dbeta = sum g and dgamma = sum g * xhat (the chunks' float64 sums ``parts``, added in
        chunk order) into the gradients, and the input-gradient pass's per-channel terms
        (scale = gamma * inv_std, mb = mean(g), mg = mean(g * xhat); evaluation: mb = mg = 0)
        over ``m`` values a channel."""
        c = parts.shape[2]
        if self.affine:
            dgamma, dbeta = self.grads["weight"], self.grads["bias"]
        else:
            dgamma, dbeta = np.empty(c, self.dtype), np.empty(c, self.dtype)
        terms = self.coef7[4:]
        knorm.bn_grad_terms(parts, self.coef, self.gamma_used, m, self.training, dgamma, dbeta,
                            terms)
        return terms

    def _residual_backward(self, parts, need):
        """``y = max(bn(x) + s, 0)``'s backward from its output's gradient in one or two
        ``parts`` (summed as they are read): the first pass writes g = dy * [y > 0], which is
        ``s``'s gradient, and takes batch norm's sums; the input-gradient pass reads g and x
        only."""
        dy = np.ascontiguousarray(parts[0], dtype=self.dtype)
        dyb = None if len(parts) == 1 else np.ascontiguousarray(parts[1], dtype=self.dtype)
        n, c = dy.shape[:2]
        hw = dy.size // (n * c)
        dy3 = dy.reshape(n, c, hw)
        dyb3 = None if dyb is None else dyb.reshape(n, c, hw)
        x3, y3 = self.x3, self.y3
        ds = self._buf("ds", dy.shape)
        ds3 = ds.reshape(n, c, hw)

        parts = self._chunk_sums(n, dy.size, c, lambda a, b, out: knorm.bn_grad_sums(
            dy3[a:b], x3[a:b], y3[a:b], self.mean64, self.inv_std64, True, out, None, None,
            None if dyb3 is None else dyb3[a:b], ds3[a:b]))
        scale, mb, mg = self._grad_terms(parts, dy.size // c)
        if not need[0]:
            return [None, ds]
        # the input-gradient pass reads g (ds) in place of dy, without the mask
        grad = BatchNormInputGrad(self, ds, (scale, mb, mg), False)
        return [grad if self.grad_folded_into is not None else grad.materialize(), ds]


class BatchNormInputGrad:
    """A batch norm's input gradient not yet computed: what its input-gradient pass
    (:func:`cnncalc.kernels.norm.bn_grad_input`) would read, handed to the lanes conv that
    made the batch norm's input (:meth:`BatchNormOp.fold_grad_into`), which applies the pass
    as it reads the gradient. ``dy``: the batch norm's output gradient (with a residual, the
    masked g it wrote); ``terms``: scale, mb, mg; ``relu``: mask ``dy`` with the ReLU's
    mask, recomputed from the batch norm's input."""

    def __init__(self, bn: BatchNormOp, dy: np.ndarray, terms, relu: bool):
        self.bn, self.dy, self.terms, self.relu = bn, dy, terms, relu

    def lanes_args(self):
        """``out_bn`` of :func:`cnncalc.kernels.winograd.lanes_backward_rows`: (7, C)
        float64 rows mean, inv_std, gamma, beta, scale, mb, mg (the batch norm's forward
        coefficients and, after them, its backward's terms), the batch norm's input and the
        ReLU flag."""
        bn = self.bn
        return bn.coef7, bn.x, self.relu

    def materialize(self) -> np.ndarray:
        """The batch norm's dx = gamma*inv_std * (g - mean(g) - xhat*mean(g*xhat)), by its own
        input-gradient pass (unfolded, or a reader that cannot apply it)."""
        bn = self.bn
        n, c = self.dy.shape[:2]
        hw = self.dy.size // (n * c)
        dy3 = self.dy.reshape(n, c, hw)
        dx = bn._buf("dx", self.dy.shape)
        dx3 = dx.reshape(n, c, hw)
        scale, mb, mg = self.terms
        gb = (bn.g64, bn.b64) if self.relu else (None, None)
        bn._split(n, self.dy.size, MIN_ELEMS,
                  lambda a, b: knorm.bn_grad_input(dy3[a:b], bn.x3[a:b], bn.y3[a:b], bn.mean64,
                                                   bn.inv_std64, scale, mb, mg, self.relu,
                                                   dx3[a:b], *gb))
        return dx


class DropoutOp(Op):
    def forward(self, xs, training):
        p = float(self.node.layer.p)
        if not training or p == 0.0:
            self.mask = None
            return xs[0]
        y, self.mask = kdrop.dropout_forward(xs[0], p, self.ctx.rng)
        return y.astype(self.dtype, copy=False)

    def backward(self, dy, need):
        if not need[0]:
            return [None]
        if self.mask is None:
            return [dy]
        return [kdrop.dropout_backward(dy, self.mask).astype(self.dtype, copy=False)]


# ----------------------------------------------------------------------------------- merges
class AddOp(Op):
    def forward(self, xs, training):
        self.n_in = len(xs)
        y = self._buf("y", xs[0].shape)
        np.add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            y += x
        return y

    def backward(self, dy, need):
        return [dy if nd else None for nd in need]


class ConcatOp(Op):
    def forward(self, xs, training):
        n = xs[0].shape[0]
        o = self.node.out_shape
        y = self._buf("y", (n, o.c, o.h, o.w))
        self.bounds = []
        c0 = 0
        for x in xs:
            c1 = c0 + x.shape[1]
            y[:, c0:c1] = x
            self.bounds.append((c0, c1))
            c0 = c1
        return y

    def backward(self, dy, need):
        return [np.ascontiguousarray(dy[:, c0:c1]) if nd else None
                for (c0, c1), nd in zip(self.bounds, need)]


def make_op(node, ctx) -> Op:
    """The op for ``node``, built from its layer type's binding (:meth:`Layer.op_class`);
    a :class:`TrainError` for an analysis-only kind."""
    cls = type(node.layer).op_class()
    if cls is None:
        raise TrainError(f"{node.label}: layer type '{node.kind}' cannot be executed yet",
                         hint=f"executable types: {', '.join(executable_kinds())}")
    return cls(node, ctx)


def executable_kinds() -> list[str]:
    """The registered layer kinds the engine can run, sorted."""
    from cnncalc.layers import REGISTRY

    return sorted(kind for kind, cls in REGISTRY.items() if cls.executable())
