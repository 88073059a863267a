"""Multinomial CG on digits (issue 23): time and passes against the direct solver and the binary CG.

Usage: ``python -m bench.multinomial_cg`` (repository root, PYTHONPATH set). sklearn's ``load_digits``:
the first 1000 rows train (10 classes, 64 features, P = 650), the next 100 are test points; l2 = 1.
Prints, for ``Influence(...).influence(X_test, y_test)`` (warm kernels, best of 3): seconds and CG
iterations (one HVP pass each) for the multinomial model with direct, CG, CG + Jacobi and CG + Nystrom;
the binary model (class 0 against the rest, l2 = 1) with CG; the K = 2 multinomial model on the same
labels at l2 = 2 (the same influences as that binary model) with CG; and the condition numbers of H
(multinomial: on the complement of the gauge), so passes can be compared at equal conditioning.
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


if __name__ == "__main__":
    main()
