"""Removing training points and refitting, beyond first order: the test loss at the predicted
parameters, and groups of points removed together.

Conventions (design contract): removing the set S from the training objective F gives
F_-S = F - sum_{i in S} loss_i. At the fitted theta (grad F = 0) its gradient is -g_S, with
g_S = sum_{i in S} g(z_i), and its Hessian H - H_S, H_S = sum_{i in S} w_i x~_i x~_i^T. One Newton
step on F_-S from theta moves the parameters by (H - H_S)^-1 g_S; first order drops H_S: H^-1 g_S.
"""

import numpy as np
import scipy.special

from ._validation import check_indices
from .operators.base import cg_on_hvp
from .solvers import CG, Direct


def check_groups(groups, n, name="groups"):
    """Groups as a list of distinct, sorted int64 index arrays (each non-empty, in [0, n)).

    ``groups`` is a list of index arrays, or an (n,) integer array of group labels
    (label g >= 0 puts the point in group g; negative labels put it in no group;
    groups are numbered by label, empty labels skipped).
    """
    if isinstance(groups, np.ndarray) and groups.ndim == 1 and groups.shape[0] == n and \
            groups.dtype.kind in "iu" and not isinstance(groups, list):
        labels = groups.astype(np.int64)
        out = [np.flatnonzero(labels == g) for g in np.unique(labels[labels >= 0])]
    else:
        if isinstance(groups, np.ndarray) and groups.ndim == 1:
            raise ValueError(
                f"{name} as an array must be (n,) = ({n},) integer group labels; got shape {groups.shape} "
                f"and dtype {groups.dtype}. Pass a list of index arrays for explicit groups."
            )
        try:
            items = list(groups)
        except TypeError:
            raise ValueError(f"{name} must be a list of index arrays or (n,) integer labels; "
                             f"got {type(groups).__name__}.") from None
        out = []
        for g, item in enumerate(items):
            idx = check_indices(item, n, f"{name}[{g}]")
            if np.unique(idx).shape[0] != idx.shape[0]:
                raise ValueError(f"{name}[{g}] lists a training point more than once.")
            out.append(np.sort(idx))
    if not out:
        raise ValueError(f"{name} holds no group (every label negative, or an empty list).")
    for g, idx in enumerate(out):
        if idx.shape[0] == 0:
            raise ValueError(f"{name}[{g}] is empty.")
        if idx.shape[0] >= n:
            raise ValueError(f"{name}[{g}] removes every training point: nothing is left to refit.")
    return out


def loss_change(z, y, dz):
    """log-loss(y, z + dz) - log-loss(y, z), elementwise, stable in margin space.

    With u = -(2y - 1) z the loss is softplus(u); the change is
    log1p(sigma(u) expm1(du)) for |du| < 1 (no cancellation when the change is tiny,
    even when sigma(u) is) and softplus(u + du) - softplus(u) otherwise.
    """
    sign = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    u = -sign * z
    du = -sign * dz
    u, du = np.broadcast_arrays(u, du)
    small = np.abs(du) < 1.0
    with np.errstate(over="ignore"):
        near = np.log1p(scipy.special.expit(u) * np.expm1(np.where(small, du, 0.0)))
        far = np.logaddexp(0.0, u + du) - np.logaddexp(0.0, u)
    return np.where(small, near, far)


class DowndatedHessian:
    """H - H_S with H_S = sum_{i in S} w_i x~_i x~_i^T: ``hvp``, ``hessian``, ``cg`` for the solvers.

    ``A`` (|S|, p) rows x~_i of the group, ``w`` (|S|,) their curvature weights, ``full`` the
    :class:`~fastinfl.operators.HessianOperator` of all rows.
    """

    def __init__(self, full, A, w):
        self.full, self.A, self.w = full, A, w
        self.n_params = full.n_params

    def hvp(self, V):
        return self.full.hvp(V) - ((V @ self.A.T) * self.w) @ self.A

    def hessian(self):
        return self.full.hessian() - (self.A.T * self.w) @ self.A

    def cg(self, B, tol, max_iter):
        return cg_on_hvp(self.hvp, B, tol, max_iter)


def woodbury_cheaper(size, p):
    """True when Woodbury (size solves with H's factor, a size x size system) costs less than
    forming H - H_S and refactoring it: size p^2 + size^3 / 3 < size p^2 + p^3 / 3, i.e. size < p."""
    return size < p


def group_steps(inf, groups, correction, steps):
    """(G, p) parameter changes and (G, steps) Newton decrements for removing each group.

    ``inf`` is the :class:`fastinfl.Influence` (operator, curvature, Hessian operator, solver).
    correction "none": H^-1 g_S (decrements NaN). "newton": ``steps`` Newton steps on F_-S from
    theta; the first by Woodbury on H's factor when the group is smaller than p (direct solver),
    else by refactoring (direct) or CG on HVPs of H - H_S; later steps at the new parameters, each
    one pass over X for the gradient and one for the Hessian (direct) or one per CG iteration.
    Newton decrement of a step: lambda^2 = -grad F_-S . step (the predicted decrease of F_-S).
    """
    op, curv, hess = inf._op, inf._curv, inf._hess
    p = op.n_params
    G = len(groups)
    A = [op.rows(idx) for idx in groups]
    r = [op.residuals(curv, idx) for idx in groups]
    gS = np.stack([a.T @ ri for a, ri in zip(A, r)])  # (G, p)
    decrements = np.full((G, steps), np.nan)
    if correction == "none":
        return inf._solve_rows(gS), decrements
    direct = inf._use_direct
    w = [op.weights(curv, idx) for idx in groups]
    delta = np.empty((G, p))
    small = [g for g in range(G) if direct and woodbury_cheaper(groups[g].shape[0], p)]
    if small:
        # one batched solve for every small group's rows and gradient: H^-1 B_g^T and H^-1 g_S
        B = [np.sqrt(w[g])[:, None] * A[g] for g in small]
        sol = inf._solve_rows(np.vstack(B + [gS[small]]))
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


def _more_steps(inf, idx, A, delta, count, direct):
    """``count`` further damped Newton steps on F_-S from theta + delta; the total change and decrements.

    Each step: F_-S and its gradient (one pass over X), the Hessian or CG on HVPs
    of H - H_S at the current parameters, and Armijo backtracking on F_-S (one
    pass per trial; the full step is usually taken).
    """
    from .model import objective_gradient
    from .operators import HessianOperator

    op, l2 = inf._op, inf.model.l2
    d = op.n_features
    theta = np.append(inf._coef, inf._intercept) if op.fit_intercept else inf._coef.copy()
    y_S = op.y[idx]

    def evaluate(t):
        """F_-S(t), its gradient, the margins of all rows and of the group's rows."""
        F, grad, _, z = objective_gradient(op, t[:d], float(t[d]) if op.fit_intercept else 0.0, l2)
        z_S = A @ t
        F -= float(np.sum(np.logaddexp(0.0, z_S) - y_S * z_S))
        grad -= A.T @ (scipy.special.expit(z_S) - y_S)
        return F, grad, z, z_S

    out = np.empty(count)
    F, grad, z, z_S = evaluate(theta + delta)
    for s in range(count):
        w_S = scipy.special.expit(z_S) * scipy.special.expit(-z_S)
        H_g = DowndatedHessian(HessianOperator(op, op.curvature(z), inf._hess.ridge), A, w_S)
        solver = Direct(H_g) if direct else CG(H_g, inf.tol, inf.max_iter)
        step = -solver.solve(grad[None, :])[0]
        slope = float(grad @ step)
        out[s] = np.sqrt(max(-slope, 0.0))
        t = 1.0
        for _ in range(60):
            trial = evaluate(theta + delta + t * step)
            if trial[0] <= F + 1e-4 * t * slope + 8 * np.finfo(float).eps * abs(F):
                break
            t *= 0.5
        delta = delta + t * step
        F, grad, z, z_S = trial
    return delta, out
