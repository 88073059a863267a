"""Built-in data: the seed notebook's example."""

import numpy as np


def seed():
    """The seed notebook's data: (X_train (3, 1), y_train (3,), X_test (1, 1), y_test (1,))."""
    X_train = np.array([[0.0], [1.0], [2.0]])
    y_train = np.array([0, 0, 1])
    return X_train, y_train, np.array([[1.5]]), np.array([1])


def seed_fit(lr=0.1, n_steps=2000):
    """The seed's own fit: plain gradient descent on the summed log-loss from (0, 0).

    Returns (w, b); with the defaults w = 6.872478, b = -10.066114. The data are
    separable, so this is not an optimum (none exists without L2).
    """
    X, y, _, _ = seed()
    x = X[:, 0]
    w = b = 0.0
    for _ in range(n_steps):
        p = 1.0 / (1.0 + np.exp(-(w * x + b)))
        w -= lr * float(np.sum((p - y) * x))
        b -= lr * float(np.sum(p - y))
    return w, b
