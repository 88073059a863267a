"""Multinomial logistic regression: fit against scikit-learn, every influence quantity against the
explicit-Kronecker / pseudo-inverse reference, K = 2 against the binary model, the gauge, and errors."""

import warnings

import numpy as np
import pytest
from problems import assert_top_k_exact, numba_threads, parallel_loops, top_k_outputs

import fastinfl
from fastinfl import reference

L2 = 0.7
K = 4


def make_multiclass(n, d, K, seed=0, dtype=np.float64, scale=1.0):
    """Random non-separable K-class problem: X (n, d), codes y (n,) drawn from a softmax model."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * scale).astype(dtype)
    W = rng.standard_normal((K, d)) / np.sqrt(d)
    Z = X.astype(np.float64) @ W.T + rng.standard_normal(K) * 0.3
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(K, p=row) for row in P])
    return X, y


@pytest.fixture(scope="module")
def problem():
    X, y = make_multiclass(5000, 6, K, seed=21)  # 5000 rows: several row chunks in the parallel kernels
    X_test, y_test = make_multiclass(7, 6, K, seed=22)
    model = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)
    H = reference.mn_hessian(X, model.coef_, model.intercept_, l2=L2)
    return model, X, y, X_test, y_test, H


# ----------------------------------------------------------------------------------- fit
def _sklearn(X, y, C):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y)


def _centred(b):
    return b - b.mean()


@pytest.mark.parametrize("name", ["iris", pytest.param("digits", marks=pytest.mark.slow)])
def test_fit_matches_sklearn(name):
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    model = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    sk = _sklearn(X, y, 1.0)
    # Both solvers converge to max|grad| ~1e-12 n: the optimum agrees to ~1e-10 (cond(H) x gradient).
    np.testing.assert_allclose(model.coef_, sk.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(_centred(model.intercept_), _centred(sk.intercept_), rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.predict_proba(X), sk.predict_proba(X), rtol=0, atol=1e-9)
    assert model.converged_ and abs(model.intercept_.sum()) < 1e-9  # the minimum-norm representative
    assert (model.predict(X) == sk.predict(X)).all()
    assert model.score(X, y) == sk.score(X, y)


def test_fit_matches_reference_newton(problem):
    model, X, y, *_ = problem
    coef, intercept = reference.mn_fit(X, y, K, l2=L2)
    np.testing.assert_allclose(model.coef_, coef, rtol=0, atol=1e-10)  # both at max|grad| <= 1e-10 n
    np.testing.assert_allclose(model.intercept_, intercept, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.objective(X, y), reference.mn_objective(X, y, coef, intercept, L2),
                               rtol=1e-12)


def test_labels_of_any_type_map_to_classes():
    X, y = make_multiclass(300, 3, 3, seed=1)
    names = np.array(["cat", "dog", "emu"])
    m_str = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, names[y])
    m_int = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y * 10 - 7)
    assert m_str.classes_.tolist() == ["cat", "dog", "emu"] and m_int.classes_.tolist() == [-7, 3, 13]
    np.testing.assert_array_equal(m_str.coef_, m_int.coef_)
    assert (m_str.predict(X) == names[np.argmax(m_str.predict_proba(X), 1)]).all()
    a = fastinfl.Influence(m_str, X, names[y]).influence(X[:3], names[y[:3]])
    b = fastinfl.Influence(m_int, X, y * 10 - 7).influence(X[:3], y[:3] * 10 - 7)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="y_test holds labels \\['fox'\\]"):
        fastinfl.Influence(m_str, X, names[y]).influence(X[:1], ["fox"])


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_float32_data_matches_float64():
    X, y = make_multiclass(3000, 5, 3, seed=3)
    m64 = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X.astype(np.float32).astype(np.float64), y)
    m32 = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(m32.coef_, m64.coef_, rtol=0, atol=1e-11)  # same values, float64 sums
    i32 = fastinfl.Influence(m32, X.astype(np.float32), y).influence(X[:2], y[:2])
    i64 = fastinfl.Influence(m64, X.astype(np.float32).astype(np.float64), y).influence(X[:2], y[:2])
    np.testing.assert_allclose(i32, i64, rtol=1e-9, atol=1e-14)


# ------------------------------------------------------------------------- quantities
SOLVERS = [("direct", None), ("cg", None), ("auto", 3)]


@pytest.mark.parametrize("solver, batch_size", SOLVERS)
def test_quantities_match_reference(problem, solver, batch_size):
    model, X, y, X_test, y_test, H = problem
    b = model.intercept_
    inf = fastinfl.Influence(model, X, y, solver=solver, batch_size=batch_size)
    # direct: rounding (cond(H) ~ 1e2 x 1e-16); cg: relative residual 1e-10 x cond(H).
    tol = dict(rtol=1e-9, atol=1e-13) if inf.uses_direct else dict(rtol=1e-7, atol=1e-11)
    Hp = reference.mn_pinv(H)
    G = reference.mn_per_example_gradients(X, y, model.coef_, b)
    Gt = reference.mn_per_example_gradients(X_test, y_test, model.coef_, b)
    idx = np.array([0, 17, 4999, 2500, 17])
    np.testing.assert_allclose(inf.hessian(), H, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(inf.gradients(X_test, y_test), Gt, rtol=1e-12, atol=1e-15)
    V = np.random.default_rng(0).standard_normal((3, inf.n_params))
    np.testing.assert_allclose(inf.hvp(V), V @ H, rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(inf.s_test(X_test, y_test), Gt @ Hp, **tol)
    infl = reference.mn_influence(X, y, X_test, y_test, model.coef_, b, l2=L2)
    np.testing.assert_allclose(inf.influence(X_test, y_test), infl, **tol)
    np.testing.assert_allclose(inf.influence(X_test, y_test, idx), infl[:, idx], **tol)
    np.testing.assert_allclose(inf.params_change(idx), G[idx] @ Hp, **tol)
    np.testing.assert_allclose(inf.self_influence(idx), np.einsum("ij,jk,ik->i", G[idx], Hp, G[idx]), **tol)
    np.testing.assert_allclose(inf.leverage(idx), reference.mn_leverage(X[idx], model.coef_, H, b), **tol)
    np.testing.assert_allclose(inf.loo_change(X_test, y_test, idx, correction="none", loss="linear"),
                               -infl[:, idx], **tol)
    newton = reference.mn_newton_loo_change(X, y, X_test, y_test, model.coef_, idx, b, l2=L2)
    np.testing.assert_allclose(inf.loo_change(X_test, y_test, idx, correction="newton", loss="linear"), newton,
                               **tol)
    # loss="exact": the test cross-entropy re-evaluated at theta + dtheta_i (explicit pinv steps here).
    Xtil = reference.design(X)
    Pi = reference.mn_probabilities(X, model.coef_, b)
    theta = reference.mn_theta(model.coef_, b)
    for corr in ("none", "newton"):
        ref = np.empty((len(y_test), len(idx)))
        for j, i in enumerate(idx):
            Hi = np.kron(np.diag(Pi[i]) - np.outer(Pi[i], Pi[i]), np.outer(Xtil[i], Xtil[i]))
            step = (reference.mn_pinv(H - Hi) if corr == "newton" else Hp) @ G[i]
            t2 = theta + step.reshape(theta.shape)
            for t in range(len(y_test)):
                ref[t, j] = (reference.mn_objective(X_test[t:t + 1], y_test[t:t + 1], t2[:, :-1], t2[:, -1])
                             - reference.mn_objective(X_test[t:t + 1], y_test[t:t + 1], model.coef_, b))
        np.testing.assert_allclose(inf.loo_change(X_test, y_test, idx, correction=corr, loss="exact"), ref, **tol)
    # perturbation: the reference builds a (K p, d) Jacobian per point, so a 300-row model keeps it quick.
    small = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X[:300], y[:300])
    pert = reference.mn_perturbation(X[:300], y[:300], X_test, y_test, small.coef_, small.intercept_, l2=L2)
    sub = fastinfl.Influence(small, X[:300], y[:300], solver=solver, batch_size=batch_size)
    np.testing.assert_allclose(sub.perturbation(X_test, y_test, np.arange(0, 300, 7)), pert[:, ::7], **tol)
    top = inf.top_k(X_test, y_test, k=6)
    ref = reference.top_k(infl, 6)
    np.testing.assert_array_equal(top.helpful_idx, ref[0])
    np.testing.assert_array_equal(top.harmful_idx, ref[2])
    np.testing.assert_allclose(top.helpful, ref[1], **tol)
    np.testing.assert_allclose(top.harmful, ref[3], **tol)


def test_damping_makes_h_definite_and_matches_reference(problem):
    model, X, y, X_test, y_test, _ = problem
    inf = fastinfl.Influence(model, X, y, damping=0.3)
    ref = reference.mn_influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=L2, damping=0.3)
    np.testing.assert_allclose(inf.influence(X_test, y_test), ref, rtol=1e-9, atol=1e-13)


def test_no_intercept_and_l2_zero():
    # l2 = 0: H is singular along the whole shift 1_K (x) R^p (coefficients too), not only the intercepts.
    X, y = make_multiclass(400, 3, 3, seed=5)
    for fit_intercept, l2 in [(False, 0.5), (True, 0.0)]:
        m = fastinfl.MultinomialLogisticRegression(l2=l2, fit_intercept=fit_intercept).fit(X, y)
        coef, b = reference.mn_fit(X, y, 3, l2=l2, fit_intercept=fit_intercept)
        if l2 == 0.0:  # the reference centres only the intercepts
            coef = coef - coef.mean(0)
        np.testing.assert_allclose(m.coef_, coef, rtol=0, atol=1e-9)
        ref = reference.mn_influence(X, y, X[:4], y[:4], m.coef_, m.intercept_, l2=l2, fit_intercept=fit_intercept)
        for solver in ("direct", "cg"):
            got = fastinfl.Influence(m, X, y, solver=solver).influence(X[:4], y[:4])
            np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-11)


# ------------------------------------------------------------------------------- gauge
def test_gauge_shift_changes_nothing_and_solves_are_the_pseudo_inverse(problem):
    model, X, y, X_test, y_test, H = problem
    shifted = fastinfl.MultinomialLogisticRegression.from_params(model.coef_, model.intercept_ + 5.0, l2=L2)
    a = fastinfl.Influence(model, X, y).influence(X_test, y_test)
    b = fastinfl.Influence(shifted, X, y).influence(X_test, y_test)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    # Right-hand sides with a component along the null direction: H^+ V for direct and CG alike.
    V = np.random.default_rng(1).standard_normal((2, H.shape[0]))
    ref = V @ reference.mn_pinv(H)
    for solver in ("direct", "cg"):
        inf = fastinfl.Influence(model, X, y, solver=solver)
        np.testing.assert_allclose(inf.inverse_hvp(V), ref, rtol=1e-7, atol=1e-10)
        # CG does not drift along the null direction u = (0_d, 1) (x) 1_K: s_test stays orthogonal to it.
        S = inf.s_test(X_test, y_test).reshape(len(y_test), K, -1)
        assert np.abs(S[:, :, -1].sum(axis=1)).max() < 1e-12 * np.abs(S).max()
        # verify=True compares with numpy's inverse of the matrix the solvers use (H + c Pi_0): it agrees.
        checked = fastinfl.Influence(model, X, y, solver=solver, verify=True, verify_rtol=1e-7)
        np.testing.assert_allclose(checked.s_test(X_test, y_test), S.reshape(len(y_test), -1), rtol=1e-7,
                                   atol=1e-11)


def test_k2_equals_binary_model_at_half_l2():
    # softmax with K = 2 is sigma(z_1 - z_0); with l2 = 2 lam its optimum is w_1 = -w_0 = w / 2 of the
    # binary model at l2 = lam, and every influence quantity is the binary one (to rounding).
    from problems import make_problem

    lam = 0.4
    X, y = make_problem(n=600, d=5, seed=8)
    X_test, y_test = make_problem(n=6, d=5, seed=9)
    binm = fastinfl.LogisticRegression(l2=lam).fit(X, y)
    mult = fastinfl.MultinomialLogisticRegression(l2=2 * lam).fit(X, y)
    np.testing.assert_allclose(mult.coef_[1] - mult.coef_[0], binm.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mult.predict_proba(X), binm.predict_proba(X), rtol=0, atol=1e-12)
    for solver in ("direct", "cg"):
        bi = fastinfl.Influence(binm, X, y, solver=solver)
        mi = fastinfl.Influence(mult, X, y, solver=solver)
        tol = dict(rtol=1e-9, atol=1e-13) if solver == "direct" else dict(rtol=1e-7, atol=1e-11)
        np.testing.assert_allclose(mi.influence(X_test, y_test), bi.influence(X_test, y_test), **tol)
        np.testing.assert_allclose(mi.self_influence(), bi.self_influence(), **tol)
        np.testing.assert_allclose(mi.leverage(), bi.leverage(), **tol)
        for c in ("none", "newton"):
            for loss in ("linear", "exact"):
                np.testing.assert_allclose(mi.loo_change(X_test, y_test, correction=c, loss=loss),
                                           bi.loo_change(X_test, y_test, correction=c, loss=loss), **tol)
        np.testing.assert_allclose(mi.perturbation(X_test, y_test), bi.perturbation(X_test, y_test), **tol)
        tb, tm = bi.top_k(X_test, y_test, k=5), mi.top_k(X_test, y_test, k=5)
        np.testing.assert_array_equal(tm.harmful_idx, tb.harmful_idx)
        np.testing.assert_array_equal(tm.helpful_idx, tb.helpful_idx)
        # params_change: theta_k = (-1)^(k+1) theta_binary / 2 changes by the same halves
        pc = mi.params_change(np.arange(5)).reshape(5, 2, -1)
        np.testing.assert_allclose(pc[:, 1] - pc[:, 0], bi.params_change(np.arange(5)), **tol)


# ------------------------------------------------------------------------------ groups
def _explicit_group_step(X, y, model, H, S, newton):
    """pinv(H - H_S) g_S (newton) or pinv(H) g_S: the explicit K p Hessian, the gauge by pseudo-inverse."""
    G = reference.mn_per_example_gradients(X[S], y[S], model.coef_, model.intercept_)
    Pi = reference.mn_probabilities(X[S], model.coef_, model.intercept_)
    Xs = reference.design(X[S])
    H_S = sum(np.kron(np.diag(Pi[i]) - np.outer(Pi[i], Pi[i]), np.outer(Xs[i], Xs[i])) for i in range(len(S)))
    return reference.mn_pinv(H - H_S if newton else H) @ G.sum(axis=0)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_group_change_matches_explicit_downdate(problem, solver):
    model, X, y, X_test, y_test, H = problem
    inf = fastinfl.Influence(model, X, y, solver=solver)
    groups = [np.array([3]), np.array([1, 4, 9]), np.arange(20, 60)]  # Woodbury (|S| < p = 7) and refactor
    theta = reference.mn_theta(model.coef_, model.intercept_)
    Gt = reference.mn_per_example_gradients(X_test, y_test, model.coef_, model.intercept_)
    tol = dict(rtol=1e-9, atol=1e-13) if solver == "direct" else dict(rtol=1e-7, atol=1e-11)
    for corr in ("none", "newton"):
        steps = [_explicit_group_step(X, y, model, H, S, corr == "newton") for S in groups]
        linear = np.column_stack([Gt @ s for s in steps])  # first order in the test loss
        exact = np.column_stack([
            [reference.mn_objective(X_test[t:t + 1], y_test[t:t + 1], *_split(theta + s.reshape(theta.shape)))
             - reference.mn_objective(X_test[t:t + 1], y_test[t:t + 1], model.coef_, model.intercept_)
             for t in range(len(y_test))] for s in steps])
        np.testing.assert_allclose(inf.group_change(X_test, y_test, groups, correction=corr, loss="linear"),
                                   linear, **tol)
        np.testing.assert_allclose(inf.group_change(X_test, y_test, groups, correction=corr, loss="exact"),
                                   exact, **tol)
    # first order is the sum of the members' influences; labels give the same groups as index lists
    labels = np.full(len(y), -1)
    labels[[1, 4, 9]] = 0
    labels[[100, 200]] = 5
    I = inf.influence(X_test, y_test)
    np.testing.assert_allclose(inf.group_change(X_test, y_test, labels, correction="none", loss="linear"),
                               np.column_stack([-I[:, [1, 4, 9]].sum(1), -I[:, [100, 200]].sum(1)]), **tol)


def _split(theta):
    return theta[:, :-1], theta[:, -1]


def test_group_steps_converge_to_the_refit():
    X, y = make_multiclass(150, 3, 3, seed=12)
    X_test, y_test = make_multiclass(5, 3, 3, seed=13)
    m = fastinfl.MultinomialLogisticRegression(l2=0.5).fit(X, y)
    groups = [np.array([7]), np.array([2, 40, 90]), np.arange(100, 140)]
    actual = fastinfl.loo_retrain(m, X, y, None, X_test, y_test, groups=groups)
    # loo_retrain with groups against an independent NumPy refit without each group
    c0, b0 = reference.mn_fit(X, y, 3, l2=0.5)
    for g, S in enumerate(groups):
        keep = np.setdiff1d(np.arange(150), S)
        coef, b = reference.mn_fit(X[keep], y[keep], 3, l2=0.5)
        ref = [reference.mn_objective(X_test[t:t + 1], y_test[t:t + 1], coef, b)
               - reference.mn_objective(X_test[t:t + 1], y_test[t:t + 1], c0, b0) for t in range(5)]
        np.testing.assert_allclose(actual[:, g], ref, rtol=1e-8, atol=1e-12)
    for solver in ("direct", "cg"):
        inf = fastinfl.Influence(m, X, y, solver=solver)
        got = inf.group_change(X_test, y_test, groups, steps=6)
        np.testing.assert_allclose(got, actual, rtol=1e-6, atol=1e-10)  # Newton's quadratic convergence
        assert (inf.group_decrements_[:, -1] < 1e-8).all()
        one = inf.group_change(X_test, y_test, groups)  # one Newton step: closer than first order
        first = inf.group_change(X_test, y_test, groups, correction="none")
        assert np.abs(one - actual).max() < np.abs(first - actual).max()


# ------------------------------------------------------------------------ conversions
def test_from_sklearn_multinomial_and_binary():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    X, y = load_iris(return_X_y=True)
    sk = _sklearn(X, y, 2.0)
    m = fastinfl.MultinomialLogisticRegression.from_sklearn(sk)
    assert m.l2 == 0.5 and m.converged_ is None
    np.testing.assert_allclose(m.predict_proba(X), sk.predict_proba(X), rtol=0, atol=1e-13)
    skb = _sklearn(X, y == 1, 2.0)
    mb = fastinfl.MultinomialLogisticRegression.from_sklearn(skb)
    assert mb.l2 == 1.0 and mb.classes_.tolist() == [False, True]
    np.testing.assert_allclose(mb.predict_proba(X), skb.predict_proba(X), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="one-vs-rest"):
        fastinfl.MultinomialLogisticRegression.from_sklearn(OneVsRestClassifier(LogisticRegression()).fit(X, y))
    with pytest.raises(ValueError, match="liblinear"):
        fastinfl.MultinomialLogisticRegression.from_sklearn(LogisticRegression(solver="liblinear").fit(X, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's convergence / deprecation chatter
        l1 = LogisticRegression(l1_ratio=1.0, solver="saga", max_iter=50).fit(X, y)
    with pytest.raises(ValueError, match="L2 penalty"):
        fastinfl.MultinomialLogisticRegression.from_sklearn(l1)


def test_loo_retrain_matches_reference_refit():
    X, y = make_multiclass(120, 3, 3, seed=11)
    m = fastinfl.MultinomialLogisticRegression(l2=0.5).fit(X, y)
    got = fastinfl.loo_retrain(m, X, y, [3, 50], X[:4], y[:4])
    for j, i in enumerate([3, 50]):
        keep = np.arange(120) != i
        coef, b = reference.mn_fit(X[keep], y[keep], 3, l2=0.5)
        c0, b0 = reference.mn_fit(X, y, 3, l2=0.5)
        for t in range(4):
            ref = (reference.mn_objective(X[t:t + 1], y[t:t + 1], coef, b)
                   - reference.mn_objective(X[t:t + 1], y[t:t + 1], c0, b0))
            np.testing.assert_allclose(got[t, j], ref, rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------------------- compilation
@pytest.mark.slow  # compiles every multinomial kernel from scratch (~45 s)
def test_each_multinomial_kernel_compiles_once():
    """Row bounds and chunk limits reach the kernels as int64, never as Literal[int] (a second compile).

    Runs without Numba's disk cache (FASTINFL_CACHE=0): a kernel loaded from the cache does not
    compile its callees, so their signatures would not show. Both driver branches run (one row
    chunk at n = 300, several at n = 6000), with the direct and the CG solver.
    """
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import numba, numpy as np, fastinfl
        from fastinfl.kernels import dense, multinomial as mk
        rng = np.random.default_rng(0)
        for n in (300, 6000):
            X = rng.standard_normal((n, 4)); y = rng.integers(0, 3, n)
            m = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
            m.predict_proba(X); m.losses(X, y)
            for solver in ("direct", "cg"):
                inf = fastinfl.Influence(m, X, y, solver=solver)
                inf.influence(X[:3], y[:3]); inf.top_k(X[:3], y[:3], k=3); inf.gradients(X[:3], y[:3])
                inf.hvp(np.ones((2, inf.n_params))); inf.loo_change(X[:2], y[:2], [0, 1])
        kernels = {name: f for name, f in vars(mk).items()
                   if isinstance(f, numba.core.registry.CPUDispatcher) and f.__module__ == mk.__name__}
        kernels["dense._chunk_count"] = dense._chunk_count
        for name, f in sorted(kernels.items()):
            print(name, len(f.signatures))
    """)
    env = dict(os.environ, FASTINFL_CACHE="0")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    counts = dict(line.split() for line in out.splitlines())
    assert len(counts) >= 20 and "_hessian_rows" in counts and "_top_k_rows" in counts
    assert {name: c for name, c in counts.items() if c not in ("0", "1")} == {}  # 0: the Dask block entry points


# ----------------------------------------------------------------------------- errors
def test_separable_data_without_l2_raise():
    X = np.array([[0.0], [1.0], [5.0], [6.0], [10.0], [11.0]])
    y = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(fastinfl.ConvergenceError, match="separable"):
        fastinfl.MultinomialLogisticRegression(l2=0.0).fit(X, y)
    fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)  # fine with a penalty


def test_bad_input_names_the_argument():
    X, y = make_multiclass(50, 2, 3, seed=2)
    with pytest.raises(ValueError, match="y holds only one class"):
        fastinfl.MultinomialLogisticRegression().fit(X, np.zeros(50))
    with pytest.raises(ValueError, match="y has 49 labels"):
        fastinfl.MultinomialLogisticRegression().fit(X, y[:49])
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        fastinfl.MultinomialLogisticRegression(l2=-1).fit(X, y)
    m = fastinfl.MultinomialLogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="X_train has 3 features but the model has 2"):
        fastinfl.Influence(m, np.ones((5, 3)), y[:5])
    with pytest.raises(ValueError, match="coef must be 2-D"):
        fastinfl.MultinomialLogisticRegression.from_params(np.ones(3))
    with pytest.raises(ValueError, match="not fitted"):
        fastinfl.Influence(fastinfl.MultinomialLogisticRegression(), X, y)


@pytest.mark.slow  # compiles every multinomial driver afresh (parfor diagnostics need a non-cached build)
def test_multinomial_drivers_have_no_parallel_loop_besides_their_prange():
    """As for the binary drivers (tests/test_kernels.py): an array expression in a parallel=True kernel is
    its own thread-pool launch, costly on a busy machine even on the serial path."""
    from fastinfl.kernels import multinomial as mk

    rng = np.random.default_rng(0)
    n, d, K, k, m = 40, 3, 3, 2, 2
    p = d + 1
    P = K * p
    X = rng.standard_normal((n, d))
    y = rng.integers(0, K, n).astype(np.int64)
    Theta = rng.standard_normal((K, p))
    Pi = np.full((n, K), 1.0 / K)
    R = rng.standard_normal((n, K))
    S = rng.standard_normal((m, P))
    stop = np.zeros(1, np.uint8)
    calls = {
        "_mn_logits": (X, Theta, np.empty((n, K)), stop),
        "_mn_per_example_grads": (X, y, Theta, np.empty((n, P)), stop),
        "_mn_loss_grad": (X, y, Theta, np.empty((K, p)), np.empty((n, K)), stop),
        "_mn_hessian": (X, Pi, np.ones(P), np.empty((P, P)), stop),
        "_mn_hvp": (X, Pi, np.ones(P), np.ones((k, P)), np.empty((k, P)), stop),
        "_mn_influence": (X, R, S, np.arange(n), np.empty((m, n)), stop),
        "_mn_top_k": (X, R, S, np.empty((m, 2)), np.empty((m, 2), np.int64), np.empty((m, 2)),
                      np.empty((m, 2), np.int64), stop),
    }
    for name, args in calls.items():
        loops = parallel_loops(getattr(mk, name), *args)
        assert loops == 1, (name, loops)


@pytest.mark.parametrize("threads", [1, 2])
def test_mn_top_k_kernel_exact_across_chunks_and_heap_groups(threads):
    """Duplicated rows in far-apart chunks (ties to the smaller index), one pair of heaps per thread,
    the per-block offer: the multinomial kernel against a stable argsort of the exact product."""
    from fastinfl.kernels import multinomial as _mn

    rng = np.random.default_rng(6)
    n, d, K, m, k = 10_000, 10, 3, 6, 5
    X = rng.integers(-3, 4, (n, d)).astype(np.float64)  # small integers: exact sums, exact ties
    X = np.vstack([X, X[::-1]])
    R = rng.integers(-2, 3, (n, K)).astype(np.float64)
    R = np.vstack([R, R[::-1]])
    S = rng.integers(-3, 4, (m, K * (d + 1))).astype(np.float64)
    outs = top_k_outputs(m, k)
    with numba_threads(threads):
        _mn._mn_top_k(X, R, S, *outs, np.zeros(1, np.uint8))
    Xt = np.hstack([X, np.ones((2 * n, 1))])
    assert_top_k_exact(outs, -np.stack([np.einsum("ia,ap,ip->i", R, S[t].reshape(K, d + 1), Xt)
                                        for t in range(m)]), k)
