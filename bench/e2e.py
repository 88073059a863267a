"""The whole influence job, end to end, against the best NumPy/SciPy code and the machine's bound.

    python -m bench.e2e [--sizes 10000x50x100,100000x100x100,...] [--repeats 5] [--profile]

A job starts from given parameters (a fitted model, fitted untimed) and the
training and test arrays, and returns either the full (m, n) influence matrix
or ``top_k`` (k = 10) for m test points:

- fastinfl: ``Influence(model, X, y).influence(X_test, y_test)`` (or ``.top_k``):
  validation, the setup pass, weights, Hessian, Cholesky, s_test, the influence pass;
- NumPy/SciPy (:func:`numpy_influence`, :func:`numpy_top_k`): margins by one
  GEMV, weights, the Hessian by SciPy ``dsyrk`` on sqrt(w)-scaled row blocks,
  ``cho_factor``, the test gradients and ``cho_solve`` for all of them at once, then
  one GEMM for the (m, n) matrix (top-k: a GEMM per block of rows plus
  ``np.argpartition``), with no validation.

Both run in the same process, alternating, best of ``--repeats``, each call after a
pause of QUIET_SECONDS (so that neither side runs beside the other's spinning
BLAS or OpenMP threads), and once more without pauses: fastinfl right after the
NumPy side, the user's case (issue 26). The machine's
limits are measured in the same run (float64 dgemm GFLOP/s on all cores and
the read bandwidth, before and after; the best of the two is used, so the
bound is the tighter one). The bound of a job is

    (n p^2 [SYRK] + 2 n p m [GEMM] + p^3 / 3 + 2 p^2 m) / GFLOP/s
    + (2 n d itemsize [X read twice: setup + Hessian, then influence] + 8 m n [the result]) / bandwidth

(two reads of X are the minimum: H needs every row before any s_test exists;
top_k writes no (m, n) result). ``--profile`` adds, per job, where fastinfl's time
goes (exclusive seconds per stage, from :func:`profile`).
"""

import argparse
import os
import shlex
import sys
import time
import warnings
from contextlib import contextmanager

import numpy as np
import scipy.linalg
import scipy.linalg.blas
from scipy.special import expit

import fastinfl
from bench import machine
from bench.cases import _smallest, _sort_rows

L2 = 1.0
K = 10
SIZES = [(10_000, 50, 100), (100_000, 100, 100), (1_000_000, 100, 10), (200_000, 1000, 10)]
TOP_K_SIZE = (200_000, 100, 50)
NUMPY_BLOCK = 4096


# ---------------------------------------------------------------- NumPy / SciPy
def numpy_setup(X, y, coef, intercept, l2, X_test, y_test, block=NUMPY_BLOCK):
    """(S (m, p) s_test rows, r (n,) residuals): what the best NumPy/SciPy code computes before the last pass.

    H = X~^T diag(w) X~ + l2 on coef by dsyrk (upper triangle, C = A A^T with
    A = (sqrt(w) x~)^T, an F-ordered view: no copy for BLAS) over row blocks.
    """
    n, d = X.shape
    p = d + 1
    z = X @ coef
    z += intercept
    q = expit(z)
    r = q - y
    sq = np.sqrt(q * (1.0 - q))
    H = np.zeros((p, p), order="F")
    buf = np.empty((min(block, n), p))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        B = buf[: hi - lo]
        np.multiply(X[lo:hi], sq[lo:hi, None], out=B[:, :d])
        B[:, d] = sq[lo:hi]
        H = scipy.linalg.blas.dsyrk(1.0, B.T, beta=1.0, c=H, trans=0, lower=0, overwrite_c=1)
    H = np.triu(H) + np.triu(H, 1).T
    H[np.arange(d), np.arange(d)] += l2
    chol = scipy.linalg.cho_factor(H, lower=True, check_finite=False)
    rt = expit(X_test @ coef + intercept) - y_test
    G = np.empty((X_test.shape[0], p))
    np.multiply(X_test, rt[:, None], out=G[:, :d])
    G[:, d] = rt
    S = scipy.linalg.cho_solve(chol, G.T, check_finite=False).T  # (m, p)
    return S, r


def numpy_influence(X, y, coef, intercept, l2, X_test, y_test):
    """(m, n) I[t, i] = -(s_t . x~_i) r_i: setup, then one GEMM and two broadcasts."""
    S, r = numpy_setup(X, y, coef, intercept, l2, X_test, y_test)
    d = X.shape[1]
    out = S[:, :d] @ X.T
    out += S[:, d:]
    out *= -r
    return out


def numpy_top_k(X, y, coef, intercept, l2, X_test, y_test, k=K, block_rows=8192):
    """TopK: setup, then per block of rows a GEMM, ``np.argpartition`` and a merge (no (m, n) matrix)."""
    S, r = numpy_setup(X, y, coef, intercept, l2, X_test, y_test)
    n, d = X.shape
    m = S.shape[0]
    St, s0 = np.ascontiguousarray(S[:, :d]), S[:, d:]
    low_v, low_i = np.full((m, k), np.inf), np.full((m, k), n)
    high_v, high_i = np.full((m, k), np.inf), np.full((m, k), n)
    for lo in range(0, n, block_rows):
        hi = min(n, lo + block_rows)
        b = hi - lo
        infl = St @ X[lo:hi].T
        infl += s0
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
    return fastinfl.TopK(low_i, low_v, high_i, -high_v)


# ---------------------------------------------------------------- the jobs
class Job:
    """Data, given parameters and the two callables of one (n, d, m) job."""

    def __init__(self, n, d, m, kind, dtype=np.float64):
        self.n, self.d, self.m, self.kind, self.dtype = n, d, m, kind, np.dtype(dtype)
        self.p = d + 1
        self.X, self.y, _ = fastinfl.datasets.make_logistic(n, d, seed=0, dtype=self.dtype)
        self.X_test, self.y_test, _ = fastinfl.datasets.make_logistic(m, d, seed=1, dtype=self.dtype)
        fitted = fastinfl.LogisticRegression(l2=L2, tol=1e-8).fit(self.X, self.y)  # untimed
        self.model = fastinfl.LogisticRegression.from_params(fitted.coef_, fitted.intercept_, l2=L2)
        self.coef, self.intercept = fitted.coef_.copy(), float(fitted.intercept_)

    def fastinfl(self):
        inf = fastinfl.Influence(self.model, self.X, self.y)
        if self.kind == "influence":
            return inf.influence(self.X_test, self.y_test)
        return inf.top_k(self.X_test, self.y_test, k=K)

    def numpy(self):
        f = numpy_influence if self.kind == "influence" else numpy_top_k
        return f(self.X, self.y, self.coef, self.intercept, L2, self.X_test, self.y_test)

    def check(self, fast, ref):
        """Raise AssertionError unless the two results agree (values to 1e-8 relative to the largest)."""
        if self.kind == "influence":
            err = np.abs(fast - ref).max() / np.abs(ref).max()
            assert err <= 1e-8, f"influence: fastinfl and NumPy differ by {err:.3g}"
            return
        for name in ("helpful", "harmful"):
            a, b = getattr(fast, name), getattr(ref, name)
            err = np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b))
            assert err <= 1e-8, f"top_k {name}: fastinfl and NumPy differ by {err:.3g}"

    def flops(self):
        n, p, m = self.n, self.p, self.m
        return n * p * p + 2 * n * p * m + p**3 / 3 + 2 * p * p * m

    def bytes(self):
        out = 8 * self.m * self.n if self.kind == "influence" else 0
        return 2 * self.n * self.d * self.dtype.itemsize + out

    def label(self):
        return f"{self.kind} {self.n}x{self.d}, m={self.m}"


# Pause before each timed call. After a multi-threaded BLAS call, OpenBLAS's idle threads keep
# polling for work for a while before they sleep (OPENBLAS_THREAD_TIMEOUT): a job started right after
# the NumPy side competed with them for the 2 cores (top_k 10^5 x 100, m = 100: 100-105 ms right after
# NumPy, 67-69 ms back to back, 56-72 ms after a 0.2 s pause, 65-86 ms right after NumPy with
# OPENBLAS_THREAD_TIMEOUT=4; bench/RESULTS.md, "End-to-end jobs"). The table also reports the user's
# case, each call right after the other side's without a pause (fastinfl right after NumPy), where
# fastinfl now stops OpenBLAS's spinning threads itself (operators/policy.py, issue 26).
QUIET_SECONDS = 0.3


def best_of(fns, repeats, pause=QUIET_SECONDS):
    """Best wall time of each callable in ``fns``, run alternately ``repeats`` times, each after ``pause``."""
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            time.sleep(pause)
            t = time.perf_counter()
            fn()
            best[j] = min(best[j], time.perf_counter() - t)
    return best


# ---------------------------------------------------------------- profile
@contextmanager
def profile():
    """Exclusive seconds per stage of fastinfl's job, while the context is open: yields the dict.

    Wraps the validation functions, every kernel call (``policy.run``, by kernel
    name), BLAS thread switching, the weights, Cholesky, its condition estimate
    and the triangular solves; a wrapped call's time is not counted in the one
    that called it. "Python and NumPy glue" is the rest of the wall time.
    """
    from fastinfl import _validation, solvers
    from fastinfl.operators import dense, policy

    times = {}
    stack = [0.0]  # time spent in wrapped children of the current frame

    def timed(label_of, fn):
        def wrapper(*args, **kwargs):
            stack.append(0.0)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                children = stack.pop()
                label = label_of(args)
                times[label] = times.get(label, 0.0) + dt - children
                stack[-1] += dt
        return wrapper

    def kernel_label(args):
        return "kernel " + getattr(args[0], "__name__", str(args[0])).lstrip("_")

    patches = [
        (_validation, "check_X", lambda a: "validate X (copy + finiteness)"),
        (_validation, "check_y", lambda a: "validate y"),
        (_validation, "check_finite", lambda a: "finiteness checks (NumPy)"),
        (policy, "run", kernel_label),
        (policy, "single_threaded_blas", None),
        (dense.DenseOperator, "curvature", lambda a: "weights (residuals and curvature)"),
        (solvers, "cholesky", lambda a: "Cholesky"),
        (scipy.linalg.lapack, "dpocon", lambda a: "condition estimate"),
        (scipy.linalg, "cho_solve", lambda a: "triangular solves"),
    ]
    saved = []
    for obj, name, label_of in patches:
        orig = getattr(obj, name)
        saved.append((obj, name, orig))
        if label_of is None:  # a context manager: time its entry and exit
            setattr(obj, name, _timed_cm(orig, times, stack))
        else:
            setattr(obj, name, timed(label_of, orig))
    t0 = time.perf_counter()
    try:
        yield times
    finally:
        total = time.perf_counter() - t0
        for obj, name, orig in saved:
            setattr(obj, name, orig)
        times["Python and NumPy glue"] = total - sum(times.values())
        times["total"] = total


def _timed_cm(orig, times, stack):
    @contextmanager
    def cm():
        label = "BLAS thread switching"
        t = time.perf_counter()
        ctx = orig()
        ctx.__enter__()
        dt = time.perf_counter() - t
        times[label] = times.get(label, 0.0) + dt
        stack[-1] += dt
        try:
            yield
        finally:
            t = time.perf_counter()
            ctx.__exit__(None, None, None)
            dt = time.perf_counter() - t
            times[label] = times.get(label, 0.0) + dt
            stack[-1] += dt
    return cm


def profile_job(job, repeats=3):
    """The stage times of the fastest of ``repeats`` profiled runs of ``job.fastinfl``."""
    best = None
    for _ in range(repeats):
        with profile() as times:
            job.fastinfl()
        if best is None or times["total"] < best["total"]:
            best = dict(times)
    return best


# ---------------------------------------------------------------- main
def parse_sizes(text):
    return [tuple(int(v.replace("_", "")) for v in s.split("x")) for s in text.split(",") if s]


def limits():
    return machine.dgemm_gflops(), machine.read_bandwidth_gbs()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join("x".join(map(str, s)) for s in SIZES),
                        help="comma-separated NxDxM (influence and top_k at each)")
    parser.add_argument("--top-k-sizes", default="x".join(map(str, TOP_K_SIZE)),
                        help="extra NxDxM for top_k only")
    parser.add_argument("--jobs", default="influence,top_k")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--profile", action="store_true", help="add fastinfl's time per stage")
    args = parser.parse_args(argv)
    kinds = args.jobs.split(",")
    plan = [(s, kind) for s in parse_sizes(args.sizes) for kind in kinds]
    plan += [(s, "top_k") for s in parse_sizes(args.top_k_sizes) if "top_k" in kinds]

    load0 = os.getloadavg()[0]
    lim0 = limits()
    rows, profiles = [], []
    data = None
    for (n, d, m), kind in plan:
        print(f"{kind} {n}x{d}, m={m} ...", file=sys.stderr, flush=True)
        if data is None or (data.n, data.d, data.m) != (n, d, m):
            data = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = Job(n, d, m, kind, args.dtype)
        job = data
        job.kind = kind
        job.check(job.fastinfl(), job.numpy())  # also warms both
        repeats = args.repeats if n * d <= 2 * 10**7 else max(2, args.repeats // 2)
        t_np, t_fast = best_of([job.numpy, job.fastinfl], repeats)
        t_after = best_of([job.numpy, job.fastinfl], repeats, pause=0)[1]
        rows.append((job.label(), t_np, t_fast, t_after, job.flops(), job.bytes()))
        if args.profile:
            profiles.append((job.label(), profile_job(job)))
    lim1 = limits()
    gflops, gbs = max(lim0[0], lim1[0]), max(lim0[1], lim1[1])

    argv = sys.argv[1:] if argv is None else argv
    print(f"## End-to-end influence jobs ({args.dtype})\n")
    print(f"`{shlex.join(['python', '-m', 'bench.e2e', *argv])}`  ")
    print(f"Machine: {machine.describe()}  ")
    print(f"Limits measured in this run: dgemm {lim0[0]:.0f} / {lim1[0]:.0f} GFLOP/s, read bandwidth "
          f"{lim0[1]:.1f} / {lim1[1]:.1f} GB/s (start / end; the bound uses the best). 1-minute load "
          f"average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. Best of "
          f"{args.repeats} (of {max(2, args.repeats // 2)} above 2e7 elements), NumPy and fastinfl "
          f"alternating, each after a {QUIET_SECONDS} s pause; \"right after NumPy\": the same alternation "
          "without pauses (the user's case).\n")
    print("| job | NumPy/SciPy (s) | fastinfl (s) | speed-up | fastinfl right after NumPy (s) | speed-up "
          "| bound (s) | fastinfl / bound | NumPy / bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, t_np, t_fast, t_after, flops, nbytes in rows:
        b = flops / (gflops * 1e9) + nbytes / (gbs * 1e9)
        print(f"| {label} | {t_np:.4f} | {t_fast:.4f} | {t_np / t_fast:.2f}x | {t_after:.4f} | "
              f"{t_np / t_after:.2f}x | {b:.4f} | {t_fast / b:.2f} | {t_np / b:.2f} |")
    if profiles:
        print("\nfastinfl's time per stage (ms, exclusive; fastest of 3 profiled runs, which the "
              "wrappers slow slightly):\n")
        for label, times in profiles:
            total = times.pop("total")
            parts = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in sorted(times.items(), key=lambda kv: -kv[1])
                              if v * 1e3 >= 0.005)
            print(f"- {label}: total {total * 1e3:.2f} ms: {parts}")


if __name__ == "__main__":
    main()
