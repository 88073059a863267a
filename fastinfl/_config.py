"""Kernel configuration: the one decorator every Numba kernel uses.

``FASTINFL_CACHE=0`` turns Numba's on-disk cache off (it is on by default so
that the first call in a new process loads machine code instead of compiling).
"""

import os
import threading
from contextlib import contextmanager

from numba import njit
from threadpoolctl import ThreadpoolController

# Reassociation and contraction let LLVM vectorise reductions; ``nnan``/``ninf``
# stay off so finiteness checks survive and ``afn`` stays off so exp/log1p keep
# full accuracy (the loss passes are memory-bound: approximate maths buys nothing).
FASTMATH = frozenset({"nsz", "contract", "reassoc"})
CACHE = os.environ.get("FASTINFL_CACHE", "1") != "0"

# Rows per block in the kernels that copy a row block to a float64 buffer and
# hand it to BLAS (batched HVP, influence, top-k): 512 rows x p <= 1000 columns
# stays in L2; the Hessian's dsyrk uses its own, measured HESSIAN_BLOCK_ROWS.
BLOCK_ROWS = 512


def kernel(parallel=False):
    """Return the ``njit`` decorator shared by all kernels."""
    return njit(
        fastmath=set(FASTMATH),
        error_model="numpy",
        cache=CACHE,
        parallel=parallel,
        nogil=True,
    )


_lock = threading.Lock()
_users = 0  # calls inside single_threaded_blas(), over all Python threads
_limiter = None


@contextmanager
def single_threaded_blas():
    """Limit BLAS to one thread while a ``prange`` kernel calls it per thread.

    Kernels parallel over row blocks call BLAS from each Numba thread; letting
    OpenBLAS spawn its own threads on top over-subscribes the cores (measured:
    Hessian 10^6 x 100 on 2 cores, 0.58 s with BLAS threads, 0.32 s without).
    The limit is process-wide: the first caller sets it and the last one restores
    the original, so overlapping calls from several Python threads leave BLAS as
    they found it.
    """
    global _users, _limiter
    with _lock:
        if _users == 0:
            import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba calls)

            _limiter = ThreadpoolController().limit(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _limiter.restore_original_limits()
                _limiter = None
