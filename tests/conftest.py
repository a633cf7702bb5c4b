import os
from pathlib import Path

import pytest

# Rich fixes the console width when it is created: pin it so table output is stable.
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("TERMINAL_WIDTH", "200")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def specs_dir() -> Path:
    return SPECS


def mnist_dir() -> Path | None:
    """Real MNIST for tests, from CNNCALC_MNIST_DIR (set by .ci/run); None when absent."""
    d = os.environ.get("CNNCALC_MNIST_DIR")
    if d and (Path(d) / "train-labels-idx1-ubyte.gz").exists():
        return Path(d)
    return None


def spec_text(input_, layers, name="t") -> str:
    """A spec's YAML from an input and a list of layer lines."""
    body = "\n".join(f"  - {line}" for line in layers)
    return f"name: {name}\ninput: {input_}\nlayers:\n{body}\n"
