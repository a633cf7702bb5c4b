"""Where a training step's time goes besides its kernels: the engine's two threads against one,
and the step's anatomy on the thread pool (issue 13). No PyTorch needed.

Run: ``python bench/bench_step_overheads.py [--spec resnet20_cifar] [--rounds 6] [--levers]
[--folds] [--plan]``

1. **Threads.** Steps of the same net built with 1 and with 2 threads (batch 64), alternating
   rounds in this process: the 2-thread efficiency ``T1 / (2 T2)``; and the same at batch 2,
   where the kernels do almost nothing: the step's fixed cost.
2. **Anatomy** (2 threads, batch 64). Every ``WorkerPool.run`` of real steps is timed, and
   each chunk's time on the thread that ran it, grouped by the op (kind, forward/backward)
   that called the pool:

   * *kernels*: the chunks' time summed over both threads, halved: what the run would take
     with its work shared perfectly;
   * *imbalance*: the busiest thread's chunk time minus that half (the last chunk's tail);
   * *hand-over*: the run's wall time minus its busiest thread's chunk time (posting the job,
     waking or joining the worker, waiting for the GIL);
   * *calling thread alone*: the step's time outside every pool run (the ops' Python and
     NumPy between their parallel parts, the network's loop, the loss), while the worker
     waits.

   The instrumentation adds a few microseconds per chunk, so the parts add up to a little more
   than an uninstrumented step.
3. **Levers** (``--levers``): settings of the pool swapped between alternating rounds of one
   process: chunks per thread (the engine's 2, against 1) and the interpreter's GIL
   switch interval (5 ms, the default, against 50 us).
4. **Folds** (``--folds``): the planner's ``batchnorm → relu`` folded into the next lanes
   convolution (``BatchNormOp.fold_into``) and undone, alternating rounds of one process:
   whole steps, and the forward and backward of the ops concerned (the folded batch norms and
   their convolutions) timed inside them.
5. **Plan** (``--plan``): three choices of the step plan undone one at a time and all
   together, alternating rounds of one process (:func:`plan_levers`).

Both sides of every comparison run in this process, alternating, on a shared machine: compare
the ratios of one run, not runs. The fast-path README's "Where the engine stands" cites it.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import threading
import time

from bench_engine import engine_step


def _median_steps(steps: dict, rounds: int, per_round: int = 5, setup=None) -> dict:
    """{name: median seconds} of ``steps`` {name: step()} run in alternating rounds;
    ``setup(name)`` before each name's round."""
    times = collections.defaultdict(list)
    for name, step in steps.items():     # warm: compile, buffers, caches
        if setup:
            setup(name)
        step()
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            if setup:
                setup(name)
            step()
            for _ in range(per_round):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def threads_and_fixed_cost(spec: str, rounds: int) -> None:
    print(f"== {spec}: 1 thread against 2, alternating rounds (median ms per step) ==")
    for batch in (64, 2):
        m = _median_steps({t: engine_step(spec, batch, n=1024, threads=t) for t in (1, 2)},
                          rounds)
        print(f"batch {batch:3d}: 1 thread {m[1] * 1e3:7.2f}, 2 threads {m[2] * 1e3:7.2f}: "
              f"2-thread efficiency {m[1] / (2 * m[2]):.2f}")


class _Anatomy:
    """Times every pool run (wall, and each chunk on its thread) and groups it by the op that
    called it; the calling thread's time outside the pool is the rest of the step."""

    def __init__(self, net):
        from cnncalc.kernels.fast import threads as th

        self.th, self.real_run = th, th.WorkerPool.run
        self.current = "other (optimizer, loss, gradient joins)"
        self.parts = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0])  # wall, half, max, n
        self.op_time = collections.defaultdict(float)   # the ops' calls, pool runs included
        self.in_pool = 0.0
        anatomy = self

        def run(pool, fn, n=None, flush=True):
            busy = collections.defaultdict(float)

            def chunk(i):
                t = time.perf_counter()
                try:
                    return fn(i)
                finally:
                    busy[threading.get_ident()] += time.perf_counter() - t

            t = time.perf_counter()
            out = anatomy.real_run(pool, chunk, n, flush)
            wall = time.perf_counter() - t
            part = anatomy.parts[anatomy.current]
            part[0] += wall
            part[1] += sum(busy.values()) / pool.threads
            part[2] += max(busy.values(), default=0.0)
            part[3] += 1
            anatomy.in_pool += wall
            return out

        self.run = run
        self.originals = []
        for st in net.steps:
            op = st.op
            kind = st.fused or op.kind
            for direction in ("forward", "backward"):
                fn = getattr(op, direction)
                self.originals.append((op, direction, fn))
                setattr(op, direction, self._labelled(fn, f"{kind} {direction}"))

    def _labelled(self, fn, label):
        def call(*a, **k):
            before, self.current = self.current, label
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.op_time[label] += time.perf_counter() - t
                self.current = before
        return call

    def __enter__(self):
        self.th.WorkerPool.run = self.run
        return self

    def __exit__(self, *exc):
        self.th.WorkerPool.run = self.real_run
        for op, direction, fn in self.originals:
            setattr(op, direction, fn)


def anatomy(spec: str, steps: int) -> None:
    step = engine_step(spec, 64, n=1024, threads=2)
    for _ in range(3):
        step()
    with _Anatomy(step.network) as an:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - t) / steps
    ms = 1e3 / steps
    print(f"\n== {spec}: anatomy of a step (2 threads, batch 64, {steps} steps), ms per step ==")
    print(f"{'caller of the pool':40s} {'runs':>5s} {'wall':>7s} {'kernels':>8s} "
          f"{'imbalance':>9s} {'hand-over':>9s} {'alone':>7s}")
    print("(alone: the op's time on the calling thread outside its pool runs, while the "
          "worker waits)")
    sums = [0.0] * 5
    labels = set(an.parts) | set(an.op_time)
    rows = []
    for label in labels:
        wall, half, busiest, n = an.parts.get(label, (0.0, 0.0, 0.0, 0))
        alone = max(an.op_time.get(label, 0.0) - wall, 0.0) if label in an.op_time else 0.0
        rows.append((label, n, (wall * ms, half * ms, (busiest - half) * ms,
                                (wall - busiest) * ms, alone * ms)))
    for label, n, row in sorted(rows, key=lambda r: -(r[2][0] + r[2][4])):
        sums = [a + b for a, b in zip(sums, row)]
        print(f"{label:40s} {n / steps:5.0f} {row[0]:7.2f} {row[1]:8.2f} {row[2]:9.2f} "
              f"{row[3]:9.2f} {row[4]:7.2f}")
    print(f"{'all ops':40s} {'':5s} {sums[0]:7.2f} {sums[1]:8.2f} {sums[2]:9.2f} "
          f"{sums[3]:9.2f} {sums[4]:7.2f}")
    alone = total * 1e3 - an.in_pool * ms
    print(f"calling thread alone (outside the pool): {alone:.2f}, of which outside every op "
          f"(the network's loops, the loss, the optimizer's serial parts): "
          f"{alone - sums[4]:.2f}; step {total * 1e3:.2f} (instrumented)")


def set_chunks_per_thread(per_thread: int | None) -> None:
    """The ops' batch chunks per thread (None: the engine's own). ``ops`` reads the constant
    at each call; ``split``'s default is bound at its definition, so ops gets a wrapper."""
    from cnncalc.engine import ops
    from cnncalc.kernels.fast import threads as th

    ops.CHUNKS_PER_THREAD = th.CHUNKS_PER_THREAD if per_thread is None else per_thread
    ops.split = (th.split if per_thread is None
                 else lambda n, threads, p=per_thread: th.split(n, threads, p))


def levers(spec: str, rounds: int) -> None:
    from cnncalc.kernels.fast import threads as th

    step = engine_step(spec, 64, n=1024, threads=2)
    settings = {f"{c} chunks per thread": c for c in (th.CHUNKS_PER_THREAD, 2, 1)}
    try:
        m = _median_steps({name: step for name in settings}, rounds,
                          setup=lambda name: set_chunks_per_thread(settings[name]))
    finally:
        set_chunks_per_thread(None)
    intervals = {"GIL switch interval 5 ms": 5e-3, "GIL switch interval 50 us": 5e-5}
    real_interval = sys.getswitchinterval()
    try:
        m.update(_median_steps({name: step for name in intervals}, rounds,
                               setup=lambda name: sys.setswitchinterval(intervals[name])))
    finally:
        sys.setswitchinterval(real_interval)
    print(f"\n== {spec}: levers, alternating rounds (2 threads, batch 64), median ms per step ==")
    for name, t in m.items():
        print(f"{name:40s} {t * 1e3:7.2f}")


def folds(spec: str, rounds: int) -> None:
    from cnncalc.engine.ops import BatchNormOp

    step = engine_step(spec, 64, n=1024, threads=2)
    pairs = [(st.op, st.op.folded_into) for st in step.network.steps
             if isinstance(st.op, BatchNormOp) and st.op.folded_into is not None]
    print(f"\n== {spec}: batch norm + ReLU folded into the next convolution ({len(pairs)} "
          f"folds) or not, alternating rounds (2 threads, batch 64), median ms per step ==")
    if not pairs:
        return
    spent = collections.defaultdict(float)
    for bn, conv in pairs:           # time the ops concerned inside the steps
        for op, who in ((bn, "batch norms"), (conv, "their convolutions")):
            for way in ("forward", "backward"):
                def timed(*a, real=getattr(op, way), key=f"{who} {way}"):
                    t = time.perf_counter()
                    r = real(*a)
                    spent[key] += time.perf_counter() - t
                    return r
                setattr(op, way, timed)

    def fold(name):
        on = name == "folded"
        for bn, conv in pairs:
            bn.folded_into, conv.input_bn = (conv, bn) if on else (None, None)

    parts = collections.defaultdict(list)

    def measured_step(name):
        def run():
            spent.clear()
            step()
            for key, v in spent.items():
                parts[(name, key)].append(v)
        return run

    try:
        m = _median_steps({name: measured_step(name) for name in ("not folded", "folded")},
                          rounds, setup=fold)
    finally:
        fold("folded")
    for name, t in m.items():
        print(f"{name:12s} step {t * 1e3:7.2f} | " + ", ".join(
            f"{key} {statistics.median(parts[(name, key)]) * 1e3:.2f}"
            for key in sorted({k for n, k in parts if n == name})))


def plan_levers(spec: str, rounds: int) -> None:
    """Three choices of the step plan swapped between alternating rounds of one process: a
    value's two gradient parts left to the ``batchnorm_add_relu`` backward that reads them
    (``Op.takes_gradient_parts``) or summed in a pass of their own; the Winograd weight
    transforms split over the threads from 2^18 values (``ops.MIN_WEIGHT_ELEMS``) or from 2^16;
    and convolutions that read one value run together (``plan._readers_together``) or in node
    order (a second network of the same weights)."""
    from cnncalc.engine import ops, plan

    together = engine_step(spec, 64, n=1024, threads=2)
    real_order = plan._readers_together
    plan._readers_together = list
    try:
        node_order = engine_step(spec, 64, n=1024, threads=2)
    finally:
        plan._readers_together = real_order
    takes = dict(together.network._takes_parts)
    engine_min = ops.MIN_WEIGHT_ELEMS
    settings = {   # name: (step, gradient parts, weight-transform split threshold)
        "the engine's plan": (together, True, engine_min),
        "parts summed in a pass of their own": (together, False, engine_min),
        "weight transforms split from 2^16": (together, True, 1 << 16),
        "convolutions in node order": (node_order, True, engine_min),
        "none of the three": (node_order, False, 1 << 16),
    }

    def setup(name):
        step, parts, threshold = settings[name]
        step.network._takes_parts = takes if parts else dict.fromkeys(takes, False)
        ops.MIN_WEIGHT_ELEMS = threshold

    try:
        m = _median_steps({name: settings[name][0] for name in settings}, rounds, setup=setup)
    finally:
        ops.MIN_WEIGHT_ELEMS = engine_min
        together.network._takes_parts = takes
    print(f"\n== {spec}: plan levers, alternating rounds (2 threads, batch 64), median ms per "
          f"step ==")
    for name, t in m.items():
        print(f"{name:40s} {t * 1e3:7.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="resnet20_cifar")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10, help="instrumented steps (anatomy)")
    ap.add_argument("--levers", action="store_true", help="also the in-process A/B of levers")
    ap.add_argument("--folds", action="store_true",
                    help="only the A/B of the batch norm folded into the next convolution")
    ap.add_argument("--plan", action="store_true",
                    help="only the A/B of the plan's gradient parts, serial weight transforms "
                         "and convolutions run together")
    args = ap.parse_args()
    if args.folds:
        folds(args.spec, args.rounds)
        return 0
    if args.plan:
        plan_levers(args.spec, args.rounds)
        return 0
    threads_and_fixed_cost(args.spec, args.rounds)
    anatomy(args.spec, args.steps)
    if args.levers:
        levers(args.spec, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
