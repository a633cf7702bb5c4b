"""Conv forward+backward speed: cnncalc kernels vs PyTorch, float32, 2 threads.

Run: ``python bench/bench_conv.py [--repeat 7]``. Prints, per layer, the median time of
forward+backward (dx, dw, db) and GFLOP/s for cnncalc and PyTorch, their ratio, and each as a
fraction of the float32 matmul ceiling (NumPy GEMM with 2 BLAS threads, measured in a subprocess
so that this process keeps BLAS at one thread beside numba's pool).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# the kernels' policy: BLAS single-threaded in this process (set before numpy loads BLAS)
from cnncalc.kernels import _jit  # noqa: E402  (sets OPENBLAS_NUM_THREADS=1 by default)

import numpy as np  # noqa: E402

from cnncalc.kernels.conv import conv2d_backward, conv2d_forward  # noqa: E402

THREADS = 2

# name, N, C, H, W, K, kh, kw, stride, pad
LAYERS = [
    ("AlexNet conv1", 8, 3, 227, 227, 96, 11, 11, 4, 0),
    ("VGG 3x3 64->64", 16, 64, 56, 56, 64, 3, 3, 1, 1),
    ("LeNet conv1", 64, 1, 28, 28, 6, 5, 5, 1, 2),
    ("LeNet conv2", 64, 6, 14, 14, 16, 5, 5, 1, 0),
]

_GEMM_SNIPPET = r"""
import json, time, numpy as np
n = 2048
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
ts = []
for _ in range(7):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(json.dumps(2 * n ** 3 / sorted(ts)[len(ts) // 2] / 1e9))
"""


def matmul_ceiling(threads: int) -> float | None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads))
    try:
        out = subprocess.run([sys.executable, "-c", _GEMM_SNIPPET], env=env, check=True,
                             capture_output=True, text=True, timeout=120).stdout
        return float(json.loads(out.strip().splitlines()[-1]))
    except Exception:  # pragma: no cover - informative only
        return None


def interleaved_medians(fns: dict, repeat: int) -> dict:
    """Median seconds per function; the functions alternate within each repetition so that
    background load hits them alike. Two warm-up calls each (numba compiles on the first)."""
    for fn in fns.values():
        fn()
        fn()
    ts = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t)
    return {name: sorted(v)[len(v) // 2] for name, v in ts.items()}


def conv_flops(n, c, k, kh, kw, ho, wo) -> float:
    """fwd + dW + dX, each 2*N*K*C*kh*kw*Ho*Wo."""
    return 3 * 2.0 * n * k * c * kh * kw * ho * wo


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    import numba

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    _jit.limit_blas_threads()
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        torch = None

    ceiling = matmul_ceiling(THREADS)
    ceil1 = matmul_ceiling(1)
    print(f"numba threads {numba.get_num_threads()}, torch "
          f"{'absent' if torch is None else torch.__version__ + ' threads ' + str(torch.get_num_threads())}")
    if ceiling:
        print(f"float32 matmul ceiling (NumPy 2048^3): {ceiling:.0f} GFLOP/s with {THREADS} BLAS "
              f"threads, {ceil1:.0f} with 1")
    head = f"{'layer':<16} {'cnncalc ms':>10} {'GF/s':>6} {'%peak':>6}"
    if torch is not None:
        head += f" {'torch ms':>9} {'GF/s':>6} {'%peak':>6} {'ratio':>6}"
    print(head)
    rng = np.random.default_rng(0)
    for name, n, c, h, w, k, kh, kw, s, p in LAYERS:
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = (rng.standard_normal((k, c, kh, kw), dtype=np.float32) * 0.05).astype(np.float32)
        b = np.zeros(k, np.float32)
        ho = (h + 2 * p - kh) // s + 1
        wo = (w + 2 * p - kw) // s + 1
        dy = rng.standard_normal((n, k, ho, wo), dtype=np.float32)

        def ours():
            conv2d_forward(x, wt, b, (s, s), (p, p), (1, 1), 1, (ho, wo))
            conv2d_backward(dy, x, wt, (s, s), (p, p), (1, 1), 1, need_dx=True)

        flops = conv_flops(n, c, k, kh, kw, ho, wo)
        fns = {"ours": ours}
        if torch is not None:
            xt = torch.from_numpy(x).requires_grad_(True)
            wtt = torch.from_numpy(wt).requires_grad_(True)
            bt = torch.from_numpy(b).requires_grad_(True)
            dyt = torch.from_numpy(dy)

            def theirs():
                xt.grad = wtt.grad = bt.grad = None
                yt = torch.nn.functional.conv2d(xt, wtt, bt, stride=s, padding=p)
                yt.backward(dyt)

            fns["torch"] = theirs
        times = interleaved_medians(fns, args.repeat)
        t_ours = times["ours"]
        g_ours = flops / t_ours / 1e9
        line = f"{name:<16} {t_ours * 1e3:>10.2f} {g_ours:>6.0f} " \
               f"{(100 * g_ours / ceiling if ceiling else float('nan')):>5.0f}%"
        if torch is not None:
            t_t = times["torch"]
            g_t = flops / t_t / 1e9
            line += f" {t_t * 1e3:>9.2f} {g_t:>6.0f} " \
                    f"{(100 * g_t / ceiling if ceiling else float('nan')):>5.0f}% " \
                    f"{t_ours / t_t:>6.2f}"
        print(line, flush=True)
    if torch is not None:
        print("ratio = cnncalc time / PyTorch time (lower is better; < 1 means cnncalc is faster)")


if __name__ == "__main__":
    main()
