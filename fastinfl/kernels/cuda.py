"""Numba CUDA kernels: the passes of the operator layer on device-resident data.

Imported only when ``device="cuda"`` is asked for (``import fastinfl`` never
imports ``numba.cuda``). Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run
in Numba's CUDA simulator, which is how CI tests them without a GPU.

Contract shared by every kernel (the operator validates, kernels never do):

- ``X`` is a C-contiguous float32 or float64 device array (n, d); float32 is
  read as float32 (half the memory traffic) and converted to float64 on load:
  every product and every sum is float64 (``x~`` values are staged in float64
  shared memory, accumulators are float64 registers, partial sums are float64
  buffers reduced in a fixed order, so results do not depend on scheduling);
- ``p`` is the length of the parameter vector: ``p == d + 1`` adds the
  intercept column of ones (x~ = [x, 1]), ``p == d`` does not;
- row sets are given by an int64 index array ``idx`` (``arange(n)`` for all rows).

Tiling: a block is TX x TY = 32 x 4 threads. Row-product kernels (``rowdot``:
one value per (vector, row)) stage a TX-row x TK-column tile of X~ and a tile
of the vectors in shared memory, thread (tx, ty) owns row tx and QT vectors.
Row-reduction kernels (``xtw``, ``gram``: sums over rows) stage TX rows at a
time, thread (tx, ty) owns column tx and QK output rows; each block sums its
own chunk of rows into a partial buffer, reduced afterwards by ``reduce_parts``.
"""

import math
import os

import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda 0.30 registers np.row_stack, removed in NumPy 2.5
    np.row_stack = np.vstack

from numba import cuda, float64  # noqa: E402

from .margin_loss import POISSON  # noqa: E402

TX = 32  # rows per tile (row products) / columns per tile (reductions): one warp
# Warps per block (4 on a GPU; the tests run the simulator with 2: every simulated thread is a
# Python thread). Read once, at import: the shared-array shapes below are compile-time constants.
TY = int(os.environ.get("FASTINFL_CUDA_WARPS", "4"))
TK = 32  # columns per step of the row-product kernels
TPB = TX * TY  # threads per block of the one-dimensional kernels
# Shared-array shapes must be literal constants (numba-cuda does not fold TKP): padded widths.
TKP = TK + 1
TXP = TX + 1

from .cg import _MIN_CURVATURE as MIN_CURVATURE  # noqa: E402
from .cg import CONVERGED, MAX_ITER, NOT_POSITIVE  # noqa: E402

RUNNING = 3  # a right-hand side still iterating (device only; reported as MAX_ITER when max_iter stops it)


# ------------------------------------------------------------------- helpers
@cuda.jit(device=True)
def _xt(X, i, j, d, p):
    """x~_ij as float64: X[i, j] for j < d, 1 for the intercept column j == d < p, else 0 (padding)."""
    if j < d:
        return np.float64(X[i, j])
    if j < p:
        return 1.0
    return 0.0


@cuda.jit(device=True)
def _expit(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@cuda.jit(device=True)
def _log1pexp(z):
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@cuda.jit(device=True)
def _hessian_weight(z):
    e = math.exp(-abs(z))
    return e / ((1.0 + e) * (1.0 + e))


@cuda.jit(device=True)
def _loss_residual(z, y, family):
    """(loss, d loss / dz) of ``family`` (codes of ``margin_loss``: 1 Poisson, else logistic)."""
    if family == POISSON:
        mu = math.exp(z)
        return mu - y * z, mu - y
    if y > 0.5:
        return _log1pexp(-z), -_expit(-z)
    return _log1pexp(z), _expit(z)


@cuda.jit(device=True)
def _weight(z, family):
    """d^2 loss / dz^2 of ``family``."""
    if family == POISSON:
        return math.exp(z)
    return _hessian_weight(z)


# -------------------------------------------------------- row-product kernels
def _make_rowdot(QT):
    TT = TY * QT

    @cuda.jit
    def rowdot(X, idx, p, A, scale, sign, out):
        """out[t, c] = sign * scale[idx[c]] * (A[t] . x~_idx[c]) for A (m, p), out (m, n_sel).

        Grid (ceil(n_sel / TX), ceil(m / TT)), block (TX, TY). Margins (A = theta,
        scale = 1), influence (A = s_test rows, scale = r, sign = -1) and the first
        half of an HVP (A = V, scale = s).
        """
        n_sel = idx.shape[0]
        d = X.shape[1]
        m = A.shape[0]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        c0 = cuda.blockIdx.x * TX
        t0 = cuda.blockIdx.y * TT
        sx = cuda.shared.array((TX, TKP), float64)
        sa = cuda.shared.array((TT, TKP), float64)
        acc = cuda.local.array(QT, float64)
        for q in range(QT):
            acc[q] = 0.0
        for k0 in range(0, p, TK):
            j = k0 + tx
            for rr in range(ty, TX, TY):
                c = c0 + rr
                v = 0.0
                if c < n_sel:
                    v = _xt(X, idx[c], j, d, p)
                sx[rr, tx] = v
            for tt in range(ty, TT, TY):
                t = t0 + tt
                a = 0.0
                if t < m and j < p:
                    a = A[t, j]
                sa[tt, tx] = a
            cuda.syncthreads()
            for kk in range(TK):
                xv = sx[tx, kk]
                for q in range(QT):
                    acc[q] += sa[ty * QT + q, kk] * xv
            cuda.syncthreads()
        c = c0 + tx
        if c < n_sel:
            w = sign * scale[idx[c]]
            for q in range(QT):
                t = t0 + ty * QT + q
                if t < m:
                    out[t, c] = w * acc[q]

    rowdot.TT = TT
    return rowdot


rowdot_1 = _make_rowdot(1)  # m <= 4 vectors (margins, one HVP vector)
rowdot_4 = _make_rowdot(4)  # up to 16 vectors per block


def rowdot_for(m):
    """The row-product kernel for m vectors (fewer idle lanes for m <= 4)."""
    return rowdot_1 if m <= TY else rowdot_4


@cuda.jit
def loss_terms(z, y, family, r_out, s_out, loss_part, mmin_part):
    """Per-row r = d loss / dz and s = d^2 loss / dz^2; per-block sum of losses and min signed margin.

    1-D grid of TPB threads; loss_part / mmin_part (n_blocks,) are reduced by ``reduce_scalars``.
    """
    sl = cuda.shared.array(TPB, float64)
    sm = cuda.shared.array(TPB, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x * TPB + tid
    loss = 0.0
    mm = math.inf
    if i < z.shape[0]:
        zi = z[i]
        yi = y[i]
        loss, r_out[i] = _loss_residual(zi, yi, family)
        s_out[i] = _weight(zi, family)
        mm = zi if yi > 0.5 else -zi
    sl[tid] = loss
    sm[tid] = mm
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sl[tid] += sl[tid + step]
            sm[tid] = min(sm[tid], sm[tid + step])
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        loss_part[cuda.blockIdx.x] = sl[0]
        mmin_part[cuda.blockIdx.x] = sm[0]


@cuda.jit
def reduce_scalars(loss_part, mmin_part, out):
    """out[0] = sum(loss_part), out[1] = min(mmin_part), by one block in a fixed order."""
    sl = cuda.shared.array(TPB, float64)
    sm = cuda.shared.array(TPB, float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    mm = math.inf
    for b in range(tid, loss_part.shape[0], TPB):
        acc += loss_part[b]
        mm = min(mm, mmin_part[b])
    sl[tid] = acc
    sm[tid] = mm
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sl[tid] += sl[tid + step]
            sm[tid] = min(sm[tid], sm[tid + step])
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        out[0] = sl[0]
        out[1] = sm[0]


@cuda.jit(device=True)
def _block_sum(sh, tid):
    """Tree sum of a block's TPB values sh (shared float64) in a fixed order; valid in every thread."""
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    return sh[0]


@cuda.jit
def sum_squares(a, part):
    """part[b] = sum of a**2 in float64 over block b's grid-stride slice of a (size,) (inf or NaN where a
    holds non-finite values). 1-D grid of TPB threads.

    X (n, d) comes as its flat view (C-contiguous): consecutive threads read
    consecutive addresses, and no index is divided into a row and a column.
    """
    sh = cuda.shared.array(TPB, float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for e in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        v = np.float64(a[e])
        acc += v * v
    sh[tid] = acc
    total = _block_sum(sh, tid)
    if tid == 0:
        part[cuda.blockIdx.x] = total


@cuda.jit
def labels(y, out, part):
    """out (n,) = y (n,) as float64 (y bool, integer or float); part[b] = how many values of block b's
    grid-stride slice are neither 0 nor 1 (NaN included). 1-D grid of TPB threads.
    """
    sh = cuda.shared.array(TPB, float64)
    tid = cuda.threadIdx.x
    bad = 0.0
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        v = np.float64(y[i])
        out[i] = v
        if v != 0.0 and v != 1.0:
            bad += 1.0
    sh[tid] = bad
    total = _block_sum(sh, tid)
    if tid == 0:
        part[cuda.blockIdx.x] = total


@cuda.jit
def residuals_weights(z, y, family, r_out, s_out):
    """r_out = d loss / dz, s_out = d^2 loss / dz^2 (1-D grid)."""
    i = cuda.grid(1)
    if i < z.shape[0]:
        _, r_out[i] = _loss_residual(z[i], y[i], family)
        s_out[i] = _weight(z[i], family)


@cuda.jit(device=True)
def _row_col():
    """(row, column) of a thread in the 2-D element grid: rows on grid x (no 65535 limit), columns on y."""
    return (cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y,
            cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x)


@cuda.jit
def iota(out):
    """out[i] = i."""
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = i


@cuda.jit
def fill(out, value):
    """out[i] = value."""
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = value


@cuda.jit
def gather_rows(X, idx, p, w, out):
    """out[c, j] = w[idx[c]] * x~_idx[c], j as float64 (w = r: per-example gradients; w = 1: rows). Element grid."""
    c, j = _row_col()
    if c < idx.shape[0] and j < p:
        i = idx[c]
        out[c, j] = w[i] * _xt(X, i, j, X.shape[1], p)


@cuda.jit
def gather_residuals(X, idx, p, z, y, family, out):
    """out[c, j] = r(z[c], y[idx[c]]) x~_idx[c], j: per-example gradients from the margins z (n_sel,)."""
    c, j = _row_col()
    if c < idx.shape[0] and j < p:
        i = idx[c]
        out[c, j] = _loss_residual(z[c], y[i], family)[1] * _xt(X, i, j, X.shape[1], p)


@cuda.jit
def scaled_rows(X, lo, hi, s, p, B):
    """B[i - lo, j] = sqrt(s_i) x~_ij in float64 for rows [lo, hi): the cuBLAS Hessian's input block."""
    c, j = _row_col()
    i = lo + c
    if i < hi and j < p:
        B[c, j] = math.sqrt(s[i]) * _xt(X, i, j, X.shape[1], p)


# ------------------------------------------------------ row-reduction kernels
def _make_xtw(QK):
    TQ = TY * QK

    @cuda.jit
    def xtw(X, lo, hi, p, W, rows_per_chunk, part):
        """part[c, q, j] = sum over rows i of chunk c of [lo, hi) of W[q, i - lo] * x~_ij.

        Grid (n_chunks, ceil(p / TX), ceil(k / TQ)), block (TX, TY). The gradient
        (W = r, k = 1) and the second half of an HVP (W = s * (X~ V^T)^T).
        """
        d = X.shape[1]
        k = W.shape[0]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        c = cuda.blockIdx.x
        j0 = cuda.blockIdx.y * TX
        q0 = cuda.blockIdx.z * TQ
        r_lo = lo + c * rows_per_chunk
        r_hi = min(hi, r_lo + rows_per_chunk)
        sx = cuda.shared.array((TX, TXP), float64)
        sw = cuda.shared.array((TQ, TXP), float64)
        acc = cuda.local.array(QK, float64)
        for qk in range(QK):
            acc[qk] = 0.0
        j = j0 + tx
        for r0 in range(r_lo, r_hi, TX):
            for rr in range(ty, TX, TY):
                i = r0 + rr
                v = 0.0
                if i < r_hi:
                    v = _xt(X, i, j, d, p)
                sx[rr, tx] = v
            for qq in range(ty, TQ, TY):
                q = q0 + qq
                i = r0 + tx
                w = 0.0
                if q < k and i < r_hi:
                    w = W[q, i - lo]
                sw[qq, tx] = w
            cuda.syncthreads()
            for rr in range(TX):
                xv = sx[rr, tx]
                for qk in range(QK):
                    acc[qk] += sw[ty * QK + qk, rr] * xv
            cuda.syncthreads()
        if j < p:
            for qk in range(QK):
                q = q0 + ty * QK + qk
                if q < k:
                    part[c, q, j] = acc[qk]

    xtw.TQ = TQ
    return xtw


xtw_1 = _make_xtw(1)
xtw_4 = _make_xtw(4)


def xtw_for(k):
    return xtw_1 if k <= TY else xtw_4


GRAM_QK = 8
GRAM_TA = TY * GRAM_QK  # 32: square tiles
GRAM_TAP = GRAM_TA + 1


@cuda.jit
def gram(X, s, p, rows_per_chunk, part):
    """part[c, a, b] = sum over rows i of chunk c of s_i x~_ia x~_ib on lower-triangle tiles (a-tile >= b-tile).

    The Hessian without cuBLAS. Grid (n_chunks, ceil(p / 32), ceil(p / 32)), block (TX, TY).
    """
    n = X.shape[0]
    d = X.shape[1]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    c = cuda.blockIdx.x
    b0 = cuda.blockIdx.y * TX
    a0 = cuda.blockIdx.z * GRAM_TA
    if a0 + GRAM_TA <= b0:  # tile strictly above the diagonal
        return
    r_lo = c * rows_per_chunk
    r_hi = min(n, r_lo + rows_per_chunk)
    sb = cuda.shared.array((TX, TXP), float64)
    sa = cuda.shared.array((TX, GRAM_TAP), float64)
    acc = cuda.local.array(GRAM_QK, float64)
    for q in range(GRAM_QK):
        acc[q] = 0.0
    for r0 in range(r_lo, r_hi, TX):
        for rr in range(ty, TX, TY):
            i = r0 + rr
            vb = 0.0
            if i < r_hi:
                vb = _xt(X, i, b0 + tx, d, p)
            sb[rr, tx] = vb
            for aa in range(tx, GRAM_TA, TX):
                va = 0.0
                if i < r_hi:
                    va = s[i] * _xt(X, i, a0 + aa, d, p)
                sa[rr, aa] = va
        cuda.syncthreads()
        for rr in range(TX):
            xb = sb[rr, tx]
            for q in range(GRAM_QK):
                acc[q] += sa[rr, ty * GRAM_QK + q] * xb
        cuda.syncthreads()
    b = b0 + tx
    if b < p:
        for q in range(GRAM_QK):
            a = a0 + ty * GRAM_QK + q
            if a < p:
                part[c, a, b] = acc[q]


@cuda.jit
def reduce_parts(part, n_parts, accumulate, out):
    """out[q, j] (+)= sum_{c < n_parts} part[c, q, j], in order of c (deterministic). 2-D grid."""
    j, q = cuda.grid(2)
    if q < out.shape[0] and j < out.shape[1]:
        acc = 0.0
        for c in range(n_parts):
            acc += part[c, q, j]
        if accumulate:
            out[q, j] += acc
        else:
            out[q, j] = acc


@cuda.jit
def add_ridge(ridge, V, out):
    """out[q, j] += ridge[j] * V[q, j]. 2-D grid."""
    j, q = cuda.grid(2)
    if q < out.shape[0] and j < out.shape[1]:
        out[q, j] += ridge[j] * V[q, j]


@cuda.jit
def finish_hessian(H, ridge):
    """H += diag(ridge); mirror the lower triangle into the upper one. 2-D grid over (p, p)."""
    b, a = cuda.grid(2)
    p = H.shape[0]
    if a < p and b < p:
        if a == b:
            H[a, a] += ridge[a]
        elif b > a:
            H[a, b] = H[b, a]


# ------------------------------------------------------------------ top-k
@cuda.jit(device=True)
def _worse(v1, i1, v2, i2):
    """(v1, i1) ranks after (v2, i2): larger value, or equal value and larger index (as the CPU kernel)."""
    return v1 > v2 or (v1 == v2 and i1 > i2)


@cuda.jit(device=True)
def _sift_down(vals, idxs, size):
    v = vals[0]
    i = idxs[0]
    j = 0
    while True:
        c = 2 * j + 1
        if c >= size:
            break
        if c + 1 < size and _worse(vals[c + 1], idxs[c + 1], vals[c], idxs[c]):
            c += 1
        if not _worse(vals[c], idxs[c], v, i):
            break
        vals[j] = vals[c]
        idxs[j] = idxs[c]
        j = c
    vals[j] = v
    idxs[j] = i


@cuda.jit(device=True)
def _offer(vals, idxs, v, i):
    """Keep the k smallest (value, index) pairs in the max-heap vals/idxs (root: the worst kept)."""
    if _worse(vals[0], idxs[0], v, i):
        vals[0] = v
        idxs[0] = i
        _sift_down(vals, idxs, vals.shape[0])


TOPK_QT = 8
TOPK_TT = TY * TOPK_QT  # test points per block


@cuda.jit
def top_k_rows(X, R, p, S, rows_per_chunk, lo_v, lo_i, hi_v, hi_i):
    """Stream the rows of chunk c into per-(chunk, test) heaps: lo_* keep the k smallest I, hi_* the k smallest -I.

    I[t, i] = -sum_a (S[t K + a] . x~_i) R[a, i] for residuals R (K, n) of a loss
    of K margins (one-margin losses: K = 1, R = r (1, n), S (m, p)); S (m K, p)
    holds the class parts of each s_test row. Grid (n_chunks, ceil(m / TOPK_TT)),
    block (TX, TY). Heaps (n_chunks, m, k) are filled with (inf, n) beforehand.
    Per row tile the block computes the TX x TOPK_TT values like ``rowdot``
    (class by class), stages them in shared memory, and 2 * TOPK_TT threads
    (one per heap) offer them: a candidate costs one comparison unless it beats
    the worst kept (O(log k) then).
    """
    n = X.shape[0]
    d = X.shape[1]
    K = R.shape[0]
    m = S.shape[0] // K
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    c = cuda.blockIdx.x
    t0 = cuda.blockIdx.y * TOPK_TT
    r_lo = c * rows_per_chunk
    r_hi = min(n, r_lo + rows_per_chunk)
    sx = cuda.shared.array((TX, TKP), float64)
    sa = cuda.shared.array((TOPK_TT, TKP), float64)
    sv = cuda.shared.array((TOPK_TT, TXP), float64)
    acc = cuda.local.array(TOPK_QT, float64)
    tot = cuda.local.array(TOPK_QT, float64)
    for r0 in range(r_lo, r_hi, TX):
        for q in range(TOPK_QT):
            tot[q] = 0.0
        for cls in range(K):
            for q in range(TOPK_QT):
                acc[q] = 0.0
            for k0 in range(0, p, TK):
                j = k0 + tx
                for rr in range(ty, TX, TY):
                    i = r0 + rr
                    v = 0.0
                    if i < r_hi:
                        v = _xt(X, i, j, d, p)
                    sx[rr, tx] = v
                for tt in range(ty, TOPK_TT, TY):
                    t = t0 + tt
                    a = 0.0
                    if t < m and j < p:
                        a = S[t * K + cls, j]
                    sa[tt, tx] = a
                cuda.syncthreads()
                for kk in range(TK):
                    xv = sx[tx, kk]
                    for q in range(TOPK_QT):
                        acc[q] += sa[ty * TOPK_QT + q, kk] * xv
                cuda.syncthreads()
            i = r0 + tx
            ri = 0.0
            if i < r_hi:
                ri = R[cls, i]
            for q in range(TOPK_QT):
                tot[q] += acc[q] * ri
        for q in range(TOPK_QT):
            sv[ty * TOPK_QT + q, tx] = -tot[q]
        cuda.syncthreads()
        if tid < 2 * TOPK_TT:
            tt = tid % TOPK_TT
            t = t0 + tt
            if t < m:
                nrow = min(TX, r_hi - r0)
                if tid < TOPK_TT:
                    hv = lo_v[c, t]
                    hix = lo_i[c, t]
                    for rr in range(nrow):
                        v = sv[tt, rr]
                        if v <= hv[0]:
                            _offer(hv, hix, v, r0 + rr)
                else:
                    hv = hi_v[c, t]
                    hix = hi_i[c, t]
                    for rr in range(nrow):
                        v = -sv[tt, rr]
                        if v <= hv[0]:
                            _offer(hv, hix, v, r0 + rr)
        cuda.syncthreads()


@cuda.jit
def top_k_merge(n_chunks, part_v, part_i, out_v, out_i):
    """Merge per-chunk heaps (n_chunks, m, k) into out (m, k) ascending (one thread per test point)."""
    t = cuda.grid(1)
    m = out_v.shape[0]
    if t >= m:
        return
    k = out_v.shape[1]
    hv = out_v[t]
    hi = out_i[t]
    for c in range(n_chunks):
        for j in range(k):
            v = part_v[c, t, j]
            i = part_i[c, t, j]
            if _worse(hv[0], hi[0], v, i):
                _offer(hv, hi, v, i)
    # heapsort into ascending order
    for end in range(k - 1, 0, -1):
        v = hv[0]
        i = hi[0]
        hv[0] = hv[end]
        hi[0] = hi[end]
        hv[end] = v
        hi[end] = i
        _sift_down(hv, hi, end)


# -------------------------------------------------------------------- CG
@cuda.jit
def cg_init(B, R, P, X, rs, bnorm, n_iter, resid, status):
    """R = P = B, X = 0, rs = ||b||^2; status RUNNING for b != 0. One block of TPB threads per right-hand side."""
    q = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    p = B.shape[1]
    sh = cuda.shared.array(TPB, float64)
    acc = 0.0
    for j in range(tid, p, TPB):
        b = B[q, j]
        R[q, j] = b
        P[q, j] = b
        X[q, j] = 0.0
        acc += b * b
    sh[tid] = acc
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        rs[q] = sh[0]
        bnorm[q] = math.sqrt(sh[0])
        n_iter[q] = 0
        if sh[0] > 0.0:
            resid[q] = 1.0
            status[q] = RUNNING
        else:
            resid[q] = 0.0
            status[q] = CONVERGED


@cuda.jit
def cg_step(P, HP, X, R, rs, bnorm, tol, n_iter, resid, status):
    """One CG iteration for every right-hand side still RUNNING (one block each), as ``kernels/cg.py``.

    alpha = rs / p.Hp; x += alpha p; r -= alpha Hp; stop at ||r|| <= tol ||b||; else p = r + beta p.
    """
    q = cuda.blockIdx.x
    if status[q] != RUNNING:
        return
    tid = cuda.threadIdx.x
    p = P.shape[1]
    sh = cuda.shared.array(TPB, float64)
    spp = cuda.shared.array(TPB, float64)
    shh = cuda.shared.array(TPB, float64)
    # p.Hp and the largest |p_j|, |Hp_j|; then ||p||, ||Hp|| of the vectors scaled by those (issue 23: the
    # sum of squares overflowed past 1e154; the bound is a product of norms, never of squares)
    acc = 0.0
    max_p = 0.0
    max_h = 0.0
    for j in range(tid, p, TPB):
        acc += P[q, j] * HP[q, j]
        max_p = max(max_p, abs(P[q, j]))
        max_h = max(max_h, abs(HP[q, j]))
    sh[tid] = acc
    spp[tid] = max_p
    shh[tid] = max_h
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sh[tid] += sh[tid + step]
            spp[tid] = max(spp[tid], spp[tid + step])
            shh[tid] = max(shh[tid], shh[tid + step])
        cuda.syncthreads()
        step //= 2
    curv = sh[0]
    max_p = spp[0]
    max_h = shh[0]
    cuda.syncthreads()
    fp = 1.0 / max_p if 0.0 < max_p < math.inf else 1.0
    fh = 1.0 / max_h if 0.0 < max_h < math.inf else 1.0
    acc_pp = 0.0
    acc_hh = 0.0
    for j in range(tid, p, TPB):
        a = P[q, j] * fp
        b = HP[q, j] * fh
        acc_pp += a * a
        acc_hh += b * b
    spp[tid] = acc_pp
    shh[tid] = acc_hh
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            spp[tid] += spp[tid + step]
            shh[tid] += shh[tid + step]
        cuda.syncthreads()
        step //= 2
    bound = MIN_CURVATURE * ((math.sqrt(spp[0]) / fp) * (math.sqrt(shh[0]) / fh))
    cuda.syncthreads()
    if not curv > bound:  # the rule of operators.base.cg_on_hvp
        if tid == 0:
            n_iter[q] += 1
            status[q] = NOT_POSITIVE
        return
    alpha = rs[q] / curv
    acc = 0.0
    for j in range(tid, p, TPB):
        X[q, j] += alpha * P[q, j]
        rj = R[q, j] - alpha * HP[q, j]
        R[q, j] = rj
        acc += rj * rj
    sh[tid] = acc
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    rs_new = sh[0]
    res = math.sqrt(rs_new) / bnorm[q]
    if res <= tol:
        if tid == 0:
            n_iter[q] += 1
            resid[q] = res
            status[q] = CONVERGED
        return
    beta = rs_new / rs[q]
    for j in range(tid, p, TPB):
        P[q, j] = R[q, j] + beta * P[q, j]
    cuda.syncthreads()
    if tid == 0:
        n_iter[q] += 1
        resid[q] = res
        rs[q] = rs_new

