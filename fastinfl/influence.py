"""Influence functions of a fitted logistic regression on its training set."""

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from . import _cg, _kernels
from ._config import single_threaded_blas
from ._interrupt import call_interruptible
from ._validation import (
    check_bool,
    check_choice,
    check_indices,
    check_model,
    check_scalar,
    check_vectors,
    check_X,
    check_y,
)
from .exceptions import ConvergenceError, SingularHessianError, StationarityWarning, VerificationError
from .model import cholesky, hessian_sum, objective_gradient, ridge_diagonal

SOLVERS = ("auto", "direct", "cg")
CORRECTIONS = ("none", "newton")
# "auto" forms and factors H (O(n p^2 + p^3), once) up to this many parameters,
# and runs CG on Hessian-vector products (O(n p) per iteration) above it.
AUTO_DIRECT_MAX_P = 2000
_VERIFY_SAMPLE = 8
# The direct solver refuses H beyond this condition number (relative error ~ cond x 1e-16).
MAX_CONDITION = 1e13
DEFAULT_MEMORY_LIMIT = 1 << 30


class TopK(NamedTuple):
    """Most helpful (most negative influence) and most harmful (most positive) training points.

    Each field is (m, k): row t belongs to test point t; ``helpful`` ascending,
    ``harmful`` descending; ``*_idx`` are training-row indices.
    """

    helpful_idx: np.ndarray
    helpful: np.ndarray
    harmful_idx: np.ndarray
    harmful: np.ndarray


class Influence:
    """Influence of the training points of ``model`` on test losses and parameters.

    Conventions (design contract): H = hess F(theta) + damping * I with F the
    sum of log-losses plus l2/2 ||coef||^2; g(z) the per-example log-loss
    gradient; I(z_test, z_i) = -g(z_test)^T H^-1 g(z_i), so a positive value
    means removing z_i would lower the test loss (z_i hurt), a negative one that
    z_i helped. Koh & Liang's I_up,loss uses the mean-loss Hessian: theirs is
    n_samples times ours.

    Parameters
    ----------
    model : LogisticRegression
        Fitted (or built with ``from_params`` / ``from_sklearn``).
    X_train : array-like (n, d), float32 kept as float32, other reals as float64
    y_train : array-like (n,), labels 0/1 (bool accepted)
    solver : {"auto", "direct", "cg"}
        "direct": Cholesky of H once, then triangular solves for all right-hand
        sides. "cg": batched conjugate gradient on Hessian-vector products,
        every right-hand side of a batch advanced together and converging on
        its own. "auto": direct while p <= AUTO_DIRECT_MAX_P (H is formed once
        and reused by every later call; see bench/RESULTS.md), else cg.
    damping : float >= 0
        Added to the diagonal of H.
    tol : float > 0
        CG stops when ||H x - b|| <= tol * ||b||.
    max_iter : int or None
        CG iteration limit; None means max(100, 2 p).
    verify : bool
        Re-solve up to 8 right-hand sides of every solve with numpy's explicit
        inverse and raise VerificationError beyond ``verify_rtol``.
    verify_rtol : float
        Relative tolerance of ``verify`` (max-norm, relative to the largest entry).
    stationarity_tol : float
        StationarityWarning when ||grad F(theta)|| / n_samples exceeds it.
    batch_size : int or None
        Right-hand sides (test or training points) solved together. None picks
        it from ``memory_limit``.
    memory_limit : int
        Bytes. Results larger than this (``influence``, ``params_change``,
        ``perturbation``) are refused with a ValueError instead of exhausting
        memory; batches are sized so that their working arrays stay below it.

    Attributes
    ----------
    grad_norm_ : float
        ||grad F(theta)|| on the training set (the stationarity check).
    cg_n_iter_, cg_residual_ : ndarray (k,)
        Iterations and final relative residuals of the last CG batch solved.

    Raises
    ------
    ValueError
        Bad input (names the argument). StationarityWarning is issued when the
        parameters are not a stationary point of F.
    """

    def __init__(self, model, X_train, y_train, solver="auto", damping=0.0, tol=1e-10,
                 max_iter=None, verify=False, verify_rtol=1e-6, stationarity_tol=1e-6,
                 batch_size=None, memory_limit=DEFAULT_MEMORY_LIMIT):
        check_model(model)
        self.model = model
        self.X_train = check_X(X_train, "X_train", n_features=model.n_features_)
        n, d = self.X_train.shape
        self.y_train = check_y(y_train, n, "y_train")
        self.n_params = d + int(model.fit_intercept)
        self.solver = check_choice(solver, "solver", SOLVERS)
        self.damping = check_scalar(damping, "damping")
        self.tol = check_scalar(tol, "tol", strict=True)
        self.max_iter = check_scalar(max_iter, "max_iter", integer=True, min_value=1, allow_none=True)
        if self.max_iter is None:
            self.max_iter = max(100, 2 * self.n_params)
        self.verify = check_bool(verify, "verify")
        self.verify_rtol = check_scalar(verify_rtol, "verify_rtol", strict=True)
        self.memory_limit = check_scalar(memory_limit, "memory_limit", integer=True, min_value=1)
        self.batch_size = check_scalar(batch_size, "batch_size", integer=True, min_value=1,
                                       allow_none=True)
        stationarity_tol = check_scalar(stationarity_tol, "stationarity_tol")
        self._ridge = ridge_diagonal(d, model.fit_intercept, model.l2, self.damping)
        # Copies: later changes to the model must not mix with the state computed here. X_train
        # itself is not copied (it may be a large memory map): do not modify it while in use.
        self._coef = model.coef_.copy()
        self._intercept = float(model.intercept_)
        # One pass over X: the objective's gradient (stationarity check) and the margins z_i,
        # from which residuals r_i (g(z_i) = r_i x~_i) and curvature weights s_i follow.
        z = np.empty(n)
        grad = np.empty(self.n_params)
        objective_gradient(self.X_train, self.y_train, self._coef, self._intercept, model.l2, grad, z)
        self.grad_norm_ = float(np.linalg.norm(grad))
        self._r = np.empty(n)
        self._s = np.empty(n)
        _kernels._residuals_weights(z, self.y_train, self._r, self._s)
        self._H = None
        self._chol = None
        self._H_inv = None  # numpy's explicit inverse, for verify=True
        if self.grad_norm_ > stationarity_tol * n:
            warnings.warn(
                f"the parameters are not a stationary point of the training objective: "
                f"||grad F|| = {self.grad_norm_:.3g} (> stationarity_tol * n = "
                f"{stationarity_tol * n:.3g}). Influence values describe the quadratic model "
                "at these parameters, not the effect of refitting; fit with "
                "fastinfl.LogisticRegression to reach the optimum.",
                StationarityWarning, stacklevel=2,
            )

    @property
    def _use_direct(self):
        """Direct when asked; under "auto" while p <= AUTO_DIRECT_MAX_P and H fits memory_limit."""
        if self.solver != "auto":
            return self.solver == "direct"
        return self.n_params <= AUTO_DIRECT_MAX_P and 8 * self.n_params**2 <= self.memory_limit

    @property
    def n_samples(self):
        return self.X_train.shape[0]

    # ------------------------------------------------------------ primitives
    def hessian(self):
        """(p, p) Hessian H of the training objective at theta, plus damping * I."""
        if self._H is None:
            self._check_result_size((self.n_params, self.n_params), "the Hessian",
                                    "use solver='cg', which never forms it, or raise memory_limit.")
            self._H = hessian_sum(self.X_train, self._s, self._ridge)
        return self._H.copy()

    def gradients(self, X=None, y=None):
        """(n, p) per-example log-loss gradients of (X, y); the training set when X is None."""
        X, y = self._check_data(X, y)
        self._check_result_size((X.shape[0], self.n_params), "gradients")
        out = np.empty((X.shape[0], self.n_params))
        _kernels._per_example_grads(X, y, self._coef, self._intercept, out)
        return out

    def hvp(self, V):
        """H V for V of shape (p,) or (k, p) (rows are vectors), one pass over X_train."""
        V2, was_1d = check_vectors(V, "V", self.n_params)
        out = np.empty_like(V2)
        with single_threaded_blas():
            _kernels._hvp(self.X_train, self._s, self._ridge, V2, out)
        return out[0] if was_1d else out

    def inverse_hvp(self, V):
        """H^-1 V for V of shape (p,) or (k, p), by the configured solver, in batches.

        Raises SingularHessianError when H is not positive definite and
        ConvergenceError when CG does not reach ``tol`` within ``max_iter``.
        """
        V2, was_1d = check_vectors(V, "V", self.n_params)
        out = self._solve_rows(V2)
        return out[0] if was_1d else out

    # --------------------------------------------------------------- solvers
    def _solve_rows(self, B):
        """H^-1 applied to every row of the float64 (k, p) array B, in batches; a new array."""
        out = np.empty_like(B)
        for lo, hi in self._batches(B.shape[0], 8 * self.n_params):
            out[lo:hi] = self._solve(B[lo:hi])
        return out

    def _solve(self, B):
        """H^-1 applied to the rows of the (k, p) float64 array B."""
        if self._use_direct:
            if self._chol is None:
                self._chol = self._factor()
            X = scipy.linalg.cho_solve(self._chol, B.T, check_finite=False).T
        else:
            X = self._cg(B)
        if self.verify:
            self._verify(B, X)
        return X

    def _factor(self):
        """Cholesky factor of H; SingularHessianError when H is not, or only numerically, positive definite.

        LAPACK's dpocon estimates cond(H) in O(p^2). Beyond MAX_CONDITION the direct solve's
        relative error (about cond(H) x 1e-16) could pass 1e-3, so it is refused, not returned.
        """
        H = self.hessian()
        chol = cholesky(H, hint="add damping > 0 or fit with l2 > 0")
        rcond, _ = scipy.linalg.lapack.dpocon(chol[0], np.abs(H).sum(axis=0).max(), uplo="L")
        if rcond * MAX_CONDITION < 1.0:
            raise SingularHessianError(
                f"the Hessian is numerically singular: condition number about {1 / max(rcond, 1e-300):.2g} "
                f"(> {MAX_CONDITION:.0e}), so solves could lose every digit beyond the first few. "
                "Add damping > 0 (for example 1e-6 x the largest diagonal entry) or fit with l2 > 0."
            )
        return chol

    def _cg(self, B):
        k, p = B.shape
        X = np.empty((k, p))
        n_iter = np.empty(k, np.int64)
        resid = np.empty(k)
        status = np.empty(k, np.int64)
        with single_threaded_blas():
            call_interruptible(_cg._cg_solve, self.X_train, self._s, self._ridge, np.ascontiguousarray(B),
                               self.tol, self.max_iter, X, n_iter, resid, status)
        if (status == _cg.NOT_POSITIVE).any():
            q = int(np.flatnonzero(status == _cg.NOT_POSITIVE)[0])
            raise SingularHessianError(
                f"conjugate gradient met non-positive curvature p^T H p <= 0 (right-hand side {q}): "
                "the Hessian is not positive definite; add damping > 0 or fit with l2 > 0."
            )
        if (status == _cg.MAX_ITER).any():
            q = int(np.argmax(np.where(status == _cg.MAX_ITER, resid, -np.inf)))
            raise ConvergenceError(
                f"conjugate gradient did not converge in max_iter={self.max_iter} iterations: "
                f"relative residual {resid[q]:.3g} > tol={self.tol:g} (right-hand side {q}). "
                "Raise max_iter, loosen tol, add damping, or use solver='direct'."
            )
        self.cg_n_iter_ = n_iter
        self.cg_residual_ = resid
        return X

    def _verify(self, B, X):
        sample = np.linspace(0, B.shape[0] - 1, min(_VERIFY_SAMPLE, B.shape[0])).astype(np.int64)
        if self._H_inv is None:
            self._H_inv = np.linalg.inv(self.hessian())
        ref = B[sample] @ self._H_inv.T
        err = np.max(np.abs(X[sample] - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny)
        if not err <= self.verify_rtol:
            raise VerificationError(
                f"inverse-HVP differs from numpy's direct inverse by {err:.3g} (relative, "
                f"max-norm) > verify_rtol={self.verify_rtol:g}; H may be ill-conditioned: "
                "add damping, tighten tol or use solver='direct'."
            )

    # ------------------------------------------------------ batching, memory
    def _batches(self, total, bytes_per_item):
        """(lo, hi) ranges of at most batch_size items whose working memory fits memory_limit.

        ``bytes_per_item`` is the working memory one right-hand side needs
        beyond the arrays every batch shares (CG keeps about 6 vectors of p).
        """
        size = self.batch_size or max(1, min(1024, self.memory_limit // (6 * bytes_per_item)))
        return [(lo, min(total, lo + size)) for lo in range(0, total, size)]

    def _check_result_size(self, shape, what, advice=None):
        need = 8 * int(np.prod(shape, dtype=np.float64))
        if need > self.memory_limit:
            raise ValueError(
                f"{what} would be a float64 array of shape {tuple(shape)} needing {need / 2**20:.3g} MiB, "
                f"more than memory_limit={self.memory_limit / 2**20:.3g} MiB. "
                + (advice or "Use top_k() for the most influential points, select training points "
                   "with train_idx, pass fewer test points at a time, or raise memory_limit.")
            )

    def _check_data(self, X, y, name="X"):
        if X is None:
            return self.X_train, self.y_train
        if y is None:
            raise ValueError(f"y{name[1:]} is required with {name}: the gradients depend on the labels.")
        X = check_X(X, name, n_features=self.model.n_features_)
        return X, check_y(y, X.shape[0], "y" + name[1:])

    def _train_rows(self, idx):
        """x~_i for the training rows idx, as a float64 (len(idx), p) array."""
        A = np.empty((idx.shape[0], self.n_params))
        d = self.X_train.shape[1]
        A[:, :d] = self.X_train[idx]
        if self.n_params > d:
            A[:, d] = 1.0
        return A

    def _quad_forms(self, idx):
        """q_i = x~_i^T H^-1 x~_i for the training rows idx (n_sel,), solved in batches."""
        q = np.empty(idx.shape[0])
        for lo, hi in self._batches(idx.shape[0], 8 * self.n_params):
            A = self._train_rows(idx[lo:hi])
            q[lo:hi] = np.einsum("ij,ij->i", A, self._solve(A))
        return q

    # ------------------------------------------------------------ influence
    def s_test(self, X_test, y_test):
        """(m, p) rows H^-1 g(z_test) for each test point, solved in batches."""
        return self._s_test(*self._check_data(X_test, y_test, "X_test"))

    def _s_test(self, X_test, y_test):
        """s_test of validated test data."""
        G = np.empty((X_test.shape[0], self.n_params))
        _kernels._per_example_grads(X_test, y_test, self._coef, self._intercept, G)
        return self._solve_rows(G)

    def influence(self, X_test, y_test, train_idx=None):
        """(m, n_sel) matrix I[t, j] = -g(z_test_t)^T H^-1 g(z_i), i = train_idx[j] (all when None).

        Refused with a ValueError when the result would exceed ``memory_limit``.
        """
        X_test, y_test = self._check_data(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((X_test.shape[0], idx.shape[0]), "influence")
        S = self._s_test(X_test, y_test)
        out = np.empty((S.shape[0], idx.shape[0]))
        with single_threaded_blas():
            _kernels._influence(self.X_train, self._r, S, idx, out)
        return out

    def top_k(self, X_test, y_test, k=10):
        """The k most helpful and k most harmful training points for each test point.

        Streams over row blocks of X_train (in parallel) without forming the
        (m, n) influence matrix: memory O(m k) plus a block buffer per thread.
        Ties go to the smaller training index. Returns a :class:`TopK` of
        (m, k) arrays.
        """
        X_test, y_test = self._check_data(X_test, y_test, "X_test")
        k = check_scalar(k, "k", integer=True, min_value=1)
        if k > self.n_samples:
            raise ValueError(f"k must be <= the number of training points ({self.n_samples}); got {k}.")
        m = X_test.shape[0]
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64),
                   np.empty((m, k)))
        # per test point: 64 chunks x 2 lists x k (value, index) pairs, plus a block column per thread
        per_item = 64 * 4 * 8 * k + 2 * 8 * 512
        for lo, hi in self._batches(m, per_item):
            S = self._s_test(X_test[lo:hi], y_test[lo:hi])
            with single_threaded_blas():
                call_interruptible(_kernels._top_k, self.X_train, self._r, S, out.helpful[lo:hi],
                                   out.helpful_idx[lo:hi], out.harmful[lo:hi], out.harmful_idx[lo:hi])
        return out

    def params_change(self, train_idx=None):
        """(n_sel, p) rows H^-1 g(z_i): predicted theta_{-i} - theta on removing z_i."""
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((idx.shape[0], self.n_params), "params_change")
        out = np.empty((idx.shape[0], self.n_params))
        for lo, hi in self._batches(idx.shape[0], 8 * self.n_params):
            sel = idx[lo:hi]
            out[lo:hi] = self._solve(self._train_rows(sel) * self._r[sel, None])
        return out

    def self_influence(self, train_idx=None):
        """(n_sel,) g(z_i)^T H^-1 g(z_i) >= 0: large for points the model finds hard (mislabelled?)."""
        idx = check_indices(train_idx, self.n_samples)
        return self._r[idx] ** 2 * self._quad_forms(idx)

    def leverage(self, train_idx=None):
        """(n_sel,) h_i = s_i x~_i^T H^-1 x~_i, the diagonal of the (penalised) hat matrix."""
        idx = check_indices(train_idx, self.n_samples)
        return self._s[idx] * self._quad_forms(idx)

    def loo_change(self, X_test, y_test, train_idx=None, correction="newton"):
        """(m, n_sel) predicted change in each test loss on removing training point i and refitting.

        ``correction="none"``: -I (the first-order influence). ``"newton"``
        (default): -I / (1 - h_i): the parameter change of one exact Newton step
        from theta on the objective without z_i (Sherman-Morrison), carried to
        the test loss to first order. Against actual
        refits (docs/validation.md) Newton's errors are smaller: Pearson r 0.9895
        vs 0.9849 on breast cancer, 0.9963 vs 0.9401 on digits 1 vs 7.
        """
        correction = check_choice(correction, "correction", CORRECTIONS)
        change = -self.influence(X_test, y_test, train_idx)
        if correction == "newton":
            change /= 1.0 - self.leverage(train_idx)
        return change

    def perturbation(self, X_test, y_test, train_idx=None):
        """(m, n_sel, d) Koh & Liang's I_pert,loss: d(test loss)/d x_i after refitting.

        Sum-of-losses convention, like ``influence``: Koh & Liang's mean-loss version is
        n_samples times this.

        Closed form from s_test: -s_t^T grad_x grad_theta loss(z_i) with
        grad_x grad_theta loss(z_i) = s_i x~_i coef^T + r_i [I_d; 0], so
        I_pert[t, j] = -(s_i (s_t . x~_i) coef + r_i s_t[:d]) for i = train_idx[j].
        """
        X_test, y_test = self._check_data(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        d = self.X_train.shape[1]
        self._check_result_size((X_test.shape[0], idx.shape[0], d), "perturbation")
        S = self._s_test(X_test, y_test)
        proj = self._train_rows(idx) @ S.T  # (n_sel, m): s_t . x~_i
        s_sel, r_sel = self._s[idx], self._r[idx]
        out = np.empty((S.shape[0], idx.shape[0], d))
        for t in range(S.shape[0]):
            np.multiply.outer(s_sel * proj[:, t], self._coef, out=out[t])
            out[t] += np.multiply.outer(r_sel, S[t, :d])
            np.negative(out[t], out=out[t])
        return out
