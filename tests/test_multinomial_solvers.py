"""Multinomial model with every solver of issue 23 (PCG with Jacobi and Nystrom, LiSSA on all rows and on row
samples, Arnoldi at ranks that meet the gauge), from_sklearn with training data, and what save/load keeps."""

import warnings

import numpy as np
import pytest

import fastinfl
from fastinfl import reference

L2 = 1.0


@pytest.fixture(scope="module")
def issue():
    """The issue's shape: K = 3, d = 5, P = 18 (gauge of dimension 1: the intercepts' common shift)."""
    rng = np.random.default_rng(23)
    X = rng.standard_normal((200, 5)) * np.array([1.0, 3.0, 0.3, 1.0, 10.0])  # spread diagonal for Jacobi
    y = rng.integers(0, 3, 200)
    Xt, yt = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
    m = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)
    H = reference.mn_hessian(X, m.coef_, m.intercept_, l2=L2)
    infl = reference.mn_influence(X, y, Xt, yt, m.coef_, m.intercept_, l2=L2)
    return m, X, y, Xt, yt, H, infl


def rel(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


def intercept_means(S, K=3, p=6):
    """(m,) the class mean of each row's intercept coordinate: the component along the gauge direction."""
    return np.abs(S.reshape(-1, K, p)[:, :, -1].mean(axis=1))


@pytest.mark.parametrize("kw", [dict(preconditioner="jacobi"), dict(preconditioner="nystrom"),
                                dict(preconditioner="nystrom", rank=3, seed=7)], ids=["jacobi", "nystrom", "nystrom-3"])
def test_pcg_matches_pinv_and_stays_off_the_gauge(issue, kw):
    m, X, y, Xt, yt, H, infl = issue
    inf = fastinfl.Influence(m, X, y, solver="cg", tol=1e-12, **kw)
    assert rel(inf.influence(Xt, yt), infl) < 1e-9
    S = inf.s_test(Xt, yt)
    assert rel(S, reference.mn_per_example_gradients(Xt, yt, m.coef_, m.intercept_) @ reference.mn_pinv(H)) < 1e-9
    assert intercept_means(S).max() < 1e-12 * np.abs(S).max()


def test_jacobi_diagonal_is_averaged_over_the_classes(issue):
    m, X, y, *_, H, _ = issue
    D = fastinfl.Influence(m, X, y, solver="cg", preconditioner="jacobi")._hess.diagonal().reshape(3, 6)
    np.testing.assert_allclose(D, np.tile(np.diag(H).reshape(3, 6).mean(axis=0), (3, 1)), rtol=1e-12)


@pytest.fixture(scope="module")
def strong(issue):
    """The issue's data at l2 = 50: a dominant ridge (cond(H) ~ 20), where LiSSA converges in few steps."""
    _, X, y, Xt, yt, *_ = issue
    m = fastinfl.MultinomialLogisticRegression(l2=50.0).fit(X, y)
    return m, reference.mn_influence(X, y, Xt, yt, m.coef_, m.intercept_, l2=50.0)


def test_lissa_full_hessian_matches_pinv(issue, strong):
    _, X, y, Xt, yt, *_ = issue
    m, infl = strong
    inf = fastinfl.Influence(m, X, y, solver="lissa", tol=1e-11)
    assert rel(inf.influence(Xt, yt), infl) < 1e-8
    assert intercept_means(inf.s_test(Xt, yt)).max() < 1e-14


def test_row_sampled_hessian_is_exact_on_its_rows(issue):
    """hvp_rows (stochastic LiSSA's HVP) against the explicit Kronecker sum over the sampled rows."""
    m, X, y, *_ = issue
    inf = fastinfl.Influence(m, X, y)
    V = np.random.default_rng(0).standard_normal((3, 18))
    idx = np.array([5, 5, 17, 150])
    A = reference.design(X[idx])
    Pi = reference.mn_probabilities(X[idx], m.coef_, m.intercept_)
    Hs = sum(np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(a, a)) for a, pi in zip(A, Pi, strict=True))
    ridge = np.tile(np.r_[np.full(5, L2), 0.0], 3)
    want = inf._hess.project(V @ (2.5 * Hs) + V * ridge)
    np.testing.assert_allclose(inf._hess.hvp_rows(idx, V, 2.5), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inf._hess.hvp_rows(np.arange(200), V), inf.hvp(V), rtol=1e-12, atol=1e-12)


def test_lissa_on_row_samples_reaches_its_tolerance(issue, strong):
    """Issue 23: lissa_batch_size raised a raw matmul error (the binary row-sample HVP)."""
    _, X, y, Xt, yt, *_ = issue
    m, infl = strong
    inf = fastinfl.Influence(m, X, y, solver="lissa", lissa_batch_size=100, lissa_repetitions=4, lissa_depth=300,
                             tol=0.5, seed=1)
    got = inf.influence(Xt, yt)  # row sampling leaves a residual of ~0.2 here (measured); LiSSA is approximate
    assert inf.solver_.residual_.max() <= 0.5
    assert rel(got, infl) < 0.3


def test_arnoldi_rank_counts_the_identifiable_space(issue):
    """rank 14 of P = 18 runs (issue 23: SingularHessianError); ranks 17 and 18 span every gradient: exact."""
    m, X, y, Xt, yt, _, infl = issue
    approx = fastinfl.Influence(m, X, y, solver="arnoldi", rank=14)
    I14 = approx.influence(Xt, yt)
    assert approx.solver_.factor()[0].shape[1] == 14 and np.isfinite(I14).all()
    for rank in (17, 18):
        inf = fastinfl.Influence(m, X, y, solver="arnoldi", rank=rank, seed=4)
        assert rel(inf.influence(Xt, yt), infl) < 1e-9
        U = inf.solver_.factor()[0]
        # At most P - dim(gauge) = 17: the gauge has no eigenvalue to invert. (16 here: the class-sum directions
        # 1_K (x) e_j, eigenvalue l2 of multiplicity 5, hold no gradient; a Lanczos block of 4 finds 4 of them.)
        assert U.shape[1] <= 17
        assert intercept_means(U.T).max() < 1e-12


def test_from_sklearn_refits_on_training_data():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    fit = fastinfl.MultinomialLogisticRegression(l2=0.5).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's convergence chatter at its default tol
        sk = LogisticRegression(C=2.0, max_iter=30).fit(X, y)
    loose = fastinfl.MultinomialLogisticRegression.from_sklearn(sk)
    assert loose.converged_ is None and np.abs(loose.coef_ - fit.coef_).max() > 1e-6  # sklearn stops early
    m = fastinfl.MultinomialLogisticRegression.from_sklearn(sk, X, y)
    assert m.converged_ and m.l2 == 0.5
    np.testing.assert_allclose(m.coef_, fit.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(m.intercept_, fit.intercept_, rtol=0, atol=1e-8)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=2.0)).fit(X, y)
    mp = fastinfl.MultinomialLogisticRegression.from_sklearn(pipe, X, y)
    Xs = mp.feature_transform_.transform(X)
    np.testing.assert_allclose(mp.coef_, fastinfl.MultinomialLogisticRegression(l2=0.5).fit(Xs, y).coef_,
                               rtol=0, atol=1e-8)
    skb = LogisticRegression(C=2.0).fit(X, y == 2)
    mb = fastinfl.MultinomialLogisticRegression.from_sklearn(skb, X, y == 2)  # K = 2 at l2 = 2 / C
    np.testing.assert_allclose(mb.coef_, fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y == 2).coef_,
                               rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match=r"y holds the classes \[0, 1\] but the estimator was fitted on \[0, 1, 2\]"):
        fastinfl.MultinomialLogisticRegression.from_sklearn(sk, X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="y is required with X"):
        fastinfl.MultinomialLogisticRegression.from_sklearn(sk, X)


def test_device_cpu_accepted_unknown_device_refused_by_name(issue):
    """device="cuda" runs the multinomial model on the GPU: tests/test_cuda.py (simulator; without a GPU, the
    ImportError naming the extra, in a subprocess so that this process never imports numba.cuda)."""
    m, X, y, Xt, yt, _, infl = issue
    assert rel(fastinfl.Influence(m, X, y, device="cpu").influence(Xt, yt), infl) < 1e-9
    with pytest.raises(ValueError, match=r"device must be None, 'cpu' or 'cuda'; got 'gpu'\."):
        fastinfl.Influence(m, X, y, device="gpu")


def test_save_load_keeps_every_solver_setting(issue, tmp_path):
    m, X, y, Xt, yt, _, infl = issue
    settings = dict(solver="cg", preconditioner="nystrom", rank=3, seed=7, tol=1e-11, max_iter=77)
    lissa = dict(solver="lissa", lissa_depth=500, lissa_scale=40.0, lissa_repetitions=2, lissa_batch_size=50,
                 seed=5, tol=0.5)
    for kw in (settings, lissa):
        fastinfl.Influence(m, X, y, **kw).save(tmp_path / "state.npz")
        back = fastinfl.Influence.load(tmp_path / "state.npz", X, y)
        assert {k: getattr(back, k) for k in kw} == kw
