"""Golden test: the generated source of one small chain, byte for byte.

A change to the generator (``cnncalc.kernels.fast.gen``) shows up here as a reviewable diff of
``tests/golden/tiny_chain.py.txt``. After an intended change, regenerate the file with::

    CNNCALC_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden_gen.py

and commit it with the generator change.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from reference import spec_text

from cnncalc.spec import load

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_chain.py.txt"

# conv 3x3 (1 -> 2, pad 1; the direct kernel) -> relu -> maxpool 2, conv 3x3 (2 -> 3, pad 1; the
# GEMM kernel) -> relu -> maxpool 2, fc 12 -> 4 -> relu, fc 4 -> 3: both block kinds, both fc kinds
TINY = spec_text("8x8x1", [
    "conv: {filters: 2, size: 3, pad: 1}", "relu", "maxpool: {size: 2}",
    "conv: {filters: 3, size: 3, pad: 1}", "relu", "maxpool: {size: 2}",
    "flatten", "fc: {units: 4}", "relu", "fc: {units: 3}"], name="tiny_chain")


def tiny_chain_spec():
    from cnncalc.engine.plan import find_chain

    graph = load(TINY)
    offsets, off = {}, 0
    for key, shape in graph.param_shapes().items():   # the Network's flat-buffer order
        offsets[key] = off
        off += math.prod(shape)
    spec = find_chain(graph, offsets, "float32")
    assert spec is not None, "the tiny network must be recognised as a chain"
    return spec


def test_generated_source_matches_golden():
    from cnncalc.kernels.fast.gen import generate

    spec = tiny_chain_spec()
    assert [spec.method(i) for i in range(len(spec.blocks))] == ["direct", "gemm"]
    src = generate(spec)
    if os.environ.get("CNNCALC_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(src)
    assert GOLDEN.exists(), f"no golden file; create it with CNNCALC_UPDATE_GOLDEN=1 ({GOLDEN})"
    assert src == GOLDEN.read_text(), (
        "the generated source changed; review the diff and, if intended, regenerate with "
        "CNNCALC_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden_gen.py")
