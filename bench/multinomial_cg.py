"""Multinomial CG on digits (issue 23): time and passes against the direct solver and the binary CG.

Usage: ``python -m bench.multinomial_cg [--sparse]`` (repository root, PYTHONPATH set). sklearn's ``load_digits``:
the first 1000 rows train (10 classes, 64 features, P = 650), the next 100 are test points; l2 = 1.
Prints, for ``Influence(...).influence(X_test, y_test)`` (warm kernels, best of 3): seconds and CG
iterations (one HVP pass each) for the multinomial model with direct, CG, CG + Jacobi and CG + Nystrom;
the binary model (class 0 against the rest, l2 = 1) with CG; the K = 2 multinomial model on the same
labels at l2 = 2 (the same influences as that binary model) with CG; and the condition numbers of H
(multinomial: on the complement of the gauge), so passes can be compared at equal conditioning.

``--sparse``: text-like CSR data instead (``make_logistic(50000, 2^15, density=40 / d)``, Zipf columns;
labels from a random 5-class softmax model): fastinfl's Newton-CG fit against scikit-learn's lbfgs
(tol 1e-6), then ``Influence(solver="cg", tol=1e-8).top_k`` of 10 test points with its CG iterations.
"""

import time
import warnings

import numpy as np

import fastinfl


def _run(model, X, y, Xt, yt, **kw):
    fastinfl.Influence(model, X, y, **kw).influence(Xt[:2], yt[:2])  # compile / warm
    best = np.inf
    for _ in range(3):
        inf = fastinfl.Influence(model, X, y, **kw)
        t = time.perf_counter()
        inf.influence(Xt, yt)
        best = min(best, time.perf_counter() - t)
    it = getattr(inf.solver_, "n_iter_", None)
    return best, ("-" if it is None else int(it.max())), inf


def main():
    from sklearn.datasets import load_digits

    warnings.simplefilter("ignore", fastinfl.StationarityWarning)
    X, y = load_digits(return_X_y=True)
    X, y, Xt, yt = X[:1000], y[:1000], X[1000:1100], y[1000:1100]
    multi = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    yb, ytb = (y == 0).astype(int), (yt == 0).astype(int)
    binary = fastinfl.LogisticRegression(l2=1.0).fit(X, yb)
    k2 = fastinfl.MultinomialLogisticRegression(l2=2.0).fit(X, yb)
    print("| model | solver | seconds | CG iterations (max) | cond(H) |")
    print("|---|---|---|---|---|")
    rows = [("multinomial K=10", multi, y, yt, dict(solver="direct")),
            ("multinomial K=10", multi, y, yt, dict(solver="cg")),
            ("multinomial K=10", multi, y, yt, dict(solver="cg", preconditioner="jacobi")),
            ("multinomial K=10", multi, y, yt, dict(solver="cg", preconditioner="nystrom")),
            ("binary 0-vs-rest", binary, yb, ytb, dict(solver="cg")),
            ("multinomial K=2 (same labels)", k2, yb, ytb, dict(solver="cg"))]
    for name, model, labels, test_labels, kw in rows:
        solver = kw["solver"] + (f" + {kw['preconditioner']}" if "preconditioner" in kw else "")
        try:
            seconds, iters, inf = _run(model, X, labels, Xt, test_labels, **kw)
        except Exception as exc:  # an older fastinfl (the "before" run) may refuse a cell
            print(f"| {name} | {solver} | {type(exc).__name__}: {str(exc)[:60]} | | |")
            continue
        ev = np.linalg.eigvalsh(inf.hessian())
        ev = ev[1:] if isinstance(model, fastinfl.MultinomialLogisticRegression) else ev  # gauge: one zero
        print(f"| {name} | {solver} | {seconds:.3f} | {iters} | {ev[-1] / ev[0]:.2g} |")


def sparse():
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    n, d, K = 50000, 1 << 15, 5
    X = sp.csr_matrix(fastinfl.datasets.make_logistic(n, d, seed=0, dtype=np.float64, density=40 / d)[0])
    rng = np.random.default_rng(0)
    Z = X @ (rng.standard_normal((d, K)) * 0.3)
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    print(f"n={n} d={d} K={K} nnz={X.nnz} P={K * (d + 1)}")
    t = time.perf_counter()
    m = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    print(f"fastinfl fit (Newton-CG, tol 1e-10): {time.perf_counter() - t:.2f} s, {m.n_iter_} Newton iterations")
    t = time.perf_counter()
    LogisticRegression(C=1.0, tol=1e-6, max_iter=1000).fit(X, y)
    print(f"sklearn lbfgs fit (tol 1e-6): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    inf = fastinfl.Influence(m, X, y, solver="cg", tol=1e-8)
    inf.top_k(X[:10], y[:10], k=10)
    print(f"Influence + top_k of 10 test points (CG, tol 1e-8): {time.perf_counter() - t:.2f} s, "
          f"CG iterations max {inf.cg_n_iter_.max()}")


if __name__ == "__main__":
    import sys

    sparse() if "--sparse" in sys.argv[1:] else main()
