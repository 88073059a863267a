"""Numba kernels for multinomial (softmax) logistic regression: one pass over the rows of X each.

Contract shared by every kernel (the operator validates, kernels never do):

- ``X`` is a C-contiguous float32 or float64 (n, d) array; float32 stays
  float32, every sum is accumulated in float64 (rows are copied into float64
  blocks handed to BLAS);
- ``Theta`` (K, p) float64 holds the class rows theta_k = [w_k, b_k]
  (p == d + 1: x~ = [x, 1]; p == d: no intercept); a vector of parameter space
  has length P = K p, class by class (the flattened Theta);
- ``y`` int64 (n,) class codes in [0, K);
- per-row derivatives at the logits z_i = Theta x~_i (K,): ``R`` (n, K)
  residuals r_i = pi_i - e_{y_i} (so g(z_i) = r_i (x) x~_i) and ``Pi`` (n, K)
  probabilities pi_i = softmax(z_i), from which the curvature block
  W_i = diag(pi_i) - pi_i pi_i^T follows (H = sum_i W_i (x) x~_i x~_i^T + diag(ridge)),
  always formed as diag(pi_i (sum_k pi_ik)) - pi_i pi_i^T (diagonal: pi_ia times the sum of the
  other entries): the same for probabilities, and s_i W_i for a row of sample weight s_i whose
  ``Pi`` row is sqrt(s_i) pi_i (``R`` row s_i r_i), so weighted data need no other kernels;
- ``S`` (m, P) holds s_test rows; the kernels read it as (m K, p) (row t K + a
  is the class-a part of s_t).

Drivers split the rows into chunks exactly as the binary kernels (kernels/dense.py):
the number of chunks depends on the sizes only, per-chunk sums are merged
serially in a fixed order, so results do not depend on the thread count; one
chunk (n <= MIN_CHUNK_ROWS) runs serially. Every driver takes a trailing
``stop`` (1,) uint8 array and returns early (meaningless outputs) once it is set.

Stability: softmax and log-sum-exp subtract the largest logit; the loss is
(m - z_y) + log1p(sum of the other exp(z_k - m)) so that tiny losses keep
their digits; 1 - pi_a and pi_y - 1 are sums of the other classes'
probabilities (no cancellation).
"""

import math

import numpy as np
from numba import prange

from .._config import BLOCK_ROWS, MN_HESSIAN_BLOCK_ROWS, kernel
from .blas import syrk_lower
from .dense import (
    _CHUNK_BYTES,
    _MAX_CHUNKS,
    _MIN_CHUNK_ROWS,
    _UNBOUNDED_CHUNKS,
    ZERO,
    _add,
    _block_dot,
    _chunk_count,
    _load_block,
    _new_zeros,
    _zeros,
    heap_groups,
    heap_thresholds,
    merge_top_k,
    offer_block,
)

# Row bounds and chunk limits are typed int64 globals (as in kernels/dense.py): a Python int literal
# argument would compile each row kernel a second time, for Literal[int] besides int64.
_MN_HESSIAN_CHUNK_ROWS = np.int64(4 * MN_HESSIAN_BLOCK_ROWS)


# ------------------------------------------------------------------ scalars
@kernel()
def _row_stats(z, y, r_out, pi_out):
    """Softmax derivatives of one row of logits z (K,) with label y.

    Writes r_out = pi - e_y and pi_out = softmax(z); returns (loss, margin) with
    loss = -log softmax(z)_y and margin = z_y - max_{k != y} z_k.
    """
    K = z.shape[0]
    top = 0
    for k in range(1, K):
        if z[k] > z[top]:
            top = k
    m = z[top]
    s = 0.0
    s_other_top = 0.0
    s_other_y = 0.0
    other = -np.inf
    for k in range(K):
        e = math.exp(z[k] - m)
        pi_out[k] = e
        s += e
        if k != top:
            s_other_top += e
        if k != y:
            s_other_y += e
            if z[k] > other:
                other = z[k]
    for k in range(K):
        pi_out[k] /= s
        r_out[k] = pi_out[k]
    r_out[y] = -s_other_y / s
    loss = (m - z[y]) + math.log1p(s_other_top)
    return loss, z[y] - other


# ------------------------------------------------------------------ row maps
@kernel()
def _logits_rows(X, Theta, lo, hi, Z_out):
    """Z_out[lo:hi] = X~[lo:hi] Theta^T, one gemm per row block."""
    p = Theta.shape[1]
    A = np.empty((BLOCK_ROWS, p))
    ThT = Theta.T
    for b0 in range(lo, hi, BLOCK_ROWS):
        m = min(BLOCK_ROWS, hi - b0)
        _load_block(X, b0, b0 + m, A)
        np.dot(A[:m], ThT, Z_out[b0:b0 + m])


@kernel(parallel=True)
def _mn_logits(X, Theta, Z_out, stop):
    """Z_out (n, K) = X~ Theta^T: the logits of every row."""
    n = X.shape[0]
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, _UNBOUNDED_CHUNKS)
    rows = (n + nch - 1) // nch
    if nch == 1:
        _logits_rows(X, Theta, ZERO, n, Z_out)
    else:
        for c in prange(nch):
            if not stop[0]:
                _logits_rows(X, Theta, c * rows, min(n, (c + 1) * rows), Z_out)


@kernel()
def _mn_softmax(Z, out):
    """out (n, K) = softmax of each row of Z (may be Z itself)."""
    K = Z.shape[1]
    for i in range(Z.shape[0]):
        m = Z[i, 0]
        for k in range(1, K):
            m = max(m, Z[i, k])
        s = 0.0
        for k in range(K):
            out[i, k] = math.exp(Z[i, k] - m)
            s += out[i, k]
        for k in range(K):
            out[i, k] /= s


@kernel()
def _mn_losses(Z, y, out):
    """out (n,) = -log softmax(Z_i)_{y_i}."""
    K = Z.shape[1]
    r = np.empty(K)
    pi = np.empty(K)
    for i in range(Z.shape[0]):
        out[i] = _row_stats(Z[i], y[i], r, pi)[0]


@kernel()
def _mn_curvature(Z, y, R_out, Pi_out):
    """Residuals R_out (n, K) = pi_i - e_{y_i} and probabilities Pi_out (n, K) from the logits Z."""
    for i in range(Z.shape[0]):
        _row_stats(Z[i], y[i], R_out[i], Pi_out[i])


@kernel()
def _grads_rows(X, y, Theta, lo, hi, out):
    K, p = Theta.shape
    d = X.shape[1]
    z = np.zeros(K)
    r = np.empty(K)
    pi = np.empty(K)
    for i in range(lo, hi):
        for k in range(K):
            acc = Theta[k, d] if p > d else 0.0
            for j in range(d):
                acc += X[i, j] * Theta[k, j]
            z[k] = acc
        _row_stats(z, y[i], r, pi)
        for k in range(K):
            for j in range(d):
                out[i, k * p + j] = r[k] * X[i, j]
            if p > d:
                out[i, k * p + d] = r[k]


@kernel(parallel=True)
def _mn_per_example_grads(X, y, Theta, out, stop):
    """out (n, K p): row i is the cross-entropy gradient r_i (x) x~_i (no L2 term), class by class."""
    n = X.shape[0]
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, _UNBOUNDED_CHUNKS)
    rows = (n + nch - 1) // nch
    if nch == 1:
        _grads_rows(X, y, Theta, ZERO, n, out)
    else:
        for c in prange(nch):
            if not stop[0]:
                _grads_rows(X, y, Theta, c * rows, min(n, (c + 1) * rows), out)


# ---------------------------------------------------------------- reductions
@kernel()
def _loss_grad_rows(X, y, Theta, lo, hi, grad_acc, Z_out):
    """Adds sum_{i in [lo, hi)} r_i x~_i^T to grad_acc (K, p), stores the logits; returns (loss, min margin)."""
    K, p = Theta.shape
    A = np.empty((BLOCK_ROWS, p))
    R = np.empty((BLOCK_ROWS, K))
    U = np.empty((K, p))
    pi = np.empty(K)
    ThT = Theta.T
    loss = 0.0
    mmin = np.inf
    for b0 in range(lo, hi, BLOCK_ROWS):
        m = min(BLOCK_ROWS, hi - b0)
        _load_block(X, b0, b0 + m, A)
        Zb = Z_out[b0:b0 + m]
        np.dot(A[:m], ThT, Zb)
        for i in range(m):
            li, mi = _row_stats(Zb[i], y[b0 + i], R[i], pi)
            loss += li
            if mi < mmin:
                mmin = mi
        np.dot(R[:m].T, A[:m], U)
        grad_acc += U
    return loss, mmin


@kernel(parallel=True)
def _mn_loss_grad(X, y, Theta, grad_out, Z_out, stop):
    """Summed cross-entropy, its gradient and the logits, in one pass over X.

    Returns ``(loss, min_margin)``; ``grad_out`` (K, p) receives sum_i r_i x~_i^T,
    ``Z_out`` (n, K) the logits. ``min_margin`` = min_i (z_{i,y_i} - max_{k != y_i} z_ik):
    > 0 means Theta classifies every row correctly with a margin (separable data).
    """
    n = X.shape[0]
    K, p = Theta.shape
    _zeros(grad_out)
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, _MAX_CHUNKS)
    if nch == 1:
        return _loss_grad_rows(X, y, Theta, ZERO, n, grad_out, Z_out)
    rows = (n + nch - 1) // nch
    acc = _new_zeros((nch, K, p))
    losses = _new_zeros((nch,))
    margins = _new_zeros((nch,))
    for c in prange(nch):
        if not stop[0]:
            losses[c], margins[c] = _loss_grad_rows(X, y, Theta, c * rows, min(n, (c + 1) * rows), acc[c], Z_out)
    loss = 0.0
    mmin = np.inf
    for c in range(nch):
        _add(grad_out, acc[c])
        loss += losses[c]
        mmin = min(mmin, margins[c])
    return loss, mmin


@kernel()
def _hessian_rows(X, Pi, lo, hi, G, Dg, stop):
    """Adds the rows [lo, hi) to G (P, P) and Dg (K, p, p), lower triangles only.

    H = sum_i diag(pi_i) (x) x~_i x~_i^T - (pi_i (x) x~_i)(pi_i (x) x~_i)^T. Per row
    block A (x~ rows, float64): G += C^T C by one dsyrk of width P = K p, row i
    of C being [pi_i1 x~_i, ..., pi_iK x~_i] (its off-diagonal blocks are minus
    H's); the diagonal blocks come separately, without cancellation, as
    Dg[a] += sum pi_a (1 - pi_a) x~ x~^T (one dsyrk on sqrt(pi_a (1 - pi_a)) A,
    1 - pi_a summed from the other classes). (K^2 + K) n p^2 flops in all, in
    one wide dsyrk instead of K (K - 1) / 2 small gemms (measured: bench/RESULTS.md,
    "Multinomial").
    """
    K = Pi.shape[1]
    p = Dg.shape[1]
    nb = MN_HESSIAN_BLOCK_ROWS
    A = np.empty((nb, p))
    C = np.empty((nb, K * p))
    D = np.empty((nb, p))
    for b0 in range(lo, hi, nb):
        if stop[0]:
            return
        m = min(nb, hi - b0)
        _load_block(X, b0, b0 + m, A)
        for i in range(m):
            for a in range(K):
                pa = Pi[b0 + i, a]
                for j in range(p):
                    C[i, a * p + j] = pa * A[i, j]
        syrk_lower(C, m, G)
        for a in range(K):
            for i in range(m):
                pa = Pi[b0 + i, a]
                rest = 0.0  # 1 - pi_a as a sum of positive terms
                for k in range(K):
                    if k != a:
                        rest += Pi[b0 + i, k]
                sq = math.sqrt(pa * rest)
                for j in range(p):
                    D[i, j] = sq * A[i, j]
            syrk_lower(D, m, Dg[a])


@kernel()
def mn_hessian_chunk_count(n, P):
    """Row chunks of ``_mn_hessian``: one (P, P) buffer (and K (p, p) blocks) each, about CHUNK_BYTES in all."""
    return _chunk_count(n, _MN_HESSIAN_CHUNK_ROWS, min(_MAX_CHUNKS, max(1, _CHUNK_BYTES // (8 * P * P))))


@kernel(parallel=True)
def _mn_hessian(X, Pi, ridge, H_out, stop):
    """H_out (P, P) = sum_i (diag(pi_i) - pi_i pi_i^T) (x) x~_i x~_i^T + diag(ridge), one pass over X.

    ``Pi`` (n, K) probabilities; P = K p with p = H_out.shape[0] // K. Call
    under ``single_threaded_blas()`` when several chunks run (policy.run).
    """
    n = X.shape[0]
    K = Pi.shape[1]
    P = H_out.shape[0]
    p = P // K
    nch = mn_hessian_chunk_count(n, P)
    G = _new_zeros((P, P))
    Dg = _new_zeros((K, p, p))
    if nch == 1:
        _hessian_rows(X, Pi, ZERO, n, G, Dg, stop)
    else:
        rows = (n + nch - 1) // nch
        accG = _new_zeros((nch, P, P))
        accD = _new_zeros((nch, K, p, p))
        for c in prange(nch):
            _hessian_rows(X, Pi, c * rows, min(n, (c + 1) * rows), accG[c], accD[c], stop)
        for c in range(nch):
            _add(G, accG[c])
            _add(Dg, accD[c])
    assemble_hessian(G, Dg, ridge, H_out)


@kernel()
def assemble_hessian(G, Dg, ridge, H_out):
    """H_out (P, P) from the lower triangles of G (P, P) and Dg (K, p, p) of ``_hessian_rows``, plus diag(ridge)."""
    K, p = Dg.shape[0], Dg.shape[1]
    P = H_out.shape[0]
    for a in range(K):
        for j in range(p):
            for k in range(j + 1):  # diagonal blocks: Dg's lower triangle
                H_out[a * p + j, a * p + k] = Dg[a, j, k]
                H_out[a * p + k, a * p + j] = Dg[a, j, k]
        for b in range(a):  # off-diagonal blocks: minus G's (a > b: in G's lower triangle)
            for j in range(p):
                for k in range(p):
                    v = -G[a * p + j, b * p + k]
                    H_out[a * p + j, b * p + k] = v
                    H_out[b * p + k, a * p + j] = v
    for j in range(P):
        H_out[j, j] += ridge[j]


@kernel()
def _hvp_rows(X, Pi, V2, lo, hi, acc):
    """Adds sum_{i in [lo, hi)} (W_i t_iq) (x) x~_i to row block q of acc (k K, p), t_iq[a] = x~_i . v_q[a]."""
    K = Pi.shape[1]
    kK, p = V2.shape
    k = kK // K
    A = np.empty((BLOCK_ROWS, p))
    T = np.empty((BLOCK_ROWS, kK))
    U = np.empty((kK, p))
    V2T = V2.T
    for b0 in range(lo, hi, BLOCK_ROWS):
        m = min(BLOCK_ROWS, hi - b0)
        _load_block(X, b0, b0 + m, A)
        np.dot(A[:m], V2T, T[:m])
        for i in range(m):
            tot = 0.0  # sum of pi_i: 1, or sqrt(s_i) for rows of weight s_i (module docstring)
            for a in range(K):
                tot += Pi[b0 + i, a]
            for q in range(k):
                s = 0.0
                for a in range(K):
                    s += Pi[b0 + i, a] * T[i, q * K + a]
                for a in range(K):
                    T[i, q * K + a] = Pi[b0 + i, a] * (tot * T[i, q * K + a] - s)
        np.dot(T[:m].T, A[:m], U)
        acc += U


@kernel(parallel=True)
def _mn_hvp(X, Pi, ridge, V, out, stop):
    """out (k, P) = H v_q for every row v_q of V (k, P): all k vectors in one pass over X.

    Per row block two gemms: T = A V^T (the K projections of every vector),
    then T scaled by W_i = diag(pi_i) - pi_i pi_i^T row by row, then T^T A.
    """
    n = X.shape[0]
    K = Pi.shape[1]
    k, P = V.shape
    p = P // K
    for q in range(k):
        for j in range(P):
            out[q, j] = ridge[j] * V[q, j]
    V2 = V.reshape((k * K, p))
    out2 = out.reshape((k * K, p))
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, min(_MAX_CHUNKS, max(1, _CHUNK_BYTES // (8 * k * P))))
    if nch == 1:
        _hvp_rows(X, Pi, V2, ZERO, n, out2)
        return
    rows = (n + nch - 1) // nch
    acc = _new_zeros((nch, k * K, p))
    for c in prange(nch):
        if not stop[0]:
            _hvp_rows(X, Pi, V2, c * rows, min(n, (c + 1) * rows), acc[c])
    for c in range(nch):
        _add(out2, acc[c])


# ------------------------------------------------------------ influence maps
@kernel()
def _influence_rows(X, R, S2, idx, lo, hi, out):
    d = X.shape[1]
    K = R.shape[1]
    mK, p = S2.shape
    m = mK // K
    A = np.empty((hi - lo, p))
    for i in range(hi - lo):
        row = idx[lo + i]
        for j in range(d):
            A[i, j] = X[row, j]
        if p > d:
            A[i, d] = 1.0
    T = np.dot(A, S2.T)
    for i in range(hi - lo):
        row = idx[lo + i]
        for t in range(m):
            v = 0.0
            for a in range(K):
                v += R[row, a] * T[i, t * K + a]
            out[t, lo + i] = -v


@kernel(parallel=True)
def _mn_influence(X, R, S, idx, out, stop):
    """out (m, len(idx)) = -sum_a r_ia (s_t[a] . x~_i) = -s_t . g(z_i) for each training row i = idx[col].

    ``S`` (m, P) s_test rows, ``R`` (n, K) residuals (or any per-row class
    weights, e.g. the Newton-corrected ones). One gemm per gathered row block.
    """
    m, P = S.shape
    K = R.shape[1]
    S2 = S.reshape((m * K, P // K))
    n_sel = idx.shape[0]
    nblk = (n_sel + BLOCK_ROWS - 1) // BLOCK_ROWS
    if n_sel <= _MIN_CHUNK_ROWS:
        for b in range(nblk):
            if not stop[0]:
                _influence_rows(X, R, S2, idx, b * BLOCK_ROWS, min(n_sel, (b + 1) * BLOCK_ROWS), out)
    else:
        for b in prange(nblk):
            if not stop[0]:
                _influence_rows(X, R, S2, idx, b * BLOCK_ROWS, min(n_sel, (b + 1) * BLOCK_ROWS), out)


@kernel()
def _top_k_rows(X, R, S2T, begin, end, neg_v, neg_i, pos_v, pos_i, stop):
    """Streams rows [begin, end) into per-test max-heaps (m, k), as kernels.dense._top_k_rows."""
    K = R.shape[1]
    p, mK = S2T.shape
    m = mK // K
    A = np.empty((BLOCK_ROWS, p))
    T = np.empty((BLOCK_ROWS, mK))
    V = np.empty((BLOCK_ROWS, m))
    c = np.full(BLOCK_ROWS, -1.0)
    lo_thr, hi_thr = heap_thresholds(neg_v, pos_v)
    for b0 in range(begin, end, BLOCK_ROWS):
        if stop[0]:
            return
        mb = min(BLOCK_ROWS, end - b0)
        _block_dot(X, b0, b0 + mb, A, S2T, T)
        for i in range(mb):
            for t in range(m):
                v = 0.0
                for a in range(K):
                    v += R[b0 + i, a] * T[i, t * K + a]
                V[i, t] = v
        offer_block(V, c, b0, mb, neg_v, neg_i, pos_v, pos_i, lo_thr, hi_thr)


@kernel(parallel=True)
def _mn_top_k(X, R, S, low_out, low_idx_out, high_out, high_idx_out, stop):
    """The k smallest and k largest I[t, i] = -s_t . g(z_i) over all rows, per test row (see dense._top_k).

    Outputs (m, k): ``low_*`` ascending, ``high_*`` descending; ties to the
    smaller index; slots without a point of the right sign hold -1 and NaN.
    """
    n = X.shape[0]
    m, P = S.shape
    K = R.shape[1]
    k = low_out.shape[1]
    nch = _chunk_count(n, _MIN_CHUNK_ROWS, _MAX_CHUNKS)
    rows = (n + nch - 1) // nch
    ng = heap_groups(nch)
    neg_v = np.full((ng, m, k), np.inf)
    neg_i = np.full((ng, m, k), n)
    pos_v = np.full((ng, m, k), np.inf)
    pos_i = np.full((ng, m, k), n)
    S2T = np.ascontiguousarray(S.reshape((m * K, P // K)).T)
    if ng == 1:
        for c in range(nch):
            _top_k_rows(X, R, S2T, c * rows, min(n, (c + 1) * rows), neg_v[0], neg_i[0], pos_v[0], pos_i[0], stop)
    else:
        for g in prange(ng):  # a contiguous group of chunks per heap pair (see dense.heap_groups)
            for c in range(g * nch // ng, (g + 1) * nch // ng):
                _top_k_rows(X, R, S2T, c * rows, min(n, (c + 1) * rows), neg_v[g], neg_i[g], pos_v[g], pos_i[g],
                            stop)
    merge_top_k(neg_v, neg_i, pos_v, pos_i, n, low_out, low_idx_out, high_out, high_idx_out)


# ------------------------------------------------------- whole-block entry points (Dask tasks)
# Serial: the task scheduler runs blocks in parallel. Each takes the trailing ``stop`` of policy.run.
@kernel()
def loss_grad_block(X, y, Theta, grad_out, Z_out, stop):
    """grad_out (K, p) = sum_i r_i x~_i^T, Z_out (n, K) the logits; returns (loss sum, min margin)."""
    grad_out[:] = 0.0
    return _loss_grad_rows(X, y, Theta, ZERO, X.shape[0], grad_out, Z_out)


@kernel()
def logits_block(X, Theta, Z_out, stop):
    """Z_out (n, K) = X~ Theta^T."""
    _logits_rows(X, Theta, ZERO, X.shape[0], Z_out)


@kernel()
def grads_block(X, y, Theta, out, stop):
    """out (n, K p): per-example gradients r_i (x) x~_i."""
    _grads_rows(X, y, Theta, ZERO, X.shape[0], out)


@kernel()
def hessian_block(X, Pi, G, Dg, stop):
    """G (P, P) and Dg (K, p, p) (zeroed here): the block's lower-triangle partials for ``assemble_hessian``."""
    G[:] = 0.0
    Dg[:] = 0.0
    _hessian_rows(X, Pi, ZERO, X.shape[0], G, Dg, stop)


@kernel()
def hvp_block(X, Pi, V, out, stop):
    """out (k, P) = sum_i (W_i (x) x~_i x~_i^T) v_q over the block's rows (no ridge term)."""
    K = Pi.shape[1]
    k, P = V.shape
    out[:] = 0.0
    _hvp_rows(X, Pi, V.reshape((k * K, P // K)), ZERO, X.shape[0], out.reshape((k * K, P // K)))


@kernel()
def influence_block(X, R, S, out, stop):
    """out (m, n) = -s_t . g(z_i) for every row i of the block, BLOCK_ROWS at a time."""
    m, P = S.shape
    K = R.shape[1]
    S2 = S.reshape((m * K, P // K))
    n = X.shape[0]
    idx = np.arange(n)
    for lo in range(0, n, BLOCK_ROWS):
        if stop[0]:
            return
        _influence_rows(X, R, S2, idx, lo, min(n, lo + BLOCK_ROWS), out)


@kernel()
def top_k_block(X, R, S, neg_v, neg_i, pos_v, pos_i, stop):
    """The block's heaps (m, k) of its k smallest I and k smallest -I (rows local to the block)."""
    m, P = S.shape
    K = R.shape[1]
    S2T = np.ascontiguousarray(S.reshape((m * K, P // K)).T)
    _top_k_rows(X, R, S2T, ZERO, X.shape[0], neg_v, neg_i, pos_v, pos_i, stop)
