"""Regenerate the report screenshots in docs/ (needs Debian's chromium package):

    python docs/make_screenshots.py

* docs/report_lenet5.png: a trained LeNet-5 checkpoint's report (3 epochs of synthetic data),
  top of the page: totals, the drawing, the receptive-field picker;
* docs/report_lenet5_training.png: the same report's training curves and confusion matrix;
* docs/report_resnet18.png: ResNet-18's drawing, wrapped into lines, in the dark scheme.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnncalc.report.browser import Browser  # noqa: E402


def cnncalc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cnncalc", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "lenet_run"
        cnncalc("train", "specs/lenet5.yaml", "--data", "synthetic:600", "--epochs", "3",
                "--seed", "0", "--deterministic", "--out", str(run))
        resnet = Path(tmp) / "resnet18.html"
        cnncalc("report", "specs/resnet18.yaml", "-o", str(resnet))
        with Browser() as b:
            b.open(run / "report.html", width=1280, height=1100)
            b.screenshot(docs / "report_lenet5.png")
            b.eval("document.getElementById('training').scrollIntoView()")
            b.screenshot(docs / "report_lenet5_training.png")
            b.open(resnet, width=1280, height=1100, dark=True)
            b.eval("document.getElementById('architecture').scrollIntoView()")
            b.screenshot(docs / "report_resnet18.png")
    for name in ("report_lenet5.png", "report_lenet5_training.png", "report_resnet18.png"):
        print(f"docs/{name}: {(docs / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
