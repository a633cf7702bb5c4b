"""Runtime for the generated conv→relu→maxpool … → fc chain (:mod:`.gen`).

A :class:`FastChain` owns one :class:`Slot` of buffers per batch chunk; ``forward_slice``,
``loss_slice`` and ``backward_slice`` run the generated kernels on rows ``[n0, n1)`` of the batch
with that chunk's slot, so any thread can run any chunk and several run at once (every kernel is
``nogil``). Each slot's parameter gradients go to its own flat buffer; the caller reduces them
in chunk order (deterministic whichever thread ran a chunk).

Buffers grow to the largest slice seen and are reused (kernels take the live row count).
"""
from __future__ import annotations

import numpy as np

from .gen import ChainSpec, buffer_names, fc_pad, load_chain


class Slot:
    """Per-thread activations and scratch for up to ``cap`` rows."""

    def __init__(self, chain: FastChain, grads: np.ndarray | None):
        self.chain = chain
        self.cap = 0
        self._args = None
        self.grads = grads          # flat gradient buffer this slot writes (None: allocate)
        if self.grads is None:
            self.grads = np.zeros(chain.spec.n_params, chain.dtype)

    def args(self, chain: FastChain) -> tuple:
        """The buffers in the composite kernels' argument order (cached until reallocated)."""
        if self._args is None:
            named = {}
            for i in range(len(chain.spec.blocks)):
                named.update({f"b{i}_xpad": self.xpad[i], f"b{i}_cv": self.cv[i],
                              f"b{i}_y": self.y[i], f"b{i}_am": self.am[i],
                              f"b{i}_dy": self.dy[i], f"b{i}_dxp": self.dxp[i],
                              f"b{i}_dwk": self.dwk[i], f"b{i}_dc": self.cols[i],
                              f"b{i}_cols": self.cols[i]})
                if i in chain.wk:
                    named[f"b{i}_wk"] = chain.wk[i]
                    named[f"b{i}_wt"] = chain.wt[i]
            for l in range(1, len(self.h)):
                named[f"h{l}"] = self.h[l]
                named[f"dh{l}"] = self.dh[l]
            named["dh0"] = self.dh[0]
            self._args = tuple(named[k] for k in chain.names)
        return self._args

    def ensure(self, rows: int) -> None:
        if rows <= self.cap:
            return
        self._args = None
        spec, dt = self.chain.spec, self.chain.dtype
        self.cap = rows
        self.xpad, self.cols, self.cv, self.y, self.am, self.dy = [], [], [], [], [], []
        self.dxp, self.dwk = [], []
        for i, b in enumerate(spec.blocks):
            if spec.method(i) == "direct":
                tail = 2 * b.F  # reads run up to F - 1 past the last padded row
                self.xpad.append(np.zeros((rows, b.C * b.Hd * b.Wd + tail), dt))
                self.cols.append(np.zeros(b.K * b.Ho * b.Wd, dt))  # dense dconv (backward)
                self.cv.append(np.empty(b.K * b.Ho * b.Wd, dt))
                self.dxp.append(np.zeros(b.C * b.Hd * b.Wd + tail, dt))
                self.dwk.append(np.empty(b.K * b.R, dt))
            else:
                S = spec.sub_batch(i)
                FCp = fc_pad(b.F * b.C)
                tail = FCp - b.F * b.C
                self.xpad.append(np.zeros((rows, b.Hd * b.Wd * b.C + tail), dt))
                self.cols.append(np.empty((S * b.Ho * b.Wo, b.R), dt))
                self.cv.append(np.empty((S * b.Ho * b.Wo, b.K), dt))
                self.dxp.append(np.zeros(b.Hd * b.Wd * b.C + tail, dt))
                self.dwk.append(np.empty((b.K, b.F * FCp), dt))
            self.y.append(np.empty((rows, b.out_size), dt))
            self.am.append(np.empty((rows, b.out_size), np.int8))
            self.dy.append(np.empty((rows, b.out_size), dt))
        L = len(spec.dense)
        self.h = [None] * (L + 1)   # h[0] is the last block's output (or the input rows)
        self.dh = [None] * (L + 1)
        for l, d in enumerate(spec.dense[:-1]):
            self.h[l + 1] = np.empty((rows, d.O), dt)
            self.dh[l + 1] = np.empty((rows, d.O), dt)
        if spec.blocks:
            self.h[0] = self.y[-1]
            self.dh[0] = self.dy[-1]
        else:
            self.dh[0] = np.empty((rows, spec.dense[0].I), dt)


class FastChain:
    """The generated kernels for one :class:`ChainSpec` plus per-thread slots."""

    def __init__(self, spec: ChainSpec, threads: int, grads0: np.ndarray):
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.mod = load_chain(spec)
        # one slot per batch chunk (created on first use); slot 0 writes straight into the
        # network's flat gradients (exact with one chunk)
        self.slots = [Slot(self, grads0)]
        self._dummy = np.zeros((1,) * 4, self.dtype)  # dx when it is not wanted
        self.names = buffer_names(spec)
        self.wk, self.wt = {}, {}
        for i, b in enumerate(spec.blocks):
            if spec.method(i) == "gemm":
                self.wk[i] = np.empty((b.K, b.F * fc_pad(b.F * b.C)), self.dtype)
                self.wt[i] = np.empty((b.R, b.K), self.dtype)

    def slot(self, chunk: int) -> Slot:
        """The buffers of batch chunk ``chunk`` (whichever thread runs it)."""
        while len(self.slots) <= chunk:
            self.slots.append(Slot(self, None))
        return self.slots[chunk]

    def prepare(self, params: np.ndarray) -> None:
        """Weight layouts the GEMM blocks need (once per forward, in the calling thread)."""
        for i in self.wk:
            getattr(self.mod, f"b{i}_prep")(params, self.wk[i], self.wt[i])

    # ---------------------------------------------------------------- per-slice work (any thread)
    # One composite nogil kernel call per slice: the threads hand the GIL over once per step.
    def forward_slice(self, slot: Slot, x, n0: int, n1: int, p, logits) -> None:
        slot.ensure(n1 - n0)
        self.mod.chain_fwd(x, n0, n1 - n0, p, logits, *slot.args(self))

    def loss_slice(self, labels, n0: int, n1: int, inv_n, logits, dlogits) -> float:
        return self.mod.xent(n1 - n0, n0, labels, inv_n, logits[n0:n1], dlogits[n0:n1])

    def backward_slice(self, slot: Slot, x, n0: int, n1: int, p, logits, dlogits,
                       need_dx: bool, dx) -> None:
        if dx is None:
            dx = self._dummy
        self.mod.chain_bwd(x, n0, n1 - n0, p, slot.grads, logits, dlogits, bool(need_dx), dx,
                           *slot.args(self))

    def step_slice(self, slot: Slot, x, labels, n0: int, n1: int, inv_n, p, logits,
                   dlogits) -> float:
        """forward + softmax CE + backward of rows [n0, n1); returns their summed loss."""
        slot.ensure(n1 - n0)
        return self.mod.chain_step(x, labels, n0, n1 - n0, inv_n, p, slot.grads, logits,
                                   dlogits, self._dummy, *slot.args(self))
