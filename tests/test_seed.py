"""The seed notebook's numbers are a test: influences 0.000104, 0.228624, -0.225480 (direct inverse and CG
alike) at w* = 6.872478, b* = -10.066114. The notebook is the project's seed, kept outside this repository."""

import numpy as np
import pytest

import fastinfl


@pytest.mark.parametrize("solver", ["direct", "cg", "auto"])
def test_influence_seed_table(solver):
    X, y, X_test, y_test = fastinfl.datasets.seed()
    w, b = fastinfl.datasets.seed_fit()
    # The seed's own gradient descent (lr 0.1, 2000 steps from zero).
    np.testing.assert_allclose([w, b], [6.872478, -10.066114], atol=5e-7)
    model = fastinfl.LogisticRegression.from_params([w], b, l2=0.0)
    with pytest.warns(fastinfl.StationarityWarning, match=r"\|\|grad F\|\| = 0.0178"):
        inf = fastinfl.Influence(model, X, y, solver=solver)
    infl = inf.influence(X_test, y_test)
    assert infl.shape == (1, 3)
    # The notebook prints 6 decimals: the table must match to 1e-6.
    np.testing.assert_allclose(infl[0], [0.000104, 0.228624, -0.225480], atol=1e-6)
    # And the direct-inverse reference agrees to rounding.
    ref = fastinfl.reference.influence(X, y, X_test, y_test, [w], b)
    np.testing.assert_allclose(infl, ref, rtol=1e-10, atol=1e-14)


def test_fit_seed_separable_raises():
    X, y, _, _ = fastinfl.datasets.seed()
    with pytest.raises(fastinfl.ConvergenceError, match="linearly separable.*l2 > 0"):
        fastinfl.LogisticRegression(l2=0.0).fit(X, y)


def test_fit_seed_with_l2_is_stationary():
    X, y, X_test, y_test = fastinfl.datasets.seed()
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    grad = fastinfl.reference.gradient(X, y, model.coef_, model.intercept_, l2=1.0)
    assert np.max(np.abs(grad)) < 1e-12  # far below the stationarity threshold: no warning
    infl = fastinfl.Influence(model, X, y).influence(X_test, y_test)
    ref = fastinfl.reference.influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=1.0)
    np.testing.assert_allclose(infl, ref, rtol=1e-10)
