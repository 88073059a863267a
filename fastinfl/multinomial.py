"""L2-regularised multinomial (softmax) logistic regression, fitted by Newton's method on the operator layer."""

import numpy as np
import scipy.linalg
import scipy.special

from ._config import NEWTON_DIRECT_MAX_P
from ._estimator import Estimator, check_sample_weight, column_y, require_y
from ._validation import check_class_labels, check_groups, check_indices, check_scalar, check_vector
from .exceptions import ConvergenceError
from .model import _not_fitted, check_weighted_data, ridge_diagonal, sklearn_l2, split_pipeline, weighted
from .operators.multinomial import add_gauge, as_multinomial_operator, null_mask, prepare_X, project
from .solvers import cholesky, line_search, newton_cg_step


def objective_gradient(op, coef, intercept, l2):
    """F(theta), grad F (P,), min margin and the (n, K) logits, in one pass of the multinomial operator.

    F = sum_i -log softmax(z_i)_{y_i} + l2/2 ||coef||_F^2 (intercepts unpenalised);
    min margin = min_i z_{i,y_i} - max_{k != y_i} z_ik (> 0: theta separates the data).
    """
    loss, grad, min_margin, Z = op.loss_grad(coef, intercept)
    grad.reshape(op.n_classes, -1)[:, : op.n_features] += l2 * coef
    return loss + 0.5 * l2 * float(np.sum(coef * coef)), grad, min_margin, Z


def weighted_objective_gradient(op, coef, intercept, l2, sample_weight):
    """As :func:`objective_gradient` for F = sum_i s_i CE_i + l2/2 ||coef||_F^2 (``sample_weight`` s (n,)).

    Two passes on in-memory data (logits; X~^T (s R)); the min margin is over rows with s_i > 0.
    """
    Z = op.margins(coef, intercept)
    R = op.curvature(Z).residuals
    y = op.y
    rows = np.arange(Z.shape[0])
    loss = float(np.dot(sample_weight, scipy.special.logsumexp(Z, axis=1) - Z[rows, y]))
    grad = np.ascontiguousarray(op.rmatvec(R * sample_weight[:, None]).T).reshape(-1)  # (K p,) class by class
    grad.reshape(op.n_classes, -1)[:, : op.n_features] += l2 * coef
    other = Z.copy()
    other[rows, y] = -np.inf
    margins = (Z[rows, y] - other.max(axis=1))[sample_weight > 0]
    return loss + 0.5 * l2 * float(np.sum(coef * coef)), grad, float(margins.min()), Z


def ridge_vector(n_classes, n_features, fit_intercept, l2, damping=0.0):
    """(K p,) diagonal added to the data Hessian: l2 + damping on every coef, damping on the intercepts."""
    return np.tile(ridge_diagonal(n_features, fit_intercept, l2, damping), n_classes)


class MultinomialLogisticRegression(Estimator):
    """Multinomial logistic regression minimising F(theta) = sum_i -log softmax(W x_i + b)_{y_i} + l2/2 ||W||_F^2.

    The intercepts are not penalised; ``l2 = 1/C`` matches scikit-learn's
    multinomial ``LogisticRegression(C=C)``. Labels may be any K >= 2 integers
    or strings (``classes_``, sorted; mapped to 0..K-1 internally). :meth:`fit`
    runs Newton's method: gradient and the (K p)^2 block Hessian from one pass
    over X each (fused kernels), a Cholesky solve on the identifiable subspace
    (the gauge: shifting every class by the same vector changes nothing; see
    ``fastinfl.operators.multinomial``), Armijo backtracking, until
    max|grad F| <= ``tol`` * n_samples. The fitted intercepts sum to 0 (the
    minimum-norm representative of the shift; with l2 = 0 the coefficients are
    centred over the classes as well).

    Parameters
    ----------
    l2 : float, default 1.0
        L2 penalty on ``coef_`` (>= 0).
    fit_intercept : bool, default True
    tol : float, default 1e-10
        Tolerance on the largest entry of the gradient of the mean objective.
    max_iter : int, default 100
        Maximum number of Newton iterations.

    Attributes
    ----------
    classes_ : ndarray (K,)
        The sorted labels.
    coef_ : ndarray (K, d)
    intercept_ : ndarray (K,)
        Zeros without an intercept.
    params_ : ndarray (K p,)
        The rows [``coef_[k]``, ``intercept_[k]``] flattened class by class.
    n_iter_ : int
        Newton iterations taken.
    converged_ : bool or None
        None when the parameters were given, not fitted.

    Raises
    ------
    ConvergenceError
        From :meth:`fit` on separable data with l2 = 0 (no optimum) or when ``max_iter`` is reached.
    SingularHessianError
        From :meth:`fit` when H is singular beyond the gauge (l2 = 0 with collinear features).

    Examples
    --------
    >>> import numpy as np, fastinfl
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]]); y = ["a", "b", "c", "a", "c", "b"]
    >>> m = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    >>> m.classes_.tolist(), m.coef_.shape, m.predict_proba(X).shape
    (['a', 'b', 'c'], (3, 1), (6, 3))
    """

    _estimator_type = "classifier"

    def __init__(self, l2=1.0, fit_intercept=True, tol=1e-10, max_iter=100):
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _hyper(self):
        """(l2, tol, max_iter) validated; the attributes themselves are left as given."""
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False; got {self.fit_intercept!r}.")
        return (check_scalar(self.l2, "l2"), check_scalar(self.tol, "tol", strict=True),
                check_scalar(self.max_iter, "max_iter", integer=True, min_value=1))

    # ----------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None, init_params=None, device=None):
        """Fit by Newton's method; ``init_params`` (K p,) warm-starts it. Returns self.

        ``sample_weight`` (n,) >= 0: the weighted objective sum_i s_i CE_i (in-memory data).
        ``device="cuda"``: the passes over X run on the GPU (X kept there; from a checkout: ``pip install '.[cuda]'``).
        """
        l2, tol, max_iter = self._hyper()
        self._set_features(X)
        require_y(y, self)
        y = column_y(y)
        X = prepare_X(X, "X", device=device)
        codes, classes = check_class_labels(y, X.shape[0], None, "y")
        K = classes.shape[0]
        op = as_multinomial_operator(X, codes, K, self.fit_intercept, checked=True, device=device)
        s = check_sample_weight(sample_weight, X.shape[0])
        check_weighted_data(op, s)
        n, d, p, P = op.n_samples, op.n_features, op.row_params, op.n_params
        theta = np.zeros(P) if init_params is None else check_vector(init_params, "init_params", P).copy()
        ridge = ridge_vector(K, d, self.fit_intercept, l2)
        mask = null_mask(ridge, K)
        theta = project(theta[None], mask, K)[0]  # the minimum-norm representative of the gauge

        def evaluate(t):
            T = t.reshape(K, p)
            b = T[:, d] if self.fit_intercept else 0.0
            if s is None:
                return objective_gradient(op, T[:, :d], b, l2)
            return weighted_objective_gradient(op, T[:, :d], b, l2, s)

        F, grad, min_margin, Z = evaluate(theta)
        gnorm0 = float(np.linalg.norm(grad))
        gtol = tol * n
        last_step = np.zeros(P)
        for it in range(max_iter + 1):
            if l2 == 0.0 and min_margin > 0.0:
                raise ConvergenceError(
                    f"the training data are linearly separable (Newton iterate {it} classifies every point "
                    "correctly with a positive margin), so with l2 = 0 the loss has no minimum: it keeps "
                    "falling as ||coef|| grows. Fit with l2 > 0 (for example l2=1.0)."
                )
            gmax = float(np.max(np.abs(grad)))
            if gmax <= gtol:
                if l2 == 0.0 and it > 0:
                    self._check_recession(op, last_step.reshape(K, p))
                break
            if it == max_iter:
                raise ConvergenceError(
                    f"Newton's method did not converge in max_iter={max_iter} iterations: "
                    f"max|grad F| = {gmax:.3g} > tol * n_samples = {gtol:.3g}. Raise max_iter"
                    + (", or use l2 > 0 (with l2 = 0 the data may be nearly separable)." if l2 == 0.0
                       else ".")
                )
            if P > NEWTON_DIRECT_MAX_P:  # many parameters (sparse, hashed features): never form H
                step = newton_cg_step(op, weighted(op.curvature(Z), s), ridge, project(grad[None], mask, K)[0],
                                      gnorm0)
            else:
                H = op.hessian(weighted(op.curvature(Z), s), ridge)
                add_gauge(H, mask, K)
                hint = ("use l2 > 0: with l2 = 0 a constant or collinear feature, or nearly separable data, "
                        "leave the Hessian singular") if l2 == 0.0 else \
                    "the margins are so large that every softmax curvature underflows; scale the features"
                step = -scipy.linalg.cho_solve(cholesky(H, "Hessian of the training objective", hint),
                                               project(grad[None], mask, K)[0], check_finite=False)
            found = line_search(evaluate, theta, step, F, grad, n)
            if found is None:
                raise ConvergenceError(
                    f"the line search found no decrease of the objective at Newton iteration {it} "
                    f"(max|grad F| = {gmax:.3g}); "
                    + ("init_params may be too far from the optimum: fit without it." if init_params is not None
                       else "the problem is badly conditioned: use a larger l2.")
                )
            t, (F_new, grad_new, margin_new, Z_new) = found
            last_step = t * step
            theta = theta + last_step
            F, grad, min_margin, Z = F_new, grad_new, margin_new, Z_new
        self.classes_ = classes
        self.l2_ = l2
        self._set_params(theta.reshape(K, p), d, it, True)
        return self

    def _check_recession(self, op, step):
        """ConvergenceError when, with l2 = 0, the last step is a direction along which no loss rises.

        A step U (K, p) with (x~_i . u_{y_i}) - (x~_i . u_k) >= 0 for every i and k (> 0 for some)
        certifies quasi-complete separation: the loss falls forever along it.
        """
        D = op.margins(step[:, : op.n_features], step[:, op.n_features] if op.fit_intercept else 0.0)
        signed = D[np.arange(D.shape[0]), op.y][:, None] - D
        if signed.max() > 0.0 and signed.min() >= -1e-8 * max(np.abs(D).max(), 1e-300):
            raise ConvergenceError(
                "the training data are quasi-separable: along the last Newton step no training point's loss "
                "rises and some fall, so with l2 = 0 the loss has no minimum. Fit with l2 > 0 (for example l2=1.0)."
            )

    # ---------------------------------------------------------- construction
    def _set_params(self, theta, d, n_iter, converged):
        self.coef_ = np.array(theta[:, :d], dtype=np.float64)
        self.intercept_ = (np.array(theta[:, d], dtype=np.float64) if self.fit_intercept
                           else np.zeros(theta.shape[0]))
        self.n_iter_ = n_iter
        self.converged_ = converged

    @property
    def params_(self):
        """(K p,) the rows [``coef_[k]``, ``intercept_[k]``] (``coef_[k]`` alone without an intercept), class by class."""
        self.check_fitted()
        theta = np.hstack([self.coef_, self.intercept_[:, None]]) if self.fit_intercept else self.coef_.copy()
        return theta.reshape(-1)

    @property
    def n_features_(self):
        self.check_fitted()
        return self.coef_.shape[1]

    @property
    def n_classes_(self):
        self.check_fitted()
        return self.coef_.shape[0]

    def check_fitted(self):
        """Raise ValueError unless the model has parameters (fitted, or from from_params / from_sklearn)."""
        if not hasattr(self, "coef_"):
            raise _not_fitted("this MultinomialLogisticRegression is not fitted: call fit() or use from_params().")

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coef_")

    @classmethod
    def from_params(cls, coef, intercept=0.0, l2=0.0, fit_intercept=True, classes=None):
        """Model with given parameters (no fit): ``coef`` (K, d), ``intercept`` (K,) or a scalar, ``classes`` (K,).

        ``classes`` defaults to 0..K-1 and must be sorted and distinct.
        """
        model = cls(l2=l2, fit_intercept=fit_intercept)
        l2 = model._hyper()[0]
        coef = np.asarray(coef)
        if coef.ndim != 2 or coef.shape[0] < 2:
            raise ValueError(f"coef must be 2-D (n_classes >= 2, n_features); got shape {coef.shape}.")
        K, d = coef.shape
        coef = check_vector(coef.reshape(-1), "coef", K * d).reshape(K, d)
        intercept = check_vector(np.broadcast_to(np.asarray(intercept, dtype=np.float64), (K,)), "intercept", K)
        if not fit_intercept and np.any(intercept != 0.0):
            raise ValueError(f"intercept must be 0 when fit_intercept=False; got {intercept.tolist()}.")
        classes = np.arange(K) if classes is None else np.asarray(classes)
        if classes.shape != (K,) or np.any(np.unique(classes) != classes):
            raise ValueError(f"classes must be {K} sorted distinct labels (one per row of coef); got {classes!r}.")
        model.classes_ = classes
        model.l2_ = l2
        model.n_features_in_ = d
        theta = np.hstack([coef, intercept[:, None]]) if fit_intercept else coef
        model._set_params(theta, d, 0, None)
        return model

    @classmethod
    def from_sklearn(cls, estimator, X=None, y=None):
        """Model with the parameters of a fitted multinomial (or binary), L2 or unpenalised sklearn LogisticRegression.

        ``l2 = 1/C``. A binary sklearn model (``coef_`` (1, d)) becomes the equivalent
        K = 2 model: coef rows -w/2 and w/2, intercepts -b/2 and b/2, l2 = 2/C.
        Refuses one-vs-rest models (``multi_class="ovr"``, liblinear, or a
        ``OneVsRestClassifier``), L1 / elastic-net penalties and class weights:
        they minimise a different objective, so their influence would be wrong.

        Parameters
        ----------
        estimator : sklearn.linear_model.LogisticRegression or sklearn.pipeline.Pipeline
            Fitted. A pipeline must end with the classifier; its earlier steps are kept as
            ``feature_transform_`` (``pipeline[:-1]``): the model, and every influence, is on
            the transformed features (pass ``model.feature_transform_.transform(X)`` to
            :class:`fastinfl.Influence`).
        X, y : array-like (n, d) or scipy.sparse, and (n,) labels, optional
            The training data (raw: before a pipeline's transform). Given, the model is
            refitted by fastinfl's Newton method warm-started from the sklearn parameters (the
            same objective) to ``tol`` = 1e-10: sklearn's default ``tol=1e-4`` stops short of
            the optimum, where influence describes a quadratic model, not refitting.

        Returns
        -------
        MultinomialLogisticRegression
            With ``n_iter_`` 0 and ``converged_`` None when not refitted.
        """
        pipeline = split_pipeline(estimator)
        if pipeline is not None:
            last, transform = pipeline
            model = cls.from_sklearn(last)
            if X is not None:
                model._refit(transform.transform(X) if transform is not None else X, y)
            model.feature_transform_ = transform
            return model
        model = cls._from_estimator(estimator)
        if X is not None:
            model._refit(X, y)
        return model

    def _refit(self, X, y):
        """Newton fit on (X, y) warm-started from the current parameters; the classes must stay the same."""
        if y is None:
            raise ValueError("y is required with X (the training data to refit on).")
        labels = np.asarray(y)
        got = np.unique(labels.reshape(-1)) if labels.dtype.kind in "biufUS" else None  # others: fit's checks
        if got is not None and not np.array_equal(got, self.classes_):
            raise ValueError(f"y holds the classes {got.tolist()} but the estimator was fitted on "
                             f"{self.classes_.tolist()}: pass the estimator's training labels.")
        self.fit(X, y, init_params=self.params_)

    @classmethod
    def _from_estimator(cls, estimator):
        """The model from a fitted sklearn LogisticRegression (no refit); see :meth:`from_sklearn`."""
        if not hasattr(estimator, "coef_") or type(estimator).__name__ != "LogisticRegression":
            what = type(estimator).__name__
            if hasattr(estimator, "estimators_"):
                raise ValueError(
                    f"estimator is a {what} (one binary model per class, one-vs-rest): its classes are not "
                    "fitted jointly, so it has no multinomial influence. Fit sklearn's LogisticRegression "
                    "(multinomial for more than two classes) instead."
                )
            raise ValueError(f"estimator must be a fitted scikit-learn LogisticRegression; got {what}.")
        params = estimator.get_params()
        multi = params.get("multi_class", "auto")
        classes = np.asarray(estimator.classes_)
        K = classes.shape[0]
        if params.get("solver") == "liblinear":
            raise ValueError(
                "estimator was fitted by liblinear (one-vs-rest, and it penalises the intercept); "
                "refit with solver='lbfgs' or 'newton-cholesky'."
            )
        if multi == "ovr" and K > 2:
            raise ValueError("estimator is one-vs-rest (multi_class='ovr'); refit it multinomial.")
        l2 = sklearn_l2(params)
        fit_intercept = bool(params.get("fit_intercept", True))
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        intercept = np.ravel(estimator.intercept_).astype(np.float64) if fit_intercept else np.zeros(coef.shape[0])
        if coef.shape[0] == 1 and K == 2:  # binary: sigma(w.x + b) = softmax of (-(w.x + b)/2, (w.x + b)/2)
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
            l2 = 2.0 * l2
        elif coef.shape[0] != K:
            raise ValueError(f"estimator has coef_ of shape {coef.shape} for {K} classes.")
        return cls.from_params(coef, intercept, l2=l2, fit_intercept=fit_intercept, classes=classes)

    # ------------------------------------------------------------- prediction
    def operator(self, X, y=None, name="X", device=None):
        """The validated multinomial operator over (X, y) with y mapped onto ``classes_``.

        ``device``: None (a CuPy / Numba device X runs on the GPU, any other X on the CPU), "cpu" or "cuda".
        """
        self.check_fitted()
        X = prepare_X(X, name, n_features=self.n_features_, device=device)
        codes = None if y is None else check_class_labels(y, X.shape[0], self.classes_, "y" + name[1:])[0]
        return as_multinomial_operator(X, codes, self.n_classes_, self.fit_intercept, name, checked=True,
                                       device=device)

    def decision_function(self, X):
        """(n, K) logits W x_i + b."""
        return self.operator(X).margins(self.coef_, self.intercept_)

    def predict_proba(self, X):
        """(n, K) class probabilities, columns in the order of ``classes_``."""
        return self.operator(X).means(self.coef_, self.intercept_)

    def predict(self, X):
        """(n,) the most probable label of each row (ties to the first class)."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, y):
        """Mean accuracy on (X, y)."""
        X = prepare_X(X, "X", n_features=self.n_features_)
        y = np.asarray(y)
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},); got {y.shape}.")
        return float(np.mean(self.predict(X) == y))

    def losses(self, X, y):
        """(n,) per-example cross-entropy -log softmax(z_i)_{y_i}, computed stably (log-sum-exp)."""
        return self.operator(X, y).losses(self.coef_, self.intercept_)

    def objective(self, X, y, sample_weight=None):
        """F(theta) = sum_i s_i cross-entropy_i + l2/2 ||coef||_F^2 on (X, y)."""
        op = self.operator(X, y)
        s = check_sample_weight(sample_weight, op.n_samples)
        if s is None:
            return objective_gradient(op, self.coef_, self.intercept_, self.l2_)[0]
        return weighted_objective_gradient(op, self.coef_, self.intercept_, self.l2_, s)[0]


def loo_retrain_multinomial(model, X_train, y_train, train_idx, X_test, y_test, tol=1e-12, max_iter=100,
                            groups=None):
    """Actual change of each test loss on removing each listed training point (or group) and refitting.

    As :func:`fastinfl.loo_retrain`: baseline refitted from ``model`` to the same
    tolerance, each removal a Newton fit warm-started there. Returns (m, n_sel), or
    (m, G) with ``groups``. The classes stay those of ``model`` (a removal that
    empties a class is refused).
    """
    model.check_fitted()
    X_train = prepare_X(X_train, "X_train", n_features=model.n_features_)
    check_class_labels(y_train, X_train.shape[0], model.classes_, "y_train")
    y_train = np.asarray(y_train)
    y_train = y_train[:, 0] if y_train.ndim == 2 else y_train
    test = model.operator(X_test, y_test, "X_test")
    if groups is not None:
        if train_idx is not None:
            raise ValueError("pass train_idx or groups, not both.")
        removals = check_groups(groups, X_train.shape[0])
    else:
        removals = [np.array([i]) for i in check_indices(train_idx, X_train.shape[0])]
    tol = check_scalar(tol, "tol", strict=True)
    if X_train.shape[0] < 2:
        raise ValueError("X_train needs at least 2 rows to leave one out.")

    def refit(X, y, init):
        m = MultinomialLogisticRegression(l2=model.l2_, fit_intercept=model.fit_intercept, tol=tol,
                                          max_iter=max_iter).fit(X, y, init_params=init)
        if not np.array_equal(m.classes_, model.classes_):
            raise ValueError("this removal leaves a class without training points.")
        return m

    base = refit(X_train, y_train, model.params_)
    base_losses = test.losses(base.coef_, base.intercept_)
    out = np.empty((test.n_samples, len(removals)))
    for j, rows in enumerate(removals):
        try:
            keep = np.setdiff1d(np.arange(X_train.shape[0]), rows)  # rows of dense or CSR X alike
            loo = refit(X_train[keep], y_train[keep], base.params_)
        except (ValueError, ConvergenceError) as exc:
            which = f"group {j} ({rows.shape[0]} points)" if groups is not None else \
                f"training point {int(rows[0])} (train_idx[{j}])"
            raise type(exc)(f"refitting without {which}: {exc}") from exc
        out[:, j] = test.losses(loo.coef_, loo.intercept_) - base_losses
    return out
