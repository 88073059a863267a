"""Random test problems shared by the test modules."""

import numpy as np


def make_problem(n=200, d=5, seed=0, dtype=np.float64, scale=1.0):
    """Random non-separable binary problem: X (n, d), y (n,) in {0, 1}."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * scale).astype(dtype)
    coef = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X.astype(np.float64) @ coef - 0.3)))).astype(np.int64)
    return X, y


def parallel_loops(kernel, *args):
    """Parallel loops (parfors) of a fresh, uncached parallel build of ``kernel`` run on ``args``.

    An array expression in a parallel=True kernel is a thread-pool launch of its own, costly on a busy
    machine even on the serial path: each driver should have only its prange(s).
    """
    import numba

    from fastinfl import _config

    fresh = numba.njit(parallel=True, fastmath=set(_config.FASTMATH), error_model="numpy")(kernel.py_func)
    fresh(*args)
    return fresh.get_metadata(fresh.signatures[0])["parfor_diagnostics"].count_parfors()
