"""Influence against the direct-inverse reference."""

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl import reference


@pytest.fixture(scope="module")
def fitted():
    X, y = make_problem(n=1500, d=7, seed=11)
    X_test, y_test = make_problem(n=25, d=7, seed=12)
    model = fastinfl.LogisticRegression(l2=0.8).fit(X, y)
    return model, X, y, X_test, y_test


@pytest.mark.parametrize("solver", ["direct", "cg", "auto"])
@pytest.mark.parametrize("damping", [0.0, 2.0])
def test_influence_matches_reference(fitted, solver, damping):
    model, X, y, X_test, y_test = fitted
    inf = fastinfl.Influence(model, X, y, solver=solver, damping=damping)
    expected = reference.influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=0.8,
                                   damping=damping)
    # direct: rounding only (1e-10); cg: relative residual 1e-10 times cond(H) ~ 1e2 (1e-7).
    rtol = 1e-7 if inf.solver == "cg" else 1e-10
    np.testing.assert_allclose(inf.influence(X_test, y_test), expected, rtol=rtol,
                               atol=rtol * 1e-2 * np.abs(expected).max())


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_s_test_and_inverse_hvp(fitted, solver):
    model, X, y, X_test, y_test = fitted
    inf = fastinfl.Influence(model, X, y, solver=solver)
    H = reference.hessian(X, model.coef_, model.intercept_, l2=0.8)
    G = reference.per_example_gradients(X_test, y_test, model.coef_, model.intercept_)
    expected = reference.inverse_hvp(H, G)
    rtol = 1e-7 if solver == "cg" else 1e-10  # CG: tol 1e-10 times cond(H); direct: rounding
    np.testing.assert_allclose(inf.s_test(X_test, y_test), expected, rtol=rtol, atol=rtol * 1e-3)
    np.testing.assert_allclose(inf.inverse_hvp(G[3]), expected[3], rtol=rtol, atol=rtol * 1e-3)
    assert inf.inverse_hvp(G[3]).shape == (8,)


def test_influence_float32(fitted):
    model, X, y, X_test, y_test = fitted
    X32 = X.astype(np.float32)
    m32 = fastinfl.LogisticRegression(l2=0.8).fit(X32, y)
    got = fastinfl.Influence(m32, X32, y, solver="cg").influence(X_test.astype(np.float32), y_test)
    expected = reference.influence(X32, y, X_test.astype(np.float32), y_test, m32.coef_, m32.intercept_,
                                   l2=0.8)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())


def test_influence_train_idx_selects_columns(fitted):
    model, X, y, X_test, y_test = fitted
    inf = fastinfl.Influence(model, X, y)
    full = inf.influence(X_test, y_test)
    idx = np.array([5, 0, 1499, -1, 5])  # negative counts from the end; duplicates repeat columns
    # Same dot products; BLAS may order a length-8 sum differently in another block shape.
    np.testing.assert_allclose(inf.influence(X_test, y_test, train_idx=idx), full[:, [5, 0, 1499, 1499, 5]],
                               rtol=1e-13, atol=1e-17)
    np.testing.assert_allclose(inf.influence(X_test, y_test, train_idx=7), full[:, [7]], rtol=1e-13,
                               atol=1e-17)


@pytest.mark.parametrize(
    "idx, match",
    [([0, 1500], "train_idx holds 1500, out of range for 1500"), ([-1501], "out of range"),
     ([0.0, 1.0], "train_idx must hold integer indices; got dtype float64"),
     (np.ones(1500, bool), "boolean array"), ([[1, 2]], "must be 1-D")],
)
def test_influence_bad_train_idx(fitted, idx, match):
    model, X, y, X_test, y_test = fitted
    with pytest.raises(ValueError, match=match):
        fastinfl.Influence(model, X, y).influence(X_test, y_test, train_idx=idx)


def test_verify_passes_and_catches_inaccurate_solves(fitted):
    model, X, y, X_test, y_test = fitted
    good = fastinfl.Influence(model, X, y, solver="cg", verify=True)
    good.s_test(X_test, y_test)  # CG at tol 1e-10 agrees with the explicit inverse
    sloppy = fastinfl.Influence(model, X, y, solver="cg", tol=1e-2, verify=True)
    with pytest.raises(fastinfl.VerificationError, match="differs from numpy's direct inverse"):
        sloppy.s_test(X_test, y_test)


def test_hvp_shapes_and_errors(fitted):
    model, X, y, _, _ = fitted
    inf = fastinfl.Influence(model, X, y)
    assert inf.hvp(np.ones(8)).shape == (8,) and inf.hvp(np.ones((3, 8))).shape == (3, 8)
    with pytest.raises(ValueError, match=r"V must have shape \(8,\) or \(k, 8\); got \(7,\)"):
        inf.hvp(np.ones(7))
    with pytest.raises(ValueError, match="V contains NaN or inf \\(first at row 1\\)"):
        inf.inverse_hvp(np.vstack([np.ones(8), np.full(8, np.inf)]))


def test_hessian_is_cached_and_returned_as_copy(fitted):
    model, X, y, _, _ = fitted
    inf = fastinfl.Influence(model, X, y)
    H = inf.hessian()
    H[0, 0] = -1e9
    assert inf.hessian()[0, 0] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"solver": "newton"}, "solver must be one of 'auto', 'direct', 'cg', 'lissa', 'arnoldi'; got 'newton'"),
     ({"damping": -1.0}, "damping must be >= 0"), ({"tol": 0}, "tol must be > 0"),
     ({"max_iter": 0}, "max_iter must be >= 1")],
)
def test_influence_bad_arguments(fitted, kwargs, match):
    model, X, y, _, _ = fitted
    with pytest.raises(ValueError, match=match):
        fastinfl.Influence(model, X, y, **kwargs)


def test_influence_bad_data(fitted):
    model, X, y, X_test, y_test = fitted
    with pytest.raises(ValueError, match="X_train has 6 features but the model has 7"):
        fastinfl.Influence(model, X[:, :6], y)
    with pytest.raises(ValueError, match="y_train must hold labels 0 and 1"):
        fastinfl.Influence(model, X, y * 2)
    inf = fastinfl.Influence(model, X, y)
    with pytest.raises(ValueError, match="X_test has 5 features but the model has 7"):
        inf.influence(X_test[:, :5], y_test)
    bad = X_test.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="X_test contains NaN or inf \\(first at row 4\\)"):
        inf.s_test(bad, y_test)


def test_stationarity_warning_only_off_optimum(fitted):
    model, X, y, _, _ = fitted
    off = fastinfl.LogisticRegression.from_params(model.coef_ + 0.01, model.intercept_, l2=0.8)
    with pytest.warns(fastinfl.StationarityWarning, match="not a stationary point"):
        fastinfl.Influence(off, X, y)
    fastinfl.Influence(model, X, y)  # at the optimum: no warning (warnings are errors in tests)


@pytest.mark.slow  # compiles another dtype/layout variant of every kernel (~15 s cold): the slow tier, run by CI too
def test_inputs_not_modified(fitted):
    model, X, y, X_test, y_test = fitted
    arrays = [a.copy() for a in (X, y, X_test, y_test)]
    for a in (X, y, X_test, y_test):
        a.setflags(write=False)
    try:
        fastinfl.Influence(model, X, y, solver="cg").influence(X_test, y_test)
    finally:
        for a in (X, y, X_test, y_test):
            a.setflags(write=True)
    for a, b in zip(arrays, (X, y, X_test, y_test), strict=True):
        np.testing.assert_array_equal(a, b)
