"""The direct vector-register convolution kernels (``cnncalc/kernels/simd.py``) against the
other algorithms of ``conv.py``, serially (one thread, BLAS at one thread), float32.

Run: ``python bench/bench_simd.py [--reps 4] [--batch 32]
[--only micro|layers|strided|winograd]``.
Sections:

1. the forward micro-kernel alone (register blocks over one pitched block of planes, no
   padding or copying): GFLOP/s on the computed columns;
2. forward per layer: ``simd`` / ``implicit`` / ``winograd`` (where it applies) GFLOP/s and
   the ratio simd : implicit;
3. weight gradient per layer: ``simd`` / ``implicit``;
4. strided layers: the phase-plane path and the vector-per-output-row path against im2col,
   forward and backward (dx + dw), with the path ``"auto"`` takes;
5. Winograd's two layouts on 3x3 "same" layers, 8 samples (the engine's batch chunk): tiles
   in the vector lanes (``winograd.lanes_forward`` / ``lanes_backward_du``) and channels last
   (``winograd_forward`` / ``backward_du``) against the direct vector kernels, forward and
   backward (dx + dW), with the path ``"auto"`` takes.

Every ratio is measured in the same run, best of 3 rounds of ``--reps`` calls (the machine is
shared: compare ratios, not absolute times). GFLOP/s count the direct convolution's FLOPs
(2 x MACs per pass), so Winograd can show more than the machine's peak.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from cnncalc.kernels import conv, simd  # noqa: E402
from cnncalc.kernels import winograd as wg  # noqa: E402

# (C, K, H, F): stride-1 "same" layers, CIFAR / ResNet-20 / VGG / LeNet-like
LAYERS = [(3, 16, 32, 3), (16, 16, 32, 3), (16, 32, 32, 3), (32, 32, 32, 3), (32, 64, 16, 3),
          (64, 64, 16, 3), (64, 64, 56, 3), (128, 128, 8, 3), (128, 128, 28, 3),
          (256, 256, 8, 3), (256, 256, 14, 3), (512, 512, 7, 3), (6, 16, 14, 5), (1, 6, 28, 5),
          (64, 64, 16, 1)]
# (C, K, H, F, stride, pad, batch)
STRIDED = [(3, 96, 227, 11, 4, 0, 4), (3, 64, 224, 7, 2, 3, 4), (16, 32, 32, 3, 2, 1, 32),
           (32, 64, 16, 3, 2, 1, 32), (64, 128, 56, 3, 2, 1, 8), (128, 256, 28, 3, 2, 1, 8),
           (256, 512, 14, 3, 2, 1, 8), (16, 32, 32, 1, 2, 0, 32), (64, 128, 56, 1, 2, 0, 8)]


def best(fn, reps):
    fn()
    out = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        out = min(out, (time.perf_counter() - t) / reps)
    return out


@numba.njit(nogil=True)
def _tiles(xpf, span, wf, cg, offs, ybf, lq, blocks, kg, qb):
    for _ in range(blocks):
        for q0 in range(0, lq, qb):
            for k0 in range(0, kg, simd.KB):
                simd.tile(simd.KB, xpf, q0, span, wf, k0 * cg * 9, cg, 9, offs, ybf,
                          k0 * lq + q0, lq, qb, qb // simd.NV)


def micro_kernel(reps):
    print("\n== forward micro-kernel alone (3x3, KB x NV*lanes register blocks) ==")
    rng = np.random.default_rng(0)
    qb = simd.NV * simd.lanes(np.float32)
    for c in (16, 32, 64):
        pitch = 34
        lq = 16 * qb
        offs = np.array([i * pitch + j for i in range(3) for j in range(3)], np.int64)
        span = lq + int(offs[-1])
        xp = rng.standard_normal((c, span)).astype(np.float32)
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        yb = np.empty((c, lq), np.float32)
        t = best(lambda: _tiles(xp.ravel(), span, w.ravel(), c, offs, yb.ravel(), lq, 8, c, qb),
                 reps)
        print(f"  {c:3d} channels: {2 * 8 * lq * c * c * 9 / t / 1e9:6.1f} GFLOP/s")


def _layer(rng, batch, c, k, h, f):
    """(x, w, dy, flop, pad) of one stride-1 'same' layer (half the batch on large planes)."""
    n = batch if h <= 32 else max(1, batch // 2)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((k, c, f, f)).astype(np.float32)
    dy = rng.standard_normal((n, k, h, h)).astype(np.float32)
    return x, w, dy, 2 * n * k * c * f * f * h * h, f // 2


def layers(batch, reps):
    rng = np.random.default_rng(0)
    print("\n== forward, stride 1, 'same' padding, one thread (GFLOP/s) ==")
    print(f"{'layer':22s} {'simd':>6s} {'implicit':>9s} {'winograd':>9s} | simd : implicit")
    for c, k, h, f in LAYERS:
        x, w, dy, flop, p = _layer(rng, batch, c, k, h, f)
        y = np.empty_like(dy)
        ts = best(lambda: conv.conv2d_forward(x, w, None, 1, p, algo="simd", out=y), reps)
        ti = best(lambda: conv.conv2d_forward(x, w, None, 1, p, algo="implicit", out=y), reps)
        wino = "-"
        if f == 3 and c >= 4:
            tw = best(lambda: conv.conv2d_forward(x, w, None, 1, p, algo="winograd", out=y), reps)
            wino = f"{flop / tw / 1e9:.0f}"
        print(f"{c:4d}->{k:4d} {h:3d}x{h:<3d} {f}x{f}  {flop / ts / 1e9:6.0f} {flop / ti / 1e9:9.0f} "
              f"{wino:>9s} | {ti / ts:.2f}x", flush=True)
    print("\n== weight gradient, stride 1, one thread (GFLOP/s) ==")
    print(f"{'layer':22s} {'simd':>6s} {'implicit':>9s} | simd : implicit")
    for c, k, h, f in LAYERS:
        x, w, dy, flop, p = _layer(rng, batch, c, k, h, f)
        ts = best(lambda: simd.simd_weight_grad(dy, x, w.shape, (p, p), (1, 1), 1), reps)
        ti = best(lambda: conv.conv2d_backward(dy, x, w, 1, p, need_dx=False, has_bias=False,
                                               algo="implicit"), reps)
        print(f"{c:4d}->{k:4d} {h:3d}x{h:<3d} {f}x{f}  {flop / ts / 1e9:6.0f} {flop / ti / 1e9:9.0f}"
              f" | {ti / ts:.2f}x", flush=True)


def strided(reps):
    rng = np.random.default_rng(0)
    print("\n== strided: phase planes and a vector per output row vs im2col, one thread "
          "(GFLOP/s; backward = dx + dw) ==")
    print(f"{'layer':40s} {'auto':>7s} | forward: phases   rows im2col | backward: phases   rows "
          f"im2col")
    for c, k, h, f, s, p, n in STRIDED:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((k, c, f, f)).astype(np.float32)
        ho = (h + 2 * p - f) // s + 1
        y = np.empty((n, k, ho, ho), np.float32)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        flop = 2 * n * k * c * f * f * ho * ho
        fwd, bwd = [], []
        for algo in ("simd", "rows", "im2col"):    # "simd": the phase planes when strided
            fwd.append(flop / best(lambda: conv.conv2d_forward(x, w, None, s, p, algo=algo,
                                                                out=y), reps) / 1e9)
            bwd.append(2 * flop / best(lambda: conv.conv2d_backward(
                dy, x, w, s, p, has_bias=False, algo=algo), reps) / 1e9)
        name = f"{c}->{k} {h}x{h} {f}x{f}/{s} ({ho}-wide rows)"
        print(f"{name:40s} {conv.simd_path(f, s, out_w=ho) or 'im2col':>7s} |         "
              + " ".join(f"{g:6.0f}" for g in fwd) + " |          "
              + " ".join(f"{g:6.0f}" for g in bwd), flush=True)


# (C, K, H): 3x3 "same" layers of resnet20_cifar, cifar_bn and vgg_cifar_bn
WINOGRAD = [(16, 16, 32), (16, 16, 16), (16, 16, 8), (32, 32, 32), (32, 32, 16), (32, 32, 8),
            (32, 64, 16), (64, 64, 16), (64, 64, 8), (64, 128, 16), (128, 128, 8),
            (256, 256, 8), (512, 512, 4)]


def winograd(reps, n=8):
    rng = np.random.default_rng(0)
    print(f"\n== Winograd F(2x2, 3x3): tiles in the lanes / channels last / direct vector "
          f"kernels, {n} samples, one thread (GFLOP/s of the direct convolution; backward = "
          f"dx + dW) ==")
    print(f"{'layer':18s} {'auto':>9s} | forward:  lanes  chlast   simd | backward:  lanes  chlast"
          f"   simd")
    for c, k, h in WINOGRAD:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        dy = rng.standard_normal((n, k, h, h)).astype(np.float32)
        y, dx = np.empty_like(dy), np.empty_like(x)
        u = wg.weight_transform(w)
        ut, udx = wg.forward_weights(u), wg.lanes_dx_weights(u)
        flop = 2 * n * k * c * 9 * h * h
        fwd = [best(lambda: wg.lanes_forward(x, u, None, y), reps),
               best(lambda: wg.winograd_forward(x, w, None, (1, 1), (h, h), out=y, ut=ut), reps),
               best(lambda: conv.conv2d_forward(x, w, None, 1, 1, algo="simd", out=y), reps)]

        def chlast():
            wg.weight_grad(wg.backward_du(dy, x, u, (1, 1), out_dx=dx)[1])

        def lanes():
            wg.weight_grad(wg.lanes_backward_du(dy, x, u, out_dx=dx, u_dx=udx)[1])

        bwd = [best(lanes, reps), best(chlast, reps),
               best(lambda: conv.conv2d_backward(dy, x, w, 1, 1, has_bias=False, out_dx=dx,
                                                 algo="simd"), reps)]
        auto = "simd"
        if conv.uses_winograd(w.shape, 1, 1, 1, 1, (h, h), in_hw=(h, h)):
            auto = "lanes" if wg.lanes_applies(1, 1, h, h, h, h) else "chlast"
        print(f"{c:4d}->{k:4d} {h:3d}x{h:<3d}  {auto:>9s} |        "
              + " ".join(f"{flop / t / 1e9:6.0f}" for t in fwd) + " |           "
              + " ".join(f"{2 * flop / t / 1e9:6.0f}" for t in bwd), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--only", choices=("micro", "layers", "strided", "winograd"), default=None,
                    help="run one section")
    args = ap.parse_args()
    print(f"vector registers: {simd.vector_bytes()} bytes; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.only in (None, "micro"):
        micro_kernel(args.reps * 10)
    if args.only in (None, "layers"):
        layers(args.batch, args.reps)
    if args.only in (None, "strided"):
        strided(args.reps)
    if args.only in (None, "winograd"):
        winograd(args.reps)


if __name__ == "__main__":
    main()
