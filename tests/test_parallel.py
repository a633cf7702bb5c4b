"""The engine's thread pool (cnncalc.kernels.fast.threads) and the data-parallel fast path:
ordering, errors, flush-to-zero in every worker, determinism, thread-count rules, and that a
second process loads the generated kernels from the cache instead of compiling them."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from reference import spec_text

import cnncalc
from cnncalc.kernels.fast.threads import WorkerPool, default_threads, get_pool
from cnncalc.errors import TrainError

LENET = Path(__file__).resolve().parent.parent / "specs" / "lenet5.yaml"


def test_pool_runs_every_chunk_in_order_on_any_thread():
    pool = WorkerPool(3)
    assert pool.run(lambda t: t * 10) == [0, 10, 20]
    assert pool.run(lambda t: t * 10, 7) == [0, 10, 20, 30, 40, 50, 60]   # more chunks than threads
    assert pool.run(lambda t: t * 10, 2) == [0, 10]
    assert pool.run(lambda t: t * 10, 1) == [0]
    seen = {}
    meet = threading.Barrier(3, timeout=10)   # each of the three threads holds one chunk

    def fn(t):
        seen[t] = threading.get_ident()
        meet.wait()
        return t

    assert pool.run(fn) == [0, 1, 2]
    assert len(set(seen.values())) == 3 and threading.get_ident() in seen.values()


def test_pool_caller_takes_the_chunks_of_a_stalled_worker():
    """Chunks are claimed dynamically: a worker stuck in one chunk (descheduled by another
    process) delays the job by that chunk only; the caller runs the rest."""
    pool = WorkerPool(2)
    me = threading.get_ident()
    ran = {}
    worker_started = threading.Event()

    def fn(t):
        ran[t] = threading.get_ident()
        if ran[t] != me and not worker_started.is_set():
            worker_started.set()
            threading.Event().wait(0.3)          # the worker stalls in its first chunk
        elif ran[t] == me:
            worker_started.wait(5)               # let the worker claim one chunk first
        return t * t

    assert pool.run(fn, 8) == [t * t for t in range(8)]
    assert sum(v != me for v in ran.values()) == 1   # the caller ran the other seven


def test_pool_reraises_worker_errors_and_survives():
    pool = get_pool(2)

    def boom(t):
        if t == 1:
            raise ValueError("worker 1 failed")
        return t

    with pytest.raises(ValueError, match="worker 1 failed"):
        pool.run(boom)
    assert pool.run(lambda t: t + 1) == [1, 2]
    assert get_pool(2) is pool


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no MXCSR without JIT")
def test_flush_to_zero_in_every_worker():
    from cnncalc.kernels.fast.thread_state import SUPPORTED

    if not SUPPORTED:
        pytest.skip("FTZ/DAZ is x86 only")
    net = cnncalc.Network(LENET, threads=2)
    tiny = np.float32(np.finfo(np.float32).tiny)
    with net.thread_state():             # as during an engine call
        flushed = get_pool(2).run(lambda t: bool(tiny * np.float32(0.5) == 0))
    assert flushed == [True, True]
    assert not tiny * np.float32(0.5) == 0   # the caller's thread is restored


_JIT = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1",
                          reason="the spins are compiled kernels")
_CPYTHON_311 = (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
                and sys.platform == "linux" and sys.maxsize > 2**32)


@_JIT
def test_spins_return_on_their_flag_and_wait_a_bounded_time_for_the_gil():
    from cnncalc.kernels.fast.spin import spin_until, spin_while

    flags = np.array([3, 7], np.int64)
    free, held = np.zeros(1, np.int32), np.ones(1, np.int32)
    assert spin_while(flags, 0, 2, 10, free) and spin_until(flags, 1, 7, 10, free)
    assert not spin_while(flags, 0, 3, 10, free) and not spin_until(flags, 1, 8, 10, free)
    # a GIL word that never frees (a stand-in) delays the return by at most max_iters polls
    assert spin_while(flags, 0, 2, 10, held) and spin_until(flags, 1, 7, 10, held)


@_JIT
def test_pool_spins_are_times_turned_into_poll_counts():
    from cnncalc.kernels.fast import threads
    from cnncalc.kernels.fast.spin import poll_seconds

    poll = poll_seconds()
    assert 1e-10 < poll < 1e-5
    pool = WorkerPool(2)
    # the pool measured its own poll time; scheduling noise moves it, not by 10x
    assert 0.1 < pool.go_polls * poll / threads.SPIN_GO_SECONDS < 10
    assert pool.go_polls / pool.done_polls == pytest.approx(
        threads.SPIN_GO_SECONDS / threads.SPIN_DONE_SECONDS, rel=0.01)
    assert pool.run(lambda t: t, 4) == [0, 1, 2, 3]


@_JIT
@pytest.mark.skipif(not _CPYTHON_311, reason="the GIL word is looked up on CPython 3.11 only")
def test_gil_word_reads_the_gil_held_and_free():
    """The word :func:`gil_word` finds is the GIL's ``locked``: 1 while a thread runs Python,
    0 while none does. Read from a compiled ``nogil`` kernel on another thread."""
    from numba import njit

    from cnncalc.kernels.fast.spin import _cpu_relax, _load_acquire, gil_word

    @njit(nogil=True)
    def read_when(flags, gil, out):
        # flags[0] >= 1: read the word now; then wait for flags[0] >= 2 and read it until 0
        while _load_acquire(flags, 0) < 1:
            _cpu_relax()
        seen = 0      # other threads may take the GIL in turn: it is free only for moments
        for _ in range(1000):
            seen = max(seen, _load_acquire(gil, 0))
        out[0] = seen
        flags[1] = 1
        while _load_acquire(flags, 0) < 2:
            _cpu_relax()
        for _ in range(100_000_000):
            if _load_acquire(gil, 0) == 0:
                out[1] = 0
                return
            _cpu_relax()
        out[1] = 1

    gil = gil_word()
    assert gil is not None and gil.dtype == np.int32 and gil[0] == 1   # this thread holds it
    flags, out = np.zeros(2, np.int64), np.full(2, -1, np.int64)
    flags[0] = 2
    read_when(flags, gil, out)   # compile first (flags past both waits); then on a thread
    flags[:], out[:] = 0, -1
    reader = threading.Thread(target=read_when, args=(flags, gil, out))
    reader.start()
    flags[0] = 1
    deadline = time.monotonic() + 30
    while flags[1] == 0 and time.monotonic() < deadline:   # Python all along: the GIL is held
        pass
    flags[0] = 2
    reader.join(30)              # join() sleeps without the GIL: the word reads 0
    assert out.tolist() == [1, 0]


_FORK_NET = []


def _forward_in_child(x):
    return _FORK_NET[0].forward(x)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_pool():
    """A pool's threads do not survive fork(): the child must not wait for them forever."""
    import multiprocessing as mp

    net = cnncalc.Network(LENET, threads=2)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    want = net.forward(x)
    _FORK_NET[:] = [net]
    try:
        with mp.get_context("fork").Pool(1) as procs:
            got = procs.apply(_forward_in_child, (x,))
    finally:
        _FORK_NET.clear()
    np.testing.assert_array_equal(got, want)


def test_thread_count_rules():
    assert cnncalc.Network(LENET).threads == default_threads() == min(2, os.cpu_count())
    assert cnncalc.Network(LENET, parallel=False).threads == 1
    assert cnncalc.Network(LENET, threads=3).threads == 3
    with pytest.raises(TrainError):
        cnncalc.Network(LENET, threads=0)


def test_two_threads_deterministic_and_close_to_one_thread():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 37)
    one = cnncalc.Network(LENET, threads=1)
    two = cnncalc.Network(LENET, threads=2)
    assert "2 thread" in two.fast_path and "1 thread" in one.fast_path
    l1 = one.loss_and_grads(x, y)
    l2 = two.loss_and_grads(x, y)
    g2 = two.flat_grads.copy()
    assert l2 == pytest.approx(l1, rel=1e-6)
    np.testing.assert_allclose(g2, one.flat_grads, rtol=1e-4, atol=1e-6)
    for _ in range(2):  # bitwise repeatable, also after another batch size
        two.loss_and_grads(x[:5], y[:5])
        assert two.loss_and_grads(x, y) == l2
        np.testing.assert_array_equal(two.flat_grads, g2)


def test_threads_one_is_exact_against_serial_reference_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 1, 28, 28))
    y = rng.integers(0, 10, 6)
    fast = cnncalc.Network(LENET, dtype="float64", threads=1)
    ref = cnncalc.Network(LENET, dtype="float64", fuse=False, parallel=False)
    ref.load_state_dict(fast.state_dict())
    assert fast.loss_and_grads(x, y) == pytest.approx(ref.loss_and_grads(x, y), rel=1e-13)
    np.testing.assert_allclose(fast.flat_grads, ref.flat_grads, rtol=1e-11, atol=1e-14)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compilation")
def test_second_process_does_not_recompile(tmp_path):
    """With cache=True the generated kernels compile once; a second process only loads them.
    A one-block chain (conv -> relu -> maxpool -> fc): the child compiles from an empty cache,
    and fewer kernels keep that short on a fresh machine."""
    one_block = spec_text("8x8x1", ["conv: {filters: 2, size: 3, pad: 1}", "relu",
                                    "maxpool: {size: 2}", "flatten", "fc: {units: 3}"],
                          name="one_block_chain")
    code = textwrap.dedent(f"""
        import numpy as np, cnncalc
        net = cnncalc.Network({one_block!r}, dtype="float32", threads=2)
        assert net._chain is not None
        x = np.zeros((4, 1, 8, 8), np.float32)
        net.loss_and_grads(x, np.arange(4) % 3)
        net.forward(x); net.backward(np.ones((4, 3), np.float32))
        mod = net._chain.mod
        hits = misses = 0
        for name in dir(mod):
            d = getattr(mod, name)
            if hasattr(d, "stats"):
                hits += sum(d.stats.cache_hits.values())
                misses += sum(d.stats.cache_misses.values())
        print("STATS", hits, misses)
    """)
    env = dict(os.environ, CNNCALC_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)
    stats = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("STATS")][-1]
        stats.append(tuple(int(v) for v in line.split()[1:]))
    (_, m1), (h2, m2) = stats
    assert m1 > 0            # the first process compiled
    assert m2 == 0 and h2 > 0  # the second one only loaded
    assert list(tmp_path.glob("gen/cnncalc_gen_*.py"))


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no dispatchers")
def test_generated_kernels_follow_the_jit_policy():
    """The numba flag policy for the generated modules too: serial, cached, safe fastmath only, nogil."""
    import numba

    from cnncalc.kernels._jit import SAFE_FASTMATH

    mod = cnncalc.Network(LENET)._chain.mod
    disps = [d for d in vars(mod).values() if isinstance(d, numba.core.registry.CPUDispatcher)]
    assert {"chain_step", "chain_fwd", "chain_bwd", "b0_fwd", "b1_bwd"} <= {
        d.py_func.__name__ for d in disps}
    for d in disps:
        opts = d.targetoptions
        assert set(opts["fastmath"]) == SAFE_FASTMATH and opts.get("nogil")
        assert not opts.get("parallel")
        assert type(d._cache).__name__ != "NullCache"


# ------------------------------------------------------------------ the generic step plan
CIFAR_BN = LENET.parent / "cifar_bn.yaml"

# resnet18-like, small: stride-2 conv, batch norm, add, 1x1 projection, maxpool with padding,
# conv-relu-maxpool (fused step, not a chain), avg pool, dropout, concat, global average pool
SMALL_RESNET = """
name: small_resnet
input: 20x20x3
blocks:
  basic:
    - conv: {name: conv1, filters: $channels, size: 3, pad: 1, bias: false}
    - batchnorm: {name: bn1}
    - relu: {name: relu1}
    - conv: {name: conv2, filters: $channels, size: 3, pad: 1, bias: false}
    - batchnorm: {name: bn2}
    - add: {name: add, from: [bn2, input]}
    - relu: {name: relu2}
  basic_down:
    - conv: {name: conv1, filters: $channels, size: 3, stride: 2, pad: 1, bias: false}
    - batchnorm: {name: bn1}
    - relu: {name: relu1}
    - conv: {name: conv2, filters: $channels, size: 3, pad: 1, bias: false}
    - batchnorm: {name: bn2}
    - conv: {name: downsample.0, from: input, filters: $channels, size: 1, stride: 2, bias: false}
    - batchnorm: {name: downsample.1}
    - add: {name: add, from: [bn2, downsample.1]}
    - relu: {name: relu2}
layers:
  - conv: {name: conv1, filters: 16, size: 5, stride: 1, pad: 2}
  - relu: {name: relu}
  - maxpool: {name: maxpool, size: 2}
  - {block: basic, name: layer1, with: {channels: 16}}
  - {block: basic_down, name: layer2.0, with: {channels: 32}}
  - conv: {name: side, filters: 8, size: 3, pad: 1}
  - leaky_relu: {name: lrelu}
  - avgpool: {name: ap, size: 3, stride: 1, pad: 1}
  - concat: {name: cat, from: [ap, layer2.0.relu2]}
  - dropout: {name: drop, p: 0.25}
  - global_avgpool: {name: gap}
  - flatten
  - fc: {name: fc1, units: 64}
  - relu: {name: relu_fc}
  - fc: {name: fc, units: 10}
"""


def _generic_pair(spec, n, shape, dtype="float32"):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, *shape)).astype(dtype)
    y = rng.integers(0, 10, n)
    nets = [cnncalc.Network(spec, dtype=dtype, threads=t, seed=5) for t in (1, 2)]
    assert all(nt.fast_path is None for nt in nets)
    return nets, x, y


@pytest.mark.parametrize("spec,shape", [(CIFAR_BN, (3, 32, 32)), (SMALL_RESNET, (3, 20, 20))],
                         ids=["cifar_bn", "small_resnet"])
def test_generic_plan_two_threads_agree_and_repeat(spec, shape):
    (one, two), x, y = _generic_pair(spec, 24, shape)
    if spec is SMALL_RESNET:
        assert any("conv_relu_maxpool" in ln for ln in two.plan)
    l1 = one.loss_and_grads(x, y)
    l2 = two.loss_and_grads(x, y)
    g2 = two.flat_grads.copy()
    assert l2 == pytest.approx(l1, rel=1e-5)
    np.testing.assert_allclose(g2, one.flat_grads, rtol=2e-3, atol=2e-5)
    dx1 = one.backward(np.ones((24, 10), np.float32))
    dx2 = two.backward(np.ones((24, 10), np.float32))
    np.testing.assert_allclose(dx2, dx1, rtol=2e-3, atol=1e-5)
    two.load_state_dict(one.state_dict())  # same weights and running statistics again
    two.rng = np.random.default_rng(9)
    ref = two.loss_and_grads(x, y), two.flat_grads.copy(), two.forward(x, training=False)
    for _ in range(2):  # bitwise repeatable, also after another batch size
        two.load_state_dict(one.state_dict())
        two.rng = np.random.default_rng(9)
        two.loss_and_grads(x[:5], y[:5])
        two.load_state_dict(one.state_dict())
        two.rng = np.random.default_rng(9)
        assert two.loss_and_grads(x, y) == ref[0]
        np.testing.assert_array_equal(two.flat_grads, ref[1])
        np.testing.assert_array_equal(two.forward(x, training=False), ref[2])


def test_generic_plan_threads_one_float64_matches_two_threads():
    (one, two), x, y = _generic_pair(SMALL_RESNET, 10, (3, 20, 20), dtype="float64")
    one.rng = np.random.default_rng(1)
    two.rng = np.random.default_rng(1)
    assert two.loss_and_grads(x, y) == pytest.approx(one.loss_and_grads(x, y), rel=1e-12)
    np.testing.assert_allclose(two.flat_grads, one.flat_grads, rtol=1e-9, atol=1e-12)


_COMPILE_CHILD = """
import time
t0 = time.perf_counter()
import numpy as np
from numba.core import event

class Compiles(event.Listener):
    def __init__(self):
        self.names = []
    def on_start(self, ev):
        d = ev.data["dispatcher"]
        par = bool(d.targetoptions.get("parallel"))
        self.names.append(("PAR:" if par else "") + d.py_func.__qualname__)
    def on_end(self, ev):
        pass

rec = Compiles()
event.register("numba:compile", rec)
import cnncalc
spec = {spec!r}
net = cnncalc.Network(spec, threads=2)
c, h, w = net.graph.input_shape
x = np.random.default_rng(0).standard_normal((8, c, h, w)).astype(np.float32)
net.loss_and_grads(x, np.arange(8) % 10)
t1 = time.perf_counter()
net.forward(x, training=True)
net.backward(np.ones((8, 10), np.float32))
net.predict(x)
one = cnncalc.Network(spec, threads=1)
one.loss_and_grads(x, np.arange(8) % 10)
print("RESULT", len(rec.names), t1 - t0, ",".join(sorted(set(rec.names))))
"""


def _compiles_in_child(spec, env):
    code = _COMPILE_CHILD.format(spec=spec)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=str(LENET.parent.parent))
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1].split(" ", 3)
    return int(line[1]), float(line[2]), line[3] if len(line) > 3 else ""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compilation")
@pytest.mark.parametrize("spec", [str(CIFAR_BN), SMALL_RESNET], ids=["cifar_bn", "small_resnet"])
def test_generic_plan_compiles_no_prange_and_nothing_when_cached(spec, tmp_path):
    """The step plan runs serial cached kernels only: the first process compiles no parallel
    kernel, a second one compiles nothing (no wall-time threshold: these machines are shared)."""
    env = dict(os.environ, CNNCALC_CACHE_DIR=str(tmp_path))
    n1, _, names1 = _compiles_in_child(spec, env)
    assert "PAR:" not in names1, names1
    n2, _, names2 = _compiles_in_child(spec, env)
    assert n2 == 0, names2  # compiling nothing is what makes the cached first step fast
