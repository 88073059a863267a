"""Set-up shared by tests/test_accuracy_validation.py and docs/make_validation_accuracy.py: predicted vs
actual changes of the test loss, for single points (linear vs exact loss) and for groups of points."""

import numpy as np
from test_validation import load_case, pearson

N_TEST = 3  # the test points of highest test loss
N_TRAIN = 40  # per test point, the training points of largest |influence|
N_GROUPS = 20  # random groups per size
N_BINS = 5  # feature-quantile groups
GROUP_SIZES = (10, 50, 200)
SINGLE = [("none", "linear"), ("none", "exact"), ("newton", "linear"), ("newton", "exact")]
GROUP_METHODS = [("first order", "none", "linear", 1), ("Newton, linear", "newton", "linear", 1),
                 ("Newton, exact", "newton", "exact", 1), ("Newton x2, exact", "newton", "exact", 2),
                 ("Newton x5, exact", "newton", "exact", 5)]


def setup(name, l2):
    import fastinfl

    X, y, X_test, y_test = load_case(name)
    model = fastinfl.LogisticRegression(l2=l2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    worst = np.argsort(-model.losses(X_test, y_test), kind="stable")[:N_TEST]
    return model, inf, X, y, X_test[worst], y_test[worst]


def single_points(name, l2):
    """{(correction, loss): (r pooled, r worst test point)} and the actual changes (N_TEST, N_TRAIN)."""
    import fastinfl

    model, inf, X, y, Xt, yt = setup(name, l2)
    idx = np.argsort(-np.abs(inf.influence(Xt, yt)), axis=1, kind="stable")[:, :N_TRAIN]
    actual = np.stack([fastinfl.loo_retrain(model, X, y, idx[t], Xt[t:t + 1], yt[t:t + 1])[0]
                       for t in range(N_TEST)])
    out = {}
    for correction, loss in SINGLE:
        pred = np.stack([inf.loo_change(Xt[t:t + 1], yt[t:t + 1], idx[t], correction=correction, loss=loss)[0]
                         for t in range(N_TEST)])
        out[(correction, loss)] = (pearson(pred, actual), min(pearson(pred[t], actual[t]) for t in range(N_TEST)),
                                   float(np.max(np.abs(pred - actual) / np.abs(actual))))
    return out


def make_groups(kind, X, n):
    """Random groups of a size, or N_BINS quantile bins of the first feature (a coherent region each).

    Bins by rank (stable sort, equal counts), so that ties in the feature cannot empty a bin."""
    if kind == "quantile":
        labels = np.empty(n, np.int64)
        labels[np.argsort(X[:, 0], kind="stable")] = np.arange(n) * N_BINS // n
        return labels
    rng = np.random.default_rng(1)
    return [rng.choice(n, int(kind), replace=False) for _ in range(N_GROUPS)]


def groups(name, l2, kind):
    """{method: (r, max |pred - actual| / max |actual|, groups warned)} over N_TEST x G pairs."""
    import warnings

    import fastinfl

    model, inf, X, y, Xt, yt = setup(name, l2)
    g = make_groups(kind, X, len(y))
    actual = fastinfl.loo_retrain(model, X, y, None, Xt, yt, groups=g)
    out = {}
    for label, correction, loss, steps in GROUP_METHODS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fastinfl.AccuracyWarning)
            pred = inf.group_change(Xt, yt, g, correction=correction, loss=loss, steps=steps)
        out[label] = (pearson(pred, actual), float(np.abs(pred - actual).max() / np.abs(actual).max()),
                      len(caught))
    return out
