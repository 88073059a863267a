"""Removing training points and refitting, beyond first order: the test loss at the predicted
parameters, and groups of points removed together.

Conventions (README, "Conventions"): removing the set S from the training objective F gives
F_-S = F - sum_{i in S} loss_i. At the fitted theta (grad F = 0) its gradient is -g_S, with
g_S = sum_{i in S} g(z_i), and its Hessian H - H_S, H_S = sum_{i in S} w_i x~_i x~_i^T. One Newton
step on F_-S from theta moves the parameters by (H - H_S)^-1 g_S; first order drops H_S: H^-1 g_S.

Multinomial (K classes, P = K p): g_i = r_i (x) x~_i and H_S = sum_{i in S} W_i (x) x~_i x~_i^T with
W_i = diag(pi_i) - pi_i pi_i^T; H^-1 is the pseudo-inverse H^+ (operators/multinomial.py). H_S
vanishes on H's null space N_0 (W_i 1_K = 0) and g_S is orthogonal to it, so (H - H_S)^+ g_S is
(H~ - H_S)^-1 g_S with the gauged H~ = H + c Pi_0 that the solvers factor.
"""

import numpy as np

from .exceptions import ConvergenceError
from .losses import LOSSES
from .operators.base import cg_on_hvp
from .solvers import CG, Direct, line_search


class DowndatedHessian:
    """H - H_S for the solvers: ``hvp``, ``hessian``, ``cg``, ``project``.

    ``full`` the :class:`~fastinfl.operators.HessianOperator` of all rows, ``A``
    (|S|, p) rows x~_i of the group, ``w`` their curvature: (|S|,) weights w_i
    (binary, H_S = sum w_i x~_i x~_i^T) or (|S|, K) probabilities pi_i
    (multinomial, H_S = sum W_i (x) x~_i x~_i^T). H_S vanishes on the null space of
    a gauged ``full`` (module docstring), so ``hessian()`` = full.hessian() - H_S is
    what Direct factors and CG runs projected as on ``full``.
    """

    def __init__(self, full, A, w):
        self.full, self.A, self.w = full, A, w
        self.n_params = full.n_params

    def _group_hvp(self, V):
        """(k, P) H_S V for the rows V."""
        if self.w.ndim == 1:
            return ((V @ self.A.T) * self.w) @ self.A
        s, K = self.w.shape
        T = V.reshape(V.shape[0], K, -1) @ self.A.T  # (k, K, s): t_i[a] = v[a] . x~_i
        T = self.w.T * (T - np.einsum("kas,sa->ks", T, self.w)[:, None, :])  # W_i t_i
        return (T @ self.A).reshape(V.shape[0], -1)

    def hvp(self, V):
        return self.full.hvp(V) - self._group_hvp(V)

    def hessian(self):
        if self.w.ndim == 1:
            return self.full.hessian() - (self.A.T * self.w) @ self.A
        s, K = self.w.shape
        p = self.A.shape[1]
        H = self.full.hessian().copy()
        for a in range(K):
            for b in range(a + 1):
                wab = (self.w[:, a] if a == b else 0.0) - self.w[:, a] * self.w[:, b]
                blk = (self.A.T * wab) @ self.A
                H[a * p:(a + 1) * p, b * p:(b + 1) * p] -= blk
                if a != b:
                    H[b * p:(b + 1) * p, a * p:(a + 1) * p] -= blk.T
        return H

    def project(self, B):
        return self.full.project(B)

    def cg(self, B, tol, max_iter):
        # H_S maps into the complement of the null space, so projecting as full does keeps CG there
        B = np.ascontiguousarray(self.project(B))
        res = cg_on_hvp(lambda V: self.project(self.hvp(V)), B, tol, max_iter)
        return res._replace(x=self.project(res.x))


def woodbury_cheaper(size, p):
    """True when Woodbury (size solves with H's factor, a size x size system) costs less than
    forming H - H_S and refactoring it: size p^2 + size^3 / 3 < size p^2 + p^3 / 3, i.e. size < p."""
    return size < p


def group_steps(inf, groups, correction, steps):
    """(G, P) parameter changes and (G, steps) Newton decrements for removing each group.

    ``inf`` is the :class:`fastinfl.Influence` (operator, curvature, Hessian operator, solver).
    correction "none": H^-1 g_S (decrements NaN). "newton": ``steps`` Newton steps on F_-S from
    theta; the first by Woodbury on H's factor when the group's rank-|S| (binary) or |S| K
    (multinomial) downdate is smaller than P (direct solver), else by refactoring (direct) or CG
    on HVPs of H - H_S; later steps at the new parameters, each one pass over X for the gradient
    and one for the Hessian (direct) or one per CG iteration.
    Newton decrement of a step: lambda^2 = -grad F_-S . step (the predicted decrease of F_-S).
    """
    op, curv, hess = inf.operator, inf.curvature, inf.hessian_operator
    P = op.n_params
    multi = getattr(op, "multiclass", False)
    G = len(groups)
    A = [op.rows(idx) for idx in groups]
    r = [op.residuals(curv, idx) for idx in groups]  # (|S|,) or (|S|, K)
    gS = np.stack([(ri.T @ a).reshape(-1) for a, ri in zip(A, r)])  # (G, P): sum r_i (x) x~_i
    decrements = np.full((G, steps), np.nan)
    if correction == "none":
        return inf.solve(gS), decrements
    direct = inf.uses_direct
    w = [op.weights(curv, idx) for idx in groups]
    rank = op.n_classes if multi else 1  # columns of one row's downdate (K for softmax, of rank K - 1)
    delta = np.empty((G, P))
    small = [g for g in range(G) if direct and woodbury_cheaper(groups[g].shape[0] * rank, P)]
    if small and multi:
        for g, dg in zip(small, _woodbury_multinomial(inf, [A[g] for g in small], [r[g] for g in small],
                                                      [w[g] for g in small])):
            delta[g] = dg
    elif small:
        # one batched solve for every small group's rows and gradient: H^-1 B_g^T and H^-1 g_S
        B = [np.sqrt(w[g])[:, None] * A[g] for g in small]
        sol = inf.solve(np.vstack(B + [gS[small]]))
        HinvG = sol[sum(B_g.shape[0] for B_g in B):]
        at = 0
        for j, g in enumerate(small):
            HinvBt = sol[at:at + B[j].shape[0]]  # rows H^-1 b_i
            at += B[j].shape[0]
            C = np.eye(B[j].shape[0]) - B[j] @ HinvBt.T  # I - B H^-1 B^T
            delta[g] = HinvG[j] + HinvBt.T @ np.linalg.solve(C, B[j] @ HinvG[j])
    small = set(small)
    for g in range(G):
        if g not in small:
            H_g = DowndatedHessian(hess, A[g], w[g])
            solver = Direct(H_g) if direct else CG(H_g, inf.tol, inf.max_iter)
            delta[g] = solver.solve(gS[g][None, :])[0]
    decrements[:, 0] = np.sqrt(np.maximum(np.einsum("ij,ij->i", gS, delta), 0.0))
    if steps > 1:
        for g in range(G):
            delta[g], decrements[g, 1:] = _more_steps(inf, groups[g], A[g], delta[g], steps - 1, direct)
    return delta, decrements


def _woodbury_multinomial(inf, A, R, Pi):
    """(H - H_S)^+ g_S for each group (lists of (|S|, p) rows, (|S|, K) residuals and probabilities).

    With B_S = [e_k (x) x~_i] (P x |S| K), W_S = blockdiag(W_i) and Q_S = B_S^T H^+ B_S,
    Woodbury gives (H - B_S W_S B_S^T)^+ B_S r_S = H^+ B_S r^_S, r^_S = (I - W_S Q_S)^-1 r_S
    (the group form of ``_multiclass.newton_residuals``; exact under the gauge since W_i 1_K = 0
    and 1_K . r_i = 0). One batched solve of the |S| K columns of every group.
    """
    K, p = Pi[0].shape[1], A[0].shape[1]
    cols = []
    for a in A:
        B = np.zeros((a.shape[0], K, K, p))
        for k in range(K):
            B[:, k, k, :] = a
        cols.append(B.reshape(-1, K * p))
    sol = inf.solve(np.vstack(cols))  # rows H^+ (e_b (x) x~_j)
    out, at = [], 0
    for a, r, pi in zip(A, R, Pi):
        s = a.shape[0]
        S_g = sol[at:at + s * K]
        at += s * K
        Q = np.einsum("jbal,il->iajb", S_g.reshape(s, K, K, p), a).reshape(s * K, s * K)
        W = np.zeros((s, K, s, K))
        i = np.arange(s)
        W[i, :, i, :] = -pi[:, :, None] * pi[:, None, :]
        W[i, np.arange(K)[:, None], i, np.arange(K)[:, None]] += (pi * pi.sum(axis=1, keepdims=True)).T
        W = W.reshape(s * K, s * K)
        r_hat = np.linalg.solve(np.eye(s * K) - W @ Q, r.reshape(-1))
        out.append(S_g.T @ r_hat)
    return out


def _more_steps(inf, idx, A, delta, count, direct):
    """``count`` further damped Newton steps on F_-S from theta + delta; the total change and decrements.

    Each step: F_-S and its gradient (one pass over X), the Hessian or CG on HVPs
    of H - H_S at the current parameters, and the fit's line search
    (``solvers.line_search``) on F_-S (one pass per trial; the full step is usually taken).
    """
    from .model import objective_gradient
    from .multinomial import objective_gradient as mn_objective_gradient

    op, l2 = inf.operator, inf.model.l2_
    coef, intercept = inf.params
    d = op.n_features
    multi = getattr(op, "multiclass", False)
    y_S = op.y[idx]
    loss = None if multi else LOSSES[op.loss]
    if multi:
        K, p = op.n_classes, op.row_params
        theta = np.hstack([coef, intercept[:, None]]).reshape(-1) if op.fit_intercept else \
            coef.reshape(-1).copy()
        onehot = np.eye(K)[y_S]
    else:
        theta = np.append(coef, intercept) if op.fit_intercept else coef.copy()

    def evaluate(t):
        """F_-S(t), its gradient, the margins of all rows and the group's curvature (w_S or pi_S)."""
        if multi:
            T = t.reshape(K, p)
            F, grad, _, Z = mn_objective_gradient(op, T[:, :d], T[:, d] if op.fit_intercept else 0.0, l2)
            Z_S = A @ T.T  # (|S|, K) logits of the group
            lse = np.logaddexp.reduce(Z_S, axis=1)
            F -= float(np.sum(lse - Z_S[np.arange(len(idx)), y_S]))
            pi_S = np.exp(Z_S - lse[:, None])
            grad -= ((pi_S - onehot).T @ A).reshape(-1)
            return F, grad, Z, pi_S
        F, grad, _, z = objective_gradient(op, t[:d], float(t[d]) if op.fit_intercept else 0.0, l2)
        z_S = A @ t
        F -= float(np.sum(loss.value(z_S, y_S)))
        r_S, w_S = loss.derivatives(z_S, y_S)
        grad -= A.T @ r_S
        return F, grad, z, w_S

    out = np.empty(count)
    F, grad, z, w_S = evaluate(theta + delta)
    for s in range(count):
        H_g = DowndatedHessian(op.hessian_operator(op.curvature(z), inf.hessian_operator.ridge), A, w_S)
        solver = Direct(H_g) if direct else CG(H_g, inf.tol, inf.max_iter)
        step = -solver.solve(np.ascontiguousarray(H_g.project(grad[None, :])))[0]
        out[s] = np.sqrt(max(-float(grad @ step), 0.0))
        found = line_search(evaluate, theta + delta, step, F, grad, op.n_samples - len(idx))
        if found is None:
            raise ConvergenceError(f"group_change: Newton step {s + 2} on the objective without a group of "
                                   f"{len(idx)} points found no decrease; use fewer steps or refit.")
        t, (F, grad, z, w_S) = found
        delta = delta + t * step
    return delta, out
