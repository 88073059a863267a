"""Actual leave-one-out refits: the ground truth that influence approximates."""

import numpy as np

from ._validation import check_csr, check_groups, check_indices, check_labels, check_scalar, check_X, is_sparse
from .exceptions import ConvergenceError
from .model import check_fitted_model, is_multinomial
from .multinomial import MultinomialLogisticRegression, loo_retrain_multinomial


def loo_retrain(model, X_train, y_train, train_idx, X_test, y_test, tol=1e-12, max_iter=100, groups=None):
    """Actual change in each test loss after removing each listed training point (or group) and refitting.

    The baseline is the full-data optimum refitted from ``model``'s parameters
    to the same tolerance as each leave-one-out fit (so that the fit error of
    ``model`` does not leak into the differences); each removal is a Newton fit
    warm-started at the baseline. Cost: one Newton fit (usually 2-4 iterations)
    per listed point, each on a copy of X_train without that row.

    Parameters
    ----------
    model : LogisticRegression, PoissonRegression or MultinomialLogisticRegression
        Supplies l2, fit_intercept and the starting parameters (and ``classes_``).
    X_train, y_train : training data, (n, d) and (n,)
    train_idx : int array-like (n_sel,), the training points to remove, one at a time; None with ``groups``
    groups : list of index arrays or (n,) integer labels, optional
        Remove each group at once instead (as in ``Influence.group_change``); the
        result is then (m, G).
    X_test, y_test : test points, (m, d) and (m,)
    tol : float
        Newton gradient tolerance of every refit (see LogisticRegression).

    Returns
    -------
    ndarray (m, n_sel)
        loss(z_test_t; theta_{-i}) - loss(z_test_t; theta) for i = train_idx[j].
        Compare with ``Influence.loo_change``.
    """
    if is_multinomial(model):
        softmax = model if isinstance(model, MultinomialLogisticRegression) else model.softmax()
        return loo_retrain_multinomial(softmax, X_train, y_train, train_idx, X_test, y_test, tol, max_iter,
                                       groups)
    check_fitted_model(model)
    X_train = _check_data(X_train, "X_train", n_features=model.n_features_)
    y_train = check_labels(model.encode_labels(y_train, "y_train"), X_train.shape[0], "y_train", model.loss)
    X_test = _check_data(X_test, "X_test", n_features=model.n_features_)
    y_test = check_labels(model.encode_labels(y_test, "y_test"), X_test.shape[0], "y_test", model.loss)
    if groups is not None:
        if train_idx is not None:
            raise ValueError("pass train_idx or groups, not both.")
        removals = check_groups(groups, X_train.shape[0])
        what = "group"
    else:
        removals = [np.array([i]) for i in check_indices(train_idx, X_train.shape[0])]
        what = "train_idx"
    tol = check_scalar(tol, "tol", strict=True)
    if X_train.shape[0] < 2:
        raise ValueError("X_train needs at least 2 rows to leave one out.")

    def refit(X, y, init):
        return type(model)(l2=model.l2_, fit_intercept=model.fit_intercept, tol=tol,
                           max_iter=max_iter).fit(X, y, init_params=init)

    base = refit(X_train, y_train, model.params_)
    base_losses = base.losses(X_test, y_test)
    out = np.empty((X_test.shape[0], len(removals)))
    for j, rows in enumerate(removals):
        try:
            loo = refit(_without_row(X_train, rows), np.delete(y_train, rows), base.params_)
        except (ValueError, ConvergenceError) as exc:
            which = f"training point {int(rows[0])} (train_idx[{j}])" if what == "train_idx" else \
                f"group {j} ({rows.shape[0]} points)"
            raise type(exc)(f"refitting without {which}: {exc}") from exc
        out[:, j] = loo.losses(X_test, y_test) - base_losses
    return out


def _check_data(X, name, n_features):
    """Dense arrays by check_X; scipy.sparse by check_csr (CSR kept, other formats converted once)."""
    return check_csr(X, name, n_features) if is_sparse(X) else check_X(X, name, n_features=n_features)


def _without_row(X, i):
    """X without row i (a copy): np.delete for arrays, a row selection for scipy.sparse."""
    if is_sparse(X):
        return X[np.delete(np.arange(X.shape[0]), i)]
    return np.delete(X, i, axis=0)
