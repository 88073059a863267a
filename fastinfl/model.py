"""Models of one margin per row (a loss of ``fastinfl.losses`` plus L2), fitted by one Newton method.

:class:`MarginModel` holds everything that does not depend on the loss: the
hyper-parameters, Newton's method with its line search, parameters and their
construction, losses and the objective. :class:`LogisticRegression` (here) and
:class:`fastinfl.PoissonRegression` (``poisson.py``) add their labels' checks
and predictions.
"""

import numpy as np
import scipy.linalg

from ._config import NEWTON_DIRECT_MAX_P
from ._validation import check_scalar, check_two_classes, check_vector
from .exceptions import ConvergenceError
from .operators import as_operator
from .solvers import cholesky, line_search, newton_cg_step


def ridge_diagonal(n_features, fit_intercept, l2, damping=0.0):
    """(p,) diagonal added to the data Hessian: l2 + damping on coef, damping on the intercept."""
    ridge = np.full(n_features + int(fit_intercept), l2 + damping)
    if fit_intercept:
        ridge[-1] = damping
    return ridge


def objective_gradient(op, coef, intercept, l2):
    """F(theta), grad F (p,), min signed margin and the margins, in one pass of operator ``op``.

    F = sum of the operator's losses + l2/2 ||coef||^2 (intercept unpenalised); min signed
    margin = min_i (2 y_i - 1) z_i (> 0: theta separates the data).
    """
    loss, grad, min_margin, z = op.loss_grad(coef, intercept)
    return (*penalised(loss, grad, coef, l2), min_margin, z)


def penalised(loss, grad, coef, l2):
    """(F, grad F) from the summed loss and its gradient (p,): adds the L2 term (``grad`` in place)."""
    grad[: coef.shape[0]] += l2 * coef
    return loss + 0.5 * l2 * float(np.dot(coef, coef)), grad


def split_pipeline(estimator):
    """(classifier, transform or None) of a fitted scikit-learn Pipeline ending in a classifier; None for any
    other estimator. ``transform`` is ``pipeline[:-1]`` (None for a one-step pipeline)."""
    if not (hasattr(estimator, "steps") and hasattr(estimator, "__getitem__")):
        return None
    last = estimator.steps[-1][1] if estimator.steps else None
    if not hasattr(last, "coef_"):
        raise ValueError(
            f"the pipeline's last step ({type(last).__name__}) is not a fitted scikit-learn "
            "LogisticRegression (no coef_): from_sklearn takes a pipeline that ends with the "
            "classifier; influence is then on the features its earlier steps produce.")
    return last, (estimator[:-1] if len(estimator.steps) > 1 else None)


def check_fitted_model(model, name="model"):
    """Raise unless ``model`` is a fitted fastinfl model of one margin per row (TypeError / ValueError)."""
    if not isinstance(model, MarginModel):
        raise TypeError(
            f"{name} must be a fastinfl.LogisticRegression or fastinfl.PoissonRegression; got "
            f"{type(model).__name__}. Convert a fitted scikit-learn model with "
            "fastinfl.LogisticRegression.from_sklearn()."
        )
    model.check_fitted()


class MarginModel:
    """A loss of the margin z_i = x~_i . theta (``loss``: a name of ``fastinfl.losses.LOSSES``) plus L2.

    F(theta) = sum_i loss(y_i, z_i) + l2/2 ||coef||^2, the intercept not
    penalised. :meth:`fit` runs Newton's method (Hessian and gradient from one
    pass over X each, Cholesky solve, the line search of ``solvers.line_search``;
    Newton-CG on HVPs above NEWTON_DIRECT_MAX_P parameters) until max|grad F| <=
    ``tol`` * n_samples, i.e. the gradient of the mean loss is below ``tol``.
    Subclasses set ``loss`` and add their labels' checks and predictions.
    """

    loss = "logistic"

    def __init__(self, l2=1.0, fit_intercept=True, tol=1e-10, max_iter=100):
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _check_hyper(self):
        self.l2 = check_scalar(self.l2, "l2")
        self.tol = check_scalar(self.tol, "tol", strict=True)
        self.max_iter = check_scalar(self.max_iter, "max_iter", integer=True, min_value=1)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False; got {self.fit_intercept!r}.")

    def _check_labels(self, y):
        """Raise ValueError when the validated labels ``y`` leave the objective without a minimum."""

    def _check_separation(self, op, min_margin, last_step, it):
        """Raise ConvergenceError when an l2 = 0 objective provably has no minimum (``it``: Newton iteration)."""

    # ----------------------------------------------------------------- fitting
    def fit(self, X, y, init_params=None, device=None):
        """Fit by Newton's method; ``init_params`` (p,) warm-starts it; ``device="cuda"``: passes on the GPU. Returns self."""
        self._check_hyper()
        op = as_operator(X, y, self.fit_intercept, device=device, loss=self.loss)
        self._check_labels(op.y)
        n, d, p = op.n_samples, op.n_features, op.n_params
        theta = np.zeros(p) if init_params is None else check_vector(init_params, "init_params", p).copy()
        ridge = ridge_diagonal(d, self.fit_intercept, self.l2)

        def evaluate(t):
            return objective_gradient(op, t[:d], self._b(t), self.l2)

        F, grad, min_margin, z = evaluate(theta)
        gtol = self.tol * n
        gnorm0 = float(np.linalg.norm(grad))
        last_step = np.zeros(p)
        for it in range(self.max_iter + 1):
            self._check_separation(op, min_margin, None, it)
            gmax = float(np.max(np.abs(grad)))
            if gmax <= gtol:
                if it > 0:
                    self._check_separation(op, min_margin, last_step, it)
                break
            if it == self.max_iter:
                stalled = it > 0 and np.max(np.abs(last_step)) <= 1e-12 * max(1.0, np.max(np.abs(theta)))
                raise ConvergenceError(
                    f"Newton's method did not converge in max_iter={self.max_iter} iterations: "
                    f"max|grad F| = {gmax:.3g} > tol * n_samples = {gtol:.3g}. "
                    + ("The steps are at rounding level: the gradient cannot get smaller in float64 "
                       "at this scale of X; standardise the features or loosen tol." if stalled else
                       "Raise max_iter" + (", or use l2 > 0 (with l2 = 0 the data may be nearly "
                                           "separable)." if self.l2 == 0.0 else "."))
                )
            if p > NEWTON_DIRECT_MAX_P:  # many parameters (sparse, hashed features): never form H
                step = newton_cg_step(op, op.curvature(z), ridge, grad, gnorm0)
            else:
                H = op.hessian(op.curvature(z), ridge)  # z: margins of the last evaluate(theta)
                hint = ("use l2 > 0: with l2 = 0 a constant or collinear feature, or a nearly "
                        "separable data set, leaves the Hessian singular") if self.l2 == 0.0 else \
                    ("with l2 > 0 only the intercept can lack curvature: the margins are so large that "
                     "every curvature weight underflows; scale the features")
                if init_params is not None:
                    hint += ", or fit without init_params (it may be too far from the optimum)"
                step = -scipy.linalg.cho_solve(cholesky(H, "Hessian of the training objective", hint),
                                               grad, check_finite=False)
            found = line_search(evaluate, theta, step, F, grad, n)
            if found is None:
                raise ConvergenceError(
                    f"the line search found no decrease of the objective at Newton iteration {it} "
                    f"(max|grad F| = {gmax:.3g}); "
                    + ("init_params may be too far from the optimum for Newton's method: fit without "
                       "it (from zero)." if init_params is not None else
                       "the problem is badly conditioned: use a larger l2.")
                )
            t, (F_new, grad_new, margin_new, z_new) = found
            last_step = t * step
            theta = theta + last_step
            F, grad, min_margin, z = F_new, grad_new, margin_new, z_new
        self._set_params(theta, d, it, True)
        return self

    # ---------------------------------------------------------- construction
    def _b(self, theta):
        return float(theta[-1]) if self.fit_intercept else 0.0

    def _set_params(self, theta, d, n_iter, converged):
        self.coef_ = np.array(theta[:d], dtype=np.float64)
        self.intercept_ = self._b(theta)
        self.n_iter_ = n_iter
        self.converged_ = converged

    @property
    def params_(self):
        """(p,) parameter vector: coef_ then intercept_ (when fit_intercept)."""
        self.check_fitted()
        return np.append(self.coef_, self.intercept_) if self.fit_intercept else self.coef_.copy()

    @property
    def n_features_(self):
        self.check_fitted()
        return self.coef_.shape[0]

    def check_fitted(self):
        """Raise ValueError unless the model has parameters (fitted, or from from_params / from_sklearn)."""
        if not hasattr(self, "coef_"):
            raise ValueError(f"this {type(self).__name__} is not fitted: call fit() or use from_params().")

    @classmethod
    def from_params(cls, coef, intercept=0.0, l2=0.0, fit_intercept=True):
        """Model with given parameters (no fit): ``coef`` (d,), scalar ``intercept``."""
        model = cls(l2=l2, fit_intercept=fit_intercept)
        model._check_hyper()
        coef = np.atleast_1d(coef)
        if coef.ndim != 1:
            raise ValueError(f"coef must be 1-D (n_features,); got shape {coef.shape}.")
        coef = check_vector(coef, "coef", coef.shape[0])
        intercept = check_scalar(intercept, "intercept", min_value=-np.inf)
        if not fit_intercept and intercept != 0.0:
            raise ValueError(f"intercept must be 0 when fit_intercept=False; got {intercept}.")
        theta = np.append(coef, intercept) if fit_intercept else coef
        model._set_params(theta, coef.shape[0], 0, None)
        return model

    # ------------------------------------------------------------- prediction
    def operator(self, X, y=None, name="X"):
        """The validated :class:`~fastinfl.operators.Operator` over (X, y) for this model's loss and features."""
        return as_operator(X, y, self.fit_intercept, name, n_features=self.n_features_, loss=self.loss)

    def decision_function(self, X):
        """(n,) margins z_i = x_i . coef_ + intercept_."""
        return self.operator(X).margins(self.coef_, self.intercept_)

    def losses(self, X, y):
        """(n,) per-example losses loss(y_i, z_i), computed stably from the margins."""
        return self.operator(X, y).losses(self.coef_, self.intercept_)

    def objective(self, X, y):
        """F(theta) = sum_i loss_i + l2/2 ||coef||^2 on (X, y)."""
        return objective_gradient(self.operator(X, y), self.coef_, self.intercept_, self.l2)[0]

    def __repr__(self):
        return (f"{type(self).__name__}(l2={self.l2!r}, fit_intercept={self.fit_intercept!r}, "
                f"tol={self.tol!r}, max_iter={self.max_iter!r})")


class LogisticRegression(MarginModel):
    """Binary logistic regression minimising F(theta) = sum_i loss_i + l2/2 ||coef||^2.

    The intercept is not penalised; ``l2 = 1/C`` matches scikit-learn's
    ``LogisticRegression(C=C)``. :meth:`fit` runs Newton's method (Hessian and
    gradient from one pass over X each, Cholesky solve, Armijo backtracking)
    until max|grad F| <= ``tol`` * n_samples, i.e. the gradient of the mean loss
    is below ``tol``.

    Parameters
    ----------
    l2 : float, default 1.0
        L2 penalty on ``coef`` (>= 0).
    fit_intercept : bool, default True
    tol : float, default 1e-10
        Tolerance on the largest entry of the gradient of the mean objective.
    max_iter : int, default 100
        Maximum number of Newton iterations.

    Attributes
    ----------
    coef_ : ndarray (d,)
    intercept_ : float (0.0 without an intercept)
    params_ : ndarray (p,), coef_ then intercept_ (p = d + 1 with an intercept)
    n_iter_ : int, Newton iterations taken (0 for from_params / from_sklearn)
    converged_ : bool or None, None when the parameters were given, not fitted

    Raises
    ------
    ConvergenceError
        From :meth:`fit` when no optimum exists (separable data with l2 = 0) or
        ``max_iter`` is reached.
    SingularHessianError
        From :meth:`fit` when the Hessian is singular (l2 = 0 with collinear
        or constant features).

    Examples
    --------
    >>> import numpy as np, fastinfl
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 1, 0, 1])
    >>> m = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    >>> bool(m.converged_), m.params_.shape
    (True, (2,))
    """

    def _check_labels(self, y):
        if self.fit_intercept:
            check_two_classes(y)

    def _check_separation(self, op, min_margin, last_step, it):
        if self.l2 != 0.0:
            return
        if last_step is None and min_margin > 0.0:
            raise ConvergenceError(
                f"the training data are linearly separable (Newton iterate {it} classifies "
                "every point correctly with a positive margin), so with "
                "l2 = 0 the loss has no minimum: it keeps falling as ||coef|| grows. "
                "Fit with l2 > 0 (for example l2=1.0)."
            )
        if last_step is not None:
            self._check_recession(op, last_step)

    def _check_recession(self, op, step):
        """ConvergenceError if the last Newton step is a direction along which the loss never rises.

        With l2 = 0, a step u with (2 y_i - 1) x~_i . u >= 0 for every i (and > 0 for some) is a
        certificate of quasi-complete separation: the loss falls forever along u, so the
        gradient test passed only because it decays like e^-||theta||, not at an optimum.
        """
        u = op.margins(step[: op.n_features], self._b(step))
        signed = np.where(op.y > 0.5, u, -u)
        if signed.max() > 0.0 and signed.min() >= -1e-8 * np.abs(u).max():
            raise ConvergenceError(
                "the training data are quasi-separable: along the last Newton step no training point's "
                "loss rises and some fall, so with l2 = 0 the loss has no minimum and ||coef|| grows "
                "without bound as tol shrinks. Fit with l2 > 0 (for example l2=1.0)."
            )

    @classmethod
    def from_sklearn(cls, estimator, X=None, y=None):
        """Model with the parameters of a fitted binary, L2 (or unpenalised) sklearn LogisticRegression.

        ``l2 = 1/C``. Refuses multiclass models, L1/elastic-net penalties,
        class weights and liblinear (which penalises the intercept): those
        minimise a different objective, so their influence would be wrong.

        Parameters
        ----------
        estimator : sklearn.linear_model.LogisticRegression or sklearn.pipeline.Pipeline
            Fitted. A pipeline must end with the classifier; its earlier steps are kept as
            ``feature_transform_`` (``pipeline[:-1]``), because the model, and so every
            influence, is then on the *transformed* features: pass
            ``model.feature_transform_.transform(X)`` as X to :class:`fastinfl.Influence`.
        X, y : array-like, optional
            The training data (raw: before a pipeline's transform). Given, the model is refitted
            by fastinfl's Newton method warm-started from the sklearn parameters (same objective,
            usually 1-3 iterations) to ``tol`` = 1e-10. scikit-learn's default ``tol=1e-4`` stops
            short of the optimum, so influence at its parameters describes a quadratic model,
            not refitting, and :class:`fastinfl.Influence` warns (``StationarityWarning``):
            pass X and y here, or fit sklearn with a tight ``tol`` (such as 1e-10).

        Returns
        -------
        LogisticRegression
            With ``n_iter_`` 0 and ``converged_`` None when not refitted.
        """
        pipeline = split_pipeline(estimator)
        if pipeline is not None:
            last, transform = pipeline
            model = cls.from_sklearn(last)
            if X is not None:
                Xt = transform.transform(X) if transform is not None else X
                model.fit(Xt, y, init_params=model.params_)
            model.feature_transform_ = transform
            return model
        params = estimator.get_params() if hasattr(estimator, "get_params") else {}
        if not hasattr(estimator, "coef_"):
            raise ValueError("estimator is not a fitted scikit-learn LogisticRegression (no coef_).")
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] != 1 or len(getattr(estimator, "classes_", [0, 1])) != 2:
            raise ValueError(
                f"estimator must be a binary model; got coef_ of shape {coef.shape} "
                f"for {len(getattr(estimator, 'classes_', []))} classes."
            )
        penalty = params.get("penalty", "l2")
        l1_ratio = params.get("l1_ratio") or 0.0
        C = float(params.get("C", 1.0))
        if penalty is None or (penalty in ("l2", "deprecated") and C == np.inf):
            l2 = 0.0
        elif penalty in ("l2", "deprecated", "elasticnet") and (l1_ratio == 0.0 or penalty == "l2"):
            l2 = 1.0 / C
        else:
            raise ValueError(
                f"estimator must use an L2 penalty (or none); got penalty={penalty!r}, "
                f"l1_ratio={l1_ratio!r}."
            )
        if params.get("class_weight") is not None:
            raise ValueError("estimator uses class_weight; weighted losses are not supported.")
        if params.get("solver") == "liblinear" and params.get("fit_intercept", True):
            raise ValueError(
                "estimator was fitted by liblinear, which penalises the intercept; "
                "refit with solver='lbfgs' or 'newton-cholesky'."
            )
        fit_intercept = bool(params.get("fit_intercept", True))
        intercept = float(np.ravel(estimator.intercept_)[0]) if fit_intercept else 0.0
        model = cls.from_params(coef[0], intercept, l2=l2, fit_intercept=fit_intercept)
        if X is not None:
            if y is None:
                raise ValueError("y is required with X (the training data to refit on).")
            model.fit(X, y, init_params=model.params_)
        return model

    # ------------------------------------------------------------- prediction
    def predict_proba(self, X):
        """P(y = 1 | x) for each row of X, shape (n,)."""
        return self.operator(X).means(self.coef_, self.intercept_)

    def predict(self, X):
        """Predicted labels, 1 where P(y = 1 | x) > 0.5 (margin > 0), else 0: shape (n,), int64.

        Like scikit-learn's ``predict`` (whose ``classes_`` are 0 and 1 here).
        """
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    def score(self, X, y):
        """Accuracy: the fraction of rows whose :meth:`predict` equals ``y`` (as scikit-learn's ``score``)."""
        op = self.operator(X, y)  # validates X and the 0/1 labels y
        pred = op.means(self.coef_, self.intercept_) > 0.5
        return float(np.mean(pred == (op.y > 0.5)))
