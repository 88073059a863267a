"""Robustness of conclusions: the fewest training points whose removal (or relabelling) flips one.

A *conclusion* of a fitted binary :class:`fastinfl.LogisticRegression` is one of

- ``("coef", j)``: the sign of ``coef_[j]``;
- ``("significance", j, level)``: whether ``coef_[j]`` is significant at ``level`` (two-sided Wald
  test, z = coef_[j] / SE_j against the normal quantile z_{1 - level/2}); SE_j = sqrt((H^-1)_jj)
  with H the Hessian of the *penalised* training objective F at the fit (the Laplace / Bayesian
  covariance; with ``l2=0`` it is the classical maximum-likelihood SE, as statsmodels' ``Logit``);
- ``("prediction", x)``: the predicted label of one point ``x`` (d,) (P(y=1|x) > 0.5).

:func:`drop_to_flip` finds a small set of training rows whose removal reverses it (a significant
coefficient becomes insignificant; an insignificant one becomes significant with its current sign),
:func:`relabel_to_flip` a small set of training labels whose flip changes a prediction. Every answer
is checked by an actual refit without (or with relabelled) those rows. The searches are heuristics:
a set found is an upper bound on the smallest one, not a proof of minimality (docs/conclusions.md).

Sign convention (README, "Conventions"): removing z_i moves theta by about +H^-1 g(z_i), g the per-example
log-loss gradient r_i x~_i, r_i = sigma(z_i) - y_i, x~_i = [x_i, 1].
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.special

from ._validation import check_scalar, check_vector, is_sparse
from .exceptions import ConvergenceError, SingularHessianError
from .influence import Influence
from .classifier import LogisticRegression

__all__ = ["FlipResult", "drop_to_flip", "relabel_to_flip", "target_changes", "METHODS"]

METHODS = ("greedy", "newton", "additive")
TARGET_KINDS = ("coef", "significance", "prediction")
MAX_PARAMS = 4096  # the searches form and factor the (p, p) Hessian
CHORD_PASSES = 4  # gradient passes with a downdated (stale) Hessian before it is recomputed
ROW_BLOCK = 1 << 16  # rows cast to float64 at a time for float32 / memory-mapped X


class FlipResult(NamedTuple):
    """The answer of :func:`drop_to_flip` or :func:`relabel_to_flip`.

    Values: the coefficient for "coef", the z-statistic coef_j / SE_j for "significance",
    P(y = 1 | x) for "prediction".

    Attributes
    ----------
    indices : ndarray (k,), int64
        Training rows, in the order chosen. When the method predicts no flip
        within the limit (``found`` False), the largest set it tried (the limit's count, or fewer
        when fewer points push toward a flip at first order), still refitted.
    predicted : float
        The target's value predicted by the method after removing (relabelling) them.
    refit : float
        The target's value after an actual refit without (with relabelled) them; NaN
        with ``refit=False``.
    flipped : bool
        Whether the conclusion differs from the full fit's, judged on ``refit``
        (on ``predicted`` with ``refit=False``: then ``verified`` is False).
    found : bool
        Whether the method's own prediction flips (within the limit). found False with
        flipped True: the method missed the flip that its largest set does cause (masking).
    fraction : float
        len(indices) / n_samples.
    method : str
        As passed ("relabel" for relabel_to_flip).
    target : tuple
        As passed.
    original : float
        The target's value at the full-data fit.
    path : ndarray (k + 1,)
        The method's predicted value after the first 0, 1, ..., k points.
    verified : bool
        True when ``refit`` was computed.
    """

    indices: np.ndarray
    predicted: float
    refit: float
    flipped: bool
    found: bool
    fraction: float
    method: str
    target: tuple
    original: float
    path: np.ndarray
    verified: bool

    def __repr__(self):
        k = len(self.indices)
        shown = ", ".join(str(int(i)) for i in self.indices[:10]) + (", ..." if k > 10 else "")
        what = ("flipped" if self.flipped else "not flipped") + ("" if self.found else " (no flip predicted)")
        return (f"FlipResult({what} by {k} point{'s' if k != 1 else ''} ({100 * self.fraction:.3g}%) "
                f"[{shown}], target={_target_text(self.target)}, method={self.method!r}: "
                f"{self.original:.6g} -> predicted {self.predicted:.6g}, refit "
                + (f"{self.refit:.6g})" if self.verified else "not run)"))


def _target_text(target):
    if target[0] == "prediction":
        return "('prediction', x)"
    return repr(tuple(target))


# ----------------------------------------------------------------------------- training rows
class _Rows:
    """The training matrix with an implicit column of ones: margins, X~^T r and X~^T W X~ in float64."""

    def __init__(self, X, fit_intercept):
        self.X, self.fit_intercept = X, fit_intercept
        self.n, self.d = X.shape
        self.p = self.d + int(fit_intercept)
        self.sparse = is_sparse(X)
        self.direct = self.sparse or (X.dtype == np.float64 and X.flags.c_contiguous)

    def _blocks(self):
        for lo in range(0, self.n, ROW_BLOCK):
            hi = min(self.n, lo + ROW_BLOCK)
            yield lo, hi, np.asarray(self.X[lo:hi], dtype=np.float64)

    def margins(self, T):
        """(n, k) X~ T for parameter columns T (p, k)."""
        W = T[: self.d]
        if self.direct:
            Z = np.asarray(self.X @ W)
        else:
            Z = np.empty((self.n, T.shape[1]))
            for lo, hi, B in self._blocks():
                Z[lo:hi] = B @ W
        if self.fit_intercept:
            Z += T[self.d]
        return Z

    def rmatvec(self, r):
        """(p,) X~^T r."""
        if self.direct:
            out = np.asarray(self.X.T @ r).ravel()
        else:
            out = np.zeros(self.d)
            for lo, hi, B in self._blocks():
                out += r[lo:hi] @ B
        return np.append(out, r.sum()) if self.fit_intercept else out

    def gram(self, w):
        """(p, p) X~^T diag(w) X~."""
        H = np.zeros((self.p, self.p))
        d = self.d
        if self.sparse:
            H[:d, :d] = (self.X.T @ self.X.multiply(w[:, None]).tocsr()).toarray()
            col = np.asarray(self.X.T @ w).ravel()
        else:
            col = np.zeros(d)
            for lo, hi, B in self._blocks():  # blocks bound the (rows, d) temporary B * w
                wb = w[lo:hi]
                H[:d, :d] += B.T @ (B * wb[:, None])
                col += wb @ B
        if self.fit_intercept:
            H[:d, d] = H[d, :d] = col
            H[d, d] = w.sum()
        return H

    def row(self, i):
        """(p,) x~_i in float64."""
        x = self.X[i].toarray().ravel() if self.sparse else np.asarray(self.X[i], dtype=np.float64)
        return np.append(x, 1.0) if self.fit_intercept else x.astype(np.float64, copy=True)


# ----------------------------------------------------------------------------- warm-started fits
class _Path:
    """The fit of the binary objective followed as training rows are dropped or relabelled.

    Holds theta (p,), the objective's gradient and the margins z (n,) at theta, and a Hessian H
    (p, p) with its Cholesky factor. Dropping row i downdates H by w_i x~_i x~_i^T (rank one, no
    pass over X) and the gradient by g_i; relabelling leaves H unchanged and moves the gradient by
    (y_old - y_new) x~_i. Then :meth:`converge` takes Newton steps with that H, each one pass over X
    (margins, loss, gradient; Armijo backtracking on the objective), until the gradient test of
    :class:`~fastinfl.LogisticRegression` holds: usually two (a step, then a second one that the
    first step's gradient asks for). H is recomputed at the current theta (one Hessian pass,
    n p^2) when a change needed more than two passes with an H older than the previous change (a
    fresher one would have saved passes), or after every change with ``exact_hessian`` (the
    significance target, whose standard error needs it).

    ``c`` (p,), optional: a direction whose solve u = H^-1 c and margins x~_i . u (n,) the ranking
    needs; they ride along in the same pass as the margins of theta (:meth:`direction_margins`).
    """

    def __init__(self, rows, y, l2, theta, tol, max_iter, exact_hessian, c=None):
        self.rows, self.l2, self.tol, self.max_iter = rows, l2, tol, max_iter
        self.y = np.asarray(y, dtype=np.float64).copy()
        self.mask = np.ones(rows.n)  # 1 for the rows kept, 0 for those dropped
        self.n_kept = rows.n
        self.exact_hessian, self.c = exact_hessian, c
        self.version, self._cached = 0, None  # version of H's factor; (version, u, margins of u)
        self.theta = theta.astype(np.float64, copy=True)
        self.z = self.rows.margins(self.theta[:, None])[:, 0]
        self.s = scipy.special.expit(self.z)
        self._new_hessian()
        self.F, self.grad, self.z, self.s, self._cached = self._evaluate(self.theta)
        if self.converge():
            self._new_hessian()  # the model was not at the optimum: H at the full-data optimum

    def _penalty(self, theta):
        w = theta[: self.rows.d]
        grad = np.append(self.l2 * w, 0.0) if self.rows.fit_intercept else self.l2 * w
        return 0.5 * self.l2 * float(w @ w), grad

    def _evaluate(self, theta):
        """F(theta), its gradient (p,), the margins z and sigma(z) (n,) over the kept rows and the
        direction's (version, u, margins) (None without ``c``): one pass over X."""
        if self.c is None:
            z, cached = self.rows.margins(theta[:, None])[:, 0], None
        else:
            u = self.solve(self.c)
            Z = self.rows.margins(np.column_stack([theta, u]))
            z, cached = Z[:, 0], (self.version, u, Z[:, 1])
        s = scipy.special.expit(z)
        loss = float(self.mask @ (np.logaddexp(0.0, z) - self.y * z))
        pen, dpen = self._penalty(theta)
        return loss + pen, self.rows.rmatvec((s - self.y) * self.mask) + dpen, z, s, cached

    def direction_margins(self):
        """(u, a): u = H^-1 c (p,) and a_i = x~_i . u (n,) for the current H (reused from the last pass)."""
        if self._cached is None or self._cached[0] != self.version:
            u = self.solve(self.c)
            self._cached = (self.version, u, self.rows.margins(u[:, None])[:, 0])
        return self._cached[1], self._cached[2]

    def residuals(self):
        """(n,) r_i = sigma(z_i) - y_i at theta (all rows, kept or not)."""
        return self.s - self.y

    def weights(self):
        """(n,) sigma'(z_i) at theta."""
        return self.s * (1.0 - self.s)

    def _new_hessian(self):
        self.w_H = self.weights()  # curvature at which H was formed (downdates use the same)
        self.age = 0  # changes (drops, relabels) since
        ridge = np.full(self.rows.p, self.l2)
        if self.rows.fit_intercept:
            ridge[-1] = 0.0
        self.H = self.rows.gram(self.w_H * self.mask) + np.diag(ridge)
        self._factor()

    def _factor(self):
        try:
            self.cho = scipy.linalg.cho_factor(self.H, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise SingularHessianError(
                "the Hessian of the training objective without the dropped rows is not positive definite "
                "(with l2 = 0 too few rows remain, or they are collinear): use l2 > 0 or a smaller "
                "max_fraction.") from None
        self.version += 1

    def solve(self, B):
        """H^-1 B for B (p,) or (p, k)."""
        return scipy.linalg.cho_solve(self.cho, B, check_finite=False)

    def drop(self, i):
        x = self.rows.row(i)
        r = self.s[i] - self.y[i]
        self.grad = self.grad - r * x
        self.F -= float(np.logaddexp(0.0, self.z[i]) - self.y[i] * self.z[i])
        self.mask[i] = 0.0
        self.n_kept -= 1
        if not self.exact_hessian:
            self.H -= self.w_H[i] * np.outer(x, x)
            self._factor()
        self.converge()

    def relabel(self, i):
        x = self.rows.row(i)
        old, new = self.y[i], 1.0 - self.y[i]
        self.grad = self.grad + (old - new) * x
        self.F += float((old - new) * self.z[i])
        self.y[i] = new
        self.converge()

    def converge(self):
        """Newton steps with the current H until max|grad F| <= tol * n_kept (the model's test).

        Returns the number of steps taken."""
        gtol = self.tol * max(self.n_kept, 1)
        passes = steps = 0
        for _ in range(self.max_iter):
            if np.max(np.abs(self.grad)) <= gtol:
                break
            if passes >= CHORD_PASSES:
                self._new_hessian()  # the downdated H has drifted too far from the current theta
                passes = 0
            step = -self.solve(self.grad)
            slope = float(self.grad @ step)
            t = 1.0
            for _ in range(60):
                F, grad, z, s, cached = self._evaluate(self.theta + t * step)
                passes += 1
                if F <= self.F + 1e-4 * t * slope + 8 * np.finfo(float).eps * abs(self.F):
                    break
                t *= 0.5
            else:
                raise ConvergenceError("the warm-started Newton update found no decrease of the objective; "
                                       "the problem may be (nearly) separable: use a larger l2.")
            self.theta = self.theta + t * step
            self.F, self.grad, self.z, self.s, self._cached = F, grad, z, s, cached
            steps += 1
        else:
            raise ConvergenceError(
                f"the warm-started Newton update did not converge in {self.max_iter} steps "
                f"(max|grad F| = {np.max(np.abs(self.grad)):.3g} > {gtol:.3g}); with l2 = 0 the data left "
                "may be separable: use l2 > 0.")
        self.age += 1
        if self.exact_hessian or (passes > 2 and self.age > 1):  # a fresher H would have saved passes
            self._new_hessian()
        return steps


# ----------------------------------------------------------------------------- targets
class _Target:
    """One conclusion: its value f(L(theta, H)), whether it is flipped, and first-order changes of L.

    L is the coefficient (coef), the margin x~ . theta (prediction) or the z-statistic
    (significance); value = L except for prediction (sigma(L)). ``toward`` = +1 when the flip needs
    L to fall, -1 when it needs L to rise; a point's *push* is toward * dL (< 0: toward the flip).
    """

    def __init__(self, target, d, fit_intercept):
        if not isinstance(target, (tuple, list)) or not target or target[0] not in TARGET_KINDS:
            raise ValueError("target must be ('coef', j), ('significance', j, level) or ('prediction', x); "
                             f"got {target!r}.")
        self.kind = target[0]
        need = {"coef": 2, "significance": 3, "prediction": 2}[self.kind]
        if len(target) != need:
            raise ValueError(f"target ({self.kind!r}, ...) needs {need} entries; got {len(target)}: "
                             f"{target!r}.")
        self.p = d + int(fit_intercept)
        if self.kind == "prediction":
            x = np.asarray(target[1])
            if x.ndim == 2 and x.shape[0] == 1:
                x = x[0]
            x = check_vector(x, "target x", d)
            self.c = np.append(x, 1.0) if fit_intercept else x
            self.target = ("prediction", x)
        else:
            j = target[1]
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < d:
                raise ValueError(f"target coefficient index j must be an integer in [0, {d}); got {j!r}.")
            self.j = int(j)
            self.c = np.zeros(self.p)
            self.c[self.j] = 1.0
            self.target = (self.kind, self.j)
            if self.kind == "significance":
                level = target[2]
                if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
                        or not 0.0 < level < 1.0:
                    raise ValueError(f"target significance level must be a number in (0, 1); got {level!r}.")
                import scipy.stats  # only here: it takes a while to import

                self.level = float(level)
                self.crit = float(scipy.stats.norm.ppf(1.0 - self.level / 2.0))
                self.target = (self.kind, self.j, self.level)

    def L(self, theta, solve):
        """The linear-scale quantity at theta; ``solve`` applies the inverse Hessian (significance)."""
        if self.kind == "significance":
            return float(theta[self.j] / np.sqrt(solve(self.c)[self.j]))
        return float(self.c @ theta)

    def value(self, L):
        return float(scipy.special.expit(L)) if self.kind == "prediction" else float(L)

    def status(self, L):
        if self.kind == "significance":
            return bool(abs(L) > self.crit)
        return bool(L > 0.0)

    def start(self, L0):
        """Record the full fit's conclusion and the direction that flips it."""
        if self.kind == "coef" and L0 == 0.0:
            raise ValueError(f"coef_[{self.j}] is exactly 0 at the fit: it has no sign to flip.")
        self.status0 = self.status(L0)
        sign = 1.0 if L0 >= 0.0 else -1.0
        self.toward = -sign if self.kind == "significance" and not self.status0 else sign

    def flipped(self, L):
        return self.status(L) != self.status0

    def drop_changes(self, path):
        """(n,) first-order change of L on removing each row from the path's fit (H from the path)."""
        rows, r = path.rows, path.residuals()
        u, a = path.direction_margins()  # u = H^-1 c, a_i = x~_i . u
        if self.kind != "significance":
            return r * a  # c . H^-1 g_i
        V = u[self.j]
        z = path.theta[self.j] / np.sqrt(V)
        s = path.s
        w = s * (1.0 - s)
        b = rows.rmatvec(path.mask * w * (1.0 - 2.0 * s) * a * a)  # sum_k w'_k (x~_k.v)^2 x~_k
        hb = rows.margins(path.solve(b)[:, None])[:, 0]  # x~_i . H^-1 b
        dV = w * a * a - r * hb  # own curvature removed; curvature moved by the parameter change
        return r * a / np.sqrt(V) - z / (2.0 * V) * dV


# ----------------------------------------------------------------------------- entry points
def _check_inf(inf):
    if not isinstance(inf, Influence):
        raise ValueError(f"inf must be a fastinfl.Influence; got {type(inf).__name__}.")
    if not isinstance(inf.model, LogisticRegression) or inf.model.multinomial:
        raise ValueError("inf must be built on a binary fastinfl.LogisticRegression; "
                         f"got {type(inf.model).__name__} (multinomial and Poisson models are not "
                         "supported).")
    X = inf.X_train
    if not (isinstance(X, np.ndarray) or scipy.sparse.issparse(X)):
        raise ValueError("inf's training data must be in memory (NumPy or scipy.sparse); "
                         f"got {type(X).__name__}.")
    p = inf.n_params
    if p > MAX_PARAMS:
        raise ValueError(f"inf has {p} parameters: the searches form and factor the (p, p) Hessian, "
                         f"limited to p <= {MAX_PARAMS}.")
    return _Rows(X, inf.model.fit_intercept), np.asarray(inf.y_train, dtype=np.float64)


def _refit(inf, rows, y, target, drop=None, relabel=None):
    """The target's L after an actual refit (fastinfl's Newton fit, warm-started at the full fit's
    parameters, from zero if that fails) without the rows ``drop`` or with ``relabel`` flipped."""
    model = inf.model
    keep = np.ones(rows.n, dtype=bool)
    y = y.copy()
    if drop is not None:
        keep[drop] = False
    if relabel is not None:
        y[relabel] = 1.0 - y[relabel]
    X = inf.X_train[keep] if drop is not None else inf.X_train
    y = y[keep]
    fit = LogisticRegression(l2=model.l2_, fit_intercept=model.fit_intercept, tol=model.tol,
                             max_iter=max(model.max_iter, 100))
    what = f"without training rows {list(map(int, drop))}" if drop is not None else \
        f"with the labels of training rows {list(map(int, relabel))} flipped"
    try:
        try:
            fit.fit(X, y, init_params=model.params_)
        except ConvergenceError:
            fit.fit(X, y)
    except (ConvergenceError, SingularHessianError, ValueError) as exc:
        raise type(exc)(f"refitting {what}: {exc}") from exc
    theta = fit.params_
    if target.kind != "significance":
        return target.L(theta, None)
    ridge = np.full(rows.p, model.l2_)
    if model.fit_intercept:
        ridge[-1] = 0.0
    z = _Rows(X, model.fit_intercept).margins(theta[:, None])[:, 0]
    s = scipy.special.expit(z)
    H = _Rows(X, model.fit_intercept).gram(s * (1.0 - s)) + np.diag(ridge)
    return target.L(theta, lambda c: np.linalg.solve(H, c))


def _max_count(max_fraction, n):
    max_fraction = check_scalar(max_fraction, "max_fraction", strict=True)
    if max_fraction > 0.5:
        raise ValueError(f"max_fraction must be in (0, 0.5]; got {max_fraction}.")
    count = int(np.floor(max_fraction * n + 1e-9))
    if count < 1:
        raise ValueError(f"max_fraction={max_fraction} allows no point of the {n} training rows "
                         f"(max_fraction * n < 1): use max_fraction >= {1.0 / n:.3g}.")
    return count


def target_changes(inf, target):
    """(n,) first-order change of a target on removing each training row alone (Broderick et al.'s
    influence scores; what "additive" and "newton" rank by).

    ``target`` as in :func:`drop_to_flip`. Changes are in the target's linear value: the
    coefficient for "coef", the z-statistic for "significance" (through the coefficient and its
    standard error: row i's own curvature leaves H and every row's curvature moves with the
    parameters), the margin x~ . theta (logit of P(y=1|x)) for "prediction". Sign: value without
    row i minus value with it, at the full-data optimum (the model is converged first if it is not);
    H is the undamped Hessian of the objective (``inf.damping`` is not used). Cost: one Hessian and
    two or three passes over X.
    """
    rows, y = _check_inf(inf)
    tgt = _Target(target, rows.d, inf.model.fit_intercept)
    model = inf.model
    path = _Path(rows, y, model.l2_, model.params_, model.tol, max(model.max_iter, 100),
                 exact_hessian=False, c=tgt.c)
    return tgt.drop_changes(path)


def drop_to_flip(inf, target, max_fraction=0.01, method="greedy", refit=True):
    """A small set of training rows whose removal flips a conclusion of the fitted model.

    Parameters
    ----------
    inf : fastinfl.Influence
        On a binary :class:`fastinfl.LogisticRegression` and in-memory (NumPy or scipy.sparse)
        training data; p <= 4096. The search starts from the full-data optimum (the model is
        first converged if it is not).
    target : tuple
        ``("coef", j)``: the sign of coef_[j]; ``("significance", j, level)``: whether coef_[j] is
        significant at ``level`` (two-sided Wald z-test, SE from the penalised Hessian, module
        docstring); a significant coefficient flips when it stops being significant, an
        insignificant one when it becomes significant with its current sign;
        ``("prediction", x)``: the predicted label of x (d,).
    max_fraction : float in (0, 0.5]
        The most rows to drop, as a fraction of n (floor(max_fraction n) >= 1 needed).
    method : {"greedy", "newton", "additive"}
        "additive" (Broderick et al.'s AMIP): rank rows by their first-order change of the target
        at the full fit and take the fewest whose summed changes flip it. "newton": the same
        ranking; grow the set in that order until one exact Newton step on the objective without
        the set, (H - H_S)^-1 g_S, flips it (significance: SE from H - H_S). "greedy": drop the row
        with the largest first-order push toward a flip, update the fit by warm-started Newton
        steps on the remaining rows (rank-one downdate of H; each step about one pass over X),
        re-rank at the new fit, repeat (Huang et al. 2024).
    refit : bool
        Refit without the rows found (fastinfl's Newton fit to the model's tol) and judge
        ``flipped`` on it (default). False skips it (``refit`` NaN, ``verified`` False).

    Returns
    -------
    FlipResult
        See :class:`FlipResult`. "No set within max_fraction" is an answer, not an error:
        ``found`` False, ``indices`` the largest set tried, ``flipped`` its refit's verdict
        (usually False).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if not isinstance(refit, (bool, np.bool_)):
        raise ValueError(f"refit must be True or False; got {refit!r}.")
    rows, y = _check_inf(inf)
    tgt = _Target(target, rows.d, inf.model.fit_intercept)
    max_count = _max_count(max_fraction, rows.n)
    model = inf.model
    path = _Path(rows, y, model.l2_, model.params_, model.tol, max(model.max_iter, 100),
                 exact_hessian=tgt.kind == "significance" and method == "greedy", c=tgt.c)
    L0 = tgt.L(path.theta, path.solve)
    tgt.start(L0)
    if method == "greedy":
        chosen, Ls = _greedy(path, tgt, max_count, lambda i: path.drop(i), tgt.drop_changes)
    else:
        chosen, Ls = _ranked(path, tgt, max_count, method)
    return _result(inf, rows, y, tgt, chosen, Ls, method, refit, drop=True)


def _greedy(path, tgt, max_count, apply, changes):
    """Apply the row of largest push, re-converge, re-rank; until flipped or max_count rows."""
    chosen, Ls = [], [tgt.L(path.theta, path.solve)]
    for _ in range(max_count):
        push = tgt.toward * changes(path)
        push[chosen] = np.inf  # dropped (or relabelled) already
        i = int(np.argmin(push))
        if not push[i] < 0.0:
            break  # no row moves the target toward a flip at first order
        try:
            apply(i)
        except (ConvergenceError, SingularHessianError) as exc:  # l2 = 0: no optimum without these rows
            raise type(exc)(f"after changing training rows {[*map(int, chosen), i]} in this order: {exc}") \
                from exc
        chosen.append(i)
        Ls.append(tgt.L(path.theta, path.solve))
        if tgt.flipped(Ls[-1]):
            break
    return chosen, Ls


def _ranked(path, tgt, max_count, method):
    """Additive or Newton-checked prefixes of the first-order ranking at the full fit."""
    dL = tgt.drop_changes(path)
    push = tgt.toward * dL
    order = np.argsort(push, kind="stable")
    order = order[push[order] < 0.0][:max_count]
    L0 = tgt.L(path.theta, path.solve)
    if method == "additive":
        Ls = L0 + np.concatenate([[0.0], np.cumsum(dL[order])])
        hit = next((k for k in range(1, len(Ls)) if tgt.flipped(Ls[k])), len(Ls) - 1)
        return list(order[:hit]), list(Ls[: hit + 1])
    r = path.residuals()
    H, gS = path.H.copy(), np.zeros(path.rows.p)
    Ls = [L0]
    for k, i in enumerate(order):
        x = path.rows.row(i)
        H -= path.w_H[i] * np.outer(x, x)
        gS += r[i] * x
        try:
            cho = scipy.linalg.cho_factor(H, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return list(order[:k]), Ls  # H - H_S singular (l2 = 0): no Newton step past here
        delta = scipy.linalg.cho_solve(cho, gS, check_finite=False)
        Ls.append(tgt.L(path.theta + delta,
                        lambda c, cho=cho: scipy.linalg.cho_solve(cho, c, check_finite=False)))
        if tgt.flipped(Ls[-1]):
            break
    return list(order[: len(Ls) - 1]), Ls


def _result(inf, rows, y, tgt, chosen, Ls, method, do_refit, drop):
    idx = np.asarray(chosen, dtype=np.int64)
    L_pred = Ls[-1]
    if do_refit and len(idx):
        kw = {"drop": idx} if drop else {"relabel": idx}
        L_refit = _refit(inf, rows, y, tgt, **kw)
        flipped = tgt.flipped(L_refit)
        refit_value = tgt.value(L_refit)
    elif do_refit:  # nothing removed: the refit is the full fit
        refit_value, flipped = tgt.value(Ls[0]), False
    else:
        refit_value, flipped = float("nan"), tgt.flipped(L_pred)
    return FlipResult(indices=idx, predicted=tgt.value(L_pred), refit=refit_value, flipped=bool(flipped),
                      found=tgt.flipped(L_pred),
                      fraction=len(idx) / rows.n, method=method if drop else "relabel", target=tgt.target,
                      original=tgt.value(Ls[0]), path=np.array([tgt.value(L) for L in Ls]),
                      verified=bool(do_refit))


def relabel_to_flip(inf, x, max_count=None, refit=True):
    """A small set of training labels whose flip (0 <-> 1) changes the predicted label of x.

    Greedy with warm-started refits: flipping y_i moves the objective's gradient by
    (y_old - y_new) x~_i and leaves H unchanged, so its first-order effect on theta is
    H^-1 (g_i(old) - g_i(new)) = (y_new - y_old) H^-1 x~_i and on x's margin
    (1 - 2 y_i) x~ . H^-1 x~_i. Relabel the row of largest push toward the other label, re-fit by
    Newton steps (about one pass over X each), re-rank, repeat (Yang et al. 2023 ask this
    question; this is the greedy answer, an upper bound on the fewest labels).

    Parameters
    ----------
    inf : fastinfl.Influence on a binary LogisticRegression (multinomial: not supported).
    x : array-like (d,), the point whose prediction (P(y=1|x) > 0.5) should change.
    max_count : int >= 1 or None, the most labels to flip; None: max(1, n // 100).
    refit : bool, verify by an actual refit with the labels flipped (default True).

    Returns
    -------
    FlipResult with method "relabel", target ("prediction", x), values P(y = 1 | x).
    """
    if not isinstance(refit, (bool, np.bool_)):
        raise ValueError(f"refit must be True or False; got {refit!r}.")
    rows, y = _check_inf(inf)
    tgt = _Target(("prediction", x), rows.d, inf.model.fit_intercept)
    if max_count is None:
        max_count = max(1, rows.n // 100)
    max_count = check_scalar(max_count, "max_count", integer=True, min_value=1)
    if max_count > rows.n:
        raise ValueError(f"max_count must be <= the number of training rows ({rows.n}); got {max_count}.")
    model = inf.model
    path = _Path(rows, y, model.l2_, model.params_, model.tol, max(model.max_iter, 100), exact_hessian=False,
                 c=tgt.c)
    tgt.start(tgt.L(path.theta, path.solve))

    def changes(path):
        return (1.0 - 2.0 * path.y) * path.direction_margins()[1]

    chosen, Ls = _greedy(path, tgt, max_count, lambda i: path.relabel(i), changes)
    return _result(inf, rows, y, tgt, chosen, Ls, "relabel", refit, drop=False)
