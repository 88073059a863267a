"""The operator over dense rows: an in-memory ``numpy.ndarray`` or a ``numpy.memmap``, float32 or float64."""

import numpy as np

from .. import _validation
from .._config import BLAS_THREADS_MIN_FLOPS, HVP_BLAS_MIN_K
from ..kernels import cg as cg_kernels
from ..kernels import dense as kernels
from . import policy
from .base import CGResult, Curvature, Operator, Setup, TopK, rhs_scales


# ``parallel=`` of policy.run: True when the kernel launches the thread pool (it runs several row
# chunks: the launch then follows the threading layer's locking and the thread budget) or calls BLAS
# in its blocks (BLAS is then held to one thread: per-chunk calls must not spawn BLAS threads, and a
# serial kernel's small per-block calls are as fast on one thread and do not wait for a busy core:
# see BLAS_THREADS_MIN_FLOPS). The kernels decide their chunks by size (kernels.dense.chunk_count);
# the operator asks the same functions. Only a serial Hessian of p > 2048 (one chunk, large dsyrk
# calls) keeps BLAS's threads.


def sum_squares(X):
    """sum_ij X_ij^2 in float64 by the parallel kernel (the finiteness check of check_X)."""
    return policy.run(kernels._sum_squares, X, work=X.size,
                      parallel=kernels.pass_chunks(X.shape[0], X.shape[1]) > 1)


class DenseOperator(Operator):
    """Passes over a C-contiguous float32 or float64 (n, d) array (float32 stays float32; sums in float64).

    Build it with :func:`fastinfl.operators.as_operator`, which validates. ``X``
    is kept, not copied when already C-contiguous float32/float64 (a memory map
    stays a memory map): do not modify it while the operator is in use.
    """

    kind = "dense"

    def __init__(self, X, y, fit_intercept, unchecked=None, loss="logistic"):
        super().__init__(X.shape[0], X.shape[1], fit_intercept, X.dtype, y is not None, loss)
        self.X = X
        self.y = y
        # The argument name of X while its finiteness is not yet checked (as_operator(defer_finite=True)):
        # setup() checks it in its own pass; any other pass checks it first.
        self._unchecked = unchecked

    def _check_finite(self, sum_sq=None):
        """Raise check_finite's error unless X is finite (``sum_sq``: its sum of squares, when known)."""
        if self._unchecked is None:
            return
        name = self._unchecked
        _validation.check_finite(self.X, name, (lambda _: sum_sq) if sum_sq is not None else sum_squares)
        self._unchecked = None

    # -------------------------------------------------------------- helpers
    def _params(self, coef, intercept):
        return np.ascontiguousarray(coef, dtype=np.float64), float(intercept) if self.fit_intercept else 0.0

    def _parallel(self, rows=None):
        """Whether a plain pass over ``rows`` rows (default all) runs parallel chunks."""
        return kernels.pass_chunks(self.n_samples if rows is None else rows, self.n_features) > 1

    def _hvp_parallel(self, k):
        """Whether an HVP pass for k vectors runs parallel chunks or calls BLAS (k >= HVP_BLAS_MIN_K)."""
        return k >= HVP_BLAS_MIN_K or kernels.hvp_chunks(self.n_samples, self.n_params, k) > 1

    def _hessian_blas_single(self):
        """Hold BLAS to one thread in the Hessian passes unless they run as one chunk of large dsyrk calls."""
        n, p = self.n_samples, self.n_params
        return kernels.hessian_chunk_count(n, p) > 1 or n * p * p < BLAS_THREADS_MIN_FLOPS

    def _labels(self):
        if self.y is None:
            raise ValueError("labels are required for this quantity: pass y with X.")
        return self.y

    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        self._check_finite()
        coef, b = self._params(coef, intercept)
        grad = np.empty(self.n_params)
        z = np.empty(self.n_samples)
        loss, min_margin = policy.run(kernels._loss_grad, self.X, self._labels(), self.family, coef, b, grad, z,
                                      work=self.X.size, parallel=self._parallel())
        return float(loss), grad, float(min_margin), z

    def margins(self, coef, intercept):
        self._check_finite()
        coef, b = self._params(coef, intercept)
        z = np.empty(self.n_samples)
        policy.run(kernels._margins, self.X, coef, b, z, work=self.X.size, parallel=self._parallel())
        return z

    def losses(self, coef, intercept):
        z = self.margins(coef, intercept)
        kernels._losses(z, self._labels(), self.family, z)
        return z

    def means(self, coef, intercept):
        z = self.margins(coef, intercept)
        kernels._mean(z, self.family, z)
        return z

    def gradients(self, coef, intercept, idx=None):
        self._check_finite()
        coef, b = self._params(coef, intercept)
        X, y = (self.X, self._labels()) if idx is None else (self.X[idx], self._labels()[idx])
        X = np.ascontiguousarray(X)
        out = np.empty((X.shape[0], self.n_params))
        policy.run(kernels._per_example_grads, X, y, self.family, coef, b, out, work=X.size,
                   parallel=self._parallel(X.shape[0]))
        return out

    def curvature(self, margins):
        r = np.empty(self.n_samples)
        w = np.empty(self.n_samples)
        kernels._residuals_weights(margins, self._labels(), self.family, r, w)
        return Curvature(r, w)

    def setup(self, coef, intercept, ridge):
        """:class:`Setup` in one read of X (loss, gradient, weights and dsyrk Hessian fused)."""
        coef, b = self._params(coef, intercept)
        n, p = self.n_samples, self.n_params
        grad = np.empty(p)
        z, r, w = np.empty(n), np.empty(n), np.empty(n)
        H = np.empty((p, p))
        loss, min_margin, sum_sq = policy.run(kernels._setup, self.X, self._labels(), self.family, coef, b,
                                         np.ascontiguousarray(ridge, dtype=np.float64), grad, z, r, w, H,
                                         work=self.X.size * p, parallel=self._hessian_blas_single())
        self._check_finite(sum_sq)
        return Setup(float(loss), grad, float(min_margin), z, Curvature(r, w), H)

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        self._check_finite()
        p = self.n_params
        H = np.empty((p, p))
        policy.run(kernels._hessian_sum, self.X, curv.weights, ridge, H, work=self.X.size * p,
                   parallel=self._hessian_blas_single())
        return H

    def hessian_diagonal(self, curv, ridge):
        out = np.empty(self.n_params)
        policy.run(kernels._hessian_diagonal, self.X, curv.weights, np.ascontiguousarray(ridge, dtype=np.float64),
                   out, work=self.X.size, parallel=self._parallel())
        return out

    def hvp(self, curv, ridge, V):
        self._check_finite()
        V = np.ascontiguousarray(V, dtype=np.float64)
        out = np.empty_like(V)
        policy.run(kernels._hvp, self.X, curv.weights, ridge, V, out, work=self.X.size * V.shape[0],
                   parallel=self._hvp_parallel(V.shape[0]))
        return out

    def cg(self, curv, ridge, B, tol, max_iter):
        """Batched CG fused in one kernel (no Python between iterations); see :meth:`Operator.cg`."""
        k, p = B.shape
        x = np.empty((k, p))
        n_iter = np.empty(k, np.int64)
        resid = np.empty(k)
        status = np.empty(k, np.int64)
        scale = rhs_scales(B)  # exact: see operators.base.rhs_scales
        policy.run(cg_kernels._cg_solve, self.X, curv.weights, ridge,
                   np.ascontiguousarray(np.asarray(B, dtype=np.float64) * scale[:, None]), tol, max_iter,
                   x, n_iter, resid, status, work=self.X.size * k * max_iter, parallel=self._hvp_parallel(k))
        return CGResult(x / scale[:, None], n_iter, resid, status)

    def rows(self, idx):
        self._check_finite()
        A = np.empty((idx.shape[0], self.n_params))
        A[:, : self.n_features] = self.X[idx]
        if self.fit_intercept:
            A[:, self.n_features] = 1.0
        return A

    def influence(self, curv, S, idx):
        self._check_finite()
        S = np.ascontiguousarray(S, dtype=np.float64)
        out = np.empty((S.shape[0], idx.shape[0]))
        policy.run(kernels._influence, self.X, curv.residuals, S, idx, out,
                   work=idx.shape[0] * self.n_params * S.shape[0], parallel=True)
        return out

    def top_k(self, curv, S, k):
        self._check_finite()
        S = np.ascontiguousarray(S, dtype=np.float64)
        m = S.shape[0]
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)))
        policy.run(kernels._top_k, self.X, curv.residuals, S, out.helpful, out.helpful_idx, out.harmful,
                   out.harmful_idx, work=self.X.size * m, parallel=True)
        return out


def verify_pass(op, theta, V, with_hash):
    """The state file's verifying pass (``fastinfl._state``), one read of the dense X of ``op`` (binary,
    Poisson or multinomial): (Z (n, K) margins, grad (K, p) unpenalised, HV (k, K p) without ridge, the
    checksum of X as hex or None). ``theta`` (K, p), ``V`` (k, K p)."""
    from ..kernels import checksum

    X = op.X
    n, d = X.shape
    K, p = theta.shape
    V = np.ascontiguousarray(V, dtype=np.float64)
    k = V.shape[0]
    bits = X.view(np.uint32 if X.dtype == np.float32 else np.uint64)
    nch = int(checksum.chunk_count(n, d, K * p * (k + 1) + 2))
    Z = np.empty((n, K))
    grads = np.zeros((nch, K, p))
    hvs = np.zeros((nch, k, K * p))
    lanes = np.zeros((nch, 2), np.uint64)
    policy.run(checksum._verify_pass, X, bits, op.y, op.family, theta, V, checksum.checksum_keys(d),
               bool(with_hash), Z, grads, hvs, lanes, work=X.size * K * (k + 1), parallel=nch > 1)
    grad = np.zeros((K, p))
    HV = np.zeros((k, K * p))
    for c in range(nch):  # merged in chunk order: the same bits for any number of threads
        grad += grads[c]
        HV += hvs[c]
    digest = None
    if with_hash:
        total = lanes.sum(axis=0, dtype=np.uint64)  # wrapping sums: independent of the order
        digest = f"{int(total[0]):016x}{int(total[1]):016x}"
    return Z, grad, HV, digest
