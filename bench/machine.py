"""This machine's limits (measured with NumPy alone, no Numba) and description, for the reports."""

import os
import platform
import time

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS, the one the kernels call)
from threadpoolctl import threadpool_info


def _best_seconds(fn, repeats):
    fn()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def dgemm_gflops(size=2000, repeats=5):
    """Best float64 matrix-multiply rate (GFLOP/s) of NumPy's BLAS on all its threads, size x size."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    return 2 * size**3 / _best_seconds(lambda: a @ b, repeats) / 1e9


def read_bandwidth_gbs(mbytes=400, repeats=5):
    """Best memory read rate (GB/s) over a float64 array of ``mbytes`` MB.

    The read is a matrix-vector product with a 1024-vector held in cache, which
    OpenBLAS spreads over all cores (``np.sum`` runs on one core and reaches
    about a third of this on 2 cores).
    """
    cols = 1024
    a = np.full((mbytes * 2**20 // (8 * cols), cols), 1.0)
    v = np.ones(cols)
    return a.nbytes / _best_seconds(lambda: a @ v, repeats) / 1e9


def cpu_model():
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe():
    """One line: CPU, cores, Numba and BLAS threads, and the versions that matter."""
    blas = sorted({f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
                   for i in threadpool_info() if i["user_api"] == "blas"})
    return (f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"numba {numba.__version__} ({numba.get_num_threads()} threads), numpy {np.__version__}, "
            f"scipy {scipy.__version__}; BLAS: {', '.join(blas)}")
