"""Fused fast-path kernels against a plain-NumPy reference of the unfused sequence.

conv2d -> +bias -> ReLU -> maxpool2d (first max wins ties, as in PyTorch), fc (+ReLU), the generated
whole-chain kernels through the engine, and flush-to-zero in every numba thread.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from numpy.lib.stride_tricks import sliding_window_view

# --------------------------------------------------------------------------------------------
# plain-NumPy reference of the unfused sequence
# --------------------------------------------------------------------------------------------


def ref_conv(x, w, b, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    F = w.shape[2]
    win = sliding_window_view(xp, (F, F), axis=(2, 3))  # N, C, Ho, Wo, F, F
    return np.einsum("nchwij,kcij->nkhw", win, w) + b[None, :, None, None]


def ref_pool(a, pool):
    N, K, Ho, Wo = a.shape
    Hp, Wp = Ho // pool, Wo // pool
    win = a[:, :, :Hp * pool, :Wp * pool].reshape(N, K, Hp, pool, Wp, pool)
    win = win.transpose(0, 1, 2, 4, 3, 5).reshape(N, K, Hp, Wp, pool * pool)
    idx = win.argmax(-1)  # first maximum in row-major window order
    return np.take_along_axis(win, idx[..., None], -1)[..., 0], idx


def ref_forward(x, w, b, pad, pool):
    z = ref_conv(x, w, b, pad)
    r = np.maximum(z, 0)
    y, idx = ref_pool(r, pool)
    return y, (z, idx)


def ref_backward(dy, x, w, cache, pad, pool):
    z, idx = cache
    N, K, Ho, Wo = z.shape
    Hp, Wp = idx.shape[2:]
    dr = np.zeros_like(z)
    n, k, i, j = np.indices(idx.shape)
    dr[n, k, i * pool + idx // pool, j * pool + idx % pool] = dy
    dz = dr * (z > 0)
    F = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, (F, F), axis=(2, 3))
    dw = np.einsum("nchwij,nkhw->kcij", win, dz)
    db = dz.sum((0, 2, 3))
    # dx: full correlation of dz with the flipped kernel, then crop the padding
    dzp = np.pad(dz, ((0, 0), (0, 0), (F - 1, F - 1), (F - 1, F - 1)))
    wf = w[:, :, ::-1, ::-1]
    dwin = sliding_window_view(dzp, (F, F), axis=(2, 3))  # N, K, Hp', Wp', F, F
    dxp = np.einsum("nkhwij,kcij->nchw", dwin, wf)
    H, W = x.shape[2:]
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, db


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

SHAPES = {
    # name: (N, C, H, W, K, F, pad, pool)
    "lenet_conv1": (3, 1, 28, 28, 6, 5, 2, 2),
    "lenet_conv2": (3, 6, 14, 14, 16, 5, 0, 2),
    "odd": (2, 3, 10, 10, 4, 3, 1, 2),
    "odd_floor": (2, 2, 9, 11, 3, 3, 0, 3),
}


def make(shape, dtype, seed=0):
    N, C, H, W, K, F, pad, pool = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, F, F)) / np.sqrt(C * F * F)).astype(dtype)
    b = (0.1 * rng.standard_normal(K)).astype(dtype)
    Ho, Wo = H + 2 * pad - F + 1, W + 2 * pad - F + 1
    dy = rng.standard_normal((N, K, Ho // pool, Wo // pool)).astype(dtype)
    return x, w, b, dy, pad, pool


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)


def rel_err(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


# --------------------------------------------------------------------------------------------
# conv + ReLU + maxpool
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_conv_relu_maxpool_matches_reference(name, dtype):
    from cnncalc.kernels.fast import fused

    x, w, b, dy, pad, pool = make(SHAPES[name], dtype)
    y_ref, cache = ref_forward(*(a.astype(np.float64) for a in (x, w, b)), pad, pool)
    out_f, out_b = {}, {}
    for _ in range(2):  # second round reuses the buffers
        y, am = fused.conv_relu_maxpool_forward(x, w, b, pad, pool, out=out_f)
        assert y.dtype == dtype and am.dtype == np.int8
        np.testing.assert_allclose(y, y_ref, **tol(dtype))
        alive = y_ref > 0
        np.testing.assert_array_equal(am[alive], cache[1][alive])
        assert (am[~alive] == -1).all()
        for need_dx in (True, False):
            dx, dw, db = fused.conv_relu_maxpool_backward(dy, x, w, am, pad, pool, need_dx=need_dx,
                                                          out=out_b)
            dx_r, dw_r, db_r = ref_backward(dy.astype(np.float64), x.astype(np.float64),
                                            w.astype(np.float64), cache, pad, pool)
            assert dw.dtype == dtype and db.dtype == dtype
            np.testing.assert_allclose(dw, dw_r, **tol(dtype))
            np.testing.assert_allclose(db, db_r, **tol(dtype))
            if need_dx:
                np.testing.assert_allclose(dx, dx_r, **tol(dtype))
            else:
                assert dx is None


def test_ties_pick_first_max_and_dead_windows():
    from cnncalc.kernels.fast import fused

    # 1x1 conv with weight 1: the conv is the input itself
    x = np.array([[[[1.0, 1.0, -1.0, -2.0],
                    [0.5, 1.0, -3.0, 0.0],
                    [0.0, 2.0, 0.0, 0.0],
                    [2.0, 0.0, 0.0, 0.0]]]])
    w = np.ones((1, 1, 1, 1))
    b = np.zeros(1)
    y, am = fused.conv_relu_maxpool_forward(x, w, b, 0, 2)
    np.testing.assert_array_equal(y[0, 0], [[1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(am[0, 0], [[0, -1], [1, -1]])  # first of tied 1.0/2.0; <=0 dead
    dx, dw, db = fused.conv_relu_maxpool_backward(np.ones((1, 1, 2, 2)), x, w, am, 0, 2)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    assert db[0] == 2.0 and dw[0, 0, 0, 0] == 3.0


def test_gradient_centered_differences():
    """float64 finite differences on a tiny tie-free shape (max rel err < 1e-6)."""
    from cnncalc.kernels.fast import fused

    rng = np.random.default_rng(3)
    N, C, H, W, K, F, pad, pool = 2, 2, 6, 6, 3, 3, 1, 2
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C, F, F)) / 3
    b = 0.5 + 0.1 * rng.standard_normal(K)  # mostly alive windows
    dy = rng.standard_normal((N, K, H // pool, W // pool))

    def loss(x_, w_, b_):
        y, _ = fused.conv_relu_maxpool_forward(x_, w_, b_, pad, pool)
        return float((y * dy).sum())

    y, am = fused.conv_relu_maxpool_forward(x, w, b, pad, pool)
    dx, dw, db = fused.conv_relu_maxpool_backward(dy, x, w, am, pad, pool)
    eps = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            lp = loss(x, w, b)
            arr[i] = old - eps
            lm = loss(x, w, b)
            arr[i] = old
            num[i] = (lp - lm) / (2 * eps)
        assert rel_err(grad, num) < 1e-6


# --------------------------------------------------------------------------------------------
# fc + ReLU, softmax cross-entropy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_relu(dtype, relu):
    from cnncalc.kernels.fast import fused

    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 40)).astype(dtype)
    w = (rng.standard_normal((12, 40)) / 6).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    dy = rng.standard_normal((7, 12)).astype(dtype)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    z = x64 @ w64.T + b64
    y_ref = np.maximum(z, 0) if relu else z
    dz = dy64 * (z > 0) if relu else dy64
    out_f, out_b = {}, {}
    for _ in range(2):
        y = fused.linear_relu_forward(x, w, b, relu, out=out_f)
        np.testing.assert_allclose(y, y_ref, **tol(dtype))
        dx, dw, db = fused.linear_relu_backward(dy, x, w, y, relu, out=out_b)
        np.testing.assert_allclose(dx, dz @ w64, **tol(dtype))
        np.testing.assert_allclose(dw, dz.T @ x64, **tol(dtype))
        np.testing.assert_allclose(db, dz.sum(0), **tol(dtype))
        assert fused.linear_relu_backward(dy, x, w, y, relu, need_dx=False, out=out_b)[0] is None


# --------------------------------------------------------------------------------------------
# torch oracle for the fused layers
# --------------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_conv_relu_maxpool_matches_torch(name):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from cnncalc.kernels.fast import fused

    x, w, b, dy, pad, pool = make(SHAPES[name], np.float64, seed=7)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.max_pool2d(F.relu(F.conv2d(tx, tw, tb, padding=pad)), pool)
    ty.backward(torch.tensor(dy))
    y, am = fused.conv_relu_maxpool_forward(x, w, b, pad, pool)
    dx, dw, db = fused.conv_relu_maxpool_backward(dy, x, w, am, pad, pool)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, ref in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-10, atol=1e-12)


# flush-to-zero: the engine's workers always, the caller only inside an engine call
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1",
                    reason="MXCSR is set by a numba intrinsic: needs compiled code")
def test_flush_reaches_the_workers_and_the_caller_only_inside_an_engine_call():
    from cnncalc.kernels.fast.thread_state import SUPPORTED, EngineCall, flush_enabled
    from cnncalc.kernels.fast.threads import get_pool

    if not SUPPORTED:
        pytest.skip("MXCSR is x86-only")
    pool = get_pool(2)

    def both(flush=True):
        """(runs on a worker, FTZ on) per chunk; the barrier makes the caller and the worker
        take one chunk each (chunks are claimed dynamically)."""
        meet = threading.Barrier(2, timeout=10)

        def chunk(t):
            meet.wait()
            return threading.current_thread() is not threading.main_thread(), flush_enabled()

        return sorted(pool.run(chunk, 2, flush=flush))

    assert not flush_enabled()
    assert both(flush=False) == [(False, False), (True, False)]
    assert both() == [(False, False), (True, True)]   # the worker is the engine's
    with EngineCall(flush=True):
        assert both() == [(False, True), (True, True)]
    assert not flush_enabled()                                    # the caller's state is back
    with EngineCall(flush=False):
        assert not flush_enabled()
    assert both(flush=False) == [(False, False), (True, False)]


# --------------------------------------------------------------------------------------------
# generated whole-chain kernels (cnncalc.kernels.fast.gen) through the engine, against the generic
# unfused path of the same network
# --------------------------------------------------------------------------------------------


def _chain_spec(input_, layers, name="chain"):
    body = "\n".join(f"  - {line}" for line in layers)
    return f"name: {name}\ninput: {input_}\nlayers:\n{body}\n"


CHAINS = {
    # LeNet-5: a direct (C=1) block, then a GEMM block; flatten; fc chain
    "lenet5": str(__import__("pathlib").Path(__file__).resolve().parent.parent / "specs"
                  / "lenet5.yaml"),
    # direct block with C=3 and pool 3 (floor: the last rows/columns are never pooled), then a
    # padded GEMM block with an even kernel; no bias on the second conv and the middle fc
    "odd": _chain_spec("11x13x3", [
        "conv: {filters: 4, size: 3, pad: 1}", "relu", "maxpool: {size: 3}",
        "conv: {filters: 5, size: 2, pad: 1, bias: false}", "relu", "maxpool: {size: 2}",
        "flatten", "fc: {units: 7, bias: false}", "relu", "fc: {units: 3}"]),
    # first block too wide for the direct kernel (C*F*F = 36): GEMM on the NCHW input; no
    # flatten node (fc flattens NCHW itself)
    "gemm_first": _chain_spec("9x9x4", [
        "conv: {filters: 3, size: 3}", "relu", "maxpool: {size: 2}", "fc: {units: 5}"]),
    # no conv block at all
    "mlp": _chain_spec("4x4x2", ["fc: {units: 6}", "relu", "fc: {units: 3}"]),
}


def _chain_pair(name, dtype, threads, seed=0):
    import cnncalc

    net = cnncalc.Network(CHAINS[name], dtype=dtype, seed=seed, threads=threads)
    ref_net = cnncalc.Network(CHAINS[name], dtype=dtype, seed=seed, fuse=False, parallel=False)
    assert net.fast_path is not None and ref_net.fast_path is None
    rng = np.random.default_rng(seed + 1)
    for k, v in net.params.items():  # non-zero biases so every term shows up
        if k.endswith(".bias"):
            v[...] = 0.1 * rng.standard_normal(v.shape)
    ref_net.load_state_dict(net.state_dict())
    return net, ref_net


# Each (chain, dtype) compiles its own shape-specialised kernels (10-20 s on a cold cache), so
# LeNet-5, the shipped chain, runs in both dtypes and each other chain in one (the same generator
# code emits both; "odd" shares its float64 kernels with the ties test below).
CHAIN_DTYPES = [("lenet5", "float32"), ("lenet5", "float64"), ("odd", "float64"),
                ("gemm_first", "float32"), ("mlp", "float64")]
assert {name for name, _ in CHAIN_DTYPES} == set(CHAINS)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name,dtype", CHAIN_DTYPES)
def test_generated_chain_matches_unfused(name, dtype, threads):
    net, ref_net = _chain_pair(name, dtype, threads)
    t = tol(np.dtype(dtype))
    c, h, w = net.graph.input_shape
    rng = np.random.default_rng(3)
    for n in (5, 1, 5):  # batch-size change and buffer reuse; 1 < threads leaves a slot idle
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        y = rng.integers(0, net.graph.output_shape.c, n)
        out = net.forward(x)
        np.testing.assert_allclose(out, ref_net.forward(x), **t)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = net.backward(dout)
        dx_r = ref_net.backward(dout)
        np.testing.assert_allclose(dx, dx_r, **t)
        for k in net.grads:
            np.testing.assert_allclose(net.grads[k], ref_net.grads[k], err_msg=k, **t)
        assert net.backward(dout, need_dx=False) is None
        loss = net.loss_and_grads(x, y)
        assert loss == pytest.approx(ref_net.loss_and_grads(x, y), rel=1e-6)
        for k in net.grads:
            np.testing.assert_allclose(net.grads[k], ref_net.grads[k], err_msg=k, **t)
        # loss() then backward(dlogits): the trainer's two-call form
        l2, dl = net.loss(x, y)
        assert l2 == pytest.approx(loss, rel=1e-6)
        g = net.flat_grads.copy()
        net.backward(dl, need_dx=False)
        np.testing.assert_allclose(net.flat_grads, g, **t)


def test_generated_chain_ties_and_dead_windows():
    """Integer data make ties in the pool windows (the first maximum wins, as in the generic
    kernels); very negative biases kill whole channels (argmax -1: zero gradient, no NaN)."""
    net, ref_net = _chain_pair("odd", "float64", 2)
    rng = np.random.default_rng(5)
    for k, v in net.params.items():
        v[...] = rng.integers(-1, 2, v.shape)
    net.params["conv1.bias"][:2] = -1e3     # two channels of the first block dead everywhere
    ref_net.load_state_dict(net.state_dict())
    x = rng.integers(-2, 3, (4, *net.graph.input_shape)).astype(np.float64)
    y = np.array([0, 1, 2, 1])
    assert net.loss_and_grads(x, y) == pytest.approx(ref_net.loss_and_grads(x, y), rel=1e-12)
    for k in net.grads:
        np.testing.assert_allclose(net.grads[k], ref_net.grads[k], rtol=1e-12, atol=1e-12,
                                   err_msg=k)
    assert np.all(net.grads["conv1.weight"][:2] == 0)
    assert np.isfinite(net.flat_grads).all()


def test_generated_chain_gradcheck_float64():
    """Centred differences on the whole generated chain (threads=2, float64)."""
    from gradcheck import H, rel_error

    net, _ = _chain_pair("odd", "float64", 2, seed=4)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, *net.graph.input_shape))
    y = np.array([2, 0, 1])
    net.loss_and_grads(x, y)
    analytic = net.flat_grads.copy()
    idx = rng.choice(net.n_params, 60, replace=False)
    num = np.empty(idx.size)
    p = net.flat_params
    for m, i in enumerate(idx):
        old = p[i]
        p[i] = old + H
        fp = net.loss(x, y)[0]
        p[i] = old - H
        fm = net.loss(x, y)[0]
        p[i] = old
        num[m] = (fp - fm) / (2 * H)
    assert np.abs(num).max() > 0
    assert rel_error(analytic[idx], num) < 1e-6


def test_non_chain_graphs_keep_the_generic_path():
    import cnncalc

    bn = _chain_spec("8x8x1", ["conv: {filters: 2, size: 3, pad: 1}", "batchnorm", "relu",
                               "maxpool: {size: 2}", "fc: {units: 3}"])
    out_relu = _chain_spec("8x8x1", ["conv: {filters: 2, size: 3}", "relu",
                                     "maxpool: {size: 2}", "fc: {units: 3}", "relu"])
    strided = _chain_spec("8x8x1", ["conv: {filters: 2, size: 3, stride: 2}", "relu",
                                    "maxpool: {size: 2}", "fc: {units: 3}"])
    for spec in (bn, out_relu, strided):
        assert cnncalc.Network(spec, parallel=False).fast_path is None
    assert cnncalc.Network(CHAINS["lenet5"], fuse=False).fast_path is None
