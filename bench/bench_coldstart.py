"""Benchmark: `cnncalc train` on a cold cache against the same command warm, in one run.

Each round runs the command in subprocesses:

1. **cold**: ``CNNCALC_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` point at fresh empty folders (a fresh
   install, as far as compiled code goes). The run probes, finds no cached kernels, trains on the
   NumPy tier and leaves a background process compiling (``cnncalc.train.kernels``).
2. the bench waits for that background compile (its time is printed; it is not part of any
   command's wall time),
3. **warm**: the same command with the same (now filled) caches.
4. with ``--baseline``: **cold, --compile wait** on another fresh cache: the old behaviour
   (compile in the process before the first step).

Printed per run: wall time, and the run's own breakdown from ``--format json``'s end event
(``timings``: data, compile (compiling or loading kernels in the process), train (the epochs),
eval); "start-up" is the rest (interpreter, imports, CLI, network build, writing outputs);
imports alone are measured by a separate ``python -c "import ..."``. The ratio cold / warm is
the goal's number (issue: at most 2x). Quote medians over rounds and note ``uptime``: the
machines are shared.

  python bench/bench_coldstart.py                       # LeNet-5, 1 epoch, 2 rounds
  python bench/bench_coldstart.py --rounds 3 --baseline
  python bench/bench_coldstart.py --spec specs/cifar_bn.yaml --args "--data synthetic:512"
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IMPORTS = ("import cnncalc.cli.app, cnncalc.cli.train, cnncalc.train.trainer, "
           "cnncalc.engine.network")


def _env(cache: Path) -> dict:
    env = dict(os.environ, CNNCALC_CACHE_DIR=str(cache), NUMBA_CACHE_DIR=str(cache / "numba"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _train(spec: str, extra: list[str], cache: Path) -> dict:
    cmd = [sys.executable, "-m", "cnncalc", "train", spec, "--format", "json", *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=_env(cache), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{shlex.join(cmd)} failed:\n{out.stderr}")
    end = json.loads(out.stdout.strip().splitlines()[-1])
    t = end["timings"]
    accounted = t["data"] + t["compile"] + t["train"] + t["eval"]
    return {"wall": wall, **t, "start-up": wall - accounted, "test_acc": end["test_acc"],
            "said": [ln for ln in out.stderr.splitlines() if ln.strip()]}


def _background_pids(cache: Path) -> list[int]:
    """Processes whose command line names ``cache`` (the background compile of a cold run)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "cnncalc.engine.warmup" in cmdline and str(cache) in cmdline:
            pids.append(int(proc.name))
    return pids


def _wait_background(cache: Path, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while _background_pids(cache) and time.perf_counter() - t0 < timeout:
        time.sleep(0.1)
    return time.perf_counter() - t0


def _imports(cache: Path) -> float:
    code = f"import time; t = time.perf_counter(); {IMPORTS}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(cache), cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _row(name: str, r: dict) -> str:
    return (f"{name:<20} {r['wall']:6.2f} {r['start-up']:8.2f} {r['data']:6.2f} "
            f"{r['compile']:8.2f} {r['train']:6.2f} {r['eval']:6.2f}  {r['start']:<10} "
            f"{r['tier']:<8} {r['test_acc']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="specs/lenet5.yaml")
    ap.add_argument("--args", default="--epochs 1", help="extra `cnncalc train` arguments")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline", action="store_true",
                    help="also run cold with --compile wait (the old behaviour)")
    a = ap.parse_args()
    extra = shlex.split(a.args)
    print(f"cnncalc train {a.spec} {a.args}   (uptime: {os.getloadavg()[0]:.2f} load)")
    head = (f"{'run':<20} {'wall':>6} {'start-up':>8} {'data':>6} {'compile':>8} {'train':>6} "
            f"{'eval':>6}  {'start':<10} {'tier':<8} acc")
    ratios, colds, warms, backgrounds, imports = [], [], [], [], []
    for rnd in range(a.rounds):
        with tempfile.TemporaryDirectory(prefix="cnncalc-cold-") as tmp:
            cache = Path(tmp) / "cache"
            cold = _train(a.spec, extra, cache)
            background = _wait_background(cache)
            warm = _train(a.spec, extra, cache)
            imports.append(_imports(cache))
            print(f"\nround {rnd + 1}\n{head}")
            print(_row("cold", cold))
            print(_row("warm", warm))
            print(f"  background compile finished {background:.1f} s after the cold run ended")
            for line in cold["said"]:
                print(f"  cold run said: {line}")
            colds.append(cold["wall"])
            warms.append(warm["wall"])
            ratios.append(cold["wall"] / warm["wall"])
            backgrounds.append(background)
        if a.baseline:
            with tempfile.TemporaryDirectory(prefix="cnncalc-cold-") as tmp:
                base = _train(a.spec, [*extra, "--compile", "wait"], Path(tmp) / "cache")
                print(_row("cold --compile wait", base))
                print(f"  (old behaviour) cold-wait / warm = {base['wall'] / warm['wall']:.2f}x")
    print(f"\nmedian over {a.rounds} round(s): cold {statistics.median(colds):.2f} s, "
          f"warm {statistics.median(warms):.2f} s, cold / warm = "
          f"{statistics.median(ratios):.2f}x (goal: <= 2x); imports alone "
          f"{statistics.median(imports):.2f} s; background compile ran "
          f"{statistics.median(backgrounds):.1f} s past the cold run")


if __name__ == "__main__":
    main()
