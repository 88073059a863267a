"""The operator over ``scipy.sparse`` rows (CSR; other formats converted once), never densified.

Memory O(nnz + p) for every pass: margins, gradients and HVPs touch the stored
nonzeros only. The Hessian (pairs of nonzeros per row) is formed when the direct solver
is chosen (Influence: while it fits in memory, fastinfl/_memory.py); otherwise solvers use HVPs (CG).
"""

import numpy as np

from .._config import CSR_MIN_CHUNK_NNZ
from .._memory import GIB, available_memory
from ..kernels import csr as kernels
from ..kernels import dense as margin_kernels  # the margin-space maps are the same for every kind
from . import policy
from .base import (CONVERGED, MAX_ITER, MIN_CURVATURE, NOT_POSITIVE, CGResult, Curvature, Operator, TopK,
                   rhs_scales)



def canonical_arrays(X):
    """(indptr, indices, data) of the CSR matrix X without repeated columns in a row: X's own arrays when
    canonical, else those of a summed copy (the diagonal passes square each entry; the binary and softmax
    operators keep the result)."""
    if X.has_canonical_format:
        return X.indptr, X.indices, X.data
    C = X.copy()
    C.sum_duplicates()
    return C.indptr, C.indices, C.data

class CSROperator(Operator):
    """Passes over a CSR matrix (float32 or float64 values, int32 or int64 indices; sums in float64).

    Build it with :func:`fastinfl.operators.as_operator`, which validates and
    converts CSC (or any other scipy.sparse format) to CSR once. ``X`` is kept,
    not copied, when it is already CSR with float32/float64 values: do not
    modify it while the operator is in use. Unsorted and repeated column
    indices need no copy: every pass treats a repeated column as the sum of its entries.
    """

    kind = "csr"

    def __init__(self, X, y, fit_intercept, loss="logistic"):
        super().__init__(X.shape[0], X.shape[1], fit_intercept, X.data.dtype, y is not None, loss)
        self.X = X
        self.y = y
        self.indptr, self.indices, self.data = X.indptr, X.indices, X.data
        self.nnz = int(self.indptr[-1])
        self._canon = None  # CSR arrays without repeated columns (the diagonal pass), built once
        self._jacobi = None  # (weights, ridge, 1 / diag H) of the last CG's curvature

    # -------------------------------------------------------------- helpers
    def _params(self, coef, intercept):
        return np.ascontiguousarray(coef, dtype=np.float64), float(intercept) if self.fit_intercept else 0.0

    def _labels(self):
        if self.y is None:
            raise ValueError("labels are required for this quantity: pass y with X.")
        return self.y

    def _run(self, kernel, *args, work):
        # The CSR kernels call no BLAS, but a pass with two chunks' worth of work may launch the thread
        # pool: it then takes the policy's launch lock (workqueue) and thread budget. Every CSR chunk count
        # is at most max(nnz + n, work) // CSR_MIN_CHUNK_NNZ (kernels/csr.py; ``work`` counts the
        # selected rows times their width for the per-row maps).
        launches = max(self.nnz + self.n_samples, work) // CSR_MIN_CHUNK_NNZ >= 2
        return policy.run(kernel, self.indptr, self.indices, self.data, *args, work=work, parallel=launches)

    def _select(self, idx):
        return np.arange(self.n_samples, dtype=np.int64) if idx is None else np.ascontiguousarray(idx, np.int64)

    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        coef, b = self._params(coef, intercept)
        grad = np.empty(self.n_params)
        z = np.empty(self.n_samples)
        loss, min_margin = self._run(kernels._loss_grad, self._labels(), self.family, coef, b, grad, z,
                                     work=self.nnz + self.n_samples)
        return float(loss), grad, float(min_margin), z

    def margins(self, coef, intercept):
        coef, b = self._params(coef, intercept)
        z = np.empty(self.n_samples)
        self._run(kernels._margins, coef, b, z, work=self.nnz + self.n_samples)
        return z

    def losses(self, coef, intercept):
        z = self.margins(coef, intercept)
        margin_kernels._losses(z, self._labels(), self.family, z)
        return z

    def means(self, coef, intercept):
        z = self.margins(coef, intercept)
        margin_kernels._mean(z, self.family, z)
        return z

    def gradients(self, coef, intercept, idx=None):
        """(n_sel, p) dense per-example gradients r_i x~_i of rows ``idx`` (all when None)."""
        coef, b = self._params(coef, intercept)
        idx = self._select(idx)
        out = np.empty((idx.shape[0], self.n_params))
        self._run(kernels._per_example_grads, self._labels(), self.family, coef, b, idx, out, work=out.size)
        return out

    def curvature(self, margins):
        r = np.empty(self.n_samples)
        w = np.empty(self.n_samples)
        margin_kernels._residuals_weights(margins, self._labels(), self.family, r, w)
        return Curvature(r, w)

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        """(p, p) H from pairs of nonzeros per row (O(sum_i nnz_i^2)); refused beyond the memory available."""
        p = self.n_params
        available = available_memory()
        if available is not None and 8 * p * p > available:
            raise ValueError(
                f"the Hessian of {p:,} parameters is a {8 * p * p / GIB:.3g} GiB dense matrix and this "
                f"machine has {available / GIB:.3g} GiB available: use solver='cg' (or 'auto'), which needs "
                "only Hessian-vector products."
            )
        H = np.empty((p, p))
        sq = int(np.diff(self.indptr).astype(np.float64) @ np.diff(self.indptr).astype(np.float64))
        self._run(kernels._hessian_sum, curv.weights, np.ascontiguousarray(ridge, dtype=np.float64),
                  self.n_features, H, work=sq + p * p)
        return H

    def hvp(self, curv, ridge, V):
        V = np.asarray(V, dtype=np.float64)
        k = V.shape[0] if V.ndim == 2 else 1
        # 2..HVP_GROUPED_MAX_K vectors run in groups of 4 and 2 (kernels/csr.py, _hvp_rows_4): pad odd k with zeros.
        k_run = k + (k % 2) if 1 < k < kernels.HVP_GROUPED_MAX_K else k
        Vt = np.empty((self.n_params, k_run))
        if k_run > k:
            Vt[:, k:] = 0.0
        kernels._transpose(np.ascontiguousarray(V.reshape(k, self.n_params)), Vt)
        out = np.empty_like(Vt)
        self._run(kernels._hvp, curv.weights, np.ascontiguousarray(ridge, dtype=np.float64), Vt,
                  self.n_features, out, work=(self.nnz + self.n_samples) * k_run)
        result = np.empty((k, self.n_params))
        kernels._transpose(out if k_run == k else out[:, :k], result)
        return result

    def hessian_diagonal(self, curv, ridge):
        """(p,) diag(H) = sum_i w_i x~_i^2 + ridge in one pass (on a canonical copy when X repeats columns)."""
        indptr, indices, data = self._canonical()
        out = np.empty(self.n_params)
        policy.run(kernels._diagonal, indptr, indices, data, curv.weights,
                   np.ascontiguousarray(ridge, dtype=np.float64), self.n_features, out,
                   work=self.nnz + self.n_samples,
                   parallel=(self.nnz + self.n_samples) // CSR_MIN_CHUNK_NNZ >= 2)  # as in _run
        return out

    def _canonical(self):
        """CSR arrays without repeated columns in a row (kept): see :func:`canonical_arrays`."""
        if self._canon is None:
            self._canon = canonical_arrays(self.X)
        return self._canon

    def cg(self, curv, ridge, B, tol, max_iter):
        """Batched CG on the HVP kernel, preconditioned by diag(H) (Jacobi; one more pass, cached per curvature).

        The same iteration and stopping rule as :func:`~fastinfl.operators.base.cg_on_hvp`
        with ``inv_diag`` (||r_q|| <= tol ||b_q|| on the unpreconditioned residual),
        so results are those of plain CG to the tolerance. The vectors stay in the
        HVP kernel's (p, k) layout and each iteration's updates are fused passes
        (kernels/csr.py ``_cg_*``); columns that finish are compacted away.
        Measured on Zipf-distributed columns (bench/RESULTS.md, "Sparse features"):
        the diagonal spans orders of magnitude (head columns in many rows, tail
        columns in few) and Jacobi cut the iterations from 571-734 (scipy's plain
        ``cg``) to 29-37 at 100000 x 2^18.
        Without a positive diagonal (l2 = 0 and an all-zero column) it runs unpreconditioned.
        """
        ridge = np.ascontiguousarray(ridge, dtype=np.float64)
        scale = rhs_scales(B)  # exact: see operators.base.rhs_scales
        B = np.asarray(B, dtype=np.float64) * scale[:, None]
        k, p = B.shape
        cached = self._jacobi
        if cached is not None and cached[0] is curv.weights and np.array_equal(cached[1], ridge):
            inv_diag = cached[2]
        else:
            diag = self.hessian_diagonal(curv, ridge)
            inv_diag = 1.0 / diag if (diag > 0.0).all() else np.ones(p)
            self._jacobi = (curv.weights, ridge.copy(), inv_diag)
        x = np.zeros((k, p))
        bnorm = np.sqrt(np.einsum("ij,ij->i", B, B))
        n_iter = np.zeros(k, np.int64)
        resid = np.where(bnorm > 0.0, 1.0, 0.0)
        status = np.where(bnorm > 0.0, MAX_ITER, CONVERGED).astype(np.int64)
        cols = np.flatnonzero(bnorm > 0.0)
        R = np.empty((p, cols.size))  # (p, k) columns, the HVP kernel's layout
        kernels._transpose(np.ascontiguousarray(B[cols]), R)
        X = np.zeros_like(R)
        P = R * inv_diag[:, None]
        rz = np.einsum("jq,jq->q", R, P)
        HP = np.empty_like(R)
        pHp, pp, hh, rr, rz_new = np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k)
        work = self.nnz + self.n_samples
        it = 0
        while cols.size and it < max_iter:
            na = cols.size
            self._run(kernels._hvp, curv.weights, ridge, P, self.n_features, HP, work=work * na)
            it += 1
            n_iter[cols] = it
            kernels._cg_dots(P, HP, pHp[:na], pp[:na], hh[:na])
            bad = ~(pHp[:na] > MIN_CURVATURE * (pp[:na] * hh[:na]))  # pp, hh: the norms (no squares)
            status[cols[bad]] = NOT_POSITIVE
            alpha = np.where(bad, 0.0, rz / np.where(bad, 1.0, pHp[:na]))
            kernels._cg_update(alpha, inv_diag, X, R, P, HP, rr[:na], rz_new[:na])
            resid[cols[~bad]] = np.sqrt(rr[:na][~bad]) / bnorm[cols[~bad]]
            done = ~bad & (resid[cols] <= tol)
            status[cols[done]] = CONVERGED
            beta = rz_new[:na] / rz
            rz = rz_new[:na].copy()
            keep = ~(bad | done)
            if not keep.all():
                x[cols[~keep]] = X[:, ~keep].T  # (few columns: a small strided copy)
                X, R, P = (np.ascontiguousarray(A[:, keep]) for A in (X, R, P))
                HP = np.empty_like(R)
                cols, beta, rz = cols[keep], beta[keep], rz[keep]
            if cols.size:
                kernels._cg_direction(beta, inv_diag, R, P)
        if cols.size:
            done_x = np.empty((cols.size, p))
            kernels._transpose(X, done_x)
            x[cols] = done_x
        return CGResult(x / scale[:, None], n_iter, resid, status)

    def rmatvec(self, c):
        """(p,) X~^T c by scipy's sparse product (float64)."""
        out = np.empty(self.n_params)
        out[: self.n_features] = self.X.T @ np.asarray(c, dtype=np.float64)
        if self.fit_intercept:
            out[self.n_features] = float(np.sum(c))
        return out

    def rows(self, idx):
        """(n_sel, p) dense float64 rows x~_i of ``idx`` only."""
        idx = self._select(idx)
        A = np.zeros((idx.shape[0], self.n_params))
        self._run(kernels._densify_rows, idx, A, work=A.size)
        if self.fit_intercept:
            A[:, self.n_features] = 1.0
        return A

    @staticmethod
    def _columns(S):
        """(p, m) float64 copy of S (m, p) by the tiled transpose, as the HVP's copies (no slower than numpy's
        strided copy of S.T; both are dominated by the first touch of the fresh buffer)."""
        S = np.ascontiguousarray(S, dtype=np.float64)
        St = np.empty((S.shape[1], S.shape[0]))
        kernels._transpose(S, St)
        return St

    def influence(self, curv, S, idx):
        St = self._columns(S)
        idx = self._select(idx)
        out = np.empty((St.shape[1], idx.shape[0]))
        per_row = self.nnz / max(1, self.n_samples) + 1
        self._run(kernels._influence, curv.residuals, St, idx, self.n_features, out,
                  work=int(idx.shape[0] * per_row * St.shape[1]))
        return out

    def top_k(self, curv, S, k):
        St = self._columns(S)
        m = St.shape[1]
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)))
        self._run(kernels._top_k, curv.residuals, St, self.n_features, out.helpful, out.helpful_idx,
                  out.harmful, out.harmful_idx, work=(self.nnz + self.n_samples) * m)
        return out
