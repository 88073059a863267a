"""Shared fixtures for the tests."""

import pytest


@pytest.fixture(scope="session")
def breast_cancer():
    """sklearn's breast-cancer data, standardised: X (569, 30), y (569,)."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y
