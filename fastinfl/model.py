"""Models of one margin per row (a loss of ``fastinfl.losses`` plus L2), fitted by one Newton method.

:class:`MarginModel` holds everything that does not depend on the loss: the
hyper-parameters, Newton's method with its line search, parameters and their
construction, losses and the objective. :class:`fastinfl.LogisticRegression` (``classifier.py``) and
:class:`fastinfl.PoissonRegression` (``poisson.py``) add their labels' checks
and predictions.
"""


import numpy as np
import scipy.linalg

from ._config import NEWTON_DIRECT_MAX_P
from ._estimator import Estimator, check_sample_weight, column_y, require_y
from ._validation import check_scalar, check_vector
from .exceptions import ConvergenceError
from .losses import LOSSES
from .operators import Curvature, as_operator
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


def weighted_objective_gradient(op, coef, intercept, l2, sample_weight):
    """As :func:`objective_gradient` for F = sum_i s_i loss_i + l2/2 ||coef||^2 (``sample_weight`` s (n,)).

    Two passes (margins; X~^T (s r)) on in-memory data; the min signed margin is over rows with s_i > 0.
    """
    z = op.margins(coef, intercept)
    curv = weighted(op.curvature(z), sample_weight)
    y = op.y
    loss = float(np.dot(sample_weight, LOSSES[op.loss].value(z, y)))
    signed = np.where(y > 0.5, z, -z)[sample_weight > 0]
    return (*penalised(loss, op.rmatvec(curv.residuals), coef, l2), float(signed.min()), z)


def weighted(curv, sample_weight):
    """The :class:`Curvature` of the weighted objective sum_i s_i loss_i (None: ``curv`` itself).

    One margin: residuals and weights times s_i. Softmax: residuals times s_i, probabilities times
    sqrt(s_i): every curvature block is formed as diag(pi (sum pi)) - pi pi^T (kernels/multinomial.py),
    which is then s_i W_i.
    """
    if sample_weight is None:
        return curv
    r, w = np.asarray(curv.residuals), np.asarray(curv.weights)
    if r.ndim == 2:
        return Curvature(r * sample_weight[:, None], w * np.sqrt(sample_weight)[:, None])
    return Curvature(r * sample_weight, w * sample_weight)


def check_weighted_data(op, sample_weight):
    """Raise ValueError when ``sample_weight`` is given for data whose passes cannot take it (Dask, CUDA)."""
    if sample_weight is not None and getattr(op, "kind", "dense").split("-")[0] not in ("dense", "csr"):
        raise ValueError(f"sample_weight is supported for in-memory data (NumPy arrays, scipy.sparse); "
                         f"X is {op.kind} data. Fit without weights, or on the data in memory.")


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
            "linear model (no coef_): from_sklearn takes a pipeline that ends with the "
            "model; influence is then on the features its earlier steps produce.")
    return last, (estimator[:-1] if len(estimator.steps) > 1 else None)


def sklearn_l2(params):
    """l2 (sum convention, 1/C) from a scikit-learn LogisticRegression's ``get_params()``; ValueError for an
    objective other than L2 or none (L1, elastic net) or for class weights."""
    penalty = params.get("penalty", "l2")
    l1_ratio = params.get("l1_ratio") or 0.0
    C = float(params.get("C", 1.0))
    if penalty is None or (penalty in ("l2", "deprecated") and C == np.inf):
        l2 = 0.0
    elif penalty in ("l2", "deprecated", "elasticnet") and (l1_ratio == 0.0 or penalty == "l2"):
        l2 = 1.0 / C
    else:
        raise ValueError(f"estimator must use an L2 penalty (or none); got penalty={penalty!r}, "
                         f"l1_ratio={l1_ratio!r}.")
    if params.get("class_weight") is not None:
        raise ValueError("estimator uses class_weight; weighted classes are not supported (pass per-row "
                         "weights as sample_weight instead).")
    return l2


def check_fitted_model(model, name="model"):
    """Raise unless ``model`` is a fitted fastinfl model of one margin per row (TypeError / ValueError)."""
    if not isinstance(model, MarginModel):
        raise TypeError(
            f"{name} must be a fastinfl.LogisticRegression or fastinfl.PoissonRegression; got "
            f"{type(model).__name__}. Convert a fitted scikit-learn model with "
            "fastinfl.LogisticRegression.from_sklearn()."
        )
    model.check_fitted()


class MarginModel(Estimator):
    """A loss of the margin z_i = x~_i . theta (``loss``: a name of ``fastinfl.losses.LOSSES``) plus L2.

    F(theta) = sum_i s_i loss(y_i, z_i) + l2/2 ||coef||^2 (s_i the sample
    weights, 1 by default), the intercept not penalised. :meth:`fit` runs
    Newton's method (Hessian and gradient from one pass over X each, Cholesky
    solve, the line search of ``solvers.line_search``; Newton-CG on HVPs above
    NEWTON_DIRECT_MAX_P parameters) until max|grad F| <= ``tol`` * n_samples,
    i.e. the gradient of the mean loss is below ``tol``. The constructor's
    arguments are kept as given (scikit-learn's protocol: ``get_params``,
    ``clone``); :meth:`fit` validates them and sets ``l2_``, the penalty used.
    Subclasses set ``loss`` and add their labels' checks and predictions.
    """

    loss = "logistic"

    def __init__(self, l2=1.0, fit_intercept=True, tol=1e-10, max_iter=100):
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _penalty(self):
        """The validated L2 penalty (sum convention)."""
        return check_scalar(self.l2, "l2")

    def _hyper(self):
        """(l2, tol, max_iter) validated; the attributes themselves are left as given."""
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False; got {self.fit_intercept!r}.")
        return (self._penalty(), check_scalar(self.tol, "tol", strict=True),
                check_scalar(self.max_iter, "max_iter", integer=True, min_value=1))

    def _check_labels(self, y):
        """Raise ValueError when the validated labels ``y`` leave the objective without a minimum."""

    def _check_separation(self, op, min_margin, last_step, it, l2):
        """Raise ConvergenceError when an l2 = 0 objective provably has no minimum (``it``: Newton iteration)."""

    # ----------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None, init_params=None, device=None):
        """Fit by Newton's method; returns self.

        ``sample_weight`` (n,) >= 0: the weighted objective (in-memory data);
        ``init_params`` (p,) warm-starts it; ``device="cuda"``: passes on the GPU.
        """
        self._set_features(X)
        require_y(y, self)
        y = column_y(y)
        return self._fit(X, y, sample_weight, init_params, device)

    def _fit(self, X, y, sample_weight=None, init_params=None, device=None):
        """:meth:`fit` on labels already in the loss's form (0/1 for the logistic loss)."""
        l2, tol, max_iter = self._hyper()
        op = as_operator(X, y, self.fit_intercept, device=device, loss=self.loss)
        self._check_labels(op.y)
        n, d, p = op.n_samples, op.n_features, op.n_params
        s = check_sample_weight(sample_weight, n)
        check_weighted_data(op, s)
        theta = np.zeros(p) if init_params is None else check_vector(init_params, "init_params", p).copy()
        ridge = ridge_diagonal(d, self.fit_intercept, l2)

        def evaluate(t):
            if s is None:
                return objective_gradient(op, t[:d], self._b(t), l2)
            return weighted_objective_gradient(op, t[:d], self._b(t), l2, s)

        F, grad, min_margin, z = evaluate(theta)
        gtol = tol * n
        gnorm0 = float(np.linalg.norm(grad))
        last_step = np.zeros(p)
        for it in range(max_iter + 1):
            self._check_separation(op, min_margin, None, it, l2)
            gmax = float(np.max(np.abs(grad)))
            if gmax <= gtol:
                if it > 0:
                    self._check_separation(op, min_margin, last_step, it, l2)
                break
            if it == max_iter:
                stalled = it > 0 and np.max(np.abs(last_step)) <= 1e-12 * max(1.0, np.max(np.abs(theta)))
                raise ConvergenceError(
                    f"Newton's method did not converge in max_iter={max_iter} iterations: "
                    f"max|grad F| = {gmax:.3g} > tol * n_samples = {gtol:.3g}. "
                    + ("The steps are at rounding level: the gradient cannot get smaller in float64 "
                       "at this scale of X; standardise the features or loosen tol." if stalled else
                       "Raise max_iter" + (", or use l2 > 0 (with l2 = 0 the data may be nearly "
                                           "separable)." if l2 == 0.0 else "."))
                )
            curv = weighted(op.curvature(z), s)  # z: margins of the last evaluate(theta)
            if p > NEWTON_DIRECT_MAX_P:  # many parameters (sparse, hashed features): never form H
                step = newton_cg_step(op, curv, ridge, grad, gnorm0)
            else:
                H = op.hessian(curv, ridge)
                hint = ("use l2 > 0: with l2 = 0 a constant or collinear feature, or a nearly "
                        "separable data set, leaves the Hessian singular") if l2 == 0.0 else \
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
        self.l2_ = l2
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
        """(p,) parameter vector: ``coef_`` then ``intercept_`` (when fit_intercept)."""
        self.check_fitted()
        return np.append(self.coef_, self.intercept_) if self.fit_intercept else self.coef_.copy()

    @property
    def n_features_(self):
        self.check_fitted()
        return self.coef_.shape[-1]

    def check_fitted(self):
        """Raise ValueError unless the model has parameters (fitted, or from from_params / from_sklearn)."""
        if not hasattr(self, "coef_"):
            raise _not_fitted(f"this {type(self).__name__} is not fitted: call fit() or use from_params().")

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coef_")

    @classmethod
    def from_params(cls, coef, intercept=0.0, l2=0.0, fit_intercept=True):
        """Model with given parameters (no fit): ``coef`` (d,), scalar ``intercept``."""
        model = cls(l2=l2, fit_intercept=fit_intercept)
        l2 = model._hyper()[0]
        coef = np.atleast_1d(coef)
        if coef.ndim != 1:
            raise ValueError(f"coef must be 1-D (n_features,); got shape {coef.shape}.")
        coef = check_vector(coef, "coef", coef.shape[0])
        intercept = check_scalar(intercept, "intercept", min_value=-np.inf)
        if not fit_intercept and intercept != 0.0:
            raise ValueError(f"intercept must be 0 when fit_intercept=False; got {intercept}.")
        theta = np.append(coef, intercept) if fit_intercept else coef
        model.l2_ = l2
        model.n_features_in_ = coef.shape[0]
        model._set_params(theta, coef.shape[0], 0, None)
        return model

    # ------------------------------------------------------------- prediction
    def encode_labels(self, y, name="y"):
        """``y`` in the loss's form (what the operator reads); None stays None. Here: unchanged."""
        return y

    def operator(self, X, y=None, name="X", device=None):
        """The validated :class:`~fastinfl.operators.Operator` over (X, y) for this model's loss and features.

        ``y`` holds the model's own labels (mapped through ``classes_`` for a classifier). ``device``: as
        :func:`~fastinfl.operators.as_operator`'s (None: a device array X runs on the GPU).
        """
        return as_operator(X, self.encode_labels(y, "y" + name[1:]), self.fit_intercept, name,
                           n_features=self.n_features_, loss=self.loss, device=device)

    def _checked(self, X):
        """The operator over X after scikit-learn's checks of its features against the fit."""
        self.check_fitted()
        self._check_features(X)
        return self.operator(X)

    def linear_predictor(self, X):
        """(n,) margins z_i = x_i . ``coef_`` + ``intercept_`` (the linear predictor; its mean is ``loss``'s mu(z))."""
        return self._checked(X).margins(self.coef_, self.intercept_)

    def losses(self, X, y):
        """(n,) per-example losses loss(y_i, z_i), computed stably from the margins."""
        return self.operator(X, y).losses(self.coef_, self.intercept_)

    def objective(self, X, y, sample_weight=None):
        """F(theta) = sum_i s_i loss_i + l2/2 ||coef||^2 on (X, y)."""
        op = self.operator(X, y)
        s = check_sample_weight(sample_weight, op.n_samples)
        losses = op.losses(self.coef_, self.intercept_)
        total = float(np.sum(losses) if s is None else np.dot(s, losses))
        return penalised(total, np.zeros(op.n_params), self.coef_, self.l2_)[0]


def _not_fitted(message):
    """scikit-learn's NotFittedError (a ValueError and AttributeError) when it is installed, else ValueError."""
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return ValueError(message)
    return NotFittedError(message)


def is_multinomial(model):
    """True for a fitted softmax model (coef_ of shape (K, d)): MultinomialLogisticRegression, or
    LogisticRegression fitted on K > 2 classes."""
    return isinstance(model, Estimator) and np.ndim(getattr(model, "coef_", None)) == 2
