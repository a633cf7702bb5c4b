"""A GIL-free spin-wait on a shared int64 flag, for the engine's worker threads.

Waking a blocked thread through a futex (``threading.Event``) cost ~40 us per hand-over on these
(virtualised) machines. Between the ops of a step a worker instead spins for a short, bounded
time in :func:`spin_while` / :func:`spin_until` (serial, cached, ``nogil`` kernels, so the
spinning thread never holds the GIL) and only then falls back to blocking.

The flag is read with an *atomic acquire load* (an LLVM intrinsic): a plain load in a loop
that writes nothing would be hoisted out of the loop by LLVM. Writers store with NumPy
(``flags[i] = v``) while holding the GIL; x86 stores are not reordered with other stores.
"""
from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._jit import jit

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """``arr[idx]`` (int64 array) with an atomic acquire load."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

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


def _spin_until_py(flags, idx, target, max_iters):
    """Spin until ``flags[idx] == target`` (True) or ``max_iters`` polls went by (False)."""
    for _ in range(max_iters):
        if _load_acquire(flags, idx) == target:
            return True
        _cpu_relax()
    return _load_acquire(flags, idx) == target


spin_until = jit(_spin_until_py)


def _spin_while_py(flags, idx, value, max_iters):
    """Spin while ``flags[idx] == value``: True once it differs, False after ``max_iters`` polls."""
    for _ in range(max_iters):
        if _load_acquire(flags, idx) != value:
            return True
        _cpu_relax()
    return _load_acquire(flags, idx) != value


spin_while = jit(_spin_while_py)
