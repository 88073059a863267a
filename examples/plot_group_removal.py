"""
Removing a group, and the linear datamodeling score
===================================================

Removing one training point barely moves a model; data-attribution questions are often about
*many*: a data source, a labeller, half of the data. Influence is additive at first order, so
the predicted effect of removing a group is the sum of its members' influences; fastinfl's
``Influence.group_change`` can also take exact Newton steps on the objective without the group.

The **linear datamodeling score** (LDS; Park et al. 2023, "TRAK"), by which data-attribution
benchmarks rank methods, asks exactly this: draw random half-size subsets of the training data,
refit on each for real, and measure the Spearman rank correlation, across subsets, between the
predicted and the actual test loss; average over test points.

Data: scikit-learn's digits as a binary task (digits 0-4 against 5-9; 1437 training rows, 64
pixels), ``LogisticRegression(l2=1)``; 100 random subsets, each keeping half of the training rows,
and 40 test points.
"""

# %%
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

import fastinfl

X, digit = load_digits(return_X_y=True)
y = (digit >= 5).astype(float)
rows = np.random.default_rng(0).permutation(len(y))
X, y = X[rows], y[rows]
cut = int(0.8 * len(y))
mean, std = X[:cut].mean(0), X[:cut].std(0)
X = (X - mean) / np.where(std > 0, std, 1.0)
X_train, y_train, X_test, y_test = X[:cut], y[:cut], X[cut:cut + 40], y[cut:cut + 40]
n = len(y_train)

model = fastinfl.LogisticRegression(l2=1.0, tol=1e-12).fit(X_train, y_train)
inf = fastinfl.Influence(model, X_train, y_train)

# %%
# 100 random halves removed
# -------------------------
# Each group is the half of the training rows a subset leaves out. ``loo_retrain(...,
# groups=...)`` refits without each group (warm-started Newton to a gradient of 1e-12); the
# predictions come from the one fitted model.
rng = np.random.default_rng(1)
groups = [np.sort(rng.choice(n, n // 2, replace=False)) for _ in range(100)]

t0 = time.perf_counter()
actual = fastinfl.loo_retrain(model, X_train, y_train, None, X_test, y_test, groups=groups)
t_refit = time.perf_counter() - t0

predicted, seconds = {}, {}
for name, kwargs in [("first order (sum of influences)", dict(correction="none", loss="linear")),
                     ("1 Newton step", dict(steps=1)),
                     ("3 Newton steps", dict(steps=3))]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastinfl.AccuracyWarning)  # we compare with refits anyway
        predicted[name] = inf.group_change(X_test, y_test, groups, **kwargs)
    seconds[name] = time.perf_counter() - t0
print(f"100 refits: {t_refit:.2f} s")

# %%
# The score
# ---------
# Spearman correlation over the 100 subsets, per test point, then the mean over the 40 test
# points.
lds = {}
for name, pred in predicted.items():
    per_test = [spearmanr(pred[t], actual[t])[0] for t in range(len(y_test))]
    lds[name] = np.mean(per_test)
    print(f"{name:>32}: LDS {lds[name]:.3f}, Pearson r (pooled) "
          f"{np.corrcoef(pred.ravel(), actual.ravel())[0, 1]:.3f}, {seconds[name]:.2f} s")

# %%
# The figure
# ----------
# Left: predicted against actual change of the test loss for every (test point, subset) pair.
# Removing half of the data is far outside the small-perturbation regime that first-order
# influence assumes: its predictions are compressed and scattered, while three Newton steps on
# the objective without the group land on the refits. Right: the LDS of each method.
fig, (ax, ax_lds) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
for (name, pred), marker in zip(predicted.items(), "o^s", strict=True):
    ax.scatter(actual.ravel(), pred.ravel(), s=5, alpha=0.4, marker=marker, label=name)
lim = np.array([actual.min(), actual.max()])
ax.plot(lim, lim, "k--", lw=1)
ax.set(xlabel="actual change of test loss (refit without the half)", ylabel="predicted change")
ax.legend(fontsize=8, markerscale=3)
ax_lds.barh(list(lds), list(lds.values()), color=["C0", "C1", "C2"])
for i, v in enumerate(lds.values()):
    ax_lds.text(v, i, f" {v:.3f}", va="center")
ax_lds.set(xlim=(0, 1.15), xlabel="linear datamodeling score")
fig.tight_layout()
plt.show()

# %%
# Reading it
# ----------
# On this task the sum of influences already ranks the subsets well (LDS 0.946 in this build's
# run, as printed above) although its values are off; one Newton step ranks them better (0.985)
# but overshoots some of the largest changes (its pooled Pearson r is lower), and three steps
# reach 0.997, at about the cost of a few refits of the whole model (``group_decrements_`` reports
# how fast the steps converged, and an ``AccuracyWarning`` names the groups whose estimated error
# stays above 10 %). For a model this small the 100 refits themselves are cheap; the predictions
# matter when refits are not, and ``group_change`` costs one Hessian factorisation per step and
# group whatever the size of the model's training run.
