"""Shared data for the tests."""

import numpy as np
import pytest


def make_problem(n=200, d=5, seed=0, dtype=np.float64, scale=1.0):
    """Random non-separable binary problem: X (n, d), y (n,) in {0, 1}."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * scale).astype(dtype)
    coef = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X.astype(np.float64) @ coef - 0.3)))).astype(np.int64)
    return X, y


@pytest.fixture(scope="session")
def breast_cancer():
    """sklearn's breast-cancer data, standardised: X (569, 30), y (569,)."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y
