"""PCG (Jacobi, Nystrom), LiSSA and Arnoldi against np.linalg.solve on ill-conditioned problems.

Tolerances: the exact solvers (PCG, deterministic LiSSA) stop at relative residual
tol, so their relative error is at most tol x cond(H) (asserted with a factor 10
for rounding); Arnoldi is compared with the exact truncated eigen-inverse it
approximates, and stochastic LiSSA with its own reported residual.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastinfl
from fastinfl import reference
from fastinfl.datasets import make_logistic
from fastinfl.model import ridge_diagonal
from fastinfl.operators import HessianOperator, Operator, as_operator
from fastinfl.solvers_iterative import PCG, Arnoldi, Jacobi, LiSSA, Nystrom, lanczos

TOL = 1e-10


def _problem(n=3000, d=15, rho=0.99, scales=None, l2=1.0, seed=1, fit_intercept=True):
    """Ill-conditioned data (AR(1) features, optionally scaled columns), fitted: (model, X, y, hess, H)."""
    X, y, _ = make_logistic(n, d, seed=seed, dtype=np.float64, correlation=rho)
    if scales is not None:
        X = X * scales
    model = fastinfl.LogisticRegression(l2=l2, fit_intercept=fit_intercept).fit(X, y)
    op = as_operator(X, y, fit_intercept)
    curv = op.curvature(op.margins(model.coef_, model.intercept_))
    hess = HessianOperator(op, curv, ridge_diagonal(d, fit_intercept, l2))
    H = reference.hessian(X, model.coef_, model.intercept_, l2=l2, fit_intercept=fit_intercept)
    return model, X, y, hess, H


@pytest.fixture(scope="module")
def correlated():
    return _problem()


@pytest.fixture(scope="module")
def badly_scaled():
    return _problem(rho=0.9, scales=np.logspace(-2, 1.5, 15))


def _cond(H):
    w = np.linalg.eigvalsh(H)
    return w[-1] / w[0]


def _rhs(p, k=6, seed=0):
    return np.random.default_rng(seed).standard_normal((k, p))


# ------------------------------------------------------------------ data
def test_make_logistic_correlation_zero_is_the_iid_data():
    a = make_logistic(3000, 7, seed=5)
    b = make_logistic(3000, 7, seed=5, correlation=0.0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_make_logistic_correlation_is_ar1():
    X, _, _ = make_logistic(40000, 6, seed=2, dtype=np.float64, correlation=0.9)
    C = np.corrcoef(X.T)
    lags = np.abs(np.subtract.outer(np.arange(6), np.arange(6)))
    # sampling error of a correlation at n = 40000: ~ (1 - rho^2) / sqrt(n) < 0.005
    np.testing.assert_allclose(C, 0.9**lags, atol=0.02)
    np.testing.assert_allclose(X.std(axis=0), 1.0, atol=0.02)


@pytest.mark.parametrize("rho", [1.0, -1.0, 1.5, np.nan, "0.5", True])
def test_make_logistic_bad_correlation(rho):
    with pytest.raises(ValueError, match="correlation"):
        make_logistic(10, 3, correlation=rho)


def test_correlation_makes_the_hessian_ill_conditioned():
    conds = [_cond(_problem(n=2000, d=20, rho=rho)[4]) for rho in (0.0, 0.99)]
    assert conds[0] < 10 and conds[1] > 1e3


# ------------------------------------------------------- operator passes
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n", [300, 9000])  # one chunk / parallel chunks
def test_hessian_diagonal_matches_reference(dtype, fit_intercept, n):
    X, y, _ = make_logistic(n, 9, seed=3, dtype=dtype, correlation=0.5)
    coef = np.linspace(-0.5, 0.5, 9)
    op = as_operator(X, y, fit_intercept)
    curv = op.curvature(op.margins(coef, 0.2))
    ridge = ridge_diagonal(9, fit_intercept, 0.7)
    H = reference.hessian(X.astype(np.float64), coef, 0.2, l2=0.7, fit_intercept=fit_intercept)
    # float64 accumulation of the same products: rounding only
    np.testing.assert_allclose(op.hessian_diagonal(curv, ridge), np.diag(H), rtol=1e-12)
    # the base-class fallback (rows() in blocks), used by kinds of data without a kernel
    np.testing.assert_allclose(Operator.hessian_diagonal(op, curv, ridge), np.diag(H), rtol=1e-12)


def test_hvp_rows_is_the_hessian_of_those_rows(correlated):
    _, X, _, hess, H = correlated
    V = _rhs(hess.n_params, 3)
    every = np.arange(hess.n_samples)
    np.testing.assert_allclose(hess.hvp_rows(every, V), hess.hvp(V), rtol=1e-10, atol=1e-10 * np.abs(H).max())
    idx = np.array([0, 5, 5, 17])
    A = hess.operator.rows(idx)
    w = hess.operator.weights(hess.curv, idx)
    expected = 2.5 * (V @ (A.T * w) @ A) + V * hess.ridge
    np.testing.assert_allclose(hess.hvp_rows(idx, V, 2.5), expected, rtol=1e-12)


def test_diagonal_uses_the_formed_hessian(correlated):
    _, _, _, hess, H = correlated
    fresh = HessianOperator(hess.operator, hess.curv, hess.ridge)
    fresh.hessian()
    np.testing.assert_allclose(fresh.diagonal(), np.diag(H), rtol=1e-12)


# -------------------------------------------------------------- Lanczos
@pytest.mark.parametrize("block", [1, 3, 8])
def test_lanczos_full_basis_gives_every_eigenpair(correlated, block):
    _, _, _, hess, H = correlated
    theta, U, m = lanczos(hess, 100, seed=0, block=block)
    assert m == hess.n_params
    # rank-p Rayleigh-Ritz on an orthonormal basis is exact up to rounding (x cond for the smallest)
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(H), rtol=1e-8)
    np.testing.assert_allclose(U.T @ U, np.eye(m), atol=1e-10)


def test_lanczos_top_eigenvalue_converges_first(correlated):
    _, _, _, hess, H = correlated
    theta, _, m = lanczos(hess, 8, seed=1, block=1)
    assert m == 8
    # eight Krylov vectors: the largest Ritz value is a lower bound within 1e-6 (gap ratio here ~ 3)
    assert theta[-1] <= np.linalg.eigvalsh(H)[-1] * (1 + 1e-12)
    np.testing.assert_allclose(theta[-1], np.linalg.eigvalsh(H)[-1], rtol=1e-6)


# ------------------------------------------------------ preconditioners
def test_jacobi_is_the_inverse_diagonal(badly_scaled):
    _, _, _, hess, H = badly_scaled
    R = _rhs(hess.n_params)
    np.testing.assert_allclose(Jacobi(hess).apply(R), R / np.diag(H), rtol=1e-12)


def test_nystrom_approximates_the_top_eigenpairs(correlated):
    _, _, _, hess, H = correlated
    M = Nystrom(hess, rank=6, seed=0)
    w = np.linalg.eigvalsh(H)[::-1]
    # Nystrom: H_nys <= H (Loewner), so lam_i <= lambda_i; a one-pass sketch of a decaying spectrum
    # gets the top one close (measured 1.4e-3 relative at rank 6)
    assert (M.lam <= w[:6] * (1 + 1e-10)).all()
    np.testing.assert_allclose(M.lam[0], w[0], rtol=1e-2)
    np.testing.assert_allclose(M.U.T @ M.U, np.eye(6), atol=1e-10)


def test_nystrom_full_rank_preconditioner_is_the_inverse(correlated):
    _, _, _, hess, H = correlated
    M = Nystrom(hess, rank=hess.n_params, seed=0)
    R = _rhs(hess.n_params)
    # M^-1 = lam_min H^-1 at full rank: the stable algorithm's shift perturbs it by ~ eps x cond
    expected = M.lam[-1] * np.linalg.solve(H, R.T).T
    np.testing.assert_allclose(M.apply(R), expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    x, n_iter, resid, status = PCG(hess, TOL, 50, M).run(R)
    assert (n_iter <= 3).all() and (status == 0).all()


def test_nystrom_adaptive_rank_within_bounds(correlated):
    _, _, _, hess, _ = correlated
    M = Nystrom(hess, seed=0)
    assert 1 <= M.rank <= hess.n_params and M.n_hvp >= M.rank


# ------------------------------------------------------------------ PCG
@pytest.mark.parametrize("preconditioner", [None, "jacobi", "nystrom", "auto"])
@pytest.mark.parametrize("case", ["correlated", "badly_scaled"])
def test_pcg_matches_solve(preconditioner, case, request):
    _, _, _, hess, H = request.getfixturevalue(case)
    B = _rhs(hess.n_params)
    solver = PCG(hess, TOL, 500, preconditioner)
    x = solver.solve(B)
    expected = np.linalg.solve(H, B.T).T
    cond = _cond(H)
    assert cond > 1e3
    assert (solver.residual_ <= TOL).all() and (solver.status_ == 0).all()
    true_resid = np.linalg.norm(B - x @ H, axis=1) / np.linalg.norm(B, axis=1)
    assert (true_resid <= 10 * TOL).all()  # recursive residual vs recomputed: rounding drift only
    err = np.abs(x - expected).max() / np.abs(expected).max()
    assert err <= 10 * TOL * cond


def test_preconditioners_cut_iterations(correlated, badly_scaled):
    B = _rhs(correlated[3].n_params)

    def iters(hess, prec):
        return PCG(hess, TOL, 500, prec).run(B)[1].max()

    assert iters(correlated[3], "nystrom") < iters(correlated[3], None)
    assert iters(badly_scaled[3], "jacobi") < iters(badly_scaled[3], None)


def test_pcg_batched_equals_one_at_a_time(correlated):
    _, _, _, hess, _ = correlated
    B = _rhs(hess.n_params, 9)
    solver = PCG(hess, TOL, 500, "nystrom")
    batch = solver.solve(B)
    single = np.vstack([solver.solve(B[i:i + 1]) for i in range(9)])
    # same arithmetic per column; the batched HVP may take its BLAS branch: rounding-level differences
    np.testing.assert_allclose(batch, single, rtol=1e-9, atol=1e-12 * np.abs(batch).max())


def test_pcg_columns_converge_on_their_own(correlated):
    _, _, _, hess, H = correlated
    w, V = np.linalg.eigh(H)
    B = np.vstack([V[:, -1], _rhs(hess.n_params, 1)[0], np.zeros(hess.n_params)])
    x, n_iter, resid, status = PCG(hess, TOL, 500, "jacobi").run(B)
    assert n_iter[2] == 0 and n_iter[1] > n_iter[0] >= 1 and (status == 0).all()
    np.testing.assert_array_equal(x[2], 0.0)


def test_pcg_max_iter_raises(correlated):
    _, _, _, hess, _ = correlated
    with pytest.raises(fastinfl.ConvergenceError, match=r"max_iter=2 .*relative residual \d"):
        PCG(hess, TOL, 2, "jacobi").solve(_rhs(hess.n_params))


def test_pcg_indefinite_hessian_raises():
    X, y, _ = make_logistic(500, 3, seed=4, dtype=np.float64)
    X[:, 2] = 0.0
    model = fastinfl.LogisticRegression.from_params([0.1, -0.2, 0.0], 0.1, l2=0.0)
    with pytest.warns(fastinfl.StationarityWarning):
        inf = fastinfl.Influence(model, X, y, solver="cg", preconditioner="nystrom", rank=2)
    with pytest.raises(fastinfl.SingularHessianError, match="damping"):
        inf.inverse_hvp(np.array([0.0, 0.0, 1.0, 0.0]))
    with pytest.warns(fastinfl.StationarityWarning):
        inf = fastinfl.Influence(model, X, y, solver="cg", preconditioner="jacobi")
    with pytest.raises(fastinfl.SingularHessianError, match="damping"):
        inf.inverse_hvp(np.array([0.0, 0.0, 1.0, 0.0]))


# ----------------------------------------------------------------- LiSSA
def test_lissa_deterministic_matches_solve():
    _, _, _, hess, H = _problem(rho=0.9)
    B = _rhs(hess.n_params, 4)
    solver = LiSSA(hess, 1e-8, depth=20000)
    x = solver.solve(B)
    cond = _cond(H)
    expected = np.linalg.solve(H, B.T).T
    assert (solver.residual_ <= 1e-8).all()
    true_resid = np.linalg.norm(B - x @ H, axis=1) / np.linalg.norm(B, axis=1)
    np.testing.assert_allclose(true_resid, solver.residual_, rtol=1e-4)  # the residual is recomputed, not updated
    assert np.abs(x - expected).max() / np.abs(expected).max() <= 10 * 1e-8 * cond
    # the stated cost: about (scale / lambda_min) log(1 / tol) steps, scale ~ lambda_max
    assert solver.n_iter_.max() <= 1.1 * cond * np.log(1e8)


def test_lissa_stochastic_reports_its_residual():
    _, _, _, hess, H = _problem(rho=0.9)
    B = _rhs(hess.n_params, 3)
    solver = LiSSA(hess, 0.5, depth=500, batch_size=300, repetitions=2, seed=3)
    x = solver.solve(B)
    true_resid = np.linalg.norm(B - x @ H, axis=1) / np.linalg.norm(B, axis=1)
    np.testing.assert_allclose(solver.residual_, true_resid, rtol=1e-8)
    assert (solver.n_iter_ == 1000).all()
    # measured at these settings: relative error 2-3% (the sampling noise floor); asserted with margin
    expected = np.linalg.solve(H, B.T).T
    assert np.abs(x - expected).max() / np.abs(expected).max() < 0.1
    # the same seed gives the same numbers
    np.testing.assert_array_equal(LiSSA(hess, 0.5, depth=500, batch_size=300, repetitions=2, seed=3).solve(B), x)


def test_lissa_raises_when_not_converged(correlated):
    _, _, _, hess, _ = correlated
    with pytest.raises(fastinfl.ConvergenceError, match="LiSSA did not converge.*lissa_depth"):
        LiSSA(hess, 1e-10, depth=50).solve(_rhs(hess.n_params))


def test_lissa_raises_on_divergence(correlated):
    _, _, _, hess, H = correlated
    small = 0.3 * np.linalg.eigvalsh(H)[-1]  # below lambda_max / 2: the recursion diverges
    with pytest.raises(fastinfl.ConvergenceError, match="diverged.*lissa_scale"):
        LiSSA(hess, 1e-10, depth=5000, scale=small).solve(_rhs(hess.n_params))


def test_lissa_estimated_scale_is_the_largest_eigenvalue(correlated):
    _, _, _, hess, H = correlated
    np.testing.assert_allclose(LiSSA(hess, 1e-8).scale_, np.linalg.eigvalsh(H)[-1], rtol=1e-6)


# --------------------------------------------------------------- Arnoldi
def test_arnoldi_full_rank_is_exact(correlated):
    _, _, _, hess, H = correlated
    B = _rhs(hess.n_params)
    x = Arnoldi(hess, rank=hess.n_params).solve(B)
    expected = np.linalg.solve(H, B.T).T
    # exact eigendecomposition up to rounding x cond(H) (~1e4)
    np.testing.assert_allclose(x, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def test_arnoldi_low_rank_is_the_truncated_eigen_inverse():
    _, _, _, hess, H = _problem(d=40, rho=0.99)
    w, V = np.linalg.eigh(H)
    B = _rhs(hess.n_params)
    solver = Arnoldi(hess, rank=5)
    x = solver.solve(B)
    U, lam = V[:, -5:], w[-5:]
    expected = (B @ U / lam) @ U.T
    # 30 Lanczos vectors for the top 5 pairs of a rapidly decaying spectrum: converged to ~1e-8
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(solver.residual_, np.linalg.norm(B - B @ U @ U.T, axis=1)
                               / np.linalg.norm(B, axis=1), rtol=1e-6)
    # and its error against the true solve is what it drops: far from exact
    full = np.linalg.solve(H, B.T).T
    assert np.abs(x - full).max() / np.abs(full).max() > 0.5


# ---------------------------------------------------- through Influence
SOLVER_SETTINGS = {
    "pcg-jacobi": dict(solver="cg", preconditioner="jacobi"),
    "pcg-nystrom": dict(solver="cg", preconditioner="nystrom"),
    "pcg-nystrom-rank3": dict(solver="cg", preconditioner="nystrom", rank=3),
    "auto-auto": dict(solver="auto", preconditioner="auto"),
    "lissa": dict(solver="lissa", tol=1e-9, lissa_depth=50000),
    "arnoldi-full": dict(solver="arnoldi", rank=16),
}


@pytest.mark.parametrize("name", list(SOLVER_SETTINGS))
def test_influence_matches_reference_with_verify(name):
    model, X, y, _, H = _problem(n=2000, d=15, rho=0.9)
    X_test, y_test, _ = make_logistic(5, 15, seed=9, dtype=np.float64, correlation=0.9)
    ref = reference.influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=model.l2)
    kwargs = SOLVER_SETTINGS[name]
    got = fastinfl.Influence(model, X, y, verify=True, **kwargs).influence(X_test, y_test)
    tol = kwargs.get("tol", 1e-10)
    np.testing.assert_allclose(got, ref, rtol=0, atol=10 * tol * _cond(H) * np.abs(ref).max())


def test_verify_catches_a_low_rank_arnoldi(correlated):
    model, X, y, _, _ = correlated
    inf = fastinfl.Influence(model, X, y, solver="arnoldi", rank=3, verify=True)
    with pytest.raises(fastinfl.VerificationError, match="differs"):
        inf.s_test(X[:4], y[:4])


def test_influence_exposes_the_solver(correlated):
    model, X, y, _, _ = correlated
    inf = fastinfl.Influence(model, X, y, solver="cg", preconditioner="nystrom")
    inf.s_test(X[:3], y[:3])
    assert inf.solver_.M.rank >= 1 and inf.cg_n_iter_.shape == (3,) and (inf.cg_residual_ <= 1e-10).all()


@pytest.mark.parametrize("kwargs, name", [
    (dict(solver="pcg"), "solver"),
    (dict(preconditioner="ilu"), "preconditioner"),
    (dict(solver="direct", preconditioner="jacobi"), "preconditioner"),
    (dict(solver="lissa", preconditioner="nystrom"), "preconditioner"),
    (dict(rank=0), "rank"),
    (dict(rank=2.5), "rank"),
    (dict(lissa_depth=0), "lissa_depth"),
    (dict(lissa_scale=0.0), "lissa_scale"),
    (dict(lissa_scale=np.inf), "lissa_scale"),
    (dict(lissa_repetitions=0), "lissa_repetitions"),
    (dict(lissa_batch_size=-1), "lissa_batch_size"),
    (dict(seed="a"), "seed"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    X, y, _ = make_logistic(200, 3, seed=0, dtype=np.float64)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    with pytest.raises(ValueError, match=name):
        fastinfl.Influence(model, X, y, **kwargs)


# ----------------------------------------------------- hypothesis properties
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


@st.composite
def problems(draw):
    """A fitted model on random non-separable, correlated and scaled data: (model, X, y, X_test, y_test)."""
    n = draw(st.integers(30, 300))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rho = draw(st.sampled_from([0.0, 0.9, 0.99]))
    l2 = draw(st.sampled_from([0.1, 1.0, 10.0]))
    fit_intercept = draw(st.booleans())
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + 5, d))
    for j in range(1, d):
        X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho**2) * X[:, j]
    X *= rng.uniform(0.1, 10.0, size=d)
    y = (rng.random(n + 5) < 0.5).astype(np.int64)
    model = fastinfl.LogisticRegression(l2=l2, fit_intercept=fit_intercept).fit(X[:n], y[:n])
    return model, X[:n], y[:n], X[n:], y[n:]


def _reference(model, X, y, X_test, y_test):
    ref = reference.influence(X, y, X_test, y_test, model.coef_, model.intercept_, l2=model.l2,
                              fit_intercept=model.fit_intercept)
    H = reference.hessian(X, model.coef_, model.intercept_, l2=model.l2, fit_intercept=model.fit_intercept)
    return ref, _cond(H)


@SETTINGS
@given(problems())
def test_exact_solvers_equal_reference(problem):
    model, X, y, X_test, y_test = problem
    ref, cond = _reference(*problem)
    p = X.shape[1] + model.fit_intercept
    for kwargs in (dict(solver="cg", preconditioner="jacobi"), dict(solver="cg", preconditioner="nystrom"),
                   dict(solver="cg", preconditioner="nystrom", rank=1), dict(solver="arnoldi", rank=p)):
        got = fastinfl.Influence(model, X, y, **kwargs).influence(X_test, y_test)
        # relative residual 1e-10 x cond(H), plus rounding
        np.testing.assert_allclose(got, ref, rtol=0, atol=(10 * 1e-10 * cond + 1e-12) * np.abs(ref).max(),
                                   err_msg=str(kwargs))


@SETTINGS
@given(problems())
def test_lissa_error_bounded_by_its_residual(problem):
    model, X, y, X_test, y_test = problem
    ref, cond = _reference(*problem)
    inf = fastinfl.Influence(model, X, y, solver="lissa", tol=1e-6, lissa_depth=200)
    S_ref = np.linalg.solve(
        reference.hessian(X, model.coef_, model.intercept_, l2=model.l2, fit_intercept=model.fit_intercept),
        inf.gradients(X_test, y_test).T).T
    B = inf.gradients(X_test, y_test)
    Y, n_iter, resid, status = inf.solver_.run(B)
    # ||y - x|| <= ||H^-1|| ||b - H y||: the reported residual bounds the error
    bound = cond * resid * np.linalg.norm(B, axis=1) / np.linalg.eigvalsh(inf.hessian())[-1]
    assert (np.linalg.norm(Y - S_ref, axis=1) <= bound * (1 + 1e-6) + 1e-12 * np.abs(S_ref).max()).all()
    assert ((status == 0) == (resid <= 1e-6)).all()


@SETTINGS
@given(problems(), st.integers(1, 5))
def test_pcg_batch_size_invariance(problem, batch_size):
    model, X, y, X_test, y_test = problem
    for prec in ("jacobi", "nystrom"):
        a = fastinfl.Influence(model, X, y, solver="cg", preconditioner=prec, batch_size=batch_size)
        b = fastinfl.Influence(model, X, y, solver="cg", preconditioner=prec)
        sa, sb = a.s_test(X_test, y_test), b.s_test(X_test, y_test)
        np.testing.assert_allclose(sa, sb, rtol=1e-7, atol=1e-10 * np.abs(sb).max())


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_pcg_row_order_invariance(problem, rnd):
    model, X, y, X_test, y_test = problem
    perm = np.array(rnd.sample(range(len(y)), len(y)))
    kwargs = dict(solver="cg", preconditioner="nystrom")
    base = fastinfl.Influence(model, X, y, **kwargs).influence(X_test, y_test)
    permuted = fastinfl.Influence(model, X[perm], y[perm], **kwargs).influence(X_test, y_test)
    np.testing.assert_allclose(permuted, base[:, perm], rtol=1e-7, atol=1e-10 * np.abs(base).max())
