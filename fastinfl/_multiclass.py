"""Multinomial-only influence math on the K x K blocks, for :class:`fastinfl.Influence`.

Notation (``fastinfl.operators.multinomial``): B_i = I_K (x) x~_i (P x K), so that
g_i = B_i r_i and the curvature of row i is B_i W_i B_i^T with
W_i = diag(pi_i) - pi_i pi_i^T; Q_i = B_i^T H^+ B_i (K x K). Every function takes
the :class:`~fastinfl.Influence` whose operator, curvature and solver it uses.
"""

import numpy as np

from ._validation import check_indices
from .multinomial import objective_gradient, ridge_vector, weighted_objective_gradient
from .operators import Curvature
from .solvers import solve_bytes

__all__ = ["exact_change", "group_loss_change", "leverage", "newton_influence", "newton_residuals", "objective_gradient", "perturbation", "quad_blocks", "ridge_vector", "weighted_objective_gradient",
           "self_influence"]


def _curvature_blocks(Pi):
    """(n_sel, K, K) W_i = diag(pi_i sum(pi_i)) - pi_i pi_i^T from Pi (n_sel, K): diag(pi_i) - pi_i pi_i^T for
    probabilities, s_i times it for a weighted row sqrt(s_i) pi_i (kernels/multinomial.py)."""
    W = -Pi[:, :, None] * Pi[:, None, :]
    k = np.arange(Pi.shape[1])
    W[:, k, k] += Pi * Pi.sum(axis=1, keepdims=True)
    return W


def quad_blocks(inf, idx):
    """(n_sel, K, K) Q_i = B_i^T H^+ B_i: K solves per training point (columns e_k (x) x~_i), in batches."""
    op = inf.operator
    K, p, P = op.n_classes, op.row_params, op.n_params
    Q = np.empty((idx.shape[0], K, K))
    for begin, end in inf.batches(idx.shape[0], K * solve_bytes(P)):
        A = op.rows(idx[begin:end])
        nb = A.shape[0]
        B = np.zeros((nb, K, K, p))
        for k in range(K):
            B[:, k, k, :] = A
        sol = inf.solve(B.reshape(nb * K, P)).reshape(nb, K, K, p)
        Q[begin:end] = np.einsum("ikbj,ij->ikb", sol, A)
    return Q


def leverage(inf, idx):
    """(n_sel,) h_i = trace(W_i Q_i): the trace of the i-th K x K diagonal block of the hat matrix."""
    W = _curvature_blocks(inf.operator.weights(inf.curvature, idx))
    return np.einsum("iab,iba->i", W, quad_blocks(inf, idx))


def self_influence(inf, idx):
    """(n_sel,) g_i^T H^+ g_i, one solve per training point."""
    out = np.empty(idx.shape[0])
    for begin, end in inf.batches(idx.shape[0], solve_bytes(inf.n_params)):
        G = inf.operator.example_gradients(inf.curvature, idx[begin:end])
        out[begin:end] = np.einsum("ij,ij->i", G, inf.solve(G))
    return out


def newton_influence(inf, X_test, y_test, train_idx):
    """(m, n_sel) the influence with each r_i replaced by r^_i = (I - W_i Q_i)^-1 r_i: minus the Newton loo change.

    One exact Newton step on the objective without z_i from theta is
    (H - B_i W_i B_i^T)^+ g_i; by the Woodbury identity (in the form
    (H - U V)^-1 = H^-1 + H^-1 U (I - V H^-1 U)^-1 V H^-1, valid although W_i has
    rank K - 1) it equals H^+ B_i r^_i, so the predicted test-loss change is
    s_t^T B_i r^_i. The gauge terms vanish because W_i 1_K = 0 and 1_K . r_i = 0.
    K = 2 gives r_i / (1 - h_i), the binary correction.
    """
    test = inf.test_operator(X_test, y_test, "X_test")
    idx = check_indices(train_idx, inf.n_samples)
    inf.check_result_size((test.n_samples, idx.shape[0]), "influence")
    residuals = np.array(inf.operator.residuals(inf.curvature, np.arange(inf.n_samples)))  # (n, K) NumPy
    residuals[idx] = newton_residuals(inf, idx)
    return inf.operator.influence(Curvature(residuals, inf.curvature.weights), inf.s_test_rows(test), idx)


def newton_residuals(inf, idx):
    """(n_sel, K) r^_i = (I - W_i Q_i)^-1 r_i (see :func:`newton_influence`)."""
    op = inf.operator
    W = _curvature_blocks(op.weights(inf.curvature, idx))
    M = np.eye(op.n_classes) - W @ quad_blocks(inf, idx)
    return np.linalg.solve(M, op.residuals(inf.curvature, idx)[:, :, None])[:, :, 0]


def exact_change(inf, X_test, y_test, train_idx, correction):
    """(m, n_sel) test cross-entropy at theta + dtheta_i minus at theta (loo_change, loss="exact").

    dtheta_i = H^+ g_i ("none") or H^+ B_i r^_i ("newton", one exact Newton step
    without z_i); the test logits move by dz[t, i, k] = x~_t . dtheta_i[k], and
    the loss is re-evaluated by log-sum-exp (stable).
    """
    test = inf.test_operator(X_test, y_test, "X_test")
    idx = check_indices(train_idx, inf.n_samples)
    op = inf.operator
    K, p = op.n_classes, op.row_params
    inf.check_result_size((test.n_samples, idx.shape[0], K), "loo_change")
    A = op.rows(idx)
    R = newton_residuals(inf, idx) if correction == "newton" else op.residuals(inf.curvature, idx)
    dtheta = inf.solve((R[:, :, None] * A[:, None, :]).reshape(idx.shape[0], K * p))
    Xt = test.rows(np.arange(test.n_samples))
    Z = test.margins(*inf.params)  # (m, K)
    Znew = Z[:, None, :] + np.einsum("ikj,tj->tik", dtheta.reshape(-1, K, p), Xt)
    y = test.y
    t = np.arange(Z.shape[0])
    old = np.logaddexp.reduce(Z, axis=1) - Z[t, y]
    new = np.logaddexp.reduce(Znew, axis=2) - Znew[t, :, y]
    return new - old[:, None]


def perturbation(inf, S, idx):
    """(m, n_sel, d) I_pert,loss = -s_t^T d g_i / d x_i.

    d g_i / d x_i = (W_i coef) (x) x~_i + r_i (x) [I_d; 0] (P x d), so
    I_pert[t, j] = -(coef^T W_i a_ti + S_t[:, :d]^T r_i) with a_ti[k] = s_t[k] . x~_i.
    """
    op = inf.operator
    K, p, d = op.n_classes, op.row_params, op.n_features
    A = op.rows(idx)
    W = _curvature_blocks(op.weights(inf.curvature, idx))
    R = op.residuals(inf.curvature, idx)
    out = np.empty((S.shape[0], idx.shape[0], d))
    for t in range(S.shape[0]):
        St = S[t].reshape(K, p)
        v = np.einsum("iab,ib->ia", W, A @ St.T)
        out[t] = -(v @ inf.params[0] + R @ St[:, :d])
    return out


def group_loss_change(inf, test, delta, loss):
    """(m, G) test cross-entropy change for parameter changes ``delta`` (G, P) (Influence.group_change).

    The test logits move by dz[t, g, k] = x~_t . delta_g[k]; ``loss="exact"`` re-evaluates
    the cross-entropy there (log-sum-exp), ``"linear"`` takes r_t . dz[t, g] (first order).
    """
    K, p = inf.operator.n_classes, inf.operator.row_params
    dZ = np.einsum("tj,gkj->tgk", test.rows(np.arange(test.n_samples)), delta.reshape(-1, K, p))
    Z = test.margins(*inf.params)  # (m, K)
    t = np.arange(Z.shape[0])
    if loss == "linear":
        return np.einsum("tk,tgk->tg", np.asarray(test.curvature(Z).residuals), dZ)
    Znew = Z[:, None, :] + dZ
    old = np.logaddexp.reduce(Z, axis=1) - Z[t, test.y]
    new = np.logaddexp.reduce(Znew, axis=2) - Znew[t, :, test.y]
    return new - old[:, None]
