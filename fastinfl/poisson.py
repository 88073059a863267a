"""L2-regularised Poisson regression (log link): a loss of ``fastinfl.losses`` on the shared model layer.

Everything but the labels' checks and the predictions comes from
:class:`~fastinfl.model.MarginModel`: the Newton fit, every kind of data
(dense, CSR, Dask, CUDA) and, through :class:`fastinfl.Influence`, every
quantity and solver.
"""

import numpy as np
import scipy.special

from ._estimator import check_sample_weight
from ._validation import check_scalar
from .model import MarginModel, split_pipeline


class PoissonRegression(MarginModel):
    """Poisson regression with the log link minimising F(theta) = sum_i (e^z_i - y_i z_i) + l2/2 ||coef||^2.

    z_i = x_i . coef + intercept; y holds non-negative counts (or rates: any
    finite y >= 0); the intercept is not penalised. ``l2`` is scikit-learn's
    ``PoissonRegressor(alpha=alpha)`` times n_samples (its objective is the
    mean deviance / 2 + alpha/2 ||coef||^2). Influence quantities use the test
    loss -log P(y | mu = e^z) = e^z - y z + log(y!) (:meth:`losses`); the
    constant log(y!) drops out of every change.

    Parameters, attributes and errors as :class:`fastinfl.LogisticRegression`
    (``coef_`` (d,), ``intercept_``, ``params_`` (p,), ``n_iter_``, ``converged_``).

    Examples
    --------
    >>> import numpy as np, fastinfl
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 1, 3, 4])
    >>> m = fastinfl.PoissonRegression(l2=0.1).fit(X, y)
    >>> m.predict(X).shape
    (4,)
    """

    loss = "poisson"
    _estimator_type = "regressor"

    def _check_labels(self, y):
        if self.fit_intercept and not (y > 0.0).any():
            raise ValueError("y is 0 everywhere: with an unpenalised intercept the Poisson loss has no minimum "
                             "(the intercept runs off to minus infinity). Fit data with some positive counts.")

    @classmethod
    def from_sklearn(cls, estimator, X, y, sample_weight=None):
        """The model of a fitted scikit-learn ``PoissonRegressor`` (or a Pipeline ending in one), refitted to the optimum.

        scikit-learn minimises the mean half-deviance plus alpha/2 ||coef||^2, so ``l2 = alpha * sum(s_i)``
        (alpha n_samples without weights): X and y (raw, before a pipeline's transform) are required,
        and the model is refitted by fastinfl's Newton method from the estimator's parameters (the same
        objective; scikit-learn's default tol=1e-4 stops short of the optimum). A pipeline's earlier steps
        are kept as ``feature_transform_``.
        """
        pipeline = split_pipeline(estimator)
        if pipeline is not None:
            last, transform = pipeline
            model = cls.from_sklearn(last, transform.transform(X) if transform is not None else X, y, sample_weight)
            model.feature_transform_ = transform
            return model
        if not hasattr(estimator, "coef_") or type(estimator).__name__ != "PoissonRegressor":
            raise ValueError(f"estimator must be a fitted scikit-learn PoissonRegressor; got {type(estimator).__name__}.")
        params = estimator.get_params()
        n = _n_rows(X)
        s = check_sample_weight(sample_weight, n)
        alpha = check_scalar(params.get("alpha", 1.0), "estimator's alpha")
        fit_intercept = bool(params.get("fit_intercept", True))
        l2 = alpha * (n if s is None else float(np.sum(s)))
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        intercept = float(estimator.intercept_) if fit_intercept else 0.0
        model = cls(l2=l2, fit_intercept=fit_intercept)
        init = np.append(coef, intercept) if fit_intercept else coef
        return model.fit(X, y, sample_weight=s, init_params=init)

    def predict(self, X):
        """(n,) predicted means e^z_i."""
        return self._checked(X).means(self.coef_, self.intercept_)

    def losses(self, X, y):
        """(n,) Poisson negative log-likelihoods e^z_i - y_i z_i + log(y_i!) (log Gamma(y_i + 1) for rates)."""
        op = self.operator(X, y)
        return op.losses(self.coef_, self.intercept_) + scipy.special.gammaln(op.y + 1.0)

    def score(self, X, y, sample_weight=None):
        """D^2: the fraction of Poisson deviance explained, 1 - D(y, mu) / D(y, mean(y)) (scikit-learn's ``score``).

        With ``sample_weight`` the deviances and the mean are weighted, as scikit-learn's.
        """
        mu = self.predict(X)
        op = self.operator(X, y)
        s = check_sample_weight(sample_weight, op.n_samples)
        s = np.ones(op.n_samples) if s is None else s
        return 1.0 - _deviance(op.y, mu, s) / _deviance(op.y, np.full_like(mu, np.average(op.y, weights=s)), s)


def _deviance(y, mu, s):
    """Weighted Poisson deviance 2 sum_i s_i (y_i log(y_i / mu_i) - y_i + mu_i), with 0 log 0 = 0."""
    return 2.0 * float(np.dot(s, scipy.special.xlogy(y, y) - scipy.special.xlogy(y, mu) - y + mu))


def _n_rows(X):
    shape = getattr(X, "shape", None)
    return shape[0] if shape is not None else len(X)
