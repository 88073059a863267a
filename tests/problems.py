"""Random test problems shared by the test modules."""

import numpy as np


def make_problem(n=200, d=5, seed=0, dtype=np.float64, scale=1.0):
    """Random non-separable binary problem: X (n, d), y (n,) in {0, 1}."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * scale).astype(dtype)
    coef = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X.astype(np.float64) @ coef - 0.3)))).astype(np.int64)
    return X, y
