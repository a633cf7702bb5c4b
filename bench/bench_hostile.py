"""How fast are hostile inputs answered? Times whole `cnncalc analyze` processes on generated
5 MB specs (one line of layers, one huge string, many lines, a huge comment) against
`python -c pass` in the same run; each should be answered (or refused) within 2 seconds.

    python bench/bench_hostile.py [--repeat 3] [--mb 5]
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


def cases(size: int) -> dict[str, str]:
    """Spec texts of about ``size`` characters."""
    layer = "{conv: {filters: 2, size: 1}}, relu, "
    lines = "  - conv: {filters: 2, size: 1}\n  - relu\n"
    return {
        "one-line layers": "{name: big, input: 8x8x1, layers: ["
                           + layer * (size // len(layer)) + "relu]}\n",
        "one-line string": "{name: '" + "x" * size + "', input: 8x8x1, layers: [relu]}\n",
        "one-line blanks": "{name: w, input: 8x8x1, layers: [" + " " * size + "relu]}\n",
        "many lines": "name: big\ninput: 8x8x1\nlayers:\n" + lines * (size // len(lines)),
        "huge comment": "name: big\ninput: 8x8x1\nlayers: [relu]\n# " + "x" * size + "\n",
    }


def wall(cmd: list[str], repeat: int) -> tuple[float, int, int]:
    """Median seconds, the exit code and the output's size in bytes."""
    times, code, size = [], 0, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        code, size = r.returncode, len(r.stdout) + len(r.stderr)
    return statistics.median(times), code, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mb", type=float, default=5.0, help="size of each spec in MB")
    args = ap.parse_args()
    py = sys.executable
    floor, _, _ = wall([py, "-c", "pass"], args.repeat)
    print(f"python -c pass: {floor:.2f} s (interpreter floor)")
    print(f"{'spec':<18}{'MB':>6}{'seconds':>9}{'exit':>6}{'output bytes':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, text in cases(int(args.mb * 1e6)).items():
            path = Path(tmp) / "spec.yaml"
            path.write_text(text)
            seconds, code, size = wall([py, "-m", "cnncalc", "analyze", str(path)], args.repeat)
            print(f"{label:<18}{len(text) / 1e6:>6.1f}{seconds:>9.2f}{code:>6}{size:>14,}")


if __name__ == "__main__":
    main()
