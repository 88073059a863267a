"""Configuration: the one kernel decorator and every tuning constant, in one place.

``FASTINFL_CACHE=0`` turns Numba's on-disk cache off (it is on by default so
that the first call in a new process loads machine code instead of compiling):
both the user's cache and the kernel cache shipped with the package
(``fastinfl/kernels/_cache.py``). ``FASTINFL_COMPILE_NOTICE=0`` silences the
one-line notice that a first call is about to compile for several seconds.
The measurements that chose each constant are in bench/RESULTS.md ("Tuning
constants") and bench/measurement_notes.md (the notes that were comments here);
re-measure before changing one.
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
# The compile notice: "auto" (logger always; stderr in an interactive shell or notebook), "0" (neither).
COMPILE_NOTICE = os.environ.get("FASTINFL_COMPILE_NOTICE", "auto").strip().lower()

# The compile notice's estimate: seconds to compile every kernel a dtype's binary jobs use (fit,
# Influence, influence, top_k, losses, CG; float32 after float64) on a cold cache, and of
# kernels._cache.probe_seconds(), in the same process on the reference machine (bench/RESULTS.md,
# "Compile time per user-level call": python -m bench.compile_time --per-call, load 3.6-4); a
# machine's estimate is these seconds times its probe over the reference probe.
COMPILE_SECONDS = {"float64": 23.1, "float32": 17.8}
COMPILE_PROBE_SECONDS = 0.123

# ------------------------------------------------------------------ kernels
# Rows per block in the kernels that copy a row block to a float64 buffer and
# hand it to BLAS (batched HVP, influence, top-k): 512 x p float64 (0.4 MiB at p = 100).
BLOCK_ROWS = 512
# Rows per dsyrk in the Hessian accumulation.
HESSIAN_BLOCK_ROWS = 1024
# Rows per block in the multinomial Hessian (kernels/multinomial.py): the scaled float64 block C (256 x K p:
# 2 MiB at K = 10, p = 101) and one (256 x p) block for the diagonal dsyrks.
MN_HESSIAN_BLOCK_ROWS = 256
# Batched HVP: below this many vectors a fused loop per row, from it on two gemms per row block.
HVP_BLAS_MIN_K = 8
# Row chunks of the parallel drivers: at least MIN_CHUNK_ROWS rows each (one chunk = serial call),
# at most MAX_CHUNKS, and per-chunk partial sums bounded by CHUNK_BYTES in all.
MIN_CHUNK_ROWS = 4096
MAX_CHUNKS = 64
CHUNK_BYTES = 1 << 26
# Arrays of at most this many values (a request's test rows) are checked for finiteness by one
# NumPy dot product instead of einsum or the parallel kernel (the cheapest at this size).
SMALL_ARRAY = 4096
# A pass runs as one serial chunk below this much work, in element visits: d per row for a pass
# over X, plus p k / 16 per row for k vectors through BLAS (the Hessian: k = p). Below it a parallel
# launch costs more than the pass, above all on a loaded machine (bench/measurement_notes.md).
PARALLEL_MIN_WORK = 1 << 20
# BLAS and LAPACK calls below this many flops run on one BLAS thread (the Cholesky solves, and the
# BLAS calls inside a serial kernel): a second thread gains nothing there and waits on a loaded machine.
BLAS_THREADS_MIN_FLOPS = 1 << 28

# ------------------------------------------------------------------ CSR (scipy.sparse) kernels
# Nonzeros (plus rows) per row chunk of the CSR passes at least.
CSR_MIN_CHUNK_NNZ = 1 << 16
# Column ranges of the CSR HVP's column split (many vectors of many parameters, see kernels/csr.py).
CSR_COLUMN_CHUNKS = 8
# HVP row chunks: zeroing and merging their (p, k) partial sums at most 1 / this of the pass's nnz + n
# (beyond it zeroing the partial sums costs more than the chunks gain).
CSR_HVP_MERGE_RATIO = 8

# ------------------------------------------------------------------ solvers
# solver="auto" forms and factors H while forming it costs at most this many passes over X (dense X:
# p passes, so up to p = 2000 parameters, the measured crossover; sparse X: sum_i nnz_i^2 / nnz, the
# mean nonzeros per row weighted by row, times K classes) and it fits in memory (_memory.py: H within
# memory_limit, its factorisation within the machine's available memory). CG on HVPs otherwise.
AUTO_DIRECT_MAX_P = 2000
# Dense (P, P) arrays alive at the peak of the direct solver's factorisation: H and its Cholesky factor
# (solvers.Direct.factor; the condition estimate's |H| is summed a block of rows at a time).
DIRECT_PEAK_COPIES = 2
# LogisticRegression.fit: Newton steps by Cholesky up to this many parameters, above by truncated CG
# on HVPs (Newton-CG) with at most NEWTON_CG_MAX_ITER inner iterations per step. A cost threshold,
# not a memory one: every Newton step forms and factors H anew (p^3 / 3 flops a step), where
# Influence's direct solver factors it once and reuses it for every solve.
NEWTON_DIRECT_MAX_P = AUTO_DIRECT_MAX_P
NEWTON_CG_MAX_ITER = 500
# The direct solver refuses H beyond this condition number (relative error ~ cond x 1e-16).
MAX_CONDITION = 1e13
# verify=True re-solves this many right-hand sides of every batch with the explicit inverse.
VERIFY_SAMPLE = 8

# Influence's check of the fit's stopping error (docs/accuracy.md) reads at most this many training rows,
# evenly spaced (all of them when n is smaller), to estimate the largest margin change max |x~_i . delta|.
FIT_ERROR_SAMPLE_ROWS = 4096

# group_change warns when a group's estimated relative error, (last Newton decrement / first)^2, exceeds
# this. The estimate tracks refits (bench/group_warning.py, RESULTS "group_change warning").
GROUP_CHANGE_ERROR = 0.1

# ------------------------------------------------- iterative solvers (issue 15)
# Measurements: bench/RESULTS.md, "Solver study" (python -m bench.solver_study).
# preconditioner="auto" for CG resolves to this (None, "jacobi" or "nystrom"): Nystrom needs the fewest
# passes once features are correlated, Jacobi helps only on unscaled features. (solver="auto" stays
# direct up to AUTO_DIRECT_MAX_P: fastest in every case there.)
AUTO_PRECONDITIONER = "nystrom"
# PCG reports non-positive curvature when p^T H p <= this x ||p|| ||H p|| (cond(H) along p > 1/this).
PCG_MIN_CURVATURE = 1e-15
# Nystrom preconditioner: adaptive rank starts here and doubles (reusing earlier HVPs) until the
# smallest kept eigenvalue is <= NYSTROM_TAIL x the largest, or a doubling lowered it by less than
# the factor NYSTROM_FLAT (flat spectrum), or the rank reaches min(p, NYSTROM_MAX_RANK).
NYSTROM_RANK0 = 16
NYSTROM_TAIL = 1e-3
NYSTROM_FLAT = 0.5
NYSTROM_MAX_RANK = 256
# Lanczos (Arnoldi, LiSSA's scale): vectors per block (one batched HVP pass each); a new direction
# shorter than LANCZOS_BREAKDOWN x ||H|| (estimate) after reorthogonalisation ends the basis.
LANCZOS_BLOCK = 8
LANCZOS_BREAKDOWN = 1e-10
# LiSSA: steps (passes over X) at most; scale = factor x the largest eigenvalue of H from this many
# Lanczos steps; a relative residual above LISSA_DIVERGED means the recursion diverges.
LISSA_DEPTH = 10000
LISSA_SCALE_FACTOR = 1.0
LISSA_LANCZOS_STEPS = 20
LISSA_DIVERGED = 1e3
# Arnoldi: default rank, Lanczos vectors = min(p, 2 rank + ARNOLDI_EXTRA_STEPS), ARNOLDI_BLOCK per
# pass (4: a quarter of the passes of single vectors, while larger blocks lose accuracy fast).
ARNOLDI_RANK = 50
ARNOLDI_EXTRA_STEPS = 20
ARNOLDI_BLOCK = 4

# ------------------------------------------------------------------ memory
DEFAULT_MEMORY_LIMIT = 1 << 30
# Right-hand sides per batch at most, whatever memory_limit allows.
MAX_BATCH = 1024
# Float64 vectors of length p that CG keeps per right-hand side (x, r, p, Hp, and two copies).
CG_VECTORS = 6
# top_k per test point: heaps (one pair per thread, at most one per chunk: MAX_CHUNKS x 2 lists x k x
# (value, index) bounds them whatever the thread count) and a BLOCK_ROWS column of the block product.
TOP_K_HEAP_BYTES = MAX_CHUNKS * 2 * 2 * 8
TOP_K_BLOCK_BYTES = BLOCK_ROWS * 8 * 2

# ------------------------------------------------------------------ dask
# Partial results (one per row block) combined this many at a time, in block order (a fixed tree).
DASK_SPLIT_EVERY = 8
# Influence-matrix blocks written to Zarr (influence_to_zarr) stay below this many bytes each.
INFLUENCE_BLOCK_BYTES = 1 << 27


# Every kernel made by ``kernel`` (Numba dispatchers), in definition order: the compile notice, the
# shipped cache, `fastinfl compile` and the benchmarks find the kernels here.
KERNELS = []
# The kernels' on-disk cache class (Numba's ``Cache`` interface), set by ``kernels._cache.install()``
# before the first kernel is decorated: the user's cache, then the one shipped with the package.
CACHE_CLASS = None


def kernel(parallel=False, inline=False):
    """Return the ``njit`` decorator shared by all kernels (each registered in ``KERNELS``; ``inline``:
    Numba inlines it into every caller)."""

    def decorate(func):
        custom = CACHE and CACHE_CLASS is not None
        dispatcher = njit(fastmath=set(FASTMATH), error_model="numpy", cache=CACHE and not custom,
                          parallel=parallel, nogil=True, inline="always" if inline else "never")(func)
        if custom:  # cache=True, with fastinfl's class in place of Numba's FunctionCache
            dispatcher._cache = CACHE_CLASS(dispatcher.py_func)
        KERNELS.append(dispatcher)
        return dispatcher

    return decorate
