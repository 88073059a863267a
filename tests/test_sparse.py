"""scipy.sparse input: every quantity on CSR equals the same data densified, plus the sparse edge cases.

Tolerances: CSR and dense sum the same products in float64 in different orders
(nonzeros only vs every column, different chunks), so values agree to rounding:
1e-10 relative (max-norm, relative to the largest entry) for every quantity,
with the direct solver and with CG at tol=1e-13 (CG's own error is then below
1e-10 on these well-conditioned problems, l2 = 1).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from problems import assert_top_k_exact, numba_threads, parallel_loops, top_k_outputs
import scipy.sparse as sp

import fastinfl
from fastinfl import reference
from fastinfl._config import AUTO_DIRECT_MAX_P

RTOL = 1e-10  # rounding: same float64 sums in a different order


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(np.nanmax(np.abs(b)), 1e-300) if b.size else 1.0
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b), initial=0.0) <= rtol * scale, np.nanmax(np.abs(a - b)) / scale


def sparse_problem(n=400, d=60, density=0.1, seed=0, dtype=np.float64, index_dtype=np.int32):
    """CSR X (n, d) with empty rows and all-zero columns, labels y."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, random_state=seed, format="csr", dtype=np.float64)
    X.data = rng.standard_normal(X.nnz)
    X = X.tolil()
    X[::37] = 0.0  # empty rows
    X[:, ::11] = 0.0  # all-zero columns
    X = X.tocsr()
    X.eliminate_zeros()
    X = sp.csr_matrix((X.data.astype(dtype), X.indices.astype(index_dtype), X.indptr.astype(index_dtype)),
                      shape=(n, d))
    coef = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X.astype(np.float64) @ coef - 0.2)))).astype(np.int64)
    return X, y


def unsorted_with_duplicates(X, seed=1):
    """The same matrix with each row's entries shuffled and every other entry split into two halves."""
    rng = np.random.default_rng(seed)
    indptr, indices, data = [0], [], []
    for i in range(X.shape[0]):
        cols = X.indices[X.indptr[i]: X.indptr[i + 1]].tolist()
        vals = X.data[X.indptr[i]: X.indptr[i + 1]].tolist()
        c2, v2 = [], []
        for s, (c, v) in enumerate(zip(cols, vals)):
            if s % 2:
                c2 += [c, c]
                v2 += [v / 2, v - v / 2]
            else:
                c2.append(c)
                v2.append(v)
        order = rng.permutation(len(c2))
        indices += [c2[o] for o in order]
        data += [v2[o] for o in order]
        indptr.append(len(indices))
    Y = sp.csr_matrix((np.array(data, X.dtype), np.array(indices, np.int32), np.array(indptr, np.int32)),
                      shape=X.shape)
    assert not Y.has_canonical_format
    return Y


QUANTITIES = ["hessian", "gradients", "hvp", "hvp_k20", "inverse_hvp", "s_test", "influence", "top_k",
              "params_change", "self_influence", "leverage", "loo_change", "perturbation"]


def quantities(inf, Xt, yt, p):
    V = np.random.default_rng(5).standard_normal((20, p))
    top = inf.top_k(Xt, yt, k=4)
    return {
        "hessian": (lambda: inf.hessian()) if inf.uses_direct else (lambda: inf.hvp(np.eye(p)[:3])),
        "gradients": lambda: inf.gradients(),
        "hvp": lambda: inf.hvp(V[0]),
        "hvp_k20": lambda: inf.hvp(V),
        "inverse_hvp": lambda: inf.inverse_hvp(V[:3]),
        "s_test": lambda: inf.s_test(Xt, yt),
        "influence": lambda: inf.influence(Xt, yt),
        "top_k": lambda: np.concatenate([top.helpful, top.harmful, top.helpful_idx, top.harmful_idx], axis=1),
        "params_change": lambda: inf.params_change([0, 5, 37, 399]),
        "self_influence": lambda: inf.self_influence(),
        "leverage": lambda: inf.leverage(),
        "loo_change": lambda: inf.loo_change(Xt, yt, [1, 2, 3]),
        "perturbation": lambda: inf.perturbation(Xt, yt, [1, 2]),
    }


# float32 data with int64 indices compiles a second set of CSR kernels (~20 s cold): the slow tier.
@pytest.fixture(scope="module", params=["float64-int32", pytest.param("float32-int64", marks=pytest.mark.slow)])
def pair(request):
    """(CSR operator inputs, dense inputs, fitted model) for one dtype / index-dtype pair."""
    dtype, index_dtype = {"float64-int32": (np.float64, np.int32), "float32-int64": (np.float32, np.int64)}[
        request.param]
    X, y = sparse_problem(dtype=dtype, index_dtype=index_dtype)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    return X, y, model


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_every_quantity_on_csr_equals_densified(pair, solver):
    X, y, model = pair
    D = X.toarray()
    Xt, yt = X[:6], y[:6]
    p = model.params_.shape[0]
    kw = dict(solver=solver, tol=1e-13)
    a = quantities(fastinfl.Influence(model, X, y, **kw), Xt, yt, p)
    b = quantities(fastinfl.Influence(model, D, y, **kw), Xt.toarray(), yt, p)
    for name in QUANTITIES:
        close(a[name](), b[name]())


def test_model_on_csr_equals_densified(pair):
    X, y, model = pair
    D = X.toarray()
    dense = fastinfl.LogisticRegression(l2=1.0).fit(D, y)
    close(model.params_, dense.params_)
    close(model.predict_proba(X), dense.predict_proba(D))
    close(model.losses(X, y), dense.losses(D, y))
    close(model.objective(X, y), reference.objective(D, y, model.coef_, model.intercept_, l2=1.0))
    close(fastinfl.Influence(model, X, y).hessian(),
          reference.hessian(D, model.coef_, model.intercept_, l2=1.0))


@pytest.mark.slow  # compiles another dtype/layout variant of every kernel (~15 s cold): the slow tier, run by CI too
def test_float32_values_give_the_float64_results_of_the_same_values():
    """float32 CSR is read as float32 and summed in float64: equal to float64 CSR holding the same values."""
    X32, y = sparse_problem(dtype=np.float32)
    X64 = X32.astype(np.float64)
    m32 = fastinfl.LogisticRegression(l2=1.0).fit(X32, y)
    m64 = fastinfl.LogisticRegression(l2=1.0).fit(X64, y)
    close(m32.params_, m64.params_)
    close(fastinfl.Influence(m32, X32, y).influence(X32[:4], y[:4]),
          fastinfl.Influence(m64, X64, y).influence(X64[:4], y[:4]))


@pytest.mark.parametrize("kind", ["csc", "coo", "csr_array", "unsorted_duplicates", "int_data"])
def test_other_layouts_give_the_csr_results(kind):
    X, y = sparse_problem(n=200)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    Y = {"csc": lambda: X.tocsc(), "coo": lambda: X.tocoo(), "csr_array": lambda: sp.csr_array(X),
         "unsorted_duplicates": lambda: unsorted_with_duplicates(X),
         "int_data": lambda: sp.csr_matrix(np.round(X.toarray() * 3))}[kind]()
    ref_X = X if kind != "int_data" else sp.csr_matrix(np.round(X.toarray() * 3))
    if kind == "int_data":
        model = fastinfl.LogisticRegression(l2=1.0).fit(ref_X, y)
    other = fastinfl.LogisticRegression(l2=1.0).fit(Y, y)
    close(other.params_, model.params_)
    a = fastinfl.Influence(model, Y, y)
    b = fastinfl.Influence(model, ref_X, y)
    close(a.hessian(), b.hessian())
    Yt = Y.tocsr()[:5].asformat(Y.format)  # test points in the same layout
    close(a.influence(Yt, y[:5]), b.influence(ref_X[:5], y[:5]))
    close(a.self_influence(), b.self_influence())
    close(a.gradients(Yt, y[:5]), b.gradients(ref_X[:5].toarray(), y[:5]))


def test_sparse_test_data_with_dense_training_data():
    X, y = sparse_problem(n=200)
    D = X.toarray()
    model = fastinfl.LogisticRegression(l2=1.0).fit(D, y)
    inf = fastinfl.Influence(model, D, y)
    close(inf.influence(X[:5], y[:5]), inf.influence(D[:5], y[:5]))
    close(model.predict_proba(X.tocsc()), model.predict_proba(D))


def test_parallel_chunks_and_column_split_equal_scipy():
    """Sizes that take the multi-chunk passes (nnz > 2 x 2^16) and the HVP's column split (k p > 2^22)."""
    rng = np.random.default_rng(3)
    n, d = 20_000, 1 << 16
    rows, cols = np.repeat(np.arange(n), 12), rng.integers(0, d, 12 * n)
    X = sp.csr_matrix((rng.standard_normal(12 * n), (rows, cols)), shape=(n, d))  # repeats summed
    coef = rng.standard_normal(d) * 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ coef)))).astype(np.int64)
    model = fastinfl.LogisticRegression.from_params(coef, 0.1, l2=1.0)
    inf = fastinfl.Influence(model, X, y, solver="cg", stationarity_tol=1e300)
    Xt = sp.hstack([X, np.ones((n, 1))]).tocsr()
    z = Xt @ model.params_
    q = 1 / (1 + np.exp(-z))
    w = q * (1 - q)
    ridge = np.append(np.ones(d), 0.0)
    for k in (1, 3, 80):  # 80 x (2^16 + 1) > 2^22: column split
        V = rng.standard_normal((k, d + 1))
        close(inf.hvp(V), (Xt.T @ (w[:, None] * (Xt @ V.T))).T + ridge * V)
    g = Xt.T @ (q - y)
    g[:d] += coef
    F = np.sum(np.logaddexp(0, z) - y * z) + 0.5 * coef @ coef
    close(model.objective(X, y), F)
    close(inf.grad_norm_, np.linalg.norm(g))
    S = rng.standard_normal((7, d + 1))
    close(inf.operator.influence(inf.curvature, S, np.arange(n)), -(Xt @ S.T).T * (q - y))
    top = inf.operator.top_k(inf.curvature, S, 5)
    ref = -(Xt @ S.T).T * (q - y)
    close(top.helpful, np.sort(ref, axis=1)[:, :5])
    close(top.harmful, -np.sort(-ref, axis=1)[:, :5])


def test_newton_cg_fit_above_the_direct_limit(monkeypatch):
    """Newton-CG (no Hessian formed) reaches the tolerance of the Cholesky fit, on CSR and on dense."""
    X, y = sparse_problem(n=500, d=80)
    direct = fastinfl.LogisticRegression(l2=0.5, tol=1e-12).fit(X, y)
    monkeypatch.setattr(fastinfl.model, "NEWTON_DIRECT_MAX_P", 1)

    def no_hessian(*args):
        raise AssertionError("Newton-CG must not form H")

    monkeypatch.setattr(fastinfl.operators.csr.CSROperator, "hessian", no_hessian)
    cg = fastinfl.LogisticRegression(l2=0.5, tol=1e-12).fit(X, y)
    dense_cg = fastinfl.LogisticRegression(l2=0.5, tol=1e-12).fit(X.toarray(), y)
    g = reference.gradient(X.toarray(), y, cg.coef_, cg.intercept_, l2=0.5)
    assert np.abs(g).max() <= 1e-12 * 500
    close(cg.params_, direct.params_, 1e-9)  # both within the gradient tolerance / smallest curvature
    close(dense_cg.params_, direct.params_, 1e-9)


def test_large_p_beyond_memory_uses_cg_and_refuses_the_hessian():
    """H beyond memory_limit: auto takes CG, hessian() is refused, self_influence equals Woodbury's form."""
    n, d = 300, 8202
    X = sp.random(n, d, density=5 / d, random_state=0, format="csr")
    y = np.arange(n) % 2
    model = fastinfl.LogisticRegression.from_params(np.zeros(d), l2=1.0, fit_intercept=False)
    inf = fastinfl.Influence(model, X, y, memory_limit=8 * d * d - 1, stationarity_tol=1e300)
    assert inf.n_params > AUTO_DIRECT_MAX_P and not inf.uses_direct
    with pytest.raises(ValueError, match="solver='cg'"):
        inf.hessian()
    s = inf.self_influence([0, 1, 2])
    # H = I + A^T W A (coef 0: w = 1/4, r = 1/2 - y), so H^-1 = I - A^T (4 I + A A^T)^-1 A (Woodbury).
    A = X.toarray()
    G = (0.5 - y[:3])[:, None] * A[:3]
    K = A @ G.T  # (n, 3)
    Hinv_G = G.T - A.T @ np.linalg.solve(4 * np.eye(n) + A @ A.T, K)
    close(s, np.einsum("ij,ji->i", G, Hinv_G), 1e-8)  # CG at tol=1e-10


@pytest.mark.parametrize("case", ["nan", "inf", "index", "indptr", "features", "complex", "empty"])
def test_bad_sparse_input_names_the_argument_row_and_column(case):
    X, y = sparse_problem(n=50, d=10, density=0.5)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    if case in ("nan", "inf"):
        Z = X.copy()
        Z.data[7] = np.nan if case == "nan" else np.inf
        row = int(np.searchsorted(Z.indptr, 7, side="right") - 1)
        match = rf"X_test contains NaN or inf \(first at row {row}, column {Z.indices[7]}\)"
    elif case == "index":
        Z = X.copy()
        Z.indices[3] = 10
        row = int(np.searchsorted(Z.indptr, 3, side="right") - 1)
        match = rf"X_test has column index 10 out of range for 10 columns \(first at row {row}\)"
    elif case == "indptr":
        Z = X.copy()
        Z.indptr[5] = Z.indptr[6] + 1
        match = r"X_test.indptr decreases at row 5"
    elif case == "features":
        Z = sp.random(5, 11, density=0.5, format="csr")
        match = "X_test has 11 features but the model has 10"
    elif case == "complex":
        Z = X.astype(np.complex128)
        match = "X_test must hold real numbers"
    else:
        Z = sp.csr_matrix((0, 10))
        match = "X_test is empty"
    inf = fastinfl.Influence(model, X, y)
    with pytest.raises(ValueError, match=match):
        inf.influence(Z, np.zeros(Z.shape[0]))


def test_make_logistic_density_is_reproducible_zipf_csr():
    X, y, coef = fastinfl.datasets.make_logistic(70_000, 5000, seed=3, density=0.004)
    X2, y2, coef2 = fastinfl.datasets.make_logistic(70_000, 5000, seed=3, density=0.004, dtype=np.float64)
    assert sp.issparse(X) and X.format == "csr" and X.shape == (70_000, 5000)
    assert X.dtype == np.float32 and X2.dtype == np.float64 and X.indices.dtype == np.int32
    assert X.has_canonical_format
    np.testing.assert_array_equal(X.indices, X2.indices)
    np.testing.assert_array_equal(X.data, X2.data.astype(np.float32))
    np.testing.assert_array_equal(y, y2)
    per_row = X.nnz / X.shape[0]
    assert 15 <= per_row <= 20.5, per_row  # Poisson(20) draws, repeats merged
    counts = np.sort(np.bincount(X.indices, minlength=5000))[::-1]
    assert counts[0] > 50 * counts[1000]  # heavy head, long tail (Zipf)
    other, _, _ = fastinfl.datasets.make_logistic(70_000, 5000, seed=4, density=0.004)
    assert other.nnz != X.nnz or not np.array_equal(other.indices, X.indices)
    with pytest.raises(ValueError, match="density must be in"):
        fastinfl.datasets.make_logistic(10, 10, density=1.5)


def test_loo_retrain_on_csr_equals_densified():
    X, y = sparse_problem(n=120, d=15, density=0.3)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    a = fastinfl.loo_retrain(model, X, y, [0, 3, 37], X[:4], y[:4])
    b = fastinfl.loo_retrain(model, X.toarray(), y, [0, 3, 37], X[:4].toarray(), y[:4])
    close(a, b, 1e-8)  # separate refits, each to tol=1e-12


def test_load_sparse_npz_and_svmlight(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    from fastinfl.io_sparse import SparseInputError, is_sparse_npz, load_sparse

    X, y = sparse_problem(n=60, d=12, density=0.3)
    sp.save_npz(tmp_path / "X.npz", X)
    np.savetxt(tmp_path / "y.txt", y, fmt="%d")
    assert is_sparse_npz(tmp_path / "X.npz")
    X2, y2 = load_sparse(tmp_path / "X.npz", str(tmp_path / "y.txt"))
    assert X2.format == "csr" and (X2 != X).nnz == 0
    np.testing.assert_array_equal(y2, y)
    dump_svmlight_file(X, 2 * y - 1, str(tmp_path / "train.svm"), zero_based=False)  # libsvm: 1-based, -1/+1
    X3, y3 = load_sparse(tmp_path / "train.svm", n_features=12)
    assert X3.shape == (60, 12)
    np.testing.assert_allclose(X3.toarray(), X.toarray(), rtol=1e-15)  # text with 17 digits
    np.testing.assert_array_equal(y3, y)
    with pytest.raises(SparseInputError, match="holds no labels"):
        load_sparse(tmp_path / "X.npz")
    Z = X.copy()
    Z.data[4] = np.nan
    sp.save_npz(tmp_path / "bad.npz", Z)
    row = int(np.searchsorted(Z.indptr, 4, side="right") - 1)
    with pytest.raises(SparseInputError, match=rf"bad.npz: row {row}, column {Z.indices[4]}: X contains NaN"):
        load_sparse(tmp_path / "bad.npz", str(tmp_path / "y.txt"))
    np.savetxt(tmp_path / "y3.txt", np.full(60, 3))
    with pytest.raises(SparseInputError, match="y3.txt: label row 0"):
        load_sparse(tmp_path / "X.npz", str(tmp_path / "y3.txt"))


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, numpy as np, fastinfl
    n, d = 20_000, 1 << 18
    X, y, _ = fastinfl.datasets.make_logistic(n, d, seed=0, density=20 / d)
    model = fastinfl.LogisticRegression(l2=1.0, tol=1e-6).fit(X, y)
    inf = fastinfl.Influence(model, X, y, tol=1e-6)
    top = inf.top_k(X[:8], y[:8], k=5)
    infl = inf.influence(X[:8], y[:8], train_idx=np.arange(1000))
    s = inf.self_influence(np.arange(16))
    assert model.converged_ and np.isfinite(infl).all() and (s > 0).all() and (top.harmful_idx >= 0).any()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, X.nnz, d)
""")


@pytest.mark.slow
def test_two_to_the_18_columns_within_a_memory_bound():
    """Fit, top_k, influence and self_influence at d = 2^18 in a fresh process: peak RSS far below dense X."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True,
                         env={**os.environ}, timeout=1800)
    assert out.returncode == 0, out.stderr
    peak, nnz, d = map(int, out.stdout.split())
    dense_bytes = 20_000 * d * 4  # float32: 21 GB
    assert peak < 1.5 * 2**30, peak  # interpreter, Numba and SciPy included
    assert peak < dense_bytes / 10


def test_hvp_paths_and_diagonal_equal_scipy():
    """Every HVP path (1 vector, groups of 4 with padding, the general loop; serial and row chunks with
    partial sums) and the diagonal pass (with repeated and unsorted columns) against scipy."""
    from fastinfl.kernels import csr as csr_kernels
    from fastinfl.operators import as_operator
    from fastinfl.operators.base import Curvature

    rng = np.random.default_rng(7)
    for n, d in ((300, 40), (30_000, 256)):  # 30000 rows of 12 nonzeros at d = 256: several row chunks
        X = sp.csr_matrix((rng.standard_normal(12 * n), (np.repeat(np.arange(n), 12), rng.integers(0, d, 12 * n))),
                          shape=(n, d))
        if n == 30_000:
            assert csr_kernels.hvp_chunks(n, X.nnz, d + 1, 1) > 1
        w, r = rng.uniform(0.05, 0.25, n), rng.standard_normal(n)
        ridge = np.append(np.full(d, 0.5), 0.0)
        for Y in (X, unsorted_with_duplicates(X[:300]) if n == 300 else X):
            op = as_operator(Y, None, True)
            Yt = sp.hstack([Y, np.ones((Y.shape[0], 1))]).tocsr()
            wy = w[:Y.shape[0]]
            for k in (1, 2, 3, 4, 5, 8, 13, 16, 17, 24):
                V = rng.standard_normal((k, d + 1))
                close(op.hvp(Curvature(r, wy), ridge, V), (Yt.T @ (wy[:, None] * (Yt @ V.T))).T + ridge * V)
            D = Yt.toarray()
            close(op.hessian_diagonal(Curvature(r, wy), ridge), (D * D).T @ wy + ridge)


def test_csr_cg_is_jacobi_preconditioned_and_exact():
    """The CSR operator's CG (Influence solver='cg', Newton-CG's inner CG) uses diag(H)^-1: on columns of very
    different frequencies it needs fewer iterations than plain CG, and solves to the same tolerance."""
    from fastinfl.operators import as_operator
    from fastinfl.operators.base import Curvature, cg_on_hvp

    rng = np.random.default_rng(11)
    n, d = 3000, 300
    cols = np.minimum(rng.zipf(1.3, 15 * n) - 1, d - 1)  # head columns in many rows, tail columns in few
    X = sp.csr_matrix((np.ones(15 * n), (np.repeat(np.arange(n), 15), cols)), shape=(n, d))
    op = as_operator(X, None, True)
    w = rng.uniform(0.05, 0.25, n)
    curv = Curvature(np.zeros(n), w)
    ridge = np.append(np.full(d, 1e-2), 0.0)
    B = rng.standard_normal((4, d + 1))
    res = op.cg(curv, ridge, B, 1e-12, 5000)
    plain = cg_on_hvp(lambda V: op.hvp(curv, ridge, V), B, 1e-12, 5000)
    D = sp.hstack([X, np.ones((n, 1))]).toarray()
    H = D.T @ (w[:, None] * D) + np.diag(ridge)
    exact = np.linalg.solve(H, B.T).T
    assert (res.status == 0).all() and (plain.status == 0).all()
    close(res.x, exact, 1e-8)
    assert res.n_iter.max() < plain.n_iter.min()


@pytest.mark.slow  # compiles every CSR driver afresh (parfor diagnostics need a non-cached build)
def test_csr_drivers_have_no_parallel_loop_besides_their_pranges():
    """As for the dense drivers (tests/test_kernels.py): an array expression in a parallel=True kernel is a
    thread-pool launch of its own, costly on a busy machine. _hvp has four pranges (row chunks and their
    merge, and the column split's projection and scatter); every other driver one."""
    from fastinfl.kernels import csr as ck

    X, y = sparse_problem(n=40, d=12, density=0.3)
    op = fastinfl.operators.as_operator(X, y)  # the arrays as the operator passes them
    a = (op.indptr, op.indices, op.data)
    n, d = X.shape
    p, m, k = d + 1, 2, 3
    y = op.y
    coef, w, r, ridge = np.full(d, 0.1), np.full(n, 0.2), np.full(n, 0.1), np.ones(p)
    St, idx, stop = np.ones((p, m)), np.arange(n, dtype=np.int64), np.zeros(1, np.uint8)
    calls = {
        "_margins": (*a, coef, 0.1, np.empty(n), stop),
        "_per_example_grads": (*a, y, 0, coef, 0.1, idx, np.empty((n, p)), stop),
        "_loss_grad": (*a, y, 0, coef, 0.1, np.empty(p), np.empty(n), stop),
        "_hessian_sum": (*a, w, ridge, d, np.empty((p, p)), stop),
        "_hvp": (*a, w, ridge, np.ones((p, k)), d, np.empty((p, k)), stop),
        "_influence": (*a, r, St, idx, d, np.empty((m, n)), stop),
        "_top_k": (*a, r, St, d, np.empty((m, 2)), np.empty((m, 2), np.int64), np.empty((m, 2)),
                   np.empty((m, 2), np.int64), stop),
        "_diagonal": (*a, w, ridge, d, np.empty(p), stop),
    }
    for name, args in calls.items():
        loops = parallel_loops(getattr(ck, name), *args)
        assert loops == (4 if name == "_hvp" else 1), (name, loops)


@pytest.mark.parametrize("threads", [1, 2])
def test_csr_top_k_kernel_exact_across_chunks_and_heap_groups(threads):
    """Duplicated rows in far-apart chunks (ties to the smaller index), heaps carried across a thread's
    chunks, rows gathered per offer_block call: against a stable argsort of the densified product."""
    from fastinfl.kernels import csr as _csr

    rng = np.random.default_rng(5)
    n, d, m, k = 20_000, 300, 12, 7
    # small integers everywhere: all sums exact in any order, so ties are exact
    half = sp.random(n, d, density=0.02, format="csr", random_state=rng,
                     data_rvs=lambda size: rng.integers(-3, 4, size).astype(np.float64))
    X = sp.vstack([half, half[::-1]]).tocsr()  # row i equals row 2n - 1 - i
    r = rng.integers(-2, 3, n).astype(np.float64)
    r = np.concatenate([r, r[::-1]])
    St = rng.integers(-3, 4, (d + 1, m)).astype(np.float64)
    assert _csr.chunk_count(2 * n, X.nnz, 0, 64) > 2
    outs = top_k_outputs(m, k)
    with numba_threads(threads):
        _csr._top_k(X.indptr, X.indices, X.data, r, St, d, *outs, np.zeros(1, np.uint8))
    assert_top_k_exact(outs, -(X @ St[:d] + St[d]).T * r, k)
