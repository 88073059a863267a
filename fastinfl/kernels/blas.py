"""BLAS routines Numba does not expose, called from kernels through SciPy's BLAS.

``dsyrk`` (C += A^T A on one triangle) does half the flops of the gemm that
``np.dot`` would call for the Hessian. Its address, taken from
``scipy.linalg.cython_blas``, is registered as a named symbol, so that kernels
calling it are cached like any other (the symbol is resolved at load time).
"""

import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.core.extending import get_cython_function_address

from .._config import kernel

llvm.add_symbol("fastinfl_dsyrk", get_cython_function_address("scipy.linalg.cython_blas", "dsyrk"))
_vp = types.voidptr
_dsyrk = types.ExternalFunction("fastinfl_dsyrk", types.void(*[_vp] * 10))


@kernel()
def syrk_lower(B, m, C):
    """C += B[:m]^T B[:m] on the lower triangle of C; the strict upper triangle is left alone.

    Contract: B (rows >= m, p) and C (p, p) C-contiguous float64. Row-major
    B[:m] is the column-major p x m matrix B^T, so this is Fortran dsyrk
    with uplo='U', trans='N' (C's upper triangle in column-major order is
    its lower triangle in row-major order).
    """
    p = B.shape[1]
    chars = np.array([ord("U"), ord("N")], np.uint8)
    ints = np.array([p, m, p], np.int32)  # n, k, lda = ldc
    one = np.ones(1)
    _dsyrk(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, one.ctypes, B.ctypes,
           ints[2:].ctypes, one.ctypes, C.ctypes, ints[2:].ctypes)
