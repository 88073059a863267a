"""Numba kernels: one pass over the rows of X for each quantity.

Contract shared by every kernel (the API validates, kernels never do):

- ``X`` is a C-contiguous float32 or float64 array of shape (n, d); float32
  stays float32 (half the memory traffic), every sum is accumulated in float64;
- parameters, vectors and outputs are float64; ``p`` is the length of the
  parameter vector: ``p == d + 1`` means an intercept (x~ = [x, 1]),
  ``p == d`` means none (and ``intercept`` is 0);
- ``y`` is float64 with values in {0, 1}; all values are finite;
- per-row loss derivatives at the margins z_i: ``r`` (n,) residuals
  sigma(z_i) - y_i (so g(z_i) = r_i x~_i) and ``w`` (n,) curvature weights
  sigma(z_i) sigma(-z_i) (so H = sum_i w_i x~_i x~_i^T + diag(ridge));
  ``S`` (m, p) always means s_test rows H^-1 g(z_test).

Each quantity is a serial ``*_rows`` kernel over a row range [lo, hi) and a
driver that runs it on row chunks with ``prange``. The number of chunks depends
on the sizes only, never on the thread count, and per-chunk sums are merged
serially in a fixed order: results are bitwise identical for any number of
Numba threads. With a single chunk (below PARALLEL_MIN_WORK element visits,
see :func:`chunk_count`) the driver calls the body directly: waking the thread
pool costs more than such a pass, and on a busy machine a parallel launch can
cost a whole scheduler quantum. For the same reason a driver's only
parallel loop is its prange (no array expressions: see ``_zeros``).
"""

import numpy as np
from numba import prange, types
from numba.extending import overload
# numba.get_num_threads as the intrinsic Numba's own parallel code uses: the public function calls through a
# ctypes pointer, which keeps a kernel out of the on-disk cache.
from numba.np.ufunc.parallel import _iget_num_threads

from .._config import (
    BLOCK_ROWS,
    CHUNK_BYTES,
    FASTMATH,
    HESSIAN_BLOCK_ROWS,
    HVP_BLAS_MIN_K,
    MAX_CHUNKS,
    MIN_CHUNK_ROWS,
    PARALLEL_MIN_WORK,
    kernel,
)
from .blas import syrk_lower
from . import margin_loss

# Integer constants as typed int64 globals, not Python ints: a literal argument (a row bound 0, a
# chunk limit 64) makes Numba compile the callee a second time, for Literal[int] and for int64
# (every row kernel twice: bench/RESULTS.md, "Compile time").
ZERO = np.int64(0)
_MIN_CHUNK_ROWS = np.int64(MIN_CHUNK_ROWS)
_HESSIAN_CHUNK_ROWS = np.int64(4 * HESSIAN_BLOCK_ROWS)
_MAX_CHUNKS = np.int64(MAX_CHUNKS)
_UNBOUNDED_CHUNKS = np.int64(1 << 20)
_CHUNK_BYTES = np.int64(CHUNK_BYTES)
_PARALLEL_MIN_WORK = np.int64(PARALLEL_MIN_WORK)


@kernel()
def _chunk_count(n, min_rows, max_chunks):
    """Number of row chunks: enough to feed many threads, independent of their count."""
    c = (n + min_rows - 1) // min_rows
    return max(1, min(c, max_chunks))


# Array expressions (a[:] = 0, a += b, np.zeros, a.sum()) inside a ``parallel=True`` kernel become
# parallel loops of their own: each one launches the thread pool, which can cost a scheduler quantum
# on a loaded machine even for a 6-element fill. The parallel drivers below call these serial helpers
# instead, so that their only parallel loop is the prange over row chunks.
@kernel()
def _zeros(a):
    """a[...] = 0 (any ndim), serially."""
    a[...] = 0.0


@kernel()
def _add(dst, src):
    """dst += src (same shape), serially."""
    dst += src


@kernel()
def _new_zeros(shape):
    """np.zeros(shape) allocated and filled serially."""
    return np.zeros(shape)


@kernel()
def chunk_count(n, d, k, min_rows, max_chunks):
    """Row chunks of a pass over n rows of d values that also multiplies k vectors of d (+ 1) per row.

    1 (serial) while n (d + (d + 1) k / 16) < PARALLEL_MIN_WORK: below that a
    parallel launch costs more than it saves (see _config). The operator asks
    the same function, so its BLAS policy matches the kernel's chunks.
    """
    if n * (d + (d + 1) * k // 16) < _PARALLEL_MIN_WORK:
        return 1
    return _chunk_count(n, min_rows, max_chunks)


@kernel()
def pass_chunks(n, d):
    """Row chunks of a plain pass over X (n, d) (margins, loss and gradient, per-example gradients, ...)."""
    return chunk_count(n, d, ZERO, _MIN_CHUNK_ROWS, _MAX_CHUNKS)


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


def _block_dot(X, lo, hi, A, St, T):
    """T[:hi-lo] = X~[lo:hi] St: rows lo:hi of X (with the intercept's 1) times St (p, m), one gemm."""


@overload(_block_dot, jit_options={"fastmath": set(FASTMATH), "error_model": "numpy"})
def _block_dot_impl(X, lo, hi, A, St, T):
    """float64 X: the gemm reads X's rows in place and St's last row is added for the intercept (a
    block copy first costs more than the gemv itself at m = 1). Other dtypes: copied into the float64 block A
    (p columns, the 1 included), as float64 accumulation needs."""
    if X.dtype == types.float64:
        def direct(X, lo, hi, A, St, T):
            d = X.shape[1]
            mb = hi - lo
            np.dot(X[lo:hi], St[:d], T[:mb])
            if St.shape[0] > d:
                for i in range(mb):
                    for t in range(St.shape[1]):
                        T[i, t] += St[d, t]
        return direct

    def copied(X, lo, hi, A, St, T):
        _load_block(X, lo, hi, A)
        np.dot(A[:hi - lo], St, T[:hi - lo])
    return copied


# ---------------------------------------------------------------- validation
@kernel()
def _sum_squares_rows(X, lo, hi):
    total = 0.0
    for i in range(lo, hi):
        for j in range(X.shape[1]):
            total += np.float64(X[i, j]) * X[i, j]
    return total


@kernel(parallel=True)
def _sum_squares(X, stop):
    """sum_ij X_ij^2 in float64 (inf or NaN when X holds non-finite or overflowing values)."""
    n = X.shape[0]
    nch = pass_chunks(n, X.shape[1])
    if nch == 1:
        return _sum_squares_rows(X, ZERO, n)
    rows = (n + nch - 1) // nch
    parts = _new_zeros((nch,))
    for c in prange(nch):
        if not stop[0]:
            parts[c] = _sum_squares_rows(X, c * rows, min(n, (c + 1) * rows))
    total = 0.0
    for c in range(nch):
        total += parts[c]
    return total


# ------------------------------------------------------------------ row maps
@kernel()
def _margins_rows(X, coef, intercept, lo, hi, z_out):
    for i in range(lo, hi):
        z_out[i] = _margin(X, i, coef, intercept)


@kernel(parallel=True)
def _margins(X, coef, intercept, z_out, stop):
    """z_out (n,) = X @ coef + intercept (``_loss_grad`` also returns them, with the gradient)."""
    n = X.shape[0]
    nch = chunk_count(n, X.shape[1], ZERO, _MIN_CHUNK_ROWS, _UNBOUNDED_CHUNKS)
    rows = (n + nch - 1) // nch
    if nch == 1:
        _margins_rows(X, coef, intercept, ZERO, n, z_out)
    else:
        for c in prange(nch):
            if not stop[0]:
                _margins_rows(X, coef, intercept, c * rows, min(n, (c + 1) * rows), z_out)


@kernel()
def _mean(z, family, out):
    """out (n,) the predicted means at margins z (sigma(z) or e^z; ``margin_loss.mean``)."""
    for i in range(z.shape[0]):
        out[i] = margin_loss.mean(z[i], family)


@kernel()
def _losses(z, y, family, out):
    """out (n,) per-example losses at margins z."""
    for i in range(z.shape[0]):
        out[i] = margin_loss.value(z[i], y[i], family)


@kernel()
def _residuals_weights(z, y, family, r_out, w_out):
    """Per-row loss derivatives at margins z: r_out = d loss / dz, w_out = d^2 loss / dz^2."""
    for i in range(z.shape[0]):
        _, r_out[i], w_out[i] = margin_loss.loss_residual_weight(z[i], y[i], family)


@kernel()
def _per_example_grads_rows(X, y, family, coef, intercept, lo, hi, out):
    d = X.shape[1]
    p = out.shape[1]
    for i in range(lo, hi):
        r = margin_loss.residual(_margin(X, i, coef, intercept), y[i], family)
        for j in range(d):
            out[i, j] = r * X[i, j]
        if p > d:
            out[i, d] = r


@kernel(parallel=True)
def _per_example_grads(X, y, family, coef, intercept, out, stop):
    """out (n, p): row i is the loss gradient r_i x~_i (no L2 term)."""
    n = X.shape[0]
    nch = chunk_count(n, X.shape[1], ZERO, _MIN_CHUNK_ROWS, _UNBOUNDED_CHUNKS)
    rows = (n + nch - 1) // nch
    if nch == 1:
        _per_example_grads_rows(X, y, family, coef, intercept, ZERO, n, out)
    else:
        for c in prange(nch):
            if not stop[0]:
                _per_example_grads_rows(X, y, family, coef, intercept, c * rows, min(n, (c + 1) * rows), out)


# ---------------------------------------------------------------- reductions
@kernel()
def _loss_grad_rows(X, y, family, coef, intercept, lo, hi, grad_out, z_out):
    """Adds sum r_i x~_i over [lo, hi) to grad_out and stores z_out[lo:hi].

    Returns (sum of losses, min signed margin) over the range.
    """
    d = X.shape[1]
    p = grad_out.shape[0]
    loss = 0.0
    mmin = np.inf
    for i in range(lo, hi):
        z = _margin(X, i, coef, intercept)
        z_out[i] = z
        yi = y[i]
        li, r, _ = margin_loss.loss_residual_weight(z, yi, family)
        loss += li
        for j in range(d):
            grad_out[j] += r * X[i, j]
        if p > d:
            grad_out[d] += r
        m = z if yi > 0.5 else -z
        if m < mmin:
            mmin = m
    return loss, mmin


@kernel(parallel=True)
def _loss_grad(X, y, family, coef, intercept, grad_out, z_out, stop):
    """Sum of losses (``family``: margin_loss) and its gradient, in one pass over X.

    Returns ``(loss, min_margin)``; ``grad_out`` (p,) receives sum_i r_i x~_i
    with r_i = d loss_i / d z_i and ``z_out`` (n,) the margins z_i (from which
    residuals and Hessian weights follow without another pass). ``min_margin``
    is min_i (2 y_i - 1) z_i: when it is > 0 the parameters separate the data
    (no L2-free optimum exists).
    """
    n = X.shape[0]
    p = grad_out.shape[0]
    _zeros(grad_out)
    nch = pass_chunks(n, X.shape[1])
    if nch == 1:
        return _loss_grad_rows(X, y, family, coef, intercept, ZERO, n, grad_out, z_out)
    rows = (n + nch - 1) // nch
    acc = _new_zeros((nch, p))
    losses = _new_zeros((nch,))
    margins = _new_zeros((nch,))
    for c in prange(nch):
        if not stop[0]:
            losses[c], margins[c] = _loss_grad_rows(X, y, family, coef, intercept, c * rows,
                                                    min(n, (c + 1) * rows), acc[c], z_out)
    loss = 0.0
    mmin = np.inf
    for c in range(nch):
        _add(grad_out, acc[c])
        loss += losses[c]
        mmin = min(mmin, margins[c])
    return loss, mmin


@kernel()
def _hessian_rows(X, w, lo, hi, H_acc, stop):
    """Adds sum_{i in [lo, hi)} w_i x~_i x~_i^T to the lower triangle of H_acc (p, p).

    One dsyrk per HESSIAN_BLOCK_ROWS rows on B = sqrt(w) * x~ (float64 copy of
    the block). Returns early, leaving a partial sum, once ``stop[0]`` is set.
    """
    d = X.shape[1]
    p = H_acc.shape[0]
    B = np.empty((HESSIAN_BLOCK_ROWS, p))
    for b0 in range(lo, hi, HESSIAN_BLOCK_ROWS):
        if stop[0]:
            return
        m = min(HESSIAN_BLOCK_ROWS, hi - b0)
        for i in range(m):
            sq = np.sqrt(w[b0 + i])
            for j in range(d):
                B[i, j] = sq * X[b0 + i, j]
            if p > d:
                B[i, d] = sq
        syrk_lower(B, m, H_acc)


@kernel()
def hessian_chunk_count(n, p):
    """Row chunks of ``_hessian_sum`` and ``_setup``: a (p, p) buffer each, 64 MiB in all; 1 once p > 2048."""
    return chunk_count(n, p, p, _HESSIAN_CHUNK_ROWS, min(_MAX_CHUNKS, max(1, _CHUNK_BYTES // (8 * p * p))))


@kernel(parallel=True)
def _hessian_sum(X, w, ridge, H_out, stop):
    """H_out (p, p) = sum_i w_i x~_i x~_i^T + diag(ridge), in one pass over X.

    Each chunk scales row blocks into a float64 buffer B = sqrt(w) x~ and adds
    B^T B to the lower triangle of its own (p, p) sum with one BLAS dsyrk;
    no n x p temporary. Call through the dense operator (BLAS threads). ``stop`` (1,)
    uint8: the kernel returns early (with a meaningless H_out) once stop[0] is set.
    Why dsyrk (measurements in bench/RESULTS.md, "Tuning constants"): half the
    flops of a gemm, and far ahead of hand-written symmetric updates.
    """
    n = X.shape[0]
    p = H_out.shape[0]
    _zeros(H_out)
    nch = hessian_chunk_count(n, p)
    if nch == 1:
        _hessian_rows(X, w, ZERO, n, H_out, stop)
    else:
        rows = (n + nch - 1) // nch
        acc = _new_zeros((nch, p, p))
        for c in prange(nch):
            _hessian_rows(X, w, c * rows, min(n, (c + 1) * rows), acc[c], stop)
        for c in range(nch):
            _add(H_out, acc[c])
    for j in range(p):
        H_out[j, j] += ridge[j]
        for k in range(j + 1, p):
            H_out[j, k] = H_out[k, j]  # mirror the lower triangle


@kernel()
def _hessian_diagonal_rows(X, w, lo, hi, acc):
    """Adds sum_{i in [lo, hi)} w_i x~_ij^2 to acc[j] (p,); acc[d] gets sum w_i when p = d + 1."""
    d = X.shape[1]
    p = acc.shape[0]
    for i in range(lo, hi):
        wi = w[i]
        for j in range(d):
            xij = np.float64(X[i, j])
            acc[j] += wi * xij * xij
        if p > d:
            acc[d] += wi


@kernel(parallel=True)
def _hessian_diagonal(X, w, ridge, out, stop):
    """out (p,) = diag(H) = sum_i w_i x~_i^2 + ridge, in one pass over X (the Jacobi preconditioner).

    Per-chunk float64 sums merged serially in a fixed order (bitwise identical for any thread count).
    """
    n = X.shape[0]
    p = out.shape[0]
    nch = pass_chunks(n, X.shape[1])
    acc = _new_zeros((nch, p))
    if nch == 1:
        _hessian_diagonal_rows(X, w, ZERO, n, acc[0])
    else:
        rows = (n + nch - 1) // nch
        for c in prange(nch):
            if not stop[0]:
                _hessian_diagonal_rows(X, w, c * rows, min(n, (c + 1) * rows), acc[c])
    for j in range(p):
        out[j] = ridge[j]
    for c in range(nch):
        for j in range(p):
            out[j] += acc[c, j]


@kernel()
def _setup_rows(X, y, family, coef, intercept, lo, hi, grad_acc, H_acc, z_out, r_out, w_out, stop):
    """One pass over rows [lo, hi): margins, loss, gradient, residuals, weights and the Hessian sum.

    Adds sum r_i x~_i to grad_acc and sum w_i x~_i x~_i^T to the lower triangle
    of H_acc (one dsyrk per HESSIAN_BLOCK_ROWS rows on B = sqrt(w) x~, filled
    while the row is in cache); stores z_out, r_out, w_out for the range.
    Returns (sum of losses, min signed margin, sum of squares of X's entries).
    """
    d = X.shape[1]
    p = H_acc.shape[0]
    B = np.empty((min(HESSIAN_BLOCK_ROWS, max(1, hi - lo)), p))
    loss = 0.0
    mmin = np.inf
    sumsq = 0.0
    for b0 in range(lo, hi, HESSIAN_BLOCK_ROWS):
        if stop[0]:
            break
        m = min(HESSIAN_BLOCK_ROWS, hi - b0)
        for i in range(m):
            row = b0 + i
            z = intercept
            ss = 0.0
            for j in range(d):
                xj = np.float64(X[row, j])
                z += xj * coef[j]
                ss += xj * xj
            sumsq += ss
            yi = y[row]
            z_out[row] = z
            li, r, w = margin_loss.loss_residual_weight(z, yi, family)
            loss += li
            r_out[row] = r
            w_out[row] = w
            sq = np.sqrt(w)
            for j in range(d):
                xj = X[row, j]
                grad_acc[j] += r * xj
                B[i, j] = sq * xj
            if p > d:
                grad_acc[d] += r
                B[i, d] = sq
            mg = z if yi > 0.5 else -z
            if mg < mmin:
                mmin = mg
        syrk_lower(B, m, H_acc)
    return loss, mmin, sumsq


@kernel(parallel=True)
def _setup(X, y, family, coef, intercept, ridge, grad_out, z_out, r_out, w_out, H_out, stop):
    """Everything the direct solver needs from the training rows at theta, in one read of X.

    ``grad_out`` (p,) sum_i r_i x~_i (no L2 term), ``z_out``/``r_out``/``w_out``
    (n,) margins, residuals d loss / dz and curvature weights d^2 loss / dz^2,
    ``H_out`` (p, p) sum_i w_i x~_i x~_i^T + diag(ridge). Returns ``(loss,
    min_margin, sum_squares)`` as ``_loss_grad`` and ``_sum_squares`` would
    (the last is the finiteness check of X: inf or NaN when X is not finite).
    Same row chunks as ``_hessian_sum``; per-chunk sums merged in order. Returns
    early (meaningless outputs) once stop[0] is set.
    """
    n = X.shape[0]
    p = H_out.shape[0]
    _zeros(grad_out)
    _zeros(H_out)
    nch = hessian_chunk_count(n, p)
    loss = 0.0
    mmin = np.inf
    sumsq = 0.0
    if nch == 1:
        loss, mmin, sumsq = _setup_rows(X, y, family, coef, intercept, ZERO, n, grad_out, H_out, z_out, r_out, w_out,
                                        stop)
    else:
        rows = (n + nch - 1) // nch
        accH = _new_zeros((nch, p, p))
        accg = _new_zeros((nch, p))
        parts = _new_zeros((nch, 3))
        for c in prange(nch):
            lo, hi = c * rows, min(n, (c + 1) * rows)
            parts[c, 0], parts[c, 1], parts[c, 2] = _setup_rows(X, y, family, coef, intercept, lo, hi, accg[c],
                                                                accH[c], z_out, r_out, w_out, stop)
        for c in range(nch):
            _add(H_out, accH[c])
            _add(grad_out, accg[c])
            loss += parts[c, 0]
            mmin = min(mmin, parts[c, 1])
            sumsq += parts[c, 2]
    for j in range(p):
        H_out[j, j] += ridge[j]
        for k in range(j + 1, p):
            H_out[j, k] = H_out[k, j]  # mirror the lower triangle
    return loss, mmin, sumsq


@kernel()
def _hvp_rows(X, w, V, lo, hi, acc):
    """Adds sum_{i in [lo, hi)} w_i (x~_i . v_q) x~_i to row q of acc (k, p), for every row v_q of V."""
    d = X.shape[1]
    k, p = V.shape
    if k >= HVP_BLAS_MIN_K:
        A = np.empty((BLOCK_ROWS, p))
        T = np.empty((BLOCK_ROWS, k))
        U = np.empty((k, p))
        for b0 in range(lo, hi, BLOCK_ROWS):
            m = min(BLOCK_ROWS, hi - b0)
            _load_block(X, b0, b0 + m, A)
            np.dot(A[:m], V.T, T[:m])
            for i in range(m):
                wi = w[b0 + i]
                for q in range(k):
                    T[i, q] *= wi
            np.dot(T[:m].T, A[:m], U)
            acc += U
    else:
        # Four rows at a time: four independent dot products per vector keep more loads in
        # flight (bench/RESULTS.md, "Tuning constants").
        t = np.empty((k, 4))
        i = lo
        while i + 4 <= hi:
            for q in range(k):
                z0 = z1 = z2 = z3 = V[q, d] if p > d else 0.0
                for j in range(d):
                    vj = V[q, j]
                    z0 += X[i, j] * vj
                    z1 += X[i + 1, j] * vj
                    z2 += X[i + 2, j] * vj
                    z3 += X[i + 3, j] * vj
                t[q, 0] = w[i] * z0
                t[q, 1] = w[i + 1] * z1
                t[q, 2] = w[i + 2] * z2
                t[q, 3] = w[i + 3] * z3
            for q in range(k):
                t0, t1, t2, t3 = t[q, 0], t[q, 1], t[q, 2], t[q, 3]
                for j in range(d):
                    acc[q, j] += t0 * X[i, j] + t1 * X[i + 1, j] + t2 * X[i + 2, j] + t3 * X[i + 3, j]
                if p > d:
                    acc[q, d] += t0 + t1 + t2 + t3
            i += 4
        for r in range(i, hi):
            for q in range(k):
                z = V[q, d] if p > d else 0.0
                for j in range(d):
                    z += X[r, j] * V[q, j]
                tq = w[r] * z
                for j in range(d):
                    acc[q, j] += tq * X[r, j]
                if p > d:
                    acc[q, d] += tq


@kernel()
def hvp_chunks(n, p, k):
    """Row chunks of ``_hvp`` for k vectors: per-chunk (k, p) sums bounded by CHUNK_BYTES in all."""
    return chunk_count(n, p, k, _MIN_CHUNK_ROWS, min(_MAX_CHUNKS, max(1, _CHUNK_BYTES // (8 * k * p))))


@kernel(parallel=True)
def _hvp(X, w, ridge, V, out, stop):
    """out (k, p) = H V^T row by row: X~^T (w * (X~ v_q)) + ridge * v_q, one pass over X.

    For k < HVP_BLAS_MIN_K each row is used for all k vectors while in cache;
    from there on each row block does two gemms (call under
    ``single_threaded_blas()``).
    """
    n = X.shape[0]
    k, p = V.shape
    for q in range(k):
        for j in range(p):
            out[q, j] = ridge[j] * V[q, j]
    nch = hvp_chunks(n, p, k)
    if nch == 1:
        _hvp_rows(X, w, V, ZERO, n, out)
        return
    rows = (n + nch - 1) // nch
    acc = _new_zeros((nch, k, p))
    for c in prange(nch):
        if not stop[0]:
            _hvp_rows(X, w, V, c * rows, min(n, (c + 1) * rows), acc[c])
    for c in range(nch):
        _add(out, acc[c])


# ------------------------------------------------------------ influence maps
@kernel()
def _influence_rows(X, r, St, idx, lo, hi, out):
    """out[:, lo:hi] = -(S x~_i) r_i for rows i = idx[lo:hi]; St (p, m) = S.T. Consecutive rows go
    through :func:`_block_dot` (no copy for float64 X), others are gathered into a float64 block."""
    d = X.shape[1]
    p = St.shape[0]
    mb = hi - lo
    A = np.empty((mb, p))
    T = np.empty((mb, St.shape[1]))
    row0 = idx[lo]
    consecutive = True
    for i in range(1, mb):
        if idx[lo + i] != row0 + i:
            consecutive = False
            break
    if consecutive:
        _block_dot(X, row0, row0 + mb, A, St, T)
    else:
        for i in range(mb):
            row = idx[lo + i]
            for j in range(d):
                A[i, j] = X[row, j]
            if p > d:
                A[i, d] = 1.0
        np.dot(A[:mb], St, T[:mb])
    for t in range(St.shape[1]):  # row by row: contiguous writes of out
        for i in range(mb):
            out[t, lo + i] = -T[i, t] * r[idx[lo + i]]


@kernel(parallel=True)
def _influence(X, r, S, idx, out, stop):
    """out (m, len(idx)) = -(S x~_i) r_i for each training row i = idx[col].

    ``S`` (m, p) holds the s_test rows H^-1 g(z_test); ``r`` (n,) the training
    residuals, so that g(z_i) = r_i x~_i. One gemm per block of BLOCK_ROWS
    selected rows (call under ``single_threaded_blas()``).
    """
    n_sel = idx.shape[0]
    m = S.shape[0]
    St = np.ascontiguousarray(S.T)
    nblk = (n_sel + BLOCK_ROWS - 1) // BLOCK_ROWS
    if chunk_count(n_sel, X.shape[1], m, _MIN_CHUNK_ROWS, _MAX_CHUNKS) == 1:
        for b in range(nblk):
            if not stop[0]:
                _influence_rows(X, r, St, idx, b * BLOCK_ROWS, min(n_sel, (b + 1) * BLOCK_ROWS), out)
    else:
        for b in prange(nblk):
            if not stop[0]:
                _influence_rows(X, r, St, idx, b * BLOCK_ROWS, min(n_sel, (b + 1) * BLOCK_ROWS), out)


@kernel()
def _worse(v1, i1, v2, i2):
    """True when (v1, i1) ranks after (v2, i2): larger value, or equal value and larger index."""
    return v1 > v2 or (v1 == v2 and i1 > i2)


@kernel()
def _sift_down(vals, idxs, size):
    """Restore the max-heap over [0, size) of (value, index) pairs after its root changed."""
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


@kernel()
def _offer(vals, idxs, v, i):
    """Keep the k smallest (value, index) pairs seen in the max-heap vals/idxs (root: the worst kept).

    O(log k) per accepted pair; a heap filled with (inf, n) accepts anything.
    """
    if _worse(vals[0], idxs[0], v, i):
        vals[0] = v
        idxs[0] = i
        _sift_down(vals, idxs, vals.shape[0])


@kernel()
def heap_thresholds(neg_v, pos_v):
    """(lo_thr, hi_thr) (m,): neg_v[:, 0] and -pos_v[:, 0], the heaps' roots as bounds on I (see offer_block)."""
    m = neg_v.shape[0]
    lo_thr = np.empty(m)
    hi_thr = np.empty(m)
    for t in range(m):
        lo_thr[t] = neg_v[t, 0]
        hi_thr[t] = -pos_v[t, 0]
    return lo_thr, hi_thr


@kernel()
def offer_block(U, c, i0, mb, neg_v, neg_i, pos_v, pos_i, lo_thr, hi_thr):
    """Offer I[t, i0 + i] = c[i] U[i, t] (i < mb, t < m) to every test point's pair of heaps.

    A candidate needs I <= lo_thr[t] (helpful) or I >= hi_thr[t] (harmful), the
    roots as kept by ``heap_thresholds``. Per row, one branch-free pass over its m
    values tests them all (it vectorises; once the heaps are full most rows stop
    there) and only a row with a candidate takes the per-test branches: the
    candidates, hence the results, are those of testing each pair against the roots.
    """
    m = lo_thr.shape[0]
    for i in range(mb):
        ci = c[i]
        hits = 0
        for t in range(m):
            v = ci * U[i, t]
            hits += (v <= lo_thr[t]) | (v >= hi_thr[t])
        if hits == 0:
            continue
        for t in range(m):
            v = ci * U[i, t]
            if v <= lo_thr[t]:
                _offer(neg_v[t], neg_i[t], v, i0 + i)
                lo_thr[t] = neg_v[t, 0]
            if v >= hi_thr[t]:
                _offer(pos_v[t], pos_i[t], -v, i0 + i)
                hi_thr[t] = -pos_v[t, 0]


@kernel()
def _sort_heap(vals, idxs):
    """Turn the max-heap vals/idxs into ascending (value, index) order, in place (heapsort)."""
    for end in range(vals.shape[0] - 1, 0, -1):
        v, i = vals[0], idxs[0]
        vals[0], idxs[0] = vals[end], idxs[end]
        vals[end], idxs[end] = v, i
        _sift_down(vals, idxs, end)


@kernel()
def heap_groups(nch):
    """Heap pairs of a top-k pass over nch row chunks: one per thread (at most nch), not one per chunk.

    A thread runs a contiguous group of chunks into one pair of heaps per test point, so the heaps fill
    (k log(rows / k) offers each, the costly part) once per thread instead of once per chunk
    (bench/RESULTS.md, "top_k heaps"). The values, and the exact top-k merged from any grouping, do not
    depend on it.
    """
    return max(1, min(nch, _iget_num_threads()))


@kernel()
def merge_top_k(neg_v, neg_i, pos_v, pos_i, n, low_out, low_idx_out, high_out, high_idx_out):
    """Merge the heap pairs (groups, m, k) of I (neg_*) and of -I (pos_*) into the sorted (m, k) outputs.

    ``low_*`` ascending (most helpful first), ``high_*`` descending; slots without a point of the
    right sign (helpful needs I < 0, harmful I > 0) get index -1 and NaN. Shared by every top-k kernel.
    """
    nch, m, k = neg_v.shape
    for t in range(m):
        low_out[t] = np.inf
        low_idx_out[t] = n
        high_out[t] = np.inf
        high_idx_out[t] = n
        for c in range(nch):
            for j in range(k):
                _offer(low_out[t], low_idx_out[t], neg_v[c, t, j], neg_i[c, t, j])
                _offer(high_out[t], high_idx_out[t], pos_v[c, t, j], pos_i[c, t, j])
        _sort_heap(low_out[t], low_idx_out[t])
        _sort_heap(high_out[t], high_idx_out[t])
        for j in range(k):
            high_out[t, j] = -high_out[t, j]
            if not low_out[t, j] < 0.0:
                low_out[t, j] = np.nan
                low_idx_out[t, j] = -1
            if not high_out[t, j] > 0.0:
                high_out[t, j] = np.nan
                high_idx_out[t, j] = -1


@kernel()
def _top_k_rows(X, r, St, begin, end, neg_v, neg_i, pos_v, pos_i, stop):
    """Streams rows [begin, end) into per-test max-heaps (m, k): neg_* keeps the k smallest I, pos_* the k smallest -I."""
    p, m = St.shape
    A = np.empty((BLOCK_ROWS, p))
    T = np.empty((BLOCK_ROWS, m))
    c = np.empty(BLOCK_ROWS)
    lo_thr, hi_thr = heap_thresholds(neg_v, pos_v)
    for b0 in range(begin, end, BLOCK_ROWS):
        if stop[0]:
            return
        mb = min(BLOCK_ROWS, end - b0)
        _block_dot(X, b0, b0 + mb, A, St, T)
        for i in range(mb):
            c[i] = -r[b0 + i]
        offer_block(T, c, b0, mb, neg_v, neg_i, pos_v, pos_i, lo_thr, hi_thr)


@kernel(parallel=True)
def _top_k(X, r, S, low_out, low_idx_out, high_out, high_idx_out, stop):
    """The k smallest and k largest I[t, i] = -(S_t . x~_i) r_i over all training rows, per test row t.

    ``S`` (m, p) are s_test rows; outputs are (m, k): ``low_*`` ascending (most
    helpful first), ``high_*`` descending (most harmful first); ties go to the
    smaller index, as a stable argsort would; slots without a point of the right
    sign (helpful needs I < 0, harmful I > 0) hold index -1 and NaN. Streams over row blocks (one gemm
    each) into bounded max-heaps, one pair per test point and thread (O(log k) per accepted
    candidate, so large k stays cheap; see ``offer_block`` and ``heap_groups``): memory
    O(threads * m * (k + BLOCK_ROWS)), never the (m, n) matrix. Call under
    ``single_threaded_blas()``; returns early (meaningless outputs) once stop[0] is set.
    """
    n = X.shape[0]
    m = S.shape[0]
    k = low_out.shape[1]
    nch = chunk_count(n, X.shape[1], m, _MIN_CHUNK_ROWS, _MAX_CHUNKS)
    rows = (n + nch - 1) // nch
    ng = heap_groups(nch)
    neg_v = np.full((ng, m, k), np.inf)
    neg_i = np.full((ng, m, k), n)
    pos_v = np.full((ng, m, k), np.inf)  # holds -I: the k largest I are the k smallest -I
    pos_i = np.full((ng, m, k), n)
    St = np.ascontiguousarray(S.T)
    if ng == 1:
        for c in range(nch):
            _top_k_rows(X, r, St, c * rows, min(n, (c + 1) * rows), neg_v[0], neg_i[0], pos_v[0], pos_i[0],
                        stop)
    else:
        for g in prange(ng):
            for c in range(g * nch // ng, (g + 1) * nch // ng):
                _top_k_rows(X, r, St, c * rows, min(n, (c + 1) * rows), neg_v[g], neg_i[g], pos_v[g],
                            pos_i[g], stop)
    merge_top_k(neg_v, neg_i, pos_v, pos_i, n, low_out, low_idx_out, high_out, high_idx_out)
