"""The CPU state an engine call runs under: flush-to-zero and single-threaded BLAS.

* **Flush-to-zero (FTZ) and denormals-are-zero (DAZ).** Momentum buffers of dead units decay
  into denormals, and arithmetic on denormals made the optimizer kernel ~20x slower (README,
  "Flush denormals to zero"). The switch lives in the x86 MXCSR register, which is *per thread*.
  We read and write it with LLVM's ``llvm.x86.sse.stmxcsr`` / ``ldmxcsr`` intrinsics from a
  serial, cached kernel, on whichever thread calls it.
* **BLAS at one thread.** The engine's parallelism is its own worker threads; a multi-threaded
  BLAS called from each of them oversubscribes the cores (README, "One thread pool").

Neither is a process-wide setting: the engine's worker threads (:mod:`.threads`) keep FTZ on
for their lifetime (they are the engine's), and the *calling* thread gets FTZ and the BLAS limit
only for the duration of an engine call (:class:`EngineCall`), restored afterwards. Nothing here
runs at import.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._jit import jit

__all__ = ["EngineCall", "flush_enabled", "jit_disabled", "limit_blas_threads",
           "restore_blas_threads", "set_thread_flush"]

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


_mxcsr_serial = jit(_mxcsr_serial_py)


def jit_disabled() -> bool:
    """True under ``NUMBA_DISABLE_JIT=1`` (pure Python: no MXCSR to set)."""
    import numba

    return bool(numba.config.DISABLE_JIT)


def _can_flush() -> bool:
    return SUPPORTED and not jit_disabled()


def set_thread_flush(on: bool) -> int:
    """FTZ+DAZ on (or off) in the *calling* thread only; returns the previous FTZ+DAZ bits."""
    if not _can_flush():
        return 0
    old = _mxcsr_serial(FTZ_DAZ, 0) if on else _mxcsr_serial(0, FTZ_DAZ)
    return int(old) & FTZ_DAZ


def _restore_flush(bits: int) -> None:
    """Put the calling thread's FTZ+DAZ bits back to ``bits`` (from :func:`set_thread_flush`)."""
    _mxcsr_serial(bits, FTZ_DAZ & ~bits)


def flush_enabled() -> bool:
    """Whether the calling thread flushes a denormal float32 product to zero."""
    tiny = np.float32(np.finfo(np.float32).tiny)
    return bool(tiny * np.float32(0.5) == 0)


class _Blas:
    """The loaded BLAS libraries (numpy's and SciPy's, which ``np.dot`` in numba calls)."""

    libs: list | None = None

    @classmethod
    def controllers(cls) -> list:
        if cls.libs is None:
            try:
                import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot loads it anyway)
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - both are runtime dependencies
                cls.libs = []
            else:
                cls.libs = [c for c in ThreadpoolController().lib_controllers
                            if c.user_api == "blas"]
        return cls.libs


def limit_blas_threads() -> list:
    """Set every loaded BLAS to one thread; returns the previous counts, for
    :func:`restore_blas_threads`."""
    saved = []
    for lib in _Blas.controllers():
        n = lib.num_threads
        if n != 1:
            lib.set_num_threads(1)
            saved.append((lib, n))
    return saved


def restore_blas_threads(saved: list) -> None:
    for lib, n in saved:
        lib.set_num_threads(n)


class EngineCall:
    """``with EngineCall(flush):`` — the calling thread's state for one engine call.

    On entry: BLAS at one thread, and FTZ+DAZ on when ``flush``; on exit both are put back as
    they were, so the caller's own NumPy code runs exactly as before. Costs ~5 us.
    """

    __slots__ = ("flush", "_bits", "_blas")

    def __init__(self, flush: bool = True):
        self.flush = bool(flush) and _can_flush()
        self._bits = None
        self._blas = None

    def __enter__(self):
        self._blas = limit_blas_threads()
        if self.flush:
            self._bits = set_thread_flush(True)
        return self

    def __exit__(self, *exc):
        if self._bits is not None and self._bits != FTZ_DAZ:
            _restore_flush(self._bits)
        self._bits = None
        restore_blas_threads(self._blas)
        self._blas = None
        return False
