"""Random test problems and checks shared by the test modules."""

import contextlib

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


@contextlib.contextmanager
def numba_threads(threads):
    """Run the block on ``threads`` Numba threads (skips the test when there are fewer), then restore."""
    import numba
    import pytest

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {threads} Numba threads")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def top_k_outputs(m, k):
    """Empty (helpful, helpful_idx, harmful, harmful_idx) arrays (m, k) for a top-k kernel."""
    return [np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64)]


def assert_top_k_exact(outs, infl, k):
    """A top-k kernel's outputs equal a stable argsort of the (m, n) matrix ``infl``, values bitwise."""
    from fastinfl import reference

    low, low_v, high, high_v = reference.top_k(infl, k)
    np.testing.assert_array_equal(outs[1], low)
    np.testing.assert_array_equal(outs[3], high)
    np.testing.assert_array_equal(outs[0], low_v)
    np.testing.assert_array_equal(outs[2], high_v)
