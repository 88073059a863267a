"""Numba kernels for multinomial (softmax) logistic regression over CSR rows: one pass over the nonzeros each.

Contract (the operator validates, kernels never do): X as its CSR arrays
``indptr``, ``indices``, ``data`` as in ``kernels/csr.py`` (int32 or int64
indices, float32 or float64 values, repeated columns counting as their sum);
``d`` the number of columns; sums in float64; column indices read through
``uintp``. Parameters and vectors are passed transposed, class values
contiguous per column: ``ThT`` (p, K) = Theta^T (row d the intercepts when
p = d + 1), k vectors of parameter space as ``Vt`` (p, k K) with column
q K + a the class-a part of vector q (a (k, P) array reshaped (k K, p) and
transposed). ``y`` int64 class codes; ``R`` (n, K) residuals pi_i - e_{y_i},
``Pi`` (n, K) probabilities (kernels/multinomial.py).

Drivers split the rows into chunks of about equal nonzeros (``csr._bounds``),
their number fixed by the sizes, per-chunk partial sums merged in chunk order:
results do not depend on the thread count. Each takes a trailing ``stop`` flag.
"""

import numpy as np
from numba import prange, uintp

from .._config import kernel
from .csr import _MAX_CHUNKS, _MIN_NNZ, _TOP_K_ROWS, _bounds, _row_times, chunk_count, hvp_chunks
from .dense import ZERO, _new_zeros, _zeros, heap_groups, heap_thresholds, merge_top_k, offer_block
from .multinomial import _row_stats


@kernel()
def _row_scatter(indptr, indices, data, i, u, d, acc):
    """acc[j] += x_ij u for the nonzeros of row i, and acc[d] += u when acc has an intercept row; acc (p, m)."""
    m = u.shape[0]
    mu = uintp(m)
    for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
        x = data[s]
        j = uintp(indices[s])
        for q in range(mu):
            acc[j, q] += x * u[q]
    if acc.shape[0] > d:
        for q in range(mu):
            acc[d, q] += u[q]


@kernel()
def _merge(acc, out):
    """out = sum over chunks of acc (nch, r, c), per element in chunk order."""
    nch, r, c = acc.shape
    for j in range(r):
        for q in range(c):
            s = acc[0, j, q]
            for h in range(1, nch):
                s += acc[h, j, q]
            out[j, q] = s


# ------------------------------------------------------------------ row maps
@kernel()
def _logits_rows(indptr, indices, data, ThT, d, lo, hi, Z_out):
    for i in range(lo, hi):
        _row_times(indptr, indices, data, ThT, d, i, Z_out[i])


@kernel(parallel=True)
def _mn_csr_logits(indptr, indices, data, ThT, d, Z_out, stop):
    """Z_out (n, K) = X~ Theta^T, the logits of every row."""
    n = indptr.shape[0] - 1
    nch = chunk_count(n, indptr[n], 0, 1 << 20)
    if nch == 1:
        _logits_rows(indptr, indices, data, ThT, d, ZERO, n, Z_out)
        return
    b = _bounds(indptr, nch)
    for c in prange(nch):
        if not stop[0]:
            _logits_rows(indptr, indices, data, ThT, d, b[c], b[c + 1], Z_out)


@kernel()
def _grads_rows(indptr, indices, data, y, ThT, d, idx, lo, hi, out):
    p, K = ThT.shape
    z = np.empty(K)
    r = np.empty(K)
    pi = np.empty(K)
    for a in range(lo, hi):
        i = idx[a]
        _row_times(indptr, indices, data, ThT, d, i, z)
        _row_stats(z, y[i], r, pi)
        out[a, :] = 0.0
        for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
            x = data[s]
            j = uintp(indices[s])
            for k in range(K):
                out[a, k * p + j] += r[k] * x
        if p > d:
            for k in range(K):
                out[a, k * p + d] = r[k]


@kernel(parallel=True)
def _mn_csr_grads(indptr, indices, data, y, ThT, d, idx, out, stop):
    """out (n_sel, K p): row a the cross-entropy gradient r_i (x) x~_i of row i = idx[a], class by class (dense)."""
    n_sel = idx.shape[0]
    nch = max(1, min(1 << 20, n_sel * out.shape[1] // (_MIN_NNZ * 4)))
    if nch == 1:
        _grads_rows(indptr, indices, data, y, ThT, d, idx, ZERO, n_sel, out)
        return
    rows = (n_sel + nch - 1) // nch
    for c in prange(nch):
        if not stop[0]:
            _grads_rows(indptr, indices, data, y, ThT, d, idx, c * rows, min(n_sel, (c + 1) * rows), out)


# ---------------------------------------------------------------- reductions
@kernel()
def _loss_grad_rows(indptr, indices, data, y, ThT, d, lo, hi, acc, Z_out):
    """Adds r_i x~_i^T (as (p, K)) over rows [lo, hi) to acc, stores the logits; returns (loss, min margin)."""
    K = ThT.shape[1]
    r = np.empty(K)
    pi = np.empty(K)
    loss = 0.0
    mmin = np.inf
    for i in range(lo, hi):
        z = Z_out[i]
        _row_times(indptr, indices, data, ThT, d, i, z)
        li, mi = _row_stats(z, y[i], r, pi)
        loss += li
        if mi < mmin:
            mmin = mi
        _row_scatter(indptr, indices, data, i, r, d, acc)
    return loss, mmin


@kernel(parallel=True)
def _mn_csr_loss_grad(indptr, indices, data, y, ThT, d, gradT_out, Z_out, stop):
    """Summed cross-entropy, its gradient (gradT_out (p, K) = sum_i x~_i r_i^T) and the logits Z_out (n, K).

    Returns ``(loss, min_margin)`` as ``kernels.multinomial._mn_loss_grad``.
    """
    n = indptr.shape[0] - 1
    p, K = ThT.shape
    _zeros(gradT_out)
    nch = chunk_count(n, indptr[n], p * K, _MAX_CHUNKS)
    if nch == 1:
        return _loss_grad_rows(indptr, indices, data, y, ThT, d, ZERO, n, gradT_out, Z_out)
    b = _bounds(indptr, nch)
    acc = _new_zeros((nch, p, K))
    losses = _new_zeros((nch,))
    margins = _new_zeros((nch,))
    for c in prange(nch):
        if not stop[0]:
            losses[c], margins[c] = _loss_grad_rows(indptr, indices, data, y, ThT, d, b[c], b[c + 1], acc[c],
                                                    Z_out)
    _merge(acc, gradT_out)
    loss = 0.0
    mmin = np.inf
    for c in range(nch):
        loss += losses[c]
        mmin = min(mmin, margins[c])
    return loss, mmin


@kernel()
def _curvature_block(pi, W):
    """W (K, K) = diag(pi) - pi pi^T, its diagonal pi_a (sum of the other pi_k) (no cancellation)."""
    K = pi.shape[0]
    for a in range(K):
        rest = 0.0
        for k in range(K):
            if k != a:
                rest += pi[k]
            W[a, k] = -pi[a] * pi[k]
        W[a, a] = pi[a] * rest


@kernel()
def _add_scaled(acc, v, W):
    """acc (K, K) += v W."""
    K = W.shape[0]
    for a in range(K):
        for b in range(K):
            acc[a, b] += v * W[a, b]


@kernel()
def _hessian_rows(indptr, indices, data, Pi, d, lo, hi, acc, stop):
    """Adds W_i x~_ij x~_il to acc[j, l] (p, p, K, K) for j >= l over rows [lo, hi) (pairs of nonzeros).

    As ``csr._hessian_rows``: each unordered pair of positions s < t goes to the
    lower-triangle entry of its two columns; a repeated column counts twice.
    """
    p = acc.shape[0]
    K = Pi.shape[1]
    W = np.empty((K, K))
    for i in range(lo, hi):
        if (i & 1023) == 0 and stop[0]:
            return
        _curvature_block(Pi[i], W)
        s0, s1 = indptr[i], indptr[i + 1]
        for s in range(s0, s1):
            a = indices[s]
            xs = np.float64(data[s])  # products of two float32 entries stay float64
            _add_scaled(acc[a, a], xs * xs, W)
            for t in range(s + 1, s1):
                c = indices[t]
                v = xs * data[t]
                if c > a:
                    _add_scaled(acc[c, a], v, W)
                elif c < a:
                    _add_scaled(acc[a, c], v, W)
                else:
                    _add_scaled(acc[a, a], 2.0 * v, W)
            if p > d:
                _add_scaled(acc[d, a], xs, W)
        if p > d:
            _add_scaled(acc[d, d], 1.0, W)


@kernel(parallel=True)
def _mn_csr_hessian(indptr, indices, data, Pi, ridge, d, H_out, stop):
    """H_out (P, P) = sum_i W_i (x) x~_i x~_i^T + diag(ridge), W_i = diag(pi_i) - pi_i pi_i^T, one pass.

    P = K p; entry (a p + j, b p + l). O(sum_i nnz_i^2 K^2) work; a (P, P)
    partial sum per chunk.
    """
    n = indptr.shape[0] - 1
    K = Pi.shape[1]
    P = H_out.shape[0]
    p = P // K
    nch = chunk_count(n, indptr[n], P * P, _MAX_CHUNKS)
    acc = _new_zeros((nch, p, p, K, K))
    if nch == 1:
        _hessian_rows(indptr, indices, data, Pi, d, ZERO, n, acc[0], stop)
    else:
        b = _bounds(indptr, nch)
        for c in prange(nch):
            _hessian_rows(indptr, indices, data, Pi, d, b[c], b[c + 1], acc[c], stop)
    for j in range(p):
        for jj in range(j + 1):
            for a in range(K):
                for bb in range(K):
                    s = acc[0, j, jj, a, bb]
                    for c in range(1, nch):
                        s += acc[c, j, jj, a, bb]
                    H_out[a * p + j, bb * p + jj] = s
                    H_out[bb * p + jj, a * p + j] = s
    for j in range(P):
        H_out[j, j] += ridge[j]


@kernel()
def _hvp_rows(indptr, indices, data, Pi, Vt, d, lo, hi, acc):
    """Adds x~_i (W_i t_iq)^T to the columns of vector q of acc (p, k K), t_iq[a] = x~_i . v_q[a]."""
    K = Pi.shape[1]
    kK = Vt.shape[1]
    k = kK // K
    t = np.empty(kK)
    for i in range(lo, hi):
        _row_times(indptr, indices, data, Vt, d, i, t)
        tot = 0.0  # sum of pi_i: 1, or sqrt(s_i) for a weighted row (kernels/multinomial.py)
        for a in range(K):
            tot += Pi[i, a]
        for q in range(k):
            s = 0.0
            for a in range(K):
                s += Pi[i, a] * t[q * K + a]
            for a in range(K):
                t[q * K + a] = Pi[i, a] * (tot * t[q * K + a] - s)
        _row_scatter(indptr, indices, data, i, t, d, acc)


@kernel(parallel=True)
def _mn_csr_hvp(indptr, indices, data, Pi, ridge, Vt, d, out, stop):
    """out (p, k K) = H V in the transposed layout of ``Vt`` (module docstring), one pass over the nonzeros.

    Per row: the k K projections x~_i . v_q[a] (gathers), scaled by W_i, added
    back (scatters). ``ridge`` (P,) class by class.
    """
    n = indptr.shape[0] - 1
    K = Pi.shape[1]
    p, kK = Vt.shape
    nch = hvp_chunks(n, indptr[n], p, kK)
    if nch == 1:
        _zeros(out)
        _hvp_rows(indptr, indices, data, Pi, Vt, d, ZERO, n, out)
    else:
        b = _bounds(indptr, nch)
        acc = _new_zeros((nch, p, kK))
        for c in prange(nch):
            if not stop[0]:
                _hvp_rows(indptr, indices, data, Pi, Vt, d, b[c], b[c + 1], acc[c])
        _merge(acc, out)
    for j in range(p):
        for col in range(kK):
            out[j, col] += ridge[(col % K) * p + j] * Vt[j, col]


@kernel()
def _diag_rows(indptr, indices, data, Wd, d, lo, hi, acc):
    K = Wd.shape[1]
    p = acc.shape[0]
    for i in range(lo, hi):
        for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
            x = np.float64(data[s])
            x2 = x * x
            j = uintp(indices[s])
            for a in range(K):
                acc[j, a] += Wd[i, a] * x2
        if p > d:
            for a in range(K):
                acc[d, a] += Wd[i, a]


@kernel(parallel=True)
def _mn_csr_diagonal(indptr, indices, data, Wd, d, out, stop):
    """out (p, K) = sum_i x~_ij^2 Wd[i, a]: diag(H) without the ridge, with Wd (n, K) = pi (1 - pi).

    Needs distinct columns within each row (the operator passes a canonical copy otherwise).
    """
    n = indptr.shape[0] - 1
    p, K = out.shape
    nch = hvp_chunks(n, indptr[n], p, K)
    if nch == 1:
        _zeros(out)
        _diag_rows(indptr, indices, data, Wd, d, ZERO, n, out)
        return
    b = _bounds(indptr, nch)
    acc = _new_zeros((nch, p, K))
    for c in prange(nch):
        if not stop[0]:
            _diag_rows(indptr, indices, data, Wd, d, b[c], b[c + 1], acc[c])
    _merge(acc, out)


# ------------------------------------------------------------ influence maps
@kernel()
def _influence_rows(indptr, indices, data, R, St, idx, d, lo, hi, out):
    K = R.shape[1]
    mK = St.shape[1]
    m = mK // K
    t = np.empty(mK)
    for a in range(lo, hi):
        i = idx[a]
        _row_times(indptr, indices, data, St, d, i, t)
        for q in range(m):
            v = 0.0
            for k in range(K):
                v += R[i, k] * t[q * K + k]
            out[q, a] = -v


@kernel(parallel=True)
def _mn_csr_influence(indptr, indices, data, R, St, idx, d, out, stop):
    """out (m, len(idx)) = -s_t . g(z_i) = -sum_a r_ia (s_t[a] . x~_i) for i = idx[col].

    ``St`` (p, m K): the s_test rows (m, P) reshaped (m K, p) and transposed;
    ``R`` (n, K) residuals (or any per-row class weights).
    """
    n_sel = idx.shape[0]
    nch = max(1, min(1 << 20, n_sel // 256))
    if nch == 1:
        _influence_rows(indptr, indices, data, R, St, idx, d, 0, n_sel, out)
        return
    rows = (n_sel + nch - 1) // nch
    for c in prange(nch):
        if not stop[0]:
            _influence_rows(indptr, indices, data, R, St, idx, d, c * rows, min(n_sel, (c + 1) * rows), out)


@kernel()
def _top_k_rows(indptr, indices, data, R, St, d, begin, end, neg_v, neg_i, pos_v, pos_i, stop):
    """Streams rows [begin, end) into per-test max-heaps (m, k), as ``csr._top_k_rows``."""
    K = R.shape[1]
    mK = St.shape[1]
    m = mK // K
    t = np.empty(mK)
    V = np.empty((_TOP_K_ROWS, m))
    c = np.full(_TOP_K_ROWS, -1.0)
    lo_thr, hi_thr = heap_thresholds(neg_v, pos_v)
    for b0 in range(begin, end, _TOP_K_ROWS):
        if stop[0]:
            return
        mb = min(_TOP_K_ROWS, end - b0)
        for a in range(mb):
            i = b0 + a
            _row_times(indptr, indices, data, St, d, i, t)
            for q in range(m):
                v = 0.0
                for k in range(K):
                    v += R[i, k] * t[q * K + k]
                V[a, q] = v
        offer_block(V, c, b0, mb, neg_v, neg_i, pos_v, pos_i, lo_thr, hi_thr)


@kernel(parallel=True)
def _mn_csr_top_k(indptr, indices, data, R, St, d, low_out, low_idx_out, high_out, high_idx_out, stop):
    """The k smallest and k largest I[t, i] = -s_t . g(z_i) over all rows, per test row (as ``csr._top_k``)."""
    n = indptr.shape[0] - 1
    m = St.shape[1] // R.shape[1]
    k = low_out.shape[1]
    nch = chunk_count(n, indptr[n], 0, _MAX_CHUNKS)
    ng = heap_groups(nch)
    neg_v = np.full((ng, m, k), np.inf)
    neg_i = np.full((ng, m, k), n)
    pos_v = np.full((ng, m, k), np.inf)
    pos_i = np.full((ng, m, k), n)
    if ng == 1:
        _top_k_rows(indptr, indices, data, R, St, d, ZERO, n, neg_v[0], neg_i[0], pos_v[0], pos_i[0], stop)
    else:
        b = _bounds(indptr, nch)
        for g in prange(ng):
            lo, hi = b[g * nch // ng], b[(g + 1) * nch // ng]
            _top_k_rows(indptr, indices, data, R, St, d, lo, hi, neg_v[g], neg_i[g], pos_v[g], pos_i[g], stop)
    merge_top_k(neg_v, neg_i, pos_v, pos_i, n, low_out, low_idx_out, high_out, high_idx_out)
