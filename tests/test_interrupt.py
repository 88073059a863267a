"""Ctrl-C stops long kernels promptly and leaves the process usable."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastinfl.kernels import dense as _kernels
from fastinfl.operators.policy import call_interruptible

SCRIPT = textwrap.dedent("""
    import signal, sys, time
    import numpy as np, fastinfl
    # a shell starting us in the background (no job control) sets SIGINT to ignored: restore Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    X, y, _ = fastinfl.datasets.make_logistic(400_000, 40, seed=0, dtype=np.float64)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X[:2000], y[:2000])
    inf = fastinfl.Influence(model, X, y, stationarity_tol=1.0, batch_size=20_000)
    inf.top_k(X[:2], y[:2], k=3)  # compile before the long call
    print("ready", flush=True)
    t0 = time.perf_counter()
    try:
        inf.top_k(X[:{m}], y[:{m}], k=10)  # one kernel call of ~10 s or more
        print("finished", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted after {{time.perf_counter() - t0:.2f}} s", flush=True)
    top = inf.top_k(X[:3], y[:3], k=2)  # still usable afterwards
    print("usable", top.helpful_idx.shape, flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery")
def test_ctrl_c_interrupts_top_k_and_process_stays_usable():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(m=20_000)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave the child running (nor its Popen to warn at exit)
            proc.kill()
            proc.communicate()
    elapsed = time.perf_counter() - sent
    assert "interrupted after" in out, out + err
    assert "usable (3, 2)" in out
    # the kernel polls its flag once per 512-row block: far sooner than the call would end (over a
    # minute); 10 s leaves room for a loaded machine (seen: 4.7 s with load average 15 on 2 cores)
    assert elapsed < 10, out


def test_call_interruptible_returns_value_and_propagates_errors():
    X = np.ones((10, 2))
    H = np.empty((3, 3))
    assert call_interruptible(_kernels._hessian_sum, X, np.ones(10), np.zeros(3), H) is None
    np.testing.assert_array_equal(H, [[10, 10, 10], [10, 10, 10], [10, 10, 10]])

    def failing(stop):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        call_interruptible(failing)


def test_concurrent_calls_leave_blas_threads_as_they_were():
    import threading

    from problems import make_problem
    from threadpoolctl import threadpool_info

    import fastinfl

    X, y = make_problem(n=6000, d=20, seed=1)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(inf.top_k(X[:30], y[:30], k=3).helpful_idx)
                inf.hvp(np.ones((9, 21)))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r, results[0]) for r in results)
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before


def test_interruptible_calls_reuse_one_kernel_thread():
    """Sequential calls run on one long-lived worker (a fresh thread per call would also create a fresh
    Numba thread team: ~1.3 ms a call measured); concurrent calls get one worker each."""
    import threading

    X = np.ones((50, 3))
    H = np.empty((4, 4))

    def kernel_threads():
        return [t for t in threading.enumerate() if t.name == "fastinfl-kernel"]

    call_interruptible(_kernels._hessian_sum, X, np.ones(50), np.zeros(4), H)
    before = kernel_threads()
    for _ in range(5):
        call_interruptible(_kernels._hessian_sum, X, np.ones(50), np.zeros(4), H)
    assert kernel_threads() == before and len(before) >= 1
