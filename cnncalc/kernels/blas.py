"""BLAS ``?gemm`` on flat buffers with offsets, leading dimensions and ``beta``, callable from
numba kernels (the conv kernels' implicit GEMM, the Winograd GEMMs)."""
from __future__ import annotations

import numpy as np
from numba.extending import overload


def _gemm(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    """``C = alpha * op(A) @ op(B) + beta * C`` on flat (1-D, contiguous) buffers, row-major.

    ``C[i, j]`` is ``c[co + i*ldc + j]`` (m x n); ``A[i, l]`` is ``a[ao + i*lda + l]`` (m x k), or
    ``a[ao + l*lda + i]`` when ``ta``; ``B[l, j]`` is ``b[bo + l*ldb + j]`` (k x n), or
    ``b[bo + j*ldb + l]`` when ``tb``. Inside numba this is one call to the same BLAS ``?gemm``
    that ``np.dot`` uses (numba's ``numba_xxgemm`` helper, so cached kernels stay cacheable), but
    with strided operands (no copies) and ``beta = 1`` accumulation. This Python body is the
    ``NUMBA_DISABLE_JIT`` fallback.
    """
    st = np.lib.stride_tricks.as_strided
    isz = a.itemsize
    if ta:
        am = st(a[ao:], (k, m), (lda * isz, isz)).T
    else:
        am = st(a[ao:], (m, k), (lda * isz, isz))
    if tb:
        bm = st(b[bo:], (n, k), (ldb * isz, isz)).T
    else:
        bm = st(b[bo:], (k, n), (ldb * isz, isz))
    cm = st(c[co:], (m, n), (ldc * isz, isz), writeable=True)
    r = alpha * (am @ bm)
    if beta != 0:
        r = r + beta * cm
    cm[...] = r


@overload(_gemm)
def _gemm_ol(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    from numba.np.linalg import _BLAS, ensure_blas, get_blas_kind
    from numba.np.numpy_support import as_dtype

    ensure_blas()
    xxgemm = _BLAS().numba_xxgemm(a.dtype)
    kind = ord(get_blas_kind(a.dtype, "gemm"))
    dt = as_dtype(a.dtype)
    trans = ord("t")
    notrans = ord("n")

    def impl(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
        if m == 0 or n == 0:
            return
        ab = np.empty(2, dt)
        ab[0] = alpha
        ab[1] = beta
        # row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T
        xxgemm(kind, trans if tb else notrans, trans if ta else notrans, n, m, k, ab.ctypes,
               b[bo:].ctypes, ldb, a[ao:].ctypes, lda, ab[1:].ctypes, c[co:].ctypes, ldc)

    return impl
