"""Serial entry points over one whole row block, for operators that run blocks as tasks (Dask).

Each is the existing serial ``*_rows`` body of ``dense.py`` over rows [0, n) of
the block, with the trailing ``stop`` argument that ``policy.run`` appends. They
never start Numba threads: the task scheduler runs blocks in parallel, one core
each. Sums are accumulated in float64; partial sums of different blocks are
combined by the caller in a fixed order.
"""

import numpy as np

from .._config import BLOCK_ROWS, MIN_CHUNK_ROWS, kernel
from .dense import (
    _hvp_rows,
    _influence_rows,
    _loss_grad_rows,
    _margins_rows,
    _per_example_grads_rows,
    _sum_squares_rows,
)
from . import margin_loss


@kernel()
def sum_squares_block(X, stop):
    """sum_ij X_ij^2 in float64 (inf or NaN on non-finite or overflowing values)."""
    return _sum_squares_rows(X, 0, X.shape[0])


@kernel()
def loss_grad_block(X, y, family, coef, intercept, grad_out, z_out, stop):
    """grad_out (p,) = sum_i r_i x~_i, z_out (n,) the margins; returns (loss sum, min signed margin).

    Sums MIN_CHUNK_ROWS rows at a time, then adds the partial sums: the loss keeps the accuracy
    of the dense driver's chunked sums (Newton's line search compares losses to 8 eps |F|).
    """
    n = X.shape[0]
    grad_out[:] = 0.0
    part = np.empty_like(grad_out)
    loss = 0.0
    mmin = np.inf
    for lo in range(0, n, MIN_CHUNK_ROWS):
        part[:] = 0.0
        chunk_loss, chunk_min = _loss_grad_rows(X, y, family, coef, intercept, lo, min(n, lo + MIN_CHUNK_ROWS), part,
                                                z_out)
        loss += chunk_loss
        grad_out += part
        mmin = min(mmin, chunk_min)
    return loss, mmin


@kernel()
def margins_block(X, y, family, coef, intercept, what, out, stop):
    """out (n,) = margins (what 0), predicted means (1) or losses (2, needs y) of ``family``."""
    n = X.shape[0]
    _margins_rows(X, coef, intercept, 0, n, out)
    if what == 1:
        for i in range(n):
            out[i] = margin_loss.mean(out[i], family)
    elif what == 2:
        for i in range(n):
            out[i] = margin_loss.value(out[i], y[i], family)


@kernel()
def curvature_block(z, y, family, r_out, w_out, stop):
    """r_out = d loss / dz and w_out = d^2 loss / dz^2, (n,) each."""
    for i in range(z.shape[0]):
        _, r_out[i], w_out[i] = margin_loss.loss_residual_weight(z[i], y[i], family)


@kernel()
def per_example_grads_block(X, y, family, coef, intercept, out, stop):
    """out (n, p): row i is r_i x~_i."""
    _per_example_grads_rows(X, y, family, coef, intercept, 0, X.shape[0], out)


@kernel()
def influence_block(X, r, S, idx, out, stop):
    """out (m, len(idx)) = -(S x~_i) r_i for the block's rows i = idx[j], BLOCK_ROWS at a time."""
    n_sel = idx.shape[0]
    St = np.ascontiguousarray(S.T)
    for lo in range(0, n_sel, BLOCK_ROWS):
        if stop[0]:
            return
        _influence_rows(X, r, St, idx, lo, min(n_sel, lo + BLOCK_ROWS), out)


@kernel()
def hvp_block(X, w, V, acc, stop):
    """acc (k, p) = sum_i w_i (x~_i . v_q) x~_i for every row v_q of V (no ridge term)."""
    acc[:] = 0.0
    _hvp_rows(X, w, V, 0, X.shape[0], acc)
