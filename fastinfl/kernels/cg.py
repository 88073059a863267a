"""Batched conjugate gradient inside Numba: k right-hand sides share each pass over X."""

import math

import numpy as np

from .._config import PCG_MIN_CURVATURE, kernel
from .dense import _hvp

# The status of a right-hand side in every CG of the package (operators.base.cg_on_hvp and the fused loops).
CONVERGED = 0  # ||r_q|| <= tol ||b_q|| (recursively updated residual)
MAX_ITER = 1  # max_iter iterations did not reach tol
NOT_POSITIVE = 2  # p^T H p <= PCG_MIN_CURVATURE ||p|| ||H p||: H not (numerically) positive definite along p
_MIN_CURVATURE = PCG_MIN_CURVATURE


# Sums of squares in this range are exact enough to take the root of; outside it (a square overflowed, or
# fell among the subnormals) the norm is taken again on the vector scaled by a power of two.
NORM_SQ_MIN = 1e-280
NORM_SQ_MAX = 1e300


@kernel(inline=True)
def norm(v):
    """||v||_2 without overflow or underflow: the plain sum of squares when it lies in [NORM_SQ_MIN,
    NORM_SQ_MAX] (one pass, as before), else again with v scaled by a power of two (its largest entry)."""
    s = 0.0
    for j in range(v.shape[0]):
        s += v[j] * v[j]
    if NORM_SQ_MIN <= s <= NORM_SQ_MAX or s == 0.0:
        return math.sqrt(s)
    m = 0.0
    for j in range(v.shape[0]):
        a = abs(v[j])
        if a > m:
            m = a
    if m == 0.0 or not math.isfinite(m):
        return m
    e = math.frexp(m)[1]
    f = math.ldexp(1.0, -e)
    s = 0.0
    for j in range(v.shape[0]):
        t = v[j] * f
        s += t * t
    return math.sqrt(s) * math.ldexp(1.0, e)


@kernel()
def _cg_solve(X, w, ridge, B, tol, max_iter, x_out, n_iter_out, resid_out, status_out, stop):
    """Solve H x_q = b_q for every row b_q of B (k, p) by conjugate gradient.

    H = X~^T diag(w) X~ + diag(ridge) is applied through ``_hvp``: one pass over
    X per iteration for all columns still running. Each column has its own step
    sizes and stops on its own when ||r_q|| <= tol * ||b_q|| (relative residual
    of the recursively updated residual) or after ``max_iter`` iterations: the
    rules of ``operators.base.cg_on_hvp``, fused (no Python between iterations).

    Outputs (row q for right-hand side q): ``x_out`` (k, p) solutions,
    ``n_iter_out`` (k,) iterations, ``resid_out`` (k,) final relative residual,
    ``status_out`` (k,) CONVERGED, MAX_ITER or NOT_POSITIVE. Returns after the
    current iteration, leaving the outputs as they are, once ``stop[0]`` is set.
    """
    k, p = B.shape
    R = B.copy()
    P = B.copy()
    rs = np.empty(k)
    bnorm = np.empty(k)
    active = np.empty(k, np.int64)
    na = 0
    x_out[:] = 0.0
    for q in range(k):
        rs[q] = np.dot(R[q], R[q])
        bnorm[q] = math.sqrt(rs[q])
        n_iter_out[q] = 0
        status_out[q] = CONVERGED
        resid_out[q] = 0.0
        if bnorm[q] > 0.0:
            resid_out[q] = 1.0
            status_out[q] = MAX_ITER
            active[na] = q
            na += 1
    Pa = np.empty((k, p))
    HPa = np.empty((k, p))
    it = 0
    while na > 0 and it < max_iter and not stop[0]:
        for a in range(na):
            Pa[a] = P[active[a]]
        _hvp(X, w, ridge, Pa[:na], HPa[:na], stop)
        it += 1
        still = 0
        for a in range(na):
            q = active[a]
            n_iter_out[q] = it
            curv = np.dot(Pa[a], HPa[a])
            if not curv > _MIN_CURVATURE * (norm(Pa[a]) * norm(HPa[a])):  # norms, never their squares' product
                status_out[q] = NOT_POSITIVE
                continue
            alpha = rs[q] / curv
            x_out[q] += alpha * Pa[a]
            R[q] -= alpha * HPa[a]
            rs_new = np.dot(R[q], R[q])
            resid_out[q] = math.sqrt(rs_new) / bnorm[q]
            if resid_out[q] <= tol:
                status_out[q] = CONVERGED
                continue
            P[q] = R[q] + (rs_new / rs[q]) * P[q]
            rs[q] = rs_new
            active[still] = q
            still += 1
        na = still
