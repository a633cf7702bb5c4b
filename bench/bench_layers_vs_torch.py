"""Where a net's training step spends its time, layer kind by layer kind, against PyTorch:
the convolutions grouped by (input, weight) shape and everything else by kind, cnncalc's ops
(2 threads, batch 64, float32, forward and backward timed around each op of real steps) beside
PyTorch's operators in the same process (``torch.profiler`` self time of real steps, grouped
by input shape), milliseconds per step.

Run: ``python bench/bench_layers_vs_torch.py [--spec resnet20_cifar] [--steps 10]``.
The fast-path README's "Levers left" cites it. Both sides are measured in one run, but one
after the other: on a shared machine compare the ratios of a run, not runs.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time

from bench_engine import THREADS, step_closures


def _ours(net, step, steps):
    """{(kind, shape key): [forward ms, backward ms, layers]} per step, from real steps."""
    fwd, bwd = collections.defaultdict(float), collections.defaultdict(float)
    layers = collections.Counter()
    for st in net.steps:
        op = st.op
        kind = st.fused or op.kind
        if kind == "conv":
            key = (kind, f"{tuple(op.node.in_shape)} w{tuple(op.params['weight'].shape)}")
        else:
            key = (kind, "")
        layers[key] += 1

        def timed(fn, acc, key=key):
            def call(*a, **k):
                t = time.perf_counter()
                r = fn(*a, **k)
                acc[key] += time.perf_counter() - t
                return r
            return call

        op.forward, op.backward = timed(op.forward, fwd), timed(op.backward, bwd)
    for _ in range(2):
        step()
    fwd.clear()
    bwd.clear()
    for _ in range(steps):
        step()
    return {k: [fwd[k] / steps * 1e3, bwd[k] / steps * 1e3, layers[k]] for k in layers}


def _theirs(step, steps):
    """{(aten op, input shapes): ms per step} from torch.profiler's self times."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    out = {}
    for e in prof.key_averages(group_by_input_shape=True):
        if e.self_cpu_time_total > 0:
            out[(e.key, str(e.input_shapes[:2]))] = e.self_cpu_time_total / steps / 1e3
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="resnet20_cifar")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    ours_step, theirs_step = step_closures(args.spec, 64)
    ours = _ours(ours_step.network, ours_step, args.steps)
    theirs = _theirs(theirs_step, args.steps)
    print(f"== {args.spec}: ms per training step (batch 64, float32, {THREADS} threads) ==")
    print(f"{'cnncalc op (layers)':58s} {'fwd':>7s} {'bwd':>7s}")
    for (kind, shape), (f, b, n) in sorted(ours.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        print(f"{kind + ' ' + shape + f' (x{n})':58s} {f:7.2f} {b:7.2f}")
    total = sum(f + b for f, b, _ in ours.values())
    print(f"{'all ops':58s} {total:15.2f}")
    print(f"\n{'PyTorch operator, input shapes':90s} {'self ms':>8s}")
    for (name, shapes), ms in sorted(theirs.items(), key=lambda kv: -kv[1])[:24]:
        print(f"{name + ' ' + shapes:90s} {ms:8.2f}")
    print(f"{'all operators':90s} {sum(theirs.values()):8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
