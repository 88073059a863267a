"""Every influence quantity against fastinfl.reference, for every solver; top_k against argsort."""

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl import reference

L2 = 0.7


@pytest.fixture(scope="module")
def problem():
    X, y = make_problem(n=5000, d=6, seed=21)  # 3 row chunks in the parallel kernels
    X_test, y_test = make_problem(n=9, d=6, seed=22)
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    H = reference.hessian(X, model.coef_, model.intercept_, l2=L2)
    return model, X, y, X_test, y_test, H


SOLVERS = [("direct", None), ("cg", None), ("auto", None), ("cg", 2), ("direct", 3)]


@pytest.mark.parametrize("solver, batch_size", SOLVERS)
def test_quantities_match_reference(problem, solver, batch_size):
    model, X, y, X_test, y_test, H = problem
    inf = fastinfl.Influence(model, X, y, solver=solver, batch_size=batch_size)
    G = reference.per_example_gradients(X, y, model.coef_, model.intercept_)
    idx = np.array([0, 17, 4999, 2500, 17])
    # direct: rounding (1e-10); cg: relative residual 1e-10 times cond(H) (~10 here), so 1e-7 has margin.
    tol = dict(rtol=1e-10, atol=1e-15) if inf.uses_direct else dict(rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(inf.params_change(idx), reference.params_change(H, G[idx]), **tol)
    np.testing.assert_allclose(inf.self_influence(idx), reference.self_influence(H, G[idx]), **tol)
    lev = reference.leverage(X[idx], model.coef_, H, model.intercept_)
    np.testing.assert_allclose(inf.leverage(idx), lev, **tol)
    infl = reference.influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=L2)[:, idx]
    np.testing.assert_allclose(inf.loo_change(X_test, y_test, idx, correction="none", loss="linear"),
                               reference.loo_change(infl), **tol)
    np.testing.assert_allclose(inf.loo_change(X_test, y_test, idx, correction="newton", loss="linear"),
                               reference.loo_change(infl, lev), **tol)
    pert = reference.perturbation(X, y, X_test, y_test, model.coef_, model.intercept_, l2=L2)[:, idx, :]
    np.testing.assert_allclose(inf.perturbation(X_test, y_test, idx), pert, **tol)


def test_self_influence_is_minus_diagonal_of_train_influence(problem):
    model, X, y, _, _, _ = problem
    inf = fastinfl.Influence(model, X, y)
    rows = np.arange(0, 5000, 250)
    diag = np.diag(inf.influence(X[rows], y[rows], train_idx=rows))
    np.testing.assert_allclose(inf.self_influence(rows), -diag, rtol=1e-12)


def test_perturbation_matches_finite_difference_refits():
    X, y = make_problem(n=120, d=3, seed=5)
    X_test, y_test = make_problem(n=2, d=3, seed=6)
    model = fastinfl.LogisticRegression(l2=1.0, tol=1e-14).fit(X, y)
    pert = fastinfl.Influence(model, X, y).perturbation(X_test, y_test, train_idx=[4, 77])
    eps = 1e-5
    for col, i in enumerate([4, 77]):
        for j in range(3):
            losses = []
            for sign in (1, -1):
                Xp = X.copy()
                Xp[i, j] += sign * eps
                refit = fastinfl.LogisticRegression(l2=1.0, tol=1e-14).fit(Xp, y, init_params=model.params_)
                losses.append(reference.objective(X_test, y_test, refit.coef_, refit.intercept_))
            fd = (losses[0] - losses[1]) / (2 * eps)
            # central difference O(eps^2) plus refit error ~1e-14/eps: 1e-6 relative is safe
            np.testing.assert_allclose(pert[:, col, j].sum(), fd, rtol=1e-6, atol=1e-9)


def test_loo_change_newton_closer_to_refit_than_first_order():
    X, y = make_problem(n=150, d=3, seed=8)
    X_test, y_test = make_problem(n=3, d=3, seed=9)
    model = fastinfl.LogisticRegression(l2=0.5).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    hardest = np.argsort(-inf.self_influence())[:10]  # where first-order errors are largest
    for idx in (np.arange(10), hardest):
        actual = fastinfl.loo_retrain(model, X, y, idx, X_test, y_test)
        err_newton = np.abs(inf.loo_change(X_test, y_test, idx, correction="newton") - actual)
        err_plain = np.abs(inf.loo_change(X_test, y_test, idx, correction="none") - actual)
        # measured: mean errors 2.4e-4 vs 3.7e-4 (typical rows), 2.9e-3 vs 4.2e-3 (hardest rows)
        assert err_newton.mean() < 0.8 * err_plain.mean()
        assert err_newton.max() < err_plain.max()
        assert err_newton.max() < 0.1 * np.abs(actual).max()


@pytest.mark.parametrize("k", [1, 4, 5000])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_top_k_equals_full_argsort(problem, k, batch_size):
    model, X, y, X_test, y_test, _ = problem
    inf = fastinfl.Influence(model, X, y, batch_size=batch_size)
    got = inf.top_k(X_test, y_test, k=k)
    assert isinstance(got, fastinfl.TopK) and got.helpful.shape == (9, k)
    low, low_v, high, high_v = reference.top_k(inf.influence(X_test, y_test), k)
    np.testing.assert_array_equal(got.helpful_idx, low)
    np.testing.assert_array_equal(got.harmful_idx, high)
    # the same dot products, but BLAS may order the length-7 sums differently per block shape
    np.testing.assert_allclose(got.helpful, low_v, rtol=1e-13, atol=1e-18)
    np.testing.assert_allclose(got.harmful, high_v, rtol=1e-13, atol=1e-18)


def test_top_k_ties_go_to_smaller_index():
    X, y = make_problem(n=6000, d=4, seed=3)
    X = np.vstack([X, X[:50]])  # exact duplicates in another row chunk: indices i and 6000 + i
    y = np.concatenate([y, y[:50]])
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    X_test, y_test = make_problem(n=4, d=4, seed=4)
    got = inf.top_k(X_test, y_test, k=60)
    low, _, high, _ = reference.top_k(inf.influence(X_test, y_test), 60)
    np.testing.assert_array_equal(got.helpful_idx, low)
    np.testing.assert_array_equal(got.harmful_idx, high)


@pytest.mark.parametrize("k, match", [(0, "k must be >= 1"), (5001, "k must be <= the number of training "
                                                                    "points \\(5000\\)"),
                                      (2.0, "k must be an integer")])
def test_top_k_bad_k(problem, k, match):
    model, X, y, X_test, y_test, _ = problem
    with pytest.raises(ValueError, match=match):
        fastinfl.Influence(model, X, y).top_k(X_test, y_test, k=k)


def test_results_beyond_memory_limit_are_refused(problem):
    model, X, y, X_test, y_test, _ = problem
    inf = fastinfl.Influence(model, X, y, memory_limit=100_000)
    with pytest.raises(ValueError, match=r"influence would be .*\(9, 5000\) needing .*top_k\(\).*train_idx"):
        inf.influence(X_test, y_test)
    assert inf.influence(X_test, y_test, train_idx=np.arange(1000)).shape == (9, 1000)
    with pytest.raises(ValueError, match=r"params_change would be .*\(5000, 7\)"):
        inf.params_change()
    with pytest.raises(ValueError, match=r"perturbation would be .*\(9, 5000, 6\)"):
        inf.perturbation(X_test, y_test)
    assert inf.top_k(X_test, y_test, k=3).helpful.shape == (9, 3)  # streamed: within the bound
    with pytest.raises(ValueError, match=r"solver='direct': the dense Hessian of 7 parameters needs .* GiB, more than "
                                         r"memory_limit"):
        fastinfl.Influence(model, X, y, solver="direct", memory_limit=300)
    cg = fastinfl.Influence(model, X, y, solver="cg", memory_limit=300)
    with pytest.raises(ValueError, match=r"the Hessian would be .*\(7, 7\).*solver='cg'"):
        cg.hessian()
    assert cg.inverse_hvp(np.ones(7)).shape == (7,)  # CG never forms H
    auto = fastinfl.Influence(model, X, y, memory_limit=300)  # H (392 bytes) does not fit: auto takes CG
    np.testing.assert_allclose(auto.inverse_hvp(np.ones(7)), cg.inverse_hvp(np.ones(7)), rtol=1e-9)
    with pytest.raises(ValueError, match=r"gradients would be .*\(5000, 7\) needing 0.267 MiB"):
        inf.gradients()


def test_batch_size_does_not_change_results(problem):
    model, X, y, X_test, y_test, _ = problem
    results = [fastinfl.Influence(model, X, y, solver="cg", batch_size=b).s_test(X_test, y_test)
               for b in (1, 4, None)]
    # batched CG steps each column with its own scalars: identical up to the HVP's summation path
    np.testing.assert_allclose(results[0], results[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-9, atol=1e-12)


def test_bad_correction(problem):
    model, X, y, X_test, y_test, _ = problem
    with pytest.raises(ValueError, match="correction must be one of 'none', 'newton'"):
        fastinfl.Influence(model, X, y).loo_change(X_test, y_test, correction="exact")
