"""The numba flag policy, checked on every dispatcher in cnncalc.kernels and its subpackages:
safe fastmath only (never nnan/ninf), serial kernels cached, parallel kernels never cached."""
import importlib
import pkgutil

import pytest

numba = pytest.importorskip("numba")

import cnncalc.kernels  # noqa: E402
from cnncalc.kernels._jit import SAFE_FASTMATH  # noqa: E402


def dispatchers():
    found = []
    for info in pkgutil.walk_packages(cnncalc.kernels.__path__, "cnncalc.kernels."):
        mod = importlib.import_module(info.name)
        short = info.name.removeprefix("cnncalc.kernels.")
        for name, obj in vars(mod).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.__module__ == mod.__name__:
                found.append((f"{short}.{name}", obj))
    return found


DISPATCHERS = dispatchers()


def test_kernels_exist():
    assert len(DISPATCHERS) > 20


@pytest.mark.parametrize("name,disp", DISPATCHERS, ids=[d[0] for d in DISPATCHERS])
def test_flag_policy(name, disp):
    opts = disp.targetoptions
    fastmath = opts.get("fastmath")
    assert fastmath is not True, f"{name}: bare fastmath=True deletes NaN checks"
    if fastmath:
        flags = set(fastmath)
        assert flags <= SAFE_FASTMATH, f"{name} uses unsafe fastmath {flags - SAFE_FASTMATH}"
    cached = type(disp._cache).__name__ != "NullCache"
    if opts.get("parallel"):
        assert not cached, f"{name}: parallel kernels must not be cached"
    else:
        assert cached, f"{name}: serial kernels must use cache=True"


def test_only_kernels_import_numba():
    import pathlib
    root = pathlib.Path(cnncalc.kernels.__file__).parent.parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "kernels" not in p.parts and "import numba" in p.read_text()]
    assert offenders == []
