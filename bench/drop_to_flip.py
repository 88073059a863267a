"""Greedy drop_to_flip against naive greedy refitting with scikit-learn, and its cost per step (issue 28).

    python -m bench.drop_to_flip [--n 100000] [--d 50] [--naive-steps 3] [--seed 0] [--blas-threads 1]
                                [--repeats 2]

Data: ``make_logistic(n, d, seed)`` in float64, ``fastinfl.LogisticRegression(l2=1)``; target: the
sign of the weakest coefficient (smallest |coef_j|), max_fraction 0.01. Timed in one run:

- fastinfl's greedy search (``drop_to_flip(..., refit=False)``) to the flip, or to n/100 rows (best
  of ``--repeats`` runs); its time per step with a run limited to one step (setup + 1 step) subtracted;
- the verification refit (``fastinfl.LogisticRegression.fit`` without the rows, from zero);
- one pass over X as the gradient needs it (``X @ theta`` then ``X.T @ r``): the cost model says a
  greedy step is about one such pass (the Newton update, usually one step with the rank-one
  downdated Hessian) plus one matrix-vector product for the re-ranking (x~_i . H^-1 e_j), plus O(n)
  elementwise work and O(p^3) for the factor;
- naive greedy with scikit-learn for ``--naive-steps`` steps: each step refits from scratch
  (``warm_start=False``) on the remaining rows, forms the Hessian with NumPy and re-ranks the same
  way; for lbfgs (scikit-learn's default solver and tolerance) and newton-cholesky (tol=1e-8).
  Their totals for the same number of steps as fastinfl's search are projected from the time per step.

Everything runs with BLAS held to ``--blas-threads`` threads (threadpoolctl; default 1): on a
shared, loaded machine multi-threaded BLAS contends with the other processes and timings of the
same call vary several-fold; ``--blas-threads 0`` leaves BLAS as it is.
"""

import argparse
import contextlib
import time

import numpy as np
import scipy.special

import fastinfl
from fastinfl import robustness
from fastinfl.robustness import drop_to_flip


def naive_step(X, y, keep, l2, j, toward, solver):
    """One naive greedy step: sklearn refit from scratch on the kept rows, NumPy Hessian, re-rank; its row."""
    from sklearn.linear_model import LogisticRegression

    kw = {"tol": 1e-8} if solver == "newton-cholesky" else {}
    est = LogisticRegression(C=1.0 / l2, solver=solver, max_iter=1000, warm_start=False, **kw)
    Xk, yk = X[keep], y[keep]
    est.fit(Xk, yk)
    theta = np.append(est.coef_[0], est.intercept_[0])
    z = Xk @ theta[:-1] + theta[-1]
    s = scipy.special.expit(z)
    w = s * (1 - s)
    d = X.shape[1]
    H = np.empty((d + 1, d + 1))
    H[:d, :d] = Xk.T @ (Xk * w[:, None]) + l2 * np.eye(d)
    H[:d, d] = H[d, :d] = w @ Xk
    H[d, d] = w.sum()
    u = np.linalg.solve(H, np.eye(d + 1)[j])
    push = toward * (s - yk) * (Xk @ u[:-1] + u[-1])
    return int(np.flatnonzero(keep)[np.argmin(push)])


@contextlib.contextmanager
def counted_reads():
    """Count the passes over X that drop_to_flip makes, by kind: {"margins": X~ T, "rmatvec": X~^T r,
    "gram": X~^T W X~ (n p^2)}."""
    counts = dict.fromkeys(("margins", "rmatvec", "gram"), 0)
    saved = {name: getattr(robustness._Rows, name) for name in counts}

    def counting(name):
        def method(self, *args):
            counts[name] += 1
            return saved[name](self, *args)
        return method

    for name in counts:
        setattr(robustness._Rows, name, counting(name))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(robustness._Rows, name, fn)


def best(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--naive-steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of the search (the best is kept)")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.blas_threads or None, user_api="blas"):
        run(args)


def run(args):
    n, d, l2 = args.n, args.d, 1.0
    X, y, _ = fastinfl.datasets.make_logistic(n, d, seed=args.seed, dtype=np.float64)
    model = fastinfl.LogisticRegression(l2=l2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    j = int(np.argmin(np.abs(model.coef_)))
    target = ("coef", j)
    theta = model.params_
    r = scipy.special.expit(X @ theta[:-1] + theta[-1]) - y
    t_pass = best(lambda: (X @ theta[:-1], X.T @ r))
    with counted_reads() as reads_one:
        drop_to_flip(inf, target, max_fraction=1 / n, refit=False)  # also the warm-up
    t_one = best(lambda: drop_to_flip(inf, target, max_fraction=1 / n, refit=False), args.repeats)
    t_search = np.inf
    for _ in range(args.repeats):
        with counted_reads() as reads:
            t0 = time.perf_counter()
            res = drop_to_flip(inf, target, max_fraction=0.01, refit=False)
            t_search = min(t_search, time.perf_counter() - t0)
    steps = len(res.indices)
    per_step = (t_search - t_one) / max(steps - 1, 1)
    keep = np.ones(n, dtype=bool)
    keep[res.indices] = False
    t0 = time.perf_counter()
    refit = fastinfl.LogisticRegression(l2=l2).fit(X[keep], y[keep])
    t_refit = time.perf_counter() - t0
    flipped = (refit.coef_[j] > 0) != (model.coef_[j] > 0)
    toward = 1.0 if model.coef_[j] > 0 else -1.0

    naive = {}
    for solver in ("lbfgs", "newton-cholesky"):
        keep = np.ones(n, dtype=bool)
        chosen, t0 = [], time.perf_counter()
        for _ in range(args.naive_steps):
            i = naive_step(X, y, keep, l2, j, toward, solver)
            chosen.append(i)
            keep[i] = False
        naive[solver] = ((time.perf_counter() - t0) / args.naive_steps, chosen)

    k = args.naive_steps
    print(f"`python -m bench.drop_to_flip --n {n} --d {d} --naive-steps {k} --seed {args.seed} "
          f"--blas-threads {args.blas_threads} --repeats {args.repeats}`: "
          f"target coef {j} = {model.coef_[j]:+.4g}, greedy: {steps} rows dropped, refit coef "
          f"{refit.coef_[j]:+.4g} ({'flipped' if flipped else 'not flipped'})\n")
    print("| | time per step | total for the search's steps | first steps' rows agree with fastinfl's |")
    print("|---|---|---|---|")
    print(f"| fastinfl greedy (setup + first step: {t_one:.3g} s) | {per_step * 1e3:.3g} ms "
          f"| {t_search:.3g} s ({steps} steps) | - |")
    for solver, (t, chosen) in naive.items():
        agree = chosen == res.indices[:k].tolist()
        print(f"| naive: scikit-learn {solver} refit from scratch per step | {t * 1e3:.4g} ms "
              f"| {t * steps:.3g} s (projected) | {'yes' if agree else 'no'} ({k} steps) |")
    per = {k: (reads[k] - reads_one[k]) / max(steps - 1, 1) for k in reads}
    print(f"\nReads of X per greedy step (counted): {per['margins']:.3g} X~ T (the new margins with the "
          f"ranking direction alongside), {per['rmatvec']:.3g} X~^T r (gradients), {per['gram']:.2g} "
          f"Hessians; "
          f"setup: {reads_one['gram']} Hessian, {reads_one['margins']} + {reads_one['rmatvec']} products. "
          f"One gradient pass over X (X @ theta, then X.T @ r): {t_pass * 1e3:.3g} ms; a greedy step took "
          f"{per_step / t_pass:.2g} such passes. Verification refit (fastinfl, from zero): {t_refit:.3g} s. "
          f"Speed-up per step: {naive['lbfgs'][0] / per_step:.3g}x (lbfgs), "
          f"{naive['newton-cholesky'][0] / per_step:.3g}x (newton-cholesky).")


if __name__ == "__main__":
    main()
