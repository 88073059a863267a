"""The ``fastinfl`` command line."""

import argparse
import sys
import time
import warnings

import numpy as np

from . import datasets
from .exceptions import ConvergenceError, StationarityWarning
from .influence import Influence
from .model import LogisticRegression


def _table(title, X, y, infl):
    print(title)
    for i, v in enumerate(infl):
        print(f"  Training point {i} (x={X[i, 0]}, y={y[i]}): {v:.6f}")


def demo(n=200_000, d=50, seed=0, out=sys.stdout):
    """The seed notebook end to end, then a synthetic data set to show throughput."""
    X, y, X_test, y_test = datasets.seed()
    w, b = datasets.seed_fit()
    print(f"Seed notebook: 3 training points, fitted by its gradient descent: w*={w:.6f}, b*={b:.6f}")
    seed_model = LogisticRegression.from_params([w], b, l2=0.0)
    tables = {}
    for solver in ("direct", "cg"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StationarityWarning)
            inf = Influence(seed_model, X, y, solver=solver)
        tables[solver] = inf.influence(X_test, y_test)[0]
        _table(f"Influence on the test point (x=1.5, y=1), solver={solver!r}:", X, y, tables[solver])
    diff = np.max(np.abs(tables["direct"] - tables["cg"]))
    print(f"Direct and CG agree to {diff:.1e} (max abs difference).")
    for w_ in caught:
        print(f"Warning: {w_.message}")

    print("\nA proper fit of the same data:")
    try:
        LogisticRegression(l2=0.0).fit(X, y)
    except ConvergenceError as exc:
        print(f"  l2=0: ConvergenceError: {exc}")
    model = LogisticRegression(l2=1.0).fit(X, y)
    print(f"  l2=1: w*={model.coef_[0]:.6f}, b*={model.intercept_:.6f} "
          f"({model.n_iter_} Newton iterations)")
    inf = Influence(model, X, y)
    _table("Influence at the l2=1 optimum:", X, y, inf.influence(X_test, y_test)[0])

    print(f"\nSynthetic data: {n} x {d} float32 (fastinfl.datasets.make_logistic)")
    Xs, ys, _ = datasets.make_logistic(n + 5, d, seed=seed, dtype=np.float32)
    Xtr, ytr, Xte, yte = Xs[:n], ys[:n], Xs[n:], ys[n:]
    t0 = time.perf_counter()
    model = LogisticRegression(l2=1.0).fit(Xtr, ytr)
    t1 = time.perf_counter()
    inf = Influence(model, Xtr, ytr)
    infl = inf.influence(Xte, yte)
    t2 = time.perf_counter()
    print(f"  fit: {t1 - t0:.2f} s ({model.n_iter_} Newton iterations, "
          f"{n * model.n_iter_ / (t1 - t0) / 1e6:.1f} M rows/s per iteration)")
    print(f"  Hessian + s_test + influence of {n} training points on {len(yte)} test points: "
          f"{t2 - t1:.2f} s")
    for t in range(len(yte)):
        order = np.argsort(infl[t])
        print(f"  test point {t} (y={yte[t]}): most helpful rows {order[:3].tolist()} "
              f"({', '.join(f'{v:.2e}' for v in infl[t, order[:3]])}); most harmful rows "
              f"{order[::-1][:3].tolist()} ({', '.join(f'{v:.2e}' for v in infl[t, order[::-1][:3]])})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastinfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="the seed example end to end, then a synthetic data set")
    p_demo.add_argument("--n", type=int, default=200_000, help="synthetic training rows")
    p_demo.add_argument("--d", type=int, default=50, help="synthetic features")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(n=args.n, d=args.d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
