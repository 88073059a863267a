"""Solvers beyond Cholesky and plain CG, on a :class:`~fastinfl.operators.HessianOperator`.

- :class:`PCG`: batched preconditioned conjugate gradient with a :class:`Jacobi`
  (diag of H, one pass) or :class:`Nystrom` (randomized low rank of H, a few
  batched HVPs) preconditioner. Exact to ``tol`` like :class:`~fastinfl.solvers.CG`.
- :class:`LiSSA`: the Neumann-series recursion of Agarwal et al. (2017) that Koh &
  Liang (2017) used, on the full Hessian (deterministic) or on row samples.
  Converges like (1 - lambda_min / scale)^depth: it needs ~cond(H) passes.
- :class:`Arnoldi`: Schioppa et al. (2022): the top ``rank`` eigenpairs of H from
  a Lanczos (symmetric Arnoldi) iteration on HVPs, then H^-1 ~ U diag(1/lambda) U^T.
  An approximation: exact only for the part of b inside the top-rank eigenspace.

Every solver has ``solve(B)``: B (k, p) float64 rows in, (k, p) rows out, and
exposes ``n_iter_`` and ``residual_`` (relative residuals) of its last solve.
All of them run only ``hvp`` passes (plus, for Jacobi, one diagonal pass), so
they work for every kind of data the operator layer supports.
"""

import threading

import numpy as np
import scipy.linalg

from . import _config
from .exceptions import ConvergenceError, SingularHessianError
from .operators import CONVERGED, MAX_ITER, NOT_POSITIVE, policy
from .operators.base import cg_on_hvp

PRECONDITIONERS = (None, "jacobi", "nystrom", "auto")


def _row_norms(A):
    return np.sqrt(np.einsum("ij,ij->i", A, A))


def _raise_status(name, status, resid, tol, max_iter, advice):
    """SingularHessianError / ConvergenceError from CG-style status codes (as :class:`~fastinfl.solvers.CG`)."""
    if (status == NOT_POSITIVE).any():
        q = int(np.flatnonzero(status == NOT_POSITIVE)[0])
        raise SingularHessianError(
            f"{name} met non-positive curvature p^T H p <= 0 (right-hand side {q}): "
            "the Hessian is not positive definite; add damping > 0 or fit with l2 > 0."
        )
    if (status == MAX_ITER).any():
        q = int(np.argmax(np.where(status == MAX_ITER, resid, -np.inf)))
        raise ConvergenceError(
            f"{name} did not converge in max_iter={max_iter} iterations: relative residual "
            f"{resid[q]:.3g} > tol={tol:g} (right-hand side {q}). {advice}"
        )


# --------------------------------------------------------------- Lanczos
def lanczos(hess, n_iter, seed=0, block=None):
    """Ritz pairs of H from a block Lanczos (block Krylov) basis of about ``n_iter`` vectors.

    Each step multiplies a block of ``block`` vectors (default LANCZOS_BLOCK)
    by H in one batched HVP (one pass over X for the block), orthogonalises the
    result against the whole basis twice (full reorthogonalisation: no spurious
    copies of converged eigenvalues) and continues; the Ritz pairs come from
    the Rayleigh-Ritz projection Q^T H Q, using the stored products H Q (no
    extra pass). ``block=1`` is the classical Lanczos (Arnoldi on a symmetric H)
    of Schioppa et al.; blocks trade slightly slower convergence per vector for
    ``block`` times fewer passes over X. Stops early on an invariant subspace
    (then the Ritz pairs are exact).

    Returns
    -------
    theta : ndarray (m,), ascending Ritz values
    U : ndarray (p, m), orthonormal Ritz vectors (columns)
    n_hvp : int, Hessian-vector products used (passes = about n_hvp / block)
    """
    p = hess.n_params
    m_max = int(min(n_iter, p))
    b = int(min(block or _config.LANCZOS_BLOCK, m_max))
    # The start is projected off H's null space (multinomial gauge; the identity otherwise): with the
    # Hessian operator's projected HVPs the basis then spans only where H is positive definite.
    Qb = np.linalg.qr(hess.project(np.random.default_rng(seed).standard_normal((p, b)).T).T)[0]
    Q = np.zeros((p, 0))
    HQ = np.zeros((p, 0))
    Hnorm = 0.0
    while Qb.shape[1]:
        W = hess.hvp(Qb.T).T
        Q, HQ = np.hstack([Q, Qb]), np.hstack([HQ, W])
        Hnorm = max(Hnorm, float(np.abs(W).sum(axis=0).max()))
        room = m_max - Q.shape[1]
        if room <= 0:
            break
        for _ in range(2):
            W = W - Q @ (Q.T @ W)
        keep = np.linalg.norm(W, axis=0) > _config.LANCZOS_BREAKDOWN * Hnorm
        W = W[:, keep]
        if not W.shape[1]:
            break
        # Columns that are each long enough may still be dependent among themselves (the space left is
        # smaller than the block: a gauge null space, or an invariant subspace); QR's diagonal says which.
        Qb, Rw = np.linalg.qr(W)
        Qb = Qb[:, np.abs(np.diag(Rw)) > _config.LANCZOS_BREAKDOWN * Hnorm][:, :room]
        if not Qb.shape[1]:
            break
        Qb -= Q @ (Q.T @ Qb)
        Qb = np.linalg.qr(Qb)[0]
    T = Q.T @ HQ
    theta, S = np.linalg.eigh(0.5 * (T + T.T))
    return theta, Q @ S, Q.shape[1]


# --------------------------------------------------------- preconditioners
class Jacobi:
    """M^-1 = diag(H)^-1: one pass over X (no pass when H is already formed).

    Helps when features have very different scales (the diagonal spreads);
    does nothing for standardised correlated features (diagonal ~ constant).
    """

    name = "jacobi"
    rank = 0

    def __init__(self, hess):
        diag = hess.diagonal()
        if not (diag > 0).all():
            j = int(np.flatnonzero(~(diag > 0))[0])
            raise SingularHessianError(
                f"the Hessian has a non-positive diagonal entry H[{j}, {j}] = {diag[j]:.3g} (a feature that is "
                "zero on every training row with l2 = 0): add damping > 0 or fit with l2 > 0."
            )
        self.inv_diag = 1.0 / diag
        self.n_hvp = 0

    def apply(self, R):
        """(k, p) rows M^-1 r_q."""
        return R * self.inv_diag


class Nystrom:
    """Randomized Nystrom preconditioner (Frangella, Tropp & Udell, SIAM J. Matrix Anal. Appl. 2023).

    H_nys = U diag(lam) U^T (rank ell) from H Omega for an orthonormal Gaussian
    Omega (p, ell) (all ell HVPs in one batched pass), by the stable algorithm
    (shift nu = sqrt(p) eps ||Y||, Cholesky, SVD). Then
    M^-1 = lam_ell U diag(1/lam) U^T + (I - U U^T): the top ell eigenvalues of H
    are mapped to about lam_ell and the rest is unchanged, so
    cond(M^-1 H) ~ lam_ell / lam_min(H).

    ``rank=None`` (adaptive): start at NYSTROM_RANK0, double (reusing the
    previous HVPs) until lam_ell <= NYSTROM_TAIL * lam_1, or the spectrum is
    flat (a doubling lowered lam_ell by less than NYSTROM_FLAT: more rank would
    not help), or the rank reaches min(p, NYSTROM_MAX_RANK).
    """

    name = "nystrom"

    def __init__(self, hess, rank=None, seed=0):
        p = hess.n_params
        rng = np.random.default_rng(seed)
        cap = min(p, _config.NYSTROM_MAX_RANK)
        ell = min(cap, rank if rank is not None else _config.NYSTROM_RANK0)
        Omega = np.zeros((p, 0))
        Y = np.zeros((p, 0))
        prev = None
        self.n_hvp = 0
        while True:
            G = rng.standard_normal((p, ell - Omega.shape[1]))
            if Omega.shape[1]:
                G -= Omega @ (Omega.T @ G)
            Qn = np.linalg.qr(G)[0]
            if Omega.shape[1]:
                Qn -= Omega @ (Omega.T @ Qn)
                Qn = np.linalg.qr(Qn)[0]
            Y = np.hstack([Y, hess.hvp(Qn.T).T])
            Omega = np.hstack([Omega, Qn])
            self.n_hvp += Qn.shape[1]
            U, lam = self._factor(Omega, Y)
            self.U, self.lam = U, lam
            if rank is not None or ell >= cap:
                break
            if lam[-1] <= _config.NYSTROM_TAIL * lam[0]:
                break
            if prev is not None and lam[-1] > _config.NYSTROM_FLAT * prev:
                break
            prev = lam[-1]
            ell = min(cap, 2 * ell)
        self.rank = self.U.shape[1]
        self.project = hess.project  # onto H's identifiable space (the multinomial gauge; identity otherwise)

    @staticmethod
    def _factor(Omega, Y):
        """(U (p, r), lam (r,) descending, > 0) of the Nystrom approximation from Y = H Omega."""
        p = Omega.shape[0]
        nu = np.sqrt(p) * np.finfo(float).eps * np.linalg.norm(Y, 2)
        Ynu = Y + nu * Omega
        core = Omega.T @ Ynu
        core = 0.5 * (core + core.T)
        try:
            C = scipy.linalg.cholesky(core, lower=False)
        except np.linalg.LinAlgError:
            raise SingularHessianError(
                "the Nystrom sketch Omega^T H Omega is not positive definite: the Hessian is not positive "
                "definite; add damping > 0 or fit with l2 > 0."
            ) from None
        B = scipy.linalg.solve_triangular(C, Ynu.T, trans="T", lower=False).T  # Ynu C^-1
        U, s, _ = np.linalg.svd(B, full_matrices=False)
        lam = s**2 - nu
        keep = lam > nu
        return U[:, keep], lam[keep]

    def apply(self, R):
        """(k, p) rows M^-1 r_q = r_q + U (lam_ell / lam - 1) U^T r_q (projected: the shift nu Omega in U
        would leak rounding into a gauge null space)."""
        C = R @ self.U
        return self.project(R + (C * (self.lam[-1] / self.lam - 1.0)) @ self.U.T)


def choose_preconditioner(hess, preconditioner, rank=None, seed=0):
    """The preconditioner object for a name (None: no preconditioner).

    ``"auto"``: see :data:`fastinfl._config.AUTO_PRECONDITIONER` (set from the
    solver study, bench/RESULTS.md).
    """
    if preconditioner == "auto":
        preconditioner = _config.AUTO_PRECONDITIONER
    if preconditioner is None:
        return None
    if preconditioner == "jacobi":
        return Jacobi(hess)
    if preconditioner == "nystrom":
        return Nystrom(hess, rank=rank, seed=seed)
    raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}; got {preconditioner!r}.")


# ------------------------------------------------------------------- PCG
class PCG:
    """Batched preconditioned conjugate gradient, every right-hand side with its own steps and stopping.

    One :meth:`hvp` call (one pass over X) per iteration for all running right-hand
    sides. Stops right-hand side q once its recursively updated (unpreconditioned)
    residual satisfies ||r_q|| <= ``tol`` ||b_q|| (the same rule as CG, so the same
    accuracy: relative error <= tol x cond(H)). Raises ConvergenceError at
    ``max_iter`` and SingularHessianError on non-positive curvature. The
    preconditioner is built on the first solve and kept; ``n_iter_``,
    ``residual_`` and ``status_`` hold the last batch's (k,) outcomes.
    ``preconditioner`` is a name (see :func:`choose_preconditioner`) or an object
    with ``apply(R)``.
    """

    name = "cg"

    def __init__(self, hess, tol, max_iter, preconditioner="auto", rank=None, seed=0):
        self.hess = hess
        self.tol = tol
        self.max_iter = max_iter
        self.preconditioner = preconditioner
        self.rank = rank
        self.seed = seed
        self._M = None if isinstance(preconditioner, str) else preconditioner
        self._built = not isinstance(preconditioner, str)
        self._lock = threading.Lock()
        self.n_iter_ = self.residual_ = self.status_ = None

    @property
    def M(self):
        """The preconditioner object (None for plain CG), built once."""
        with self._lock:
            if not self._built:
                self._M = choose_preconditioner(self.hess, self.preconditioner, self.rank, self.seed)
                self._built = True
        return self._M

    def run(self, B):
        """(x, n_iter, residual, status) for the rows of B, without raising.

        BLAS is held to one thread for the loop: its products are (k, p) x (p, rank) at most, and
        threaded BLAS on such sizes is far slower on a loaded machine.
        """
        M = self.M
        with policy.single_threaded_blas():
            return self._run(B, M)

    def _run(self, B, M):
        return cg_on_hvp(self.hess.hvp, B, self.tol, self.max_iter, None if M is None else M.apply)

    def solve(self, B):
        x, n_iter, resid, status = self.run(B)
        _raise_status("preconditioned conjugate gradient", status, resid, self.tol, self.max_iter,
                      "Raise max_iter, loosen tol, add damping, try another preconditioner, or use "
                      "solver='direct'.")
        self.n_iter_, self.residual_, self.status_ = n_iter, resid, status
        return x


# ----------------------------------------------------------------- LiSSA
class LiSSA:
    """LiSSA (Agarwal, Bullins & Hazan 2017) as Koh & Liang (2017) ran it: a truncated Neumann series.

    y_0 = 0, y_j = y_{j-1} + (b - H_j y_{j-1}) / scale, so y_j -> H^-1 b when
    every eigenvalue of H lies in (0, 2 scale); H_j is the full Hessian
    (``batch_size=None``: deterministic, one pass over X per step for all
    right-hand sides) or its unbiased estimate from ``batch_size`` rows drawn
    with replacement (Koh & Liang's stochastic version; ``repetitions``
    independent runs averaged). Koh & Liang's ``damping`` is not used: it would
    solve H + scale * damping * I; ``Influence(damping=)`` damps every solver alike.

    Error: the component of b along eigenvalue lambda decays like
    (1 - lambda / scale)^depth, so reaching relative residual ``tol`` needs about
    (scale / lambda_min) log(1 / tol) steps, i.e. cond(H) log(1 / tol) passes
    (CG needs sqrt(cond(H)) log(2 / tol)); row sampling adds variance of order
    scale^-1 sqrt(batch_size^-1) that averaging over repetitions reduces.

    Convergence check: deterministic runs stop each right-hand side once its
    exact residual ||b - H y|| <= ``tol`` ||b||; stochastic runs do ``depth``
    steps per repetition, then one full HVP pass measures the residual. Either way
    ConvergenceError is raised when the residual exceeds ``tol`` (LiSSA is meant
    as an approximation: pass a tol such as 1e-3 to accept one) or the recursion
    diverges (scale too small). ``scale=None``: LISSA_SCALE_FACTOR x the largest
    eigenvalue of H estimated by LISSA_LANCZOS_STEPS Lanczos steps.
    """

    name = "lissa"

    def __init__(self, hess, tol, depth=None, scale=None, repetitions=1, batch_size=None, seed=0):
        self.hess = hess
        self.tol = tol
        self.depth = depth if depth is not None else _config.LISSA_DEPTH
        self.scale = scale
        self.repetitions = repetitions
        self.batch_size = batch_size if batch_size is not None and batch_size < hess.n_samples else None
        self.seed = seed
        self._lock = threading.Lock()
        self.n_iter_ = self.residual_ = None
        self.n_hvp_setup_ = 0

    @property
    def scale_(self):
        """The scale in use (estimated on first use when ``scale=None``)."""
        with self._lock:
            if self.scale is None:
                theta, _, m = lanczos(self.hess, _config.LISSA_LANCZOS_STEPS, self.seed)
                if not theta[-1] > 0.0:
                    raise SingularHessianError("the Hessian has no positive eigenvalue: add damping or l2.")
                self.scale = _config.LISSA_SCALE_FACTOR * float(theta[-1])
                self.n_hvp_setup_ = m
        return self.scale

    def _diverged(self, resid):
        bad = ~(resid <= _config.LISSA_DIVERGED)
        if bad.any():
            q = int(np.flatnonzero(bad)[0])
            raise ConvergenceError(
                f"LiSSA diverged: relative residual {resid[q]:.3g} (right-hand side {q}) with "
                f"lissa_scale={self.scale:.6g}; the scale must exceed half the largest eigenvalue of H "
                "(of its row-sample estimates, with lissa_batch_size): raise lissa_scale."
            )

    def run(self, B):
        """(y, n_iter, residual, status) for the rows of B; raises only on divergence (BLAS as in PCG.run)."""
        s = self.scale_
        with policy.single_threaded_blas():
            return self._run(B, s)

    def _run(self, B, s):
        k, p = B.shape
        bnorm = _row_norms(B)
        safe = np.where(bnorm > 0.0, bnorm, 1.0)
        n_iter = np.zeros(k, np.int64)
        if self.batch_size is None:
            Y = np.zeros((k, p))
            R = B.copy()
            resid = np.where(bnorm > 0.0, 1.0, 0.0)
            status = np.where(bnorm > 0.0, MAX_ITER, CONVERGED).astype(np.int64)
            active = np.flatnonzero(bnorm > 0.0)
            it = 0
            while active.size and it < self.depth:
                Y[active] += R[active] / s
                R[active] = B[active] - self.hess.hvp(Y[active])
                it += 1
                n_iter[active] = it
                resid[active] = _row_norms(R[active]) / safe[active]
                self._diverged(resid[active])
                done = resid[active] <= self.tol
                status[active[done]] = CONVERGED
                active = active[~done]
            return Y, n_iter, resid, status
        n = self.hess.n_samples
        rng = np.random.default_rng(self.seed)
        Y = np.zeros((k, p))
        for _ in range(self.repetitions):
            Yr = np.zeros((k, p))
            for _ in range(self.depth):
                idx = np.sort(rng.integers(0, n, self.batch_size))
                Yr += (B - self.hess.hvp_rows(idx, Yr, n / self.batch_size)) / s
            Y += Yr
        Y /= self.repetitions
        n_iter[:] = self.depth * self.repetitions
        resid = _row_norms(B - self.hess.hvp(Y)) / safe
        self._diverged(resid)
        status = np.where(resid <= self.tol, CONVERGED, MAX_ITER).astype(np.int64)
        return Y, n_iter, resid, status

    def solve(self, B):
        Y, n_iter, resid, status = self.run(B)
        _raise_status("LiSSA", status, resid, self.tol, self.depth,
                      "(max_iter here is lissa_depth; LiSSA needs about cond(H) x log(1/tol) steps.) Raise "
                      "lissa_depth, loosen tol to accept an approximation, or use solver='cg' or 'direct'.")
        self.n_iter_, self.residual_ = n_iter, resid
        return Y


# --------------------------------------------------------------- Arnoldi
class Arnoldi:
    """Low-rank inverse from the top ``rank`` eigenpairs (Schioppa, Zablotskaia, Vilar & Sokolov, AAAI 2022).

    A Lanczos basis of ``n_iter`` vectors (Arnoldi on a symmetric H; default
    min(p, 2 rank + ARNOLDI_EXTRA_STEPS), ``block`` = ARNOLDI_BLOCK vectors per
    batched HVP pass; ``block=1`` is Schioppa et al.'s one vector per pass) gives
    Ritz pairs; the ``rank`` largest (U, lam) define H^-1 b ~ U diag(1/lam) U^T b.
    Cost: n_iter / block passes over X once, then O(k p rank) per batch.

    Error: exact for the part of b in span(U); the rest, sum_{i > rank}
    (u_i . b) / lambda_i u_i, is dropped. Since 1/lambda is largest for the
    smallest eigenvalues, the error is ||P_perp b|| / lambda_min at worst and
    is small only when b (the test and training gradients) lies almost entirely
    in the top eigenspace, or when rank = p (exact up to Lanczos rounding).
    ``residual_`` reports ||b - U U^T b|| / ||b|| per right-hand side (the
    relative residual of the low-rank solve, free); nothing is raised for it:
    Arnoldi is an approximation by design (use ``verify=True`` to bound it).
    """

    name = "arnoldi"

    def __init__(self, hess, rank=None, n_iter=None, seed=0, block=None):
        self.hess = hess
        self.block = block if block is not None else _config.ARNOLDI_BLOCK
        p = hess.n_params
        self.rank = min(p, rank if rank is not None else _config.ARNOLDI_RANK)
        self.n_iter = min(p, n_iter if n_iter is not None else 2 * self.rank + _config.ARNOLDI_EXTRA_STEPS)
        self.seed = seed
        self._lock = threading.Lock()
        self._U = self._lam = None
        self.n_iter_ = self.residual_ = None
        self.n_hvp_setup_ = 0

    def factor(self):
        """(U (p, r), lam (r,)): the top Ritz pairs, computed once."""
        with self._lock:
            if self._U is None:
                theta, V, m = lanczos(self.hess, self.n_iter, self.seed, self.block)
                if not theta[0] > 0.0 and m == self.hess.n_params:
                    raise SingularHessianError(
                        f"the Hessian has a non-positive eigenvalue ({theta[0]:.3g}): add damping > 0 or l2 > 0."
                    )
                r = min(self.rank, m)
                lam, U = theta[::-1][:r], V[:, ::-1][:, :r]
                keep = lam > 0.0
                self._U, self._lam = np.ascontiguousarray(U[:, keep]), lam[keep]
                self.n_hvp_setup_ = m
        return self._U, self._lam

    def solve(self, B):
        U, lam = self.factor()
        C = B @ U
        bnorm = _row_norms(B)
        self.residual_ = _row_norms(B - C @ U.T) / np.where(bnorm > 0.0, bnorm, 1.0)
        self.n_iter_ = np.zeros(B.shape[0], np.int64)
        return (C / lam) @ U.T
