import os
from pathlib import Path

import pytest
from reference import spec_text  # noqa: F401  (test modules import it from here)

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


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory) -> Path:
    """A LeNet-5 run of `cnncalc train --out DIR` (2 epochs of synthetic data); returns DIR,
    which holds last.npz, metrics.csv and report.html."""
    from typer.testing import CliRunner

    from cnncalc.cli.app import app

    out = tmp_path_factory.mktemp("lenet_run")
    r = CliRunner().invoke(app, ["train", str(SPECS / "lenet5.yaml"), "--data", "synthetic:300",
                                 "--epochs", "2", "--deterministic", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session", autouse=True)
def no_background_compile_left():
    """On a cold kernel cache a training run compiles in a detached background process
    (cnncalc.engine.warmup): the session waits for every one it started, so none outlives it."""
    yield
    import sys

    warmup = sys.modules.get("cnncalc.engine.warmup")
    if warmup is not None:
        warmup.BackgroundCompile.wait_all(timeout=600)
