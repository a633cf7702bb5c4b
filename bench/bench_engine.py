"""The engine's benchmark (issues 4 and 13): cnncalc vs PyTorch CPU, float32, 2 threads, one run.

  python bench/bench_engine.py [--rounds 8] [--steps 25] [--quick] [--no-startup] [--no-rss]
                               [--engine-threads 2] [--no-flush] [--nets SPEC ...]
  python bench/bench_engine.py --only cifar [--nets cifar_bn resnet20_cifar vgg_cifar_bn]
  python bench/bench_engine.py --only rss
  python bench/bench_engine.py --contention [SPEC ...] [--rounds 3]

Prints, side by side with PyTorch (column skipped when torch is not installed):

1. conv forward+backward GFLOP/s through the engine (a one-layer ``Network`` each): the LeNet-5
   conv layers, AlexNet conv1 (N8, 227x227x3, 96 11x11/4) and a VGG 3x3 layer (N16, 64->64,
   56x56, pad 1); FLOPs = forward + dW (+ dx where the layer is not the input layer), as
   2*MACs; plus each as a fraction of the practical ceiling (float32 matmul, 2 threads);
2. LeNet-5 training steps (forward + backward + SGD momentum) in images/s at batch 64 and 256, on
   streamed, shuffled real MNIST (gz IDX from ``$CNNCALC_MNIST_DIR`` or /work/shared/data/mnist;
   random data with a note when missing), alternating rounds of both frameworks in this process;
3. the generic-step-plan nets (``NETS``: ``specs/cifar_bn.yaml``, ``specs/resnet20_cifar.yaml``,
   ``specs/vgg_cifar_bn.yaml``): training steps (forward + backward + Adam) in images/s at batch
   64 vs the same PyTorch model (built from the Network's graph and state_dict names, same
   weights), on a streamed, shuffled synthetic CIFAR-shaped set, alternating rounds; with each
   side's GFLOP/s (6 x MACs x batch per step) and its share of the measured matmul ceiling;
4. start-up, LeNet-5 and cifar_bn: a subprocess run twice, from process start to the first step
   done: cold (empty kernel caches: ``CNNCALC_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` point at a
   fresh folder) and cached (same folders again), with the number of numba compilations;
5. peak RSS (VmHWM) of a batch-64 training step for LeNet-5 and every ``NETS`` spec, cnncalc
   and PyTorch each in a fresh subprocess;
6. ``--contention`` (only this section): each net's step time alone and beside one competing
   busy process (``python -c 'while True: pass'``, paused with SIGSTOP between phases),
   cnncalc and PyTorch alternating; the degradation is the contended / uncontended median.

The machine is shared: every comparison alternates the two frameworks and reports ratios of
medians; check ``uptime`` and rerun when the load is high.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# BLAS at one thread in this benchmark process and its children (set before numpy loads BLAS)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cnncalc.kernels.fast.thread_state import limit_blas_threads  # noqa: E402
from cnncalc.train.data import read_idx  # noqa: E402

THREADS = 2
# Pause before each framework's round: both keep threads spinning for a while after their last
# parallel region (OpenMP's wait policy, the engine's 1 ms spin), which would tax the other.
SETTLE = 0.05
MNIST = pathlib.Path(os.environ.get("CNNCALC_MNIST_DIR", "/work/shared/data/mnist"))

# name, N, C, H, W, K, F, stride, pad, dx wanted
CONVS = [
    ("LeNet conv1", 64, 1, 28, 28, 6, 5, 1, 2, False),
    ("LeNet conv2", 64, 6, 14, 14, 16, 5, 1, 0, True),
    ("AlexNet conv1", 8, 3, 227, 227, 96, 11, 4, 0, False),
    ("VGG 3x3 64->64", 16, 64, 56, 56, 64, 3, 1, 1, True),
    # the 3x3 layers of the CIFAR nets (cifar_bn, resnet20_cifar, vgg_cifar_bn) at batch 64
    ("CIFAR 32->32 32x32", 64, 32, 32, 32, 32, 3, 1, 1, True),
    ("CIFAR 64->64 16x16", 64, 64, 16, 16, 64, 3, 1, 1, True),
    ("CIFAR 128->128 8x8", 64, 128, 8, 8, 128, 3, 1, 1, True),
    ("CIFAR 256->256 8x8", 64, 256, 8, 8, 256, 3, 1, 1, True),
]


def have_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def load_mnist():
    try:
        x = read_idx(MNIST / "train-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
        y = read_idx(MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64)
        x = np.ascontiguousarray((x - 0.1307) / 0.3081, dtype=np.float32)
        return x, y, "real MNIST (60000, streamed in shuffled order)"
    except OSError as e:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((60000, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 60000)
        return x, y, f"RANDOM data: MNIST not found ({e}); timings on random data mislead"


def med(ts):
    return statistics.median(ts)


# ------------------------------------------------------------------------------------- ceiling
def ceiling_gflops() -> tuple[float, str]:
    """float32 matmul GFLOP/s with 2 threads (torch if present, else NumPy in a subprocess)."""
    n = 2048
    if have_torch():
        import torch

        a = torch.randn(n, n)
        b = torch.randn(n, n)
        torch.mm(a, b)
        ts = []
        for _ in range(10):
            s = time.perf_counter()
            torch.mm(a, b)
            ts.append(time.perf_counter() - s)
        return 2 * n ** 3 / min(ts) / 1e9, "torch.mm 2048^3"
    code = ("import time, numpy as np; n=2048; a=np.random.rand(n,n).astype(np.float32); "
            "a@a; ts=[]\nfor _ in range(5):\n s=time.perf_counter(); a@a; "
            "ts.append(time.perf_counter()-s)\nprint(2*n**3/min(ts)/1e9)")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip()), "numpy 2048^3"


# --------------------------------------------------------------------------------------- convs
def conv_spec(C, H, W, K, F, stride, pad) -> str:
    return (f"name: one_conv\ninput: {H}x{W}x{C}\nlayers:\n"
            f"  - conv: {{filters: {K}, size: {F}, stride: {stride}, pad: {pad}}}\n")


def _ours(net, x, dout, want_dx):
    def run():
        net.forward(x)
        net.backward(dout, need_dx=want_dx)

    return run


def _theirs(net, x, dout, want_dx, K, st, pad):
    import torch
    import torch.nn.functional as tF

    xt = torch.from_numpy(x).requires_grad_(want_dx)
    w0 = next(v for k, v in net.params.items() if k.endswith(".weight"))
    wt = torch.from_numpy(w0.copy()).requires_grad_(True)
    bt = torch.zeros(K, requires_grad=True)
    dt_ = torch.from_numpy(dout)

    def run():
        y = tF.conv2d(xt, wt, bt, stride=st, padding=pad)
        y.backward(dt_)
        wt.grad = bt.grad = None
        if want_dx:
            xt.grad = None

    return run


def _timed_hot(fn, warm: bool = True) -> float:
    """Seconds of one call of ``fn`` after an untimed one (``warm``). A single call after
    ``SETTLE``'s idle pause ran on cores that had idled: on the Intel machines a 3x3
    128->128 layer on 8x8 (~11 ms a call back to back) read ~20 ms there, a cost that training
    steps, which run back to back, do not pay, and the matmul ceiling, timed back to back,
    does not either."""
    if warm:
        fn()
    s = time.perf_counter()
    fn()
    return time.perf_counter() - s


def bench_convs(reps: int, ceiling: float, torch_on: bool):
    import cnncalc

    print(f"\n== conv forward+backward through the engine (one-layer Network, float32, "
          f"{THREADS} threads) ==")
    print("(cnncalc's forward alone and the backward as the rest: fwd / bwd GF/s and % of the "
          "ceiling in the last column)")
    hdr = f"{'layer':18s} {'GFLOP':>6s} | {'cnncalc ms':>10s} {'GF/s':>6s} {'%ceil':>6s}"
    if torch_on:
        hdr += f" | {'torch ms':>9s} {'GF/s':>6s} {'%ceil':>6s} | {'speed vs torch':>14s}"
    print(hdr)
    rows = []
    for name, N, C, H, W, K, F, st, pad, want_dx in CONVS:
        net = cnncalc.Network(conv_spec(C, H, W, K, F, st, pad), dtype="float32",
                              threads=THREADS)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        out = net.forward(x)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        Ho, Wo = out.shape[2], out.shape[3]
        macs = N * K * C * F * F * Ho * Wo
        flop = 2 * macs * (3 if want_dx else 2)

        ours = _ours(net, x, dout, want_dx)
        if torch_on:
            theirs = _theirs(net, x, dout, want_dx, K, st, pad)
        ours()
        if torch_on:
            theirs()
        to, tt, tf = [], [], []
        for _ in range(reps):
            time.sleep(SETTLE)
            to.append(_timed_hot(ours))
            tf.append(_timed_hot(lambda: net.forward(x), warm=False))
            if torch_on:
                time.sleep(SETTLE)
                tt.append(_timed_hot(theirs))
        mo, mf = med(to), med(tf)
        ffwd = 2 * macs
        gf_f, gf_b = ffwd / mf / 1e9, (flop - ffwd) / max(mo - mf, 1e-9) / 1e9
        line = (f"{name:18s} {flop / 1e9:6.3f} | {mo * 1e3:10.2f} {flop / mo / 1e9:6.1f} "
                f"{100 * flop / mo / 1e9 / ceiling:5.1f}%")
        row = {"layer": name, "gflop": flop / 1e9, "cnncalc_ms": mo * 1e3,
               "fwd_gflops": gf_f, "bwd_gflops": gf_b}
        if torch_on:
            mt = med(tt)
            line += (f" | {mt * 1e3:9.2f} {flop / mt / 1e9:6.1f} "
                     f"{100 * flop / mt / 1e9 / ceiling:5.1f}% | {mt / mo:13.2f}x"
                     f" (time {mo / mt:.2f}x torch's)")
            row["torch_ms"] = mt * 1e3
        line += (f" | fwd {gf_f:5.1f} ({100 * gf_f / ceiling:3.0f}%) bwd {gf_b:5.1f} "
                 f"({100 * gf_b / ceiling:3.0f}%)")
        print(line, flush=True)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ LeNet-5
def torch_lenet(seed=0):
    """PyTorch's LeNet-5 with its default init (the same model bench_train.py trains)."""
    from bench_train import torch_lenet as build

    return build("torch", None, seed)


def time_steps(net, opt, xb, xtr, ytr, rng, perm_o, batch, steps, rounds, torch_side):
    """Alternate ``steps`` training steps of cnncalc and PyTorch for ``rounds`` rounds (after one
    warm-up round) on batches streamed in shuffled order; medians and a report line."""
    n = xtr.shape[0]
    P, G = {"all": net.flat_params}, {"all": net.flat_grads}
    pos_o, pos_t = 0, 0
    to, tt, lo, lt = [], [], [], []
    for rnd in range(rounds + 1):  # round 0: warm-up (compiles / loads the cache)
        time.sleep(SETTLE)
        for _ in range(steps):
            if pos_o + batch > n:
                perm_o, pos_o = rng.permutation(n), 0
            s = time.perf_counter()
            idx = perm_o[pos_o:pos_o + batch]
            np.take(xtr, idx, axis=0, out=xb)
            loss = net.loss_and_grads(xb, ytr[idx])
            with net.thread_state():  # flush-to-zero for the momentum buffers, as the trainer
                opt.step(P, G, run=net.parallel, compiled=True)
            e = time.perf_counter() - s
            pos_o += batch
            if rnd:
                to.append(e)
                lo.append(loss)
        if torch_side is not None:
            import torch
            import torch.nn.functional as F

            tm, topt, xt_all, yt_all, perm_t = torch_side
            time.sleep(SETTLE)
            for _ in range(steps):
                if pos_t + batch > n:
                    perm_t, pos_t = rng.permutation(n), 0
                s = time.perf_counter()
                idx = torch.from_numpy(perm_t[pos_t:pos_t + batch])
                topt.zero_grad(set_to_none=True)
                lt_ = F.cross_entropy(tm(xt_all[idx]), yt_all[idx])
                lt_.backward()
                topt.step()
                e = time.perf_counter() - s
                pos_t += batch
                if rnd:
                    tt.append(e)
                    lt.append(lt_.item())
            torch_side = (tm, topt, xt_all, yt_all, perm_t)
    mo = med(to)
    line = (f"batch {batch:4d}: cnncalc {mo * 1e3:7.3f} ms/step {batch / mo:9.0f} img/s "
            f"(loss {np.mean(lo[-steps:]):.3f})")
    res = {"cnncalc_ms": mo * 1e3}
    if tt:
        mt = med(tt)
        line += (f" | torch {mt * 1e3:7.3f} ms/step {batch / mt:9.0f} img/s "
                 f"(loss {np.mean(lt[-steps:]):.3f}) | ratio {mt / mo:.2f}x torch")
        res["torch_ms"] = mt * 1e3
    return line, res


def bench_lenet(batches, rounds, steps, torch_on, xtr, ytr, ceiling, engine_threads=None,
                flush=True):
    import cnncalc
    from cnncalc import optim

    engine_threads = engine_threads or THREADS
    print(f"\n== LeNet-5 training step (forward + backward + SGD momentum 0.9, lr 0.05), "
          f"float32, {THREADS} threads (cnncalc: {engine_threads}"
          f"{', no flush-to-zero' if not flush else ''}) ==")
    n = xtr.shape[0]
    res = {}
    for batch in batches:
        net = cnncalc.Network(ROOT / "specs" / "lenet5.yaml", dtype="float32",
                              threads=engine_threads, flush_denormals=flush)
        opt = optim.create("momentum", lr=0.05, momentum=0.9)
        rng = np.random.default_rng(1)
        perm_o = rng.permutation(n)
        xb = np.empty((batch,) + xtr.shape[1:], np.float32)
        if torch_on:
            import torch

            tm = torch_lenet()
            net.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
            topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
            xt_all, yt_all = torch.from_numpy(xtr), torch.from_numpy(ytr)
            perm_t = rng.permutation(n)
        torch_side = (tm, topt, xt_all, yt_all, perm_t) if torch_on else None
        line, res[batch] = time_steps(net, opt, xb, xtr, ytr, rng, perm_o, batch, steps,
                                      rounds, torch_side)
        print(line, flush=True)
    return res


def bench_chain_kernels(xtr, ytr, ceiling, torch_on, rows=128, reps=20):
    """The generated LeNet-5 kernels one by one, on one thread and one slice of ``rows`` (the
    half of a batch-256 step each thread runs), after 150 training steps (real liveness)."""
    import cnncalc
    from cnncalc import optim

    net = cnncalc.Network(ROOT / "specs" / "lenet5.yaml", dtype="float32", threads=1)
    if torch_on:
        net.load_state_dict({k: v.detach().numpy() for k, v in torch_lenet().state_dict().items()})
    opt = optim.create("momentum", lr=0.05, momentum=0.9)
    rng = np.random.default_rng(2)
    for _ in range(150):
        idx = rng.integers(0, xtr.shape[0], rows)
        net.loss_and_grads(xtr[idx], ytr[idx])
        opt.step({"all": net.flat_params}, {"all": net.flat_grads})
    ch, m, sl = net._chain, net._chain.mod, net._chain.slots[0]
    p, g, n = net.flat_params, sl.grads, rows
    x = np.ascontiguousarray(xtr[idx])
    y = ytr[idx]
    lg = np.empty((n, 10), np.float32)
    dl = np.empty_like(lg)
    ch.prepare(p)
    ch.step_slice(sl, x, y, 0, n, np.float32(1 / n), p, lg, dl)
    b0, b1 = ch.spec.blocks
    f0 = 2 * b0.K * b0.R * b0.Ho * b0.Wo
    f1 = 2 * b1.K * b1.R * b1.Ho * b1.Wo
    ffc = 2 * sum(d.I * d.O for d in ch.spec.dense)
    dummy = np.zeros((1, 1, 1, 1), np.float32)
    calls = [
        ("conv1+relu+pool fwd (direct)", f0,
         lambda: m.b0_fwd(x, 0, n, p, sl.xpad[0], sl.cv[0], sl.y[0], sl.am[0])),
        ("conv2+relu+pool fwd (GEMM)", f1,
         lambda: m.b1_fwd(sl.y[0], 0, n, p, ch.wt[1], sl.xpad[1], sl.cols[1], sl.cv[1],
                          sl.y[1], sl.am[1])),
        ("fc chain fwd", ffc, lambda: m.fc_fwd(n, p, sl.h[0], sl.h[1], sl.h[2], lg)),
        ("softmax CE", 0, lambda: m.xent(n, 0, y, np.float32(1 / n), lg, dl)),
        ("fc chain bwd", 2 * ffc,
         lambda: m.fc_bwd(n, p, g, dl, sl.h[0], sl.h[1], sl.h[2], lg, sl.dh[1], sl.dh[2],
                          sl.dh[0], True)),
        ("conv2 bwd dW+dx (sparse)", 2 * f1,
         lambda: m.b1_bwd(n, p, ch.wk[1], g, sl.dwk[1], sl.xpad[1], sl.dy[1], sl.am[1], True,
                          sl.dxp[1], sl.dy[0])),
        ("conv1 bwd dW (dense)", f0,
         lambda: m.b0_bwd(n, p, g, sl.xpad[0], sl.dy[0], sl.am[0], False, sl.dxp[0], dummy,
                          sl.dwk[0], sl.cols[0])),
    ]
    alive = [float((a[:n] >= 0).mean()) for a in sl.am]
    print(f"\n== generated LeNet-5 kernels, 1 thread, {n} samples (half a batch-256 step); "
          f"live pool windows: conv1 {alive[0]:.0%}, conv2 {alive[1]:.0%} ==")
    print(f"{'kernel':30s} {'us/sample':>9s} {'GF/s*':>7s} {'%1-thread ceil':>14s}")
    half = ceiling / THREADS
    total = 0.0
    res = {}
    for name, flop, fn in calls:
        fn()
        ts = []
        for _ in range(reps):
            s = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - s)
        t = min(ts) / n
        total += t
        gf = flop / t / 1e9 if flop else 0.0
        res[name] = t * 1e6
        print(f"{name:30s} {t * 1e6:9.2f} {gf:7.1f} {100 * gf / half:13.1f}%")
    print(f"{'total':30s} {total * 1e6:9.2f}   (* dense-equivalent FLOPs; the sparse backward "
          f"skips dead windows)")
    return res


# ------------------------------------------------------------------------------------ cifar_bn
def torch_from_network(net):
    """:func:`torch_from_graph` of ``net``'s graph, carrying its weights and running
    statistics."""
    import torch

    m = torch_from_graph(net.graph)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()},
                      strict=False)
    return m


def torch_from_graph(g):
    """A PyTorch model of graph ``g`` (conv, batchnorm, relu, maxpool, global_avgpool, flatten,
    fc, add), modules named after the Network's state_dict keys (PyTorch's default init); nodes
    run in graph order, each reading its inputs by name. Needs no numba (``cnncalc.load``)."""
    import torch.nn.functional as F
    from torch import nn

    from cnncalc.graph import INPUT_NAME

    params = g.param_shapes()

    class FromGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = []
            for nd in g.nodes:
                L, mod = nd.layer, None
                if nd.kind == "conv":
                    (t, b), (l, r) = nd.pads(g.convention)
                    assert t == b and l == r, "symmetric padding only"
                    mod = nn.Conv2d(nd.in_shape.c, L.out_channels, tuple(L.kernel_size),
                                    tuple(L.stride), (t, l), tuple(L.dilation), L.groups,
                                    bias=f"{nd.name}.bias" in params)
                elif nd.kind == "batchnorm":
                    mod = nn.BatchNorm2d(nd.in_shape.c, eps=L.eps,
                                         momentum=0.1 if L.momentum is None else L.momentum,
                                         affine=bool(L.affine))
                elif nd.kind == "fc":
                    mod = nn.Linear(nd.in_shape.size, L.out_features,
                                    bias=f"{nd.name}.bias" in params)
                if mod is not None:
                    parent = self
                    *path, last = nd.name.split(".")
                    for part in path:
                        if not hasattr(parent, part):
                            parent.add_module(part, nn.Module())
                        parent = getattr(parent, part)
                    parent.add_module(last, mod)
                    fn = mod
                elif nd.kind == "relu":
                    fn = F.relu
                elif nd.kind == "maxpool":
                    (t, _), (l, _) = nd.pads(g.convention)
                    fn = (lambda x, L=L, p=(t, l): F.max_pool2d(
                        x, tuple(L.kernel_size), tuple(L.stride), p, tuple(L.dilation)))
                elif nd.kind == "global_avgpool":
                    fn = (lambda x: x.mean((2, 3), keepdim=True))
                elif nd.kind == "flatten":
                    fn = (lambda x: x.flatten(1))
                elif nd.kind == "add":
                    fn = (lambda *xs: sum(xs[1:], xs[0]))
                else:
                    raise NotImplementedError(nd.kind)
                self.calls.append((nd.name, list(nd.inputs), fn))

        def forward(self, x):
            vals = {INPUT_NAME: x}
            for name, inputs, fn in self.calls:
                x = vals[name] = fn(*(vals[i] for i in inputs))
            return x

    return FromGraph()


# Nets on the generic step plan: spec, Adam/momentum as their train section, steps per round
NETS = {"cifar_bn": 25, "resnet20_cifar": 10, "vgg_cifar_bn": 4}


def train_flops(graph, batch: int) -> float:
    """FLOPs of one training step: 2 * MACs forward, twice that backward (dx and dW), so
    ``6 * MACs * batch`` (the first layer's dx is counted too: an upper bound by < 2 %)."""
    return 6.0 * graph.analyze()["totals"]["macs"] * batch


def bench_net(spec, rounds, steps, torch_on, ceiling, batch=64, n=4096):
    import cnncalc
    from cnncalc import optim

    print(f"\n== {spec} training step (generic step plan; forward + backward + Adam lr 1e-3), "
          f"float32, {THREADS} threads, batch {batch} ==")
    net = cnncalc.Network(ROOT / "specs" / f"{spec}.yaml", dtype="float32", threads=THREADS)
    rng = np.random.default_rng(2)
    c, h, w = net.graph.input_shape
    xtr, ytr = synthetic_set((c, h, w), n, rng)   # rng goes on to shuffle
    opt = optim.create("adam", lr=1e-3)
    xb = np.empty((batch, c, h, w), np.float32)
    perm_o = rng.permutation(n)
    if torch_on:
        import torch

        tm = torch_from_network(net)
        topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
        xt_all, yt_all = torch.from_numpy(xtr), torch.from_numpy(ytr)
        perm_t = rng.permutation(n)
    torch_side = (tm, topt, xt_all, yt_all, perm_t) if torch_on else None
    line, res = time_steps(net, opt, xb, xtr, ytr, rng, perm_o, batch, steps, rounds, torch_side)
    flop = train_flops(net.graph, batch)
    gf = flop / res["cnncalc_ms"] * 1e-6
    line += f"\n  {flop / 1e9:.2f} GFLOP/step: cnncalc {gf:.1f} GFLOP/s ({100 * gf / ceiling:.0f}% of peak)"
    res["gflops"] = gf
    if "torch_ms" in res:
        tg = flop / res["torch_ms"] * 1e-6
        line += f", torch {tg:.1f} GFLOP/s ({100 * tg / ceiling:.0f}%)"
        res["torch_gflops"] = tg
    print(line, flush=True)
    return res


# --------------------------------------------------------------------------------- contention
BUSY = "while True: pass"   # the competing process: one core's worth of pure-Python spinning


def synthetic_set(shape, n, rng):
    """Class-dependent images (the loss keeps moving; not a few repeated batches), drawn from
    the generator ``rng``."""
    y = rng.integers(0, 10, n)
    proto = rng.standard_normal((10, *shape)).astype(np.float32)
    x = proto[y] + rng.standard_normal((n, *shape)).astype(np.float32) * 2.0
    return x, y


def engine_step(spec, batch, n=2048, threads=None):
    """A cnncalc training step (forward, backward, Adam) on the next batch of a streamed
    synthetic set, without PyTorch: ``step()``, with ``step.network`` (for benches that look
    inside the step) and ``step.data`` (the set). ``threads``: the engine's (default
    ``THREADS``)."""
    import cnncalc
    from cnncalc import optim

    net = cnncalc.Network(ROOT / "specs" / f"{spec}.yaml", dtype="float32",
                          threads=THREADS if threads is None else threads)
    xtr, ytr = synthetic_set(net.graph.input_shape, n, np.random.default_rng(2))
    opt = optim.create("adam", lr=1e-3)
    xb = np.empty((batch, *xtr.shape[1:]), np.float32)
    pos = [0]
    P, G = {"all": net.flat_params}, {"all": net.flat_grads}

    def ours():
        i = pos[0] = (pos[0] + batch) % (n - batch)
        np.take(xtr, np.arange(i, i + batch), axis=0, out=xb)
        net.loss_and_grads(xb, ytr[i:i + batch])
        with net.thread_state():
            opt.step(P, G, run=net.parallel, compiled=True)

    ours.network = net
    ours.data = xtr, ytr
    return ours


def step_closures(spec, batch, n=2048, threads=None):
    """(cnncalc step, PyTorch step): :func:`engine_step` and the same step in PyTorch; the two
    models start from the same weights."""
    import torch
    import torch.nn.functional as F

    ours = engine_step(spec, batch, n, threads)
    xtr, ytr = ours.data
    tm = torch_from_network(ours.network)
    topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    pos = [0]

    def theirs():
        i = pos[0] = (pos[0] + batch) % (n - batch)
        topt.zero_grad(set_to_none=True)
        F.cross_entropy(tm(xt[i:i + batch]), yt[i:i + batch]).backward()
        topt.step()

    return ours, theirs


def bench_contention(specs, rounds, torch_on, batch=64):
    """Step time with and without one competing busy process (SIGSTOP/SIGCONT between
    phases), cnncalc and PyTorch alternating: degradation = contended / uncontended median."""
    import signal

    if not torch_on:
        print("\n(contention: needs torch for the comparison; skipped)")
        return {}
    print(f"\n== contention: training step (batch {batch}, {THREADS} threads) alone and beside "
          f"one busy process ({BUSY!r}) ==")
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    os.kill(busy.pid, signal.SIGSTOP)
    res = {}
    try:
        for spec in specs:
            ours, theirs = step_closures(spec, batch)
            steps = max(2, NETS.get(spec, 50) // 2)
            for f in (ours, theirs, ours, theirs):  # warm-up (compiles, allocates)
                f()
            t = {(who, st): [] for who in ("cnncalc", "torch") for st in ("alone", "busy")}
            for _ in range(rounds):
                for st in ("alone", "busy"):
                    os.kill(busy.pid, signal.SIGCONT if st == "busy" else signal.SIGSTOP)
                    for who, f in (("cnncalc", ours), ("torch", theirs)):
                        time.sleep(SETTLE)
                        for _ in range(steps):
                            s0 = time.perf_counter()
                            f()
                            t[who, st].append(time.perf_counter() - s0)
            os.kill(busy.pid, signal.SIGSTOP)
            m = {k: med(v) * 1e3 for k, v in t.items()}
            deg = {who: m[who, "busy"] / m[who, "alone"] for who in ("cnncalc", "torch")}
            res[spec] = {"ms": {f"{a}/{b}": v for (a, b), v in m.items()}, "degradation": deg}
            print(f"{spec:15s} cnncalc {m['cnncalc', 'alone']:7.2f} -> {m['cnncalc', 'busy']:7.2f}"
                  f" ms ({deg['cnncalc']:.2f}x) | torch {m['torch', 'alone']:7.2f} -> "
                  f"{m['torch', 'busy']:7.2f} ms ({deg['torch']:.2f}x) | ratio alone "
                  f"{m['torch', 'alone'] / m['cnncalc', 'alone']:.2f}x, busy "
                  f"{m['torch', 'busy'] / m['cnncalc', 'busy']:.2f}x torch", flush=True)
    finally:
        os.kill(busy.pid, signal.SIGCONT)
        busy.kill()
        busy.wait()
    return res


# ----------------------------------------------------------------------------------- start-up
_CHILD = r"""
import time, sys
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {root!r})
from numba.core import event
compiles = []
class _Compiles(event.Listener):
    def on_start(self, ev):
        compiles.append(ev.data["dispatcher"])
    def on_end(self, ev):
        pass
event.register("numba:compile", _Compiles())
import cnncalc
from cnncalc import optim
net = cnncalc.Network({spec!r}, dtype="float32", threads={threads})
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x = rng.standard_normal(({batch}, *net.graph.input_shape)).astype(np.float32)
y = rng.integers(0, 10, {batch})
opt = optim.create("momentum", lr=0.05, momentum=0.9)
net.loss_and_grads(x, y)
opt.step({{"all": net.flat_params}}, {{"all": net.flat_grads}})
t2 = time.perf_counter()
import resource
def hwm():
    try:
        for ln in open("/proc/self/status"):
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
    except OSError:
        pass
    return -1
print("RESULT", t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm(),
      len(compiles), sum(bool(d.targetoptions.get("parallel")) for d in compiles))
"""


def run_child(code: str, env=None) -> tuple[float, list[str]]:
    s = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=str(ROOT), check=False)
    wall = time.perf_counter() - s
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return wall, line.split()[1:]


def bench_startup():
    res = {}
    for spec in ("lenet5", "cifar_bn"):
        print(f"\n== start-up: process start -> first {spec} training step done (batch 64) ==")
        code = _CHILD.format(root=str(ROOT), spec=str(ROOT / "specs" / f"{spec}.yaml"),
                             threads=THREADS, batch=64)
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, CNNCALC_CACHE_DIR=tmp,
                       NUMBA_CACHE_DIR=os.path.join(tmp, "nb"))
            for label in ("first call (empty caches)", "cached (second process)"):
                wall, (imp, step, _, _, nc, npar) = run_child(code, env)
                res[f"{spec}: {label}"] = wall
                print(f"  {label:27s}: {wall:6.2f} s  (import+Network {float(imp):.2f} s, "
                      f"first step {float(step):.2f} s; {nc} numba compilations, {npar} "
                      f"parallel)")
    return res


_TORCH_CHILD = r"""
import time, sys, resource
sys.path.insert(0, {bench!r})
sys.path.insert(0, {root!r})
import torch, torch.nn.functional as F
torch.set_num_threads({threads})
import cnncalc
from bench_engine import torch_from_graph
g = cnncalc.load({spec!r})
m = torch_from_graph(g)
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
x = torch.randn({batch}, *g.input_shape)
y = torch.randint(0, 10, ({batch},))
for _ in range(3):
    opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step()
hwm = [int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
print("RESULT 0 0", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, (hwm or [-1])[0])
"""


def bench_rss(torch_on: bool, specs=("lenet5", *NETS), batch=64):
    """Peak RSS of a training step (batch ``batch``, momentum SGD) per spec, cnncalc and PyTorch
    each in a fresh subprocess. Run before this process loads torch or the data: Linux keeps
    ru_maxrss across fork+exec, so a child reports at least its parent's peak. VmHWM (/proc) has
    no such inheritance and is the figure compared."""
    print(f"\n== peak RSS (VmHWM) of a batch-{batch} training step (separate processes) ==")
    base_code = (f"import resource, numpy, sys; sys.path.insert(0, {str(ROOT)!r}); "
                 "import cnncalc; "
                 "from cnncalc.kernels import _jit; import numba\n"
                 "h = [int(l.split()[1]) for l in open('/proc/self/status') "
                 "if l.startswith('VmHWM:')]\n"
                 "print('RESULT 0 0', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
                 "(h or [-1])[0])")
    _, (_, _, _, base_hwm) = run_child(base_code)
    mib = lambda v: int(v) / 1024
    print(f"  (just importing numpy+numba+cnncalc: {mib(base_hwm):.1f} MiB)")
    res = {}
    for spec in specs:
        path = str(ROOT / "specs" / f"{spec}.yaml")
        code = _CHILD.format(root=str(ROOT), spec=path, threads=THREADS, batch=batch)
        _, (_, _, rss, hwm, *_) = run_child(code)
        r = res[spec] = {"cnncalc_MiB": mib(hwm)}
        line = f"  {spec:15s} cnncalc {mib(hwm):7.1f} MiB"
        if torch_on:
            tcode = _TORCH_CHILD.format(bench=str(ROOT / "bench"), root=str(ROOT), spec=path,
                                        threads=THREADS, batch=batch)
            _, (_, _, trss, thwm) = run_child(tcode)
            r["torch_MiB"] = mib(thwm)
            line += f" | torch {mib(thwm):7.1f} MiB | cnncalc / torch {int(hwm) / int(thwm):.2f}"
        print(line, flush=True)
    return res


def main():
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8, help="alternations per batch size")
    ap.add_argument("--steps", type=int, default=25, help="steps per round and framework")
    ap.add_argument("--conv-reps", type=int, default=7)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no conv layers")
    ap.add_argument("--no-startup", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--no-conv", action="store_true")
    ap.add_argument("--no-cifar", action="store_true")
    ap.add_argument("--only", choices=["conv", "cifar", "rss"],
                    help="run only the conv layers, only the generic-plan nets' steps (no "
                         "subprocesses) or only the peak-RSS subprocesses")
    ap.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS),
                    help="generic-plan nets for the training-step section")
    ap.add_argument("--contention", nargs="*", metavar="SPEC",
                    help="only the contention section: step times alone and beside a busy "
                         "process, for these specs (default: lenet5 and the generic-plan nets)")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="threads of both frameworks (1 compares the kernels without "
                         "synchronisation: steadier on a loaded machine)")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--engine-threads", type=int, default=None,
                    help="cnncalc's threads for the LeNet-5 steps (1: no data parallelism)")
    ap.add_argument("--no-flush", action="store_true",
                    help="LeNet-5 steps without flush-to-zero (denormals cost)")
    args = ap.parse_args()
    THREADS = args.threads
    if args.quick:
        args.rounds, args.steps, args.no_conv = 4, 20, True

    # this process is a benchmark, not a library user: BLAS at one thread throughout, as the
    # engine has it during its calls (torch's own pool is set below)
    limit_blas_threads()
    torch_on = have_torch()
    out = {}
    if args.only == "rss":
        out["rss"] = bench_rss(torch_on)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return
    # subprocess measurements first, while this process is still small (see bench_rss)
    if args.only or args.contention is not None:
        args.no_rss = args.no_startup = True
    if not args.no_rss:
        out["rss"] = bench_rss(torch_on)
    if not args.no_startup:
        out["startup_s"] = bench_startup()
    if torch_on:
        import torch

        torch.set_num_threads(THREADS)
    import numba

    print(f"\ncnncalc engine benchmark: numba {numba.__version__}, numpy {np.__version__}, "
          + (f"torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch_on
             else "torch not installed (its columns are skipped)")
          + f"; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ceiling, how = ceiling_gflops()
    out["ceiling_gflops"] = ceiling
    print(f"practical ceiling: {ceiling:.0f} GFLOP/s float32 matmul, {THREADS} threads ({how})")
    if args.contention is not None:
        out["contention"] = bench_contention(args.contention or ["lenet5", *NETS], args.rounds,
                                             torch_on)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return
    xtr, ytr, note = load_mnist()
    print(f"data: {note}")
    if args.only is None:
        out["lenet"] = bench_lenet(args.batches, args.rounds, args.steps, torch_on, xtr, ytr,
                                   ceiling, args.engine_threads or THREADS, not args.no_flush)
        out["chain_kernels_us"] = bench_chain_kernels(xtr, ytr, ceiling, torch_on)
    if not args.no_conv and args.only in (None, "conv"):
        out["conv"] = bench_convs(args.conv_reps, ceiling, torch_on)
    if not args.no_cifar and args.only in (None, "cifar"):
        for spec in args.nets:
            out[spec] = bench_net(spec, args.rounds, max(2, NETS[spec] * args.steps // 25),
                                  torch_on, ceiling)
    if torch_on and "lenet" in out:
        print("\nsummary: " + "; ".join(
            f"batch {b}: {r['torch_ms'] / r['cnncalc_ms']:.2f}x PyTorch's throughput "
            f"({b / r['cnncalc_ms'] * 1e3:.0f} vs {b / r['torch_ms'] * 1e3:.0f} img/s)"
            for b, r in out["lenet"].items()))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
