"""Flush denormals to zero (FTZ) and treat denormal inputs as zero (DAZ) in every numba thread.

Momentum buffers of dead units decay into denormals, and arithmetic on denormals is ~20x slower
here (PERF-NOTES lesson 5). The switch lives in the x86 MXCSR register, which is *per thread*: it
must be set on the calling thread and inside a ``prange`` that reaches every worker of numba's
pool. We read and write MXCSR with LLVM's ``llvm.x86.sse.stmxcsr`` / ``ldmxcsr`` intrinsics, so it
works from inside jitted code on whichever thread runs it.

Call :func:`enable_flush_denormals` once at engine start-up (and again after
``numba.set_num_threads`` raises the thread count). It also affects NumPy code on the calling
thread, as ``torch.set_flush_denormal(True)`` does.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import jit, pjit, prange

FTZ_DAZ = 0x8040  # bit 15: flush-to-zero; bit 6: denormals-are-zero
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _mxcsr_update(typingctx, set_bits, clear_bits):
    """``mxcsr = (mxcsr | set_bits) & ~clear_bits``; returns the old value (int32)."""
    sig = types.int32(types.int32, types.int32)

    def codegen(context, builder, signature, args):
        set_v, clear_v = args
        i32 = ir.IntType(32)
        ptr_t = ir.IntType(8).as_pointer()
        mod = builder.module
        st = mod.globals.get("llvm.x86.sse.stmxcsr") or ir.Function(
            mod, ir.FunctionType(ir.VoidType(), [ptr_t]), name="llvm.x86.sse.stmxcsr")
        ld = mod.globals.get("llvm.x86.sse.ldmxcsr") or ir.Function(
            mod, ir.FunctionType(ir.VoidType(), [ptr_t]), name="llvm.x86.sse.ldmxcsr")
        slot = builder.alloca(i32)
        raw = builder.bitcast(slot, ptr_t)
        builder.call(st, [raw])
        old = builder.load(slot)
        new = builder.and_(builder.or_(old, set_v), builder.not_(clear_v))
        builder.store(new, slot)
        builder.call(ld, [raw])
        return old

    return sig, codegen


def _mxcsr_serial_py(set_bits, clear_bits):
    return _mxcsr_update(np.int32(set_bits), np.int32(clear_bits))


def _mxcsr_all_threads_py(set_bits, clear_bits, reps):
    """Apply the update in ``reps`` prange iterations; report which threads ran one."""
    seen = np.zeros(reps, np.int32)
    for i in prange(reps):
        _mxcsr_update(np.int32(set_bits), np.int32(clear_bits))
        seen[i] = 1
    return seen


def _probe_py(reps, tiny):
    """Per iteration: thread id, and 1 if ``tiny * 0.5`` (a denormal) came out as zero."""
    res = np.zeros((reps, 2), np.int64)
    for i in prange(reps):
        res[i, 0] = _thread_id()
        d = tiny[i] * np.float32(0.5)
        res[i, 1] = 1 if d == np.float32(0) else 0
    return res


_mxcsr_serial = jit(_mxcsr_serial_py)
_mxcsr_all_threads = pjit(_mxcsr_all_threads_py)


def _thread_id():  # replaced below by numba's, kept callable under NUMBA_DISABLE_JIT
    return 0


try:  # numba >= 0.57
    from numba import get_thread_id as _thread_id  # noqa: F811
except ImportError:  # pragma: no cover
    pass

_probe = pjit(_probe_py)


def _apply(set_bits: int, clear_bits: int) -> None:
    if not SUPPORTED:
        return
    import numba

    _mxcsr_serial(set_bits, clear_bits)  # the calling thread (serial kernels, NumPy)
    # Several iterations per worker: OpenMP/workqueue give each thread a static chunk; the extra
    # iterations cover a scheduler that would hand out fewer.
    _mxcsr_all_threads(set_bits, clear_bits, 64 * numba.get_num_threads())


def enable_flush_denormals() -> None:
    """Turn FTZ+DAZ on in the calling thread and in every thread of numba's pool."""
    _apply(FTZ_DAZ, 0)


def disable_flush_denormals() -> None:
    """Turn FTZ+DAZ off again everywhere (tests use it to restore the default)."""
    _apply(0, FTZ_DAZ)


def flush_status() -> dict:
    """Which numba threads flush a denormal float32 product to zero.

    Returns ``{"threads": set of thread ids probed, "flushing": set of those that flushed,
    "main": whether the calling thread flushes}``.
    """
    import numba

    reps = 64 * numba.get_num_threads()
    tiny = np.full(reps, np.finfo(np.float32).tiny, np.float32)
    res = _probe(reps, tiny)
    main = bool(np.float32(np.finfo(np.float32).tiny) * np.float32(0.5) == 0) if SUPPORTED else False
    return {"threads": set(res[:, 0].tolist()),
            "flushing": set(res[res[:, 1] == 1, 0].tolist()),
            "main": main}
