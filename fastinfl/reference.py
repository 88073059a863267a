"""Pure-NumPy direct-inverse reference of every quantity (the contract's yardstick).

Written for clarity and independently of the kernels: explicit design matrix
X~ = [X, 1], ``np.logaddexp`` loss, the Hessian as X~^T (s * X~) and its
inverse from ``np.linalg.inv``. Memory O(n p) and time O(n p^2 + p^3): for
tests and for ``verify=True`` on samples, not for large data.

Conventions (README, "Conventions"): parameters theta = (coef, intercept),
F(theta) = sum_i loss_i + l2/2 ||coef||^2, H = hess F (+ damping I),
I(z_test, z_i) = -g(z_test)^T H^-1 g(z_i). ``loss="logistic"`` (log-loss, y in {0, 1})
or ``"poisson"`` (e^z - y z, y >= 0) selects the loss of the one-margin functions.
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


def _loss(z, y, loss):
    """(loss_i, r_i = d loss / dz, w_i = d^2 loss / dz^2) per row at margins z."""
    y = np.asarray(y, dtype=np.float64)
    if loss == "poisson":
        mu = np.exp(z)
        return mu - y * z, mu - y, mu
    if loss != "logistic":
        raise ValueError(f"unknown loss {loss!r}")
    sig = _sigmoid(z)
    return np.logaddexp(0.0, z) - y * z, sig - y, sig * (1.0 - sig)


def objective(X, y, coef, intercept=0.0, l2=0.0, fit_intercept=True, loss="logistic"):
    """F(theta) = sum_i loss(y_i, z_i) + l2/2 ||coef||^2 (log-loss: log(1 + e^z_i) - y_i z_i)."""
    z = design(X, fit_intercept) @ _theta(coef, intercept, fit_intercept)
    return float(np.sum(_loss(z, y, loss)[0]) + 0.5 * l2 * np.dot(coef, coef))


def per_example_gradients(X, y, coef, intercept=0.0, fit_intercept=True, loss="logistic"):
    """(n, p) loss gradients r_i x~_i (log-loss: (sigma(z_i) - y_i) x~_i), without the L2 term."""
    Xt = design(X, fit_intercept)
    z = Xt @ _theta(coef, intercept, fit_intercept)
    return _loss(z, y, loss)[1][:, None] * Xt


def gradient(X, y, coef, intercept=0.0, l2=0.0, fit_intercept=True, loss="logistic"):
    """(p,) gradient of F."""
    g = per_example_gradients(X, y, coef, intercept, fit_intercept, loss).sum(axis=0)
    g[: len(coef)] += l2 * np.asarray(coef, dtype=np.float64)
    return g


def hessian(X, coef, intercept=0.0, l2=0.0, fit_intercept=True, damping=0.0, loss="logistic"):
    """(p, p) Hessian X~^T diag(w) X~ + l2 on the coef block + damping I (log-loss: w = sigma (1 - sigma))."""
    Xt = design(X, fit_intercept)
    w = _loss(Xt @ _theta(coef, intercept, fit_intercept), 0.0, loss)[2]
    H = Xt.T @ (Xt * w[:, None])
    d = len(coef)
    H[np.arange(d), np.arange(d)] += l2
    return H + damping * np.eye(H.shape[0])


def inverse_hvp(H, V):
    """H^-1 V for V of shape (p,) or (k, p), through the explicit inverse."""
    Hinv = np.linalg.inv(H)
    return np.asarray(V, dtype=np.float64) @ Hinv.T


def influence(X_train, y_train, X_test, y_test, coef, intercept=0.0, l2=0.0,
              fit_intercept=True, damping=0.0, loss="logistic"):
    """(m, n) matrix I[t, i] = -g(z_test_t)^T H^-1 g(z_i)."""
    H = hessian(X_train, coef, intercept, l2, fit_intercept, damping, loss)
    G_train = per_example_gradients(X_train, y_train, coef, intercept, fit_intercept, loss)
    G_test = per_example_gradients(X_test, y_test, coef, intercept, fit_intercept, loss)
    return -G_test @ np.linalg.inv(H) @ G_train.T


def params_change(H, G):
    """(n, p) rows H^-1 g_i: predicted theta_{-i} - theta for gradient rows G."""
    return inverse_hvp(H, G)


def self_influence(H, G):
    """(n,) g_i^T H^-1 g_i."""
    return np.einsum("ij,ij->i", G, inverse_hvp(H, G))


def leverage(X, coef, H, intercept=0.0, fit_intercept=True, loss="logistic"):
    """(n,) diagonal of the hat matrix S^1/2 X~ H^-1 X~^T S^1/2 (S = diag(w))."""
    Xt = design(X, fit_intercept)
    w = _loss(Xt @ _theta(coef, intercept, fit_intercept), 0.0, loss)[2]
    W = np.sqrt(w)[:, None] * Xt
    return np.einsum("ij,ij->i", W @ np.linalg.inv(H), W)


def loo_change(infl, lev=None):
    """Predicted test-loss change on removal: -I, or -I / (1 - h_i) when leverages are given."""
    return -infl if lev is None else -infl / (1.0 - lev)


def perturbation(X_train, y_train, X_test, y_test, coef, intercept=0.0, l2=0.0, fit_intercept=True,
                 damping=0.0, loss="logistic"):
    """(m, n, d) I_pert,loss = -g_test^T H^-1 J_i with J_i = d g(z_i) / d x_i, the (p, d) Jacobian.

    J_i is built explicitly per point: g = r(z) x~ with z = coef . x + b, so
    d g_j / d x_k = w(z) x~_j coef_k + r(z) [j == k].
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    n, d = X_train.shape
    H = hessian(X_train, coef, intercept, l2, fit_intercept, damping, loss)
    S = inverse_hvp(H, per_example_gradients(X_test, y_test, coef, intercept, fit_intercept, loss))
    Xt = design(X_train, fit_intercept)
    z = Xt @ _theta(coef, intercept, fit_intercept)
    _, r, w = _loss(z, y_train, loss)
    out = np.empty((S.shape[0], n, d))
    for i in range(n):
        J = w[i] * np.outer(Xt[i], coef)
        J[np.arange(d), np.arange(d)] += r[i]
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


def fit(X, y, l2=0.0, fit_intercept=True, tol=1e-12, max_iter=100, loss="logistic"):
    """Plain damped Newton on F; returns (coef, intercept). Raises RuntimeError if it stalls."""
    Xt = design(X, fit_intercept)
    y = np.asarray(y, dtype=np.float64)
    d = np.asarray(X).shape[1]
    reg = np.zeros(Xt.shape[1])
    reg[:d] = l2
    theta = np.zeros(Xt.shape[1])

    def F(t):
        return np.sum(_loss(Xt @ t, y, loss)[0]) + 0.5 * np.sum(reg * t * t)

    for _ in range(max_iter):
        _, r, w = _loss(Xt @ theta, y, loss)
        g = Xt.T @ r + reg * theta
        if np.max(np.abs(g)) <= tol * len(y):
            break
        H = Xt.T @ (Xt * w[:, None]) + np.diag(reg)
        step = np.linalg.solve(H, -g)
        t, f0 = 1.0, F(theta)
        while F(theta + t * step) > f0 + 1e-4 * t * (g @ step) + 1e-13 * abs(f0) and t > 1e-10:
            t *= 0.5
        theta = theta + t * step
    else:
        raise RuntimeError("reference Newton did not converge")
    return (theta[:d], float(theta[d])) if fit_intercept else (theta, 0.0)


# =====================================================================================================
# Multinomial (softmax) logistic regression: the same quantities, written independently of the kernels
# and of the gauge handling (explicit Kronecker products, numpy's pseudo-inverse).
#
# theta = the (K, p) rows [w_k, b_k] flattened class by class (P = K p); y holds class codes 0..K-1;
# F = sum_i -log softmax(Theta x~_i)_{y_i} + l2/2 ||W||_F^2; g_i = (pi_i - e_{y_i}) kron x~_i;
# H = sum_i kron(diag(pi_i) - pi_i pi_i^T, x~_i x~_i^T) + l2 on the coefficients (+ damping I);
# H is singular along the common shift of the classes: I = -g_test^T pinv(H) g_i.
# =====================================================================================================
MN_PINV_RCOND = 1e-10  # relative cut-off of pinv: the gauge eigenvalues are ~1e-16 ||H||, the others >> 1e-10


def mn_theta(coef, intercept=0.0, fit_intercept=True):
    """(K, p) parameter rows [w_k, b_k] (w_k without an intercept)."""
    coef = np.asarray(coef, dtype=np.float64)
    if not fit_intercept:
        return coef.copy()
    b = np.broadcast_to(np.asarray(intercept, dtype=np.float64), (coef.shape[0],))
    return np.hstack([coef, b[:, None]])


def mn_probabilities(X, coef, intercept=0.0, fit_intercept=True):
    """(n, K) softmax(Theta x~_i), through scipy-free log-sum-exp."""
    Z = design(X, fit_intercept) @ mn_theta(coef, intercept, fit_intercept).T
    return np.exp(Z - np.logaddexp.reduce(Z, axis=1, keepdims=True))


def mn_objective(X, y, coef, intercept=0.0, l2=0.0, fit_intercept=True):
    """F(theta) = sum_i [logsumexp(z_i) - z_{i,y_i}] + l2/2 ||coef||_F^2."""
    Z = design(X, fit_intercept) @ mn_theta(coef, intercept, fit_intercept).T
    y = np.asarray(y, dtype=np.int64)
    loss = np.logaddexp.reduce(Z, axis=1) - Z[np.arange(len(y)), y]
    return float(loss.sum() + 0.5 * l2 * np.sum(np.asarray(coef) ** 2))


def mn_per_example_gradients(X, y, coef, intercept=0.0, fit_intercept=True):
    """(n, K p) rows kron(pi_i - e_{y_i}, x~_i)."""
    Xt = design(X, fit_intercept)
    Pi = mn_probabilities(X, coef, intercept, fit_intercept)
    R = Pi - np.eye(Pi.shape[1])[np.asarray(y, dtype=np.int64)]
    return np.stack([np.kron(R[i], Xt[i]) for i in range(Xt.shape[0])])


def mn_hessian(X, coef, intercept=0.0, l2=0.0, fit_intercept=True, damping=0.0):
    """(K p, K p) sum_i kron(diag(pi_i) - pi_i pi_i^T, x~_i x~_i^T) + l2 on every coefficient + damping I."""
    Xt = design(X, fit_intercept)
    Pi = mn_probabilities(X, coef, intercept, fit_intercept)
    K, p = Pi.shape[1], Xt.shape[1]
    H = np.zeros((K * p, K * p))
    for i in range(Xt.shape[0]):
        H += np.kron(np.diag(Pi[i]) - np.outer(Pi[i], Pi[i]), np.outer(Xt[i], Xt[i]))
    reg = np.tile(np.r_[np.full(np.asarray(coef).shape[1], l2), np.zeros(p - np.asarray(coef).shape[1])], K)
    return H + np.diag(reg) + damping * np.eye(K * p)


def mn_pinv(H):
    """Pseudo-inverse of the symmetric H (cut-off MN_PINV_RCOND relative to the largest eigenvalue)."""
    return np.linalg.pinv(H, rcond=MN_PINV_RCOND, hermitian=True)


def mn_influence(X_train, y_train, X_test, y_test, coef, intercept=0.0, l2=0.0, fit_intercept=True, damping=0.0):
    """(m, n) I[t, i] = -g(z_test_t)^T pinv(H) g(z_i)."""
    H = mn_hessian(X_train, coef, intercept, l2, fit_intercept, damping)
    G = mn_per_example_gradients(X_train, y_train, coef, intercept, fit_intercept)
    Gt = mn_per_example_gradients(X_test, y_test, coef, intercept, fit_intercept)
    return -Gt @ mn_pinv(H) @ G.T


def mn_leverage(X, coef, H, intercept=0.0, fit_intercept=True):
    """(n,) trace(pinv(H) H_i) with H_i = kron(W_i, x~_i x~_i^T): the trace of the hat matrix's K x K block."""
    Xt = design(X, fit_intercept)
    Pi = mn_probabilities(X, coef, intercept, fit_intercept)
    Hp = mn_pinv(H)
    return np.array([np.trace(Hp @ np.kron(np.diag(Pi[i]) - np.outer(Pi[i], Pi[i]), np.outer(Xt[i], Xt[i])))
                     for i in range(Xt.shape[0])])


def mn_newton_loo_change(X_train, y_train, X_test, y_test, coef, train_idx, intercept=0.0, l2=0.0,
                         fit_intercept=True, damping=0.0):
    """(m, n_sel) g_test^T pinv(H - H_i) g_i: one explicit Newton step from theta on F without z_i."""
    H = mn_hessian(X_train, coef, intercept, l2, fit_intercept, damping)
    Xt = design(X_train, fit_intercept)
    Pi = mn_probabilities(X_train, coef, intercept, fit_intercept)
    G = mn_per_example_gradients(X_train, y_train, coef, intercept, fit_intercept)
    Gt = mn_per_example_gradients(X_test, y_test, coef, intercept, fit_intercept)
    out = np.empty((Gt.shape[0], len(train_idx)))
    for j, i in enumerate(train_idx):
        Hi = np.kron(np.diag(Pi[i]) - np.outer(Pi[i], Pi[i]), np.outer(Xt[i], Xt[i]))
        out[:, j] = Gt @ (mn_pinv(H - Hi) @ G[i])
    return out


def mn_perturbation(X_train, y_train, X_test, y_test, coef, intercept=0.0, l2=0.0, fit_intercept=True,
                    damping=0.0):
    """(m, n, d) -g_test^T pinv(H) J_i with the (K p, d) Jacobian J_i = d g_i / d x_i built column by column.

    g = kron(r, x~) with r = softmax(Theta x~) - e_y: d g / d x_m = kron(W coef[:, m], x~) + kron(r, e_m).
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    n, d = X_train.shape
    H = mn_hessian(X_train, coef, intercept, l2, fit_intercept, damping)
    S = mn_per_example_gradients(X_test, y_test, coef, intercept, fit_intercept) @ mn_pinv(H)
    Xt = design(X_train, fit_intercept)
    Pi = mn_probabilities(X_train, coef, intercept, fit_intercept)
    R = Pi - np.eye(Pi.shape[1])[np.asarray(y_train, dtype=np.int64)]
    coef = np.asarray(coef, dtype=np.float64)
    out = np.empty((S.shape[0], n, d))
    for i in range(n):
        W = np.diag(Pi[i]) - np.outer(Pi[i], Pi[i])
        J = np.stack([np.kron(W @ coef[:, m], Xt[i]) + np.kron(R[i], np.eye(Xt.shape[1])[m]) for m in range(d)],
                     axis=1)
        out[:, i, :] = -S @ J
    return out


def mn_fit(X, y, n_classes, l2=0.0, fit_intercept=True, tol=1e-12, max_iter=100):
    """Plain damped Newton with pinv steps; returns (coef (K, d), intercept (K,)), intercepts summing to 0."""
    Xt = design(X, fit_intercept)
    y = np.asarray(y, dtype=np.int64)
    n, p = Xt.shape
    d = np.asarray(X).shape[1]
    K = n_classes
    theta = np.zeros((K, p))
    Y = np.eye(K)[y]

    def F(t):
        coef = t[:, :d]
        return mn_objective(X, y, coef, t[:, d] if fit_intercept else 0.0, l2, fit_intercept)

    for _ in range(max_iter):
        b = theta[:, d] if fit_intercept else 0.0
        Pi = mn_probabilities(X, theta[:, :d], b, fit_intercept)
        g = ((Pi - Y).T @ Xt)
        g[:, :d] += l2 * theta[:, :d]
        g = g.ravel()
        if np.max(np.abs(g)) <= tol * n:
            break
        step = -(mn_pinv(mn_hessian(X, theta[:, :d], b, l2, fit_intercept)) @ g).reshape(K, p)
        t, f0 = 1.0, F(theta)
        while F(theta + t * step) > f0 + 1e-4 * t * (g @ step.ravel()) + 1e-13 * abs(f0) and t > 1e-10:
            t *= 0.5
        theta = theta + t * step
    else:
        raise RuntimeError("reference multinomial Newton did not converge")
    if fit_intercept:
        theta[:, d] -= theta[:, d].mean()
    return theta[:, :d], (theta[:, d] if fit_intercept else np.zeros(K))
