"""Solvers of H x = b for the rows of B, on a :class:`~fastinfl.operators.HessianOperator`.

Each solver has one method, ``solve(B)``: B (k, p) float64 rows in, H^-1 B rows
out (a new (k, p) array). They need only the Hessian operator: :class:`Direct`
its Hessian, :class:`CG` its (batched) Hessian-vector products. Batching of many
right-hand sides and its memory sizing live in :func:`batches`.
"""

import threading

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from ._config import CG_VECTORS, MAX_BATCH, MAX_CONDITION, NEWTON_CG_MAX_ITER, VERIFY_SAMPLE
from .exceptions import ConvergenceError, SingularHessianError, VerificationError
from .operators import MAX_ITER, NOT_POSITIVE, policy


# The names of Influence(solver=...).
SOLVERS = ("auto", "direct", "cg", "lissa", "arnoldi")


def cholesky(H, what="Hessian", hint="add damping > 0 or use l2 > 0"):
    """Cholesky factor of H for ``scipy.linalg.cho_solve``; SingularHessianError unless H is PD."""
    try:
        return scipy.linalg.cho_factor(H, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(H)[0])
        raise SingularHessianError(
            f"the {what} is not positive definite (smallest eigenvalue {smallest:.3g}, "
            f"largest {float(np.abs(H).max()):.3g} in magnitude): {hint}."
        ) from None


def batches(total, bytes_per_item, memory_limit, batch_size=None):
    """(begin, end) ranges of at most ``batch_size`` items whose working memory fits ``memory_limit``.

    ``bytes_per_item``: the working memory of one item (right-hand side or test
    point) in the solver and the pass that follows; None ``batch_size`` means as
    many as fit, up to MAX_BATCH.
    """
    size = batch_size or max(1, min(MAX_BATCH, memory_limit // max(1, bytes_per_item)))
    return [(begin, min(total, begin + size)) for begin in range(0, total, size)]


def solve_bytes(p):
    """Working bytes of one right-hand side in any solver here (CG keeps CG_VECTORS vectors of p)."""
    return CG_VECTORS * 8 * p


def _norm1(H, rows=512):
    """The 1-norm of the symmetric H (its largest absolute row sum), a block of rows at a time: no
    temporary as large as H beside H and its factor (_memory.DIRECT_PEAK_COPIES)."""
    return max(float(np.abs(H[i:i + rows]).sum(axis=1).max()) for i in range(0, H.shape[0], rows))


class Direct:
    """Cholesky of H (formed once), then triangular solves for every batch of right-hand sides.

    The factor is computed on the first solve (thread-safe) and kept. LAPACK's
    dpocon estimates cond(H); beyond MAX_CONDITION the solve's relative error
    (about cond(H) x 1e-16) could pass 1e-3, so SingularHessianError is raised
    instead of returning digits the solve cannot have.
    """

    name = "direct"

    def __init__(self, hess):
        self.hess = hess
        self._chol = None
        self._lock = threading.Lock()

    def factor(self):
        """The Cholesky factor (lower, for ``scipy.linalg.cho_solve``), computed once."""
        with self._lock:
            if self._chol is None:
                H = self.hess.hessian()
                with policy.blas_threads(H.shape[0] ** 3 / 3):
                    chol = cholesky(H, hint="add damping > 0 or fit with l2 > 0")
                    rcond, _ = scipy.linalg.lapack.dpocon(chol[0], _norm1(H), uplo="L")
                if rcond * MAX_CONDITION < 1.0:
                    raise SingularHessianError(
                        f"the Hessian is numerically singular: condition number about "
                        f"{1 / max(rcond, 1e-300):.2g} (> {MAX_CONDITION:.0e}), so solves could lose every "
                        "digit beyond the first few. Add damping > 0 (for example 1e-6 x the largest "
                        "diagonal entry) or fit with l2 > 0."
                    )
                self._chol = chol
        return self._chol

    @property
    def factor_(self):
        """The Cholesky factor (L, lower) once computed, else None."""
        return self._chol

    def set_factor(self, L):
        """Use the lower-triangular factor L of H (verified by the caller: ``fastinfl._state``)."""
        with self._lock:
            self._chol = (L, True)

    def solve(self, B):
        # LAPACK dpotrs straight away: the same solve as scipy.linalg.cho_solve (bitwise) without its
        # argument handling, which cost ~40 us per call (bench/call_overhead.py).
        L, lower = self.factor()
        with policy.blas_threads(2 * B.shape[0] * B.shape[1] ** 2):
            x, info = scipy.linalg.lapack.dpotrs(L, B.T, lower=int(lower))
        if info != 0:
            raise ValueError(f"LAPACK dpotrs rejected argument {-info}")
        return x.T if x.T.flags.c_contiguous else np.ascontiguousarray(x.T)


class CG:
    """Batched conjugate gradient: every right-hand side advanced together, each with its own steps.

    Stops a right-hand side once its recursively updated residual r_q (not a
    recomputed H x_q - b_q) satisfies ||r_q|| <= ``tol`` ||b_q||. Raises
    ConvergenceError naming the residual when ``max_iter`` is reached and
    SingularHessianError on non-positive curvature. ``n_iter_`` and
    ``residual_`` hold the iterations and final relative residuals of the last batch.
    """

    name = "cg"

    def __init__(self, hess, tol, max_iter):
        self.hess = hess
        self.tol = tol
        self.max_iter = max_iter
        self.n_iter_ = self.residual_ = None

    def solve(self, B):
        x, n_iter, resid, status = self.hess.cg(B, self.tol, self.max_iter)
        if (status == NOT_POSITIVE).any():
            q = int(np.flatnonzero(status == NOT_POSITIVE)[0])
            raise SingularHessianError(
                f"conjugate gradient met non-positive curvature p^T H p <= 0 (right-hand side {q}): "
                "the Hessian is not positive definite; add damping > 0 or fit with l2 > 0."
            )
        if (status == MAX_ITER).any():
            q = int(np.argmax(np.where(status == MAX_ITER, resid, -np.inf)))
            raise ConvergenceError(
                f"conjugate gradient did not converge in max_iter={self.max_iter} iterations: "
                f"relative residual {resid[q]:.3g} > tol={self.tol:g} (right-hand side {q}). "
                "Raise max_iter, loosen tol, add damping, or use solver='direct'."
            )
        self.n_iter_, self.residual_ = n_iter, resid
        return x


class Verified:
    """Wraps a solver: re-solves up to VERIFY_SAMPLE right-hand sides of every batch with numpy's inverse.

    Raises VerificationError when they differ by more than ``rtol`` (max-norm,
    relative to the largest entry of the reference).
    """

    def __init__(self, inner, rtol):
        self.inner = inner
        self.name = inner.name
        self.hess = inner.hess
        self.rtol = rtol
        self._inv = None
        self._lock = threading.Lock()

    def __getattr__(self, attr):  # n_iter_, residual_ of the inner solver
        return getattr(self.__dict__["inner"], attr)

    def solve(self, B):
        X = self.inner.solve(B)
        sample = np.linspace(0, B.shape[0] - 1, min(VERIFY_SAMPLE, B.shape[0])).astype(np.int64)
        with self._lock:
            if self._inv is None:
                self._inv = np.linalg.inv(self.hess.hessian())
        ref = B[sample] @ self._inv.T
        err = np.max(np.abs(X[sample] - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny)
        if not err <= self.rtol:
            raise VerificationError(
                f"inverse-HVP differs from numpy's direct inverse by {err:.3g} (relative, "
                f"max-norm) > verify_rtol={self.rtol:g}; H may be ill-conditioned: "
                "add damping, tighten tol or use solver='direct'."
            )
        return X


# ------------------------------------------------------------ Newton line search (both models' fit)
ARMIJO = 1e-4  # sufficient-decrease constant
MAX_HALVINGS = 60


def line_search(evaluate, theta, step, F, grad, n):
    """Backtracking (Armijo) on ``evaluate(theta + t step)`` from t = 1; returns (t, its evaluation) or None.

    ``evaluate`` returns (F, grad F, ...); ``n`` terms are summed in F. A step is
    accepted on sufficient decrease within rounding of F (8 eps |F|). Near the
    optimum the predicted decrease (-grad . step) falls below what a sum of n
    losses resolves (its rounding grows like sqrt(n) eps |F|): F alone cannot
    judge the step there, so one that lowers max|grad F| is taken (Newton's local
    phase; without this, full steps were halved: 8 iterations instead of 5 on
    make_logistic(20000, 50)). None: no acceptable step in MAX_HALVINGS halvings.
    """
    slope = float(grad @ step)
    eps = np.finfo(float).eps
    unresolved = -slope <= np.sqrt(n) * eps * abs(F)
    gmax = float(np.max(np.abs(grad)))
    t = 1.0
    for _ in range(MAX_HALVINGS):
        result = evaluate(theta + t * step)
        if result[0] <= F + ARMIJO * t * slope + 8 * eps * abs(F):
            return t, result
        if unresolved and float(np.max(np.abs(result[1]))) < gmax:
            return t, result
        t *= 0.5
    return None


# ------------------------------------------------------------ Newton-CG (LogisticRegression.fit, large p)
def newton_cg_step(op, curv, ridge, grad, gnorm0):
    """Truncated-Newton direction: approximately -H^-1 grad by CG on HVPs (one pass over X per iteration).

    Used by ``LogisticRegression.fit`` above NEWTON_DIRECT_MAX_P parameters,
    where forming H (p^2) is out of reach. The inner CG starts from zero and
    stops at the relative residual eta = min(0.5, sqrt(||grad|| / ||grad_0||))
    (the forcing term of Eisenstat & Walker's choice 2 family: superlinear
    convergence as the gradient shrinks) or after NEWTON_CG_MAX_ITER
    iterations. Every CG iterate from zero is a descent direction for a
    positive definite H, so a truncated solve is still a valid step; if CG
    meets non-positive curvature at once, the steepest-descent direction is returned.
    """
    gnorm = float(np.linalg.norm(grad))
    eta = min(0.5, np.sqrt(gnorm / gnorm0)) if gnorm0 > 0 else 0.5
    res = op.cg(curv, ridge, np.ascontiguousarray(-grad[None, :]), eta, NEWTON_CG_MAX_ITER)
    step = res.x[0]
    if not np.any(step) or not float(grad @ step) < 0.0:
        return -grad
    return step
