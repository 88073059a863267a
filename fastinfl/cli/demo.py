"""``fastinfl demo``: the seed notebook end to end, then synthetic data with planted mislabels."""

import time
import warnings

import numpy as np

from .. import datasets
from ..exceptions import ConvergenceError, StationarityWarning
from ..influence import Influence
from ..loo import loo_retrain
from ..classifier import LogisticRegression
from . import compile as _compile
from .progress import chunks, progress
from .run import fit
from .topk import top_k_loo

INTRO = """\
What this shows. An influence function estimates, without refitting, how much one training point
moved the model's loss on one test point (Koh & Liang, ICML 2017). fastinfl reports
I = -g_test^T H^-1 g_i: removing training point i and refitting changes that test loss by about -I.
  negative influence: the point HELPED that test point (without it the test loss would rise);
  positive influence: the point HURT it (without it the test loss would fall).
"""

SEED = """\
Part 1: the seed notebook. This project started from a notebook that fits logistic regression to
3 training points (x = 0, 1, 2 with labels 0, 0, 1) by plain gradient descent and prints each
point's influence on one test point (x = 1.5, label 1). fastinfl reproduces its table, by a direct
solve and by conjugate gradient (CG), the two solvers it uses at scale."""

WARNING = """\
The warning above is part of the demonstration, not a failure: these data are separable (x >= 1.5
means 1), so without an L2 penalty the loss has no minimum and the notebook's parameters are not an
optimum. Influence then describes a quadratic model, not refitting; fastinfl says so instead of
returning numbers silently. A proper fit says the same, by refusing:"""

PLANTED = 10  # training rows whose labels the synthetic part flips


def _table(title, X, y, infl):
    print(title)
    for i, v in enumerate(infl):
        word = "helped" if v < 0 else "hurt" if v > 0 else "did not move"
        print(f"  Training point {i} (x={X[i, 0]}, y={y[i]}): {v:.6f}   ({word} the test point)")


def seed_demo():
    """Part 1: the seed notebook's table (direct and CG), its warning and ConvergenceError, the l2=1 fit."""
    X, y, X_test, y_test = datasets.seed()
    w, b = datasets.seed_fit()
    print(SEED)
    print(f"Its gradient descent (lr 0.1, 2000 steps from zero) stops at w*={w:.6f}, b*={b:.6f}.\n")
    seed_model = LogisticRegression.from_params([w], b, l2=0.0)
    tables = {}
    for solver in ("direct", "cg"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StationarityWarning)
            inf = Influence(seed_model, X, y, solver=solver)
        tables[solver] = inf.influence(X_test, y_test)[0]
        _table(f"Influence on the test point (x={X_test[0, 0]:g}, y={y_test[0]}), solver={solver!r}:", X, y,
               tables[solver])
    diff = np.max(np.abs(tables["direct"] - tables["cg"]))
    print(f"Direct and CG agree to {diff:.1e} (max abs difference).")
    for w_ in caught:
        print(f"Warning: {w_.message}")
    print()
    print(WARNING)
    try:
        LogisticRegression(l2=0.0).fit(X, y)
    except ConvergenceError as exc:
        print(f"  l2=0: ConvergenceError: {exc}")
    model = LogisticRegression(l2=1.0).fit(X, y)
    print(f"With an L2 penalty an optimum exists. l2=1: w*={model.coef_[0]:.6f}, b*={model.intercept_:.6f} "
          f"({model.n_iter_} Newton iterations)")
    inf = Influence(model, X, y)
    _table("Influence at the l2=1 optimum:", X, y, inf.influence(X_test, y_test)[0])


def plant_mislabels(X, y, coef, count=PLANTED, intercept=-0.5):
    """Mislabel the ``count`` rows whose true margin is largest in size: each gets the label the true
    model finds least likely (0 where its margin is positive, else 1). Returns (y, rows)."""
    z = np.asarray(X @ coef.astype(X.dtype), dtype=np.float64) + intercept
    rows = np.sort(np.argsort(-np.abs(z), kind="stable")[:count])
    y = np.array(y, copy=True)
    y[rows] = z[rows] < 0
    return y, rows


def demo(n=1_000_000, d=50, m=1000, seed=0, quiet=False, refits=True):
    """The seed notebook end to end, then synthetic data (n x d float32, m test points)."""
    _compile.notice(["float64", "float32"], quiet=quiet)
    print(INTRO)
    seed_demo()

    planted = min(PLANTED, max(1, n // 100))
    print(f"\nPart 2: synthetic data, for speed and for something you can check: {n:,} training and "
          f"{m:,} test points, {d} features, float32 (fastinfl.datasets.make_logistic). The labels of "
          f"the {planted} training rows the true model is surest about are set to the wrong class: planted "
          "mislabels. "
          "Influence should find them without being told which they are.")
    with progress("generate", enabled=not quiet):
        Xs, ys, coef = datasets.make_logistic(n + m, d, seed=seed, dtype=np.float32)
    Xtr, Xte, yte = Xs[:n], Xs[n:], ys[n:]
    ytr, rows = plant_mislabels(Xtr, ys[:n], coef, planted)
    print(f"  planted mislabels (training rows): {rows.tolist()}")
    t0 = time.perf_counter()  # the same steps on a small slice: compiles (or loads) the float32 kernels
    small = LogisticRegression(l2=1.0).fit(Xtr[:2000], ytr[:2000])
    Influence(small, Xtr[:2000], ytr[:2000]).top_k(Xte[:2], yte[:2], 3)
    print(f"  kernels ready in {time.perf_counter() - t0:.2f} s (compiled on the first run, then "
          "loaded from Numba's disk cache)")

    t0 = time.perf_counter()
    model = fit(Xtr, ytr, 1.0, quiet, "the synthetic data")
    t1 = time.perf_counter()
    print(f"  fit (l2=1): {t1 - t0:.2f} s, {model.n_iter_} Newton iterations "
          f"({n * model.n_iter_ / (t1 - t0) / 1e6:.3g} M rows/s per iteration)")
    inf = Influence(model, Xtr, ytr)

    # 1. Self-influence g_i^T H^-1 g_i: how much a training point pulls the fit towards itself.
    t1 = time.perf_counter()
    self_infl = np.empty(n)
    with progress("self-influence", total=n, enabled=not quiet) as bar:
        for lo, hi in chunks(n):
            self_infl[lo:hi] = inf.self_influence(np.arange(lo, hi))
            bar.update(hi - lo)
    ranked = np.argsort(-self_infl, kind="stable")
    top = ranked[:planted]
    found = np.isin(top, rows).sum()
    within = int(np.max(np.flatnonzero(np.isin(ranked, rows)))) + 1
    print(f"\n  1. Self-influence of all {n:,} training points: {time.perf_counter() - t1:.2f} s. The "
          f"{planted} highest: rows {top.tolist()}\n     {found} of the {planted} planted mislabels are "
          f"among them, and all {planted} among the {within:,} highest ({within / n:.3%} of the data): "
          f"checking those {within:,} labels first finds every planted error.\n     The other rows there "
          "are the data's own label noise (make_logistic draws each label from the true probability).")

    # 2. Helpful and harmful training points of every test point, streamed.
    t2 = time.perf_counter()
    best, _ = top_k_loo(inf, Xte, yte, 3, quiet, newton=False)
    t3 = time.perf_counter()
    print(f"\n  2. The 3 most helpful and 3 most harmful training points of each of the {m:,} test points: "
          f"{t3 - t2:.2f} s, {n * m / (t3 - t2) / 1e6:.3g} M influences/s\n     (Hessian, Cholesky, "
          f"s_test and all {n * m:,} influences streamed through Influence.top_k, never stored). "
          "For example:")
    for t in range(min(3, m)):
        print(f"     test point {t} (y={yte[t]}): most helpful rows {best.helpful_idx[t].tolist()} "
              f"({', '.join(f'{v:.2e}' for v in best.helpful[t])}); most harmful rows "
              f"{best.harmful_idx[t].tolist()} ({', '.join(f'{v:.2e}' for v in best.harmful[t])})")

    # 3. Check a prediction: refit without the top helpful and the top harmful point of one test point.
    if not refits:
        return
    losses = model.losses(Xte, yte)
    t = int(np.argmax(losses))
    pick = [("most harmful", int(best.harmful_idx[t, 0])), ("most helpful", int(best.helpful_idx[t, 0]))]
    idx = [i for _, i in pick]
    pred = inf.loo_change(Xte[t:t + 1], yte[t:t + 1], idx, correction="newton")[0]
    t4 = time.perf_counter()
    with progress("refits", total=None, enabled=not quiet):
        actual = loo_retrain(model, Xtr, ytr, idx, Xte[t:t + 1], yte[t:t + 1])[0]
    print(f"\n  3. Checking two predictions by refitting without each point ({len(idx)} refits of "
          f"{n:,} rows, {time.perf_counter() - t4:.2f} s). Test point {t}, the one of highest loss "
          f"({losses[t]:.3f}):")
    print("     training row     influence   predicted change   actual change (refit)")
    for (word, i), p, a in zip(pick, pred, actual, strict=True):
        infl = best.harmful[t, 0] if word == "most harmful" else best.helpful[t, 0]
        print(f"     {i:>8} {word:<13} {infl:+.3e}   {p:+.4e}        {a:+.4e}")
    err = np.max(np.abs(pred - actual) / np.abs(actual))
    print("     Removing a harmful point lowers the test loss (negative change), removing a helpful one "
          f"raises it;\n     the prediction (one Newton step, loss evaluated exactly; no refit) is within {err:.2%} of the refit.")
