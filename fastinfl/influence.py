"""Influence functions of a fitted logistic regression on its training set: a façade over operator + solver."""

import warnings

import numpy as np

from ._config import (
    AUTO_DIRECT_MAX_P,
    DEFAULT_MEMORY_LIMIT,
    TOP_K_BLOCK_BYTES,
    TOP_K_HEAP_BYTES,
)
from ._validation import (
    check_bool,
    check_choice,
    check_indices,
    check_scalar,
    check_vectors,
)
from .exceptions import StationarityWarning
from .model import check_fitted_model, objective_gradient, penalised, ridge_diagonal
from .operators import HessianOperator, TopK, as_operator
from .solvers import CG, Direct, Verified, batches, solve_bytes

SOLVERS = ("auto", "direct", "cg")
CORRECTIONS = ("none", "newton")

__all__ = ["Influence", "TopK", "SOLVERS", "CORRECTIONS", "AUTO_DIRECT_MAX_P", "DEFAULT_MEMORY_LIMIT"]


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
        CG stops a right-hand side when its recursively updated residual r
        (not a recomputed H x - b) satisfies ||r|| <= tol * ||b||.
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
        check_fitted_model(model)
        self.model = model
        d = model.n_features_
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
        # With the direct solver the setup pass below reads X once for everything, its finiteness
        # check included (the same error as as_operator's own check, before anything is returned).
        self._op = as_operator(X_train, y_train, model.fit_intercept, "X_train", n_features=d,
                               defer_finite=self._use_direct)
        # Copies: later changes to the model must not mix with the state computed here. X_train
        # itself is not copied (it may be a large memory map): do not modify it while in use.
        self._coef = model.coef_.copy()
        self._intercept = float(model.intercept_)
        ridge = ridge_diagonal(d, model.fit_intercept, model.l2, self.damping)
        if self._use_direct:
            # One read of X for everything the direct solver needs: the objective's gradient
            # (stationarity check), residuals r_i (g(z_i) = r_i x~_i), curvature weights w_i and H.
            setup = self._op.setup(self._coef, self._intercept, ridge)
            _, grad = penalised(setup.loss, setup.grad, self._coef, model.l2)
            self._curv, H = setup.curv, setup.hessian
        else:
            # One pass over X: the objective's gradient and the margins z_i, from which residuals
            # and curvature weights follow; H is never formed (CG uses HVPs).
            _, grad, _, z = objective_gradient(self._op, self._coef, self._intercept, model.l2)
            self._curv, H = self._op.curvature(z), None
        self.grad_norm_ = float(np.linalg.norm(grad))
        self._hess = HessianOperator(self._op, self._curv, ridge, hessian=H)
        self._solvers = {}
        n = self._op.n_samples
        if self.grad_norm_ > stationarity_tol * n:
            warnings.warn(
                f"the parameters are not a stationary point of the training objective: "
                f"||grad F|| = {self.grad_norm_:.3g} (> stationarity_tol * n = "
                f"{stationarity_tol * n:.3g}). Influence values describe the quadratic model "
                "at these parameters, not the effect of refitting; fit with "
                "fastinfl.LogisticRegression to reach the optimum (from a scikit-learn model, "
                "refit it with a tighter tol, or use fastinfl.LogisticRegression(l2=1/C).fit(X, y, "
                "init_params=...) warm-started from its parameters).",
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
        return self._op.n_samples

    @property
    def X_train(self):
        """The validated training features the operator reads (not a copy: do not modify)."""
        return self._op.X

    @property
    def y_train(self):
        return self._op.y

    @property
    def _solver(self):
        """The solver for the current settings (built once per setting; the factor is kept)."""
        key = ("direct" if self._use_direct else "cg", self.tol, self.max_iter, self.verify, self.verify_rtol)
        solver = self._solvers.get(key)
        if solver is None:
            solver = Direct(self._hess) if key[0] == "direct" else CG(self._hess, self.tol, self.max_iter)
            if self.verify:
                solver = Verified(solver, self.verify_rtol)
            solver = self._solvers.setdefault(key, solver)
        return solver

    @property
    def cg_n_iter_(self):
        """(k,) CG iterations of the last CG batch solved."""
        return self._last_cg("n_iter_")

    @property
    def cg_residual_(self):
        """(k,) final relative residuals (recursively updated) of the last CG batch solved."""
        return self._last_cg("residual_")

    def _last_cg(self, attr):
        for solver in self._solvers.values():
            if solver.name == "cg" and getattr(solver, attr) is not None:
                return getattr(solver, attr)
        raise AttributeError(f"cg_{attr} is set once a CG solve has run")

    # ------------------------------------------------------------ primitives
    def hessian(self):
        """(p, p) Hessian H of the training objective at theta, plus damping * I."""
        self._check_result_size((self.n_params, self.n_params), "the Hessian",
                                "use solver='cg', which never forms it, or raise memory_limit.")
        return self._hess.hessian().copy()

    def gradients(self, X=None, y=None):
        """(n, p) per-example log-loss gradients of (X, y); the training set when X is None."""
        op = self._test_operator(X, y)
        self._check_result_size((op.n_samples, self.n_params), "gradients")
        return op.gradients(self._coef, self._intercept)

    def hvp(self, V):
        """H V for V of shape (p,) or (k, p) (rows are vectors), one pass over X_train."""
        V2, was_1d = check_vectors(V, "V", self.n_params)
        out = self._hess.hvp(V2)
        return out[0] if was_1d else out

    def inverse_hvp(self, V):
        """H^-1 V for V of shape (p,) or (k, p), by the configured solver, in batches.

        Raises SingularHessianError when H is not positive definite and
        ConvergenceError when CG does not reach ``tol`` within ``max_iter``.
        """
        V2, was_1d = check_vectors(V, "V", self.n_params)
        out = self._solve_rows(V2)
        return out[0] if was_1d else out

    # --------------------------------------------------- solves, batching, memory
    def _solve_rows(self, B):
        """H^-1 applied to every row of the float64 (k, p) array B, in batches; a new array."""
        out = np.empty_like(B)
        solver = self._solver
        for begin, end in self._batches(B.shape[0], solve_bytes(self.n_params)):
            out[begin:end] = solver.solve(np.ascontiguousarray(B[begin:end]))
        return out

    def _batches(self, total, bytes_per_item):
        return batches(total, bytes_per_item, self.memory_limit, self.batch_size)

    def _check_result_size(self, shape, what, advice=None):
        need = 8 * int(np.prod(shape, dtype=np.float64))
        if need > self.memory_limit:
            raise ValueError(
                f"{what} would be a float64 array of shape {tuple(shape)} needing {need / 2**20:.3g} MiB, "
                f"more than memory_limit={self.memory_limit / 2**20:.3g} MiB. "
                + (advice or "Use top_k() for the most influential points, select training points "
                   "with train_idx, pass fewer test points at a time, or raise memory_limit.")
            )

    def _test_operator(self, X, y, name="X"):
        """The operator over (X, y) (validated); the training operator when X is None."""
        if X is None:
            return self._op
        if y is None:
            raise ValueError(f"y{name[1:]} is required with {name}: the gradients depend on the labels.")
        return as_operator(X, y, self._op.fit_intercept, name, n_features=self._op.n_features)

    def _quad_forms(self, idx):
        """q_i = x~_i^T H^-1 x~_i for the training rows idx (n_sel,), solved in batches."""
        q = np.empty(idx.shape[0])
        solver = self._solver
        for begin, end in self._batches(idx.shape[0], solve_bytes(self.n_params)):
            A = self._op.rows(idx[begin:end])
            q[begin:end] = np.einsum("ij,ij->i", A, solver.solve(A))
        return q

    # ------------------------------------------------------------ influence
    def s_test(self, X_test, y_test):
        """(m, p) rows H^-1 g(z_test) for each test point, solved in batches."""
        return self._s_test(self._test_operator(X_test, y_test, "X_test"))

    def _s_test(self, test, idx=None):
        """s_test rows of the test operator's rows ``idx`` (all when None)."""
        return self._solve_rows(test.gradients(self._coef, self._intercept, idx))

    def influence(self, X_test, y_test, train_idx=None):
        """(m, n_sel) matrix I[t, j] = -g(z_test_t)^T H^-1 g(z_i), i = train_idx[j] (all when None).

        Refused with a ValueError when the result would exceed ``memory_limit``.
        """
        test = self._test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((test.n_samples, idx.shape[0]), "influence")
        return self._op.influence(self._curv, self._s_test(test), idx)

    def top_k(self, X_test, y_test, k=10):
        """The k most helpful and k most harmful training points for each test point.

        Streams over row blocks of X_train (in parallel) without forming the
        (m, n) influence matrix: memory O(m k) plus a block buffer per thread.
        Ties go to the smaller training index. Returns a :class:`TopK` of
        (m, k) arrays. A helpful point has influence < 0 and a harmful one > 0:
        where fewer than k training points have that sign, the remaining slots
        hold index -1 and value NaN.
        """
        test = self._test_operator(X_test, y_test, "X_test")
        k = check_scalar(k, "k", integer=True, min_value=1)
        if k > self.n_samples:
            raise ValueError(f"k must be <= the number of training points ({self.n_samples}); got {k}.")
        m = test.n_samples
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64),
                   np.empty((m, k)))
        per_item = max(solve_bytes(self.n_params), TOP_K_HEAP_BYTES * k + TOP_K_BLOCK_BYTES)
        for begin, end in self._batches(m, per_item):
            S = self._s_test(test, np.arange(begin, end))
            for field, part in zip(out, self._op.top_k(self._curv, S, k)):
                field[begin:end] = part
        return out

    def params_change(self, train_idx=None):
        """(n_sel, p) rows H^-1 g(z_i): predicted theta_{-i} - theta on removing z_i."""
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((idx.shape[0], self.n_params), "params_change")
        out = np.empty((idx.shape[0], self.n_params))
        solver = self._solver
        for begin, end in self._batches(idx.shape[0], solve_bytes(self.n_params)):
            sel = idx[begin:end]
            out[begin:end] = solver.solve(self._op.rows(sel) * self._op.residuals(self._curv, sel)[:, None])
        return out

    def self_influence(self, train_idx=None):
        """(n_sel,) g(z_i)^T H^-1 g(z_i) >= 0: large for points the model finds hard (mislabelled?)."""
        idx = check_indices(train_idx, self.n_samples)
        return self._op.residuals(self._curv, idx) ** 2 * self._quad_forms(idx)

    def leverage(self, train_idx=None):
        """(n_sel,) h_i = w_i x~_i^T H^-1 x~_i, the diagonal of the (penalised) hat matrix."""
        idx = check_indices(train_idx, self.n_samples)
        return self._op.weights(self._curv, idx) * self._quad_forms(idx)

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
        grad_x grad_theta loss(z_i) = w_i x~_i coef^T + r_i [I_d; 0], so
        I_pert[t, j] = -(w_i (s_t . x~_i) coef + r_i s_t[:d]) for i = train_idx[j].
        """
        test = self._test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        d = self._op.n_features
        self._check_result_size((test.n_samples, idx.shape[0], d), "perturbation")
        S = self._s_test(test)
        proj = self._op.rows(idx) @ S.T  # (n_sel, m): s_t . x~_i
        w_sel, r_sel = self._op.weights(self._curv, idx), self._op.residuals(self._curv, idx)
        out = np.empty((S.shape[0], idx.shape[0], d))
        for t in range(S.shape[0]):
            np.multiply.outer(w_sel * proj[:, t], self._coef, out=out[t])
            out[t] += np.multiply.outer(r_sel, S[t, :d])
            np.negative(out[t], out=out[t])
        return out
