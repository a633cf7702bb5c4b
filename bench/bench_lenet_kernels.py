"""LeNet-5 training step built from cnncalc's fused kernels vs PyTorch CPU, in the same process.

  python bench/bench_lenet_kernels.py [--batches 64 256] [--rounds 8] [--steps 20]

Float32, real MNIST streamed in shuffled order (``$CNNCALC_MNIST_DIR`` or ../shared/data/mnist),
alternating rounds of PyTorch steps and cnncalc steps. A step is batch gather + forward + backward +
SGD momentum (0.9, lr 0.05) for
conv1 6@5x5 pad 2 -> ReLU -> pool 2 -> conv2 16@5x5 -> ReLU -> pool 2 -> fc120 -> ReLU -> fc84 ->
ReLU -> fc10 -> softmax cross-entropy.
Both models start from the same weights; the first step checks every gradient against PyTorch's.
Prints median ms/step, images/s and the ratio per batch size, then per-kernel medians.

This measures the per-op ``fused.py`` kernels (numba ``prange``, not cached). What
``cnncalc.Network`` runs for LeNet-5 now is the generated, shape-specialised chain on two
worker threads: see ``bench/bench_engine.py`` for that benchmark.
"""
from __future__ import annotations

import argparse
import gzip
import os
import pathlib
import statistics
import struct
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnncalc.kernels import _jit  # BLAS is clamped to 1 thread in main()


def read_idx(path: pathlib.Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_train(folder: pathlib.Path):
    x = read_idx(folder / "train-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    x = np.ascontiguousarray((x - 0.1307) / 0.3081, dtype=np.float32)
    y = read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


# (name, shape) of LeNet-5's parameters in PyTorch order
PARAMS = [("conv1.weight", (6, 1, 5, 5)), ("conv1.bias", (6,)),
          ("conv2.weight", (16, 6, 5, 5)), ("conv2.bias", (16,)),
          ("fc1.weight", (120, 400)), ("fc1.bias", (120,)),
          ("fc2.weight", (84, 120)), ("fc2.bias", (84,)),
          ("fc3.weight", (10, 84)), ("fc3.bias", (10,))]


def flat_views(buf):
    views, o = {}, 0
    for name, shape in PARAMS:
        n = int(np.prod(shape))
        views[name] = buf[o:o + n].reshape(shape)
        o += n
    return views


class FusedLeNet:
    """LeNet-5 assembled directly from the fused kernels, over flat param/grad/momentum buffers."""

    def __init__(self, state: dict, lr=0.05, momentum=0.9):
        from cnncalc.kernels import flat_optim, fused

        self.fused, self.optim = fused, flat_optim
        n = sum(int(np.prod(s)) for _, s in PARAMS)
        self.params = np.zeros(n, np.float32)
        self.grads = np.zeros(n, np.float32)
        self.buf = np.zeros(n, np.float32)
        self.p, self.g = flat_views(self.params), flat_views(self.grads)
        for name, _ in PARAMS:
            self.p[name][...] = state[name]
        self.lr, self.mu = lr, momentum
        g = self.g
        # backward buffers pre-seeded with views of the flat gradient buffer: no copy afterwards
        self.out = {k: {} for k in ("c1f", "c2f", "f1f", "f2f", "f3f", "ce")}
        for key, layer in (("c1b", "conv1"), ("c2b", "conv2"), ("f1b", "fc1"), ("f2b", "fc2"),
                           ("f3b", "fc3")):
            self.out[key] = {"dw": g[layer + ".weight"], "db": g[layer + ".bias"]}
        self.times = {}

    def step(self, x, labels, timed=False):
        f, p, o = self.fused, self.p, self.out
        t = [time.perf_counter()] if timed else None

        def mark(name):
            if timed:
                t.append(time.perf_counter())
                self.times.setdefault(name, []).append(t[-1] - t[-2])

        N = x.shape[0]
        y1, a1 = f.conv_relu_maxpool_forward(x, p["conv1.weight"], p["conv1.bias"], 2, 2,
                                             out=o["c1f"])
        mark("conv1 fwd")
        y2, a2 = f.conv_relu_maxpool_forward(y1, p["conv2.weight"], p["conv2.bias"], 0, 2,
                                             out=o["c2f"])
        mark("conv2 fwd")
        h0 = y2.reshape(N, 400)
        h1 = f.linear_relu_forward(h0, p["fc1.weight"], p["fc1.bias"], True, out=o["f1f"])
        h2 = f.linear_relu_forward(h1, p["fc2.weight"], p["fc2.bias"], True, out=o["f2f"])
        lg = f.linear_relu_forward(h2, p["fc3.weight"], p["fc3.bias"], False, out=o["f3f"])
        mark("fc fwd")
        loss, dl = f.softmax_cross_entropy(lg, labels, out=o["ce"])
        mark("softmax CE")
        dh2 = f.linear_relu_backward(dl, h2, p["fc3.weight"], lg, False, out=o["f3b"])[0]
        dh1 = f.linear_relu_backward(dh2, h1, p["fc2.weight"], h2, True, out=o["f2b"])[0]
        dh0 = f.linear_relu_backward(dh1, h0, p["fc1.weight"], h1, True, out=o["f1b"])[0]
        mark("fc bwd")
        dy1 = f.conv_relu_maxpool_backward(dh0.reshape(y2.shape), y1, p["conv2.weight"], a2, 0,
                                           2, need_dx=True, out=o["c2b"])[0]
        mark("conv2 bwd")
        f.conv_relu_maxpool_backward(dy1, x, p["conv1.weight"], a1, 2, 2, need_dx=False,
                                     out=o["c1b"])
        mark("conv1 bwd")
        self.optim.momentum(self.params, self.grads, self.buf, self.lr, self.mu)
        mark("sgd momentum")
        return loss


def torch_model(seed):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(400, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(F.relu(self.fc2(x)))

    torch.manual_seed(seed)
    return LeNet5()


def check_gradients(tmodel, ours, xtr, ytr, batch):
    """One step's gradients of both models on the same weights and batch; max relative error."""
    import torch
    import torch.nn.functional as F

    idx = np.arange(batch)
    x, y = np.ascontiguousarray(xtr[idx]), ytr[idx]
    tmodel.zero_grad()
    loss_t = F.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
    loss_t.backward()
    saved = ours.params.copy(), ours.buf.copy()
    loss = ours.step(x, y)
    ours.params[...], ours.buf[...] = saved  # undo the update: both start the timing equal
    worst = 0.0
    tparams = dict(tmodel.named_parameters())
    for name, _ in PARAMS:
        ref = tparams[name].grad.numpy()
        err = np.abs(ours.g[name] - ref).max() / max(np.abs(ref).max(), 1e-30)
        worst = max(worst, err)
        print(f"  grad {name:13s} max rel err {err:.1e}")
    print(f"  loss ours {loss:.6f} torch {loss_t.item():.6f}; worst grad rel err {worst:.1e}")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", type=pathlib.Path,
                    default=pathlib.Path(os.environ.get("CNNCALC_MNIST_DIR",
                                                        ROOT.parent / "shared" / "data" / "mnist")))
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--rounds", type=int, default=8, help="alternations per batch size")
    ap.add_argument("--steps", type=int, default=20, help="steps per round and framework")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numba
    import torch
    import torch.nn.functional as F

    from cnncalc.kernels.denormals import enable_flush_denormals, flush_status

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    _jit.limit_blas_threads()
    enable_flush_denormals()
    st = flush_status()
    print(f"numba {numba.__version__} ({numba.threading_layer()}, "
          f"{numba.get_num_threads()} threads), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); FTZ in threads {sorted(st['flushing'])} of "
          f"{sorted(st['threads'])}, main {st['main']}")

    xtr, ytr = load_train(args.mnist)
    n = xtr.shape[0]
    rng = np.random.default_rng(args.seed)
    results = {}
    for batch in args.batches:
        tmodel = torch_model(args.seed)
        state = {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}
        ours = FusedLeNet(state)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9)
        t0 = time.perf_counter()
        print(f"\nbatch {batch}: gradients vs torch on the first batch (same weights)")
        check_gradients(tmodel, ours, xtr, ytr, batch)
        print(f"  (first call incl. compile {time.perf_counter() - t0:.1f} s)")
        xt_all, yt_all = torch.from_numpy(xtr), torch.from_numpy(ytr)
        xb = np.empty((batch,) + xtr.shape[1:], np.float32)
        perm_t, perm_o = rng.permutation(n), rng.permutation(n)
        pos_t = pos_o = 0
        times_t, times_o, losses_t, losses_o = [], [], [], []
        for rnd in range(args.rounds + 1):  # round 0 is warm-up, not counted
            for _ in range(args.steps):
                if pos_t + batch > n:
                    perm_t, pos_t = rng.permutation(n), 0
                s = time.perf_counter()
                idx = torch.from_numpy(perm_t[pos_t:pos_t + batch])
                topt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(tmodel(xt_all[idx]), yt_all[idx])
                loss.backward()
                topt.step()
                e = time.perf_counter() - s
                pos_t += batch
                if rnd:
                    times_t.append(e)
                    losses_t.append(loss.item())
            for _ in range(args.steps):
                if pos_o + batch > n:
                    perm_o, pos_o = rng.permutation(n), 0
                s = time.perf_counter()
                idx = perm_o[pos_o:pos_o + batch]
                np.take(xtr, idx, axis=0, out=xb)
                loss = ours.step(xb, ytr[idx], timed=bool(rnd))
                e = time.perf_counter() - s
                pos_o += batch
                if rnd:
                    times_o.append(e)
                    losses_o.append(loss)
        mt, mo = statistics.median(times_t) * 1e3, statistics.median(times_o) * 1e3
        results[batch] = (mt, mo)
        print(f"  torch  {mt:7.3f} ms/step  {batch / mt * 1e3:8.0f} img/s   "
              f"(mean loss last round {np.mean(losses_t[-args.steps:]):.3f})")
        print(f"  fused  {mo:7.3f} ms/step  {batch / mo * 1e3:8.0f} img/s   "
              f"(mean loss last round {np.mean(losses_o[-args.steps:]):.3f})")
        print(f"  ratio  {mt / mo:.2f}x torch's throughput")
        print("  per kernel (median ms):", ", ".join(
            f"{k} {statistics.median(v) * 1e3:.3f}" for k, v in ours.times.items()))
    print("\nsummary: " + "; ".join(f"batch {b}: torch {t:.2f} ms, fused {o:.2f} ms, "
                                     f"{t / o:.2f}x" for b, (t, o) in results.items()))


if __name__ == "__main__":
    main()
