"""What every multinomial (softmax) operator shares: parameter space, curvature, the gauge and its solves.

Parameter space: P = K p, the (K, p) rows theta_k = [w_k, b_k] flattened class
by class (p = d + 1 with an intercept). Per row i: logits z_i = Theta x~_i (K,),
probabilities pi_i = softmax(z_i), residuals r_i = pi_i - e_{y_i}, per-example
gradient g_i = r_i (x) x~_i (class by class) and curvature block
W_i = diag(pi_i) - pi_i pi_i^T, so H = sum_i W_i (x) x~_i x~_i^T + diag(ridge).
The :class:`~fastinfl.operators.Curvature` holds ``residuals`` R (n, K) and
``weights`` = the probabilities Pi (n, K) (W_i follows from pi_i).

The gauge (why H is singular, and how solves stay exact)
---------------------------------------------------------
Shifting every class's parameters by the same vector v in R^p leaves every
softmax unchanged: W_i 1_K = 0, so the loss Hessian vanishes on
N = {1_K (x) v}, and every per-example gradient is orthogonal to N
(1_K . r_i = 0). The ridge diag(rho) (the same (p,) vector rho for every class)
restores curvature on N except along the coordinates j with rho_j = 0: the
intercept when ``l2 > 0`` (all coordinates when l2 = 0), unless ``damping > 0``.
So null(H) = N_0 = {1_K (x) v : v_j = 0 where rho_j > 0}, with orthogonal
projector Pi_0 = (1/K) 1_K 1_K^T (x) diag(rho == 0).

Solves use H~ = H + c Pi_0 (c = trace(H) / P > 0). H maps N_0^perp into itself
and vanishes on N_0, so H~ is block diagonal on N_0 (+) N_0^perp, equal to H on
N_0^perp and to c I on N_0: positive definite whenever H is positive definite on
N_0^perp, and H~^-1 = H^+ + Pi_0 / c. For a right-hand side b orthogonal to N_0
(every per-example gradient, hence every s_test, influence, parameter change)
H~^-1 b = H^+ b, the unique minimum-norm answer, whatever c; for any b,
H^+ b = H~^-1 (b - Pi_0 b), which is what :meth:`GaugedHessianOperator.project`
is for. CG runs on H itself with the right-hand sides, every H p and the final x
projected onto N_0^perp, so rounding cannot make it drift along N_0
(:meth:`MultinomialOperator.cg_projected`, the same for every kind of data).

The other solvers see H through :class:`GaugedHessianOperator` and stay on
N_0^perp the same way: its HVPs (full and row-sampled, for LiSSA) are projected
there; its diagonal, for Jacobi, is averaged over the classes on the null
coordinates, so that diag^-1 commutes with Pi_0; Nystrom's preconditioner
projects its output; Lanczos (Arnoldi, LiSSA's scale estimate) starts from a
projected block. Every iterate then lies in N_0^perp, where H is positive
definite, and Arnoldi's rank is at most P - dim N_0 (the gauge has no
eigenvalue to invert).
"""

import threading

import numpy as np

from ..kernels import multinomial as kernels
from . import policy
from .base import Curvature, HessianOperator, Operator, cg_on_hvp


# ------------------------------------------------------------------- gauge
def null_mask(ridge, n_classes):
    """(p,) bool: the coordinates j whose ridge is 0 in every class (they span null(H) as 1_K (x) e_j)."""
    return np.all(np.asarray(ridge).reshape(n_classes, -1) == 0.0, axis=0)


def project(B, mask, n_classes):
    """B - Pi_0 B for the rows of B (k, P): removes each masked coordinate's mean over the classes.

    A new C-contiguous float64 array (B itself when nothing is masked).
    """
    if not mask.any():
        return B
    k = B.shape[0]
    B3 = np.array(B, dtype=np.float64).reshape(k, n_classes, -1)
    B3[:, :, mask] -= B3[:, :, mask].mean(axis=1, keepdims=True)
    return B3.reshape(k, -1)


def add_gauge(H, mask, n_classes):
    """H + c Pi_0 in place (c = trace(H) / P, or 1 when the trace is 0); returns c."""
    P = H.shape[0]
    p = P // n_classes
    c = float(np.trace(H)) / P
    if not c > 0.0:
        c = 1.0
    for j in np.flatnonzero(mask):
        ix = np.arange(n_classes) * p + j
        H[np.ix_(ix, ix)] += c / n_classes
    return c


class GaugedHessianOperator(HessianOperator):
    """H of the multinomial objective for the solvers: positive definite off its null space (module docstring).

    ``hessian()`` is H~ = H + c Pi_0 (what Direct factors; equal to H on every
    right-hand side that :meth:`project` returns); ``exact_hessian()`` is H;
    ``hvp`` is H V with its rows projected onto N_0^perp (exact: H V lies there;
    the projection removes rounding, so that an iterative solver whose vectors
    start in N_0^perp stays there); ``diagonal`` is diag(H) averaged over the
    classes (Jacobi then maps N_0^perp into itself);
    ``cg`` runs CG on H projected onto N_0^perp.
    """

    def __init__(self, operator, curv, ridge):
        super().__init__(operator, curv, ridge)
        self.n_classes = operator.n_classes
        self.mask = null_mask(self.ridge, self.n_classes)
        self._Ht = None
        self._gauge_lock = threading.Lock()

    def exact_hessian(self):
        """(P, P) H itself (cached: do not modify)."""
        return super().hessian()

    def hessian(self):
        """(P, P) H~ = H + c Pi_0 (cached: do not modify); H itself when nothing is singular."""
        if not self.mask.any():
            return self.exact_hessian()
        with self._gauge_lock:
            if self._Ht is None:
                Ht = self.exact_hessian().copy()
                add_gauge(Ht, self.mask, self.n_classes)
                self._Ht = Ht
        return self._Ht

    def project(self, B):
        """B - Pi_0 B (rows): the part of each right-hand side that H^+ sees."""
        return project(B, self.mask, self.n_classes)

    def hvp(self, V):
        """(k, P) rows H v_q, projected onto N_0^perp."""
        return self.project(super().hvp(V))

    def hvp_rows(self, idx, V, scale=1.0):
        """(k, P) the row-sample estimate of H V (:meth:`Operator.hvp_rows`), projected onto N_0^perp."""
        return self.project(super().hvp_rows(idx, V, scale))

    def diagonal(self):
        """(P,) the Jacobi preconditioner's diagonal: diag(H) with each coordinate j averaged over the classes.

        A diagonal constant over the classes commutes with every class-mean
        projection: diag^-1 keeps preconditioned iterates off the gauge N_0 and
        in S = {v : sum_a v[a, j] = 0 for every j}, which holds every gradient
        and which H maps into itself. diag(H) itself (one value per class) leaks
        residuals onto the class-sum directions 1_K (x) e_j, eigenvectors of H
        with eigenvalue l2 whose preconditioned eigenvalues l2 / diag are tiny:
        on Zipf-distributed sparse columns (20000 x 4096, K = 5) CG took 480
        iterations with it, 481 without a preconditioner, 41 with this one.
        """
        D = super().diagonal().reshape(self.n_classes, -1)
        return np.tile(D.mean(axis=0), self.n_classes)

    def cg(self, B, tol, max_iter):
        """Batched CG on H restricted to N_0^perp (:meth:`MultinomialOperator.cg_projected`)."""
        return self.operator.cg_projected(self.curv, self.ridge, self.mask, self.project(B), tol, max_iter)


class MultinomialOperator(Operator):
    """What every kind of data shares for multinomial logistic regression, in parameter space P = K p.

    Same methods as :class:`Operator`: ``coef`` (K, d) and ``intercept`` (K,)
    in, gradients and vectors of length P out; margins are the (n, K) logits;
    ``Curvature(residuals (n, K), weights = probabilities (n, K))``. Attributes
    beyond the base: ``n_classes`` (K), ``row_params`` (p), ``multiclass = True``.
    Subclasses supply the passes over X (``loss_grad``, ``margins``,
    ``gradients``, ``hessian``, ``hvp``, ``_diagonal_pass``, ``rows``,
    ``influence``, ``top_k``).
    """

    multiclass = True
    jacobi_cg = False  # whether cg_projected preconditions by the class-averaged diagonal (sparse data: yes)

    def __init__(self, n_samples, n_features, fit_intercept, dtype, codes, n_classes):
        super().__init__(n_samples, n_features, fit_intercept, dtype, codes is not None)
        self.n_classes = int(n_classes)
        self.row_params = self.n_params
        self.n_params = self.n_classes * self.row_params
        self.y = codes
        self._jacobi = None  # (weights, ridge, 1 / diagonal) of the last CG's curvature

    def _theta(self, coef, intercept):
        """(K, p) rows [w_k, b_k]."""
        K, p, d = self.n_classes, self.row_params, self.n_features
        theta = np.empty((K, p))
        theta[:, :d] = coef
        if self.fit_intercept:
            theta[:, d] = intercept
        return theta

    def _labels(self):
        if self.y is None:
            raise ValueError("labels are required for this quantity: pass y with X.")
        return self.y

    def hessian_operator(self, curv, ridge):
        return GaugedHessianOperator(self, curv, ridge)

    def means(self, coef, intercept):
        """(n, K) softmax probabilities."""
        Z = self.margins(coef, intercept)
        kernels._mn_softmax(Z, Z)
        return Z

    def losses(self, coef, intercept):
        """(n,) per-example cross-entropy -log pi_{i, y_i}."""
        Z = self.margins(coef, intercept)
        out = np.empty(self.n_samples)
        kernels._mn_losses(Z, self._labels(), out)
        return out

    def curvature(self, margins):
        R = np.empty((self.n_samples, self.n_classes))
        Pi = np.empty((self.n_samples, self.n_classes))
        kernels._mn_curvature(margins, self._labels(), R, Pi)
        return Curvature(R, Pi)

    def example_gradients(self, curv, idx):
        """(n_sel, P) g_i = r_i (x) x~_i of training rows ``idx`` from the stored residuals (no pass over X)."""
        A = self.rows(idx)
        R = self.residuals(curv, idx)
        return (R[:, :, None] * A[:, None, :]).reshape(idx.shape[0], self.n_params)

    def hvp_rows(self, curv, ridge, idx, V, scale=1.0):
        """(k, P) rows scale * sum_{i in idx} (W_i (x) x~_i x~_i^T) v_q + ridge * v_q, from the rows ``idx`` only.

        With ``scale = n / len(idx)`` an unbiased estimate of :meth:`hvp` (stochastic LiSSA).
        """
        V = np.ascontiguousarray(V, dtype=np.float64)
        k, K, p = V.shape[0], self.n_classes, self.row_params
        A = self.rows(idx)  # (n_sel, p)
        T = (A @ V.reshape(k * K, p).T).reshape(-1, k, K)  # t_iq[a] = x~_i . v_q[a]
        Pi = self.weights(curv, idx)
        T = Pi[:, None, :] * (Pi.sum(axis=1)[:, None, None] * T - np.einsum("ia,iqa->iq", Pi, T)[:, :, None])
        U = T.reshape(-1, k * K).T @ A  # (k K, p)
        return scale * U.reshape(k, self.n_params) + V * ridge

    def hessian_diagonal(self, curv, ridge):
        """(P,) diag(H) = sum_i pi_ia (1 - pi_ia) x~_ij^2 + ridge, in one pass (the Jacobi preconditioner)."""
        Pi = curv.weights  # in the operator's storage (NumPy or dask): pi (1 - pi) formed there
        D = self._diagonal_pass(Pi * (Pi.sum(axis=1, keepdims=True) - Pi))  # (p, K)
        return np.ascontiguousarray(D.T).reshape(-1) + ridge

    def cg(self, curv, ridge, B, tol, max_iter):
        """Batched CG on H with B projected off the null space of H (see the module docstring)."""
        mask = null_mask(ridge, self.n_classes)
        return self.cg_projected(curv, ridge, mask, project(B, mask, self.n_classes), tol, max_iter)

    def cg_projected(self, curv, ridge, mask, B, tol, max_iter):
        """:class:`~fastinfl.operators.CGResult` of CG on H restricted to N_0^perp.

        ``mask`` (p,) bool marks the null coordinates; the rows of B (k, P) must be orthogonal to N_0.

        Every H p projected onto N_0^perp; the stopping rule of
        :func:`~fastinfl.operators.base.cg_on_hvp` (||r_q|| <= tol ||b_q|| on
        the unpreconditioned residual); one HVP pass per iteration for all
        running right-hand sides. Where ``jacobi_cg`` (sparse data, as the
        binary ``CSROperator.cg``), preconditioned by diag(H) averaged over the
        classes (one pass, cached per curvature; :meth:`GaugedHessianOperator.diagonal`
        says why; unpreconditioned without a positive diagonal). BLAS is held to
        one thread for the loop (as in ``PCG.run``): otherwise every HVP pass
        would set and restore the BLAS thread count.
        """
        ridge = np.ascontiguousarray(ridge, dtype=np.float64)
        inv_diag = None
        if self.jacobi_cg:
            cached = self._jacobi
            if cached is not None and cached[0] is curv.weights and np.array_equal(cached[1], ridge):
                inv_diag = cached[2]
            else:
                diag = self.hessian_operator(curv, ridge).diagonal()
                inv_diag = 1.0 / diag if (diag > 0.0).all() else np.ones(self.n_params)
                self._jacobi = (curv.weights, ridge.copy(), inv_diag)
        K = self.n_classes
        with policy.single_threaded_blas():
            res = cg_on_hvp(lambda V: project(self.hvp(curv, ridge, V), mask, K), np.asarray(B, dtype=np.float64),
                            tol, max_iter, None if inv_diag is None else (lambda R: R * inv_diag))
        return res._replace(x=project(res.x, mask, K))
