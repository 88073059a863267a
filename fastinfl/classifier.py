"""fastinfl.LogisticRegression: one scikit-learn classifier for two or more classes, on the shared model layer.

Two classes: the logistic loss of one margin (:class:`~fastinfl.model.MarginModel`: one Newton fit,
every kind of data). More: the softmax model of ``fastinfl.multinomial``, fitted and queried through
the same estimator. Labels of any type are mapped through ``classes_``.
"""

import numbers

import numpy as np
import scipy.special

from ._estimator import check_sample_weight, column_y, require_y
from ._validation import check_class_labels, check_scalar, check_X, is_dask_array, is_sparse
from .exceptions import ConvergenceError
from .model import MarginModel, sklearn_l2, split_pipeline
from .multinomial import MultinomialLogisticRegression


def _is_continuous(labels):
    """True for float labels that are not all integral (scikit-learn's 'continuous' target); None: False."""
    if labels is None:
        return False
    arr = np.asarray(labels)
    return arr.dtype.kind == "f" and np.isfinite(arr).all() and np.any(arr != np.round(arr))


class LogisticRegression(MarginModel):
    """Logistic regression for two or more classes, as scikit-learn's: binary or multinomial by the labels.

    Minimises F(theta) = sum_i s_i loss_i + l2/2 ||coef||^2 (sum convention; the
    intercept is not penalised; s_i the sample weights, 1 by default): the
    log-loss with two classes, the softmax cross-entropy with more
    (multinomial, as scikit-learn's). ``l2 = 1/C`` gives scikit-learn's
    ``LogisticRegression(C=C)`` exactly. Labels may be of any type (integers,
    -1/+1, booleans, strings, pandas categoricals): ``classes_`` holds them
    sorted, ``predict`` returns them, the second class is the positive one of a
    binary model. :meth:`fit` runs Newton's method (Hessian and gradient from
    one pass over X each, Cholesky solve, line search) until max|grad F| <=
    ``tol`` * n_samples, i.e. the gradient of the mean loss is below ``tol``.

    A scikit-learn estimator: ``get_params`` / ``set_params``, ``clone``,
    ``GridSearchCV``, ``Pipeline``; ``n_features_in_`` and ``feature_names_in_``
    as scikit-learn sets them.

    Parameters
    ----------
    l2 : float, optional
        L2 penalty on ``coef`` (>= 0), sum convention. Give at most one of
        ``l2`` and ``C``; neither means ``l2 = 1`` (``C = 1``).
    C : float, optional
        scikit-learn's inverse regularisation strength (> 0; ``inf``: no penalty): ``l2 = 1/C``.
    fit_intercept : bool, default True
    tol : float, default 1e-10
        Tolerance on the largest entry of the gradient of the mean objective.
    max_iter : int, default 100
        Maximum number of Newton iterations.

    Attributes
    ----------
    classes_ : ndarray (K,)
        The sorted labels.
    coef_ : ndarray (d,) or (K, d)
        (d,) for two classes (the weights of the second class's log-odds), (K, d) for more.
    intercept_ : float or ndarray (K,)
        A float for two classes (0.0 without an intercept), ndarray (K,) for more.
    params_ : ndarray (p,) or (K p,)
        ``coef_`` then ``intercept_`` (p = d + 1 with an intercept); K > 2 classes:
        (K p,), the rows [``coef_[k]``, ``intercept_[k]``] flattened class by class.
    l2_ : float
        The L2 penalty used (``l2``, or 1/C).
    n_iter_ : int
        Newton iterations taken (0 for from_params / from_sklearn).
    converged_ : bool or None
        None when the parameters were given, not fitted.
    n_features_in_ : int
        Number of features seen by :meth:`fit`.
    feature_names_in_ : ndarray of str
        Only when X was a DataFrame with string column names.

    Raises
    ------
    ConvergenceError
        From :meth:`fit` when no optimum exists (separable data with l2 = 0) or
        ``max_iter`` is reached.
    SingularHessianError
        From :meth:`fit` when the Hessian is singular (l2 = 0 with collinear
        or constant features).

    Notes
    -----
    ``sample_weight`` multiplies each row's loss (as scikit-learn's); influence
    quantities then concern removing a whole weighted row (its term s_i loss_i);
    weights are supported on in-memory data (NumPy, scipy.sparse).

    Examples
    --------
    >>> import numpy as np, fastinfl
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array(["no", "yes", "no", "yes"])
    >>> m = fastinfl.LogisticRegression(C=1.0).fit(X, y)
    >>> m.classes_.tolist(), m.predict_proba(X).shape, m.params_.shape
    (['no', 'yes'], (4, 2), (2,))
    """

    _estimator_type = "classifier"

    def __init__(self, l2=None, C=None, fit_intercept=True, tol=1e-10, max_iter=100):
        self.l2 = l2
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _penalty(self):
        if self.l2 is not None and self.C is not None:
            raise ValueError(f"give at most one of l2 and C (l2 = 1/C); got l2={self.l2!r} and C={self.C!r}.")
        if self.C is None:
            return 1.0 if self.l2 is None else check_scalar(self.l2, "l2")
        if isinstance(self.C, (numbers.Real, np.floating)) and not isinstance(self.C, bool) and self.C == np.inf:
            return 0.0
        return 1.0 / check_scalar(self.C, "C", strict=True)

    # ----------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None, init_params=None, device=None):
        """Fit by Newton's method (multinomial when ``y`` holds more than two classes); returns self.

        Parameters
        ----------
        X : array-like (n, d), scipy.sparse, dask array or DataFrame
        y : array-like (n,), labels of any type (at least two distinct)
        sample_weight : array-like (n,) of weights >= 0, optional
            Each row's loss is multiplied by its weight (in-memory data: NumPy, scipy.sparse).
        init_params : array-like (p,) or (K p,), optional
            Warm start (as ``params_``).
        device : {None, "cpu", "cuda"}
            "cuda": the passes over X run on the GPU (two classes or more).
        """
        self._set_features(X)
        if not (is_sparse(X) or is_dask_array(X) or hasattr(X, "__cuda_array_interface__")):
            X = check_X(X, "X")  # X's errors first, as for every model
        require_y(y, self)
        n = _n_rows(y) if is_dask_array(X) else _n_rows(X)  # dask X: the operator checks the rows agree
        y = column_y(y)
        dask_y = is_dask_array(y)
        classes = _dask_classes(y) if dask_y else None  # a reduction: the labels stay where they are
        if _is_continuous(classes if dask_y else y):
            raise ValueError("Unknown label type: continuous. y must hold class labels (integers, strings, "
                             "booleans), not real values: for counts use fastinfl.PoissonRegression.")
        if dask_y and (classes is None or (classes.shape[0] <= 2 and np.isin(classes, (0, 1)).all())):
            self._fit(X, y, sample_weight, init_params, device)  # 0/1 labels, validated by the dask operator
            self.classes_ = np.array([0, 1]) if classes is None else _two_classes(classes)
            return self
        if dask_y and classes.shape[0] == 2:
            self._fit(X, (y == classes[1]).astype(np.float64), sample_weight, init_params, device)
            self.classes_ = classes
            return self
        if not dask_y:
            codes, classes = check_class_labels(y, n, None, "y")
            if classes.shape[0] == 2:
                self._fit(X, codes.astype(np.float64), sample_weight, init_params, device)
                self.classes_ = classes
                return self

        l2, tol, max_iter = self._hyper()
        softmax = MultinomialLogisticRegression(l2=l2, fit_intercept=self.fit_intercept, tol=tol,
                                                max_iter=max_iter).fit(X, y, sample_weight, init_params, device)
        self.classes_ = classes
        self.l2_ = l2
        self.coef_, self.intercept_ = softmax.coef_, softmax.intercept_
        self.n_iter_, self.converged_ = softmax.n_iter_, softmax.converged_
        return self

    def _check_labels(self, y):
        if self.fit_intercept and (y == y[0]).all():
            raise ValueError(
                "y holds only one class: with an unpenalised intercept the loss has no minimum "
                "(the intercept runs off to infinity). Fit data with both classes, or fit_intercept=False."
            )

    def _check_separation(self, op, min_margin, last_step, it, l2):
        if l2 != 0.0:
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

    # ---------------------------------------------------------- construction
    @property
    def multinomial(self):
        """Whether the fitted model has K > 2 classes (softmax) rather than two (one margin)."""
        self.check_fitted()
        return self.coef_.ndim == 2

    @property
    def n_classes_(self):
        self.check_fitted()
        return self.classes_.shape[0]

    def softmax(self):
        """The fitted K > 2 class model as a :class:`fastinfl.MultinomialLogisticRegression` (the same parameters)."""

        if not self.multinomial:
            raise ValueError("this LogisticRegression has two classes: it is a one-margin model, not a softmax.")
        model = MultinomialLogisticRegression.from_params(self.coef_, self.intercept_, l2=self.l2_,
                                                          fit_intercept=self.fit_intercept, classes=self.classes_)
        model.tol, model.max_iter = self.tol, self.max_iter
        return model

    @property
    def params_(self):
        """(p,) ``coef_`` then ``intercept_`` (when fit_intercept); K > 2 classes: (K p,) class by class."""
        return self.softmax().params_ if self.multinomial else super().params_

    @classmethod
    def from_params(cls, coef, intercept=0.0, l2=0.0, fit_intercept=True, classes=None):
        """Model with given parameters (no fit).

        Two classes: ``coef`` (d,) (or scikit-learn's (1, d)), scalar ``intercept``; ``classes`` (2,),
        default [0, 1]. K > 2 classes: ``coef`` (K, d), ``intercept`` (K,) or a scalar; ``classes`` (K,),
        default 0..K-1. ``classes`` must be sorted and distinct.
        """
        coef = np.asarray(coef)
        if coef.ndim == 2 and coef.shape[0] == 1:
            coef, intercept = coef[0], np.ravel(intercept)[0] if np.ndim(intercept) else intercept
        if coef.ndim == 2:
            if coef.shape[0] == 2:
                raise ValueError("coef of shape (2, d) is a two-class softmax: give the binary model's (d,) "
                                 "weights (class 1's log-odds), or use fastinfl.MultinomialLogisticRegression.")
            softmax = MultinomialLogisticRegression.from_params(coef, intercept, l2, fit_intercept, classes)
            model = cls(l2=l2, fit_intercept=fit_intercept)
            model.classes_, model.l2_ = softmax.classes_, float(l2)
            model.coef_, model.intercept_ = softmax.coef_, softmax.intercept_
            model.n_iter_, model.converged_ = 0, None
            model.n_features_in_ = softmax.coef_.shape[1]
            return model
        model = super().from_params(coef, intercept, l2, fit_intercept)
        model.classes_ = _two_classes(classes)
        return model

    @classmethod
    def from_sklearn(cls, estimator, X=None, y=None, sample_weight=None):
        """Model with the parameters of a fitted L2 (or unpenalised) scikit-learn LogisticRegression.

        Binary or multinomial, as the estimator; ``l2 = 1/C``; ``classes_`` as the
        estimator's. Refuses one-vs-rest multi-class models, L1/elastic-net
        penalties, class weights and liblinear (which penalises the intercept):
        those minimise a different objective, so their influence would be wrong.

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
        sample_weight : array-like (n,), optional
            The weights the estimator was fitted with (for the refit).

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
                model._refit(transform.transform(X) if transform is not None else X, y, sample_weight)
            model.feature_transform_ = transform
            return model

        if not hasattr(estimator, "coef_"):
            if hasattr(estimator, "estimators_"):
                MultinomialLogisticRegression._from_estimator(estimator)  # raises: one-vs-rest
            raise ValueError("estimator is not a fitted scikit-learn LogisticRegression (no coef_).")

        classes = np.asarray(getattr(estimator, "classes_", [0, 1]))
        if classes.shape[0] > 2:
            softmax = MultinomialLogisticRegression._from_estimator(estimator)
            model = cls.from_params(softmax.coef_, softmax.intercept_, softmax.l2_, softmax.fit_intercept,
                                    softmax.classes_)
        else:
            l2, fit_intercept = _sklearn_penalty(estimator)
            coef = np.asarray(estimator.coef_, dtype=np.float64)
            if coef.ndim != 2 or coef.shape[0] != 1:
                raise ValueError(f"estimator has coef_ of shape {coef.shape} for {classes.shape[0]} classes.")
            intercept = float(np.ravel(estimator.intercept_)[0]) if fit_intercept else 0.0
            model = cls.from_params(coef[0], intercept, l2=l2, fit_intercept=fit_intercept, classes=classes)
        names = getattr(estimator, "feature_names_in_", None)
        if names is not None:
            model.feature_names_in_ = np.asarray(names, dtype=object)
        if X is not None:
            model._refit(X, y, sample_weight)
        return model

    def _refit(self, X, y, sample_weight):
        """Newton fit on (X, y) warm-started from the current parameters; the classes must stay the same."""
        if y is None:
            raise ValueError("y is required with X (the training data to refit on).")
        labels = np.asarray(y)
        got = np.unique(labels.reshape(-1)) if labels.dtype.kind in "biufUS" else None  # others: fit's checks
        if got is not None and not (got.shape == self.classes_.shape and np.all(got == self.classes_)):
            raise ValueError(f"y holds the classes {got.tolist()} but the estimator was fitted on "
                             f"{self.classes_.tolist()}: pass the estimator's training labels.")
        init = self.params_
        self.l2 = self.l2_
        self.fit(X, y, sample_weight=sample_weight, init_params=init)

    # ------------------------------------------------------------- prediction
    def encode_labels(self, y, name="y"):
        """Labels of ``classes_`` as the loss reads them: 0/1 floats (two classes) or codes 0..K-1; None stays None."""
        if y is None:
            return None
        self.check_fitted()
        classes = self.classes_
        zero_one = classes.dtype.kind in "iufb" and classes.shape == (2,) and classes[0] == 0 and classes[1] == 1
        if zero_one and (is_dask_array(y) or hasattr(y, "__cuda_array_interface__")):
            return y  # validated by the dask or CUDA operator, where the labels are
        arr = np.asarray(y)
        if zero_one and arr.dtype.kind in "biufc":
            return y  # 0/1 already: validated by the operator (which refuses complex labels)
        n = arr.shape[0] if arr.ndim else 0
        codes = check_class_labels(arr, n, classes, name)[0]
        return codes.astype(np.float64) if classes.shape[0] == 2 else codes

    def operator(self, X, y=None, name="X", device=None):
        """The validated operator over (X, y), y in the model's own labels (``classes_``).

        Two classes: the one-margin :class:`~fastinfl.operators.Operator`; K > 2: the multinomial one.
        ``device``: None (a device array X runs on the GPU), "cpu" or "cuda".
        """
        if self.multinomial:
            return self.softmax().operator(X, y, name, device)
        return super().operator(X, y, name, device)

    def decision_function(self, X):
        """Margins: (n,) the second class's log-odds for two classes, (n, K) logits for more."""
        return self._checked(X).margins(self.coef_, self.intercept_)

    def predict_proba(self, X):
        """(n, K) class probabilities, columns in the order of ``classes_`` (K = 2 for a binary model)."""
        op = self._checked(X)
        mean = op.means(self.coef_, self.intercept_)
        return mean if self.multinomial else np.column_stack([1.0 - mean, mean])

    def predict_log_proba(self, X):
        """(n, K) log class probabilities (stable: from the margins)."""
        z = self.decision_function(X)
        if self.multinomial:
            return z - scipy.special.logsumexp(z, axis=1, keepdims=True)
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])

    def predict(self, X):
        """(n,) the most probable label of each row (from ``classes_``; ties to the first class)."""
        z = self.decision_function(X)
        return self.classes_[np.argmax(z, axis=1) if self.multinomial else (z > 0.0).astype(np.int64)]

    def score(self, X, y, sample_weight=None):
        """Accuracy: the (weighted) fraction of rows whose :meth:`predict` equals ``y`` (scikit-learn's ``score``)."""
        pred = self.predict(X)
        y = np.asarray(y)
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        if y.shape != pred.shape:
            raise ValueError(f"y must have shape {pred.shape}; got {y.shape}.")
        return float(np.average(pred == y, weights=check_sample_weight(sample_weight, y.shape[0])))

    def losses(self, X, y):
        """(n,) per-example log-losses (cross-entropy with K > 2 classes), computed stably from the margins."""
        return self.operator(X, y).losses(self.coef_, self.intercept_)

    def objective(self, X, y, sample_weight=None):
        """F(theta) = sum_i s_i loss_i + l2/2 ||coef||^2 on (X, y)."""
        if self.multinomial:
            return self.softmax().objective(X, y, sample_weight)
        return super().objective(X, y, sample_weight)


def _n_rows(X):
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape):
        return shape[0]
    try:
        return len(X)
    except TypeError:
        raise ValueError(f"X must be a 2-D array (n_samples, n_features); got {type(X).__name__}.") from None


def _dask_classes(y):
    """The sorted distinct labels of a dask y (one reduction), or None when some are not finite numbers
    (the dask operator's validation then names the first bad row)."""
    import dask.array as da

    classes = np.asarray(da.unique(y).compute())
    if classes.dtype.kind == "f" and not np.isfinite(classes).all():
        return None
    if classes.shape[0] < 2:
        raise ValueError(f"y holds only one class ({classes.tolist()}): a classifier needs at least two.")
    return classes


def _two_classes(classes):
    """``classes`` (2,) sorted and distinct; None: [0, 1]."""
    if classes is None:
        return np.array([0, 1])
    classes = np.asarray(classes)
    if classes.shape != (2,) or not classes[0] < classes[1]:
        raise ValueError(f"classes must be 2 sorted distinct labels for coef of shape (d,); got {classes!r}.")
    return classes


def _sklearn_penalty(estimator):
    """(l2, fit_intercept) of a fitted scikit-learn LogisticRegression, or ValueError for another objective."""
    params = estimator.get_params() if hasattr(estimator, "get_params") else {}
    l2 = sklearn_l2(params)
    if params.get("solver") == "liblinear" and params.get("fit_intercept", True):
        raise ValueError("estimator was fitted by liblinear, which penalises the intercept; "
                         "refit with solver='lbfgs' or 'newton-cholesky'.")
    return l2, bool(params.get("fit_intercept", True))
