"""The upper-bounds bench (``bench/bench_upper_bounds.py``) swaps batch norm's kernels for
stubs; a stub that no longer takes the arguments the engine passes breaks the bench only when
someone runs it (it did once, after ``bn_grad_sums`` grew the residual form's arguments).
Here every stub must accept every way the real kernel can be called."""
from __future__ import annotations

import importlib.util
import inspect
import pathlib

import pytest

from cnncalc.kernels import norm

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_upper_bounds.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_upper_bounds", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _calls(kernel):
    """Positional argument lists for every call the real kernel accepts: its required
    parameters, then each optional one added in turn."""
    params = list(inspect.signature(kernel.py_func).parameters.values())
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    optional = [p.name for p in params if p.default is not inspect.Parameter.empty]
    return [required + optional[:k] for k in range(len(optional) + 1)]


@pytest.mark.parametrize("kernel, stub", [
    ("bn_sums", "_stub_sums"),
    ("bn_grad_sums", "_stub_grad_sums"),
    ("bn_normalise", "_stub"),
    ("bn_grad_input", "_stub"),
])
def test_stub_takes_the_kernels_arguments(kernel, stub):
    bench = _bench()
    sig = inspect.signature(getattr(bench, stub))
    for names in _calls(getattr(norm, kernel)):
        sig.bind(*names)   # raises TypeError where the stub would


def test_normalise_wrapper_takes_the_kernels_arguments():
    bench = _bench()
    wrapped = bench._relu_normalise_only_when_residual(norm.bn_normalise)
    sig = inspect.signature(wrapped)
    for names in _calls(norm.bn_normalise):
        sig.bind(*names)
