"""Upper bounds for a fusion: a net's training step with some of batch norm's kernels stubbed
out (their outputs left as they were, so the numbers the step computes are wrong, but its
memory traffic and its other work are the real ones), against the same step with all of
them, alternating in one run.

What a stubbed pass saves is the most that folding it into a neighbouring kernel can save:
the figures behind the fast-path README's "Levers left". Not a correctness path: nothing
here is used by the engine.

Run: ``python bench/bench_upper_bounds.py [--spec resnet20_cifar] [--rounds 6] [--steps 8]``
(float32, 2 threads, batch 64; medians and minima of the rounds).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import numpy as np

import cnncalc
from cnncalc.engine import ops


def _stub_sums(x3, shift, out):
    out[...] = 1.0


def _stub_grad_sums(dy3, x3, y3, mean, inv_std, relu, out, *rest, **kwargs):
    """The sums only (the residual form's ``g3`` and ``dy3b`` are left as they were)."""
    out[...] = 1.0


def _stub(*args, **kwargs):
    return None


def _relu_normalise_only_when_residual(real):
    """``bn_normalise`` that skips the ``batchnorm -> relu`` steps (no residual): the pass a
    fold into the next convolution's input transform would remove."""
    def normalise(x3, mean, inv_std, gamma, beta, relu, y3, s3=None):
        if relu and s3 is None:
            return None
        return real(x3, mean, inv_std, gamma, beta, relu, y3, s3)
    return normalise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="resnet20_cifar")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    real = {name: getattr(ops.knorm, name)
            for name in ("bn_sums", "bn_normalise", "bn_grad_sums", "bn_grad_input")}
    variants = {
        "all kernels": {},
        "no statistics pass (bn_sums)": {"bn_sums": _stub_sums},
        "no batchnorm->relu normalising pass": {
            "bn_normalise": _relu_normalise_only_when_residual(real["bn_normalise"])},
        "no bn_grad_sums": {"bn_grad_sums": _stub_grad_sums},
        "no bn_grad_input": {"bn_grad_input": _stub},
        "no batch-norm pass at all": {"bn_sums": _stub_sums, "bn_normalise": _stub,
                                      "bn_grad_sums": _stub_grad_sums, "bn_grad_input": _stub},
    }
    rng = np.random.default_rng(0)
    net = cnncalc.Network(pathlib.Path("specs") / f"{args.spec}.yaml", dtype="float32",
                          threads=2)
    x = rng.standard_normal((64, *net.graph.input_shape)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for _ in range(args.rounds):
            for name, patch in variants.items():
                # a stubbed step computes garbage (overflows included): only its time counts
                for kernel, fn in real.items():
                    setattr(ops.knorm, kernel, patch.get(kernel, fn))
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    net.loss_and_grads(x, labels)
                    t = time.perf_counter()
                    for _ in range(args.steps):
                        net.loss_and_grads(x, labels)
                    times[name].append((time.perf_counter() - t) / args.steps * 1e3)
    finally:
        for kernel, fn in real.items():
            setattr(ops.knorm, kernel, fn)
    print(f"== {args.spec}: training step without some of batch norm's passes (float32, 2 "
          f"threads, batch 64; {args.rounds} alternating rounds of {args.steps} steps) ==")
    base = float(np.median(times["all kernels"]))
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"{name:38s} median {med:7.1f} ms  min {min(ts):7.1f} ms  "
              f"(saves {base - med:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
