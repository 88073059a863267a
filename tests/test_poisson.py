"""PoissonRegression: the third model, one loss on the shared layer, against statsmodels, scikit-learn and refits.

The conformance grid (test_grid.py) checks every quantity on every kind of data
and solver against the NumPy reference; this file checks the model itself
against independent implementations and the influence against actual refits.
"""

import numpy as np
import pytest
import scipy.sparse
import scipy.stats

import fastinfl


def _counts(n=300, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    coef = np.linspace(-0.4, 0.5, d)
    y = rng.poisson(np.exp(X @ coef + 0.3)).astype(float)
    return X, y


def test_fit_equals_statsmodels_glm_at_l2_zero():
    sm = pytest.importorskip("statsmodels.api")
    X, y = _counts()
    m = fastinfl.PoissonRegression(l2=0.0).fit(X, y)
    ref = sm.GLM(y, sm.add_constant(X, prepend=False), family=sm.families.Poisson()).fit(tol=1e-13)
    np.testing.assert_allclose(m.params_, ref.params, rtol=1e-9, atol=1e-12)
    assert m.converged_


def test_fit_equals_sklearn_poisson_regressor():
    """sklearn minimises mean deviance / 2 + alpha/2 ||w||^2, so l2 = n alpha; D^2 is its score."""
    from sklearn.linear_model import PoissonRegressor

    X, y = _counts()
    alpha = 0.05
    sk = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=10000, solver="newton-cholesky").fit(X, y)
    m = fastinfl.PoissonRegression(l2=alpha * X.shape[0]).fit(X, y)
    np.testing.assert_allclose(m.coef_, sk.coef_, rtol=1e-7, atol=1e-9)
    assert m.intercept_ == pytest.approx(sk.intercept_, rel=1e-7)
    np.testing.assert_allclose(m.predict(X), sk.predict(X), rtol=1e-7)
    assert m.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-7)


def test_leverage_and_cooks_distance_equal_statsmodels_influence():
    sm = pytest.importorskip("statsmodels.api")
    X, y = _counts(n=200, d=3, seed=1)
    m = fastinfl.PoissonRegression(l2=0.0, tol=1e-12).fit(X, y)
    glm = sm.GLM(y, sm.add_constant(X, prepend=False), family=sm.families.Poisson()).fit(tol=1e-13)
    sm_inf = glm.get_influence()
    h = fastinfl.Influence(m, X, y).leverage()
    np.testing.assert_allclose(h, sm_inf.hat_matrix_diag, rtol=1e-8, atol=1e-12)
    # Cook's distance from our leverage and Pearson residuals (dispersion 1, p parameters)
    mu = m.predict(X)
    pearson = (y - mu) / np.sqrt(mu)
    cooks = pearson**2 * h / (X.shape[1] + 1) / (1 - h) ** 2
    np.testing.assert_allclose(cooks, sm_inf.cooks_distance[0], rtol=1e-7)


def test_losses_are_the_negative_log_likelihood():
    X, y = _counts(n=50)
    m = fastinfl.PoissonRegression(l2=1.0).fit(X, y)
    np.testing.assert_allclose(m.losses(X, y), -scipy.stats.poisson.logpmf(y, m.predict(X)), rtol=1e-12)
    # the objective leaves out the constant log(y!)
    z = m.linear_predictor(X)
    assert m.objective(X, y) == pytest.approx(np.sum(np.exp(z) - y * z) + 0.5 * np.dot(m.coef_, m.coef_), rel=1e-13)


def test_newton_loo_matches_actual_refits():
    X, y = _counts(n=120, d=3, seed=2)
    X_test, y_test = X[:5], y[:5]
    m = fastinfl.PoissonRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(m, X, y)
    idx = np.argsort(-inf.self_influence())[:15]  # the points whose removal matters most
    actual = fastinfl.loo_retrain(m, X, y, idx, X_test, y_test)
    newton = inf.loo_change(X_test, y_test, idx, correction="newton")
    first = inf.loo_change(X_test, y_test, idx, correction="none", loss="linear")
    r_newton = np.corrcoef(newton.ravel(), actual.ravel())[0, 1]
    r_first = np.corrcoef(first.ravel(), actual.ravel())[0, 1]
    assert r_newton > 0.999 and r_newton >= r_first, (r_newton, r_first)
    np.testing.assert_allclose(newton, actual, rtol=0.05, atol=0.02 * np.abs(actual).max())


def test_sparse_equals_dense():
    X, y = _counts(n=80, d=5, seed=3)
    X[np.abs(X) < 0.7] = 0.0
    m = fastinfl.PoissonRegression(l2=0.5).fit(X, y)
    ms = fastinfl.PoissonRegression(l2=0.5).fit(scipy.sparse.csr_matrix(X), y)
    np.testing.assert_allclose(ms.params_, m.params_, rtol=1e-12, atol=1e-14)
    dense = fastinfl.Influence(m, X, y).influence(X[:3], y[:3])
    sparse = fastinfl.Influence(m, scipy.sparse.csr_matrix(X), y).influence(X[:3], y[:3])
    np.testing.assert_allclose(sparse, dense, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(("y_bad", "message"), [
    (-1.0, r"y must hold non-negative finite counts; found \[-1.0\] \(first at row 4\)"),
    (np.nan, r"y contains NaN or inf \(first at row 4\)"),
])
def test_bad_counts_are_refused_naming_the_row(y_bad, message):
    X, y = _counts(n=20)
    y[4] = y_bad
    with pytest.raises(ValueError, match=message):
        fastinfl.PoissonRegression().fit(X, y)


def test_all_zero_counts_with_an_intercept_have_no_minimum():
    X, _ = _counts(n=20)
    with pytest.raises(ValueError, match="y is 0 everywhere"):
        fastinfl.PoissonRegression().fit(X, np.zeros(20))
    m = fastinfl.PoissonRegression(fit_intercept=False, l2=1.0).fit(X, np.zeros(20))  # l2 > 0: a minimum
    assert np.isfinite(m.coef_).all()


def test_influence_accepts_counts_above_one():
    """Counts above 1 are valid Poisson labels: Influence and the test points accept them."""
    X, y = _counts(n=60)
    assert y.max() > 1
    m = fastinfl.PoissonRegression(l2=1.0).fit(X, y)
    I = fastinfl.Influence(m, X, y).influence(X[:2], y[:2])
    assert I.shape == (2, 60) and np.isfinite(I).all()


def test_save_load_round_trip(tmp_path):
    """A Poisson state comes back as a PoissonRegression, verified against the data, answering the same."""
    X, y = _counts(n=80)
    m = fastinfl.PoissonRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(m, X, y)
    want = inf.influence(X[:3], y[:3])
    inf.save(tmp_path / "p.npz")
    back = fastinfl.Influence.load(tmp_path / "p.npz", X, y)
    assert type(back.model) is fastinfl.PoissonRegression
    np.testing.assert_allclose(back.influence(X[:3], y[:3]), want, rtol=1e-10)
    with pytest.raises(fastinfl.StateError):
        fastinfl.Influence.load(tmp_path / "p.npz", X, y + 1.0)


def test_validation_figures_on_real_counts():
    """docs/validation_poisson.md's figures (statsmodels' randhie visits): Newton-corrected LOO against refits."""
    pytest.importorskip("statsmodels")
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "docs"))
    from make_validation_poisson import figure2, pearson, poisson_case

    f = figure2(*poisson_case())
    assert pearson(f["newton"], f["actual"]) >= 0.999  # measured 0.9996
    assert pearson(f["none"], f["actual"]) >= 0.995  # measured 0.9982
    assert np.abs(f["newton"] - f["actual"]).max() < np.abs(f["none"] - f["actual"]).max()
