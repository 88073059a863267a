"""The multinomial (softmax) operators over dense rows, and the constructor for every kind of data.

Parameter space, curvature and the gauge (why H is singular and how solves stay
exact): ``operators/multinomial_base.py``. Sparse rows: ``operators/multinomial_csr.py``.
"""

import numpy as np

from .. import _validation
from .._config import MIN_CHUNK_ROWS
from ..kernels import multinomial as kernels
from . import DEVICES, policy
from .base import TopK
from .multinomial_base import GaugedHessianOperator, MultinomialOperator, add_gauge, null_mask, project
from .multinomial_csr import CSRMultinomialOperator

__all__ = ["CSRMultinomialOperator", "DenseMultinomialOperator", "GaugedHessianOperator", "MultinomialOperator",
           "add_gauge", "as_multinomial_operator", "null_mask", "prepare_X", "project"]

_DIAGONAL_BLOCK_ROWS = 4096  # rows per gemm of the dense diagonal pass


# ---------------------------------------------------------------- operator
def sum_squares(X):
    from .dense import sum_squares as dense_sum_squares

    return dense_sum_squares(X)


def as_multinomial_operator(X, codes=None, n_classes=2, fit_intercept=True, name="X", n_features=None,
                            checked=False, device=None):
    """The multinomial operator over X (validated) with int64 class codes (already checked).

    Dense arrays give a :class:`DenseMultinomialOperator`; scipy.sparse matrices
    (CSR kept, other formats converted once) a
    :class:`~fastinfl.operators.multinomial_csr.CSRMultinomialOperator`; dask
    arrays (dask imported only then) a
    :class:`~fastinfl.operators.multinomial_dask.DaskMultinomialOperator`;
    ``device="cuda"`` (or X a CuPy / Numba device array with device None) a
    :class:`~fastinfl.operators.multinomial_cuda.CudaMultinomialOperator` (numba.cuda imported only then).
    ``checked``: X was already returned by :func:`prepare_X` (its validation is not repeated).
    """
    if not checked:
        X = prepare_X(X, name, n_features, device)
    if codes is not None and codes.shape[0] != X.shape[0]:
        raise ValueError(f"y{name[1:]} has {codes.shape[0]} labels but {name} has {X.shape[0]} rows.")
    if _validation.is_sparse(X):
        return CSRMultinomialOperator(X, codes, n_classes, fit_intercept)
    if _validation.is_dask_array(X):
        from .multinomial_dask import DaskMultinomialOperator

        return DaskMultinomialOperator(X, codes, n_classes, fit_intercept)
    if _on_cuda(X, name, device):
        try:
            from .multinomial_cuda import CudaMultinomialOperator
        except ImportError as exc:
            raise ImportError(f"device='cuda' needs numba-cuda and an NVIDIA GPU: from a checkout, pip install '.[cuda]' "
                              f"({exc})") from None
        return CudaMultinomialOperator(X, codes, n_classes, fit_intercept, name)
    return DenseMultinomialOperator(X, codes, n_classes, fit_intercept)


def _on_cuda(X, name, device):
    """Whether X's passes run on the GPU: device "cuda", or None for a device array (the binary model's rules
    and errors, ``operators.as_operator``)."""
    if device not in DEVICES:
        raise ValueError(f"device must be None, 'cpu' or 'cuda'; got {device!r}.")
    on_device = hasattr(X, "__cuda_array_interface__")
    if device == "cuda" or (on_device and device is None):
        return True
    if on_device:
        raise ValueError(f"{name} is a GPU array but device='cpu': pass device='cuda' or copy it to the host.")
    return False


def prepare_X(X, name="X", n_features=None, device=None):
    """X validated for a multinomial operator: a checked CSR matrix for scipy.sparse, a row-chunked dask
    array (one pass, never gathered) for dask, else a dense array; with ``device="cuda"`` a host array is
    checked here (then copied to the device once by the operator), a device array is left to the operator's
    check on the device."""
    if _validation.is_dask_array(X):  # before check_X, which would gather it
        if device == "cuda":
            raise ValueError(f"{name} is a dask array: its blocks run on CPU workers; device='cuda' does not "
                             "apply to it.")
        from .multinomial_dask import check_dask_X

        return check_dask_X(X, name, n_features=n_features)
    if _validation.is_sparse(X):
        if device == "cuda":
            raise ValueError(f"{name} is a scipy.sparse matrix: device='cuda' takes dense arrays only.")
        return _validation.check_csr(X, name, n_features=n_features)
    if _on_cuda(X, name, device) and hasattr(X, "__cuda_array_interface__"):
        if len(X.shape) != 2:  # the rest (dtype, layout, finiteness) is checked on the device
            raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}.")
        if n_features is not None and X.shape[1] != n_features:
            raise ValueError(f"{name} has {X.shape[1]} features but the model has {n_features}.")
        return X
    return _validation.check_X(X, name, n_features=n_features, sum_squares=sum_squares)


class DenseMultinomialOperator(MultinomialOperator):
    """Every pass of multinomial logistic regression over a C-contiguous float32/float64 (n, d) array.

    See :class:`MultinomialOperator`. Build with :func:`as_multinomial_operator`;
    ``X`` is kept, not copied.
    """

    kind = "dense-multinomial"

    def __init__(self, X, codes, n_classes, fit_intercept):
        super().__init__(X.shape[0], X.shape[1], fit_intercept, X.dtype, codes, n_classes)
        self.X = X

    def _parallel(self, rows=None):
        return (self.n_samples if rows is None else rows) > MIN_CHUNK_ROWS

    @staticmethod
    def _run(kernel, *args, work, parallel):
        """``policy.run`` with BLAS held to one thread also when the kernel runs serially.

        The kernels' gemms are per row block (BLOCK_ROWS rows by p by k K, below
        BLAS_THREADS_MIN_FLOPS in practice: the policy's one-thread rule for BLAS
        inside a serial kernel); threaded BLAS on them made the serial passes
        several times slower on a loaded machine (``python -m bench.multinomial_cg``).
        """
        if parallel:
            return policy.run(kernel, *args, work=work, parallel=True)  # holds BLAS to one thread itself
        with policy.single_threaded_blas():
            return policy.run(kernel, *args, work=work, parallel=False)

    def _diagonal_pass(self, Wd):
        """(p, K) sum_i x~_ij^2 Wd[i, a], in row blocks (one gemm each)."""
        d = self.n_features
        D = np.zeros((self.row_params, self.n_classes))
        for lo in range(0, self.n_samples, _DIAGONAL_BLOCK_ROWS):
            A = np.asarray(self.X[lo:lo + _DIAGONAL_BLOCK_ROWS], dtype=np.float64)
            D[:d] += (A * A).T @ Wd[lo:lo + A.shape[0]]
        if self.fit_intercept:
            D[d] = Wd.sum(axis=0)
        return D

    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        """(loss, grad (P,), min margin, logits (n, K)); min margin = min_i z_{i,y_i} - max_{k != y_i} z_ik."""
        theta = self._theta(coef, intercept)
        grad = np.empty_like(theta)
        Z = np.empty((self.n_samples, self.n_classes))
        loss, mmin = self._run(kernels._mn_loss_grad, self.X, self._labels(), theta, grad, Z,
                                work=self.X.size * self.n_classes, parallel=self._parallel())
        return float(loss), grad.reshape(-1), float(mmin), Z

    def margins(self, coef, intercept):
        """(n, K) logits."""
        Z = np.empty((self.n_samples, self.n_classes))
        self._run(kernels._mn_logits, self.X, self._theta(coef, intercept), Z, work=self.X.size * self.n_classes,
                   parallel=self._parallel())
        return Z

    def gradients(self, coef, intercept, idx=None):
        """(n_sel, P) per-example gradients r_i (x) x~_i of rows ``idx`` (all when None)."""
        X, y = (self.X, self._labels()) if idx is None else (self.X[idx], self._labels()[idx])
        X, y = np.ascontiguousarray(X), np.ascontiguousarray(y)
        out = np.empty((X.shape[0], self.n_params))
        self._run(kernels._mn_per_example_grads, X, y, self._theta(coef, intercept), out,
                   work=X.size * self.n_classes, parallel=self._parallel(X.shape[0]))
        return out

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        """(P, P) sum_i W_i (x) x~_i x~_i^T + diag(ridge), class-pair blocks by dsyrk / dgemm."""
        P = self.n_params
        H = np.empty((P, P))
        several = kernels.mn_hessian_chunk_count(self.n_samples, P) > 1
        policy.run(kernels._mn_hessian, self.X, curv.weights, np.ascontiguousarray(ridge, dtype=np.float64), H,
                   work=self.X.size * P, parallel=several)
        return H

    def hvp(self, curv, ridge, V):
        """(k, P) rows H v_q, all k in one pass over X."""
        V = np.ascontiguousarray(V, dtype=np.float64)
        out = np.empty_like(V)
        self._run(kernels._mn_hvp, self.X, curv.weights, np.ascontiguousarray(ridge, dtype=np.float64), V, out,
                   work=self.X.size * V.shape[0] * self.n_classes, parallel=self._parallel())
        return out

    def rows(self, idx):
        A = np.empty((idx.shape[0], self.row_params))
        A[:, : self.n_features] = self.X[idx]
        if self.fit_intercept:
            A[:, self.n_features] = 1.0
        return A

    def influence(self, curv, S, idx):
        """(m, n_sel) -(s_t . g_i), with g_i = r_i (x) x~_i from ``curv.residuals`` (n, K)."""
        S = np.ascontiguousarray(S, dtype=np.float64)
        out = np.empty((S.shape[0], idx.shape[0]))
        self._run(kernels._mn_influence, self.X, np.ascontiguousarray(curv.residuals), S, idx, out,
                   work=idx.shape[0] * self.n_params * S.shape[0], parallel=self._parallel(idx.shape[0]))
        return out

    def top_k(self, curv, S, k):
        S = np.ascontiguousarray(S, dtype=np.float64)
        m = S.shape[0]
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)))
        self._run(kernels._mn_top_k, self.X, np.ascontiguousarray(curv.residuals), S, out.helpful,
                   out.helpful_idx, out.harmful, out.harmful_idx, work=self.X.size * m * self.n_classes,
                   parallel=self._parallel())
        return out
