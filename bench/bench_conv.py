"""Conv forward+backward speed: cnncalc kernels vs PyTorch, float32, 2 threads.

Run: ``python bench/bench_conv.py [--repeat 9] [--only VGG]``. Per layer it times forward +
backward (dx, dw, db) two ways, alternating within each repetition (the machine is shared and
noisy, so only ratios measured side by side mean much), and prints medians:

* ``split`` (primary; how the engine runs): the batch is cut in two halves and each half runs
  the serial, cached, nogil kernels in its own Python thread of a ``ThreadPoolExecutor(2)``;
  the two dw/db are summed.
* ``torch``: ``F.conv2d`` forward + ``backward`` with 2 intra-op threads.

For each: milliseconds, GFLOP/s (3 GEMM-equivalents: fwd, dx, dw), and the fraction of the float32
matmul ceiling (NumPy 2048^3 GEMM with 2 BLAS threads, measured in a subprocess so that this
process keeps BLAS at one thread); then the ratios to PyTorch's time (< 1: cnncalc is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# this checkout's cnncalc, not an installed one
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# BLAS single-threaded in this (benchmark) process, set before numpy loads BLAS: the threads are
# the parallelism, as in the engine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cnncalc.kernels.conv import conv2d_backward, conv2d_forward  # noqa: E402
from cnncalc.kernels.fast.thread_state import limit_blas_threads  # noqa: E402

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


def split_runner(pool, x, wt, b, dy, s, p, ho, wo):
    """fwd+bwd of the batch as two halves, serial kernels, one Python thread each."""
    n = x.shape[0]
    cut = (n + 1) // 2
    parts = [(x[:cut], dy[:cut]), (x[cut:], dy[cut:])]

    def half(i):
        xh, dyh = parts[i]
        conv2d_forward(xh, wt, b, (s, s), (p, p), (1, 1), 1, (ho, wo))
        return conv2d_backward(dyh, xh, wt, (s, s), (p, p), (1, 1), 1, need_dx=True)

    def run():
        (_, dw0, db0), (_, dw1, db1) = pool.map(half, [0, 1])
        return dw0 + dw1, db0 + db1

    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--only", default="", help="run only layers whose name contains this")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads while the kernels run (>1 shows the oversubscription cost)")
    args = ap.parse_args(argv)

    import numba

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    if args.blas_threads == 1:
        limit_blas_threads()
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
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
    pct = (lambda g: 100 * g / ceiling) if ceiling else (lambda g: float("nan"))
    head = f"{'layer':<16} {'split ms':>9} {'GF/s':>5} {'%pk':>4}"
    if torch is not None:
        head += f" {'torch ms':>9} {'GF/s':>5} {'%pk':>4} {'split/T':>8}"
    print(head)
    rng = np.random.default_rng(0)
    pool = ThreadPoolExecutor(2)
    for name, n, c, h, w, k, kh, kw, s, p in LAYERS:
        if args.only and args.only.lower() not in name.lower():
            continue
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = (rng.standard_normal((k, c, kh, kw), dtype=np.float32) * 0.05).astype(np.float32)
        b = np.zeros(k, np.float32)
        ho = (h + 2 * p - kh) // s + 1
        wo = (w + 2 * p - kw) // s + 1
        dy = rng.standard_normal((n, k, ho, wo), dtype=np.float32)

        flops = conv_flops(n, c, k, kh, kw, ho, wo)
        fns = {"split": split_runner(pool, x, wt, b, dy, s, p, ho, wo)}
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
        t = interleaved_medians(fns, args.repeat)
        g = {key: flops / v / 1e9 for key, v in t.items()}
        line = f"{name:<16} {t['split'] * 1e3:>9.2f} {g['split']:>5.0f} {pct(g['split']):>3.0f}%"
        if torch is not None:
            line += f" {t['torch'] * 1e3:>9.2f} {g['torch']:>5.0f} {pct(g['torch']):>3.0f}% " \
                    f"{t['split'] / t['torch']:>8.2f}"
        print(line, flush=True)
    pool.shutdown()
    if torch is not None:
        print("split/T = cnncalc time / PyTorch time (lower is better; < 1 means "
              "cnncalc is faster); medians of alternating runs")


if __name__ == "__main__":
    main()
