"""Influence functions of a fitted logistic regression on its training set: a façade over operator + solver."""

import os
import sys
import warnings

import numpy as np
import scipy.linalg

from . import _multiclass
from ._config import (
    AUTO_DIRECT_MAX_P,
    DEFAULT_MEMORY_LIMIT,
    FIT_ERROR_SAMPLE_ROWS,
    GROUP_CHANGE_ERROR,
    TOP_K_BLOCK_BYTES,
    TOP_K_HEAP_BYTES,
)
from ._estimator import check_sample_weight
from ._memory import direct_shortfall, hessian_passes
from ._validation import (
    check_bool,
    check_choice,
    check_groups,
    check_indices,
    check_scalar,
    check_vectors,
)
from .exceptions import AccuracyWarning, StationarityWarning
from .groups import group_steps
from .losses import LOSSES as MARGIN_LOSSES
from .model import (
    check_fitted_model,
    check_weighted_data,
    is_multinomial,
    objective_gradient,
    penalised,
    ridge_diagonal,
    weighted,
    weighted_objective_gradient,
)
from .multinomial import MultinomialLogisticRegression
from .operators import HessianOperator, TopK, as_operator
from .solvers import CG, SOLVERS, Direct, Verified, batches, solve_bytes
from .solvers_iterative import PCG, PRECONDITIONERS, Arnoldi, LiSSA

CORRECTIONS = ("none", "newton")
LOSSES = ("exact", "linear")

__all__ = ["Influence", "TopK", "SOLVERS", "CORRECTIONS", "AUTO_DIRECT_MAX_P", "DEFAULT_MEMORY_LIMIT"]


def _frame_index(X):
    """The row labels of a pandas DataFrame (its ``index``), else None."""
    return X.index if hasattr(X, "iloc") and hasattr(X, "index") else None


class Influence:
    """Influence of the training points of ``model`` on test losses and parameters.

    Test labels: every quantity takes ``y_test``, the test points' labels in the model's
    own values; ``y_test=None`` means the label the model predicts (the most probable
    class) for each test point: "which training points made the model say this?"
    before any label exists (classifiers; a Poisson model needs observed counts).

    Conventions (design contract): H = hess F(theta) + damping * I with F the
    sum of log-losses plus l2/2 ||coef||^2; g(z) the per-example log-loss
    gradient; I(z_test, z_i) = -g(z_test)^T H^-1 g(z_i), so a positive value
    means removing z_i would lower the test loss (z_i hurt), a negative one that
    z_i helped. Koh & Liang's I_up,loss uses the mean-loss Hessian: theirs is
    n_samples times ours.

    Parameters
    ----------
    model : LogisticRegression, PoissonRegression or MultinomialLogisticRegression
        Fitted (or built with ``from_params`` / ``from_sklearn``). For the
        multinomial model every quantity lives in parameter space P = K p
        (s_test (m, K p), params_change (n_sel, K p)); H is singular along the
        shift of every class by the same vector (the intercepts), every gradient
        is orthogonal to it, and solves return the pseudo-inverse H^+ V
        (``fastinfl.operators.multinomial`` says how and why it is exact);
        ``leverage`` and the Newton correction use the K x K blocks (see them).
    X_train : array-like (n, d), float32 kept as float32, other reals as float64; a pandas
        DataFrame's row labels are kept for :meth:`TopK.to_frame`
    y_train : array-like (n,), the model's labels (a classifier's ``classes_``: any type) or counts
    sample_weight : array-like (n,) of weights >= 0, optional
        The weights the model was fitted with (NumPy or scipy.sparse training data): H and
        every gradient are of sum_i s_i loss_i, and each quantity concerns removing a whole
        weighted row (its term s_i loss_i; an integer weight counts as that many copies, removed
        together). The derivative with respect to the weight s_i is influence / s_i, with the
        opposite sign for up-weighting.
    solver : {"auto", "direct", "cg", "lissa", "arnoldi"}
        "direct": Cholesky of H once, then triangular solves for all right-hand
        sides; a ValueError with the GiB it needs and has when the dense H does
        not fit ``memory_limit`` or its factorisation (2 copies) the machine's
        available memory. "cg": batched conjugate gradient on Hessian-vector products,
        every right-hand side of a batch advanced together and converging on
        its own (with ``preconditioner``: preconditioned CG). "auto": direct
        while forming H costs at most AUTO_DIRECT_MAX_P passes over X (dense X:
        p <= AUTO_DIRECT_MAX_P; sparse X: mean nonzeros per row, weighted by
        row) and it fits in memory as for "direct" (H is formed once and reused
        by every later call; see bench/RESULTS.md), else cg. "lissa": Koh & Liang's Neumann
        recursion (needs ~cond(H) passes; raises unless it reaches ``tol``).
        "arnoldi": low-rank inverse from the top ``rank`` eigenpairs
        (Schioppa et al. 2022), an approximation (user guide, "Solvers").
    preconditioner : {None, "jacobi", "nystrom", "auto"}
        For CG (solver "cg", or "auto" when it picks CG): "jacobi" = diag(H)^-1
        (one pass); "nystrom" = randomized rank-``rank`` Nystrom approximation of
        H (rank adaptive when None); "auto" = the rule measured in the solver
        study (``fastinfl._config.AUTO_PRECONDITIONER``). Refused with other solvers.
    rank : int >= 1 or None
        Nystrom rank (None: adaptive) and Arnoldi rank (None: 50), capped at p
        (multinomial: at P minus the dimension of the gauge null space, where H
        has no eigenvalue to invert).
    lissa_depth : int >= 1 or None
        LiSSA steps (passes over X, or row samples) at most; None: 10000.
    lissa_scale : float > 0 or None
        LiSSA scale; must exceed half the largest eigenvalue of H. None: the
        largest eigenvalue from 20 Lanczos steps.
    lissa_repetitions : int >= 1
        Independent stochastic LiSSA runs averaged (only with ``lissa_batch_size``).
    lissa_batch_size : int >= 1 or None
        Rows sampled (with replacement) per LiSSA step; None: the full Hessian
        (deterministic).
    seed : int
        Seed of the random starts and samples (Nystrom, LiSSA, Arnoldi).
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
        Relative tolerance of ``verify`` (max-norm, relative to the largest entry); also the accuracy
        the fit's stopping error is checked against (``fit_error_``).
    stationarity_tol : float
        StationarityWarning when ||grad F(theta)|| / n_samples exceeds it.
    batch_size : int or None
        Right-hand sides (test or training points) solved together. None picks
        it from ``memory_limit``.
    memory_limit : int
        Bytes. Results larger than this (``influence``, ``params_change``,
        ``perturbation``) are refused with a ValueError instead of exhausting
        memory; batches are sized so that their working arrays stay below it.
    device : {None, "cpu", "cuda"}
        "cuda": the training rows live on the GPU and every pass over them runs
        as Numba CUDA kernels (optional extra ``cuda``: from a checkout,
        ``pip install '.[cuda]'``); NumPy X_train is moved once, CuPy / Numba device
        arrays are used in place (None picks "cuda" for them). Results are NumPy.

    Attributes
    ----------
    grad_norm_ : float
        ||grad F(theta)|| on the training set (the stationarity check).
    cg_n_iter_, cg_residual_ : ndarray (k,)
        Iterations and final relative residuals of the last CG batch solved.
    fit_error_ : float or None
        Estimated bound on the relative error that the fit's stopping tolerance adds to every
        influence value (``3 max_i |x~_i . H^-1 grad F|``, docs/accuracy.md), set at the first solve with
        the direct solver (None before, with other solvers and for the multinomial model).
        AccuracyWarning when it exceeds ``verify_rtol``.

    Raises
    ------
    ValueError
        Bad input (names the argument). StationarityWarning is issued when the
        parameters are not a stationary point of F.
    """

    def __init__(self, model, X_train, y_train, sample_weight=None, solver="auto", damping=0.0, tol=1e-10,
                 max_iter=None, verify=False, verify_rtol=1e-6, stationarity_tol=1e-6,
                 batch_size=None, memory_limit=DEFAULT_MEMORY_LIMIT, device=None, preconditioner=None,
                 rank=None, lissa_depth=None, lissa_scale=None, lissa_repetitions=1, lissa_batch_size=None, seed=0,
                 *, _state=None):
        if isinstance(model, MultinomialLogisticRegression):
            model.check_fitted()
        self._multi = is_multinomial(model)
        if self._multi:
            model.check_fitted()
        else:
            check_fitted_model(model)
        self.model = model
        self._train_index = _frame_index(X_train)
        if self._multi:
            self._op = model.operator(X_train, y_train, "X_train", device=device)
            self.sample_weight = check_sample_weight(sample_weight, self._op.n_samples)
            check_weighted_data(self._op, self.sample_weight)
            d = self._op.n_features
        else:  # the operator is built below, once the solver is known (see defer_finite)
            d = model.n_features_
        self.n_params = self._op.n_params if self._multi else d + int(model.fit_intercept)
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
        self.preconditioner = check_choice(preconditioner, "preconditioner", PRECONDITIONERS)
        if self.preconditioner is not None and self.solver not in ("auto", "cg"):
            raise ValueError(f"preconditioner applies to solver='cg' (or 'auto' when it picks CG); got "
                             f"preconditioner={preconditioner!r} with solver={solver!r}.")
        self.rank = check_scalar(rank, "rank", integer=True, min_value=1, allow_none=True)
        self.lissa_depth = check_scalar(lissa_depth, "lissa_depth", integer=True, min_value=1, allow_none=True)
        self.lissa_scale = check_scalar(lissa_scale, "lissa_scale", strict=True, allow_none=True)
        self.lissa_repetitions = check_scalar(lissa_repetitions, "lissa_repetitions", integer=True, min_value=1)
        self.lissa_batch_size = check_scalar(lissa_batch_size, "lissa_batch_size", integer=True, min_value=1,
                                             allow_none=True)
        self.seed = check_scalar(seed, "seed", integer=True)
        self._hessian_passes = hessian_passes(X_train, self.n_params)
        if self.solver == "direct":
            short = direct_shortfall(self.n_params, self.memory_limit)
            if short is not None:
                raise ValueError(f"solver='direct': {short}. Use solver='cg' (or 'auto'), which needs only "
                                 "Hessian-vector products, or raise memory_limit where the machine has the memory.")
        # Copies: later changes to the model must not mix with the state computed here. X_train
        # itself is not copied (it may be a large memory map): do not modify it while in use.
        self._coef = model.coef_.copy()
        self._intercept = model.intercept_.copy() if self._multi else float(model.intercept_)
        self._fit_grad = None  # grad F(theta) (p,), kept for the check of the fit's stopping error
        if self._multi:
            if _state is None:
                s = self.sample_weight
                if s is None:
                    _, grad, _, z = _multiclass.objective_gradient(self._op, self._coef, self._intercept, model.l2_)
                else:
                    _, grad, _, z = _multiclass.weighted_objective_gradient(self._op, self._coef, self._intercept,
                                                                            model.l2_, s)
                self.grad_norm_ = float(np.linalg.norm(grad))
                self._curv = weighted(self._op.curvature(z), s)
            else:
                self.grad_norm_, self._curv = _state.restore_curvature(self._op)
            self._hess = self._op.hessian_operator(self._curv, _multiclass.ridge_vector(
                self._op.n_classes, d, model.fit_intercept, model.l2_, self.damping))
        else:
            self._init_binary(X_train, y_train, sample_weight, device, _state)
        self._solvers = {}
        n = self._op.n_samples
        # The fit's stopping error is checked once, where H is first factored (_check_fit_error); not at
        # parameters that are no stationary point (the StationarityWarning below says more).
        self.fit_error_ = None
        if self.grad_norm_ > stationarity_tol * n:
            self._fit_grad = None
            warnings.warn(
                f"the parameters are not a stationary point of the training objective: "
                f"||grad F|| = {self.grad_norm_:.3g} (> stationarity_tol * n = "
                f"{stationarity_tol * n:.3g}). Influence values describe the quadratic model "
                f"at these parameters, not the effect of refitting. Refit to the optimum: "
                f"fastinfl.{type(model).__name__}(l2=...).fit(X, y); for a scikit-learn model, "
                f"fastinfl.{type(model).__name__}.from_sklearn(estimator, X, y) (a Newton refit warm-started "
                "from its parameters) or sklearn's LogisticRegression(tol=1e-10).",
                StationarityWarning, stacklevel=2,
            )

    def _init_binary(self, X_train, y_train, sample_weight, device, state):
        """The binary model's operator, curvature and Hessian operator (one read of X where possible)."""
        model = self.model
        d = model.n_features_
        # With the direct solver the setup pass below reads X once for everything, its finiteness
        # check included (the same error as as_operator's own check, before anything is returned).
        setup_pass = self._use_direct and state is None and sample_weight is None
        self._op = as_operator(X_train, model.encode_labels(y_train, "y_train"), model.fit_intercept, "X_train",
                               n_features=d, device=device, defer_finite=setup_pass, loss=model.loss)
        s = self.sample_weight = check_sample_weight(sample_weight, self._op.n_samples)
        check_weighted_data(self._op, s)
        ridge = ridge_diagonal(d, model.fit_intercept, model.l2_, self.damping)
        H = None
        if state is not None:  # Influence.load: one pass checks the file against X and recomputes them
            self.grad_norm_, self._curv = state.restore_curvature(self._op)
        elif setup_pass:
            # One read of X for everything the direct solver needs: the objective's gradient
            # (stationarity check), residuals r_i (g(z_i) = r_i x~_i), curvature weights w_i and H.
            setup = self._op.setup(self._coef, self._intercept, ridge)
            _, grad = penalised(setup.loss, setup.grad, self._coef, model.l2_)
            self.grad_norm_ = float(np.linalg.norm(grad))
            self._fit_grad = grad
            self._curv, H = setup.curv, setup.hessian
        else:
            # One pass over X: the objective's gradient and the margins z_i, from which residuals
            # and curvature weights follow; H is formed only if a solver asks for it.
            if s is None:
                _, grad, _, z = objective_gradient(self._op, self._coef, self._intercept, model.l2_)
            else:
                _, grad, _, z = weighted_objective_gradient(self._op, self._coef, self._intercept, model.l2_, s)
            self.grad_norm_ = float(np.linalg.norm(grad))
            self._fit_grad = grad
            self._curv = weighted(self._op.curvature(z), s)
        self._hess = HessianOperator(self._op, self._curv, ridge, hessian=H)

    # ------------------------------------------------------------ persisted state
    def save(self, path, check="full"):
        """Write the fitted state to ``path`` atomically: a versioned .npz file read without pickle.

        Holds the model, the solver settings, the Cholesky factor when formed (call
        any solve first to include it) and a fingerprint of the training data:
        shape, dtype, SHA-256 of the labels and a checksum of every element of X
        (``check="full"``, one pass over X). ``check="sample"`` hashes 1024 rows
        only: a later change to other rows goes undetected by :meth:`load`.
        """
        from . import _state

        if self.sample_weight is not None:
            raise ValueError("save does not hold sample weights yet: an Influence built with sample_weight cannot be "
                             "saved; rebuild it from the model, the data and the weights instead.")
        if getattr(self._op, "kind", "dense") not in ("dense", "dense-multinomial"):
            raise ValueError(f"save is available for in-memory (dense NumPy) training data only; this Influence "
                             f"runs on {self._op.kind} data, whose per-row state stays where the data are.")
        return _state.save(self, path, check)

    @classmethod
    def load(cls, path, X_train, y_train, stationarity_tol=1e-6):
        """The :class:`Influence` saved by :meth:`save`, over the same training data, verified.

        Validates ``X_train`` and ``y_train`` as any Influence, then one pass over X
        checks them against the saved fingerprint and recomputes the residuals,
        weights and gradient norm from the saved parameters; the saved Cholesky
        factor is checked against H on random vectors. Any damaged, tampered or
        mismatching file raises :class:`~fastinfl.StateError` naming it.
        """
        from . import _state

        return _state.load(cls, path, X_train, y_train, stationarity_tol)

    @property
    def _use_direct(self):
        """Direct when asked; under "auto" while forming H costs at most AUTO_DIRECT_MAX_P passes over X
        (dense: p <= AUTO_DIRECT_MAX_P) and H fits in memory (_memory.direct_shortfall)."""
        if self.solver != "auto":
            return self.solver == "direct"
        # decided once per memory_limit (it reads the machine's available memory): every solve asks
        if getattr(self, "_auto_direct", (None,))[0] != self.memory_limit:
            self._auto_direct = (self.memory_limit, self._hessian_passes <= AUTO_DIRECT_MAX_P
                                 and direct_shortfall(self.n_params, self.memory_limit) is None)
        return self._auto_direct[1]

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
        kind = "direct" if self._use_direct else self.solver if self.solver in ("lissa", "arnoldi") else "cg"
        key = (kind, self.tol, self.max_iter, self.verify, self.verify_rtol, self.preconditioner, self.rank,
               self.lissa_depth, self.lissa_scale, self.lissa_repetitions, self.lissa_batch_size, self.seed)
        solver = self._solvers.get(key)
        if solver is None:
            if kind == "direct":
                solver = Direct(self._hess)
            elif kind == "lissa":
                solver = LiSSA(self._hess, self.tol, self.lissa_depth, self.lissa_scale, self.lissa_repetitions,
                               self.lissa_batch_size, self.seed)
            elif kind == "arnoldi":
                solver = Arnoldi(self._hess, self.rank, seed=self.seed)
            elif self.preconditioner is None:
                solver = CG(self._hess, self.tol, self.max_iter)
            else:
                solver = PCG(self._hess, self.tol, self.max_iter, self.preconditioner, self.rank, self.seed)
            if self.verify:
                solver = Verified(solver, self.verify_rtol)
            solver = self._solvers.setdefault(key, solver)
            if kind == "direct" and self._fit_grad is not None:
                self._check_fit_error(solver)
        return solver

    def _check_fit_error(self, solver):
        """AccuracyWarning when the fit's stopping error may spoil influence values beyond ``verify_rtol``.

        The fit stops at a small gradient gamma = grad F(theta), not at the optimum theta*: to first
        order theta - theta* = delta = H^-1 gamma, which moves every margin by x~_i . delta. With
        mu = max_i |x~_i . delta|, influence values are off by at most 3 mu, relative to
        sqrt(self-influence x self-influence) (docs/accuracy.md derives it). Run once, on the first
        solve with the Cholesky factor (which that solve needs anyway): one triangular solve and the
        margins of delta on at most FIT_ERROR_SAMPLE_ROWS training rows. Sets ``fit_error_`` = 3 mu.
        """
        grad, self._fit_grad = self._fit_grad, None
        if grad is None:  # checked already (by a concurrent call)
            return
        if not getattr(self.model, "converged_", None):  # given parameters (from_params): no fit stopped
            return  # anywhere; the stationarity check (and its stationarity_tol) speaks for them
        delta = scipy.linalg.cho_solve(solver.factor(), grad, check_finite=False)
        n = self.n_samples
        idx = np.unique(np.linspace(0, n - 1, min(n, FIT_ERROR_SAMPLE_ROWS)).astype(np.int64))
        mu = 0.0
        for begin in range(0, idx.shape[0], 512):
            mu = max(mu, float(np.max(np.abs(self._op.rows(idx[begin:begin + 512]) @ delta))))
        self.fit_error_ = 3.0 * mu
        if self.fit_error_ > self.verify_rtol:
            model = self.model
            fit_tol = getattr(model, "tol", None)
            advice = (f"refit with tol <= {fit_tol * self.verify_rtol / self.fit_error_ / 10:.0e} "
                      f"(fastinfl.{type(model).__name__}(tol=...), now {fit_tol:g})" if fit_tol else "refit tighter")
            gnorm, dnorm = float(np.linalg.norm(grad)), float(np.linalg.norm(delta))
            frame, level, package = sys._getframe(0), 1, os.path.dirname(os.path.abspath(__file__))
            while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
                frame, level = frame.f_back, level + 1  # the warning points at the caller's line
            warnings.warn(
                f"influence values may be off by up to {self.fit_error_:.2g} (relative; > verify_rtol = "
                f"{self.verify_rtol:g}) because the fit stopped short of the optimum: its gradient "
                f"||grad F|| = {gnorm:.3g} (within the fit's tol) leaves the parameters about {dnorm:.3g} from "
                f"it and moves training margins by up to {mu:.3g}, as the objective is nearly flat there "
                f"(||H^-1 grad F|| / ||grad F|| = {dnorm / gnorm:.3g}: nearly separable data, tiny l2). "
                f"{advice[0].upper()}{advice[1:]}, or use a larger l2 (docs/accuracy.md).",
                AccuracyWarning, stacklevel=level,
            )

    @property
    def solver_(self):
        """The solver object for the current settings (``n_iter_``, ``residual_`` of its last batch)."""
        return self._solver

    # ----------------------------------------------- the interface of extensions (groups, state, service)
    @property
    def operator(self):
        """The training data's :class:`~fastinfl.operators.Operator` (every pass over X_train)."""
        return self._op

    @property
    def curvature(self):
        """The :class:`~fastinfl.operators.Curvature` (residuals, weights) of the training rows at theta."""
        return self._curv

    @property
    def hessian_operator(self):
        """The :class:`~fastinfl.operators.HessianOperator` H (+ damping) at theta that the solvers use."""
        return self._hess

    @property
    def params(self):
        """(coef, intercept): theta, the model's parameters copied when this Influence was built (read-only use)."""
        return self._coef, self._intercept

    @property
    def uses_direct(self):
        """Whether solves use the direct (Cholesky) solver under the current settings."""
        return self._use_direct

    @property
    def solvers(self):
        """The solver objects built so far, one per setting (a factor is kept in its solver)."""
        return list(self._solvers.values())

    def solve(self, B):
        """H^-1 applied to every row of the float64 (k, P) array B by the configured solver, in batches."""
        return self._solve_rows(B)

    def batches(self, total, bytes_per_item):
        """(begin, end) ranges of ``total`` items whose working memory fits ``memory_limit`` (``batch_size``)."""
        return self._batches(total, bytes_per_item)

    def check_result_size(self, shape, what, advice=None):
        """ValueError naming ``what`` unless a float64 array of ``shape`` fits ``memory_limit``."""
        self._check_result_size(shape, what, advice)

    def test_operator(self, X, y, name="X"):
        """The validated :class:`~fastinfl.operators.Operator` over test points (X, y) for this model."""
        return self._test_operator(X, y, name)

    def s_test_rows(self, test, idx=None):
        """(n_sel, P) rows H^-1 g of the test operator's rows ``idx`` (all when None)."""
        return self._s_test(test, idx)

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
        return self._hess.exact_hessian().copy()

    def gradients(self, X=None, y=None):
        """(n, p) per-example log-loss gradients of (X, y); the training set when X is None.

        Parameters
        ----------
        X : array-like (n, d), optional
            Features; None: the training set.
        y : array-like (n,), optional
            Labels of X (required with X).

        Returns
        -------
        ndarray (n, p)
            One row per example: its loss's gradient with respect to the parameters.
        """
        op = self._test_operator(X, y)
        self._check_result_size((op.n_samples, self.n_params), "gradients")
        return op.gradients(self._coef, self._intercept)

    def hvp(self, V):
        """H V for V of shape (p,) or (k, p) (rows are vectors), one pass over X_train.

        Parameters
        ----------
        V : array-like (p,) or (k, p)

        Returns
        -------
        ndarray (p,) or (k, p)
            H v for each row v of V.
        """
        V2, was_1d = check_vectors(V, "V", self.n_params)
        out = self._hess.hvp(V2)
        return out[0] if was_1d else out

    def inverse_hvp(self, V):
        """H^-1 V for V of shape (p,) or (k, p), by the configured solver, in batches.

        Raises SingularHessianError when H is not positive definite and
        ConvergenceError when CG does not reach ``tol`` within ``max_iter``.

        Parameters
        ----------
        V : array-like (p,) or (k, p)

        Returns
        -------
        ndarray (p,) or (k, p)
            H^-1 v for each row v of V (multinomial: the pseudo-inverse H^+ v).
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
            out[begin:end] = solver.solve(np.ascontiguousarray(self._hess.project(B[begin:end])))
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
        """The operator over (X, y) (validated); the training operator when X is None.

        ``y`` None: the labels the model predicts for X (classifiers only).
        """
        if X is None:
            return self._op
        if y is None:
            return self._predicted_operator(X, name)
        return self.model.operator(X, y, name)

    def _predicted_operator(self, X, name):
        """The operator over X labelled with the model's predictions at theta (the argmax class)."""
        if self._op.loss != "logistic":
            raise ValueError(f"y{name[1:]} is required with {name} for a {type(self.model).__name__}: its "
                             "prediction is the mean, where the test loss's gradient is 0, so every first-order "
                             "influence would be 0. Pass the observed values.")
        op = self.model.operator(X, None, name)
        z = op.margins(self._coef, self._intercept)
        if self._multi:
            return self.model.operator(X, self.model.classes_[np.argmax(z, axis=1)], name)
        return as_operator(X, (z > 0.0).astype(np.float64), self._op.fit_intercept, name,
                           n_features=self._op.n_features, loss=self._op.loss)

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
        """(m, p) rows H^-1 g(z_test) for each test point, solved in batches.

        Parameters
        ----------
        X_test : array-like (m, d)
            Test features, as the training data (NumPy, scipy.sparse).
        y_test : array-like (m,) or None
            Test labels (counts for Poisson); None: the labels the model predicts (classifiers only).

        Returns
        -------
        ndarray (m, p)
            Row t is H^-1 g(z_test_t).
        """
        return self._s_test(self._test_operator(X_test, y_test, "X_test"))

    def _s_test(self, test, idx=None):
        """s_test rows of the test operator's rows ``idx`` (all when None)."""
        return self._solve_rows(test.gradients(self._coef, self._intercept, idx))

    def influence(self, X_test, y_test, train_idx=None):
        """(m, n_sel) matrix I[t, j] = -g(z_test_t)^T H^-1 g(z_i), i = train_idx[j] (all when None).

        Refused with a ValueError when the result would exceed ``memory_limit``.

        Parameters
        ----------
        X_test : array-like (m, d)
            Test features, as the training data (NumPy, scipy.sparse).
        y_test : array-like (m,) or None
            Test labels (counts for Poisson); None: the labels the model predicts (classifiers only).
        train_idx : int array-like (n_sel,), optional
            Training rows (positions in X_train, 0-based); None: all n.

        Returns
        -------
        ndarray (m, n_sel)
            I[t, j]: positive when training row train_idx[j] hurt test point t.
        """
        test = self._test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((test.n_samples, idx.shape[0]), "influence")
        return self._op.influence(self._curv, self._s_test(test), idx)

    def influence_to_zarr(self, path, X_test, y_test, dtype=np.float64, overwrite=False):
        """Write the full (m, n) influence matrix I[t, i] to a Zarr array at ``path``, block by block.

        For when (m, n) exceeds ``memory_limit``: only one block (at most
        128 MiB) is in memory at a time, and with dask training data every
        block is computed and written where its rows live (the workers must
        share ``path``'s file system). ``dtype`` float64 or float32 (half the
        disk); ``overwrite`` replaces an existing array. Needs ``zarr``.
        Returns the ``zarr.Array`` opened for reading; read it back lazily with
        ``dask.array.from_zarr(path)``.
        """
        test = self._test_operator(X_test, y_test, "X_test")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
        overwrite = check_bool(overwrite, "overwrite")
        if not overwrite and os.path.exists(os.fspath(path)):
            raise ValueError(f"path {os.fspath(path)!r} already exists: pass overwrite=True to replace it.")
        return self._op.influence_to_zarr(self._curv, self._s_test(test), path, dtype, overwrite)

    def top_k(self, X_test, y_test, k=10):
        """The k most helpful and k most harmful training points for each test point.

        Streams over row blocks of X_train (in parallel) without forming the
        (m, n) influence matrix: memory O(m k) plus a block buffer per thread.
        Ties go to the smaller training index. Returns a :class:`TopK` of
        (m, k) arrays. A helpful point has influence < 0 and a harmful one > 0:
        where fewer than k training points have that sign, the remaining slots
        hold index -1 and value NaN.

        Parameters
        ----------
        X_test : array-like (m, d)
            Test features, as the training data (NumPy, scipy.sparse).
        y_test : array-like (m,) or None
            Test labels (counts for Poisson); None: the labels the model predicts (classifiers only).
        k : int, default 10
            Training points of each sign per test point (1 <= k <= n).

        Returns
        -------
        TopK
            ``helpful_idx``, ``helpful``, ``harmful_idx``, ``harmful``: (m, k) arrays, most influential first.
        """
        test = self._test_operator(X_test, y_test, "X_test")
        k = check_scalar(k, "k", integer=True, min_value=1)
        if k > self.n_samples:
            raise ValueError(f"k must be <= the number of training points ({self.n_samples}); got {k}.")
        m = test.n_samples
        per_item = max(solve_bytes(self.n_params), TOP_K_HEAP_BYTES * k + TOP_K_BLOCK_BYTES)
        batches = self._batches(m, per_item)
        test_index = _frame_index(X_test)
        if len(batches) == 1:  # the usual case (a request's few points): the operator's arrays as they are
            return self._op.top_k(self._curv, self._s_test(test, None), k).with_index(self._train_index, test_index)
        out = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64),
                   np.empty((m, k)))
        for begin, end in batches:
            S = self._s_test(test, None if end - begin == m else np.arange(begin, end))
            for field, part in zip(out, self._op.top_k(self._curv, S, k)):
                field[begin:end] = part
        return out.with_index(self._train_index, test_index)

    def params_change(self, train_idx=None):
        """(n_sel, p) rows H^-1 g(z_i): predicted theta_{-i} - theta on removing z_i.

        Parameters
        ----------
        train_idx : int array-like (n_sel,), optional
            Training rows (positions in X_train, 0-based); None: all n.

        Returns
        -------
        ndarray (n_sel, p)
            Row j: the predicted parameter change on removing training row train_idx[j].
        """
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((idx.shape[0], self.n_params), "params_change")
        if self._multi:
            return self._solve_rows(self._op.example_gradients(self._curv, idx))
        out = np.empty((idx.shape[0], self.n_params))
        solver = self._solver
        for begin, end in self._batches(idx.shape[0], solve_bytes(self.n_params)):
            sel = idx[begin:end]
            out[begin:end] = solver.solve(self._op.rows(sel) * self._op.residuals(self._curv, sel)[:, None])
        return out

    def self_influence(self, train_idx=None):
        """(n_sel,) g(z_i)^T H^-1 g(z_i) >= 0: large for points the model finds hard (mislabelled?).

        Cost: one solve per selected point. With CG (large p, e.g. sparse hashed
        features) that is len(train_idx) CG solves, batched; for all n points
        (train_idx=None) it is n solves, n times the cost of one ``s_test``: pass a subset.

        Parameters
        ----------
        train_idx : int array-like (n_sel,), optional
            Training rows (positions in X_train, 0-based); None: all n.

        Returns
        -------
        ndarray (n_sel,)
        """
        idx = check_indices(train_idx, self.n_samples)
        if self._multi:
            return _multiclass.self_influence(self, idx)
        return self._op.residuals(self._curv, idx) ** 2 * self._quad_forms(idx)

    def leverage(self, train_idx=None):
        """(n_sel,) h_i = w_i x~_i^T H^-1 x~_i, the diagonal of the (penalised) hat matrix.

        Multinomial: h_i = trace(W_i Q_i), the trace of the i-th K x K diagonal
        block of the hat matrix, Q_i = B_i^T H^+ B_i with B_i = I_K (x) x~_i and
        W_i = diag(pi_i) - pi_i pi_i^T (its eigenvalues lie in [0, 1); K = 2 gives
        the binary h_i).

        One solve per selected point, like :meth:`self_influence` (n solves for all points).

        Parameters
        ----------
        train_idx : int array-like (n_sel,), optional
            Training rows (positions in X_train, 0-based); None: all n.

        Returns
        -------
        ndarray (n_sel,)
            In [0, 1).
        """
        idx = check_indices(train_idx, self.n_samples)
        if self._multi:
            return _multiclass.leverage(self, idx)
        return self._op.weights(self._curv, idx) * self._quad_forms(idx)

    def loo_change(self, X_test, y_test, train_idx=None, correction="newton", loss="exact"):
        """(m, n_sel) predicted change in each test loss on removing training point i and refitting.

        The predicted parameter change: ``correction="none"``: H^-1 g(z_i) (first
        order); ``"newton"`` (default): H^-1 g(z_i) / (1 - h_i), one exact Newton
        step from theta on the objective without z_i (Sherman-Morrison).
        ``loss="exact"`` (default) evaluates the test loss at the predicted
        parameters: the test margin moves by dz = x~_test . dtheta_i, computed from
        the parameter change (never by dividing by the test residual), and the loss
        change is taken stably in margin space. ``loss="linear"`` carries the change
        to first order: -I (none) or -I / (1 - h_i) (newton). Measured against
        actual refits in docs/validation.md (user guide, "Accuracy").

        Parameters
        ----------
        X_test : array-like (m, d)
            Test features, as the training data (NumPy, scipy.sparse).
        y_test : array-like (m,) or None
            Test labels (counts for Poisson); None: the labels the model predicts (classifiers only).
        train_idx : int array-like (n_sel,), optional
            Training rows (positions in X_train, 0-based); None: all n.
        correction : {"newton", "none"}
        loss : {"exact", "linear"}

        Returns
        -------
        ndarray (m, n_sel)
            Predicted test loss after the refit minus the test loss now.
        """
        correction = check_choice(correction, "correction", CORRECTIONS)
        loss = check_choice(loss, "loss", LOSSES)
        if self._multi:  # the K x K block forms (fastinfl/_multiclass.py)
            if loss == "exact":
                return _multiclass.exact_change(self, X_test, y_test, train_idx, correction)
            if correction == "newton":  # Woodbury form: rank K - 1 per training point
                return -_multiclass.newton_influence(self, X_test, y_test, train_idx)
        if loss == "linear":
            change = -self.influence(X_test, y_test, train_idx)
            if correction == "newton":
                change /= 1.0 - self.leverage(train_idx)
            return change
        test = self._test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        self._check_result_size((test.n_samples, idx.shape[0]), "loo_change")
        U = self._solve_rows(test.rows(np.arange(test.n_samples)))  # rows H^-1 x~_test
        dz = -self._op.influence(self._curv, U, idx)  # (H^-1 x~_t . x~_i) r_i = x~_t . H^-1 g(z_i)
        if correction == "newton":
            dz /= 1.0 - self.leverage(idx)
        z = test.margins(self._coef, self._intercept)
        return MARGIN_LOSSES[self._op.loss].change(z[:, None], test.y[:, None], dz)

    def group_change(self, X_test, y_test, groups, correction="newton", loss="exact", steps=1):
        """(m, G) predicted change of each test loss when group g of training points is removed and the model refitted.

        ``groups``: a list of index arrays, or an (n,) integer label per training
        point (label g >= 0: in group g; negative: in no group). ``correction``:
        "none" moves the parameters by H^-1 g_S (g_S the sum of the members'
        gradients; with ``loss="linear"`` this is minus the sum of their
        influences); "newton" by ``steps`` exact Newton steps on the objective
        without the group, the first (H - H_S)^-1 g_S by Woodbury on H's factor
        (a ``|S| x |S|`` system) when ``|S| < p``, else by refactoring H - H_S (direct)
        or CG on its HVPs; each further step costs a pass over X for the gradient
        and one for the Hessian. ``loss``: as in :meth:`loo_change`.

        Multinomial: g_S = sum_{i in S} r_i (x) x~_i, H_S the group's K x K blocks
        (Woodbury on a ``|S| K x |S| K`` system when ``|S| < p``); the same meaning.

        After the call ``group_decrements_`` (G, steps) holds each Newton step's
        decrement sqrt(-grad . step) on the objective without the group, and, with
        steps >= 2, ``group_error_`` (G,) the estimated relative error of each
        group's predicted changes, (last decrement / first)^2 (Newton converges
        quadratically: the step not taken is about that fraction of the change);
        measured against refits in bench/RESULTS.md ("group_change warning"). An
        AccuracyWarning names the groups whose estimate exceeds GROUP_CHANGE_ERROR
        (0.1): raise steps for them, or refit. With steps=1 there is no estimate (NaN).

        Parameters
        ----------
        X_test : array-like (m, d)
            Test features, as the training data (NumPy, scipy.sparse).
        y_test : array-like (m,) or None
            Test labels (counts for Poisson); None: the labels the model predicts (classifiers only).
        groups : list of int array-like, or int array-like (n,)
            G groups of training rows.
        correction : {"newton", "none"}
        loss : {"exact", "linear"}
        steps : int >= 1
            Newton steps (with ``correction="newton"``).

        Returns
        -------
        ndarray (m, G)
            Predicted test loss after removing group g and refitting minus the test loss now.
        """
        correction = check_choice(correction, "correction", CORRECTIONS)
        loss = check_choice(loss, "loss", LOSSES)
        steps = check_scalar(steps, "steps", integer=True, min_value=1)
        if correction == "none" and steps > 1:
            raise ValueError("steps > 1 needs correction='newton' (first order takes no Newton step).")
        test = self._test_operator(X_test, y_test, "X_test")
        groups = check_groups(groups, self.n_samples)
        self._check_result_size((test.n_samples, len(groups)), "group_change")
        delta, self.group_decrements_ = group_steps(self, groups, correction, steps)
        self.group_error_ = np.full(len(groups), np.nan)
        if steps > 1:
            first, last = self.group_decrements_[:, 0], self.group_decrements_[:, -1]
            with np.errstate(divide="ignore", invalid="ignore"):
                self.group_error_ = np.where(first > 0.0, (last / first) ** 2, 0.0)
            loose = np.flatnonzero(self.group_error_ > GROUP_CHANGE_ERROR)
            if loose.size:
                worst = int(loose[np.argmax(self.group_error_[loose])])
                warnings.warn(
                    f"group_change: for {loose.size} of {len(groups)} groups the estimated relative error of "
                    f"the predicted changes is above {GROUP_CHANGE_ERROR:g} (group {worst}: "
                    f"{self.group_error_[worst]:.2g}; the estimate is group_error_, the squared ratio of the last "
                    "Newton decrement to the first). Raise steps, or refit (fastinfl.loo_retrain(..., groups=)).",
                    AccuracyWarning, stacklevel=2,
                )
        if self._multi:
            return _multiclass.group_loss_change(self, test, delta, loss)
        dz = test.rows(np.arange(test.n_samples)) @ delta.T  # (m, G) test margin changes
        z = test.margins(self._coef, self._intercept)
        margin_loss = MARGIN_LOSSES[self._op.loss]
        if loss == "linear":
            return margin_loss.derivatives(z, test.y)[0][:, None] * dz
        return margin_loss.change(z[:, None], test.y[:, None], dz)

    def perturbation(self, X_test, y_test, train_idx=None):
        """(m, n_sel, d) Koh & Liang's I_pert,loss: d(test loss)/d x_i after refitting.

        Sum-of-losses convention, like ``influence``: Koh & Liang's mean-loss version is
        n_samples times this.

        Closed form from s_test: -s_t^T grad_x grad_theta loss(z_i) with
        grad_x grad_theta loss(z_i) = w_i x~_i coef^T + r_i [I_d; 0], so
        I_pert[t, j] = -(w_i (s_t . x~_i) coef + r_i s_t[:d]) for i = train_idx[j].

        Parameters
        ----------
        X_test : array-like (m, d)
            Test features, as the training data (NumPy, scipy.sparse).
        y_test : array-like (m,) or None
            Test labels (counts for Poisson); None: the labels the model predicts (classifiers only).
        train_idx : int array-like (n_sel,), optional
            Training rows (positions in X_train, 0-based); None: all n.

        Returns
        -------
        ndarray (m, n_sel, d)
        """
        test = self._test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.n_samples)
        d = self._op.n_features
        self._check_result_size((test.n_samples, idx.shape[0], d), "perturbation")
        S = self._s_test(test)
        if self._multi:
            return _multiclass.perturbation(self, S, idx)
        proj = self._op.rows(idx) @ S.T  # (n_sel, m): s_t . x~_i
        w_sel, r_sel = self._op.weights(self._curv, idx), self._op.residuals(self._curv, idx)
        out = np.empty((S.shape[0], idx.shape[0], d))
        for t in range(S.shape[0]):
            np.multiply.outer(w_sel * proj[:, t], self._coef, out=out[t])
            out[t] += np.multiply.outer(r_sel, S[t, :d])
            np.negative(out[t], out=out[t])
        return out
