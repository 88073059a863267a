"""Dask arrays: every quantity equals the in-memory one, on the synchronous, threaded and distributed schedulers.

The distributed tests share one LocalCluster (2 worker processes, 1 thread each, on 127.0.0.1).
"""

import contextlib
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl import datasets, io_dask
from fastinfl._validation import BadValueError

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from fastinfl.operators import as_operator  # noqa: E402
from fastinfl.operators.dask import DaskOperator, DaskRechunkWarning  # noqa: E402

RTOL = 1e-10
D = 6
CHUNK = 700


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(np.nanmax(np.abs(b)), np.finfo(float).tiny) if b.size else 1.0
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    err = np.nanmax(np.abs(a - b)) / scale if b.size else 0.0
    assert err <= rtol, err


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as lc, distributed.Client(lc, set_as_default=False) as c:
        yield c


@contextlib.contextmanager
def on(scheduler, client=None):
    """Run dask passes on ``scheduler``: "synchronous", "threads" or "distributed" (``client``).

    The config holds a name, never the client: a nanny pickles dask's config into every worker it
    (re)starts, and a client does not pickle.
    """
    if scheduler == "distributed":
        with client.as_current(), dask.config.set(scheduler="dask.distributed"):
            yield
    else:
        with dask.config.set(scheduler=scheduler):
            yield


@pytest.fixture(scope="module")
def problem():
    X, y = make_problem(n=3000, d=D, seed=1)
    Xt, yt = make_problem(n=25, d=D, seed=2)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    return X, y, Xt, yt, model


def dask_xy(X, y, chunks=CHUNK):
    return da.from_array(X, chunks=(chunks, X.shape[1])), da.from_array(y, chunks=(chunks,))


@pytest.mark.parametrize("scheduler", ["synchronous", "threads",
                                       pytest.param("distributed", marks=pytest.mark.slow)])
def test_every_quantity_equals_in_memory(scheduler, problem, request):
    X, y, Xt, yt, model = problem
    Xd, yd = dask_xy(X, y)
    idx = np.array([5, 2999, 3, 700, 5, 1400])
    ref = fastinfl.Influence(model, X, y)
    cluster = request.getfixturevalue("cluster") if scheduler == "distributed" else None
    with on(scheduler, cluster):
        fitted = fastinfl.LogisticRegression(l2=1.0).fit(Xd, yd)
        close(fitted.params_, model.params_)
        assert fitted.n_iter_ == model.n_iter_
        close(model.objective(Xd, yd), model.objective(X, y))
        close(model.predict_proba(Xd), model.predict_proba(X))
        close(model.losses(Xd, yd), model.losses(X, y))
        inf = fastinfl.Influence(model, Xd, yd)
        assert isinstance(inf.operator, DaskOperator)
        close(inf.grad_norm_, ref.grad_norm_, 1e-6)  # a near-zero gradient: absolute 1e-6 of its size
        close(inf.hessian(), ref.hessian())
        V = np.random.default_rng(0).standard_normal((9, D + 1))
        close(inf.hvp(V), ref.hvp(V))
        close(inf.hvp(V[:2]), ref.hvp(V[:2]))  # the fused small-k branch of the HVP kernel
        close(inf.s_test(Xt, yt), ref.s_test(Xt, yt))
        Xtd, ytd = dask_xy(Xt, yt, chunks=7)
        close(inf.s_test(Xtd, ytd), ref.s_test(Xt, yt))  # dask test points too
        close(inf.gradients(Xtd, ytd), ref.gradients(Xt, yt))
        close(inf.gradients(), ref.gradients())
        close(inf.influence(Xt, yt, idx), ref.influence(Xt, yt, idx))
        close(inf.influence(Xt, yt), ref.influence(Xt, yt))
        close(inf.self_influence(idx), ref.self_influence(idx))
        close(inf.leverage(idx), ref.leverage(idx))
        close(inf.params_change(idx), ref.params_change(idx))
        close(inf.loo_change(Xt, yt, idx), ref.loo_change(Xt, yt, idx))
        close(inf.perturbation(Xt[:3], yt[:3], idx), ref.perturbation(Xt[:3], yt[:3], idx))
        top, want = inf.top_k(Xt, yt, k=7), ref.top_k(Xt, yt, k=7)
        np.testing.assert_array_equal(top.helpful_idx, want.helpful_idx)
        np.testing.assert_array_equal(top.harmful_idx, want.harmful_idx)
        close(top.helpful, want.helpful)
        close(top.harmful, want.harmful)
        # CG on the distributed HVP (one pass per iteration) reaches the direct solution within tol
        cg = fastinfl.Influence(model, Xd, yd, solver="cg", tol=1e-12)
        close(cg.s_test(Xt, yt), ref.s_test(Xt, yt), 1e-9)
        assert (cg.cg_n_iter_ >= 1).all()


def test_top_k_pads_wrong_sign_slots_like_the_dense_kernel():
    # k = n: every training point is in both lists, so the slots of the wrong sign are padded
    X, y = make_problem(n=40, d=3, seed=7)
    Xt, yt = make_problem(n=4, d=3, seed=8)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    Xd, yd = dask_xy(X, y, chunks=9)
    with on("synchronous"):
        top = fastinfl.Influence(model, Xd, yd).top_k(Xt, yt, k=40)
    want = fastinfl.Influence(model, X, y).top_k(Xt, yt, k=40)
    assert (top.helpful_idx == -1).any() and (top.harmful_idx == -1).any()
    for field in want._fields:
        np.testing.assert_array_equal(np.isnan(getattr(top, field).astype(float)),
                                      np.isnan(getattr(want, field).astype(float)))
    np.testing.assert_array_equal(top.helpful_idx, want.helpful_idx)
    np.testing.assert_array_equal(top.harmful_idx, want.harmful_idx)
    close(top.helpful, want.helpful)


def test_results_do_not_depend_on_partitioning_or_workers(problem, cluster):
    X, y, Xt, yt, model = problem
    X32 = X.astype(np.float32)
    ref = fastinfl.Influence(model, X32, y)
    H_ref, S_ref = ref.hessian(), ref.s_test(Xt, yt)
    results = {}
    runs = [(c, s) for c in (3000, 500, (1000, 37, 1963)) for s in ("synchronous", "threads")]
    for chunks, scheduler in [*runs, ((1000, 37, 1963), "distributed")]:
        Xd, yd = dask_xy(X32, y, chunks)
        assert Xd.dtype == np.float32
        with on(scheduler, cluster):
            inf = fastinfl.Influence(model, Xd, yd)
            results[chunks, scheduler] = inf.hessian(), inf.s_test(Xt, yt), inf.top_k(Xt, yt, k=5)
    for (chunks, scheduler), (H, S, top) in results.items():
        close(H, H_ref, 1e-12)
        close(S, S_ref, 1e-12)
        np.testing.assert_array_equal(top.helpful_idx, ref.top_k(Xt, yt, k=5).helpful_idx)
        # the same partitioning gives the same bits whatever runs it: the reduction order is fixed
        H0, S0, _ = results[chunks, "synchronous"]
        np.testing.assert_array_equal(H, H0)
        np.testing.assert_array_equal(S, S0)


def test_import_fastinfl_imports_no_dask():
    code = ("import sys, numpy as np, fastinfl\n"
            "X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 1, 0, 1])\n"
            "m = fastinfl.LogisticRegression().fit(X, y); fastinfl.Influence(m, X, y).top_k(X, y, 2)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'zarr'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONWARNINGS": "error"})


def test_validation_names_the_global_row_and_refuses_to_gather(problem):
    X, y, Xt, yt, model = problem
    bad_y = y.astype(float).copy()
    bad_y[2101] = np.nan  # (labels 0, 1, 2 would be three classes: a multinomial model)
    with on("synchronous"):
        with pytest.raises(BadValueError, match="row 2101") as exc:
            fastinfl.LogisticRegression().fit(*dask_xy(X, bad_y))
        assert exc.value.row == 2101 and exc.value.name == "y"
        bad_X = X.copy()
        bad_X[1500, 4] = np.nan
        with pytest.raises(BadValueError, match="X_train contains NaN or inf .first at row 1500") as exc:
            fastinfl.Influence(model, *dask_xy(bad_X, y))
        assert (exc.value.row, exc.value.column) == (1500, 4)
        bad_X[1500, 4] = 1e200
        with pytest.raises(BadValueError, match="overflow") as exc:
            fastinfl.LogisticRegression().fit(*dask_xy(bad_X, y))
        assert exc.value.row == 1500
        with pytest.raises(ValueError, match="X_test has 5 features but the model has 6"):
            fastinfl.Influence(model, X, y).s_test(*dask_xy(Xt[:, :5], yt))
        with pytest.raises(ValueError, match="y has 2999 labels but X has 3000 rows"):
            fastinfl.LogisticRegression().fit(da.from_array(X, chunks=(CHUNK, D)), da.from_array(y[:-1]))
        with pytest.raises(ValueError, match="unknown chunk sizes"):
            Xd = da.from_array(X, chunks=(CHUNK, D))
            fastinfl.LogisticRegression().fit(Xd[Xd[:, 0] > 0], y)
        # never np.asarray a dask array silently
        with pytest.raises(ValueError, match="y is a dask array"):
            fastinfl.LogisticRegression().fit(X, da.from_array(y))
        with pytest.raises(ValueError, match="X_train is a dask array"):
            fastinfl.loo_retrain(model, da.from_array(X), y, [0], Xt, yt)
        with pytest.raises(ValueError, match="train_idx is a dask array"):
            fastinfl.Influence(model, X, y).influence(Xt, yt, da.arange(3))
        # chunked across columns: rechunked once, with a warning, same result
        with pytest.warns(DaskRechunkWarning, match="chunked across its 6 columns"):
            assert as_operator(da.from_array(X, chunks=(CHUNK, 4)), y).X.numblocks[1] == 1
        with pytest.warns(DaskRechunkWarning):
            inf = fastinfl.Influence(model, da.from_array(X, chunks=(CHUNK, 4)), y)
        close(inf.hessian(), fastinfl.Influence(model, X, y).hessian())


def test_integer_and_numpy_labels(problem):
    X, y, _, _, model = problem
    Xi = np.round(X * 3).astype(np.int64)
    with on("threads"):
        got = fastinfl.LogisticRegression(l2=1.0).fit(da.from_array(Xi, chunks=(CHUNK, D)), y)  # NumPy y
    close(got.params_, fastinfl.LogisticRegression(l2=1.0).fit(Xi, y).params_)


def test_make_logistic_chunks_reproduce_the_in_memory_generator():
    n, d = 30_000, 300  # generator chunks of 27962 rows: blocks straddle them
    X, y, coef = datasets.make_logistic(n, d, seed=3)
    for chunks in (10_000, 27962, (25_000, 5_000)):
        Xd, yd, coef_d = datasets.make_logistic(n, d, seed=3, chunks=chunks)
        assert isinstance(Xd, da.Array) and Xd.dtype == np.float32 and yd.dtype == np.int8
        assert Xd.numblocks[1] == 1
        with on("threads"):
            Xc, yc = dask.compute(Xd, yd)
        np.testing.assert_array_equal(Xc, X)
        np.testing.assert_array_equal(yc, y)
        np.testing.assert_array_equal(coef_d, coef)
    big, _, _ = datasets.make_logistic(10**9, 100, chunks=10**6)  # lazy: nothing generated
    assert big.shape == (10**9, 100) and big.numblocks == (1000, 1)
    with pytest.raises(ValueError, match="out and chunks"):
        datasets.make_logistic(10, 2, out="x.npy", chunks=5)


def test_zarr_store_and_npy_file_round_trip(problem, tmp_path):
    X, y, Xt, yt, model = problem
    store = tmp_path / "train.zarr"
    da.to_zarr(da.from_array(X.astype(np.float32), chunks=(500, D)), str(store), component="X")
    da.to_zarr(da.from_array(y, chunks=500), str(store), component="y")
    assert io_dask.is_zarr(store)
    data = io_dask.load_zarr(store, rows=CHUNK)
    assert data.X.chunks[0][0] == CHUNK and data.X.numblocks[1] == 1
    X32 = X.astype(np.float32)
    with on("threads"):
        close(fastinfl.LogisticRegression(l2=1.0).fit(data.X, data.y).params_,
              fastinfl.LogisticRegression(l2=1.0).fit(X32, y).params_)
        # the documented plain route: dask.array.from_zarr
        Xz = da.from_zarr(str(store), component="X")
        close(fastinfl.Influence(model, Xz, da.from_zarr(str(store), component="y")).s_test(Xt, yt),
              fastinfl.Influence(model, X32, y).s_test(Xt, yt))
    loaded = io_dask.load_any(store, in_memory=True)  # the command line's loader
    np.testing.assert_array_equal(loaded.X, X32)
    assert isinstance(io_dask.load_any(store).X, da.Array)
    with pytest.raises(fastinfl._io.InputError, match="do not apply"):
        io_dask.load_any(store, label_col="y")
    np.save(tmp_path / "X.npy", X32)
    Xn = io_dask.from_npy(tmp_path / "X.npy", rows=CHUNK)
    assert Xn.chunks[0][:2] == (CHUNK, CHUNK)
    assert len(pickle.dumps(dict(Xn.__dask_graph__()))) < X32.nbytes / 4  # the path, not the data
    with on("synchronous"):
        np.testing.assert_array_equal(Xn.compute(), X32)
    with pytest.raises(fastinfl._io.InputError, match="not a Zarr store"):
        io_dask.load_zarr(tmp_path)
    with pytest.raises(fastinfl._io.InputError, match="no array 'y'"):
        da.to_zarr(da.from_array(X), str(tmp_path / "only_x.zarr"), component="X")
        io_dask.load_zarr(tmp_path / "only_x.zarr")


@pytest.mark.parametrize("kind", ["dense", "dask"])
def test_influence_to_zarr_writes_the_full_matrix(kind, problem, tmp_path, monkeypatch):
    X, y, Xt, yt, model = problem
    import fastinfl._config
    monkeypatch.setattr(fastinfl._config, "INFLUENCE_BLOCK_BYTES", 8 * 25 * 400)  # several blocks
    monkeypatch.setattr("fastinfl.operators.dask.INFLUENCE_BLOCK_BYTES", 8 * 10 * CHUNK)
    ref = fastinfl.Influence(model, X, y).influence(Xt, yt)
    train = (X, y) if kind == "dense" else dask_xy(X, y)
    with on("threads"):
        inf = fastinfl.Influence(model, *train)
        out = inf.influence_to_zarr(tmp_path / "infl.zarr", Xt, yt)
        assert out.shape == (25, 3000)
        close(out[:], ref)
        with pytest.raises(ValueError, match="already exists"):
            inf.influence_to_zarr(tmp_path / "infl.zarr", Xt, yt)
        out32 = inf.influence_to_zarr(tmp_path / "infl.zarr", Xt, yt, dtype=np.float32, overwrite=True)
        assert out32.dtype == np.float32
        close(out32[:], ref, 1e-6)
        close(da.from_zarr(str(tmp_path / "infl.zarr")).compute(), ref, 1e-6)


def test_scheduler_context(problem):
    X, y, _, _, model = problem
    with io_dask.scheduler("synchronous"):
        assert dask.config.get("scheduler") == "synchronous"
        fastinfl.Influence(model, *dask_xy(X, y)).hessian()
    with pytest.raises(fastinfl._io.InputError, match="cannot reach the dask scheduler"):
        with io_dask.scheduler("tcp://127.0.0.1:9", timeout="1s"):
            pass


def _kernel_stats():
    """{kernel: (overloads, cache hits, cache misses)} of the block kernels in this process."""
    from fastinfl.kernels import blocks
    from fastinfl.kernels import dense as kd

    out = {}
    for name in ("loss_grad_block", "curvature_block", "hvp_block", "sum_squares_block"):
        f = getattr(blocks, name)
        out[name] = (len(f.overloads), sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
    f = kd._hessian_rows
    out["_hessian_rows"] = (len(f.overloads), sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
    return out


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASTINFL_CACHE", "1") == "0", reason="Numba's on-disk cache is off")
def test_numba_kernels_load_from_the_disk_cache_once_per_worker(problem, cluster):
    X, y, Xt, yt, model = problem
    Xd, yd = dask_xy(X, y, chunks=300)  # 10 blocks per pass over 2 workers
    with on("synchronous"):  # compiled (or loaded) here first: the cache files exist
        fastinfl.Influence(model, Xd, yd, solver="cg").s_test(Xt, yt)
    cluster.restart()  # fresh worker processes
    with on("distributed", cluster):
        inf = fastinfl.Influence(model, Xd, yd, solver="cg")
        inf.s_test(Xt, yt)  # many HVP passes
        inf.hessian()
    for worker, stats in cluster.run(_kernel_stats).items():
        for name, (overloads, hits, misses) in stats.items():
            if overloads:  # this worker ran the kernel: one overload per signature, loaded from disk
                assert misses == 0 and hits == overloads, (worker, name, stats)
    assert any(s["hvp_block"][0] for s in cluster.run(_kernel_stats).values())


def _slow(block):
    time.sleep(0.25)
    return block


@pytest.mark.slow
@pytest.mark.parametrize("what", ["hessian", "cg"])
def test_a_worker_killed_mid_pass_leaves_the_right_answer_or_a_clear_error(what, problem, cluster):
    X, y, Xt, yt, model = problem
    ref = fastinfl.Influence(model, X, y)
    Xd, yd = dask_xy(X, y, chunks=250)  # 12 blocks of 0.25 s: a pass takes ~1.5 s on 2 workers
    Xd = Xd.map_blocks(_slow, dtype=Xd.dtype)
    outcome = {}

    def kill_one_worker_mid_pass(delay):
        deadline = time.monotonic() + 60
        while not any(cluster.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        victim = sorted(cluster.run(os.getpid).items())[0][1]
        os.kill(victim, 9)
        outcome["killed"] = time.monotonic()

    with on("distributed", cluster):
        # solver "cg" in both cases: with "direct" the constructor would form H already (its setup pass);
        # built for CG, hessian() forms H in the pass that the worker is killed during
        inf = fastinfl.Influence(model, Xd, yd, solver="cg")
        killer = threading.Thread(target=kill_one_worker_mid_pass, args=(0.5 if what == "hessian" else 2.0,))
        killer.start()
        try:
            outcome["value"] = inf.hessian() if what == "hessian" else inf.s_test(Xt[:3], yt[:3])
        except Exception as exc:  # checked below
            outcome["error"] = exc
        done = time.monotonic()
        killer.join(60)
    assert outcome["killed"] < done  # killed while the pass ran
    if "error" in outcome:
        assert "worker" in str(outcome["error"]).lower() or type(outcome["error"]).__name__ == "KilledWorker"
    elif what == "hessian":
        close(outcome["value"], ref.hessian(), 1e-12)
    else:
        close(outcome["value"], ref.s_test(Xt[:3], yt[:3]), 1e-9)
    cluster.wait_for_workers(2, timeout=60)


def test_make_logistic_chunks_reproduce_correlated_data():
    X, y, _ = fastinfl.datasets.make_logistic(3000, 5, seed=4, correlation=0.9, dtype=np.float64)
    Xd, yd, _ = fastinfl.datasets.make_logistic(3000, 5, seed=4, correlation=0.9, dtype=np.float64, chunks=701)
    np.testing.assert_array_equal(Xd.compute(), X)  # chunked generation is exact, correlation included
    np.testing.assert_array_equal(yd.compute(), y)
