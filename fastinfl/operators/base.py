"""The operator interface: every pass over the training rows, whatever kind of data holds them.

An :class:`Operator` owns one data set (X and, for training data, y) and knows
how to run each pass of a one-margin loss (``fastinfl.losses``: logistic,
Poisson) over its rows; models and :class:`fastinfl.Influence` only ask it.
One implementation per kind of data (``dense.py``, ``csr.py``, ``dask.py``,
``cuda.py``; the softmax loss of K margins in ``multinomial.py``): see
docs/architecture.md.

Conventions: theta = (coef (d,), intercept); p = d + 1 with an intercept, d
without; x~_i = [x_i, 1] (or x_i). A pass at theta gives the margins
z_i = x~_i . theta; from them the :class:`Curvature` of the loss: residuals
r_i = d loss / dz_i (logistic: sigma(z_i) - y_i; so g(z_i) = r_i x~_i) and
curvature weights w_i = d^2 loss / dz_i^2 (logistic: sigma(z_i) sigma(-z_i); so
H = sum_i w_i x~_i x~_i^T + diag(ridge)).
``S`` (m, p) always means s_test rows H^-1 g(z_test). Every result handed back
is a NumPy float64 array; margins and curvature stay in the operator's own
storage (a NumPy array for dense data, device or distributed arrays elsewhere).
"""

from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

from .._config import PCG_MIN_CURVATURE as MIN_CURVATURE
from ..kernels.cg import CONVERGED, MAX_ITER, NORM_SQ_MAX, NORM_SQ_MIN, NOT_POSITIVE
from ..kernels.margin_loss import FAMILIES


class Curvature(NamedTuple):
    """Per-row loss derivatives at theta, in the operator's storage: ``residuals`` r and ``weights`` w, (n,) each."""

    residuals: object
    weights: object


class _TopKFields(NamedTuple):
    helpful_idx: np.ndarray
    helpful: np.ndarray
    harmful_idx: np.ndarray
    harmful: np.ndarray


class TopK(_TopKFields):
    """Most helpful (most negative influence) and most harmful (most positive) training points.

    Each field is (m, k): row t belongs to test point t; ``helpful`` ascending,
    ``harmful`` descending; ``*_idx`` are training-row positions (0-based, not
    DataFrame labels). A helpful point has influence < 0 and a harmful one > 0:
    when fewer than k training points have that sign, the remaining slots hold
    index -1 and value NaN. :meth:`to_frame` gives one row per (test point, kind,
    rank) with the row labels of DataFrame inputs (``train_index``, ``test_index``:
    set by :meth:`fastinfl.Influence.top_k`, None for arrays).
    """

    train_index = None
    test_index = None

    def with_index(self, train_index, test_index):
        """This result with the training and test row labels that :meth:`to_frame` reports (None: positions)."""
        out = TopK(*self)
        out.train_index, out.test_index = train_index, test_index
        return out

    def to_frame(self):
        """A pandas DataFrame: columns test, kind ("helpful" / "harmful"), rank (1 = most), train, influence,
        train_position; ``test`` and ``train`` are row labels of DataFrame inputs, else positions. Empty slots
        (index -1) are left out."""
        import pandas as pd

        parts = []
        for kind, idx, val in (("helpful", self.helpful_idx, self.helpful), ("harmful", self.harmful_idx, self.harmful)):
            t, r = np.nonzero(idx >= 0)  # row-major: by test point, then rank
            pos = idx[t, r]
            parts.append((t, pd.DataFrame({
                "test": np.asarray(self.test_index)[t] if self.test_index is not None else t,
                "kind": kind, "rank": r + 1,
                "train": np.asarray(self.train_index)[pos] if self.train_index is not None else pos,
                "influence": val[t, r], "train_position": pos})))
        order = np.argsort(np.concatenate([t for t, _ in parts]), kind="stable")  # test point, then kind, rank
        return pd.concat([f for _, f in parts], ignore_index=True).iloc[order].reset_index(drop=True)


class Setup(NamedTuple):
    """:meth:`Operator.setup`: loss sum, gradient (p,), min signed margin, margins, curvature, H (p, p)."""

    loss: float
    grad: np.ndarray
    min_margin: float
    margins: object
    curv: Curvature
    hessian: np.ndarray


class CGResult(NamedTuple):
    """Batched CG outcome, row q for right-hand side q: solutions (k, p), iterations, relative residuals, status."""

    x: np.ndarray
    n_iter: np.ndarray
    residual: np.ndarray
    status: np.ndarray


# CG status codes: one vocabulary for every CG (kernels/cg.py defines them for the fused loops too).

_FALLBACK_BLOCK_ROWS = 4096  # rows per block in the base-class passes built on rows()


def cg_on_hvp(hvp, B, tol, max_iter, precondition=None):
    """Batched (preconditioned) conjugate gradient for H x_q = b_q, rows b_q of B (k, p), given ``hvp(V)`` = rows H v.

    The one CG driver of the package (the base operators, PCG with any
    preconditioner, group downdates, the multinomial gauge); kinds that fuse the
    loop in a kernel (dense, CSR, CUDA) follow the same rules and are tested
    against it (tests/test_cg.py). Each right-hand side has its own step sizes
    and stops on its own once its recursively updated residual satisfies
    ||r_q|| <= tol ||b_q|| (status CONVERGED); one ``hvp`` call per iteration for
    all running columns. ``precondition(R)``, when given, applies M^-1 to the
    rows of R (M symmetric positive definite): the iterates change, the stopping
    rule (on the unpreconditioned residual) does not. Each right-hand side is scaled by a power of two
    first (:func:`rhs_scales`). Curvature p^T H p not above
    MIN_CURVATURE ||p|| ||H p|| (a product of norms, never of squares; p^T H p >= lambda_min ||p||^2 and ||H p|| <= lambda_max
    ||p||: H not positive definite along p, or cond(H) beyond 1e15 there, where alpha
    could overflow) stops that column with NOT_POSITIVE;
    MAX_ITER when ``max_iter`` iterations do not reach tol. Returns a :class:`CGResult`.
    """
    apply = precondition if precondition is not None else (lambda R: R)
    k, p = B.shape
    x = np.zeros((k, p))
    scale = rhs_scales(B)
    R = np.asarray(B, dtype=np.float64) * scale[:, None]
    Z = apply(R)
    P = np.array(Z, copy=True)
    rz = np.einsum("ij,ij->i", R, Z)
    bnorm = _row_norms(R)
    n_iter = np.zeros(k, np.int64)
    resid = np.where(bnorm > 0.0, 1.0, 0.0)
    status = np.where(bnorm > 0.0, MAX_ITER, CONVERGED).astype(np.int64)
    active = np.flatnonzero(bnorm > 0.0)
    it = 0
    while active.size and it < max_iter:
        HP = hvp(P[active])
        it += 1
        n_iter[active] = it
        curv_pp = np.einsum("ij,ij->i", P[active], HP)
        bad = ~(curv_pp > MIN_CURVATURE * _row_norms(P[active]) * _row_norms(HP))
        status[active[bad]] = NOT_POSITIVE
        keep = ~bad
        a, HP, curv_pp = active[keep], HP[keep], curv_pp[keep]
        alpha = rz[a] / curv_pp
        x[a] += alpha[:, None] * P[a]
        R[a] -= alpha[:, None] * HP
        resid[a] = _row_norms(R[a]) / bnorm[a]
        done = resid[a] <= tol
        status[a[done]] = CONVERGED
        a = a[~done]
        if a.size:
            Za = apply(R[a])
            rz_new = np.einsum("ij,ij->i", R[a], Za)
            P[a] = Za + (rz_new / rz[a])[:, None] * P[a]
            rz[a] = rz_new
        active = a
    return CGResult(x / scale[:, None], n_iter, resid, status)


def _row_norms(A):
    """(k,) Euclidean norms of the rows of A (k, p) without overflow or underflow: rows whose sum of squares
    leaves [NORM_SQ_MIN, NORM_SQ_MAX] are taken again scaled by a power of two (``kernels.cg.norm``)."""
    A = np.asarray(A, dtype=np.float64)
    sq = np.einsum("ij,ij->i", A, A)
    out = np.sqrt(sq)
    redo = ~(((sq >= NORM_SQ_MIN) & (sq <= NORM_SQ_MAX)) | (sq == 0.0))
    if redo.any():
        scale = rhs_scales(A[redo])
        S = A[redo] * scale[:, None]
        out[redo] = np.sqrt(np.einsum("ij,ij->i", S, S)) / scale
    return out


def rhs_scales(B):
    """(k,) powers of two that bring each row of B (k, p) to max |b_qj| in [0.5, 1) (1 for a zero row).

    CG is homogeneous in b (alpha, beta, the relative residual and the curvature test are ratios), so every
    CG here solves for the scaled rows and divides x by the scale: exact in binary floating point, and
    ||b||^2, p^T H p and the norms stay far from overflow (|b| past 1e154) and underflow (|b| below 1e-154,
    where ||b||^2 = 0 would have stopped a non-zero right-hand side as converged at x = 0).
    """
    B = np.asarray(B)
    m = np.abs(B).max(axis=1) if B.shape[1] else np.zeros(B.shape[0])
    return np.ldexp(1.0, -np.frexp(np.where(np.isfinite(m), m, 0.0))[1])


class Operator(ABC):
    """Every pass over the rows of one data set, for a loss of one margin per row.

    Attributes: ``n_samples``, ``n_features``, ``fit_intercept``, ``n_params``
    (p), ``dtype`` (of X), ``has_labels``, ``loss`` (a name of
    ``fastinfl.losses.LOSSES``: "logistic" or "poisson") and ``family`` (its
    kernel code, ``kernels.margin_loss``). Only the passes that read labels
    (losses, gradients, curvature, setup) depend on the loss; the curvature
    passes see residuals and weights only.
    """

    def __init__(self, n_samples, n_features, fit_intercept, dtype, has_labels, loss="logistic"):
        self.loss = loss
        self.family = FAMILIES[loss]
        self.n_samples = n_samples
        self.n_features = n_features
        self.fit_intercept = bool(fit_intercept)
        self.n_params = n_features + int(fit_intercept)
        self.dtype = np.dtype(dtype)
        self.has_labels = has_labels

    # ------------------------------------------------------ passes at theta
    @abstractmethod
    def loss_grad(self, coef, intercept):
        """(loss_sum, grad (p,) of the summed loss without L2, min signed margin, margins) in one pass.

        min signed margin = min_i (2 y_i - 1) z_i (> 0: theta separates the data).
        """

    @abstractmethod
    def margins(self, coef, intercept):
        """(n,) margins z_i as a NumPy array."""

    @abstractmethod
    def means(self, coef, intercept):
        """(n,) predicted means as a NumPy array: sigma(z_i) (logistic) or e^z_i (Poisson)."""

    @abstractmethod
    def losses(self, coef, intercept):
        """(n,) per-example losses (needs labels; Poisson without the constant log(y_i!))."""

    @abstractmethod
    def gradients(self, coef, intercept, idx=None):
        """(n_sel, p) per-example loss gradients r_i x~_i of rows ``idx`` (all when None); needs labels."""

    @abstractmethod
    def curvature(self, margins):
        """:class:`Curvature` (residuals, weights) from the margins of :meth:`loss_grad`; needs labels."""

    # ----------------------------------------------------- curvature passes
    @abstractmethod
    def hessian(self, curv, ridge):
        """(p, p) sum_i w_i x~_i x~_i^T + diag(ridge)."""

    @abstractmethod
    def hvp(self, curv, ridge, V):
        """(k, p) rows H v_q for the rows of V (k, p), one pass over X for all k."""

    def hessian_diagonal(self, curv, ridge):
        """(p,) diag(H) = sum_i w_i x~_i^2 + ridge, in one pass (the Jacobi preconditioner).

        This fallback reads the rows through :meth:`rows` in blocks; kinds of
        data override it with a kernel.
        """
        diag = np.array(ridge, dtype=np.float64, copy=True)
        for lo in range(0, self.n_samples, _FALLBACK_BLOCK_ROWS):
            idx = np.arange(lo, min(self.n_samples, lo + _FALLBACK_BLOCK_ROWS))
            A = self.rows(idx)
            diag += np.einsum("i,ij,ij->j", self.weights(curv, idx), A, A)
        return diag

    def rmatvec(self, c):
        """sum_i x~_i c_i: X~^T c, (p,) for c (n,) or (p, K) for c (n, K) (a gradient from weighted residuals).

        This fallback reads the rows through :meth:`rows` in blocks (any dtype of X,
        float64 sums); sparse data override it.
        """
        out = 0.0
        for lo in range(0, self.n_samples, _FALLBACK_BLOCK_ROWS):
            idx = np.arange(lo, min(self.n_samples, lo + _FALLBACK_BLOCK_ROWS))
            out = out + self.rows(idx).T @ c[idx]
        return out

    def hvp_rows(self, curv, ridge, idx, V, scale=1.0):
        """(k, p) rows scale * sum_{i in idx} w_i x~_i x~_i^T v_q + ridge * v_q: a Hessian of the rows ``idx``.

        With ``scale = n / len(idx)`` an unbiased estimate of ``hvp`` from a
        sample of rows (stochastic LiSSA); reads only those rows.
        """
        A = self.rows(idx)
        T = (A @ V.T) * self.weights(curv, idx)[:, None]
        return scale * (T.T @ A) + V * ridge

    def cg(self, curv, ridge, B, tol, max_iter):
        """Batched conjugate gradient on :meth:`hvp`: a :class:`CGResult` for the rows of B (k, p).

        Implementations may override with a fused kernel; this one (``cg_on_hvp``)
        makes one :meth:`hvp` call (one pass over X) per iteration for all running columns.
        """
        return cg_on_hvp(lambda V: self.hvp(curv, ridge, V), B, tol, max_iter)

    @abstractmethod
    def rows(self, idx):
        """(n_sel, p) rows x~_i for ``idx`` as a dense float64 array."""

    @abstractmethod
    def influence(self, curv, S, idx):
        """(m, n_sel) I[t, j] = -(S_t . x~_i) r_i for i = idx[j]."""

    def influence_to_zarr(self, curv, S, path, dtype=np.float64, overwrite=False):
        """Write the (m, n) influence matrix of every training row to a new Zarr array at ``path``; return it (read-only).

        This version computes column blocks with :meth:`influence` (at most
        INFLUENCE_BLOCK_BYTES each) and writes them from this process;
        operators over distributed data write from where their blocks live.
        """
        import zarr

        from .._config import INFLUENCE_BLOCK_BYTES

        m, n = S.shape[0], self.n_samples
        cols = max(1, min(n, INFLUENCE_BLOCK_BYTES // (8 * max(1, m))))
        out = zarr.open_array(str(path), mode="w" if overwrite else "w-", shape=(m, n), chunks=(m, cols),
                              dtype=dtype)
        for lo in range(0, n, cols):
            hi = min(n, lo + cols)
            out[:, lo:hi] = self.influence(curv, S, np.arange(lo, hi, dtype=np.int64))
        return zarr.open_array(str(path), mode="r")

    @abstractmethod
    def top_k(self, curv, S, k):
        """:class:`~fastinfl.TopK` of (m, k): per row of S the k smallest and k largest -(S_t . x~_i) r_i over all rows."""

    def hessian_operator(self, curv, ridge):
        """The :class:`HessianOperator` the solvers use at this curvature (the multinomial one adds its gauge)."""
        return HessianOperator(self, curv, ridge)

    def setup(self, coef, intercept, ridge):
        """:class:`Setup` at theta: what a direct solve needs from the training rows.

        The loss sum, its gradient (p,) (no L2), min signed margin, margins, the
        :class:`Curvature` and H = sum_i w_i x~_i x~_i^T + diag(ridge) (p, p).
        This default makes two passes (:meth:`loss_grad`, :meth:`hessian`);
        implementations may fuse them into one read of X.
        """
        loss, grad, min_margin, z = self.loss_grad(coef, intercept)
        curv = self.curvature(z)
        return Setup(loss, grad, min_margin, z, curv, self.hessian(curv, ridge))

    def residuals(self, curv, idx):
        """(n_sel,) r_i for rows ``idx`` as NumPy."""
        return np.asarray(curv.residuals)[idx]

    def weights(self, curv, idx):
        """(n_sel,) w_i for rows ``idx`` as NumPy."""
        return np.asarray(curv.weights)[idx]


class HessianOperator:
    """H = sum_i w_i x~_i x~_i^T + diag(ridge) at one theta: what the solvers need, and nothing else.

    ``hvp(V)`` (k, p), ``hessian()`` (p, p, formed once and cached), ``cg(B, tol,
    max_iter)``, ``diagonal()`` (p,), ``hvp_rows(idx, V, scale)`` and ``n_params``. Thread-safe: the cached
    Hessian is built under a lock. ``hessian``: H already formed at this theta (from :meth:`Operator.setup`),
    if any.
    """

    def __init__(self, operator, curv, ridge, hessian=None):
        import threading

        self.operator = operator
        self.curv = curv
        self.ridge = np.ascontiguousarray(ridge, dtype=np.float64)
        self.n_params = operator.n_params
        self._H = hessian  # already formed (by Operator.setup) or None: formed on first use
        self._diag = None
        self._lock = threading.Lock()

    def hvp(self, V):
        return self.operator.hvp(self.curv, self.ridge, V)

    def hessian(self):
        """(p, p) H; formed on the first call (one pass over X) and cached: do not modify it."""
        with self._lock:
            if self._H is None:
                self._H = self.operator.hessian(self.curv, self.ridge)
        return self._H

    def cg(self, B, tol, max_iter):
        return self.operator.cg(self.curv, self.ridge, B, tol, max_iter)

    def exact_hessian(self):
        """H itself; :meth:`hessian` is what the solvers factor (they differ only for a singular H with a gauge)."""
        return self.hessian()

    def project(self, B):
        """The part of the right-hand sides B (k, p) that H^+ sees: B itself here (H is nonsingular)."""
        return B

    def diagonal(self):
        """(p,) diag(H): from the cached Hessian when formed, else one pass over X (cached)."""
        with self._lock:
            if self._diag is None:
                self._diag = (np.diag(self._H).copy() if self._H is not None
                              else self.operator.hessian_diagonal(self.curv, self.ridge))
        return self._diag

    def hvp_rows(self, idx, V, scale=1.0):
        """(k, p) H V^T estimated from the rows ``idx`` only (see :meth:`Operator.hvp_rows`)."""
        return self.operator.hvp_rows(self.curv, self.ridge, idx, V, scale)

    @property
    def n_samples(self):
        return self.operator.n_samples
