"""Numba kernels: one pass over the rows of X for each quantity.

Contract shared by every kernel (the API validates, kernels never do):

- ``X`` is a C-contiguous float32 or float64 array of shape (n, d); float32
  stays float32 (half the memory traffic), every sum is accumulated in float64;
- parameters, vectors and outputs are float64; ``p`` is the length of the
  parameter vector: ``p == d + 1`` means an intercept (x~ = [x, 1]),
  ``p == d`` means none (and ``intercept`` is 0);
- ``y`` is float64 with values in {0, 1}; all values are finite.

Parallel kernels split the rows into a number of chunks that depends on the
sizes only, never on the thread count, and merge the per-chunk sums serially in
a fixed order: results are bitwise identical for any number of Numba threads.
"""

import numpy as np
from numba import prange

from ._config import BLOCK_ROWS, kernel
from ._sigmoid import expit, hessian_weight, log_loss, residual

# Below this many right-hand sides the batched HVP runs as a fused loop per row
# (each row is read once and used for all k dot products and k updates); from
# it on, per row block as two BLAS calls. Measured at n = 10^5, d = 100.
HVP_BLAS_MIN_K = 8

_MIN_CHUNK_ROWS = 4096
_MAX_CHUNKS = 64
_CHUNK_BYTES = 1 << 26  # bound on the per-chunk Hessian / HVP sum buffers (64 MiB)


@kernel()
def _chunk_count(n, min_rows, max_chunks):
    """Number of row chunks: enough to feed many threads, independent of their count."""
    c = (n + min_rows - 1) // min_rows
    return max(1, min(c, max_chunks))


@kernel()
def _margin(X, i, coef, intercept):
    """z_i = x_i . coef + intercept, accumulated in float64."""
    z = intercept
    for j in range(X.shape[1]):
        z += X[i, j] * coef[j]
    return z


@kernel()
def _load_block(X, lo, hi, A):
    """Copy rows lo:hi of X into the float64 buffer A[:hi-lo], appending 1 when A has p = d + 1 columns."""
    d = X.shape[1]
    p = A.shape[1]
    for i in range(hi - lo):
        for j in range(d):
            A[i, j] = X[lo + i, j]
        if p > d:
            A[i, d] = 1.0


@kernel(parallel=True)
def _loss_grad(X, y, coef, intercept, grad_out):
    """Sum of log-losses and its gradient, in one pass over X.

    Returns ``(loss, min_margin)``; ``grad_out`` (p,) receives sum_i r_i x~_i
    with r_i = expit(z_i) - y_i. ``min_margin`` is min_i (2 y_i - 1) z_i: when it
    is > 0 the parameters separate the data (no L2-free optimum exists).
    """
    n, d = X.shape
    p = grad_out.shape[0]
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, _MAX_CHUNKS)
    rows = (n + nch - 1) // nch
    acc = np.zeros((nch, p))
    losses = np.zeros(nch)
    margins = np.full(nch, np.inf)
    for c in prange(nch):
        g = acc[c]
        loss = 0.0
        mmin = np.inf
        for i in range(c * rows, min(n, (c + 1) * rows)):
            z = _margin(X, i, coef, intercept)
            yi = y[i]
            loss += log_loss(z, yi)
            r = residual(z, yi)
            for j in range(d):
                g[j] += r * X[i, j]
            if p > d:
                g[d] += r
            m = z if yi > 0.5 else -z
            if m < mmin:
                mmin = m
        losses[c] = loss
        margins[c] = mmin
    grad_out[:] = 0.0
    loss = 0.0
    mmin = np.inf
    for c in range(nch):
        grad_out += acc[c]
        loss += losses[c]
        mmin = min(mmin, margins[c])
    return loss, mmin


@kernel(parallel=True)
def _margins(X, coef, intercept, z_out):
    """z_out (n,) = X @ coef + intercept."""
    for i in prange(X.shape[0]):
        z_out[i] = _margin(X, i, coef, intercept)


@kernel(parallel=True)
def _proba(X, coef, intercept, p_out):
    """p_out (n,) = expit(X @ coef + intercept)."""
    for i in prange(X.shape[0]):
        p_out[i] = expit(_margin(X, i, coef, intercept))


@kernel(parallel=True)
def _residuals_weights(X, y, coef, intercept, r_out, s_out):
    """Per-row loss derivatives: r_out = expit(z) - y, s_out = expit(z) expit(-z)."""
    for i in prange(X.shape[0]):
        z = _margin(X, i, coef, intercept)
        r_out[i] = residual(z, y[i])
        s_out[i] = hessian_weight(z)


@kernel(parallel=True)
def _per_example_grads(X, y, coef, intercept, out):
    """out (n, p): row i is the log-loss gradient r_i x~_i (no L2 term)."""
    n, d = X.shape
    p = out.shape[1]
    for i in prange(n):
        r = residual(_margin(X, i, coef, intercept), y[i])
        for j in range(d):
            out[i, j] = r * X[i, j]
        if p > d:
            out[i, d] = r


@kernel(parallel=True)
def _hessian_sum(X, s, ridge, H_out):
    """H_out (p, p) = sum_i s_i x~_i x~_i^T + diag(ridge), in one pass over X.

    Each chunk copies row blocks of BLOCK_ROWS into float64 buffers A and
    B = s * A and adds A^T B with one BLAS gemm into its own (p, p) sum; no
    n x p temporary. Call under ``single_threaded_blas()``.

    Performance (n = 10^6, d = 100, 2 cores, counting 2 n p^2 flops; dgemm
    measured 139 GFLOP/s): hand-written rank-4 updates of the upper triangle
    only reached 25 GFLOP/s, full gemm per block 76. Upper-triangle gemm tiles
    on a transposed block (half the flops) lost at d = 100 (34 GFLOP/s: strided
    copy, small gemms) and won only from d ~ 500 (85 vs 75), so symmetry is used
    only to mirror the result.
    """
    n = X.shape[0]
    p = H_out.shape[0]
    nch = _chunk_count(n, 4 * BLOCK_ROWS, min(_MAX_CHUNKS, max(1, _CHUNK_BYTES // (8 * p * p))))
    rows = (n + nch - 1) // nch
    acc = np.zeros((nch, p, p))
    for c in prange(nch):
        A = np.empty((BLOCK_ROWS, p))
        B = np.empty((BLOCK_ROWS, p))
        T = np.empty((p, p))
        hi_c = min(n, (c + 1) * rows)
        for lo in range(c * rows, hi_c, BLOCK_ROWS):
            m = min(BLOCK_ROWS, hi_c - lo)
            _load_block(X, lo, lo + m, A)
            for i in range(m):
                si = s[lo + i]
                for j in range(p):
                    B[i, j] = si * A[i, j]
            np.dot(A[:m].T, B[:m], T)
            acc[c] += T
    H_out[:] = 0.0
    for c in range(nch):
        H_out += acc[c]
    for j in range(p):
        H_out[j, j] += ridge[j]
        for k in range(j + 1, p):
            H_out[k, j] = H_out[j, k]  # A^T (s A) is symmetric only up to rounding: mirror


@kernel(parallel=True)
def _hvp(X, s, ridge, V, out):
    """out (k, p) = H V^T row by row: X~^T (s * (X~ v_q)) + ridge * v_q, one pass over X.

    For k < HVP_BLAS_MIN_K each row is used for all k vectors while in cache;
    from there on each row block does two gemms (call under
    ``single_threaded_blas()``).
    """
    n, d = X.shape
    k, p = V.shape
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, min(_MAX_CHUNKS, max(1, _CHUNK_BYTES // (8 * k * p))))
    rows = (n + nch - 1) // nch
    acc = np.zeros((nch, k, p))
    use_blas = k >= HVP_BLAS_MIN_K
    for c in prange(nch):
        hi_c = min(n, (c + 1) * rows)
        if use_blas:
            A = np.empty((BLOCK_ROWS, p))
            T = np.empty((BLOCK_ROWS, k))
            U = np.empty((k, p))
            for lo in range(c * rows, hi_c, BLOCK_ROWS):
                m = min(BLOCK_ROWS, hi_c - lo)
                _load_block(X, lo, lo + m, A)
                np.dot(A[:m], V.T, T[:m])
                for i in range(m):
                    si = s[lo + i]
                    for q in range(k):
                        T[i, q] *= si
                np.dot(T[:m].T, A[:m], U)
                acc[c] += U
        else:
            t = np.empty(k)
            for i in range(c * rows, hi_c):
                si = s[i]
                for q in range(k):
                    z = V[q, d] if p > d else 0.0
                    for j in range(d):
                        z += X[i, j] * V[q, j]
                    t[q] = si * z
                for q in range(k):
                    a = acc[c, q]
                    tq = t[q]
                    for j in range(d):
                        a[j] += tq * X[i, j]
                    if p > d:
                        a[d] += tq
    for q in range(k):
        for j in range(p):
            out[q, j] = ridge[j] * V[q, j]
    for c in range(nch):
        out += acc[c]


@kernel(parallel=True)
def _influence(X, r, S, idx, out):
    """out (m, len(idx)) = -(S x~_i) r_i for each training row i = idx[col].

    ``S`` (m, p) holds the s_test rows H^-1 g(z_test); ``r`` (n,) the training
    residuals, so that g(z_i) = r_i x~_i. Row blocks are gathered into a float64
    buffer and multiplied with one gemm (call under ``single_threaded_blas()``).
    """
    m, p = S.shape
    n_sel = idx.shape[0]
    d = X.shape[1]
    nblk = (n_sel + BLOCK_ROWS - 1) // BLOCK_ROWS
    for b in prange(nblk):
        lo = b * BLOCK_ROWS
        nb = min(BLOCK_ROWS, n_sel - lo)
        A = np.empty((nb, p))
        for i in range(nb):
            row = idx[lo + i]
            for j in range(d):
                A[i, j] = X[row, j]
            if p > d:
                A[i, d] = 1.0
        T = np.dot(S, A.T)
        for i in range(nb):
            ri = r[idx[lo + i]]
            for t in range(m):
                out[t, lo + i] = -T[t, i] * ri
