"""Kernels against the numpy reference, finite differences and themselves."""

import decimal
import math

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher
from problems import assert_top_k_exact, make_problem, numba_threads, parallel_loops, top_k_outputs

import fastinfl
from fastinfl import _config, reference
from fastinfl.kernels import cg as _cg
from fastinfl.kernels import dense as _kernels
from fastinfl.kernels import sigmoid as _sigmoid
from fastinfl.model import objective_gradient, ridge_diagonal
from fastinfl.operators import as_operator


def _objective_and_grad(X, y, theta, l2, d):
    """F and grad F from the production helper over the dense operator (intercept last)."""
    F, grad, _, _ = objective_gradient(as_operator(X, y), theta[:d], float(theta[d]), l2)
    return F, grad


@pytest.fixture
def problem():
    X, y = make_problem(n=400, d=6, seed=7)
    theta = np.random.default_rng(8).standard_normal(7) * 0.5
    return X, y, theta


def test_loss_grad_matches_reference(problem):
    X, y, theta = problem
    F, grad = _objective_and_grad(X, y, theta, 0.7, 6)
    assert F == pytest.approx(reference.objective(X, y, theta[:6], theta[6], l2=0.7), rel=1e-13)
    np.testing.assert_allclose(grad, reference.gradient(X, y, theta[:6], theta[6], l2=0.7), rtol=1e-12,
                               atol=1e-12)


def test_gradient_finite_differences(problem):
    X, y, theta = problem
    _, grad = _objective_and_grad(X, y, theta, 0.7, 6)
    h = 1e-3
    fd = np.empty(7)
    for j in range(7):
        e = np.zeros(7)
        e[j] = h
        f = [_objective_and_grad(X, y, theta + c * e, 0.7, 6)[0] for c in (-2, -1, 1, 2)]
        fd[j] = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)  # fourth-order central difference
    # Truncation O(h^4) ~ 1e-12 times the 5th derivative, rounding ~ eps*|F|/h ~ 1e-11: 1e-7 is safe.
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-7)


def test_hessian_finite_differences_and_reference(problem):
    X, y, theta = problem
    model = fastinfl.LogisticRegression.from_params(theta[:6], theta[6], l2=0.7)
    with pytest.warns(fastinfl.StationarityWarning):
        H = fastinfl.Influence(model, X, y, damping=0.0).hessian()
    np.testing.assert_array_equal(H, H.T)  # exactly symmetric (the kernel mirrors its triangle)
    h = 1e-4
    for j in range(7):
        e = np.zeros(7)
        e[j] = h
        col = (_objective_and_grad(X, y, theta + e, 0.7, 6)[1]
               - _objective_and_grad(X, y, theta - e, 0.7, 6)[1]) / (2 * h)
        # central difference of the gradient: O(h^2) ~ 1e-8 relative
        np.testing.assert_allclose(H[:, j], col, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(H, reference.hessian(X, theta[:6], theta[6], l2=0.7), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_hvp_equals_hessian_times_v(dtype, fit_intercept):
    X, y = make_problem(n=5000, d=9, seed=1, dtype=dtype)
    model = fastinfl.LogisticRegression(l2=1.0, fit_intercept=fit_intercept).fit(X, y)
    inf = fastinfl.Influence(model, X, y, damping=0.3)
    H = inf.hessian()
    p = 9 + fit_intercept
    rng = np.random.default_rng(0)
    v = rng.standard_normal(p)
    np.testing.assert_allclose(inf.hvp(v), H @ v, rtol=1e-12, atol=1e-10)
    for k in (3, _config.HVP_BLAS_MIN_K, 40):  # both the fused-loop and the BLAS branch
        V = rng.standard_normal((k, p))
        np.testing.assert_allclose(inf.hvp(V), V @ H, rtol=1e-12, atol=1e-10)
    ref = reference.hessian(X, model.coef_, model.intercept_, l2=1.0, fit_intercept=fit_intercept,
                            damping=0.3)
    np.testing.assert_allclose(H, ref, rtol=1e-12, atol=1e-9)


def test_per_example_gradients_match_reference(problem):
    X, y, theta = problem
    model = fastinfl.LogisticRegression.from_params(theta[:6], theta[6])
    with pytest.warns(fastinfl.StationarityWarning):
        inf = fastinfl.Influence(model, X, y)
    expected = reference.per_example_gradients(X, y, theta[:6], theta[6])
    np.testing.assert_allclose(inf.gradients(), expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(inf.gradients(X[:5], y[:5]), expected[:5], rtol=1e-13, atol=1e-15)


def test_float32_data_accumulate_in_float64():
    X, y = make_problem(n=200_000, d=4, seed=2, dtype=np.float32, scale=3.0)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    assert inf.X_train.dtype == np.float32  # kept, not converted up
    X64 = X.astype(np.float64)  # the same values, exactly
    H_ref = reference.hessian(X64, model.coef_, model.intercept_, l2=1.0)
    # float64 accumulation: only summation order differs (float32 sums would be off by ~1e-4).
    np.testing.assert_allclose(inf.hessian(), H_ref, rtol=1e-11)
    g = reference.gradient(X64, y, model.coef_, model.intercept_, l2=1.0)
    _, grad = _objective_and_grad(X, y, model.params_, 1.0, 4)
    np.testing.assert_allclose(grad, g, atol=1e-9 * len(y))
    assert any(sig[0].dtype == numba.float32 for sig in _kernels._hessian_sum.signatures)


@pytest.mark.parametrize("z", [1e4, -1e4, 800.0, -800.0, 40.0, -40.0, 1e-3, 0.0])
def test_extreme_logits_scalars(z):
    # 60-digit decimal arithmetic as the reference (no float cancellation or overflow).
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        e = decimal.Decimal(z).exp()
        sig = e / (1 + e)
        for y in (0, 1):
            loss = float((1 + e).ln() - y * decimal.Decimal(z))
            assert math.isfinite(_sigmoid.log_loss(z, float(y)))
            assert _sigmoid.log_loss(z, float(y)) == pytest.approx(loss, rel=1e-15, abs=1e-300)
            assert _sigmoid.residual(z, float(y)) == pytest.approx(float(sig - y), rel=1e-15, abs=1e-300)
        assert _sigmoid.expit(z) == pytest.approx(float(sig), rel=1e-15, abs=1e-300)
        assert _sigmoid.hessian_weight(z) == pytest.approx(float(sig * (1 - sig)), rel=1e-14, abs=1e-300)


def test_loss_residual_weight_is_bitwise_the_three_helpers():
    """The fused scalar (one exp, one log1p) that the passes use gives exactly log_loss, residual and
    hessian_weight, signs of zeros included, over margins from 1e-300 to 1e300 and the edges."""
    rng = np.random.default_rng(7)
    scale = rng.choice([1e-300, 1e-8, 1.0, 5.0, 40.0, 800.0, 1e300], 100_000)
    z = np.concatenate([rng.standard_normal(100_000) * scale, [0.0, -0.0, 5e-324, -5e-324, 745.1, -745.1]])
    for y in (0.0, 1.0):
        for zi in z[::997].tolist() + z[-6:].tolist():
            got = _sigmoid.loss_residual_weight(zi, y)
            want = (_sigmoid.log_loss(zi, y), _sigmoid.residual(zi, y), _sigmoid.hessian_weight(zi))
            assert [v.hex() for v in got] == [v.hex() for v in want], (zi, y)
    # all of them through a kernel (compiled as the passes use it)
    r, w = np.empty(z.size), np.empty(z.size)
    for y in (0.0, 1.0):
        yy = np.full(z.size, y)
        _kernels._residuals_weights(z, yy, 0, r, w)
        ref = np.array([(_sigmoid.residual(v, y), _sigmoid.hessian_weight(v)) for v in z.tolist()[::50]])
        assert np.array_equal(r[::50], ref[:, 0]) and np.array_equal(w[::50], ref[:, 1])
        assert np.array_equal(np.signbit(r[::50]), np.signbit(ref[:, 0]))


def test_extreme_logits_through_api():
    # Margins of exactly +-1e4: two correctly and two wrongly classified points.
    X = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    y = np.array([1, 0, 0, 1])
    model = fastinfl.LogisticRegression.from_params([1e4], 0.0, l2=1.0)
    np.testing.assert_array_equal(model.predict_proba(X)[:, 1], [1.0, 0.0, 1.0, 0.0])
    # Each wrong point costs exactly 1e4; the right ones exp(-1e4) = 0 in float64.
    assert model.objective(X, y) == 2e4 + 0.5 * 1e8
    with pytest.warns(fastinfl.StationarityWarning):
        inf = fastinfl.Influence(model, X, y, damping=1.0)
    G = inf.gradients()
    np.testing.assert_array_equal(G, [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    H = inf.hessian()  # all weights underflow: only l2 + damping remain
    np.testing.assert_array_equal(H, np.diag([2.0, 1.0]))
    assert np.isfinite(inf.influence(X, y)).all()


@pytest.fixture
def one_thread():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def test_thread_count_invariance(one_thread):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    X, y = make_problem(n=60_000, d=12, seed=9)  # 15 row chunks
    X_test, y_test = make_problem(n=30, d=12, seed=10)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        model = fastinfl.LogisticRegression(l2=0.5).fit(X, y)
        inf = fastinfl.Influence(model, X, y, solver="cg")
        V = np.random.default_rng(0).standard_normal((20, 13))
        top = inf.top_k(X_test, y_test, k=7)  # one pair of heaps per thread: 1 or 2 groups of chunks
        results.append([model.params_, inf.hessian(), inf.hvp(V[0]), inf.hvp(V), inf.inverse_hvp(V),
                        inf.influence(X_test, y_test), top.helpful_idx, top.helpful, top.harmful_idx, top.harmful])
    for one, two in zip(*results, strict=True):
        # Chunking depends on sizes only, so the sums are in the same order: bitwise identical.
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("threads", [1, 2])
def test_top_k_kernel_exact_across_chunks_and_heap_groups(threads):
    """Duplicated rows in far-apart chunks (ties broken by index), heaps carried from chunk to chunk
    within a thread's group, the branch-free pre-test of offer_block: against a stable argsort."""
    rng = np.random.default_rng(4)
    # small integers: every product and sum is exact in any order, so the many ties are exact too
    X = rng.integers(-3, 4, (20_000, 20)).astype(np.float64)
    X = np.vstack([X, X[::-1]])  # row i and row 39999 - i are equal: ties across far-apart chunks
    r = rng.integers(-2, 3, 20_000).astype(np.float64)
    r = np.concatenate([r, r[::-1]])
    S = rng.integers(-3, 4, (40, 21)).astype(np.float64)
    assert _kernels.chunk_count(40_000, 20, 40, _kernels._MIN_CHUNK_ROWS, _kernels._MAX_CHUNKS) == 10
    outs = top_k_outputs(40, 9)
    with numba_threads(threads):
        _kernels._top_k(X, r, S, *outs, np.zeros(1, np.uint8))
    assert_top_k_exact(outs, -(X @ S[:, :20].T + S[:, 20]).T * r, 9)


def _kernel_dispatchers():
    for module in (_kernels, _cg, _sigmoid):
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("name, disp", list(_kernel_dispatchers()))
def test_every_kernel_uses_the_shared_decorator(name, disp):
    opts = disp.targetoptions
    assert opts["fastmath"] == set(_config.FASTMATH) and opts["error_model"] == "numpy", name
    assert (type(disp._cache).__name__ != "NullCache") == _config.CACHE, name


def test_hessian_ridge_diagonal():
    np.testing.assert_array_equal(ridge_diagonal(3, True, 2.0, 0.5), [2.5, 2.5, 2.5, 0.5])
    np.testing.assert_array_equal(ridge_diagonal(2, False, 2.0), [2.0, 2.0])


def test_hessian_wide_single_chunk_matches_reference():
    # p > 2048: one row chunk, BLAS left multi-threaded for the dsyrk itself
    X, y = make_problem(n=9000, d=2100, seed=5, scale=0.05)
    coef = np.random.default_rng(1).standard_normal(2100) * 0.05
    assert _kernels.hessian_chunk_count(9000, 2101) == 1 < _kernels.hessian_chunk_count(9000, 101)
    model = fastinfl.LogisticRegression.from_params(coef, 0.1, l2=1.0)
    with pytest.warns(fastinfl.StationarityWarning):
        inf = fastinfl.Influence(model, X, y, solver="cg")
    np.testing.assert_allclose(inf.hessian(), reference.hessian(X, coef, 0.1, l2=1.0), rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # compiles another dtype/layout variant of every kernel (~15 s cold): the slow tier, run by CI too
def test_compiled_signatures_stay_few():
    """Any input layout or dtype reaches the kernels as C-contiguous float32 or float64 (plus read-only)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import numpy as np, fastinfl
        from fastinfl.kernels import dense as _kernels
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 3)); y = (rng.random(300) < 0.5).astype(int)
        ro = X.copy(); ro.setflags(write=False)
        for Xv in (X, X.astype(np.float32), np.round(X * 3).astype(np.int64), np.asfortranarray(X),
                   X.astype(np.float32)[:, ::1], X.tolist(), ro, X > 0):
            m = fastinfl.LogisticRegression(l2=1.0).fit(Xv, y)
            fastinfl.Influence(m, Xv, y).influence(Xv[:2], y[:2])
        print(len(_kernels._hessian_sum.signatures), len(_kernels._loss_grad.signatures))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    # float64, float32 and read-only float64: three variants, whatever came in
    assert out.split() == ["3", "3"]


@pytest.mark.slow
def test_parallel_kernels_have_no_parallel_loop_besides_their_prange():
    """An array expression in a parallel=True kernel becomes its own thread-pool launch (ms on a busy
    machine, even on the serial path): each parallel driver may have exactly one, its prange."""
    X, y = make_problem(n=40, d=3, seed=1)
    y = y.astype(np.float64)
    n, p = 40, 4
    coef, ridge, w, r = np.full(3, 0.1), np.ones(p), np.full(n, 0.2), np.full(n, 0.1)
    S, stop = np.ones((2, p)), np.zeros(1, np.uint8)
    calls = {
        "_sum_squares": (X, stop),
        "_margins": (X, coef, 0.1, np.empty(n), stop),
        "_per_example_grads": (X, y, 0, coef, 0.1, np.empty((n, p)), stop),
        "_loss_grad": (X, y, 0, coef, 0.1, np.empty(p), np.empty(n), stop),
        "_hessian_sum": (X, w, ridge, np.empty((p, p)), stop),
        "_hessian_diagonal": (X, w, ridge, np.empty(p), stop),
        "_setup": (X, y, 0, coef, 0.1, ridge, np.empty(p), np.empty(n), np.empty(n), np.empty(n),
                   np.empty((p, p)), stop),
        "_hvp": (X, w, ridge, np.ones((9, p)), np.empty((9, p)), stop),
        "_influence": (X, r, S, np.arange(n), np.empty((2, n)), stop),
        "_top_k": (X, r, S, np.empty((2, 2)), np.empty((2, 2), np.int64), np.empty((2, 2)),
                   np.empty((2, 2), np.int64), stop),
    }
    for name, args in calls.items():
        loops = parallel_loops(getattr(_kernels, name), *args)
        assert loops == 1, (name, loops)


def test_kernel_cache_is_invalidated_by_an_edit_of_any_kernel_module(tmp_path, monkeypatch):
    """cg._cg_solve compiles dense._hvp into itself: editing dense.py must invalidate cg's cache too."""
    from fastinfl.kernels import _cache, cg

    locator = cg._cg_solve._cache._impl._locator
    assert isinstance(locator, _cache.KernelCacheLocator)
    assert any(s.endswith("dense.py") for s in _cache._SOURCES) and any(s.endswith("_config.py") for s in
                                                                         _cache._SOURCES)
    files = [tmp_path / "cg.py", tmp_path / "dense.py"]
    for f in files:
        f.write_text("x = 1\n")
    monkeypatch.setattr(_cache, "_SOURCES", tuple(str(f) for f in files))
    before = locator.get_source_stamp()
    assert locator.get_source_stamp() == before
    files[1].write_text("x = 22\n")  # the other module, not cg.py
    assert locator.get_source_stamp() != before
