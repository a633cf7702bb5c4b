"""Data integrity: NaN/inf never pass silently (data, weights, every kernel, the divergence guard)."""
from __future__ import annotations

import numpy as np
import pytest
from reference import KINDS, case_spec

from cnncalc.engine.network import Network
from cnncalc.errors import DataError, TrainError

# a conv→relu→maxpool chain the planner runs on the generated fast path, and the same layers with
# a batchnorm in between so the step plan runs its fused conv+relu+maxpool and fc+relu ops
FAST_CHAIN = """name: chain
input: 12x12x1
layers:
  - conv: {filters: 3, size: 3, pad: 1}
  - relu
  - maxpool: {size: 2, stride: 2}
  - conv: {filters: 4, size: 3}
  - relu
  - maxpool: {size: 2, stride: 2}
  - flatten
  - fc: {units: 6}
  - relu
  - fc: {units: 3}
"""
FUSED_STEPS = FAST_CHAIN.replace("  - conv: {filters: 4", "  - batchnorm\n  - conv: {filters: 4")
NETWORKS = {f"kind:{k}": case_spec(k) for k in KINDS} | {"fast-chain": FAST_CHAIN,
                                                        "fused-steps": FUSED_STEPS}
# zeropad's border is zeros whatever the input: those outputs stay finite
PADDING = {"kind:zeropad"}


def _nan_batch(net, pattern: str) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((3, *net.graph.input_shape)).astype(net.dtype)
    if pattern == "all":
        x[0] = np.nan
    else:                       # every pixel of the first sample NaN except one finite column
        x[0] = np.nan
        x[0, :, :, 0] = 1.0
    return x


@pytest.mark.parametrize("fuse", [True, False], ids=["fuse", "nofuse"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_nan_input_gives_nan_output_on_every_path(name, fuse):
    net = Network(NETWORKS[name], seed=0, fuse=fuse, parallel=False)
    if name == "fast-chain":
        assert (net.fast_path is not None) == fuse
    for pattern in ("all", "mostly"):
        x = _nan_batch(net, pattern)
        y = net.forward(x, training=False).reshape(3, -1)
        nan_rows = np.isnan(y[0])
        if name in PADDING:
            assert nan_rows.any() and np.isfinite(y[1:]).all()
        elif pattern == "all" or name.startswith(("fast", "fused")):
            assert nan_rows.all(), f"{name} {pattern}: {y[0]}"
        else:
            assert nan_rows.any(), f"{name} {pattern}: {y[0]}"
        if name.startswith("kind:"):
            assert np.isfinite(y[1:]).all()  # other samples are untouched (no BN across batch here)


@pytest.mark.parametrize("fuse", [True, False], ids=["fuse", "nofuse"])
def test_nan_input_gives_nan_loss_and_gradients(fuse):
    net = Network(FAST_CHAIN, seed=0, fuse=fuse, parallel=False)
    x = _nan_batch(net, "all")
    y = np.array([0, 1, 2])
    assert np.isnan(net.loss(x, y)[0])
    assert np.isnan(net.loss_and_grads(x, y))
    assert np.isnan(net.flat_grads).any()


def test_fast_chain_matches_generic_with_inf_input():
    fast = Network(FAST_CHAIN, seed=0, fuse=True, parallel=False)
    slow = Network(FAST_CHAIN, seed=0, fuse=False, parallel=False)
    x = _nan_batch(fast, "all")
    x[0] = np.inf
    a, b = fast.forward(x, training=False), slow.forward(x, training=False)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[1:], b[1:], rtol=1e-4, atol=1e-5)
