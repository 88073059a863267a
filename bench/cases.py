"""The benchmarked operations: fastinfl beside the NumPy / SciPy / scikit-learn code a user would write.

Shared by ``test_bench_core.py`` and ``python -m bench.report``. A :class:`Case`
holds two timed callables, ``fastinfl`` and ``reference``, whose inputs were
prepared (untimed) when it was built; building it also runs fastinfl once, so
that its kernels are compiled (or loaded from the Numba cache) before timing.

The references work in X's dtype, as NumPy does when given float32 data, except
where float32 cannot reach the accuracy asked of them (CG to 1e-10, the fit to
1e-10): those run on a float64 copy of X, made untimed.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional

import numpy as np
import scipy.sparse.linalg
import sklearn.linear_model
from scipy.special import expit

import fastinfl

L2 = 1.0
TOL = 1e-10


def numpy_weights(Xt, theta):
    """Curvature weights s_i = sigma'(z_i) at z = Xt @ theta, in Xt's dtype."""
    q = expit(Xt @ theta.astype(Xt.dtype))
    return q * (1 - q)


class Problem:
    """Synthetic data set, fastinfl's fit at the optimum, and the reference's design matrix X~ = [X, 1]."""

    def __init__(self, n, d, dtype, seed=0):
        self.n, self.d, self.p, self.dtype = n, d, d + 1, np.dtype(dtype)
        X, y, _ = fastinfl.datasets.make_logistic(n, d, seed=seed, dtype=self.dtype)
        # Fitted by fastinfl, so the parameters are stationary (no StationarityWarning).
        self.model = fastinfl.LogisticRegression(l2=L2, tol=TOL).fit(X, y)
        self.inf = fastinfl.Influence(self.model, X, y)
        self.X, self.y = self.inf.X_train, self.inf.y_train  # as validated: X unchanged, y float64
        self.theta = self.model.params_
        self.ridge = np.append(np.full(d, L2), 0.0)
        self.Xt = np.hstack([X, np.ones((n, 1), self.dtype)])
        self.s = numpy_weights(self.Xt, self.theta)
        # How far the references' own rounding in X's dtype may take them from fastinfl (float64 sums).
        self.rtol = 1e-12 if self.dtype == np.float64 else 1e-4
        self._cases = {}

    def float64(self, a):
        """``a`` as float64: itself for float64 problems, else a float64 copy."""
        return a if a.dtype == np.float64 else a.astype(np.float64)

    def case(self, op):
        """The :class:`Case` for ``op`` (a key of CASES), built once per problem."""
        if op not in self._cases:
            case = CASES[op](self)
            case.result("fastinfl")
            self._cases[op] = case
        return self._cases[op]


@dataclass
class Case:
    """One operation: the two timed callables and what it costs the machine."""

    fastinfl: Callable
    reference: Callable
    reference_name: str
    rtol: float  # the two results agree to this, relative in Frobenius norm
    flops: Optional[float] = None
    bytes: Optional[float] = None
    note: str = ""
    _results: dict = field(default_factory=dict, repr=False)

    def result(self, impl):
        """Result of ``impl`` ("fastinfl" or "reference"), computed once."""
        if impl not in self._results:
            self._results[impl] = getattr(self, impl)()
        return self._results[impl]

    def check(self, a, b):
        """Raise AssertionError unless ``a`` and ``b`` agree to ``rtol``."""
        err = np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64))
        assert err <= self.rtol, f"fastinfl and {self.reference_name} differ by {err:.3g} > {self.rtol:g}"


def hessian(pb):
    """H = X~^T diag(s) X~ + L2 on coef, including the pass that computes s = sigma'(z)."""

    def fast():
        # The public path: the constructor also validates X (one pass) and checks
        # stationarity (one more), work the NumPy side skips.
        return fastinfl.Influence(pb.model, pb.X, pb.y).hessian()

    def ref():
        s = numpy_weights(pb.Xt, pb.theta)
        H = (pb.Xt * s[:, None]).T @ pb.Xt
        H[np.diag_indices_from(H)] += pb.ridge
        return H

    return Case(fast, ref, "numpy (X~ * s).T @ X~", rtol=pb.rtol, flops=2 * pb.n * pb.p**2,
                bytes=4 * pb.dtype.itemsize * pb.n * pb.d, note="with Influence() setup")


def hvp(pb, k):
    """H v (k = 1) or H V^T for k vectors; s is precomputed on both sides, X~ for NumPy."""
    rng = np.random.default_rng(1)
    V = rng.standard_normal(pb.p) if k == 1 else rng.standard_normal((k, pb.p))
    # NumPy multiplies in X's dtype only when the vectors share it (else it upcasts all of X).
    Vr, ridge, Xt, s = V.astype(pb.dtype), pb.ridge.astype(pb.dtype), pb.Xt, pb.s
    if k == 1:
        ref, name = lambda: Xt.T @ (s * (Xt @ Vr)) + ridge * Vr, "numpy X~.T @ (s * (X~ @ v))"
    else:
        ref, name = lambda: ((Xt @ Vr.T) * s[:, None]).T @ Xt + ridge * Vr, "numpy ((X~ @ V.T) * s).T @ X~"
    return Case(lambda: pb.inf.hvp(V), ref, name, rtol=pb.rtol,
                flops=4 * pb.n * pb.p * k, bytes=pb.dtype.itemsize * pb.n * pb.d)


def cg(pb, k):
    """H^-1 G for the gradients G of k test points: batched CG against one SciPy cg per row, rtol 1e-10."""
    inf = fastinfl.Influence(pb.model, pb.X, pb.y, solver="cg", tol=TOL)
    X_test, y_test, _ = fastinfl.datasets.make_logistic(k, pb.d, seed=1, dtype=pb.dtype)
    G = inf.gradients(X_test, y_test)
    Xt = pb.float64(pb.Xt)  # float32 products cannot reach rtol 1e-10
    s = numpy_weights(Xt, pb.theta)
    A = scipy.sparse.linalg.LinearOperator(
        (pb.p, pb.p), matvec=lambda v: Xt.T @ (s * (Xt @ v)) + pb.ridge * v, dtype=np.float64)

    def ref():
        out = np.empty_like(G)
        for q, g in enumerate(G):
            out[q], info = scipy.sparse.linalg.cg(A, g, rtol=TOL, atol=0.0, maxiter=inf.max_iter)
            assert info == 0, f"scipy cg did not converge (info={info})"
        return out

    case = Case(lambda: inf.inverse_hvp(G), ref, "scipy cg per row", rtol=1e-8)
    case.result("fastinfl")
    passes = int(inf.cg_n_iter_.max())
    case.flops = 4 * pb.n * pb.p * int(inf.cg_n_iter_.sum())
    case.bytes = passes * pb.dtype.itemsize * pb.n * pb.d
    case.note = f"{passes} passes"
    return case


def fit(pb):
    """Newton fit to tol 1e-10 against scikit-learn's newton-cholesky (on float64: float32 stalls)."""
    X = pb.float64(pb.X)
    sk = sklearn.linear_model.LogisticRegression(C=1 / L2, solver="newton-cholesky", tol=TOL)

    def ref():
        sk.fit(X, pb.y)
        return np.append(sk.coef_[0], sk.intercept_)

    return Case(lambda: fastinfl.LogisticRegression(l2=L2, tol=TOL).fit(pb.X, pb.y).params_, ref,
                "sklearn newton-cholesky", rtol=1e-8, note=f"{pb.model.n_iter_} Newton steps")


CASES = {
    "hessian": hessian,
    "hvp": partial(hvp, k=1),
    "hvp_k16": partial(hvp, k=16),
    "hvp_k100": partial(hvp, k=100),
    "cg_k20": partial(cg, k=20),
    "fit": fit,
}
