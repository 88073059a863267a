"""Batched conjugate gradient against np.linalg.solve."""

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl.kernels import cg as _cg
from fastinfl.kernels import dense as _kernels
from fastinfl.model import ridge_diagonal


def _system(n=3000, d=12, dtype=np.float64, seed=0, l2=1.0):
    X, y = make_problem(n=n, d=d, seed=seed, dtype=dtype)
    model = fastinfl.LogisticRegression(l2=l2).fit(X, y)
    z, r, s = np.empty(n), np.empty(n), np.empty(n)
    _kernels._margins(X, model.coef_, model.intercept_, z, np.zeros(1, np.uint8))
    _kernels._residuals_weights(z, y.astype(np.float64), 0, r, s)
    ridge = ridge_diagonal(d, True, l2)
    H = np.empty((d + 1, d + 1))
    _kernels._hessian_sum(X, s, ridge, H, np.zeros(1, np.uint8))
    return X, s, ridge, H


def _run(X, s, ridge, B, tol=1e-12, max_iter=200):
    k = B.shape[0]
    out = (np.empty_like(B), np.empty(k, np.int64), np.empty(k), np.empty(k, np.int64))
    _cg._cg_solve(X, s, ridge, B, tol, max_iter, *out, np.zeros(1, np.uint8))
    return out


# float32 compiles its own CG kernels (~13 s cold): the slow tier, which CI runs too
@pytest.mark.parametrize("dtype", [np.float64, pytest.param(np.float32, marks=pytest.mark.slow)])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_cg_matches_solve(dtype, k):
    X, s, ridge, H = _system(dtype=dtype)
    B = np.random.default_rng(k).standard_normal((k, H.shape[0]))
    x, n_iter, resid, status = _run(X, s, ridge, B)
    expected = np.linalg.solve(H, B.T).T
    assert (status == _cg.CONVERGED).all() and (resid <= 1e-12).all()
    assert (n_iter <= 2 * H.shape[0]).all()
    # relative residual 1e-12 bounds the error by cond(H) * 1e-12 (cond ~ 1e2 here)
    np.testing.assert_allclose(x, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    true_resid = np.linalg.norm(B - x @ H, axis=1) / np.linalg.norm(B, axis=1)
    assert (true_resid <= 1e-10).all()


def test_cg_columns_converge_on_their_own():
    X, s, ridge, H = _system()
    w, V = np.linalg.eigh(H)
    # An eigenvector converges in one step; a generic vector needs many.
    B = np.vstack([V[:, 0], np.random.default_rng(0).standard_normal(H.shape[0]), np.zeros(H.shape[0])])
    x, n_iter, resid, status = _run(X, s, ridge, B)
    assert n_iter[0] == 1 and n_iter[1] > 3 and n_iter[2] == 0
    assert (status == _cg.CONVERGED).all()
    np.testing.assert_allclose(x[0], V[:, 0] / w[0], rtol=1e-10)
    np.testing.assert_array_equal(x[2], 0.0)


def test_cg_batched_equals_one_at_a_time():
    X, s, ridge, H = _system()
    B = np.random.default_rng(1).standard_normal((10, H.shape[0]))
    x_batch = _run(X, s, ridge, B)[0]
    x_single = np.vstack([_run(X, s, ridge, B[i:i + 1])[0] for i in range(10)])
    # Same arithmetic per column; the batched HVP may take its BLAS branch: rounding-level differences.
    np.testing.assert_allclose(x_batch, x_single, rtol=1e-10, atol=1e-12)


def test_cg_max_iter_status():
    X, s, ridge, H = _system()
    B = np.random.default_rng(2).standard_normal((3, H.shape[0]))
    x, n_iter, resid, status = _run(X, s, ridge, B, tol=1e-14, max_iter=2)
    assert (status == _cg.MAX_ITER).all() and (n_iter == 2).all() and (resid > 1e-14).all()


def test_cg_api_raises_on_max_iter():
    X, y = make_problem(n=2000, d=10, seed=3)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="cg", max_iter=2, tol=1e-12)
    with pytest.raises(fastinfl.ConvergenceError, match=r"max_iter=2 .*relative residual \d"):
        inf.inverse_hvp(np.ones(11))


def test_cg_api_raises_on_indefinite_hessian():
    # l2 = 0 with a constant column: H singular, CG finds p^T H p = 0 (or < 0 by rounding).
    X, y = make_problem(n=500, d=3, seed=4)
    X[:, 2] = 0.0
    model = fastinfl.LogisticRegression.from_params([0.1, -0.2, 0.0], 0.1, l2=0.0)
    with pytest.warns(fastinfl.StationarityWarning):
        inf = fastinfl.Influence(model, X, y, solver="cg")
    with pytest.raises(fastinfl.SingularHessianError, match="damping"):
        inf.inverse_hvp(np.array([0.0, 0.0, 1.0, 0.0]))


# ---------------------------------------------------------------- one CG: the driver and the fused loops
def _cg_implementations():
    """{name: (solve(B, tol, max_iter, ridge) -> CGResult, the driver's preconditioner name)} on one problem."""
    import scipy.sparse

    from fastinfl.operators import HessianOperator, as_operator
    from fastinfl.operators.base import Curvature, cg_on_hvp
    from fastinfl.solvers_iterative import PCG

    X, y = make_problem(n=400, d=6, seed=4)
    X = X.astype(np.float64)
    w = np.random.default_rng(1).uniform(0.05, 0.25, 400)
    curv = Curvature(np.zeros(400), w)
    dense = as_operator(X, None, True)
    csr = as_operator(scipy.sparse.csr_matrix(X), None, True)

    def jacobi(ridge):
        diag = dense.hessian_diagonal(curv, ridge)
        return lambda R: R / diag

    return {
        "driver": (lambda B, tol, it, ridge: cg_on_hvp(lambda V: dense.hvp(curv, ridge, V), B, tol, it), None),
        "driver-jacobi": (lambda B, tol, it, ridge: cg_on_hvp(lambda V: dense.hvp(curv, ridge, V), B, tol, it,
                                                              jacobi(ridge)), "jacobi"),
        "dense kernel": (lambda B, tol, it, ridge: dense.cg(curv, ridge, B, tol, it), None),
        "csr (jacobi)": (lambda B, tol, it, ridge: csr.cg(curv, ridge, B, tol, it), "jacobi"),
        "pcg-jacobi": (lambda B, tol, it, ridge: PCG(HessianOperator(dense, curv, ridge), tol, it,
                                                     "jacobi").run(B), "jacobi"),
    }


def test_every_cg_follows_the_drivers_rules():
    """One stopping rule and one status vocabulary: each fused loop (dense kernel, CSR) and PCG against the
    driver with the same preconditioner: converged columns, iteration counts (within one: rounding of the
    residual norm at the threshold), max_iter, non-positive curvature and zero right-hand sides."""
    from fastinfl.operators import CONVERGED, MAX_ITER, NOT_POSITIVE

    impls = _cg_implementations()
    ridge = np.append(np.full(6, 0.5), 0.0)
    B = np.random.default_rng(2).standard_normal((5, 7))
    B[3] = 0.0  # a zero right-hand side: converged at once, x = 0
    ref = {pre: impls["driver" if pre is None else "driver-jacobi"][0](B, 1e-11, 500, ridge)
           for pre in (None, "jacobi")}
    exact = np.linalg.solve(_hessian_of(ridge), B.T).T
    for name, (solve, pre) in impls.items():
        res = solve(B, 1e-11, 500, ridge)
        assert (res.status == CONVERGED).all(), name
        assert res.n_iter[3] == 0 and not res.x[3].any(), name
        assert np.abs(res.n_iter - ref[pre].n_iter).max() <= 1, (name, res.n_iter, ref[pre].n_iter)
        assert (res.residual <= 1e-11).all(), name
        np.testing.assert_allclose(res.x, exact, rtol=1e-8, atol=1e-10 * np.abs(exact).max(), err_msg=name)
        short = solve(B, 1e-11, 2, ridge)
        assert short.status.tolist() == [MAX_ITER] * 3 + [CONVERGED] + [MAX_ITER], name
        assert short.n_iter.tolist() == [2, 2, 2, 0, 2], name
        if name in ("driver-jacobi", "pcg-jacobi"):
            continue  # H - 1000 I has a negative diagonal: no Jacobi preconditioner (PCG refuses it, below)
        indefinite = solve(B, 1e-11, 500, np.full(7, -1e3))  # H - 1000 I: negative curvature at once
        assert indefinite.status.tolist() == [NOT_POSITIVE] * 3 + [CONVERGED] + [NOT_POSITIVE], name
    with pytest.raises(fastinfl.SingularHessianError, match="non-positive diagonal entry"):
        impls["pcg-jacobi"][0](B, 1e-11, 500, np.full(7, -1e3))


def _hessian_of(ridge):
    X, _ = make_problem(n=400, d=6, seed=4)
    D = np.column_stack([X.astype(np.float64), np.ones(400)])
    w = np.random.default_rng(1).uniform(0.05, 0.25, 400)
    return D.T @ (w[:, None] * D) + np.diag(ridge)


def test_every_cg_survives_huge_and_tiny_scales():
    """Issue 23: the curvature test computed sqrt(|p|^2 |Hp|^2), which overflows once |p| |Hp| passes 1e154
    (NOT_POSITIVE on a positive definite H), and ||b||^2 under- or overflows at |b| ~ 1e-154 / 1e154. Every CG
    scales each right-hand side by a power of two and takes a product of norms: at 2^-1000 (1e-301), 2^400
    and 2^900 (1e271) the answers are the unscaled ones times the scale, bit for bit; with H ~ 1e170 I
    (|p| |Hp| ~ 1e170 at |p| = 1) every column converges."""
    from fastinfl.operators import CONVERGED

    impls = _cg_implementations()
    ridge = np.append(np.full(6, 0.5), 0.0)
    B = np.random.default_rng(5).standard_normal((4, 7))
    for name, (solve, _) in impls.items():
        ref = solve(B, 1e-11, 500, ridge)
        for e in (-1000, 400, 900):
            got = solve(np.ldexp(B, e), 1e-11, 500, ridge)
            assert got.status.tolist() == ref.status.tolist() == [CONVERGED] * 4, (name, e)
            assert got.n_iter.tolist() == ref.n_iter.tolist(), (name, e)
            np.testing.assert_array_equal(got.x, np.ldexp(ref.x, e), err_msg=f"{name} at 2^{e}")
        huge = solve(B, 1e-11, 500, np.full(7, 1e170))
        assert (huge.status == CONVERGED).all(), (name, huge.status)
        np.testing.assert_allclose(huge.x, B / 1e170, rtol=1e-12, err_msg=name)
