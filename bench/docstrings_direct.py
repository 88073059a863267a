"""top_k on a TF-IDF matrix of NumPy and SciPy docstrings: the direct solver (now chosen wherever H fits in
memory) against CG (what "auto" took before, when sparse X was refused the direct solver above 8,192
parameters), in one run.

    python -m bench.docstrings_direct [--features 8817] [--m 377] [--k 10] [--repeats 1]

Data, built offline from the installed packages: the ``__doc__`` of every public function, class and
ufunc of numpy and of the scipy subpackages below (each docstring once), TF-IDF by scikit-learn's
``TfidfVectorizer(max_features=FEATURES, sublinear_tf=True)``; label 1 for scipy, 0 for numpy. The
test points are m documents spread evenly over the corpus, the rest train. l2 = 1. Timed from ``Influence(model, X, y, solver=...)``
to the end of ``top_k(X_test, y_test, k)`` (the solver's setup, the Hessian and its factor for
direct, included), after an untimed run on a slice that compiles or loads the kernels.
"""

import argparse
import importlib
import inspect
import shlex
import sys
import time
import warnings

import numpy as np

import fastinfl
from bench import machine

SCIPY_SUBPACKAGES = ("cluster", "fft", "integrate", "interpolate", "io", "linalg", "ndimage", "optimize",
                     "signal", "sparse", "sparse.linalg", "spatial", "special", "stats")
NUMPY_MODULES = ("numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma", "numpy.polynomial")


def _docstrings(module_names):
    with warnings.catch_warnings():  # deprecated attributes warn on access
        warnings.simplefilter("ignore")
        return _collect(module_names)


def _collect(module_names):
    docs = {}
    for name in module_names:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            try:
                obj = getattr(mod, attr)
            except Exception:  # noqa: BLE001 - deprecated attributes may raise on access
                continue
            if not (callable(obj) or inspect.isclass(obj)):
                continue
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200:
                docs.setdefault(doc, f"{name}.{attr}")
    return docs


def corpus():
    """(texts, labels 0 numpy / 1 scipy, names): each docstring once (numpy's first, when shared)."""
    numpy_docs = _docstrings(NUMPY_MODULES)
    scipy_docs = {doc: name for doc, name in _docstrings([f"scipy.{s}" for s in SCIPY_SUBPACKAGES]).items()
                  if doc not in numpy_docs}
    texts = list(numpy_docs) + list(scipy_docs)
    labels = np.r_[np.zeros(len(numpy_docs)), np.ones(len(scipy_docs))]
    return texts, labels, list(numpy_docs.values()) + list(scipy_docs.values())


def _run(model, X, y, Xt, yt, k, solver):
    """Seconds of (Influence + top_k, a second top_k on the same Influence, loo_change of the listed
    training points as `fastinfl run` computes it), and the first TopK."""
    t0 = time.perf_counter()
    inf = fastinfl.Influence(model, X, y, solver=solver)
    top = inf.top_k(Xt, yt, k)
    t1 = time.perf_counter()
    inf.top_k(Xt, yt, k)
    t2 = time.perf_counter()
    listed = np.unique(np.concatenate([top.helpful_idx.ravel(), top.harmful_idx.ravel()]))
    inf.loo_change(Xt, yt, listed[listed >= 0], correction="newton")
    t3 = time.perf_counter()
    return (t1 - t0, t2 - t1, t3 - t2), top, inf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=8817)
    parser.add_argument("--m", type=int, default=377, help="test documents")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per solver (the best is shown)")
    args = parser.parse_args(argv)
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts, labels, _ = corpus()
    X = TfidfVectorizer(max_features=args.features, sublinear_tf=True).fit_transform(texts).tocsr()
    n_docs = X.shape[0]
    test = np.zeros(n_docs, bool)
    test[np.linspace(0, n_docs - 1, args.m).astype(int)] = True
    Xtr, ytr, Xte, yte = X[~test], labels[~test], X[test], labels[test]
    model = fastinfl.LogisticRegression(l2=1.0).fit(Xtr, ytr)
    p = model.n_features_ + 1
    # compile or load the kernels outside the timings (both solvers, the same kinds of data)
    rows_small = np.linspace(0, Xtr.shape[0] - 1, 200).astype(int)  # both classes
    Xs, ys = Xtr[rows_small][:, :300], ytr[rows_small]
    small = fastinfl.LogisticRegression(l2=1.0).fit(Xs, ys)
    for solver in ("direct", "cg"):
        fastinfl.Influence(small, Xs, ys, solver=solver).top_k(Xte[:3, :300], yte[:3], 2)
    auto = fastinfl.Influence(model, Xtr, ytr)
    rows = []
    results = {}
    for label, solver in (("CG (what auto took before: sparse X above 8,192 parameters was refused the direct "
                           "solver)", "cg"),
                          (f"auto now (picks {'direct' if auto.uses_direct else 'cg'})", "auto"),
                          ("direct, forced", "direct")):
        best = None
        for _ in range(args.repeats):
            seconds, top, inf = _run(model, Xtr, ytr, Xte, yte, args.k, solver)
            best = seconds if best is None else tuple(map(min, best, seconds))
        results[solver] = top
        extra = f" (CG iterations max {int(np.max(inf.cg_n_iter_))})" if inf.solver_.name == "cg" else ""
        rows.append((label + extra, best))
    same = np.mean([len(set(a) & set(b)) / args.k
                    for a, b in zip(results["cg"].harmful_idx, results["direct"].harmful_idx, strict=True)])
    gap = float(np.max(np.abs(results["cg"].harmful - results["direct"].harmful))
                / np.max(np.abs(results["direct"].harmful)))

    print(f"`{shlex.join(['python', '-m', 'bench.docstrings_direct', *(sys.argv[1:] if argv is None else argv)])}`  ")
    print(f"Machine: {machine.describe()}  ")
    print(f"Data: {n_docs} docstrings ({int(labels.sum())} scipy, {int((1 - labels).sum())} numpy), TF-IDF "
          f"{X.shape[1]} features, {X.nnz:,} nonzeros; {Xtr.shape[0]} train, {Xte.shape[0]} test; p = {p}, "
          f"dense H {8 * p * p / 2**30:.3g} GiB; model fit in {model.n_iter_} Newton steps.\n")
    print(f"| solver | Influence(...) + top_k of {Xte.shape[0]} test documents, k = {args.k} (s) | a second "
          "top_k, same Influence (s) | loo_change (newton) of the listed training points (s) |")
    print("|---|---:|---:|---:|")
    for label, (first, second, loo) in rows:
        print(f"| {label} | {first:.2f} | {second:.2f} | {loo:.2f} |")
    print(f"\nCG and direct agree: {same:.1%} of the harmful top-{args.k} indices shared, largest value gap "
          f"{gap:.1e} of the largest value (CG at tol 1e-10).")


if __name__ == "__main__":
    main()
