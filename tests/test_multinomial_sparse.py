"""Multinomial logistic regression on scipy.sparse X: every quantity and solver equals the dense model on
X.toarray() (and the NumPy pseudo-inverse reference), X is never densified, and the CSR variants (float32,
int64 indices, CSC, repeated columns) agree."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import fastinfl
from fastinfl import reference

L2 = 0.8
K = 3


def make_sparse_multiclass(n, d, K, density, seed=0):
    """Random CSR (n, d) with about density d nonzeros per row and labels drawn from a softmax model."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    W = rng.standard_normal((K, d))
    Z = X @ W.T + rng.standard_normal(K) * 0.3
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return X, y


@pytest.fixture(scope="module")
def problem():
    # 30000 rows, ~6 nonzeros each: several row chunks (CSR_MIN_CHUNK_NNZ) in every parallel pass.
    X, y = make_sparse_multiclass(30000, 40, K, 0.15, seed=5)
    Xt, yt = make_sparse_multiclass(6, 40, K, 0.3, seed=6)
    model = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)
    dense = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X.toarray(), y)
    return model, dense, X, y, Xt, yt


def close(a, b, rtol=1e-10):
    """Equal to ``rtol`` relative to the largest entry of b (1e-10 relative, as the design asks)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


def test_fit_equals_dense_and_reference(problem):
    model, dense, X, y, Xt, _ = problem
    assert model.converged_
    close(model.coef_, dense.coef_)
    close(model.intercept_, dense.intercept_)
    coef, b = reference.mn_fit(X.toarray(), y, K, l2=L2)
    np.testing.assert_allclose(model.coef_, coef, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.intercept_, b, rtol=0, atol=1e-9)
    close(model.predict_proba(Xt), dense.predict_proba(Xt.toarray()))
    close(model.decision_function(Xt), dense.decision_function(Xt.toarray()))
    close(model.objective(X, y), dense.objective(X.toarray(), y), rtol=1e-12)
    assert model.score(Xt, _) == dense.score(Xt.toarray(), _)


SOLVERS = {
    "direct": dict(solver="direct"),
    "cg": dict(solver="cg", tol=1e-13),
    "pcg-jacobi": dict(solver="cg", preconditioner="jacobi", tol=1e-13),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_every_quantity_equals_dense(problem, name):
    model, _, X, y, Xt, yt = problem
    kw = SOLVERS[name]
    inf = fastinfl.Influence(model, X, y, **kw)
    ref = fastinfl.Influence(model, X.toarray(), y, solver="direct")
    idx = np.array([0, 17, 29999, 12345, 17])
    close(inf.s_test(Xt, yt), ref.s_test(Xt.toarray(), yt))
    close(inf.influence(Xt, yt), ref.influence(Xt.toarray(), yt))
    close(inf.influence(Xt, yt, idx), ref.influence(Xt.toarray(), yt, idx))
    close(inf.params_change(idx), ref.params_change(idx))
    close(inf.self_influence(idx), ref.self_influence(idx))
    close(inf.leverage(idx), ref.leverage(idx))
    for corr in ("none", "newton"):
        for loss in ("exact", "linear"):
            close(inf.loo_change(Xt, yt, idx, correction=corr, loss=loss),
                  ref.loo_change(Xt.toarray(), yt, idx, correction=corr, loss=loss))
    groups = [np.array([1, 2, 3]), np.array([10, 20000]), np.array([29999])]
    for corr in ("none", "newton"):
        close(inf.group_change(Xt, yt, groups, correction=corr), ref.group_change(Xt.toarray(), yt, groups,
                                                                                   correction=corr))
    close(inf.perturbation(Xt, yt, idx), ref.perturbation(Xt.toarray(), yt, idx))
    top, top_ref = inf.top_k(Xt, yt, k=7), ref.top_k(Xt.toarray(), yt, k=7)
    np.testing.assert_array_equal(top.helpful_idx, top_ref.helpful_idx)
    np.testing.assert_array_equal(top.harmful_idx, top_ref.harmful_idx)
    close(top.helpful, top_ref.helpful)
    close(top.harmful, top_ref.harmful)


def test_passes_equal_dense_and_reference(problem):
    model, _, X, y, Xt, yt = problem
    inf = fastinfl.Influence(model, X, y, solver="direct")
    ref = fastinfl.Influence(model, X.toarray(), y, solver="direct")
    H = reference.mn_hessian(X.toarray(), model.coef_, model.intercept_, l2=L2)
    close(inf.hessian(), H, rtol=1e-12)
    close(inf.hessian(), ref.hessian(), rtol=1e-12)
    V = np.random.default_rng(1).standard_normal((5, inf.n_params))
    close(inf.hvp(V), V @ H, rtol=1e-12)
    close(inf.hvp(V[0]), ref.hvp(V[0]), rtol=1e-12)
    close(inf.gradients(Xt, yt), reference.mn_per_example_gradients(Xt.toarray(), yt, model.coef_,
                                                                     model.intercept_), rtol=1e-12)
    close(inf.gradients(), ref.gradients(), rtol=1e-12)
    close(inf._hess.diagonal(), ref._hess.diagonal(), rtol=1e-12)
    # the pseudo-inverse reference, independent of both operators
    infl = reference.mn_influence(X.toarray(), y, Xt.toarray(), yt, model.coef_, model.intercept_, l2=L2)
    close(inf.influence(Xt, yt), infl, rtol=1e-9)
    sample = np.array([3, 9, 27, 81])
    close(inf._hess.hvp_rows(sample, V, 2.0), ref._hess.hvp_rows(sample, V, 2.0), rtol=1e-12)


@pytest.fixture(scope="module")
def small():
    X, y = make_sparse_multiclass(400, 6, K, 0.5, seed=8)
    Xt, yt = make_sparse_multiclass(4, 6, K, 0.5, seed=9)
    return fastinfl.MultinomialLogisticRegression(l2=30.0).fit(X, y), X, y, Xt, yt


@pytest.mark.parametrize("kw", [dict(solver="lissa", tol=1e-11), dict(solver="arnoldi", rank=20, seed=3),
                                dict(solver="cg", preconditioner="nystrom", rank=5, tol=1e-12)],
                         ids=["lissa", "arnoldi-full-rank", "pcg-nystrom"])
def test_iterative_solvers_equal_dense(small, kw):
    """P = 21 (gauge of dimension 1): Arnoldi at rank 20 spans the whole identifiable space, so is exact."""
    model, X, y, Xt, yt = small
    inf = fastinfl.Influence(model, X, y, **kw)
    ref = fastinfl.Influence(model, X.toarray(), y, **kw)
    exact = fastinfl.Influence(model, X.toarray(), y, solver="direct")
    close(inf.influence(Xt, yt), ref.influence(Xt.toarray(), yt), rtol=1e-9)
    close(inf.influence(Xt, yt), exact.influence(Xt.toarray(), yt), rtol=1e-8)


def test_csr_variants_agree(problem):
    """float32 values, int64 indices, CSC (converted once), unsorted and repeated columns: the same model."""
    _, _, X, y, Xt, yt = problem
    X = X[:3000]
    y = y[:3000]
    base = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)
    I0 = fastinfl.Influence(base, X, y).influence(Xt, yt)
    wide = X.copy()
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    dup = _with_duplicates(X)
    assert not dup.has_canonical_format
    for variant in (wide, X.tocsc(), sp.csr_array(X), dup):
        close(fastinfl.MultinomialLogisticRegression(l2=L2).fit(variant, y).coef_, base.coef_)
        close(fastinfl.Influence(base, variant, y).influence(Xt, yt), I0)
    X32 = X.astype(np.float32)
    m32 = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X32, y)
    m64 = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X32.astype(np.float64), y)
    close(m32.coef_, m64.coef_)
    close(fastinfl.Influence(m32, X32, y).influence(Xt, yt), fastinfl.Influence(m64, X32.astype(np.float64),
                                                                                  y).influence(Xt, yt))


def _with_duplicates(X):
    """X with every stored entry split into two halves under the same column, the row's order reversed."""
    indptr = 2 * X.indptr
    indices = np.empty(2 * X.nnz, X.indices.dtype)
    data = np.empty(2 * X.nnz)
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        cols, vals = X.indices[lo:hi][::-1], X.data[lo:hi][::-1]
        indices[2 * lo:2 * hi] = np.r_[cols, cols]
        data[2 * lo:2 * hi] = np.r_[vals, vals] / 2
    out = sp.csr_matrix((data, indices, indptr), shape=X.shape)
    out.has_canonical_format = False
    return out


def test_x_is_never_densified(problem, monkeypatch):
    model, _, X, y, Xt, yt = problem

    def refuse(*args, **kwargs):
        raise AssertionError("a sparse matrix was densified")

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        for name in ("toarray", "todense", "__array__"):
            monkeypatch.setattr(cls, name, refuse, raising=False)
    m = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)
    inf = fastinfl.Influence(m, X, y, solver="cg", preconditioner="jacobi")
    assert inf.influence(Xt, yt).shape == (Xt.shape[0], X.shape[0])
    assert inf.top_k(Xt, yt, k=3).helpful.shape == (Xt.shape[0], 3)
    assert inf.leverage([1, 2]).shape == (2,)
    assert inf.loo_change(Xt, yt, [4, 5]).shape == (Xt.shape[0], 2)
    assert type(inf._op.X) is sp.csr_matrix and inf._op.kind == "csr-multinomial"


def test_bad_sparse_input_names_the_argument(problem):
    model, _, X, y, Xt, yt = problem
    bad = X[:50].copy()
    bad.data[3] = np.nan
    row = int(np.searchsorted(bad.indptr, 3, side="right") - 1)
    with pytest.raises(ValueError, match=f"X contains NaN or inf \\(first at row {row}"):
        fastinfl.MultinomialLogisticRegression().fit(bad, y[:50])
    with pytest.raises(ValueError, match="X_test has 39 features but the model has 40"):
        fastinfl.Influence(model, X, y).influence(Xt[:, :39], yt)
    with pytest.raises(ValueError, match="y_train has 10 labels but X_train has 30000 rows"):
        fastinfl.Influence(model, X, y[:10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="solver='direct': the dense Hessian of 9,003 parameters needs 0.604 "
                                             "GiB, more than memory_limit=0.5 GiB"):
            wide, yw = make_sparse_multiclass(50, 3000, 3, 0.001, seed=1)
            m = fastinfl.MultinomialLogisticRegression.from_params(np.zeros((3, 3000)), np.zeros(3))
            fastinfl.Influence(m, wide, yw, solver="direct", memory_limit=1 << 29)


def test_large_p_fits_by_newton_cg_and_solves_by_cg():
    """P = 3 x 4097 > NEWTON_DIRECT_MAX_P: the fit never forms H (Newton-CG); auto picks CG; equal to dense."""
    X, y = make_sparse_multiclass(3000, 4096, K, 0.002, seed=4)
    Xt, yt = make_sparse_multiclass(3, 4096, K, 0.003, seed=7)
    m = fastinfl.MultinomialLogisticRegression(l2=1.0, tol=1e-13).fit(X, y)
    md = fastinfl.MultinomialLogisticRegression(l2=1.0, tol=1e-13).fit(X.toarray(), y)
    close(m.coef_, md.coef_, rtol=1e-9)  # both to max|grad| <= 1e-13 n, by different Newton steps
    inf = fastinfl.Influence(m, X, y, tol=1e-12)
    assert not inf._use_direct
    close(inf.influence(Xt, yt), fastinfl.Influence(m, X.toarray(), y, solver="cg", tol=1e-12).influence(
        Xt.toarray(), yt), rtol=1e-9)


def test_loo_retrain_on_sparse_equals_dense(problem):
    _, _, X, y, Xt, yt = problem
    X, y = X[:300], y[:300]
    m = fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)
    got = fastinfl.loo_retrain(m, X, y, [3, 250], Xt, yt)
    close(got, fastinfl.loo_retrain(m, X.toarray(), y, [3, 250], Xt.toarray(), yt), rtol=1e-9)
    close(fastinfl.loo_retrain(m, X, y, None, Xt, yt, groups=[[1, 2], [7]]),
          fastinfl.loo_retrain(m, X.toarray(), y, None, Xt.toarray(), yt, groups=[[1, 2], [7]]), rtol=1e-9)


def test_csr_drivers_have_no_parallel_loop_besides_their_prange():
    """As for the dense drivers: an array expression in a parallel=True kernel is a thread-pool launch of its own."""
    from problems import parallel_loops

    from fastinfl.kernels import multinomial_csr as mk

    X, y = make_sparse_multiclass(40, 3, K, 0.6, seed=2)
    ip, ix, dt = X.indptr, X.indices, X.data
    n, d, p, k, m = 40, 3, 4, 2, 2
    P = K * p
    ThT = np.ones((p, K))
    Pi = np.full((n, K), 1.0 / K)
    R = np.random.default_rng(0).standard_normal((n, K))
    stop = np.zeros(1, np.uint8)
    calls = {
        "_mn_csr_logits": (ip, ix, dt, ThT, d, np.empty((n, K)), stop),
        "_mn_csr_grads": (ip, ix, dt, y, ThT, d, np.arange(n), np.empty((n, P)), stop),
        "_mn_csr_loss_grad": (ip, ix, dt, y, ThT, d, np.empty((p, K)), np.empty((n, K)), stop),
        "_mn_csr_hessian": (ip, ix, dt, Pi, np.ones(P), d, np.empty((P, P)), stop),
        "_mn_csr_hvp": (ip, ix, dt, Pi, np.ones(P), np.ones((p, k * K)), d, np.empty((p, k * K)), stop),
        "_mn_csr_diagonal": (ip, ix, dt, Pi, d, np.empty((p, K)), stop),
        "_mn_csr_influence": (ip, ix, dt, R, np.ones((p, m * K)), np.arange(n), d, np.empty((m, n)), stop),
        "_mn_csr_top_k": (ip, ix, dt, R, np.ones((p, m * K)), d, np.empty((m, 2)), np.empty((m, 2), np.int64),
                          np.empty((m, 2)), np.empty((m, 2), np.int64), stop),
    }
    for name, args in calls.items():
        assert parallel_loops(getattr(mk, name), *args) == 1, name
