"""Validation against ground truth: leave-one-out refits (Koh & Liang, Figure 2), an independent
numpy refit, and statsmodels' hat matrix.

``docs/make_validation.py`` imports :func:`load_case` and :func:`figure2` from here, so the figures
in ``docs/validation.md`` are the ones these tests check.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl import reference

L2 = 1.0
N_TEST_POINTS = 3  # the test points with the highest test loss
N_TRAIN_POINTS = 40  # per test point, the training points with the largest |influence|


# ----------------------------------------------------------------------------- data
def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)


def _digits_1_vs_7():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    keep = (y == 1) | (y == 7)
    return X[keep], (y[keep] == 7).astype(np.int64)


LOADERS = {"breast_cancer": _breast_cancer, "digits_1_vs_7": _digits_1_vs_7}


def load_case(name):
    """Deterministic ~80/20 split (permutation with seed 0), columns constant on the training split
    dropped, standardised with the training mean and std. Returns X_train, y_train, X_test, y_test."""
    X, y = LOADERS[name]()
    X = np.asarray(X, dtype=np.float64)
    perm = np.random.default_rng(0).permutation(X.shape[0])
    n_train = int(round(0.8 * X.shape[0]))
    tr, te = perm[:n_train], perm[n_train:]
    sd = X[tr].std(axis=0)
    X = X[:, sd > 0]
    X = (X - X[tr].mean(axis=0)) / sd[sd > 0]
    return X[tr], y[tr], X[te], y[te]


# ------------------------------------------------------------------------ Figure 2
@dataclass
class Figure2:
    n_train: int
    n_test: int
    d: int
    test_idx: np.ndarray  # (3,) indices into the test split, highest test loss first
    test_y: np.ndarray  # (3,)
    test_loss: np.ndarray  # (3,)
    train_idx: np.ndarray  # (3, 40) per test point, by decreasing |influence|
    none: np.ndarray  # (3, 40) predicted loss change, correction="none" (= -I)
    newton: np.ndarray  # (3, 40) predicted loss change, correction="newton" (= -I / (1 - h))
    actual: np.ndarray  # (3, 40) loo_retrain
    leverage: np.ndarray  # (3, 40)


def figure2(X_train, y_train, X_test, y_test, n_test=N_TEST_POINTS, k=N_TRAIN_POINTS):
    model = fastinfl.LogisticRegression(l2=L2).fit(X_train, y_train)
    inf = fastinfl.Influence(model, X_train, y_train)
    p = model.predict_proba(X_test)[:, 1]
    loss = -np.log(np.where(y_test == 1, p, 1.0 - p))
    worst = np.argsort(-loss, kind="stable")[:n_test]
    infl = inf.influence(X_test[worst], y_test[worst])
    idx = np.argsort(-np.abs(infl), axis=1, kind="stable")[:, :k]
    none, newton, actual, lev = (np.empty((n_test, k)) for _ in range(4))
    for t in range(n_test):
        Xt, yt = X_test[worst[t:t + 1]], y_test[worst[t:t + 1]]
        none[t] = inf.loo_change(Xt, yt, idx[t], correction="none", loss="linear")[0]
        newton[t] = inf.loo_change(Xt, yt, idx[t], correction="newton", loss="linear")[0]
        actual[t] = fastinfl.loo_retrain(model, X_train, y_train, idx[t], Xt, yt)[0]
        lev[t] = inf.leverage(idx[t])
    return Figure2(X_train.shape[0], X_test.shape[0], X_train.shape[1], worst, y_test[worst],
                   loss[worst], idx, none, newton, actual, lev)


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def max_rel_err(pred, actual):
    return float(np.max(np.abs(pred - actual) / np.abs(actual)))


@dataclass
class Expect:
    min_r_pooled: float  # Newton-corrected Pearson r over the 3 x 40 points
    min_r_each: float  # Newton-corrected Pearson r for every test point on its own
    newton_beats_none_each: bool  # Newton's r above the uncorrected r for every test point too


# Thresholds sit a little below the measured values (docs/validation.md), which are deterministic:
# they guard against regressions; the maths gives no sharper bound, because what Newton's one step
# misses is the third-order change of the curvature along the removal path, which is data-dependent.
EXPECT = {
    # Measured: pooled 0.9895, per point 0.9957 / 0.9935 / 0.9796 (uncorrected: 0.9849, 0.9812 /
    # 0.9891 / 0.9856). Not 0.99: the largest errors come from one confidently misclassified training
    # point (training row 206: residual 0.993, curvature 0.007, so h = 0.014 and 1/(1 - h) barely
    # helps), among the 40 for all three test points; removing it moves theta so far that one Newton
    # step misses 23% of the parameter change (checked against reference.fit): true nonlinearity.
    "breast_cancer": Expect(min_r_pooled=0.985, min_r_each=0.97, newton_beats_none_each=False),
    # Measured: pooled 0.9963, per point 0.9950 / 0.9974 / 0.9992 (uncorrected 0.9401 pooled).
    "digits_1_vs_7": Expect(min_r_pooled=0.99, min_r_each=0.99, newton_beats_none_each=True),
}


@pytest.fixture(scope="module", params=sorted(LOADERS))
def fig2(request):
    return request.param, figure2(*load_case(request.param))


def test_figure2_setup(fig2):
    name, f = fig2
    assert f.n_train + f.n_test == {"breast_cancer": 569, "digits_1_vs_7": 361}[name]
    # Removal predictions are only defined while every selected point has h_i < 1.
    assert np.all((f.leverage > 0) & (f.leverage < 1))
    # The 40 points are the most influential ones, so no actual change is near zero (relative
    # errors stay meaningful); measured minimum |actual| is 1e-3 (digits) and 1.6e-2 (cancer).
    assert np.min(np.abs(f.actual)) > 1e-4
    # Sign agreement: on the most influential points a first-order prediction gets the direction.
    assert np.all(np.sign(f.newton) == np.sign(f.actual))


def test_figure2_newton_correlation(fig2):
    name, f = fig2
    expect = EXPECT[name]
    assert pearson(f.newton, f.actual) > expect.min_r_pooled
    for t in range(N_TEST_POINTS):
        assert pearson(f.newton[t], f.actual[t]) > expect.min_r_each, t


def test_figure2_newton_beats_none(fig2):
    name, f = fig2
    # Dividing by 1 - h_i makes the prediction exact for the quadratic model without z_i (one full
    # Newton step, Sherman-Morrison) instead of keeping z_i's curvature in H: pooled, it must help.
    assert pearson(f.newton, f.actual) > pearson(f.none, f.actual)
    # The uncorrected prediction shrinks every change by the factor (1 - h_i) (h_i up to 0.77 here),
    # so its worst relative error is large; Newton's must be smaller, pooled and per test point.
    assert max_rel_err(f.newton, f.actual) < max_rel_err(f.none, f.actual)
    assert np.max(np.abs(f.newton - f.actual)) < np.max(np.abs(f.none - f.actual))
    for t in range(N_TEST_POINTS):
        assert max_rel_err(f.newton[t], f.actual[t]) < max_rel_err(f.none[t], f.actual[t]), t
        if EXPECT[name].newton_beats_none_each:
            assert pearson(f.newton[t], f.actual[t]) > pearson(f.none[t], f.actual[t]), t


# --------------------------------------------------- loo_retrain vs a brute-force refit
def _numpy_test_losses(X, y, coef, intercept):
    z = np.asarray(X, dtype=np.float64) @ coef + intercept
    return np.logaddexp(0.0, z) - y * z


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_loo_retrain_matches_numpy_refit(fit_intercept):
    X, y = make_problem(n=40, d=3, seed=1)
    X_test, y_test = make_problem(n=5, d=3, seed=2)
    l2 = 0.5
    model = fastinfl.LogisticRegression(l2=l2, fit_intercept=fit_intercept).fit(X, y)
    rows = np.array([0, 7, 19, 39])
    got = fastinfl.loo_retrain(model, X, y, rows, X_test, y_test)
    base = _numpy_test_losses(X_test, y_test, *reference.fit(X, y, l2=l2, fit_intercept=fit_intercept))
    for j, i in enumerate(rows):
        coef, b = reference.fit(np.delete(X, i, axis=0), np.delete(y, i), l2=l2, fit_intercept=fit_intercept)
        want = _numpy_test_losses(X_test, y_test, coef, b) - base
        # Both fits stop at max|grad F| <= 1e-12 n, so the parameters agree to ~1e-11 (H's smallest
        # eigenvalue here is > l2); the loss differences inherit that, far below 1e-9.
        np.testing.assert_allclose(got[:, j], want, rtol=0, atol=1e-9)


def test_newton_correction_is_one_exact_newton_step():
    """loo_change(correction="newton") = g_test . dtheta with dtheta the exact Newton step on F without
    z_i from theta (the inverse of the explicit H_{-i}, no Sherman-Morrison), to rounding."""
    X, y = make_problem(n=60, d=4, seed=3)
    X_test, y_test = make_problem(n=3, d=4, seed=4)
    model = fastinfl.LogisticRegression(l2=0.3).fit(X, y)
    pred = fastinfl.Influence(model, X, y).loo_change(X_test, y_test, correction="newton", loss="linear")
    coef, b = model.coef_, model.intercept_
    Xt = reference.design(X)
    z = Xt @ model.params_
    s = np.exp(-np.logaddexp(0.0, -z) - np.logaddexp(0.0, z))  # sigma(z) (1 - sigma(z))
    H = reference.hessian(X, coef, b, l2=0.3)
    G = reference.per_example_gradients(X, y, coef, b)
    G_test = reference.per_example_gradients(X_test, y_test, coef, b)
    for i in range(X.shape[0]):
        # grad F_{-i}(theta) = grad F(theta) - g_i = -g_i at the optimum, so the Newton step is
        # H_{-i}^-1 g_i with H_{-i} = H - s_i x~_i x~_i^T.
        step = np.linalg.solve(H - s[i] * np.outer(Xt[i], Xt[i]), G[i])
        np.testing.assert_allclose(pred[:, i], G_test @ step, rtol=1e-9, atol=1e-13)


# ------------------------------------------------------------ leverage vs statsmodels
def test_leverage_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    X, y = make_problem(n=300, d=4, seed=0)
    # IRLS is Newton's method for the canonical link: it converges quadratically, so tol=1e-13 on
    # the deviance is reached in a few iterations and leaves the parameters at ~1e-10.
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit(tol=1e-13, maxiter=100)
    assert res.converged
    want = res.get_influence().hat_matrix_diag  # constant first; h_i does not depend on column order
    model = fastinfl.LogisticRegression(l2=0.0).fit(X, y)
    np.testing.assert_allclose(model.params_, np.append(res.params[1:], res.params[0]), rtol=0, atol=1e-8)
    got = fastinfl.Influence(model, X, y).leverage()
    # Both fits are at the optimum to ~1e-10; h_i is smooth in theta; measured difference ~7e-12.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    # Unpenalised, the hat matrix is a projection onto the p = d + 1 columns: trace = p.
    assert got.sum() == pytest.approx(X.shape[1] + 1, abs=1e-8)
