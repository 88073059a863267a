"""Concurrent callers: every threading layer, 8 threads, dense and CSR data (binary), CSR and Dask data (multinomial),
results equal to sequential calls."""

import ctypes
import importlib
import itertools
import os
import subprocess
import sys
import textwrap

import numba
import pytest

import fastinfl
from fastinfl.operators import policy

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    import numba, fastinfl

    # n > 4096 rows: the passes over X run parallel row chunks (the launches that need the policy);
    # the small test sets and train_idx selections run serial chunks beside them.
    X, y, _ = fastinfl.datasets.make_logistic(12_000, 8, seed=0, dtype=np.float64)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    infs = {"direct": fastinfl.Influence(model, X, y, solver="direct"),
            "cg": fastinfl.Influence(model, X, y, solver="cg", tol=1e-10)}
    Xt, yt, _ = fastinfl.datasets.make_logistic(6, 8, seed=1, dtype=np.float64)
    V = np.random.default_rng(2).standard_normal((3, 9))
    idx = np.arange(0, 12_000, 97)
    # CSR: ~10 nonzeros per row, 40000 rows: its top_k and margin passes run parallel chunks too (without
    # the launch lock, workqueue aborted here with 40000 rows; 12000 rows were too few to show it).
    Xs, ys, _ = fastinfl.datasets.make_logistic(40_000, 2000, seed=0, dtype=np.float64, density=0.005)
    infs["sparse"] = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(Xs, ys), Xs, ys, solver="cg",
                                        tol=1e-10)
    Xst, yst, _ = fastinfl.datasets.make_logistic(4, 2000, seed=1, dtype=np.float64, density=0.005)
    Vs = np.random.default_rng(3).standard_normal((2, 2001))
    calls = {
        "top_k": lambda inf: inf.top_k(Xt, yt, k=5),
        "influence": lambda inf: inf.influence(Xt[:2], yt[:2]),
        "influence_sel": lambda inf: inf.influence(Xt, yt, train_idx=idx),
        "s_test": lambda inf: inf.s_test(Xt, yt),
        "hvp": lambda inf: inf.hvp(V),
        "inverse_hvp": lambda inf: inf.inverse_hvp(V),
        "self_influence": lambda inf: inf.self_influence(idx),
        "gradients": lambda inf: inf.gradients(Xt, yt),
        "sparse top_k": lambda inf: inf.top_k(Xst, yst, k=5),
        "sparse s_test": lambda inf: inf.s_test(Xst, yst),
        "sparse hvp": lambda inf: inf.hvp(Vs),
    }
    # The multinomial model (K = 4) on CSR (30000 rows: parallel chunks) and on Dask (blocks of 3000 rows
    # on the threaded scheduler: serial block kernels from the scheduler's threads beside the others).
    import dask, dask.array as da, scipy.sparse as sp
    dask.config.set(scheduler="threads")
    rng = np.random.default_rng(4)
    Xm = sp.random(30_000, 40, density=0.15, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    ym = rng.integers(0, 4, 30_000)
    mm = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(Xm, ym)
    infs["mn-sparse"] = fastinfl.Influence(mm, Xm, ym)
    infs["mn-sparse-cg"] = fastinfl.Influence(mm, Xm, ym, solver="cg", tol=1e-10)
    Xd = da.from_array(Xm[:12_000].toarray(), chunks=(3000, 40))
    infs["mn-dask"] = fastinfl.Influence(fastinfl.MultinomialLogisticRegression(l2=1.0).fit(Xd, ym[:12_000]),
                                         Xd, ym[:12_000])
    Xmt, ymt = rng.standard_normal((3, 40)), np.array([0, 3, 1])
    Vm = rng.standard_normal((2, 4 * 41))
    idm = np.arange(0, 12_000, 211)
    calls.update({
        "mn top_k": lambda inf: inf.top_k(Xmt, ymt, k=4),
        "mn influence_sel": lambda inf: inf.influence(Xmt, ymt, train_idx=idm),
        "mn s_test": lambda inf: inf.s_test(Xmt, ymt),
        "mn hvp": lambda inf: inf.hvp(Vm),
        "mn self_influence": lambda inf: inf.self_influence(idm),
    })
    # CG (one parallel launch per iteration) for the solves only; the direct solver for everything.
    jobs = ([("direct", c) for c in calls if not c.startswith(("sparse", "mn "))]
            + [("cg", c) for c in ("s_test", "inverse_hvp", "top_k")]
            + [("sparse", c) for c in calls if c.startswith("sparse")]
            + [(kind, c) for kind in ("mn-sparse", "mn-dask") for c in calls if c.startswith("mn ")]
            + [("mn-sparse-cg", c) for c in ("mn s_test", "mn top_k")])
    expected = {job: calls[job[1]](infs[job[0]]) for job in jobs}  # sequential
    mismatches, errors = [], []

    def worker(t):
        for rep in range(2):
            for j in range(len(jobs)):
                job = jobs[(j + 3 * t + rep) % len(jobs)]
                try:
                    got = calls[job[1]](infs[job[0]])
                except BaseException as exc:
                    errors.append(f"{job}: {exc!r}")
                    continue
                for a, b in zip(np.atleast_1d(got) if not isinstance(got, tuple) else got,
                                np.atleast_1d(expected[job]) if not isinstance(got, tuple) else expected[job]):
                    if not np.array_equal(a, b, equal_nan=True):
                        mismatches.append(job)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("layer", numba.threading_layer(), "errors", errors[:3], "mismatches", sorted(set(mismatches)))
""")


# workqueue (~19 s cold) and tbb in the slow tier (CI runs it): subprocesses of 10-20 s each in the default
# tier's 5-minute budget; omp stays in the default tier.
@pytest.mark.parametrize("layer", [pytest.param("workqueue", marks=pytest.mark.slow), "omp",
                                   pytest.param("tbb", marks=pytest.mark.slow)])
def test_eight_threads_mixing_calls_match_sequential_results(layer):
    if layer not in policy.available_layers():
        pytest.skip(f"Numba's {layer} threading layer cannot be loaded here")
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    # workqueue without the policy's launch lock aborts here ("Fatal Python error: Aborted").
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Identical, not close: row chunks and their merge order do not depend on the thread count.
    assert f"layer {layer} errors [] mismatches []" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_set_num_threads_validates_and_sets_the_budget():
    before = fastinfl.get_num_threads()
    try:
        fastinfl.set_num_threads(1)
        assert fastinfl.get_num_threads() == 1
        for bad in (0, -1, numba.config.NUMBA_NUM_THREADS + 1, 1.5, "two", None, True):
            with pytest.raises(ValueError, match="n must be an integer between 1 and"):
                fastinfl.set_num_threads(bad)
    finally:
        fastinfl.set_num_threads(before)


def test_fastinfl_num_threads_environment_variable():
    code = "import fastinfl; print(fastinfl.get_num_threads())"
    env = dict(os.environ, FASTINFL_NUM_THREADS="1", NUMBA_NUM_THREADS="2")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "1"
    env["FASTINFL_NUM_THREADS"] = "9"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "FASTINFL_NUM_THREADS must be an integer between 1 and" in proc.stderr


def test_concurrent_parallel_calls_share_the_budget_and_restore_blas(monkeypatch):
    """Two parallel calls in flight get budget // 2 threads each; BLAS limits come back afterwards."""
    from threadpoolctl import threadpool_info

    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    monkeypatch.setattr(policy, "_launch_is_safe", lambda: True)
    monkeypatch.setattr(policy, "_budget", 4)
    # every library held to one thread (a single-threaded caller would stop NumPy's OpenBLAS instead:
    # tests/test_blas_quiesce.py)
    monkeypatch.setattr(policy, "QUIESCE_BLAS", False)
    with policy._parallel_call() as first:
        with policy._parallel_call() as second:
            assert (first, second) == (4, 2)
            assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
    monkeypatch.setattr(policy, "_launch_is_safe", lambda: False)  # workqueue: serialised, whole budget
    with policy._parallel_call() as only:
        assert only == 4 and policy._launch_lock.locked()
    assert not policy._launch_lock.locked()


def _loaded_openblas():
    """{path: (get, set)} thread-count functions of every OpenBLAS mapped into this process.

    Found from /proc/self/maps and the libraries' own symbols (plain, or with
    scipy-openblas's "scipy_" prefix and "64_" suffix), not through threadpoolctl.
    """
    importlib.import_module("scipy.linalg.cython_blas")  # SciPy's OpenBLAS, which Numba's BLAS calls use

    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps
                        if "openblas" in line.rsplit("/", 1)[-1].lower() and ".so" in line})
    libs = {}
    for path in paths:
        lib = ctypes.CDLL(path)  # already loaded: the same library, not a second copy
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            if get is not None:
                libs[path] = (get, getattr(lib, f"{prefix}openblas_set_num_threads{suffix}"))
                break
    return libs


def _threads_inside_the_limit(libs):
    """({path: threads} inside single_threaded_blas(), {path: threads} after), each library at 2 before."""
    before = {path: get() for path, (get, _) in libs.items()}
    try:
        for _, set_threads in libs.values():
            set_threads(2)  # so that 1 inside is the limiter's doing, whatever the machine's default
        with policy.single_threaded_blas():
            inside = {path: get() for path, (get, _) in libs.items()}
        return inside, {path: get() for path, (get, _) in libs.items()}
    finally:
        for path, (_, set_threads) in libs.items():
            set_threads(before[path])


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="finds the libraries in /proc/self/maps")
def test_blas_limit_holds_every_loaded_openblas_to_one_thread():
    """Every OpenBLAS in the process, e.g. NumPy's libscipy_openblas64_ and SciPy's libscipy_openblas from
    pip wheels (two libraries, two thread pools), is at 1 thread inside the limit and restored after."""
    libs = _loaded_openblas()
    if not libs:
        pytest.skip("no OpenBLAS is loaded (another BLAS)")
    inside, after = _threads_inside_the_limit(libs)
    assert inside == dict.fromkeys(libs, 1)
    assert after == dict.fromkeys(libs, 2)  # restored
