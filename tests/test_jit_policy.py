"""The numba flag policy, checked on every dispatcher in cnncalc.kernels and its subpackages:
safe fastmath only (never nnan/ninf), every kernel serial and cached (no prange kernels)."""
import importlib
import os
import pathlib
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
    assert not opts.get("parallel"), f"{name}: no prange kernels (the engine never runs them)"
    assert cached, f"{name}: kernels must use cache=True"


def test_only_kernels_import_numba():
    root = pathlib.Path(cnncalc.kernels.__file__).parent.parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "kernels" not in p.parts and "import numba" in p.read_text()]
    assert offenders == []


def test_importing_the_engine_changes_no_process_state():
    """No environment variable, no flush-to-zero, no BLAS thread count is set at import."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import importlib, os, pkgutil
        import numpy as np
        from threadpoolctl import threadpool_info   # sets KMP_DUPLICATE_LIB_OK itself
        before = dict(os.environ)
        blas = sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        import cnncalc.kernels, cnncalc.engine.network, cnncalc.engine.init
        for info in pkgutil.walk_packages(cnncalc.kernels.__path__, "cnncalc.kernels."):
            importlib.import_module(info.name)
        assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
        tiny = np.float32(np.finfo(np.float32).tiny)
        assert tiny * np.float32(0.5) != 0, "flush-to-zero switched on at import"
        after = sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        assert after[:len(blas)] == blas, (blas, after)
    """)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=pathlib.Path(cnncalc.kernels.__file__).parents[2])
