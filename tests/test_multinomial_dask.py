"""Multinomial logistic regression on dask arrays: every quantity equals the in-memory model to 1e-10 on the
local schedulers and on a real distributed.LocalCluster; validation names the global row; X never gathered."""

import contextlib

import numpy as np
import pytest
from test_multinomial import make_multiclass

import fastinfl

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

L2 = 0.7
K = 3


def close(a, b, rtol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    err = np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(b)), 1e-300)
    assert err <= rtol, err


@pytest.fixture(scope="module")
def problem():
    X, y = make_multiclass(3000, 6, K, seed=31)
    Xt, yt = make_multiclass(5, 6, K, seed=32)
    return X, y, Xt, yt, fastinfl.MultinomialLogisticRegression(l2=L2).fit(X, y)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as lc, distributed.Client(lc, set_as_default=False) as c:
        yield c


def _on(scheduler, client):
    if scheduler == "distributed":
        return client.as_current()
    return dask.config.set(scheduler=scheduler)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads",
                                       pytest.param("distributed", marks=pytest.mark.slow)])  # as tests/test_dask.py
@pytest.mark.parametrize("kw", [dict(solver="direct"), dict(solver="cg", tol=1e-13),
                                dict(solver="cg", preconditioner="jacobi", tol=1e-13)], ids=["direct", "cg", "pcg"])
def test_every_quantity_equals_in_memory(problem, scheduler, kw, request):
    X, y, Xt, yt, model = problem
    Xd = da.from_array(X, chunks=(700, X.shape[1]))
    client = request.getfixturevalue("cluster") if scheduler == "distributed" else None
    ref = fastinfl.Influence(model, X, y, solver="direct")
    idx = np.array([5, 2999, 3, 700, 5, 1400])
    with _on(scheduler, client), dask.config.set(scheduler="dask.distributed") if client else contextlib.nullcontext():
        if kw["solver"] == "direct":
            fitted = fastinfl.MultinomialLogisticRegression(l2=L2).fit(Xd, y)
            close(fitted.coef_, model.coef_)
            close(fitted.intercept_, model.intercept_)
            close(model.predict_proba(Xd), model.predict_proba(X))
            close(model.objective(Xd, y), model.objective(X, y), 1e-13)
        inf = fastinfl.Influence(model, Xd, y, **kw)
        assert inf._op.kind == "dask-multinomial"
        close(inf.hessian(), ref.hessian())
        V = np.random.default_rng(0).standard_normal((4, inf.n_params))
        close(inf.hvp(V), ref.hvp(V))
        close(inf.gradients(), ref.gradients())
        close(inf.s_test(Xt, yt), ref.s_test(Xt, yt))
        close(inf.influence(Xt, yt), ref.influence(Xt, yt))
        close(inf.influence(Xt, yt, idx), ref.influence(Xt, yt, idx))
        close(inf.params_change(idx), ref.params_change(idx))
        close(inf.self_influence(idx), ref.self_influence(idx))
        close(inf.leverage(idx), ref.leverage(idx))
        for corr in ("none", "newton"):
            for loss in ("exact", "linear"):
                close(inf.loo_change(Xt, yt, idx, correction=corr, loss=loss),
                      ref.loo_change(Xt, yt, idx, correction=corr, loss=loss))
            close(inf.group_change(Xt, yt, [[1, 2, 3], [2999]], correction=corr),
                  ref.group_change(Xt, yt, [[1, 2, 3], [2999]], correction=corr))
        close(inf.perturbation(Xt, yt, idx), ref.perturbation(Xt, yt, idx))
        top, want = inf.top_k(Xt, yt, k=6), ref.top_k(Xt, yt, k=6)
        np.testing.assert_array_equal(top.helpful_idx, want.helpful_idx)
        np.testing.assert_array_equal(top.harmful_idx, want.harmful_idx)
        close(top.helpful, want.helpful)
        close(top.harmful, want.harmful)


@pytest.mark.slow  # starts the LocalCluster (2 worker processes)
def test_same_partitioning_same_bits_on_every_scheduler(problem, cluster):
    X, y, Xt, yt, model = problem
    Xd = da.from_array(X, chunks=(500, X.shape[1]))
    got = []
    for scheduler in ("synchronous", "threads", "distributed"):
        with _on(scheduler, cluster), dask.config.set(scheduler="dask.distributed") if scheduler == "distributed" \
                else contextlib.nullcontext():
            inf = fastinfl.Influence(model, Xd, y, solver="cg")
            got.append((inf.hessian(), inf.influence(Xt, yt)))
    for H, infl in got[1:]:
        np.testing.assert_array_equal(H, got[0][0])
        np.testing.assert_array_equal(infl, got[0][1])


def test_validation_names_the_global_row(problem):
    X, y, *_ = problem
    bad = X.copy()
    bad[1403, 2] = np.nan
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match="X contains NaN or inf .*row 1403"):
            fastinfl.MultinomialLogisticRegression().fit(da.from_array(bad, chunks=(700, 6)), y)
        fitted = fastinfl.MultinomialLogisticRegression(l2=L2).fit(da.from_array(X, chunks=(700, 6)),
                                                                  da.from_array(y, chunks=700))
        close(fitted.coef_, problem[4].coef_)  # dask labels: mapped to classes once (n labels to the client)
        with pytest.raises(ValueError, match="X_train has 5 features but the model has 6"):
            fastinfl.Influence(problem[4], da.from_array(X[:, :5], chunks=(700, 5)), y)


def test_x_is_never_gathered(problem, monkeypatch):
    """Every pass returns per-block partials: computing X itself (or a large slice of it) would be a gather."""
    X, y, Xt, yt, model = problem
    Xd = da.from_array(X, chunks=(700, X.shape[1]))
    real = dask.compute

    def watched(*args, **kwargs):
        for a in args:
            if isinstance(a, da.Array) and a.ndim == 2 and a.shape[1] == X.shape[1] and a.shape[0] > 100:
                raise AssertionError(f"X gathered: {a.shape}")
        return real(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", watched)
    with dask.config.set(scheduler="synchronous"):
        inf = fastinfl.Influence(model, Xd, y, solver="cg")
        assert inf.influence(Xt, yt).shape == (5, 3000)
        assert inf.top_k(Xt, yt, 3).harmful.shape == (5, 3)
