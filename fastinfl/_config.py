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
# A pass runs as one serial chunk below this much work, in element visits: d per row for a pass
# over X, plus p k / 16 per row for k vectors through BLAS (the Hessian: k = p). About 4 ms serial;
# a parallel launch costs 0.05 ms on an idle machine but 40-150 ms with the other core loaded
# (bench/RESULTS.md, "End-to-end jobs").
PARALLEL_MIN_WORK = 1 << 22
# BLAS and LAPACK calls below this many flops run on one BLAS thread (the Cholesky solves, and the
# BLAS calls inside a serial kernel): a 51 x 100 cho_solve took 0.08 ms on one thread and 40-70 ms
# on OpenBLAS's two with the machine loaded (bench/RESULTS.md, "End-to-end jobs").
BLAS_THREADS_MIN_FLOPS = 1 << 28

# ------------------------------------------------------------------ solvers
# solver="auto" forms and factors H up to this many parameters, CG on HVPs above.
AUTO_DIRECT_MAX_P = 2000
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
