"""Configuration: the one kernel decorator and every tuning constant, in one place.

``FASTINFL_CACHE=0`` turns Numba's on-disk cache off (it is on by default so
that the first call in a new process loads machine code instead of compiling).
The measurements that chose each constant are in bench/RESULTS.md ("Tuning
constants"); re-measure there before changing one.
"""

import os

from numba import njit

# Reassociation and contraction let LLVM vectorise reductions; ``nnan``/``ninf``
# stay off so finiteness checks survive and ``afn`` stays off so exp/log1p keep
# full accuracy (the loss passes are memory-bound: approximate maths buys nothing).
FASTMATH = frozenset({"nsz", "contract", "reassoc"})
CACHE = os.environ.get("FASTINFL_CACHE", "1") != "0"

# ------------------------------------------------------------------ kernels
# Rows per block in the kernels that copy a row block to a float64 buffer and
# hand it to BLAS (batched HVP, influence, top-k): 512 x p float64 (0.4 MiB at p = 100).
BLOCK_ROWS = 512
# Rows per dsyrk in the Hessian accumulation.
HESSIAN_BLOCK_ROWS = 1024
# Batched HVP: below this many vectors a fused loop per row, from it on two gemms per row block.
HVP_BLAS_MIN_K = 8
# Row chunks of the parallel drivers: at least MIN_CHUNK_ROWS rows each (one chunk = serial call),
# at most MAX_CHUNKS, and per-chunk partial sums bounded by CHUNK_BYTES in all.
MIN_CHUNK_ROWS = 4096
MAX_CHUNKS = 64
CHUNK_BYTES = 1 << 26

# ------------------------------------------------------------------ CSR (scipy.sparse) kernels
# Nonzeros (plus rows) per row chunk of the CSR passes at least.
CSR_MIN_CHUNK_NNZ = 1 << 16
# Column ranges of the CSR HVP's column split (many vectors of many parameters, see kernels/csr.py).
CSR_COLUMN_CHUNKS = 8
# The CSR operator forms H (pairs of nonzeros per row) up to this many parameters: H would be
# 512 MiB at 8192; beyond it only HVPs (CG) are offered.
CSR_HESSIAN_MAX_P = 8192

# ------------------------------------------------------------------ solvers
# solver="auto" forms and factors H up to this many parameters, CG on HVPs above.
AUTO_DIRECT_MAX_P = 2000
# LogisticRegression.fit: Newton steps by Cholesky up to this many parameters, above by truncated CG
# on HVPs (Newton-CG) with at most NEWTON_CG_MAX_ITER inner iterations per step.
NEWTON_DIRECT_MAX_P = AUTO_DIRECT_MAX_P
NEWTON_CG_MAX_ITER = 500
# The direct solver refuses H beyond this condition number (relative error ~ cond x 1e-16).
MAX_CONDITION = 1e13
# verify=True re-solves this many right-hand sides of every batch with the explicit inverse.
VERIFY_SAMPLE = 8

# ------------------------------------------------------------------ memory
DEFAULT_MEMORY_LIMIT = 1 << 30
# Right-hand sides per batch at most, whatever memory_limit allows.
MAX_BATCH = 1024
# Float64 vectors of length p that CG keeps per right-hand side (x, r, p, Hp, and two copies).
CG_VECTORS = 6
# top_k per test point: per-chunk heaps (MAX_CHUNKS x 2 lists x k x (value, index)) and a
# BLOCK_ROWS column of the block product per thread.
TOP_K_HEAP_BYTES = MAX_CHUNKS * 2 * 2 * 8
TOP_K_BLOCK_BYTES = BLOCK_ROWS * 8 * 2


def kernel(parallel=False):
    """Return the ``njit`` decorator shared by all kernels."""
    return njit(
        fastmath=set(FASTMATH),
        error_model="numpy",
        cache=CACHE,
        parallel=parallel,
        nogil=True,
    )
