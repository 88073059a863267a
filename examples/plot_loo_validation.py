"""
Predicted vs actual leave-one-out
=================================

Koh & Liang's Figure 2: for a test point, remove each of its most influential training points in
turn, refit the model, and compare the actual change of the test loss with the change influence
predicted. We do it for the three models fastinfl fits:

* binary logistic regression on scikit-learn's breast cancer data (455 training rows, 30 features);
* multinomial (softmax) logistic regression on the digits (all 10 classes; 480 training rows of a
  600-row sample, to keep the site's build short: the validation pages use all 1797 digits);
* Poisson regression on statsmodels' RAND Health Insurance Experiment visit counts (1200 training
  rows of a 1500-row sample, 9 covariates).

Each panel pools the 3 test points of highest loss and, for each, the 40 training points of
largest absolute influence (120 refits per model; for the multinomial model 2 test points and 15
training points each, again for the build's time). Two predictions per refit: first order,
``loo_change(..., correction="none", loss="linear")`` (= -I, Koh & Liang's), and the default
``loo_change(...)``, one exact Newton step on the objective without the point with the test loss
evaluated exactly. The set-up is that of the validation pages (user guide, "Accuracy"), which
the tests assert.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import statsmodels.api as sm
from sklearn.datasets import load_breast_cancer, load_digits

import fastinfl


def split(X, y, n_rows=None, seed=0):
    """A fixed permutation, an 80/20 split, features standardised on the training part."""
    rows = np.random.default_rng(seed).permutation(len(y))[:n_rows]
    X, y = X[rows], y[rows]
    cut = int(0.8 * len(y))
    mean, std = X[:cut].mean(0), X[:cut].std(0)
    keep = std > 0
    X = (X[:, keep] - mean[keep]) / std[keep]
    return X[:cut], y[:cut], X[cut:], y[cut:]


def figure2(model, X_train, y_train, X_test, y_test, n_test=3, n_train=40):
    """Predicted (first order, Newton) and actual test-loss changes, pooled over the test points."""
    inf = fastinfl.Influence(model, X_train, y_train)
    test_idx = np.argsort(-model.losses(X_test, y_test))[:n_test]
    first, newton, actual = [], [], []
    for t in test_idx:
        xt, yt = X_test[t : t + 1], y_test[t : t + 1]
        idx = np.argsort(-np.abs(inf.influence(xt, yt)[0]))[:n_train]
        first.append(inf.loo_change(xt, yt, idx, correction="none", loss="linear")[0])
        newton.append(inf.loo_change(xt, yt, idx)[0])
        actual.append(fastinfl.loo_retrain(model, X_train, y_train, idx, xt, yt)[0])
    return np.ravel(first), np.ravel(newton), np.ravel(actual)


cases = {}
X, y = load_breast_cancer(return_X_y=True)
data = split(X, y)
cases["binary: breast cancer"] = (fastinfl.LogisticRegression(l2=1.0, tol=1e-12).fit(*data[:2]), data, 3, 40)
X, y = load_digits(return_X_y=True)
data = split(X, y, n_rows=600)
cases["multinomial: digits, 10 classes"] = (
    fastinfl.MultinomialLogisticRegression(l2=1.0, tol=1e-12).fit(*data[:2]), data, 2, 15)
randhie = sm.datasets.randhie.load_pandas().data
X, y = randhie.drop(columns="mdvis").to_numpy(float), randhie["mdvis"].to_numpy(float)
data = split(X, y, n_rows=1500)
cases["Poisson: RAND HIE visits"] = (
    fastinfl.PoissonRegression(l2=1.0, tol=1e-12).fit(*data[:2]), data, 3, 40)

# %%
# The figure
# ----------
# Each point is one training point removed and the model refitted; on the diagonal the
# prediction is exact. Pearson r in the legend.
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, (name, (model, data, n_test, n_train)) in zip(axes, cases.items(), strict=True):
    first, newton, actual = figure2(model, *data, n_test=n_test, n_train=n_train)
    r_first, r_newton = np.corrcoef(first, actual)[0, 1], np.corrcoef(newton, actual)[0, 1]
    print(f"{name}: Pearson r first order {r_first:.4f}, Newton {r_newton:.4f}")
    ax.scatter(actual, first, s=12, alpha=0.6, label=f"first order (-I), r = {r_first:.3f}")
    ax.scatter(actual, newton, s=12, alpha=0.6, marker="s", label=f"Newton step, r = {r_newton:.3f}")
    values = np.concatenate([actual, first, newton])
    lim = np.array([values.min(), values.max()])
    ax.plot(lim, lim, "k--", lw=1)
    ax.set(title=name, xlabel="actual change of test loss (refit)", ylabel="predicted change")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# Reading it
# ----------
# First order shrinks every change by (1 - h_i), the point's leverage: it keeps the removed
# point's own curvature in H. The Newton step removes it, and evaluating the loss exactly at the
# predicted parameters (rather than carrying the change linearly) helps where the step is large.
# What stays off the diagonal on breast cancer is a confidently misclassified training point
# whose removal moves the fit beyond any one-step prediction (the validation page looks at it).
