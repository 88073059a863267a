"""Property-based tests (hypothesis) on random well-posed problems.

What holds exactly for duplicated training points: two identical rows get the
same influence on every test point (to rounding), and ``top_k`` lists the
smaller index first. Adding a duplicate refits the model, so the other points'
influences change and their ranking may change too; nothing more is promised.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastinfl
from fastinfl import reference

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


@st.composite
def problems(draw):
    """A fitted model on random non-separable data: (model, X, y, X_test, y_test)."""
    n = draw(st.integers(30, 300))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    l2 = draw(st.sampled_from([0.1, 1.0, 10.0]))
    fit_intercept = draw(st.booleans())
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + 5, d)) * rng.uniform(0.3, 3.0, size=d)
    y = (rng.random(n + 5) < 0.5).astype(np.int64)  # labels independent of X: never separable in practice
    model = fastinfl.LogisticRegression(l2=l2, fit_intercept=fit_intercept).fit(X[:n], y[:n])
    return model, X[:n], y[:n], X[n:], y[n:]


@SETTINGS
@given(problems())
def test_cg_equals_direct_equals_reference(problem):
    model, X, y, X_test, y_test = problem
    ref = reference.influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=model.l2,
                              fit_intercept=model.fit_intercept)
    scale = np.abs(ref).max()
    for solver in ("direct", "cg"):
        got = fastinfl.Influence(model, X, y, solver=solver).influence(X_test, y_test)
        # CG: relative residual 1e-10 times cond(H) <= ~1e4 here
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9 * scale)


@SETTINGS
@given(problems(), st.integers(1, 5))
def test_batch_size_invariance(problem, batch_size):
    model, X, y, X_test, y_test = problem
    for solver in ("direct", "cg"):
        a = fastinfl.Influence(model, X, y, solver=solver, batch_size=batch_size).s_test(X_test, y_test)
        b = fastinfl.Influence(model, X, y, solver=solver).s_test(X_test, y_test)
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12 * np.abs(b).max())


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_row_order_invariance(problem, rnd):
    model, X, y, X_test, y_test = problem
    perm = np.array(rnd.sample(range(len(y)), len(y)))
    base = fastinfl.Influence(model, X, y).influence(X_test, y_test)
    permuted = fastinfl.Influence(model, X[perm], y[perm]).influence(X_test, y_test)
    np.testing.assert_allclose(permuted, base[:, perm], rtol=1e-10, atol=1e-14 * np.abs(base).max())


@SETTINGS
@given(problems())
def test_float32_data_match_float64_of_same_values(problem):
    model, X, y, X_test, y_test = problem
    X32, Xt32 = X.astype(np.float32), X_test.astype(np.float32)
    X64, Xt64 = X32.astype(np.float64), Xt32.astype(np.float64)  # the very same values
    m32 = fastinfl.LogisticRegression(l2=model.l2, fit_intercept=model.fit_intercept).fit(X32, y)
    m64 = fastinfl.LogisticRegression(l2=model.l2, fit_intercept=model.fit_intercept).fit(X64, y)
    # float64 accumulation in both: only summation order differs
    np.testing.assert_allclose(m32.params_, m64.params_, rtol=1e-9, atol=1e-12)
    a = fastinfl.Influence(m32, X32, y).influence(Xt32, y_test)
    b = fastinfl.Influence(m64, X64, y).influence(Xt64, y_test)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12 * np.abs(b).max())


@SETTINGS
@given(problems(), st.data())
def test_train_idx_selects_columns_and_self_influence_is_minus_diagonal(problem, data):
    model, X, y, X_test, y_test = problem
    inf = fastinfl.Influence(model, X, y)
    idx = np.array(data.draw(st.lists(st.integers(0, len(y) - 1), min_size=1, max_size=20)))
    full = inf.influence(X_test, y_test)
    np.testing.assert_allclose(inf.influence(X_test, y_test, idx), full[:, idx], rtol=1e-12,
                               atol=1e-15 * np.abs(full).max())
    diag = np.diag(inf.influence(X[idx], y[idx], idx))
    np.testing.assert_allclose(inf.self_influence(idx), -diag, rtol=1e-10, atol=1e-15)


@SETTINGS
@given(problems(), st.integers(1, 30))
def test_top_k_equals_full_argsort(problem, k):
    model, X, y, X_test, y_test = problem
    k = min(k, len(y))
    inf = fastinfl.Influence(model, X, y)
    got = inf.top_k(X_test, y_test, k=k)
    full = inf.influence(X_test, y_test)
    low, low_v, high, high_v = reference.top_k(full, k)
    # values are the same dot products (BLAS may order them differently): compare values tightly,
    # and indices wherever the k-th value is not tied with the (k+1)-th within rounding
    np.testing.assert_allclose(got.helpful, low_v, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(got.harmful, high_v, rtol=1e-12, atol=1e-16)
    for idx, ref in ((got.helpful_idx, low_v), (got.harmful_idx, high_v)):
        picked = np.where(idx >= 0, np.take_along_axis(full, np.maximum(idx, 0), 1), np.nan)  # -1: padding
        np.testing.assert_allclose(picked, ref, rtol=1e-12, atol=1e-16)


@SETTINGS
@given(problems(), st.data())
def test_hvp_linear_symmetric_positive(problem, data):
    model, X, y, _, _ = problem
    inf = fastinfl.Influence(model, X, y)
    p = inf.n_params
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    u, v = rng.standard_normal((2, p))
    a, b = rng.standard_normal(2)
    Hu, Hv = inf.hvp(u), inf.hvp(v)
    np.testing.assert_allclose(inf.hvp(a * u + b * v), a * Hu + b * Hv, rtol=1e-10,
                               atol=1e-10 * (np.abs(Hu).max() + np.abs(Hv).max()))
    assert abs(u @ Hv - v @ Hu) <= 1e-10 * (np.abs(u @ Hv) + 1e-300) + 1e-12 * np.linalg.norm(Hu)
    assert v @ Hv > 0  # l2 > 0 on coef and the data term on the intercept: positive definite


@SETTINGS
@given(problems(), st.data())
def test_duplicate_rows_share_influence(problem, data):
    model, X, y, X_test, y_test = problem
    j = data.draw(st.integers(0, len(y) - 1))
    X2, y2 = np.vstack([X, X[j]]), np.append(y, y[j])
    m2 = fastinfl.LogisticRegression(l2=model.l2, fit_intercept=model.fit_intercept).fit(X2, y2)
    inf = fastinfl.Influence(m2, X2, y2)
    full = inf.influence(X_test, y_test)
    np.testing.assert_allclose(full[:, j], full[:, -1], rtol=1e-12, atol=1e-16)
    top = inf.top_k(X_test, y_test, k=len(y2))
    for t in range(len(y_test)):
        # the tied pair sits in the list of its sign (helpful < 0, harmful > 0)
        pos = list(top.helpful_idx[t] if full[t, j] < 0 else top.harmful_idx[t])
        if full[t, j] == full[t, -1] and full[t, j] != 0:  # an exact tie: the smaller index comes first
            assert pos.index(j) < pos.index(len(y2) - 1)
