"""How fast is `cnncalc analyze`? Times whole CLI processes, and the library on a generated
1,000-layer spec, against `python -c pass` measured in the same run (the interpreter's own
start-up is the floor no CLI can beat). Then times building the graph of 10,000- and
50,000-layer specs: with linear building the time per layer stays flat as the spec grows.

    python bench/bench_analyze.py [--repeat 7] [--sizes 10000 50000]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def deep_spec(n_layers: int) -> str:
    lines = ["name: deep", "input: 64x64x16", "layers:"]
    for i in range(n_layers // 2):
        lines.append("  - conv: {filters: 16, size: 3, pad: 1}")
        lines.append("  - relu")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000],
                    help="layer counts for the graph-building scaling lines")
    args = ap.parse_args()
    # time this checkout's cnncalc (as `python -m cnncalc` from ROOT does), not an installed one
    sys.path.insert(0, str(ROOT))
    py = sys.executable
    floor = wall([py, "-c", "pass"], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        deep = Path(tmp) / "deep1000.yaml"
        deep.write_text(deep_spec(1000))
        cases = [("vgg16", ROOT / "specs" / "vgg16.yaml"), ("resnet18", ROOT / "specs" /
                 "resnet18.yaml"), ("1000 layers", deep)]
        print(f"python -c pass: {floor * 1000:.0f} ms (interpreter floor)")
        print(f"{'spec':<14}{'cli ms':>9}{'cli - floor':>13}{'library ms':>12}")
        import cnncalc
        for label, path in cases:
            cli = wall([py, "-m", "cnncalc", "analyze", str(path)], args.repeat)
            lib = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                cnncalc.load(path).analyze()
                lib.append(time.perf_counter() - t0)
            print(f"{label:<14}{cli * 1000:>9.0f}{(cli - floor) * 1000:>13.0f}"
                  f"{statistics.median(lib) * 1000:>12.1f}")
    scaling(args.sizes)
    print("numba imported by analyze:", "numba" in sys.modules)


def scaling(sizes: list[int]) -> None:
    """Seconds to load (parse, expand, connect) and analyze ``n`` layers, once each."""
    import cnncalc
    if not sizes:
        return
    print(f"{'layers':<14}{'load s':>9}{'analyze s':>11}{'load us/layer':>15}")
    for n in sizes:
        text = deep_spec(n)
        t0 = time.perf_counter()
        graph = cnncalc.load(text)
        t1 = time.perf_counter()
        graph.analyze()
        t2 = time.perf_counter()
        print(f"{n:<14,}{t1 - t0:>9.2f}{t2 - t1:>11.2f}{(t1 - t0) / n * 1e6:>15.0f}")


if __name__ == "__main__":
    main()
