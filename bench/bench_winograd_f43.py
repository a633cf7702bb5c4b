"""A measured experiment, not a path of the engine: Winograd F(4x4, 3x3) with the tiles in
the vector lanes (forward only), against the engine's F(2x2, 3x3) lanes forward
(``winograd.lanes_forward``), serially, float32.

F(4x4) needs 2.25 multiplications per output instead of 4, and its transformed input and
products are 0.56x F(2x2)'s size; its transforms are 6-point ones and its phase split is
stride 4. Which wins on which layer is what this prints: per layer the whole forward of 32
samples (F(2x2) / F(4x4) ms and the ratio) and, for 8 samples, F(4x4)'s input transform,
products and output transform apart. Every figure is measured in the same run, best of 5
rounds (the machine is shared: compare ratios, not absolute times). Before timing, F(4x4)'s
output is checked against im2col in float64 (and its float32 error printed).

Run: ``python bench/bench_winograd_f43.py``. Findings: ``cnncalc/kernels/fast/README.md``
("Levers left").
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from cnncalc.kernels import conv, simd  # noqa: E402
from cnncalc.kernels import winograd as wg  # noqa: E402
from cnncalc.kernels._jit import jit  # noqa: E402

T36 = 36
G4 = np.array([[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
               [1/24, -1/12, 1/6], [0, 0, 1]], np.float64)

def weight_transform4(w):
    u = np.einsum("ai,kcij,bj->abkc", G4, w.astype(np.float64), G4)
    return np.ascontiguousarray(u.reshape(36, w.shape[0], w.shape[1]).astype(w.dtype))

def _phases4_py(xf, src, th, tw, ph):
    """ph[(a*4 + b)*n + i*tw + j] = xf[src + (4i + a)*4tw + 4j + b]."""
    u = np.uint64
    n = th * tw
    for r in range(4 * th):
        s = u(src + r * 4 * tw)
        d = u((r & 3) * 4 * n + (r >> 2) * tw)
        for j in range(tw):
            ph[d + u(j)] = xf[s + u(4 * j)]
            ph[d + u(n + j)] = xf[s + u(4 * j + 1)]
            ph[d + u(2 * n + j)] = xf[s + u(4 * j + 2)]
            ph[d + u(3 * n + j)] = xf[s + u(4 * j + 3)]
_phases4 = jit(_phases4_py)

def _unphases4_py(ph, th, tw, yf, dst):
    u = np.uint64
    n = th * tw
    for r in range(4 * th):
        d = u(dst + r * 4 * tw)
        s = u((r & 3) * 4 * n + (r >> 2) * tw)
        for j in range(tw):
            yf[d + u(4 * j)] = ph[s + u(j)]
            yf[d + u(4 * j + 1)] = ph[s + u(n + j)]
            yf[d + u(4 * j + 2)] = ph[s + u(2 * n + j)]
            yf[d + u(4 * j + 3)] = ph[s + u(3 * n + j)]
_unphases4 = jit(_unphases4_py)

def _lanes4_input_py(x, s0, m, th, tw, v, ld, ph, rt):
    """v[xi*C*ld + c*ld + si*n + t] = (B^T d B)[xi], xi = 6r + s; rt: 24 planes of n + 2tw
    (row phase a, column position s), a zero row either side."""
    u = np.uint64
    c_in = x.shape[1]
    n = th * tw
    pr = n + 2 * tw
    xf = x.ravel()
    z = x.dtype.type(0)
    f4 = x.dtype.type(4.0)
    f5 = x.dtype.type(5.0)
    f2 = x.dtype.type(2.0)
    for q in range(24 * pr):
        rt[u(q)] = z
    for c in range(c_in):
        for si in range(m):
            _phases4(xf, ((s0 + si) * c_in + c) * 16 * n, th, tw, ph)
            for a in range(4):
                # columns of row phase a: tile j reads P3[j-1], P0[j], P1[j], P2[j], P3[j], P0[j+1]
                p0 = u((4 * a) * n)
                p1 = u((4 * a + 1) * n)
                p2 = u((4 * a + 2) * n)
                p3 = u((4 * a + 3) * n)
                r0 = u((6 * a) * pr + tw)
                for t in range(n):
                    d1 = ph[p0 + u(t)]
                    d2 = ph[p1 + u(t)]
                    d3 = ph[p2 + u(t)]
                    d4 = ph[p3 + u(t)]
                    rt[r0 + u(t)] = d4 - f5 * d2          # + 4 d0, below
                    rt[r0 + u(pr + t)] = d3 + d4 - f4 * (d1 + d2)
                    rt[r0 + u(2 * pr + t)] = d4 - d3 + f4 * (d1 - d2)
                    rt[r0 + u(3 * pr + t)] = d4 - d2 + f2 * (d3 - d1)
                    rt[r0 + u(4 * pr + t)] = d4 - d2 + f2 * (d1 - d3)
                    rt[r0 + u(5 * pr + t)] = f4 * d1 - f5 * d3   # + d5, below
                for t in range(1, n):
                    rt[r0 + u(t)] += f4 * ph[p3 + u(t - 1)]
                for t in range(n - 1):
                    rt[r0 + u(5 * pr + t)] += ph[p0 + u(t + 1)]
                for i in range(1, th):       # across a row's start / end: padding, not neighbours
                    rt[r0 + u(i * tw)] -= f4 * ph[p3 + u(i * tw - 1)]
                    rt[r0 + u(5 * pr + i * tw - 1)] -= ph[p0 + u(i * tw)]
            # rows: tile row i reads R3[i-1], R0[i], R1[i], R2[i], R3[i], R0[i+1]
            base = c * ld + si * n
            step = u(6 * c_in * ld)
            for s in range(6):
                q0 = u((0 * 6 + s) * pr + tw)
                q1 = u((1 * 6 + s) * pr + tw)
                q2 = u((2 * 6 + s) * pr + tw)
                q3 = u((3 * 6 + s) * pr + tw)
                d = u(s * c_in * ld + base)
                for t in range(n):
                    d0 = rt[q3 + u(t) - u(tw)]
                    d1 = rt[q0 + u(t)]
                    d2 = rt[q1 + u(t)]
                    d3 = rt[q2 + u(t)]
                    d4 = rt[q3 + u(t)]
                    d5 = rt[q0 + u(t + tw)]
                    v[d + u(t)] = f4 * d0 - f5 * d2 + d4
                    v[d + step + u(t)] = d3 + d4 - f4 * (d1 + d2)
                    v[d + u(2) * step + u(t)] = d4 - d3 + f4 * (d1 - d2)
                    v[d + u(3) * step + u(t)] = d4 - d2 + f2 * (d3 - d1)
                    v[d + u(4) * step + u(t)] = d4 - d2 + f2 * (d1 - d3)
                    v[d + u(5) * step + u(t)] = f4 * d1 - f5 * d3 + d5
_lanes4_input = jit(_lanes4_input_py)

def _lanes4_output_py(mf, ld, b, has_bias, s0, m, th, tw, y, q, ph):
    """y = A^T M A (+ b): q 24 planes of n (output row o, column position s), ph 16 of n."""
    u = np.uint64
    k_out = y.shape[1]
    n = th * tw
    yf = y.ravel()
    step = u(6 * k_out * ld)
    zero = y.dtype.type(0)
    f2 = y.dtype.type(2.0)
    f4 = y.dtype.type(4.0)
    f8 = y.dtype.type(8.0)
    for si in range(m):
        for k in range(k_out):
            src = u(k * ld + si * n)
            for s in range(6):       # rows: A^T over m0..m5 = M[6r + s], r = 0..5
                o = src + u(s * k_out * ld)
                for t in range(n):
                    m0 = mf[o + u(t)]
                    m1 = mf[o + step + u(t)]
                    m2 = mf[o + u(2) * step + u(t)]
                    m3 = mf[o + u(3) * step + u(t)]
                    m4 = mf[o + u(4) * step + u(t)]
                    m5 = mf[o + u(5) * step + u(t)]
                    a12, s12, a34, s34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
                    q[u(s * n + t)] = m0 + a12 + a34
                    q[u((6 + s) * n + t)] = s12 + f2 * s34
                    q[u((12 + s) * n + t)] = a12 + f4 * a34
                    q[u((18 + s) * n + t)] = s12 + f8 * s34 + m5
            bk = b[k] if has_bias else zero
            for o_ in range(4):       # columns, into the output's phase planes (o_, p)
                qo = u(6 * o_ * n)
                d = u(4 * o_ * n)
                for t in range(n):
                    m0 = q[qo + u(t)]
                    m1 = q[qo + u(n + t)]
                    m2 = q[qo + u(2 * n + t)]
                    m3 = q[qo + u(3 * n + t)]
                    m4 = q[qo + u(4 * n + t)]
                    m5 = q[qo + u(5 * n + t)]
                    a12, s12, a34, s34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
                    ph[d + u(t)] = m0 + a12 + a34 + bk
                    ph[d + u(n + t)] = s12 + f2 * s34 + bk
                    ph[d + u(2 * n + t)] = a12 + f4 * a34 + bk
                    ph[d + u(3 * n + t)] = s12 + f8 * s34 + m5 + bk
            _unphases4(ph, th, tw, yf, ((s0 + si) * k_out + k) * 16 * n)
_lanes4_output = jit(_lanes4_output_py)

def _lanes4_forward_py(x, uf, b, has_bias, th, tw, y, nb, qb):
    n_b, c_in = x.shape[0], x.shape[1]
    k_out = y.shape[1]
    n = th * tw
    ld = (nb * n + qb - 1) // qb * qb
    v = np.zeros(T36 * c_in * ld, x.dtype)
    mf = np.empty(T36 * k_out * ld, x.dtype)
    ph = np.empty(16 * n, x.dtype)
    rt = np.empty(24 * (n + 2 * tw), x.dtype)
    q = np.empty(24 * n, x.dtype)
    offs = np.zeros(1, np.int64)
    for s0 in range(0, n_b, nb):
        m = min(nb, n_b - s0)
        nq = (m * n + qb - 1) // qb * qb
        _lanes4_input(x, s0, m, th, tw, v, ld, ph, rt)
        for xi in range(T36):
            simd.tiles(v[xi * c_in * ld:], ld, uf, xi * k_out * c_in, c_in, 1, offs,
                       mf[xi * k_out * ld:], ld, nq, k_out, qb)
        _lanes4_output(mf, ld, b, has_bias, s0, m, th, tw, y, q, ph)
_lanes4_forward = jit(_lanes4_forward_py)

LANES4_BLOCK_BYTES = 1 << 19
def lanes4_forward(x, u, b, out):
    th, tw = x.shape[2] // 4, x.shape[3] // 4
    has_bias = b is not None
    bb = np.ascontiguousarray(b, x.dtype) if has_bias else np.zeros(1, x.dtype)
    n, c_in, k_out, tpp = x.shape[0], x.shape[1], u.shape[1], th * tw
    cols = simd.NV * simd.lanes(x.dtype)
    nb = max(1, min(n, max(LANES4_BLOCK_BYTES // (T36 * (c_in + k_out) * tpp * x.itemsize), -(-cols // tpp))))
    _lanes4_forward(x, u.ravel(), bb, has_bias, th, tw, out, nb, cols)
    return out


# --------------------------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------------------------
@numba.njit(nogil=True)
def _input_only(reps, x, nb, th, tw, v, ld, ph, rt):
    for _ in range(reps):
        for s0 in range(0, x.shape[0], nb):
            _lanes4_input(x, s0, nb, th, tw, v, ld, ph, rt)


@numba.njit(nogil=True)
def _products_only(reps, blocks, v, uf, mf, c_in, k_out, ld, qb, offs):
    for _ in range(reps):
        for _b in range(blocks):
            for xi in range(T36):
                simd.tiles(v[xi * c_in * ld:], ld, uf, xi * k_out * c_in, c_in, 1, offs,
                           mf[xi * k_out * ld:], ld, ld, k_out, qb)


@numba.njit(nogil=True)
def _output_only(reps, mf, ld, bb, nb, th, tw, y, q, ph):
    for _ in range(reps):
        for s0 in range(0, y.shape[0], nb):
            _lanes4_output(mf, ld, bb, False, s0, nb, th, tw, y, q, ph)


def best(fn, reps=20):
    fn()
    out = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        out = min(out, (time.perf_counter() - t) / reps)
    return out * 1e3


def check():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 16, 8))
    w = rng.standard_normal((7, 5, 3, 3))
    want = conv.conv2d_forward(x, w, None, 1, 1, algo="im2col")
    got = lanes4_forward(x, weight_transform4(w), None, np.empty_like(want))
    assert np.allclose(got, want, rtol=1e-10, atol=1e-10), "F(4x4) forward is wrong"
    got32 = lanes4_forward(x.astype(np.float32), weight_transform4(w.astype(np.float32)), None,
                           np.empty(want.shape, np.float32))
    return float(np.abs(got32 - want).max() / np.abs(want).max())


LAYERS = [(16, 16, 32), (32, 32, 16), (64, 64, 8), (32, 32, 32), (128, 128, 16), (256, 256, 8)]


def main():
    print(f"F(4x4) forward checked against im2col (float64); float32 error {check():.1e} of the "
          "largest output")
    rng = np.random.default_rng(0)
    print("\n== forward, 32 samples, one thread: F(2x2) lanes / F(4x4) lanes (ms) ==")
    for c, k, h in LAYERS:
        x = rng.standard_normal((32, c, h, h)).astype(np.float32)
        w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        out = np.empty((32, k, h, h), np.float32)
        u2, u4 = wg.weight_transform(w), weight_transform4(w)
        t2 = best(lambda: wg.lanes_forward(x, u2, None, out))
        t4 = best(lambda: lanes4_forward(x, u4, None, out))
        print(f"{c:4d}->{k:<4d} {h:2d}x{h:<2d}  {t2:7.2f} {t4:7.2f}   F(4x4) {t2 / t4:.2f}x "
              "F(2x2)'s speed", flush=True)
    print("\n== F(4x4) parts, 8 samples, one thread (ms): input transform, products, output "
          "transform ==")
    n, qb = 8, simd.NV * simd.lanes(np.float32)
    for c, k, h in LAYERS[:3]:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        th = tw = h // 4
        tpp = th * tw
        nb = min(n, max(1, -(-256 // tpp)))
        ld = (nb * tpp + qb - 1) // qb * qb
        v = np.zeros(T36 * c * ld, np.float32)
        mf = np.zeros(T36 * k * ld, np.float32)
        ph = np.empty(16 * tpp, np.float32)
        rt = np.empty(24 * (tpp + 2 * tw), np.float32)
        q = np.empty(24 * tpp, np.float32)
        y = np.empty((n, k, h, h), np.float32)
        uf = rng.standard_normal(T36 * k * c).astype(np.float32)
        parts = [best(lambda: _input_only(1, x, nb, th, tw, v, ld, ph, rt)),
                 best(lambda: _products_only(1, n // nb, v, uf, mf, c, k, ld, qb,
                                             np.zeros(1, np.int64))),
                 best(lambda: _output_only(1, mf, ld, np.zeros(1, np.float32), nb, th, tw, y, q,
                                           ph))]
        print(f"{c:4d}->{k:<4d} {h:2d}x{h:<2d}  " + " / ".join(f"{p:.3f}" for p in parts),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
