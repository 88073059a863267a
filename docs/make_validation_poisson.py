"""Regenerate docs/validation_poisson.md: PoissonRegression's influence vs leave-one-out refits.

Usage (from the repository root): ``python docs/make_validation_poisson.py`` (writes the file;
``--stdout`` prints it). Deterministic, about 20 s. The set-up is ``poisson_case`` / ``figure2`` below,
which tests/test_poisson.py imports and asserts, so these are the figures the tests check.

Data: statsmodels' RAND Health Insurance Experiment (``statsmodels.datasets.randhie``): the count of
outpatient visits ``mdvis`` against the nine covariates, the classic Poisson regression example
(Cameron & Trivedi). A deterministic sample of 1500 rows (``numpy.random.default_rng(0)``), features
standardised, an 80/20 split.
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
L2 = 1.0
N_ROWS = 1500
N_TEST_POINTS = 3
N_TRAIN_POINTS = 40


def poisson_case():
    """(X_train, y_train, X_test, y_test) of the randhie sample, standardised on the training split."""
    import statsmodels.api as sm

    data = sm.datasets.randhie.load_pandas().data
    rows = np.sort(np.random.default_rng(0).choice(len(data), N_ROWS, replace=False))
    y = data["mdvis"].to_numpy(float)[rows]
    X = data.drop(columns="mdvis").to_numpy(float)[rows]
    cut = int(0.8 * N_ROWS)
    mean, std = X[:cut].mean(0), X[:cut].std(0)
    X = (X - mean) / np.where(std > 0, std, 1.0)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def figure2(X_train, y_train, X_test, y_test):
    """Predicted (none, newton) and actual loss changes, (N_TEST_POINTS, N_TRAIN_POINTS) each, and the fit."""
    import fastinfl

    model = fastinfl.PoissonRegression(l2=L2, tol=1e-12).fit(X_train, y_train)
    inf = fastinfl.Influence(model, X_train, y_train)
    losses = model.losses(X_test, y_test)
    test_idx = np.argsort(-losses)[:N_TEST_POINTS]
    out = {"none": [], "newton": [], "actual": [], "test_idx": test_idx, "test_loss": losses[test_idx],
           "test_y": y_test[test_idx], "model": model}
    for t in test_idx:
        xt, yt = X_test[t:t + 1], y_test[t:t + 1]
        I = inf.influence(xt, yt)[0]
        idx = np.argsort(-np.abs(I))[:N_TRAIN_POINTS]
        out["none"].append(inf.loo_change(xt, yt, idx, correction="none", loss="linear")[0])
        out["newton"].append(inf.loo_change(xt, yt, idx, correction="newton")[0])
        out["actual"].append(fastinfl.loo_retrain(model, X_train, y_train, idx, xt, yt)[0])
    for key in ("none", "newton", "actual"):
        out[key] = np.array(out[key])
    return out


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def render(f, shape):
    lines = [
        "# Validation: PoissonRegression's influence vs leave-one-out retraining",
        "",
        "Koh & Liang's Figure 2 for the Poisson model (log link): statsmodels' RAND Health Insurance",
        f"Experiment, outpatient visits `mdvis` (counts 0-77) on nine covariates, {N_ROWS} rows sampled by",
        "`numpy.random.default_rng(0)`, standardised, an 80/20 split;",
        f"`fastinfl.PoissonRegression(l2={L2:g})`. For each of the {N_TEST_POINTS} test points",
        f"with the highest test loss (the Poisson negative log-likelihood), the {N_TRAIN_POINTS} training",
        "points with the largest |influence| are removed one at a time and the model refitted",
        "(`fastinfl.loo_retrain`); the actual change of that test loss against `loo_change` first order",
        "(`correction=\"none\", loss=\"linear\"`, = -I) and Newton-corrected (`correction=\"newton\"`,",
        "the default exact loss).",
        "",
        f"n_train = {shape[0]}, n_test = {shape[1]}, d = {shape[2]}",
        "",
        "| test point (index in test split) | y | test loss | r none | r newton | max abs err none "
        "| max abs err newton |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in range(N_TEST_POINTS):
        a, u, w = f["actual"][t], f["none"][t], f["newton"][t]
        lines.append(f"| {f['test_idx'][t]} | {int(f['test_y'][t])} | {f['test_loss'][t]:.2f} | {pearson(u, a):.4f} "
                     f"| {pearson(w, a):.4f} | {np.max(np.abs(u - a)):.3g} | {np.max(np.abs(w - a)):.3g} |")
    a, u, w = f["actual"], f["none"], f["newton"]
    lines.append(f"| **pooled** | | | {pearson(u, a):.4f} | {pearson(w, a):.4f} | {np.max(np.abs(u - a)):.3g} "
                 f"| {np.max(np.abs(w - a)):.3g} |")
    lines += ["", f"Largest |actual change|: {np.max(np.abs(a)):.3g}.", "",
              "The model is a loss of `fastinfl.losses` on the shared layer (docs/architecture.md): the same",
              "kernels, solvers and quantities as the logistic model. Its fit equals statsmodels' `GLM(family=",
              "Poisson())` and scikit-learn's `PoissonRegressor` (alpha = l2 / n), and its leverage statsmodels'",
              "hat matrix and Cook's distance (tests/test_poisson.py).", "",
              "Regenerate: `python docs/make_validation_poisson.py`; `tests/test_poisson.py` asserts the pooled r.",
              ""]
    return "\n".join(lines)


def main():
    sys.path.insert(0, str(ROOT))
    X_train, y_train, X_test, y_test = poisson_case()
    text = render(figure2(X_train, y_train, X_test, y_test), (len(y_train), len(y_test), X_train.shape[1]))
    if "--stdout" in sys.argv[1:]:
        sys.stdout.write(text)
    else:
        (ROOT / "docs" / "validation_poisson.md").write_text(text)


if __name__ == "__main__":
    main()
