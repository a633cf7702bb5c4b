"""How fast is `cnncalc analyze`? Times whole CLI processes, and the library on a generated
1,000-layer spec, against `python -c pass` measured in the same run (the interpreter's own
start-up is the floor no CLI can beat).

    python bench/bench_analyze.py [--repeat 7]
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
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    args = ap.parse_args()
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
    print("numba imported by analyze:", "numba" in sys.modules)


if __name__ == "__main__":
    main()
