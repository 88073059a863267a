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
