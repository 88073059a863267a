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
# Thread budget of the parallel kernels, shared by concurrent calls (operators/policy.py);
# empty means all of Numba's threads. fastinfl.set_num_threads changes it at run time.
NUM_THREADS = os.environ.get("FASTINFL_NUM_THREADS", "").strip() or None

# ------------------------------------------------------------------ kernels
# Rows per block in the kernels that copy a row block to a float64 buffer and
# hand it to BLAS (batched HVP, influence, top-k): 512 x p float64 (0.4 MiB at p = 100).
BLOCK_ROWS = 512
# Rows per dsyrk in the Hessian accumulation.
HESSIAN_BLOCK_ROWS = 1024
# Rows per block in the multinomial Hessian (kernels/multinomial.py): K scaled float64 copies of the
# block (K x 256 x p: 2 MiB at K = 10, p = 101) plus one for the diagonal dsyrk.
MN_HESSIAN_BLOCK_ROWS = 256
# Batched HVP: below this many vectors a fused loop per row, from it on two gemms per row block.
HVP_BLAS_MIN_K = 8
# Row chunks of the parallel drivers: at least MIN_CHUNK_ROWS rows each (one chunk = serial call),
# at most MAX_CHUNKS, and per-chunk partial sums bounded by CHUNK_BYTES in all.
MIN_CHUNK_ROWS = 4096
MAX_CHUNKS = 64
CHUNK_BYTES = 1 << 26

# ------------------------------------------------------------------ solvers
# solver="auto" forms and factors H up to this many parameters, CG on HVPs above.
AUTO_DIRECT_MAX_P = 2000
# The direct solver refuses H beyond this condition number (relative error ~ cond x 1e-16).
MAX_CONDITION = 1e13
# verify=True re-solves this many right-hand sides of every batch with the explicit inverse.
VERIFY_SAMPLE = 8

# group_change warns when its last Newton step's decrement exceeds this fraction of the first
# (docs/validation_groups.md: unconverged groups showed ratios of 0.5 to 16, converged ones < 0.05).
UNCONVERGED_DECREMENT_RATIO = 0.1

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

# ------------------------------------------------------------------ dask
# Partial results (one per row block) combined this many at a time, in block order (a fixed tree).
DASK_SPLIT_EVERY = 8
# Influence-matrix blocks written to Zarr (influence_to_zarr) stay below this many bytes each.
INFLUENCE_BLOCK_BYTES = 1 << 27


def kernel(parallel=False):
    """Return the ``njit`` decorator shared by all kernels."""
    return njit(
        fastmath=set(FASTMATH),
        error_model="numpy",
        cache=CACHE,
        parallel=parallel,
        nogil=True,
    )
