"""Shape-specialised kernels for a conv→relu→maxpool … → fc(→relu) … chain, generated as source.

Why generate source (this package's README, "Shapes as compile-time constants"): the same loops
run 3-7x faster when every shape is a compile-time constant, and numba can only cache
(``cache=True``) functions whose source lives in a real ``.py`` file. So :func:`load_chain`
writes the kernels for one *shape signature* (a :class:`ChainSpec`) into
``$CNNCALC_CACHE_DIR/gen/`` (default ``$XDG_CACHE_HOME/cnncalc/gen/`` or
``~/.cache/cnncalc/gen/``; mode 0700, refused when another user owns it, in favour of a fresh
private temporary folder) under a name made from a hash of the signature and the generator
version, imports it with :mod:`importlib`, and numba's on-disk
cache (next to the file) makes a second process start without compiling.

Every generated kernel is serial, ``nogil`` and cached (``_jit.jit``); parallelism comes from
calling them on batch slices from several Python threads (:mod:`.threads`).

Layouts (internal to the chain; the boundary is NCHW with PyTorch's weight shapes):

* block input: the network input (N, C, H, W), or the previous block's pooled output as rows
  ``(n, (i*W + j)*C + c)`` (NHWC). The last block writes NCHW-flat rows ``(n, (c*H + i)*W + j)``,
  which is what ``flatten``/``fc`` read, so no permutation is needed before the fc chain.
* padded inputs are kept for the whole slice (``xpad``): the backward re-reads them.
* ``direct`` blocks (few input channels, first block): one vectorised loop over output columns
  with the C*F*F taps unrolled and the weights in registers. ``gemm`` blocks: NHWC im2col (F
  contiguous runs of F*C per output position) and one BLAS GEMM per sub-batch.
* forward keeps only the pooled output and an int8 argmax (-1 where ReLU killed the window);
  backward visits the live windows only and scatters into dW (and dx) directly.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
from dataclasses import dataclass

from cnncalc.shapes import out_size

GEN_VERSION = 5
SUB_BATCH_ROWS = 400   # GEMM rows (output positions) per im2col sub-batch
DIRECT_MAX_TAPS = 32    # C*F*F up to which the first block uses the direct kernel


def fc_pad(n: int) -> int:
    """``n`` rounded up to whole 8-lane vectors."""
    return -(-n // 8) * 8


@dataclass(frozen=True)
class Block:
    """conv (stride 1, square F, symmetric pad) → ReLU → maxpool (p x p, stride p, floor)."""

    C: int
    H: int
    W: int
    K: int
    F: int
    pad: int
    pool: int
    woff: int          # offset of the weight (K, C, F, F) in the flat parameter buffer
    boff: int          # offset of the bias, -1 when the conv has none

    @property
    def Hd(self):
        return self.H + 2 * self.pad

    @property
    def Wd(self):
        return self.W + 2 * self.pad

    @property
    def Ho(self):
        return out_size(self.H, self.F, 1, self.pad, self.pad).size

    @property
    def Wo(self):
        return out_size(self.W, self.F, 1, self.pad, self.pad).size

    @property
    def Hp(self):
        return out_size(self.Ho, self.pool, self.pool, 0, 0).size

    @property
    def Wp(self):
        return out_size(self.Wo, self.pool, self.pool, 0, 0).size

    @property
    def R(self):
        return self.C * self.F * self.F

    @property
    def out_size(self):
        return self.K * self.Hp * self.Wp


@dataclass(frozen=True)
class Dense:
    I: int
    O: int
    relu: bool
    woff: int
    boff: int          # -1: no bias


@dataclass(frozen=True)
class ChainSpec:
    dtype: str                      # "float32" | "float64"
    blocks: tuple[Block, ...]
    dense: tuple[Dense, ...]
    n_params: int

    def key(self) -> str:
        tag = f"{GEN_VERSION}:{SUB_BATCH_ROWS}:{DIRECT_MAX_TAPS}:{self!r}"
        return hashlib.sha1(tag.encode()).hexdigest()[:16]

    def method(self, i: int) -> str:
        b = self.blocks[i]
        return "direct" if i == 0 and b.R <= DIRECT_MAX_TAPS else "gemm"

    def sub_batch(self, i: int) -> int:
        b = self.blocks[i]
        return max(1, SUB_BATCH_ROWS // (b.Ho * b.Wo))


# ------------------------------------------------------------------------------------ codegen
class _W:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, depth: int, text: str = "") -> None:
        self.lines.append("    " * depth + text if text else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _div(a: str, p: int) -> str:
    """``a // p`` for a window index a >= 0 (a shift when p is a power of two)."""
    return f"({a} >> {p.bit_length() - 1})" if p & (p - 1) == 0 else f"({a} // {p})"


def _mod(a: str, p: int) -> str:
    return f"({a} & {p - 1})" if p & (p - 1) == 0 else f"({a} % {p})"


def _bias(b: Block, k: str, DT: str) -> str:
    return f"p[{b.boff} + {k}]" if b.boff >= 0 else f"{DT}(0)"


def _in_index(spec: ChainSpec, i: int, r: str, c: str, y: str, x: str) -> str:
    """Expression reading element (c, y, x) of sample row r of block i's input."""
    b = spec.blocks[i]
    if i == 0:
        return f"x[n0 + {r}, {c}, {y}, {x}]"
    return f"xin[{r}, (({y}) * {b.W} + ({x})) * {b.C} + {c}]"


def _out_index(spec: ChainSpec, i: int, k: str, yy: str, xx: str) -> str:
    """Flat column of (k, yy, xx) in block i's output rows (NHWC, or NCHW for the last block)."""
    b = spec.blocks[i]
    if i == len(spec.blocks) - 1:
        return f"({k}) * {b.Hp * b.Wp} + ({yy}) * {b.Wp} + ({xx})"
    return f"(({yy}) * {b.Wp} + ({xx})) * {b.K} + ({k})"


def _gen_pool(w: _W, d: int, b: Block, spec: ChainSpec, i: int, read, DT: str, am_idx: str):
    """Max over the p x p window (first max wins) of ``read(dy, dx)`` + ReLU + int8 argmax.

    NaN propagates as in the generic kernels (and PyTorch): a NaN wins the window
    (``v > m or v != v``) and survives the ReLU (``alive = not m <= 0``)."""
    p = b.pool
    w(d, f"m = {read(0, 0)}")
    w(d, "idx = 0")
    for t in range(1, p * p):
        a, c = divmod(t, p)
        w(d, f"v = {read(a, c)}")
        w(d, "bt = (v > m) | (v != v)")
        w(d, "m = v if bt else m")
        w(d, f"idx = {t} if bt else idx")
    w(d, f"alive = not m <= {DT}(0)")


def _gen_block_direct(w: _W, spec: ChainSpec, i: int, DT: str) -> None:
    b = spec.blocks[i]
    C, H, W, K, F, pad, p = b.C, b.H, b.W, b.K, b.F, b.pad, b.pool
    Hd, Wd, Ho, Hp, Wp = b.Hd, b.Wd, b.Ho, b.Hp, b.Wp
    HWd = Hd * Wd
    PL = Ho * Wd  # one output plane, rows of the padded width
    taps = [(c, fy, fx) for c in range(C) for fy in range(F) for fx in range(F)]
    # ---- forward
    w(0, "@jit")
    w(0, f"def b{i}_fwd(x, n0, nloc, p, xpad, cv, y, am):")
    w(1, "for r in range(nloc):")
    w(2, "xp = xpad[r]")
    w(2, f"for c in range({C}):")
    w(3, f"for i in range({H}):")
    w(4, f"o = c * {HWd} + (i + {pad}) * {Wd} + {pad}")
    w(4, f"for j in range({W}):")
    w(5, f"xp[o + j] = {_in_index(spec, i, 'r', 'c', 'i', 'j')}")
    # the conv output plane uses the padded row stride Wd, so the whole plane is one long
    # vectorised loop (t = oy*Wd + ox; columns ox >= Wo are computed but never pooled)
    w(2, f"for k in range({K}):")
    w(3, f"bk = {_bias(b, 'k', DT)}")
    w(3, f"wo = {b.woff} + k * {b.R}")
    for t in range(len(taps)):
        w(3, f"w{t} = p[wo + {t}]")
    w(3, f"ck = cv[k * {PL}:(k + 1) * {PL}]")
    w(3, f"for t in range({PL}):")
    w(4, "s = bk")
    for t, (c, fy, fx) in enumerate(taps):
        w(4, f"s += w{t} * xp[t + {c * HWd + fy * Wd + fx}]")
    w(4, "ck[t] = s")
    w(2, f"for k in range({K}):")
    w(3, f"for i in range({Hp}):")
    w(4, f"for j in range({Wp}):")
    w(5, f"base = k * {PL} + i * {p * Wd} + j * {p}")
    _gen_pool(w, 5, b, spec, i, lambda a, c: f"cv[base + {a * Wd + c}]", DT, "")
    w(5, f"y[r, {_out_index(spec, i, 'k', 'i', 'j')}] = m if alive else {DT}(0)")
    w(5, f"am[r, (k * {Hp} + i) * {Wp} + j] = idx if alive else -1")
    w(0)
    # ---- backward: dense dconv per sample from the argmax, then per (k, c, fy) one vectorised
    # multi-reduction over the output plane (F accumulators, no stores: nothing to alias)
    w(0, "@jit")
    w(0, f"def b{i}_bwd(nloc, p, g, xpad, dy, am, need_dx, dxp, dx, dwv, dc):")
    w(1, "dwv[:] = 0")
    if b.boff >= 0:
        w(1, f"g[{b.boff}:{b.boff + K}] = 0")
    w(1, "for r in range(nloc):")
    w(2, "xp = xpad[r]")
    w(2, "dc[:] = 0")
    w(2, f"for k in range({K}):")
    w(3, f"db = {DT}(0)")
    w(3, f"for i in range({Hp}):")
    w(4, f"for j in range({Wp}):")
    # branch-free (live windows are a coin flip: a branch mispredicts half the time); a dead
    # window writes its zero into slot 0 of its own p x p region, which is zero anyway
    w(5, f"a = int(am[r, (k * {Hp} + i) * {Wp} + j])")
    w(5, "live = a >= 0")
    w(5, f"gv = dy[r, {_out_index(spec, i, 'k', 'i', 'j')}] if live else {DT}(0)")
    w(5, "a = a if live else 0")
    w(5, "db += gv")
    w(5, f"dc[k * {PL} + (i * {p} + {_div('a', p)}) * {Wd} + j * {p} + {_mod('a', p)}] = gv")
    if b.boff >= 0:
        w(3, f"g[{b.boff} + k] += db")
    # G output channels per pass share the input loads (2.8 vs 4.3 us/sample for LeNet's conv1)
    G = next(g for g in (3, 2, 1) if K % g == 0 and (g * F <= 16 or g == 1))
    w(2, f"for k in range(0, {K}, {G}):")
    for u in range(G):
        w(3, f"dk{u} = dc[(k + {u}) * {PL}:(k + {u + 1}) * {PL}]")
    w(3, f"for c in range({C}):")
    w(4, f"for fy in range({F}):")
    for u in range(G):
        for fx in range(F):
            w(5, f"a{u}_{fx} = {DT}(0)")
    w(5, f"xo = c * {HWd} + fy * {Wd}")
    w(5, f"xr = xp[xo:xo + {PL + F}]")
    w(5, f"for t in range({PL}):")  # one long loop: 2x faster than row by row
    for fx in range(F):
        w(6, f"x{fx} = xr[t + {fx}]")
    for u in range(G):
        w(6, f"d{u} = dk{u}[t]")
        for fx in range(F):
            w(6, f"a{u}_{fx} += d{u} * x{fx}")
    for u in range(G):
        w(5, f"o = ((k + {u}) * {C} + c) * {F * F} + fy * {F}")
        for fx in range(F):
            w(5, f"dwv[o + {fx}] += a{u}_{fx}")
    w(1, f"g[{b.woff}:{b.woff + K * C * F * F}] = dwv")
    w(1, "if need_dx:")
    _gen_dx_direct(w, 2, spec, i, DT)
    w(0)


def _gen_dx_direct(w: _W, d: int, spec: ChainSpec, i: int, DT: str) -> None:
    b = spec.blocks[i]
    C, H, W, K, F, pad, p = b.C, b.H, b.W, b.K, b.F, b.pad, b.pool
    Hd, Wd, Hp, Wp = b.Hd, b.Wd, b.Hp, b.Wp
    HWd = Hd * Wd
    w(d, "for r in range(nloc):")
    w(d + 1, "dxp[:] = 0")
    w(d + 1, f"for k in range({K}):")
    w(d + 2, f"wo = {b.woff} + k * {b.R}")
    w(d + 2, f"for i in range({Hp}):")
    w(d + 3, f"for j in range({Wp}):")
    w(d + 4, f"a = int(am[r, (k * {Hp} + i) * {Wp} + j])")
    w(d + 4, "if a < 0:")
    w(d + 5, "continue")
    w(d + 4, f"gv = dy[r, {_out_index(spec, i, 'k', 'i', 'j')}]")
    w(d + 4, f"q = (i * {p} + {_div('a', p)}) * {Wd} + j * {p} + {_mod('a', p)}")
    w(d + 4, f"for c in range({C}):")
    w(d + 5, f"for fy in range({F}):")
    w(d + 6, f"for fx in range({F}):")
    w(d + 7, f"dxp[q + c * {HWd} + fy * {Wd} + fx] += gv * p[wo + (c * {F} + fy) * {F} + fx]")
    w(d + 1, f"for c in range({C}):")
    w(d + 2, f"for i in range({H}):")
    w(d + 3, f"for j in range({W}):")
    w(d + 4, f"dx[r, c, i, j] = dxp[c * {HWd} + (i + {pad}) * {Wd} + j + {pad}]")


def _gen_block_gemm(w: _W, spec: ChainSpec, i: int, DT: str) -> None:
    b = spec.blocks[i]
    C, H, W, K, F, pad, p = b.C, b.H, b.W, b.K, b.F, b.pad, b.pool
    Wd, Ho, Wo, Hp, Wp = b.Wd, b.Ho, b.Wo, b.Hp, b.Wp
    FC = F * C
    FCp = fc_pad(FC)
    P = Ho * Wo
    S = spec.sub_batch(i)
    xin = "x" if i == 0 else "xin"
    # ---- forward
    w(0, "@jit")
    w(0, f"def b{i}_fwd({xin}, n0, nloc, p, wt, xpad, cols, cv, y, am):")
    w(1, "for r in range(nloc):")
    w(2, "xp = xpad[r]")
    if i > 0 and pad == 0:
        w(2, f"xp[:{b.Hd * b.Wd * C}] = {xin}[r]")
    else:
        w(2, f"for i in range({H}):")
        w(3, f"for j in range({W}):")
        w(4, f"o = ((i + {pad}) * {Wd} + j + {pad}) * {C}")
        w(4, f"for c in range({C}):")
        w(5, f"xp[o + c] = {_in_index(spec, i, 'r', 'c', 'i', 'j')}")
    w(1, f"for s0 in range(0, nloc, {S}):")
    w(2, f"ns = min({S}, nloc - s0)")
    w(2, "for s in range(ns):")
    w(3, "xp = xpad[s0 + s]")
    w(3, f"for oy in range({Ho}):")
    w(4, f"for ox in range({Wo}):")
    w(5, f"row = cols[s * {P} + oy * {Wo} + ox]")
    w(5, f"for fy in range({F}):")
    w(6, f"src = ((oy + fy) * {Wd} + ox) * {C}")
    w(6, f"rs = row[fy * {FC}:(fy + 1) * {FC}]")
    w(6, f"xs = xp[src:src + {FC}]")
    w(6, "for q in range(rs.shape[0]):")  # runtime length: vectorised, not unrolled scalar
    w(7, "rs[q] = xs[q]")
    w(2, f"c2 = cv[:ns * {P}]")
    w(2, f"np.dot(cols[:ns * {P}], wt, c2)")
    w(2, "for s in range(ns):")
    w(3, "r = s0 + s")
    w(3, f"for i in range({Hp}):")
    w(4, f"for j in range({Wp}):")
    w(5, f"base = s * {P} + i * {p * Wo} + j * {p}")
    w(5, f"for k in range({K}):")
    w(6, f"bk = {_bias(b, 'k', DT)}")
    _gen_pool(w, 6, b, spec, i, lambda a, c: f"cv[base + {a * Wo + c}, k] + bk", DT, "")
    w(6, f"y[r, {_out_index(spec, i, 'k', 'i', 'j')}] = m if alive else {DT}(0)")
    w(6, f"am[r, (i * {Wp} + j) * {K} + k] = idx if alive else -1")
    w(0)
    # ---- backward (sparse, driven by the argmax)
    w(0, "@jit")
    w(0, f"def b{i}_bwd(nloc, p, wk, g, dwk, xpad, dy, am, need_dx, dxp, dx):")
    w(1, "dwk[:] = 0")
    if b.boff >= 0:
        w(1, f"g[{b.boff}:{b.boff + K}] = 0")
    w(1, "for r in range(nloc):")
    w(2, "xp = xpad[r]")
    w(2, "if need_dx:")
    w(3, "dxp[:] = 0")
    w(2, f"for i in range({Hp}):")
    w(3, f"for j in range({Wp}):")
    w(4, f"for k in range({K}):")
    w(5, f"a = int(am[r, (i * {Wp} + j) * {K} + k])")
    w(5, "if a < 0:")
    w(6, "continue")
    w(5, f"gv = dy[r, {_out_index(spec, i, 'k', 'i', 'j')}]")
    if b.boff >= 0:
        w(5, f"g[{b.boff} + k] += gv")
    w(5, f"oy = i * {p} + {_div('a', p)}")
    w(5, f"ox = j * {p} + {_mod('a', p)}")
    w(5, "dwr = dwk[k]")
    # Inner loops index slices with the loop counter only: numba's negative-index fix-up on
    # ``a[base + q]`` (base unknown to be >= 0) kept LLVM from vectorising them.
    w(5, f"for fy in range({F}):")
    w(6, f"src = ((oy + fy) * {Wd} + ox) * {C}")
    w(6, f"xs = xp[src:src + {FCp}]")
    w(6, f"dws = dwr[fy * {FCp}:(fy + 1) * {FCp}]")
    # ``range(len)``, not ``range(const)``: a constant 32 got fully unrolled into scalar code
    w(6, "for q in range(dws.shape[0]):")  # padded to whole vectors; pad lanes are ignored
    w(7, "dws[q] += gv * xs[q]")
    w(5, "if need_dx:")
    w(6, "wr = wk[k]")
    w(6, f"for fy in range({F}):")
    w(7, f"src = ((oy + fy) * {Wd} + ox) * {C}")
    w(7, f"ds = dxp[src:src + {FCp}]")
    w(7, f"ws = wr[fy * {FCp}:(fy + 1) * {FCp}]")
    w(7, "for q in range(ds.shape[0]):")  # wk's pad lanes are zero: adds 0 to neighbours
    w(8, "ds[q] += gv * ws[q]")
    w(2, "if need_dx:")
    w(3, f"for i in range({H}):")
    w(4, f"for j in range({W}):")
    w(5, f"o = ((i + {pad}) * {Wd} + j + {pad}) * {C}")
    w(5, f"for c in range({C}):")
    if i == 0:
        w(6, "dx[r, c, i, j] = dxp[o + c]")
    else:
        w(6, f"dx[r, (i * {W} + j) * {C} + c] = dxp[o + c]")
    # dW back to PyTorch's (K, C, F, F) order
    w(1, f"for k in range({K}):")
    w(2, f"for c in range({C}):")
    w(3, f"for fy in range({F}):")
    w(4, f"for fx in range({F}):")
    w(5, f"g[{b.woff} + ((k * {C} + c) * {F} + fy) * {F} + fx] = "
         f"dwk[k, fy * {FCp} + fx * {C} + c]")
    w(0)
    # ---- weight layouts for the GEMM block: wk (K, F*FCp) rows padded with zeros, wt (R, K)
    w(0, "@jit")
    w(0, f"def b{i}_prep(p, wk, wt):")
    w(1, "wk[:] = 0")
    w(1, f"for k in range({K}):")
    w(2, f"for c in range({C}):")
    w(3, f"for fy in range({F}):")
    w(4, f"for fx in range({F}):")
    w(5, f"v = p[{b.woff} + ((k * {C} + c) * {F} + fy) * {F} + fx]")
    w(5, f"wk[k, fy * {FCp} + fx * {C} + c] = v")
    w(5, f"wt[(fy * {F} + fx) * {C} + c, k] = v")
    w(0)


def _gen_dense(w: _W, spec: ChainSpec, DT: str) -> None:
    L = len(spec.dense)
    hs = ", ".join(f"h{l + 1}" for l in range(L))          # h{L} are the logits
    dhs = ", ".join(f"dh{l + 1}" for l in range(L - 1))
    # forward: h_{l+1} = act(h_l @ W_l.T + b_l)
    w(0, "@jit")
    w(0, f"def fc_fwd(nloc, p, h0, {hs}):")
    for l, d in enumerate(spec.dense):
        w(1, f"wv = p[{d.woff}:{d.woff + d.O * d.I}].reshape(({d.O}, {d.I}))")
        w(1, f"hn = h{l + 1}[:nloc]")
        w(1, f"np.dot(h{l}[:nloc], wv.T, hn)")
        w(1, "for r in range(nloc):")
        w(2, f"for o in range({d.O}):")
        bias = f"p[{d.boff} + o]" if d.boff >= 0 else f"{DT}(0)"
        if d.relu:
            w(3, f"v = hn[r, o] + {bias}")
            w(3, f"hn[r, o] = {DT}(0) if v <= {DT}(0) else v  # NaN stays NaN")
        else:
            w(3, f"hn[r, o] = hn[r, o] + {bias}")
    w(0)
    # softmax cross-entropy; dl = d(mean loss)/d logits with the *global* batch size
    K = spec.dense[-1].O
    w(0, "@jit")
    w(0, "def xent(nloc, n0, labels, inv_n, lg, dl):")
    w(1, "total = 0.0")
    w(1, "for r in range(nloc):")
    w(2, "m = lg[r, 0]")
    w(2, f"for c in range(1, {K}):")
    w(3, "m = lg[r, c] if lg[r, c] > m else m")
    w(2, f"s = {DT}(0)")
    w(2, f"for c in range({K}):")
    w(3, "e = np.exp(lg[r, c] - m)")
    w(3, "dl[r, c] = e")
    w(3, "s += e")
    w(2, "t = labels[n0 + r]")
    w(2, "total += np.log(s) + m - lg[r, t]")
    w(2, "q = inv_n / s")
    w(2, f"for c in range({K}):")
    w(3, "dl[r, c] *= q")
    w(2, "dl[r, t] -= inv_n")
    w(1, "return total")
    w(0)
    # backward: dz_l = dh_{l+1} * relu'(h_{l+1}); dW_l = dz.T @ h_l; db_l = sum dz; dh_l = dz @ W_l
    w(0, "@jit")
    w(0, f"def fc_bwd(nloc, p, g, dl, h0, {hs}, {dhs + ', ' if dhs else ''}dh0, need_dh0):")
    for l in range(L - 1, -1, -1):
        d = spec.dense[l]
        dz = "dl" if l == L - 1 else f"dh{l + 1}"
        w(1, f"dz = {dz}[:nloc]")
        if d.relu:
            w(1, f"hn = h{l + 1}")
            w(1, "for r in range(nloc):")
            w(2, f"for o in range({d.O}):")
            w(3, f"dz[r, o] = dz[r, o] if hn[r, o] > {DT}(0) else {DT}(0)")
        if d.boff >= 0:
            w(1, f"gb = g[{d.boff}:{d.boff + d.O}]")
            w(1, "gb[:] = 0")
            w(1, "for r in range(nloc):")
            w(2, f"for o in range({d.O}):")
            w(3, "gb[o] += dz[r, o]")
        w(1, f"gw = g[{d.woff}:{d.woff + d.O * d.I}].reshape(({d.O}, {d.I}))")
        w(1, f"np.dot(dz.T, h{l}[:nloc], gw)")
        w(1, f"wv = p[{d.woff}:{d.woff + d.O * d.I}].reshape(({d.O}, {d.I}))")
        if l == 0:
            w(1, "if need_dh0:")
            w(2, "np.dot(dz, wv, dh0[:nloc])")
        else:
            w(1, f"np.dot(dz, wv, dh{l}[:nloc])")
    w(0)


def generate(spec: ChainSpec) -> str:
    DT = f"np.{spec.dtype}"
    w = _W()
    w(0, f'"""Generated by cnncalc.kernels.fast.gen (version {GEN_VERSION}); do not edit.')
    w(0)
    w(0, f"{spec!r}")
    w(0, '"""')
    w(0, "import numpy as np")
    w(0)
    w(0, "from cnncalc.kernels._jit import jit")
    w(0)
    w(0)
    for i in range(len(spec.blocks)):
        if spec.method(i) == "direct":
            _gen_block_direct(w, spec, i, DT)
        else:
            _gen_block_gemm(w, spec, i, DT)
    _gen_dense(w, spec, DT)
    _gen_composite(w, spec)
    return w.text()


def buffer_names(spec: ChainSpec) -> list[str]:
    """Per-thread buffers the composite kernels take, in argument order."""
    names = []
    for i in range(len(spec.blocks)):
        if spec.method(i) == "direct":
            names += [f"b{i}_{k}" for k in ("xpad", "cv", "y", "am", "dy", "dxp", "dwk", "dc")]
        else:
            names += [f"b{i}_{k}" for k in ("wt", "wk", "xpad", "cols", "cv", "y", "am", "dy",
                                             "dxp", "dwk")]
    L = len(spec.dense)
    names += [f"h{l}" for l in range(1, L)] + [f"dh{l}" for l in range(1, L)]
    if not spec.blocks:
        names.append("dh0")
    return names


def _gen_composite(w: _W, spec: ChainSpec) -> None:
    """One nogil call per thread and step: fewer GIL hand-overs between the worker threads."""
    bufs = ", ".join(buffer_names(spec))
    nb, L = len(spec.blocks), len(spec.dense)
    hs = ", ".join([f"h{l}" for l in range(1, L)] + ["lg"])
    dhs = "".join(f"dh{l}, " for l in range(1, L))
    h0 = f"b{nb - 1}_y" if nb else "x[n0:n0 + nloc].reshape((nloc, -1))"
    dh0 = f"b{nb - 1}_dy" if nb else "dh0"
    # forward
    w(0, "@jit")
    w(0, f"def chain_fwd(x, n0, nloc, p, logits, {bufs}):")
    prev = "x"
    for i in range(nb):
        if spec.method(i) == "direct":
            w(1, f"b{i}_fwd(x, n0, nloc, p, b{i}_xpad, b{i}_cv, b{i}_y, b{i}_am)")
        else:
            w(1, f"b{i}_fwd({prev}, n0, nloc, p, b{i}_wt, b{i}_xpad, b{i}_cols, b{i}_cv, b{i}_y, "
                 f"b{i}_am)")
        prev = f"b{i}_y"
    w(1, "lg = logits[n0:n0 + nloc]")
    w(1, f"fc_fwd(nloc, p, {h0}, {hs})")
    w(0)
    # backward
    w(0, "@jit")
    w(0, f"def chain_bwd(x, n0, nloc, p, g, logits, dlogits, need_dx, dx, {bufs}):")
    w(1, "lg = logits[n0:n0 + nloc]")
    w(1, f"fc_bwd(nloc, p, g, dlogits[n0:n0 + nloc], {h0}, {hs}, {dhs}{dh0}, "
         f"{'True' if nb else 'need_dx'})")
    if not nb:
        w(1, "if need_dx:")
        w(2, "dxs = dx[n0:n0 + nloc]")
        w(2, "dxs[:] = dh0[:nloc].reshape(dxs.shape)")
    for i in range(nb - 1, -1, -1):
        want = "need_dx" if i == 0 else "True"
        out = "dx[n0:n0 + nloc]" if i == 0 else f"b{i - 1}_dy"
        if spec.method(i) == "direct":
            w(1, f"b{i}_bwd(nloc, p, g, b{i}_xpad, b{i}_dy, b{i}_am, {want}, b{i}_dxp, {out}, "
                 f"b{i}_dwk, b{i}_dc)")
        else:
            w(1, f"b{i}_bwd(nloc, p, b{i}_wk, g, b{i}_dwk, b{i}_xpad, b{i}_dy, b{i}_am, {want}, "
                 f"b{i}_dxp, {out})")
    w(0)
    # a whole training step on one slice; returns the slice's summed loss
    w(0, "@jit")
    w(0, f"def chain_step(x, labels, n0, nloc, inv_n, p, g, logits, dlogits, dx, {bufs}):")
    w(1, f"chain_fwd(x, n0, nloc, p, logits, {bufs})")
    w(1, "loss = xent(nloc, n0, labels, inv_n, logits[n0:n0 + nloc], dlogits[n0:n0 + nloc])")
    w(1, f"chain_bwd(x, n0, nloc, p, g, logits, dlogits, False, dx, {bufs})")
    w(1, "return loss")
    w(0)


# ------------------------------------------------------------------------------------ loading
def cache_dir() -> pathlib.Path:
    """``$CNNCALC_CACHE_DIR/gen``, else ``$XDG_CACHE_HOME/cnncalc/gen``, else
    ``~/.cache/cnncalc/gen``: per user, never a shared predictable path."""
    root = os.environ.get("CNNCALC_CACHE_DIR")
    if root:
        return pathlib.Path(root).expanduser() / "gen"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return base / "cnncalc" / "gen"


_LOADED: dict[str, object] = {}
_PRIVATE_TEMP: list[pathlib.Path] = []


class UnsafeCacheError(OSError):
    """The kernel cache folder is not private to this user (another user could plant code)."""


def _private(folder: pathlib.Path) -> pathlib.Path:
    """``folder``, created with mode 0700, after checking that this user owns it.

    The generated modules are imported (run) from here, so a folder another user owns or can
    write would let them run code as this user: such a folder is refused, and a folder of ours
    that others can write is made 0700.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.stat(folder)
    if st.st_uid != os.getuid():
        raise UnsafeCacheError(f"kernel cache {folder} is owned by uid {st.st_uid}, not by this "
                               f"user (uid {os.getuid()})")
    if st.st_mode & 0o022:
        os.chmod(folder, 0o700)
    return folder


def _fallback_dir() -> pathlib.Path:
    """A fresh private temporary folder for this process (``mkdtemp``: unique, mode 0700)."""
    import tempfile

    if not _PRIVATE_TEMP:
        _PRIVATE_TEMP.append(pathlib.Path(tempfile.mkdtemp(prefix="cnncalc-gen-")))
    return _PRIVATE_TEMP[0]


def _write(folder: pathlib.Path, name: str, src: str) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    # Rewrite only when the text differs: numba's cache is keyed on the file's timestamp.
    try:
        same = path.read_text() == src
    except OSError:
        same = False
    if not same:
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(src)
        os.replace(tmp, path)   # atomic: a concurrent process sees the old or the new file
    return path


def load_chain(spec: ChainSpec):
    """The generated module for ``spec`` (written once, then imported; numba caches beside it)."""
    key = spec.key()
    mod = _LOADED.get(key)
    if mod is not None:
        return mod
    name = f"cnncalc_gen_{key}"
    src = generate(spec)
    try:
        path = _write(_private(cache_dir()), name, src)
    except OSError as e:
        import warnings

        fallback = _fallback_dir()
        reason = e if isinstance(e, UnsafeCacheError) else f"cannot write to {cache_dir()} ({e})"
        warnings.warn(f"{reason}; generated kernels go to the private temporary folder "
                      f"{fallback} for this process (set CNNCALC_CACHE_DIR to a folder of "
                      "your own to keep them)", RuntimeWarning, stacklevel=2)
        path = _write(fallback, name, src)
    mspec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[name] = mod
    mspec.loader.exec_module(mod)
    _LOADED[key] = mod
    return mod
