"""Beside NumPy and a second process: OpenBLAS's spinning threads stopped around parallel kernels, and
OMP_WAIT_POLICY=PASSIVE chosen at import (operators/policy.py). Threads are counted, never timed."""

import json
import os
import subprocess
import sys

import pytest

# A parallel kernel (policy.run with parallel=True) right after a threaded NumPy BLAS call; the
# process's threads counted in /proc/self/task before and after, in a single-threaded program and
# with a second Python thread alive.
CHILD = """
import json, os, sys, threading
import numpy as np
import fastinfl
from fastinfl.kernels import dense
from fastinfl.operators import policy
def tasks():
    return len(os.listdir("/proc/self/task"))
X = np.random.default_rng(0).standard_normal((4096, 64))
A = np.random.default_rng(1).standard_normal((400, 400))
sum_sq = lambda: policy.run(dense._sum_squares, X, work=1 << 30, parallel=True)
sum_sq(); A @ A  # compile; start every pool
out = {"omp": os.environ.get("OMP_WAIT_POLICY")}
for case in ("single", "second thread"):
    if case == "second thread":
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
    A @ A
    before = tasks()
    sum_sq()
    out[case] = [before, tasks()]
    A @ A  # NumPy starts its threads again and computes as before
    out[case].append(tasks())
    if case == "second thread":
        stop.set()
print(json.dumps(out))
"""


def _child(env):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", NUMBA_NUM_THREADS="2", **env)
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if env.get(key) == "":
            del env[key]
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts threads in /proc/self/task")
def test_openblas_threads_stopped_around_a_parallel_kernel_only_when_single_threaded():
    from fastinfl.operators import policy

    policy._blas_limit()  # finds the libraries
    policy._blas_restore()
    if not any(shutdown for _, _, shutdown in policy._blas):
        pytest.skip("no OpenBLAS with its own thread pool is loaded")
    out = _child({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""})
    before, after, again = out["single"]
    assert after < before  # OpenBLAS's idle workers stopped (NumPy's and SciPy's)
    assert again > after  # and started again by NumPy's next threaded call
    before, after, _ = out["second thread"]
    assert after >= before  # another Python thread might be inside BLAS: none stopped
    out = _child({"FASTINFL_QUIESCE_BLAS": "0", "OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""})
    assert out["single"][1] >= out["single"][0]


def test_openmp_wait_policy_passive_unless_the_user_chose_one():
    assert _child({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""})["omp"] == "PASSIVE"
    assert _child({"OMP_WAIT_POLICY": "ACTIVE"})["omp"] == "ACTIVE"
    assert _child({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "1000"})["omp"] is None
