"""GIL-free spin-waits on a shared int64 flag, for the engine's worker threads.

Waking a blocked thread through a futex (``threading.Event``, or CPython's GIL) costs 25-40 us
per hand-over on these (virtualised) machines. Between the ops of a step a worker instead spins
for a short, bounded time in :func:`spin_while` / :func:`spin_until` (serial, cached, ``nogil``
kernels, so the spinning thread never holds the GIL) and only then falls back to blocking.

A spin that sees its flag also waits, for at most as many polls again, until the *GIL* is free
(:func:`gil_word`) before it returns: the thread that set the flag still holds the GIL for a few
microseconds of Python, and a thread that asks for the GIL while it is held sleeps on a
condition variable, which the holder's release then has to wake (~25 us here), where a GIL that
is free is taken at once. The pool's README ("GIL-aware spins") has the measurements.

Flags are read with an *atomic acquire load* (an LLVM intrinsic): a plain load in a loop that
writes nothing would be hoisted out of the loop by LLVM. Writers store with NumPy
(``flags[i] = v``) while holding the GIL; x86 stores are not reordered with other stores.
"""
from __future__ import annotations

import ctypes
import platform
import sys
import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._jit import jit

__all__ = ["gil_word", "poll_seconds", "spin_until", "spin_while"]

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """``arr[idx]`` (int32 or int64 array) with an atomic acquire load."""
    if not (isinstance(arr, types.Array) and arr.dtype in (types.int32, types.int64)):
        return None
    sig = arr.dtype(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", aryty.dtype.bitwidth // 8)

    return sig, codegen


@intrinsic
def _cpu_relax(typingctx):
    """x86 ``pause`` (polite spinning; a no-op elsewhere)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if X86:
            mod = builder.module
            fn = mod.globals.get("llvm.x86.sse2.pause") or ir.Function(
                mod, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


def _gil_free_py(gil, max_iters):
    """Poll until ``gil[0] == 0`` (the GIL is free) or ``max_iters`` polls went by."""
    for _ in range(max_iters):
        if _load_acquire(gil, 0) == 0:
            return
        _cpu_relax()


_gil_free = jit(_gil_free_py)


def _spin_until_py(flags, idx, target, max_iters, gil):
    """Spin until ``flags[idx] == target`` (True) or ``max_iters`` polls went by (False); once
    it holds, up to ``max_iters`` polls more until ``gil[0] == 0``."""
    for _ in range(max_iters):
        if _load_acquire(flags, idx) == target:
            _gil_free(gil, max_iters)
            return True
        _cpu_relax()
    return _load_acquire(flags, idx) == target


spin_until = jit(_spin_until_py)


def _spin_while_py(flags, idx, value, max_iters, gil):
    """Spin while ``flags[idx] == value``: True once it differs (after up to ``max_iters``
    polls more until ``gil[0] == 0``), False after ``max_iters`` polls."""
    for _ in range(max_iters):
        if _load_acquire(flags, idx) != value:
            _gil_free(gil, max_iters)
            return True
        _cpu_relax()
    return _load_acquire(flags, idx) != value


spin_while = jit(_spin_while_py)


def poll_seconds(polls: int = 20_000, repeats: int = 3) -> float:
    """Seconds per poll of the spins on this machine (the fastest of ``repeats`` timed spins of
    ``polls`` polls on a flag that never changes). ``pause`` takes ~50 ns on some x86 cores and
    ~13 ns on others, so the pool turns its spin *times* into poll counts with this."""
    flags = np.zeros(1, np.int64)
    gil = np.zeros(1, np.int32)
    spin_while(flags, 0, 0, 1, gil)           # compiled (or loaded) before the timing
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        spin_while(flags, 0, 0, polls, gil)
        best = min(best, time.perf_counter() - t)
    return max(best / polls, 1e-9)


# Where to look for the GIL's state: CPython 3.11 keeps ``struct _gil_runtime_state`` (``unsigned
# long interval; PyThreadState *last_holder; int locked; ...``) inside ``_PyRuntime.ceval``, 360
# bytes in on x86-64 Linux; 3.12 and later moved it into the interpreter state.
_GIL_SEARCH_BYTES = 1024


def gil_word() -> np.ndarray | None:
    """A one-element int32 array over CPython's GIL ``locked`` field (read-only use: 0 when the
    GIL is free), or None where it cannot be found for certain.

    Found, not assumed: the only place in the first ``_GIL_SEARCH_BYTES`` of ``_PyRuntime``
    where the switch interval (in microseconds) is followed by the calling thread's
    ``PyThreadState`` pointer and a ``locked`` of 1 (the caller holds the GIL). Only CPython 3.11
    on 64-bit little-endian Linux; elsewhere None, and the spins do not wait for the GIL."""
    if not (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
            and sys.platform == "linux" and sys.maxsize > 2**32 and sys.byteorder == "little"):
        return None
    try:
        api = ctypes.pythonapi
        base = ctypes.addressof(ctypes.c_char.in_dll(api, "_PyRuntime"))
        get_state = api.PyThreadState_Get
        get_state.restype = ctypes.c_void_p
        state = get_state()
        interval = int(round(sys.getswitchinterval() * 1e6))
        words = (ctypes.c_uint64 * (_GIL_SEARCH_BYTES // 8)).from_address(base)
        found = [i for i in range(len(words) - 2)
                 if words[i] == interval and words[i + 1] == state
                 and ctypes.c_int32.from_address(base + 8 * (i + 2)).value == 1]
    except (AttributeError, ValueError, OSError):     # pragma: no cover - no such symbol
        return None
    if len(found) != 1:
        return None
    field = (ctypes.c_int32 * 1).from_address(base + 8 * (found[0] + 2))
    return np.ctypeslib.as_array(field)
