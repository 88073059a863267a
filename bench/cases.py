"""The benchmarked operations: fastinfl beside the NumPy / SciPy / scikit-learn code a user would write.

Shared by ``test_bench_core.py`` and ``python -m bench.report``. A :class:`Case`
holds two timed callables, ``fastinfl`` and ``reference``, whose inputs were
prepared (untimed) when it was built; building it also runs fastinfl once, so
that its kernels are compiled (or loaded from the Numba cache) before timing.

The references work in X's dtype, as NumPy does when given float32 data, except
where float32 cannot reach the accuracy asked of them (CG to 1e-10, the fit to
1e-10): those run on a float64 copy of X, made untimed. The top-k reference
multiplies X's rows by float64 s_test rows, which NumPy does in float64.
"""

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional

import numpy as np
import scipy.sparse.linalg
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

    @property
    def r(self):
        """Residuals r_i = sigma(z_i) - y_i in float64 (g(z_i) = r_i x~_i), computed once by NumPy."""
        if not hasattr(self, "_r"):
            z = np.concatenate([self.Xt[lo:lo + 65536] @ self.theta for lo in range(0, self.n, 65536)])
            self._r = np.where(self.y > 0.5, -expit(-z), expit(z))  # no cancellation for y = 1
        return self._r

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
    # The reference computes only the first ``ref_rows`` rows of the result (None: all of it);
    # reports multiply its time by ``ref_time_scale`` to stand for the whole.
    ref_rows: Optional[int] = None
    ref_time_scale: float = 1.0
    compare: Optional[Callable] = None  # compare(fast, ref) raising AssertionError; default: rtol below
    track_memory: bool = False  # reports measure the peak memory of both sides
    _results: dict = field(default_factory=dict, repr=False)

    def result(self, impl):
        """Result of ``impl`` ("fastinfl" or "reference"), computed once."""
        if impl not in self._results:
            self._results[impl] = getattr(self, impl)()
        return self._results[impl]

    def check(self, fast, ref):
        """Raise AssertionError unless fastinfl's result ``fast`` and the reference's ``ref`` agree."""
        if self.compare is not None:
            self.compare(fast, ref)
            return
        a = np.asarray(fast, np.float64)
        if self.ref_rows is not None:
            a = a[: self.ref_rows]
        b = np.asarray(ref, np.float64)
        err = np.linalg.norm(a - b) / np.linalg.norm(b)
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


def hessian_kernel(pb):
    """H = X~^T diag(s) X~ + L2 on coef with s given on both sides: the accumulation alone."""
    op, curv = pb.inf.operator, pb.inf.curvature  # the operator and the float64 weights computed at construction

    def ref():
        H = (pb.Xt * pb.s[:, None]).T @ pb.Xt
        H[np.diag_indices_from(H)] += pb.ridge
        return H

    return Case(lambda: op.hessian(curv, pb.ridge), ref, "numpy (X~ * s).T @ X~",
                rtol=pb.rtol, flops=2 * pb.n * pb.p**2, bytes=pb.dtype.itemsize * pb.n * pb.d,
                note="s given")


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


def cg(pb, k, ref_solves=None):
    """H^-1 G for the gradients G of k test points: batched CG against one SciPy cg per row, rtol 1e-10.

    With ``ref_solves``, SciPy solves only the first ``ref_solves`` rows (those are
    compared) and reports scale its time by k / ref_solves: SciPy's solves are
    independent and, for these random test points, cost about the same.
    """
    ref_solves = k if ref_solves is None else min(k, ref_solves)
    inf = fastinfl.Influence(pb.model, pb.X, pb.y, solver="cg", tol=TOL)
    X_test, y_test, _ = fastinfl.datasets.make_logistic(k, pb.d, seed=1, dtype=pb.dtype)
    G = inf.gradients(X_test, y_test)
    Xt = pb.float64(pb.Xt)  # float32 products cannot reach rtol 1e-10
    s = numpy_weights(Xt, pb.theta)
    A = scipy.sparse.linalg.LinearOperator(
        (pb.p, pb.p), matvec=lambda v: Xt.T @ (s * (Xt @ v)) + pb.ridge * v, dtype=np.float64)

    def ref():
        out = np.empty((ref_solves, pb.p))
        for q, g in enumerate(G[:ref_solves]):
            out[q], info = scipy.sparse.linalg.cg(A, g, rtol=TOL, atol=0.0, maxiter=inf.max_iter)
            assert info == 0, f"scipy cg did not converge (info={info})"
        return out

    name = "scipy cg per row"
    if ref_solves < k:
        name += f" ({ref_solves} of {k} timed, x{k / ref_solves:g})"
    case = Case(lambda: inf.inverse_hvp(G), ref, name, rtol=1e-8,
                ref_rows=None if ref_solves == k else ref_solves, ref_time_scale=k / ref_solves)
    case.result("fastinfl")
    passes = int(inf.cg_n_iter_.max())
    case.flops = 4 * pb.n * pb.p * int(inf.cg_n_iter_.sum())
    case.bytes = passes * pb.dtype.itemsize * pb.n * pb.d
    case.note = f"{passes} passes"
    return case


def numpy_top_k(Xt, r, S, k, block_rows=8192):
    """(low_idx, low, high_idx, high), each (m, k): the k smallest and largest I[t, i] = -(S_t . x~_i) r_i.

    What a NumPy user would write: per block of training rows, the (m, block)
    influences with one matrix product, np.argpartition for the block's k
    smallest and k largest per test row, merged with the running candidates;
    never the (m, n) matrix. Sorted ascending (low) and descending (high),
    ties by training index.
    """
    n, m = Xt.shape[0], S.shape[0]
    low_v, low_i = np.full((m, k), np.inf), np.full((m, k), n)
    high_v, high_i = np.full((m, k), np.inf), np.full((m, k), n)  # -I: the largest I are the smallest -I
    for lo in range(0, n, block_rows):
        hi = min(n, lo + block_rows)
        b = hi - lo
        infl = S @ Xt[lo:hi].T  # (m, b); float32 rows are converted: the product is float64
        infl *= -r[lo:hi]
        if b > 2 * k:
            part = np.argpartition(infl, (k - 1, b - k), axis=1)
            sel = np.concatenate([part[:, :k], part[:, b - k:]], axis=1)
        else:
            sel = np.broadcast_to(np.arange(b), (m, b))
        cand = np.take_along_axis(infl, sel, axis=1)
        low_v, low_i = _smallest(np.hstack([low_v, cand]), np.hstack([low_i, sel + lo]), k)
        high_v, high_i = _smallest(np.hstack([high_v, -cand]), np.hstack([high_i, sel + lo]), k)
    low_v, low_i = _sort_rows(low_v, low_i)
    high_v, high_i = _sort_rows(high_v, high_i)
    return low_i, low_v, high_i, -high_v


def _smallest(v, i, k):
    """The k smallest values of each row of v (any order), and their indices i."""
    part = np.argpartition(v, k - 1, axis=1)[:, :k]
    return np.take_along_axis(v, part, axis=1), np.take_along_axis(i, part, axis=1)


def _sort_rows(v, i):
    """Each row of v ascending, ties by the index in i."""
    order = np.lexsort((i, v), axis=1)
    return np.take_along_axis(v, order, axis=1), np.take_along_axis(i, order, axis=1)


def top_k(pb, m=1000, k=10, block_rows=8192):
    """The k most helpful and harmful training points of m test points; s_test given to both sides.

    fastinfl: ``inf.top_k(X_test, y_test, k)`` on a direct-solver Influence whose
    Hessian is already formed and factored (untimed), so besides the streaming
    kernel it only recomputes s_test: m gradients and two triangular solves of
    size p (timed separately, in the note). NumPy: :func:`numpy_top_k` from the
    same s_test rows (computed once, untimed) and residuals. Values agree to 1e-12
    relative to the largest; indices agree except between (near-)ties, which are
    checked to have the same influence.
    """
    inf = fastinfl.Influence(pb.model, pb.X, pb.y, solver="direct")
    X_test, y_test, _ = fastinfl.datasets.make_logistic(m, pb.d, seed=1, dtype=pb.dtype)
    S = inf.s_test(X_test, y_test)  # forms and factors H
    r = pb.r

    def compare(fast, ref):
        for name, idx_name in (("helpful", "helpful_idx"), ("harmful", "harmful_idx")):
            a, b = getattr(fast, name), getattr(ref, name)
            atol = 1e-12 * np.abs(b).max()
            err = np.abs(a - b).max()
            assert err <= atol, f"top_k {name}: fastinfl and NumPy differ by {err:.3g} > {atol:.3g}"
            ia, ib = getattr(fast, idx_name), getattr(ref, idx_name)
            t, j = np.nonzero(ia != ib)
            if t.size:  # a swap between (near-)tied values: fastinfl's pick has the reference's value
                Xt = pb.Xt[ia[t, j]].astype(np.float64)
                own = -np.einsum("ij,ij->i", Xt, S[t]) * r[ia[t, j]]
                bad = np.abs(own - b[t, j]) > atol
                assert not bad.any(), f"top_k {name}: {int(bad.sum())} indices differ from NumPy's (no tie)"

    s_test_time = min(_seconds(lambda: inf.s_test(X_test, y_test)) for _ in range(3))
    return Case(lambda: inf.top_k(X_test, y_test, k=k),
                lambda: fastinfl.TopK(*numpy_top_k(pb.Xt, r, S, k, block_rows)),
                f"numpy blocks of {block_rows} rows + argpartition", rtol=1e-12,
                flops=2 * pb.n * pb.p * m, bytes=pb.dtype.itemsize * pb.n * pb.d, compare=compare,
                track_memory=True,
                note=f"m={m}, k={k}; fastinfl incl. s_test {s_test_time * 1e3:.1f} ms")


def _seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fit(pb):
    """Newton fit to tol 1e-10 against scikit-learn's newton-cholesky (on float64: float32 stalls)."""
    import sklearn.linear_model  # only here: the other cases run without scikit-learn (a plain pip install .)

    X = pb.float64(pb.X)
    sk = sklearn.linear_model.LogisticRegression(C=1 / L2, solver="newton-cholesky", tol=TOL)

    def ref():
        sk.fit(X, pb.y)
        return np.append(sk.coef_[0], sk.intercept_)

    return Case(lambda: fastinfl.LogisticRegression(l2=L2, tol=TOL).fit(pb.X, pb.y).params_, ref,
                "sklearn newton-cholesky", rtol=1e-8, note=f"{pb.model.n_iter_} Newton steps")


CASES = {
    "hessian": hessian,
    "hessian_kernel": hessian_kernel,
    "hvp": partial(hvp, k=1),
    "hvp_k16": partial(hvp, k=16),
    "hvp_k100": partial(hvp, k=100),
    "cg_k20": partial(cg, k=20),
    "cg_k100": partial(cg, k=100, ref_solves=10),
    "top_k": top_k,
    "fit": fit,
}
