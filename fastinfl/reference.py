"""Pure-NumPy direct-inverse reference of every quantity (the contract's yardstick).

Written for clarity and independently of the kernels: explicit design matrix
X~ = [X, 1], ``np.logaddexp`` loss, the Hessian as X~^T (s * X~) and its
inverse from ``np.linalg.inv``. Memory O(n p) and time O(n p^2 + p^3): for
tests and for ``verify=True`` on samples, not for large data.

Conventions (see the design contract): parameters theta = (coef, intercept),
F(theta) = sum_i loss_i + l2/2 ||coef||^2, H = hess F (+ damping I),
I(z_test, z_i) = -g(z_test)^T H^-1 g(z_i).
"""

import numpy as np


def design(X, fit_intercept=True):
    """X~ (n, p): X in float64 with a column of ones appended when fitting an intercept."""
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if fit_intercept else X


def _theta(coef, intercept, fit_intercept):
    coef = np.asarray(coef, dtype=np.float64)
    return np.append(coef, intercept) if fit_intercept else coef


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def objective(X, y, coef, intercept=0.0, l2=0.0, fit_intercept=True):
    """F(theta) = sum_i [log(1 + e^z_i) - y_i z_i] + l2/2 ||coef||^2."""
    z = design(X, fit_intercept) @ _theta(coef, intercept, fit_intercept)
    y = np.asarray(y, dtype=np.float64)
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * np.dot(coef, coef))


def per_example_gradients(X, y, coef, intercept=0.0, fit_intercept=True):
    """(n, p) log-loss gradients (sigma(z_i) - y_i) x~_i, without the L2 term."""
    Xt = design(X, fit_intercept)
    z = Xt @ _theta(coef, intercept, fit_intercept)
    return (_sigmoid(z) - np.asarray(y, dtype=np.float64))[:, None] * Xt


def gradient(X, y, coef, intercept=0.0, l2=0.0, fit_intercept=True):
    """(p,) gradient of F."""
    g = per_example_gradients(X, y, coef, intercept, fit_intercept).sum(axis=0)
    g[: len(coef)] += l2 * np.asarray(coef, dtype=np.float64)
    return g


def hessian(X, coef, intercept=0.0, l2=0.0, fit_intercept=True, damping=0.0):
    """(p, p) Hessian X~^T diag(sigma (1 - sigma)) X~ + l2 on the coef block + damping I."""
    Xt = design(X, fit_intercept)
    sig = _sigmoid(Xt @ _theta(coef, intercept, fit_intercept))
    H = Xt.T @ (Xt * (sig * (1.0 - sig))[:, None])
    d = len(coef)
    H[np.arange(d), np.arange(d)] += l2
    return H + damping * np.eye(H.shape[0])


def inverse_hvp(H, V):
    """H^-1 V for V of shape (p,) or (k, p), through the explicit inverse."""
    Hinv = np.linalg.inv(H)
    return np.asarray(V, dtype=np.float64) @ Hinv.T


def influence(X_train, y_train, X_test, y_test, coef, intercept=0.0, l2=0.0,
              fit_intercept=True, damping=0.0):
    """(m, n) matrix I[t, i] = -g(z_test_t)^T H^-1 g(z_i)."""
    H = hessian(X_train, coef, intercept, l2, fit_intercept, damping)
    G_train = per_example_gradients(X_train, y_train, coef, intercept, fit_intercept)
    G_test = per_example_gradients(X_test, y_test, coef, intercept, fit_intercept)
    return -G_test @ np.linalg.inv(H) @ G_train.T


def params_change(H, G):
    """(n, p) rows H^-1 g_i: predicted theta_{-i} - theta for gradient rows G."""
    return inverse_hvp(H, G)


def self_influence(H, G):
    """(n,) g_i^T H^-1 g_i."""
    return np.einsum("ij,ij->i", G, inverse_hvp(H, G))


def leverage(X, coef, H, intercept=0.0, fit_intercept=True):
    """(n,) diagonal of the hat matrix S^1/2 X~ H^-1 X~^T S^1/2."""
    Xt = design(X, fit_intercept)
    sig = _sigmoid(Xt @ _theta(coef, intercept, fit_intercept))
    W = np.sqrt(sig * (1 - sig))[:, None] * Xt
    return np.einsum("ij,ij->i", W @ np.linalg.inv(H), W)


def loo_change(infl, lev=None):
    """Predicted test-loss change on removal: -I, or -I / (1 - h_i) when leverages are given."""
    return -infl if lev is None else -infl / (1.0 - lev)


def perturbation(X_train, y_train, X_test, y_test, coef, intercept=0.0, l2=0.0, fit_intercept=True,
                 damping=0.0):
    """(m, n, d) I_pert,loss = -g_test^T H^-1 J_i with J_i = d g(z_i) / d x_i, the (p, d) Jacobian.

    J_i is built explicitly per point: g = r(z) x~ with z = coef . x + b, so
    d g_j / d x_k = sigma'(z) x~_j coef_k + r(z) [j == k].
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    n, d = X_train.shape
    H = hessian(X_train, coef, intercept, l2, fit_intercept, damping)
    S = inverse_hvp(H, per_example_gradients(X_test, y_test, coef, intercept, fit_intercept))
    Xt = design(X_train, fit_intercept)
    z = Xt @ _theta(coef, intercept, fit_intercept)
    sig = _sigmoid(z)
    out = np.empty((S.shape[0], n, d))
    for i in range(n):
        J = sig[i] * (1 - sig[i]) * np.outer(Xt[i], coef)
        J[np.arange(d), np.arange(d)] += sig[i] - y_train[i]
        out[:, i, :] = -S @ J
    return out


def top_k(infl, k):
    """Indices and values of the k smallest negative and k largest positive entries per row.

    Ties go to the smaller index; slots without an entry of the right sign
    (< 0 for the smallest, > 0 for the largest) hold index -1 and NaN.
    """
    low = np.argsort(infl, axis=1, kind="stable")[:, :k]
    high = np.argsort(-infl, axis=1, kind="stable")[:, :k]
    low_v = np.take_along_axis(infl, low, 1)
    high_v = np.take_along_axis(infl, high, 1)
    low = np.where(low_v < 0, low, -1)
    high = np.where(high_v > 0, high, -1)
    return low, np.where(low_v < 0, low_v, np.nan), high, np.where(high_v > 0, high_v, np.nan)


def fit(X, y, l2=0.0, fit_intercept=True, tol=1e-12, max_iter=100):
    """Plain damped Newton on F; returns (coef, intercept). Raises RuntimeError if it stalls."""
    Xt = design(X, fit_intercept)
    y = np.asarray(y, dtype=np.float64)
    d = np.asarray(X).shape[1]
    reg = np.zeros(Xt.shape[1])
    reg[:d] = l2
    theta = np.zeros(Xt.shape[1])

    def F(t):
        z = Xt @ t
        return np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(reg * t * t)

    for _ in range(max_iter):
        sig = _sigmoid(Xt @ theta)
        g = Xt.T @ (sig - y) + reg * theta
        if np.max(np.abs(g)) <= tol * len(y):
            break
        H = Xt.T @ (Xt * (sig * (1 - sig))[:, None]) + np.diag(reg)
        step = np.linalg.solve(H, -g)
        t, f0 = 1.0, F(theta)
        while F(theta + t * step) > f0 + 1e-4 * t * (g @ step) + 1e-13 * abs(f0) and t > 1e-10:
            t *= 0.5
        theta = theta + t * step
    else:
        raise RuntimeError("reference Newton did not converge")
    return (theta[:d], float(theta[d])) if fit_intercept else (theta, 0.0)
