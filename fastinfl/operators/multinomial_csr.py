"""The multinomial (softmax) operator over ``scipy.sparse`` rows (CSR; other formats converted once), never densified.

Memory O(nnz + P) for every pass (P = K p): logits, gradients, HVPs, influence
and top-k touch the stored nonzeros only, with (p, K)-shaped parameters and
(p, k K)-shaped vectors so that the K class values of a column are contiguous
(kernels/multinomial_csr.py). The Hessian (pairs of nonzeros per row, K x K
blocks) is formed when the direct solver is chosen (while it fits in memory,
fastinfl/_memory.py); otherwise solvers use HVPs. Conventions, gauge and curvature as in ``operators/multinomial_base.py``.
"""

import numpy as np

from .._config import CSR_MIN_CHUNK_NNZ
from .._memory import GIB, available_memory
from ..kernels import csr as csr_kernels
from ..kernels import multinomial_csr as kernels
from . import policy
from .base import TopK
from .csr import canonical_arrays
from .multinomial_base import MultinomialOperator


class CSRMultinomialOperator(MultinomialOperator):
    """Every pass of multinomial logistic regression over a CSR matrix (float32/float64 values, int32/int64 indices).

    See :class:`~fastinfl.operators.multinomial.MultinomialOperator`. Build with
    :func:`~fastinfl.operators.multinomial.as_multinomial_operator`, which
    validates and converts other sparse formats to CSR once; ``X`` is kept,
    not copied: do not modify it while the operator is in use.
    """

    kind = "csr-multinomial"
    # CG preconditioned by the class-averaged diagonal: column frequencies spread over orders of magnitude
    # (20000 x 4096, Zipf columns, K = 5: 481 iterations plain, 41 preconditioned).
    jacobi_cg = True

    def __init__(self, X, codes, n_classes, fit_intercept):
        super().__init__(X.shape[0], X.shape[1], fit_intercept, X.data.dtype, codes, n_classes)
        self.X = X
        self.indptr, self.indices, self.data = X.indptr, X.indices, X.data
        self.nnz = int(self.indptr[-1])
        self._canon = None  # CSR arrays without repeated columns (the diagonal pass), built once

    # -------------------------------------------------------------- helpers
    def _run(self, kernel, *args, work):
        launches = max(self.nnz + self.n_samples, work) // CSR_MIN_CHUNK_NNZ >= 2  # as CSROperator._run
        return policy.run(kernel, self.indptr, self.indices, self.data, *args, work=work, parallel=launches)

    def _columns(self, coef, intercept):
        """(p, K) Theta^T, the kernels' parameter layout."""
        return np.ascontiguousarray(self._theta(coef, intercept).T)

    def _vectors(self, V):
        """(p, k K) columns of the (k, P) rows V (kernels' layout); column q K + a is class a of v_q."""
        V = np.ascontiguousarray(V, dtype=np.float64)
        V2 = V.reshape(-1, self.row_params)
        Vt = np.empty((self.row_params, V2.shape[0]))
        csr_kernels._transpose(V2, Vt)
        return Vt

    def _rows_of(self, Vt):
        """(k, P) rows from the (p, k K) layout."""
        out = np.empty((Vt.shape[1], Vt.shape[0]))
        csr_kernels._transpose(Vt, out)
        return out.reshape(-1, self.n_params)

    def _work(self, width):
        return (self.nnz + self.n_samples) * width

    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        """(loss, grad (P,), min margin, logits (n, K)), one pass over the nonzeros."""
        gradT = np.empty((self.row_params, self.n_classes))
        Z = np.empty((self.n_samples, self.n_classes))
        loss, mmin = self._run(kernels._mn_csr_loss_grad, self._labels(), self._columns(coef, intercept),
                               self.n_features, gradT, Z, work=self._work(self.n_classes))
        return float(loss), np.ascontiguousarray(gradT.T).reshape(-1), float(mmin), Z

    def margins(self, coef, intercept):
        """(n, K) logits."""
        Z = np.empty((self.n_samples, self.n_classes))
        self._run(kernels._mn_csr_logits, self._columns(coef, intercept), self.n_features, Z,
                  work=self._work(self.n_classes))
        return Z

    def gradients(self, coef, intercept, idx=None):
        """(n_sel, P) dense per-example gradients r_i (x) x~_i of rows ``idx`` (all when None)."""
        idx = np.arange(self.n_samples, dtype=np.int64) if idx is None else np.ascontiguousarray(idx, np.int64)
        out = np.empty((idx.shape[0], self.n_params))
        self._run(kernels._mn_csr_grads, self._labels(), self._columns(coef, intercept), self.n_features, idx, out,
                  work=out.size)
        return out

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        """(P, P) H from pairs of nonzeros per row (O(sum_i nnz_i^2 K^2)); refused beyond the memory available."""
        P = self.n_params
        available = available_memory()
        if available is not None and 8 * P * P > available:
            raise ValueError(
                f"the Hessian of {P:,} parameters is a {8 * P * P / GIB:.3g} GiB dense matrix and this "
                f"machine has {available / GIB:.3g} GiB available: use solver='cg' (or 'auto'), which needs "
                "only Hessian-vector products."
            )
        H = np.empty((P, P))
        nnz_row = np.diff(self.indptr).astype(np.float64)
        self._run(kernels._mn_csr_hessian, np.ascontiguousarray(curv.weights),
                  np.ascontiguousarray(ridge, dtype=np.float64), self.n_features, H,
                  work=int(nnz_row @ nnz_row) * self.n_classes**2 + P * P)
        return H

    def hvp(self, curv, ridge, V):
        """(k, P) rows H v_q, all k in one pass over the nonzeros."""
        Vt = self._vectors(V)
        out = np.empty_like(Vt)
        self._run(kernels._mn_csr_hvp, np.ascontiguousarray(curv.weights),
                  np.ascontiguousarray(ridge, dtype=np.float64), Vt, self.n_features, out,
                  work=self._work(Vt.shape[1]))
        return self._rows_of(out)

    def _diagonal_pass(self, Wd):
        indptr, indices, data = self._canonical()
        out = np.empty((self.row_params, self.n_classes))
        policy.run(kernels._mn_csr_diagonal, indptr, indices, data, np.ascontiguousarray(Wd), self.n_features, out,
                   work=self._work(self.n_classes),
                   parallel=self._work(1) // CSR_MIN_CHUNK_NNZ >= 2)
        return out

    def _canonical(self):
        """CSR arrays without repeated columns in a row (kept): see :func:`.csr.canonical_arrays`."""
        if self._canon is None:
            self._canon = canonical_arrays(self.X)
        return self._canon

    def rows(self, idx):
        """(n_sel, p) dense float64 rows x~_i of ``idx`` only."""
        idx = np.ascontiguousarray(idx, np.int64)
        A = np.zeros((idx.shape[0], self.row_params))
        self._run(csr_kernels._densify_rows, idx, A, work=A.size)
        if self.fit_intercept:
            A[:, self.n_features] = 1.0
        return A

    def influence(self, curv, S, idx):
        """(m, n_sel) -(s_t . g_i), with g_i = r_i (x) x~_i from ``curv.residuals`` (n, K)."""
        St = self._vectors(S)
        idx = np.ascontiguousarray(idx, np.int64)
        out = np.empty((St.shape[1] // self.n_classes, idx.shape[0]))
        per_row = self.nnz / max(1, self.n_samples) + 1
        self._run(kernels._mn_csr_influence, np.ascontiguousarray(curv.residuals), St, idx, self.n_features, out,
                  work=int(idx.shape[0] * per_row * St.shape[1]))
        return out

    def top_k(self, curv, S, k):
        St = self._vectors(S)
        m = St.shape[1] // self.n_classes
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)))
        self._run(kernels._mn_csr_top_k, np.ascontiguousarray(curv.residuals), St, self.n_features, out.helpful,
                  out.helpful_idx, out.harmful, out.harmful_idx, work=self._work(St.shape[1]))
        return out
