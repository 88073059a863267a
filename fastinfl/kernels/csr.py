"""Numba kernels over CSR rows: one pass over the nonzeros for each quantity.

Contract shared by every kernel (the operator validates, kernels never do):

- X is given as its CSR arrays ``indptr`` (n + 1,), ``indices`` (nnz,) and
  ``data`` (nnz,): indices int32 or int64 in [0, d), data float32 or float64
  and finite, indptr non-decreasing from 0. Column indices within a row may be
  unsorted and may repeat: a repeated column counts as the sum of its entries
  (scipy's convention), which every kernel below gives because each is linear
  in the entries of a row (the Hessian counts the cross terms of a repeated
  column twice, see ``_hessian_rows``);
- ``d`` (the number of columns) is passed explicitly; parameters, vectors and
  outputs are float64, every sum is accumulated in float64; ``p == d + 1``
  means an intercept (x~ = [x, 1]), ``p == d`` none;
- per-row loss derivatives ``r`` (residuals) and ``w`` (curvature weights) as
  in ``kernels/dense.py``; matrices of k vectors are passed transposed, (p, k)
  C-contiguous, so that the k values of one column are contiguous (a nonzero
  x_ij touches row j of them).

Parallel drivers split the rows into chunks of about equal nonzeros (the
bounds come from ``indptr``); the number of chunks depends on the sizes
(n, nnz, p, k) only, never on the thread count, and per-chunk sums are merged
serially in a fixed order, so results are bitwise identical for any number of
Numba threads. Reductions into a (p, k) result keep one partial sum per chunk;
where those would be too large (k p beyond CHUNK_BYTES / 2, e.g. 16 vectors of
2^18 parameters) the HVP switches to a column split (see ``_hvp``).

Column indices are read through ``uintp`` before indexing: with a signed index
Numba adds a negative-index wraparound to every gather and scatter, which made
these loops about 2x slower than scipy's compiled ones (bench/RESULTS.md,
"Sparse features"). Indices are validated non-negative by the operator.
"""

import math

import numpy as np
from numba import prange, uintp

from .._config import CHUNK_BYTES, CSR_COLUMN_CHUNKS, CSR_HVP_MERGE_RATIO, CSR_MIN_CHUNK_NNZ, MAX_CHUNKS, kernel
from .cg import NORM_SQ_MAX, NORM_SQ_MIN
from .dense import ZERO, _add, _new_zeros, _zeros, heap_groups, heap_thresholds, merge_top_k, offer_block
from . import margin_loss

_MAX_CHUNKS = MAX_CHUNKS
_CHUNK_BYTES = CHUNK_BYTES
_MIN_NNZ = CSR_MIN_CHUNK_NNZ
_COLUMN_CHUNKS = CSR_COLUMN_CHUNKS
_MERGE_RATIO = CSR_HVP_MERGE_RATIO
# Parameters per task of the HVP's parallel merge of its chunks' partial sums.
_MERGE_COLUMNS = 4096
# Rows whose top-k values are gathered before one offer_block call (one call per row cost 10-30 % at m = 1).
_TOP_K_ROWS = 256
# Vectors (an even number) up to which the HVP runs groups of 4 and 2 (see _hvp_rows_4); the operator pads odd k.
HVP_GROUPED_MAX_K = 16


# ------------------------------------------------------------------ chunking
@kernel()
def chunk_count(n, nnz, acc_size, max_chunks):
    """Row chunks for a pass that keeps a partial sum of ``acc_size`` float64 per chunk.

    Enough nonzeros per chunk (CSR_MIN_CHUNK_NNZ), the partial sums within
    CHUNK_BYTES, and merging them (acc_size per chunk) at most 1/8 of the pass.
    """
    work = nnz + n
    c = work // _MIN_NNZ
    if acc_size > 0:
        c = min(c, _CHUNK_BYTES // (8 * acc_size), work // (8 * acc_size))
    return max(1, min(c, max_chunks))


@kernel()
def _bounds(indptr, nch):
    """(nch + 1,) row bounds splitting the rows into chunks of about equal nonzeros plus rows."""
    n = indptr.shape[0] - 1
    b = np.empty(nch + 1, np.int64)
    b[0] = 0
    b[nch] = n
    total = indptr[n] + n
    lo = 0
    for c in range(1, nch):
        target = (total * c) // nch
        # first row i >= lo with indptr[i] + i >= target (binary search)
        hi = n
        while lo < hi:
            mid = (lo + hi) // 2
            if indptr[mid] + mid < target:
                lo = mid + 1
            else:
                hi = mid
        b[c] = lo
    return b


@kernel()
def _row_dot(indptr, indices, data, i, v, intercept):
    """x_i . v[:d] + intercept, in float64."""
    z = intercept
    for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
        z += data[s] * v[uintp(indices[s])]
    return z


# ------------------------------------------------------------------ row maps
@kernel()
def _margins_rows(indptr, indices, data, coef, intercept, lo, hi, z_out):
    for i in range(lo, hi):
        z_out[i] = _row_dot(indptr, indices, data, i, coef, intercept)


@kernel(parallel=True)
def _margins(indptr, indices, data, coef, intercept, z_out, stop):
    """z_out (n,) = X @ coef + intercept."""
    n = indptr.shape[0] - 1
    nch = chunk_count(n, indptr[n], 0, 1 << 20)
    if nch == 1:
        _margins_rows(indptr, indices, data, coef, intercept, ZERO, n, z_out)
        return
    b = _bounds(indptr, nch)
    for c in prange(nch):
        if not stop[0]:
            _margins_rows(indptr, indices, data, coef, intercept, b[c], b[c + 1], z_out)


@kernel()
def _per_example_grads_rows(indptr, indices, data, y, family, coef, intercept, idx, lo, hi, out):
    d = coef.shape[0]
    p = out.shape[1]
    for a in range(lo, hi):
        i = idx[a]
        out[a, :] = 0.0
        r = margin_loss.residual(_row_dot(indptr, indices, data, i, coef, intercept), y[i], family)
        for s in range(indptr[i], indptr[i + 1]):
            out[a, indices[s]] += r * data[s]
        if p > d:
            out[a, d] = r


@kernel(parallel=True)
def _per_example_grads(indptr, indices, data, y, family, coef, intercept, idx, out, stop):
    """out (n_sel, p): row a is the loss gradient r_i x~_i of row i = idx[a] (dense)."""
    n_sel = idx.shape[0]
    nch = max(1, min(1 << 20, n_sel * out.shape[1] // (_MIN_NNZ * 4)))
    if nch == 1:
        _per_example_grads_rows(indptr, indices, data, y, family, coef, intercept, idx, 0, n_sel, out)
        return
    rows = (n_sel + nch - 1) // nch
    for c in prange(nch):
        if not stop[0]:
            _per_example_grads_rows(indptr, indices, data, y, family, coef, intercept, idx, c * rows,
                                    min(n_sel, (c + 1) * rows), out)


@kernel()
def _densify_rows(indptr, indices, data, idx, out, stop):
    """out (n_sel, >= d): x_i of rows i = idx[a] in its first d columns, densified (repeated columns summed)."""
    for a in range(idx.shape[0]):
        i = idx[a]
        for s in range(indptr[i], indptr[i + 1]):
            out[a, indices[s]] += data[s]


# ---------------------------------------------------------------- reductions
@kernel()
def _loss_grad_rows(indptr, indices, data, y, family, coef, intercept, lo, hi, grad_out, z_out):
    """Adds sum r_i x~_i over rows [lo, hi) to grad_out; stores z_out[lo:hi]; returns (loss sum, min signed margin)."""
    d = coef.shape[0]
    p = grad_out.shape[0]
    loss = 0.0
    mmin = np.inf
    rsum = 0.0
    for i in range(lo, hi):
        z = _row_dot(indptr, indices, data, i, coef, intercept)
        z_out[i] = z
        yi = y[i]
        li, r, _ = margin_loss.loss_residual_weight(z, yi, family)
        loss += li
        for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
            grad_out[uintp(indices[s])] += r * data[s]
        rsum += r
        m = z if yi > 0.5 else -z
        if m < mmin:
            mmin = m
    if p > d:
        grad_out[d] += rsum
    return loss, mmin


@kernel(parallel=True)
def _loss_grad(indptr, indices, data, y, family, coef, intercept, grad_out, z_out, stop):
    """Sum of losses (``family``: margin_loss), its gradient (into grad_out (p,)) and the margins (z_out (n,)), in one pass.

    Returns ``(loss, min_margin)`` as the dense ``_loss_grad`` does.
    """
    n = indptr.shape[0] - 1
    p = grad_out.shape[0]
    _zeros(grad_out)
    nch = chunk_count(n, indptr[n], p, _MAX_CHUNKS)
    if nch == 1:
        return _loss_grad_rows(indptr, indices, data, y, family, coef, intercept, ZERO, n, grad_out, z_out)
    b = _bounds(indptr, nch)
    acc = _new_zeros((nch, p))
    losses = _new_zeros((nch,))
    margins = _new_zeros((nch,))
    for c in prange(nch):
        if not stop[0]:
            losses[c], margins[c] = _loss_grad_rows(indptr, indices, data, y, family, coef, intercept, b[c], b[c + 1],
                                                    acc[c], z_out)
    loss = 0.0
    mmin = np.inf
    for c in range(nch):
        _add(grad_out, acc[c])
        loss += losses[c]
        mmin = min(mmin, margins[c])
    return loss, mmin


@kernel()
def _hessian_rows(indptr, indices, data, w, d, lo, hi, H_acc, stop):
    """Adds sum_{i in [lo, hi)} w_i x~_i x~_i^T to the lower triangle of H_acc (p, p).

    Pairs of nonzeros of each row: O(nnz_i^2) per row, no dense row. Each
    unordered pair of positions s < t goes to the lower-triangle entry of its
    two columns; when both are the same column (a repeated index) it stands
    for both orders and counts twice.
    """
    p = H_acc.shape[0]
    for i in range(lo, hi):
        if (i & 1023) == 0 and stop[0]:
            return
        wi = w[i]
        s0, s1 = indptr[i], indptr[i + 1]
        for s in range(s0, s1):
            a = indices[s]
            ws = wi * data[s]
            H_acc[a, a] += ws * data[s]
            for t in range(s + 1, s1):
                c = indices[t]
                v = ws * data[t]
                if c > a:
                    H_acc[c, a] += v
                elif c < a:
                    H_acc[a, c] += v
                else:
                    H_acc[a, a] += 2.0 * v
            if p > d:
                H_acc[d, a] += ws
        if p > d:
            H_acc[d, d] += wi


@kernel(parallel=True)
def _hessian_sum(indptr, indices, data, w, ridge, d, H_out, stop):
    """H_out (p, p) = sum_i w_i x~_i x~_i^T + diag(ridge), one pass over the nonzeros.

    Per-chunk (p, p) partial sums (within CHUNK_BYTES) merged in order; O(sum_i
    nnz_i^2) work and no n x p temporary. Returns early (meaningless H_out) once stop[0] is set.
    """
    n = indptr.shape[0] - 1
    p = H_out.shape[0]
    _zeros(H_out)
    nch = chunk_count(n, indptr[n], p * p, _MAX_CHUNKS)
    if nch == 1:
        _hessian_rows(indptr, indices, data, w, d, ZERO, n, H_out, stop)
    else:
        b = _bounds(indptr, nch)
        acc = _new_zeros((nch, p, p))
        for c in prange(nch):
            _hessian_rows(indptr, indices, data, w, d, b[c], b[c + 1], acc[c], stop)
        for c in range(nch):
            _add(H_out, acc[c])
    for j in range(p):
        H_out[j, j] += ridge[j]
        for k in range(j + 1, p):
            H_out[j, k] = H_out[k, j]


@kernel()
def _hvp_rows_1(indptr, indices, data, w, v, d, lo, hi, acc):
    """``_hvp_rows`` for one vector v (p,) into acc (p,)."""
    p = v.shape[0]
    b = v[d] if p > d else 0.0
    tsum = 0.0
    for i in range(lo, hi):
        s0, s1 = uintp(indptr[i]), uintp(indptr[i + 1])
        t = b
        for s in range(s0, s1):
            t += data[s] * v[uintp(indices[s])]
        t *= w[i]
        for s in range(s0, s1):
            acc[uintp(indices[s])] += data[s] * t
        tsum += t
    if p > d:
        acc[d] += tsum


@kernel()
def _hvp_rows_4(indptr, indices, data, w, Vt, d, lo, hi, acc):
    """``_hvp_rows`` for an even k: groups of 4 vectors (and a last pair) with their dot products in scalars.

    Each row's nonzeros are read from memory once and from L1 once more per
    group: faster than the general loop for a few vectors; from k = 32 on the
    general loop (vectorised over q) is faster.
    """
    p, k = Vt.shape
    ng = k // 4
    one, two, three = uintp(1), uintp(2), uintp(3)
    for i in range(lo, hi):
        s0, s1 = uintp(indptr[i]), uintp(indptr[i + 1])
        wi = w[i]
        for g in range(ng):
            q = uintp(4 * g)
            if p > d:
                t0, t1, t2, t3 = Vt[d, q], Vt[d, q + one], Vt[d, q + two], Vt[d, q + three]
            else:
                t0 = t1 = t2 = t3 = 0.0
            for s in range(s0, s1):
                x = data[s]
                j = uintp(indices[s])
                t0 += x * Vt[j, q]
                t1 += x * Vt[j, q + one]
                t2 += x * Vt[j, q + two]
                t3 += x * Vt[j, q + three]
            t0 *= wi
            t1 *= wi
            t2 *= wi
            t3 *= wi
            for s in range(s0, s1):
                x = data[s]
                j = uintp(indices[s])
                acc[j, q] += x * t0
                acc[j, q + one] += x * t1
                acc[j, q + two] += x * t2
                acc[j, q + three] += x * t3
            if p > d:
                acc[d, q] += t0
                acc[d, q + one] += t1
                acc[d, q + two] += t2
                acc[d, q + three] += t3
        if k % 4 == 2:  # a last pair
            q = uintp(k - 2)
            if p > d:
                t0, t1 = Vt[d, q], Vt[d, q + one]
            else:
                t0 = t1 = 0.0
            for s in range(s0, s1):
                x = data[s]
                j = uintp(indices[s])
                t0 += x * Vt[j, q]
                t1 += x * Vt[j, q + one]
            t0 *= wi
            t1 *= wi
            for s in range(s0, s1):
                x = data[s]
                j = uintp(indices[s])
                acc[j, q] += x * t0
                acc[j, q + one] += x * t1
            if p > d:
                acc[d, q] += t0
                acc[d, q + one] += t1


@kernel()
def _hvp_rows(indptr, indices, data, w, Vt, d, lo, hi, acc):
    """Adds sum_{i in [lo, hi)} w_i (x~_i . v_q) x~_i to column q of acc (p, k), for the columns v_q of Vt (p, k).

    Column indices are read as unsigned (``uintp``): Numba then skips the
    negative-index wraparound on every gather and scatter, which made the
    signed loops about 2x slower than scipy's.
    """
    p, k = Vt.shape
    if k == 1:
        _hvp_rows_1(indptr, indices, data, w, Vt.reshape(p), d, lo, hi, acc.reshape(p))
        return
    if k % 2 == 0 and k <= HVP_GROUPED_MAX_K:
        _hvp_rows_4(indptr, indices, data, w, Vt, d, lo, hi, acc)
        return
    ku = uintp(k)
    t = np.zeros(k)
    tsum = np.zeros(k)
    for i in range(lo, hi):
        s0, s1 = uintp(indptr[i]), uintp(indptr[i + 1])
        if p > d:
            for q in range(ku):
                t[q] = Vt[d, q]
        else:
            for q in range(ku):
                t[q] = 0.0
        for s in range(s0, s1):
            x = data[s]
            j = uintp(indices[s])
            for q in range(ku):
                t[q] += x * Vt[j, q]
        wi = w[i]
        for q in range(ku):
            t[q] *= wi
            tsum[q] += t[q]
        for s in range(s0, s1):
            x = data[s]
            j = uintp(indices[s])
            for q in range(ku):
                acc[j, q] += x * t[q]
    if p > d:
        for q in range(ku):
            acc[d, q] += tsum[q]


@kernel()
def hvp_chunks(n, nnz, p, k):
    """Row chunks of the HVP, each with a (p, k) partial sum: 1 means serial (or the column split).

    Enough nonzeros per chunk (CSR_MIN_CHUNK_NNZ); the partial sums within
    CHUNK_BYTES; zeroing and merging them (p per vector and chunk) at most
    1 / CSR_HVP_MERGE_RATIO of the pass's (nnz + n) per vector.
    """
    work = nnz + n
    c = min(work // _MIN_NNZ, _CHUNK_BYTES // (8 * p * k), work // (_MERGE_RATIO * p))
    return max(1, min(c, _MAX_CHUNKS))


@kernel()
def _hvp_project_rows(indptr, indices, data, w, Vt, d, lo, hi, T, t0):
    """T[i - t0, q] = w_i (x~_i . v_q) for rows [lo, hi)."""
    p, k = Vt.shape
    ku = uintp(k)
    for i in range(lo, hi):
        row = T[i - t0]
        if p > d:
            for q in range(ku):
                row[q] = Vt[d, q]
        else:
            for q in range(ku):
                row[q] = 0.0
        for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
            x = data[s]
            j = uintp(indices[s])
            for q in range(ku):
                row[q] += x * Vt[j, q]
        wi = w[i]
        for q in range(ku):
            row[q] *= wi


@kernel()
def _hvp_scatter_columns(indptr, indices, data, d, lo, hi, T, c0, c1, acc):
    """acc[j] += x_ij T[i - lo] for the nonzeros of rows [lo, hi) in columns c0 <= j < c1 (and the intercept d)."""
    k = T.shape[1]
    ku = uintp(k)
    for i in range(lo, hi):
        row = T[i - lo]
        for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
            j = indices[s]
            if j >= c0 and j < c1:
                x = data[s]
                ju = uintp(j)
                for q in range(ku):
                    acc[ju, q] += x * row[q]
        if d >= c0 and d < c1 and acc.shape[0] > d:
            for q in range(ku):
                acc[d, q] += row[q]


@kernel(parallel=True)
def _hvp(indptr, indices, data, w, ridge, Vt, d, out, stop):
    """out (p, k) = H V column by column: X~^T (w * (X~ v_q)) + ridge * v_q, one pass over the nonzeros.

    ``Vt`` (p, k) holds the k vectors as columns. Each row is read once: its k
    dot products x~_i . v_q (gathers from Vt), then its k scaled copies added
    into the result (scatters). Rows are split into :func:`hvp_chunks` chunks,
    each with its own (p, k) partial sum, merged in chunk order (in parallel
    over parameter ranges). When partial
    sums would not fit in CHUNK_BYTES (many vectors of many parameters) and
    the pass is large, a column split instead: row blocks of about
    CHUNK_BYTES / 2 of (rows, k) projections w_i (x~_i . v_q), computed in
    parallel over rows, then scattered in parallel over CSR_COLUMN_CHUNKS
    column ranges (each range reads the block's indices, keeps the nonzeros in
    its columns, and writes only its rows of ``out``): no partial sums.
    """
    n = indptr.shape[0] - 1
    p, k = Vt.shape
    nnz = indptr[n]
    nch = hvp_chunks(n, nnz, p, k)
    if nch > 1:
        b = _bounds(indptr, nch)
        acc = np.empty((nch, p, k))
        for c in prange(nch):
            a = acc[c]
            for j in range(p):
                for q in range(k):
                    a[j, q] = 0.0
            if not stop[0]:
                _hvp_rows(indptr, indices, data, w, Vt, d, b[c], b[c + 1], a)
        nb = (p + _MERGE_COLUMNS - 1) // _MERGE_COLUMNS
        for jb in prange(nb):  # merged in chunk order per element: same sums for any thread count
            for j in range(jb * _MERGE_COLUMNS, min(p, (jb + 1) * _MERGE_COLUMNS)):
                for q in range(k):
                    s = acc[0, j, q]
                    for c in range(1, nch):
                        s += acc[c, j, q]
                    out[j, q] = s + ridge[j] * Vt[j, q]
        return
    for j in range(p):
        for q in range(k):
            out[j, q] = 0.0
    if k == 1 or nnz + n < 2 * _MIN_NNZ or 16 * p * k <= _CHUNK_BYTES:
        _hvp_rows(indptr, indices, data, w, Vt, d, ZERO, n, out)
    else:  # Column split.
        block = max(1024, _CHUNK_BYTES // (16 * k))
        T = np.empty((min(block, n), k))
        ncol = _COLUMN_CHUNKS
        width = (p + ncol - 1) // ncol
        for b0 in range(0, n, block):
            if stop[0]:
                return
            b1 = min(n, b0 + block)
            nsub = max(1, min(_MAX_CHUNKS, (indptr[b1] - indptr[b0] + b1 - b0) // _MIN_NNZ))
            rows = (b1 - b0 + nsub - 1) // nsub
            for c in prange(nsub):
                _hvp_project_rows(indptr, indices, data, w, Vt, d, b0 + c * rows, min(b1, b0 + (c + 1) * rows),
                                  T, b0)
            for c in prange(ncol):
                _hvp_scatter_columns(indptr, indices, data, d, b0, b1, T, c * width, min(p, (c + 1) * width), out)
    for j in range(p):
        rj = ridge[j]
        for q in range(k):
            out[j, q] += rj * Vt[j, q]


# ------------------------------------------------------------ influence maps
@kernel()
def _row_times(indptr, indices, data, St, d, i, t):
    """t (m,) = x~_i St for CSR row i: St (p, m), its row d the intercept's when p = d + 1."""
    p, m = St.shape
    mu = uintp(m)
    if p > d:
        for q in range(m):
            t[q] = St[d, q]
    else:
        t[:] = 0.0
    for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
        x = data[s]
        j = uintp(indices[s])
        for q in range(mu):
            t[q] += x * St[j, q]


@kernel()
def _influence_rows(indptr, indices, data, r, St, idx, d, lo, hi, out):
    m = St.shape[1]
    t = np.empty(m)
    for a in range(lo, hi):
        i = idx[a]
        _row_times(indptr, indices, data, St, d, i, t)
        ri = r[i]
        for q in range(m):
            out[q, a] = -t[q] * ri


@kernel(parallel=True)
def _influence(indptr, indices, data, r, St, idx, d, out, stop):
    """out (m, len(idx)) = -(S_t . x~_i) r_i for i = idx[col]; ``St`` (p, m) the s_test rows as columns."""
    n_sel = idx.shape[0]
    m = St.shape[1]
    nch = max(1, min(1 << 20, n_sel * m // _MIN_NNZ))
    if nch == 1:
        _influence_rows(indptr, indices, data, r, St, idx, d, 0, n_sel, out)
        return
    rows = (n_sel + nch - 1) // nch
    for c in prange(nch):
        if not stop[0]:
            _influence_rows(indptr, indices, data, r, St, idx, d, c * rows, min(n_sel, (c + 1) * rows), out)


@kernel()
def _top_k_rows(indptr, indices, data, r, St, d, begin, end, neg_v, neg_i, pos_v, pos_i, stop):
    """Streams rows [begin, end) into per-test max-heaps (m, k): neg_* keeps the k smallest I, pos_* the k smallest -I."""
    T = np.empty((_TOP_K_ROWS, St.shape[1]))
    c = np.empty(_TOP_K_ROWS)
    lo_thr, hi_thr = heap_thresholds(neg_v, pos_v)
    for b0 in range(begin, end, _TOP_K_ROWS):
        if stop[0]:
            return
        mb = min(_TOP_K_ROWS, end - b0)
        for a in range(mb):
            _row_times(indptr, indices, data, St, d, b0 + a, T[a])
            c[a] = -r[b0 + a]
        offer_block(T, c, b0, mb, neg_v, neg_i, pos_v, pos_i, lo_thr, hi_thr)


@kernel(parallel=True)
def _top_k(indptr, indices, data, r, St, d, low_out, low_idx_out, high_out, high_idx_out, stop):
    """The k smallest and k largest I[t, i] = -(S_t . x~_i) r_i over all rows, per test point t.

    ``St`` (p, m): the s_test rows as columns. Outputs (m, k) as the dense
    ``_top_k``: ascending helpful, descending harmful, ties to the smaller
    index, slots without a point of the right sign -1 / NaN. Bounded max-heaps,
    one pair per thread; never the (m, n) matrix.
    """
    n = indptr.shape[0] - 1
    m = St.shape[1]
    k = low_out.shape[1]
    nch = chunk_count(n, indptr[n], 0, _MAX_CHUNKS)
    ng = heap_groups(nch)
    neg_v = np.full((ng, m, k), np.inf)
    neg_i = np.full((ng, m, k), n)
    pos_v = np.full((ng, m, k), np.inf)  # holds -I: the k largest I are the k smallest -I
    pos_i = np.full((ng, m, k), n)
    if ng == 1:
        _top_k_rows(indptr, indices, data, r, St, d, ZERO, n, neg_v[0], neg_i[0], pos_v[0], pos_i[0], stop)
    else:
        b = _bounds(indptr, nch)
        for g in prange(ng):  # a contiguous group of chunks per heap pair (see dense.heap_groups)
            lo, hi = b[g * nch // ng], b[(g + 1) * nch // ng]
            _top_k_rows(indptr, indices, data, r, St, d, lo, hi, neg_v[g], neg_i[g], pos_v[g], pos_i[g], stop)
    merge_top_k(neg_v, neg_i, pos_v, pos_i, n, low_out, low_idx_out, high_out, high_idx_out)


# ------------------------------------------------------------------ diagonal
@kernel()
def _diagonal_rows(indptr, indices, data, w, d, lo, hi, acc):
    """Adds sum_{i in [lo, hi)} w_i x~_ij^2 to acc[j] (p,); each row's columns must be distinct."""
    p = acc.shape[0]
    wsum = 0.0
    for i in range(lo, hi):
        wi = w[i]
        for s in range(uintp(indptr[i]), uintp(indptr[i + 1])):
            x = data[s]
            acc[uintp(indices[s])] += wi * (x * x)
        wsum += wi
    if p > d:
        acc[d] += wsum


@kernel(parallel=True)
def _diagonal(indptr, indices, data, w, ridge, d, out, stop):
    """out (p,) = diag(H) = sum_i w_i x~_i^2 + ridge, one pass over the nonzeros (the Jacobi preconditioner).

    Needs distinct columns within each row (a repeated column would count as
    the sum of the squares of its entries, not the square of their sum): the
    operator passes a canonical copy when X has repeats. Row chunks with (p,)
    partial sums as the HVP's (:func:`hvp_chunks`), merged in chunk order.
    """
    n = indptr.shape[0] - 1
    p = out.shape[0]
    nch = hvp_chunks(n, indptr[n], p, 1)
    if nch == 1:
        for j in range(p):
            out[j] = 0.0
        _diagonal_rows(indptr, indices, data, w, d, ZERO, n, out)
    else:
        b = _bounds(indptr, nch)
        acc = np.empty((nch, p))
        for c in prange(nch):
            a = acc[c]
            for j in range(p):
                a[j] = 0.0
            if not stop[0]:
                _diagonal_rows(indptr, indices, data, w, d, b[c], b[c + 1], a)
        for j in range(p):
            s = acc[0, j]
            for c in range(1, nch):
                s += acc[c, j]
            out[j] = s
    for j in range(p):
        out[j] += ridge[j]


# ------------------------------------------------------------------ CG vector updates
# The CSR operator's batched CG keeps its vectors as (p, k) columns, the HVP's layout, so that no
# iteration transposes or copies a (k, p) block; these serial passes fuse each iteration's updates.
@kernel()
def _cg_dots(P, HP, php, pn, hn):
    """php[q] = p_q . (H p)_q, pn[q] = ||p_q||, hn[q] = ||(H p)_q|| for the columns of P, HP (p, k).

    One sweep as before; a column whose sum of squares overflowed or fell among the subnormals (outside
    ``cg.NORM_SQ_MIN`` .. ``NORM_SQ_MAX``) gets its norm again from the column scaled by a power of two
    (issue 23: the curvature test's sqrt(|p|^2 |Hp|^2) overflowed past 1e154).
    """
    p, k = P.shape
    for q in range(k):
        php[q] = 0.0
        pn[q] = 0.0
        hn[q] = 0.0
    for j in range(p):
        for q in range(k):
            a = P[j, q]
            b = HP[j, q]
            php[q] += a * b
            pn[q] += a * a
            hn[q] += b * b
    for q in range(k):
        pn[q] = _column_norm(P, q, pn[q])
        hn[q] = _column_norm(HP, q, hn[q])


@kernel()
def _column_norm(A, q, sq):
    """||A[:, q]|| from its sum of squares ``sq`` when that is in range, else from the scaled column."""
    if NORM_SQ_MIN <= sq <= NORM_SQ_MAX or sq == 0.0:
        return math.sqrt(sq)
    m = 0.0
    for j in range(A.shape[0]):
        m = max(m, abs(A[j, q]))
    if m == 0.0 or not math.isfinite(m):
        return m
    e = math.frexp(m)[1]
    f = math.ldexp(1.0, -e)
    s = 0.0
    for j in range(A.shape[0]):
        t = A[j, q] * f
        s += t * t
    return math.sqrt(s) * math.ldexp(1.0, e)


@kernel()
def _cg_update(alpha, inv_diag, X, R, P, HP, rr_out, rz_out):
    """x_q += alpha_q p_q, r_q -= alpha_q (H p)_q; rr_out[q] = r_q . r_q, rz_out[q] = r_q . (M^-1 r_q)."""
    p, k = P.shape
    for q in range(k):
        rr_out[q] = 0.0
        rz_out[q] = 0.0
    for j in range(p):
        m = inv_diag[j]
        for q in range(k):
            a = alpha[q]
            X[j, q] += a * P[j, q]
            r = R[j, q] - a * HP[j, q]
            R[j, q] = r
            rr_out[q] += r * r
            rz_out[q] += r * r * m


@kernel()
def _cg_direction(beta, inv_diag, R, P):
    """p_q = M^-1 r_q + beta_q p_q (M^-1 = diag(inv_diag))."""
    p, k = P.shape
    for j in range(p):
        m = inv_diag[j]
        for q in range(k):
            P[j, q] = R[j, q] * m + beta[q] * P[j, q]


@kernel()
def _transpose(A, out):
    """out[j, i] = A[i, j] for A (r, c) into the first r columns of out (c, >= r), in 32 x 32 tiles.

    numpy's copy of a transposed (k, p) block walks one side with a stride of p (at p = 2^18 it took
    longer than the HVP around it); tiles keep both sides in cache.
    """
    r, c = A.shape
    for i0 in range(0, r, 32):
        i1 = min(r, i0 + 32)
        for j0 in range(0, c, 32):
            j1 = min(c, j0 + 32)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    out[j, i] = A[i, j]
