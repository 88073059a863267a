"""Hostile inputs at every public entry point: each gets a clear error, never a NaN, a hang or a crash.

``CASES`` is the table in docs/robustness.md (``python docs/make_robustness.py`` regenerates it).
"""

import functools
import re

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl import Influence, LogisticRegression, loo_retrain

X, Y = make_problem(n=300, d=3, seed=31)
XT, YT = make_problem(n=4, d=3, seed=32)


@functools.lru_cache(maxsize=None)
def model():
    return LogisticRegression(l2=1.0).fit(X, Y)


def _sklearn_model():
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    return SkLogisticRegression().fit(X, Y)


@functools.lru_cache(maxsize=None)
def inf():
    return Influence(model(), X, Y)


def _with(a, index, value):
    a = np.array(a, dtype=float)
    a[index] = value
    return a


# (entry point, bad input, call, exception, message pattern)
CASES = [
    ("fit", "X with NaN", lambda: LogisticRegression().fit(_with(X, (7, 1), np.nan), Y),
     ValueError, r"X contains NaN or inf \(first at row 7\)"),
    ("fit", "X with -inf", lambda: LogisticRegression().fit(_with(X, (299, 0), -np.inf), Y),
     ValueError, r"X contains NaN or inf \(first at row 299\)"),
    ("fit", "X with 1e200 (squares overflow)", lambda: LogisticRegression().fit(_with(X, (3, 0), 1e200), Y),
     ValueError, r"X holds values up to 1e\+200 .*Scale the features"),
    ("fit", "y with 2.5 (a real value, not a class)", lambda: LogisticRegression().fit(X, _with(Y, 5, 2.5)),
     ValueError, r"Unknown label type: continuous.*PoissonRegression"),
    ("fit", "y all one class", lambda: LogisticRegression(l2=1.0).fit(X, np.zeros(300)),
     ValueError, r"y holds only one class \(\[0.0\]\): a classifier needs at least two"),
    ("fit", "y with NaN", lambda: LogisticRegression().fit(X, _with(Y, 9, np.nan)),
     ValueError, r"y contains NaN or inf \(first at row 9\)"),
    ("fit", "y of unorderable objects", lambda: LogisticRegression().fit(X, np.array([{}, []] * 150, dtype=object)),
     ValueError, r"y holds labels that cannot be sorted together"),
    ("fit", "X as object array of strings", lambda: LogisticRegression().fit(np.full(X.shape, "n/a", dtype=object), Y),
     ValueError, r"X must hold real numbers; got dtype object holding another type"),
    ("fit", "X complex", lambda: LogisticRegression().fit(X + 0j, Y),
     ValueError, r"X must hold real numbers; got dtype complex128"),
    ("fit", "X ragged list", lambda: LogisticRegression().fit([[1.0, 2.0], [3.0]], [0, 1]),
     ValueError, r"X could not be converted to an array"),
    ("fit", "X 1-D", lambda: LogisticRegression().fit(X[:, 0], Y),
     ValueError, r"X must be 2-D \(n_samples, n_features\); got shape \(300,\)"),
    ("fit", "X 3-D", lambda: LogisticRegression().fit(X[:, :, None], Y),
     ValueError, r"X must be 2-D"),
    ("fit", "X with 0 rows", lambda: LogisticRegression().fit(X[:0], Y[:0]),
     ValueError, r"X is empty: it has 0 rows"),
    ("fit", "X with 0 columns", lambda: LogisticRegression().fit(X[:, :0], Y),
     ValueError, r"X has no features: 0 feature\(s\) \(shape=\(300, 0\)\)"),
    ("fit", "y shorter than X", lambda: LogisticRegression().fit(X, Y[:-1]),
     ValueError, r"y has 299 labels but X has 300 rows"),
    ("fit", "y 2-D (n, 2)", lambda: LogisticRegression().fit(X, np.c_[Y, Y]),
     ValueError, r"y must be 1-D; got shape \(300, 2\)"),
    ("fit", "l2 = -0.5", lambda: LogisticRegression(l2=-0.5).fit(X, Y),
     ValueError, r"l2 must be >= 0.0; got -0.5"),
    ("fit", "l2 = NaN", lambda: LogisticRegression(l2=np.nan).fit(X, Y),
     ValueError, r"l2 must be finite; got nan"),
    ("fit", "l2 as a string", lambda: LogisticRegression(l2="1").fit(X, Y),
     ValueError, r"l2 must be a real number; got '1'"),
    ("fit", "tol = 0", lambda: LogisticRegression(tol=0).fit(X, Y), ValueError, r"tol must be > 0.0"),
    ("fit", "max_iter = 0", lambda: LogisticRegression(max_iter=0).fit(X, Y),
     ValueError, r"max_iter must be >= 1"),
    ("fit", "init_params of the wrong length", lambda: LogisticRegression().fit(X, Y, init_params=[0, 0]),
     ValueError, r"init_params must have shape \(4,\); got \(2,\)"),
    ("fit", "init_params far from the optimum (margins ~ 1e5: no curvature left)",
     lambda: LogisticRegression().fit(X, Y, init_params=[1e5, 0, 0, 0]),
     fastinfl.SingularHessianError, r"fit without init_params \(it may be too far from the optimum\)"),
    ("fit", "init_params far from the optimum (line search fails)",
     lambda: LogisticRegression().fit(X, Y, init_params=[300.0, 0, 0, 0]),
     fastinfl.ConvergenceError, r"init_params may be too far from the optimum"),
    ("fit", "separable data, l2 = 0", lambda: LogisticRegression(l2=0).fit(X, X[:, 0] > 0),
     fastinfl.ConvergenceError, r"linearly separable.*l2 > 0"),
    ("fit", "quasi-separable data (ties on the boundary), l2 = 0",
     lambda: LogisticRegression(l2=0).fit([[-2.0], [-1.0], [0.0], [0.0], [1.0], [2.0]], [0, 0, 0, 1, 1, 1]),
     fastinfl.ConvergenceError, r"quasi-separable.*l2 > 0"),
    ("fit", "a flag column set only on positives, l2 = 0",
     lambda: LogisticRegression(l2=0).fit(np.c_[X, (Y == 1) & (np.arange(300) < 100)], Y),
     fastinfl.ConvergenceError, r"quasi-separable"),
    ("fit", "features of magnitude 1e8 (gradient at its rounding floor)",
     lambda: LogisticRegression(l2=1.0, max_iter=30).fit(X * 1e8, Y),
     fastinfl.ConvergenceError, r"steps are at rounding level.*standardise the features"),
    ("fit", "duplicated column, l2 = 0", lambda: LogisticRegression(l2=0).fit(np.c_[X, X[:, 1]], Y),
     fastinfl.SingularHessianError, r"not positive definite.*use l2 > 0"),
    ("fit", "max_iter reached", lambda: LogisticRegression(max_iter=1).fit(X, Y),
     fastinfl.ConvergenceError, r"did not converge in max_iter=1 iterations"),
    ("predict_proba", "4 features for a 3-feature model", lambda: model().predict_proba(np.ones((2, 4))),
     ValueError, r"X has 4 features, but LogisticRegression is expecting 3 features as input"),
    ("predict_proba", "unfitted model", lambda: LogisticRegression().predict_proba(X),
     ValueError, r"not fitted: call fit\(\) or use from_params\(\)"),
    ("objective", "y with 3", lambda: model().objective(X, _with(Y, 0, 3)),
     ValueError, r"y must hold labels 0 and 1 only; found \[3.0\] \(first at row 0\)"),
    ("from_params", "coef with inf", lambda: LogisticRegression.from_params([1.0, np.inf]),
     ValueError, r"coef contains NaN or inf \(first at row 1\)"),
    ("from_params", "coef (2, d)", lambda: LogisticRegression.from_params([[1.0, 2.0], [0.0, 1.0]]),
     ValueError, r"coef of shape \(2, d\) is a two-class softmax"),
    ("from_params", "intercept NaN", lambda: LogisticRegression.from_params([1.0], np.nan),
     ValueError, r"intercept must be finite"),
    ("Influence", "unfitted model", lambda: Influence(LogisticRegression(), X, Y),
     ValueError, r"not fitted"),
    ("Influence", "a scikit-learn estimator as model", lambda: Influence(_sklearn_model(), X, Y),
     TypeError, r"model must be a fastinfl.LogisticRegression or fastinfl.PoissonRegression; got LogisticRegression.*from_sklearn"),
    ("Influence", "verify='no'", lambda: Influence(model(), X, Y, verify="no"),
     ValueError, r"verify must be True or False; got 'no'"),
    ("Influence", "X_train with 2 features", lambda: Influence(model(), X[:, :2], Y),
     ValueError, r"X_train has 2 features but the model has 3"),
    ("Influence", "y_train with NaN", lambda: Influence(model(), X, _with(Y, 4, np.nan)),
     ValueError, r"y_train contains NaN or inf \(first at row 4\)"),
    ("Influence", "solver='newton'", lambda: Influence(model(), X, Y, solver="newton"),
     ValueError, r"solver must be one of 'auto', 'direct', 'cg', 'lissa', 'arnoldi'; got 'newton'"),
    ("Influence", "damping = -1", lambda: Influence(model(), X, Y, damping=-1),
     ValueError, r"damping must be >= 0.0; got -1.0"),
    ("Influence", "tol = -1e-10", lambda: Influence(model(), X, Y, tol=-1e-10),
     ValueError, r"tol must be > 0.0"),
    ("Influence", "max_iter = 1.5", lambda: Influence(model(), X, Y, max_iter=1.5),
     ValueError, r"max_iter must be an integer"),
    ("Influence", "batch_size = 0", lambda: Influence(model(), X, Y, batch_size=0),
     ValueError, r"batch_size must be >= 1"),
    ("Influence", "memory_limit = -1", lambda: Influence(model(), X, Y, memory_limit=-1),
     ValueError, r"memory_limit must be >= 1"),
    ("hvp", "V of length p - 1", lambda: inf().hvp(np.ones(3)),
     ValueError, r"V must have shape \(4,\) or \(k, 4\); got \(3,\)"),
    ("inverse_hvp", "V with NaN", lambda: inf().inverse_hvp(_with(np.ones((3, 4)), (2, 0), np.nan)),
     ValueError, r"V contains NaN or inf \(first at row 2\)"),
    ("inverse_hvp", "all weights underflow, l2 = 0 (H = 0)",
     lambda: Influence(LogisticRegression.from_params([1e4, 1e4, 1e4], 0.0), np.abs(X) + 1, np.ones(300),
                       solver="direct").inverse_hvp(np.ones(4)),
     fastinfl.SingularHessianError, r"not positive definite \(smallest eigenvalue 0.*add damping"),
    ("inverse_hvp", "direct solve, nearly collinear columns (x2 = x1 + 1e-7 u), l2 = 0: cond(H) ~ 1e14",
     lambda: Influence(LogisticRegression.from_params([0.3, -0.2], 0.1, l2=0.0),
                       np.c_[X[:, 0], X[:, 0] + 1e-7 * X[:, 1]], Y, solver="direct", stationarity_tol=1e9)
     .inverse_hvp(np.ones(3)),
     fastinfl.SingularHessianError, r"numerically singular: condition number about .*Add damping"),
    ("inverse_hvp", "CG on a singular H (zero column, l2 = 0)",
     lambda: Influence(LogisticRegression.from_params([0.1, 0.2, 0.0], 0.0, l2=0.0),
                       np.c_[X[:, :2], 0 * X[:, 2]], Y, solver="cg", stationarity_tol=1e9)
     .inverse_hvp([0, 0, 1.0, 0]),
     fastinfl.SingularHessianError, r"non-positive curvature.*add damping"),
    ("inverse_hvp", "CG with max_iter = 1", lambda: Influence(model(), X, Y, solver="cg", max_iter=1)
     .inverse_hvp(np.ones(4)), fastinfl.ConvergenceError, r"max_iter=1 .*relative residual"),
    ("s_test", "X_test with inf", lambda: inf().s_test(_with(XT, (3, 2), np.inf), YT),
     ValueError, r"X_test contains NaN or inf \(first at row 3\)"),
    ("s_test", "y_test of the wrong length", lambda: inf().s_test(XT, YT[:2]),
     ValueError, r"y_test has 2 labels but X_test has 4 rows"),
    ("influence", "train_idx out of range", lambda: inf().influence(XT, YT, train_idx=[0, 300]),
     ValueError, r"train_idx holds 300, out of range for 300 training points"),
    ("influence", "train_idx = -301", lambda: inf().influence(XT, YT, train_idx=[-301]),
     ValueError, r"train_idx holds -301, out of range"),
    ("influence", "train_idx uint64 2**64 - 1 (would wrap to -1)",
     lambda: inf().influence(XT, YT, train_idx=np.array([2**64 - 1], np.uint64)),
     ValueError, r"train_idx holds 18446744073709551615, out of range"),
    ("influence", "train_idx float", lambda: inf().influence(XT, YT, train_idx=[1.0]),
     ValueError, r"train_idx must hold integer indices; got dtype float64"),
    ("influence", "train_idx boolean mask", lambda: inf().influence(XT, YT, train_idx=np.ones(300, bool)),
     ValueError, r"train_idx must hold integer indices; got a boolean array"),
    ("influence", "result over memory_limit",
     lambda: Influence(model(), X, Y, memory_limit=1000).influence(XT, YT),
     ValueError, r"influence would be a float64 array of shape \(4, 300\) needing .*top_k\(\)"),
    ("top_k", "k = 0", lambda: inf().top_k(XT, YT, k=0), ValueError, r"k must be >= 1; got 0"),
    ("top_k", "k > n", lambda: inf().top_k(XT, YT, k=301),
     ValueError, r"k must be <= the number of training points \(300\); got 301"),
    ("top_k", "k = True", lambda: inf().top_k(XT, YT, k=True), ValueError, r"k must be an integer"),
    ("loo_change", "correction='exact'", lambda: inf().loo_change(XT, YT, correction="exact"),
     ValueError, r"correction must be one of 'none', 'newton'"),
    ("perturbation", "X_test 1-D", lambda: inf().perturbation(XT[0], YT[:1]),
     ValueError, r"X_test must be 2-D"),
    ("self_influence", "train_idx 2-D", lambda: inf().self_influence([[1, 2]]),
     ValueError, r"train_idx must be 1-D"),
    ("loo_retrain", "train_idx out of range", lambda: loo_retrain(model(), X, Y, [300], XT, YT),
     ValueError, r"train_idx holds 300"),
    ("loo_retrain", "removing the only point of class 1",
     lambda: loo_retrain(model(), X[:60], np.r_[np.zeros(59), 1], [59], XT, YT),
     ValueError, r"refitting without training point 59 \(train_idx\[0\]\): y holds only one class"),
    ("loo_retrain", "y_test with 2", lambda: loo_retrain(model(), X, Y, [0], XT, _with(YT, 1, 2)),
     ValueError, r"y_test must hold labels 0 and 1 only"),
    ("make_logistic", "n = 0", lambda: fastinfl.datasets.make_logistic(0, 3),
     ValueError, r"n and d must be positive"),
    ("make_logistic", "dtype int", lambda: fastinfl.datasets.make_logistic(5, 3, dtype=int),
     ValueError, r"dtype must be float32 or float64"),
]


@pytest.mark.parametrize("entry, what, call, exc, match", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_gets_clear_error(entry, what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _layouts(a):
    """The same values in every layout the API accepts."""
    ro = a.copy()
    ro.setflags(write=False)
    wide = np.zeros((a.shape[0], 2 * a.shape[1]))
    wide[:, ::2] = a
    return {"C": a, "F": np.asfortranarray(a), "list": a.tolist(), "strided view": wide[:, ::2],
            "read-only": ro}


@pytest.mark.parametrize("layout", list(_layouts(X)))
def test_layouts_give_identical_results(layout):
    X_in = _layouts(X)[layout]
    m = LogisticRegression(l2=1.0).fit(X_in, Y.tolist() if layout == "list" else Y)
    np.testing.assert_array_equal(m.params_, model().params_)
    got = Influence(m, X_in, Y).influence(_layouts(XT)[layout], YT)
    np.testing.assert_array_equal(got, inf().influence(XT, YT))


def test_int_and_bool_inputs():
    Xi = np.round(X * 3).astype(np.int64)
    m = LogisticRegression(l2=1.0).fit(Xi, Y.astype(bool))
    ref = LogisticRegression(l2=1.0).fit(Xi.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_array_equal(m.params_, ref.params_)
    np.testing.assert_array_equal(Influence(m, Xi, Y.astype(bool)).self_influence(),
                                  Influence(ref, Xi.astype(float), Y).self_influence())


def test_memmap_input(tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, X)
    X_mm = np.load(path, mmap_mode="r")
    m = LogisticRegression(l2=1.0).fit(X_mm, Y)
    np.testing.assert_array_equal(m.params_, model().params_)
    np.testing.assert_array_equal(Influence(m, X_mm, Y).top_k(XT, YT, k=3).harmful_idx,
                                  inf().top_k(XT, YT, k=3).harmful_idx)


def test_ill_conditioned_hessian_documented_accuracy():
    # Features on scales 1 to 1e-6: cond(H) ~ 1e12. Cholesky's relative error is about cond * 1e-16.
    rng = np.random.default_rng(0)
    Xs = rng.standard_normal((2000, 3)) * np.array([1.0, 1e-3, 1e-6])
    ys = (rng.random(2000) < 0.5).astype(int)
    m = LogisticRegression(l2=1e-12).fit(Xs, ys)
    H = Influence(m, Xs, ys).hessian()
    cond = np.linalg.cond(H)
    assert 1e11 < cond < 1e14
    x_true = rng.standard_normal(4)
    b = H @ x_true
    x = Influence(m, Xs, ys, solver="direct").inverse_hvp(b)
    assert np.linalg.norm(x - x_true) / np.linalg.norm(x_true) < cond * 1e-14


_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def doc_structure(text):
    """The table of docs/robustness.md as (entry point, input, error, message with every number masked).

    Numbers inside messages (a singular Hessian's eigenvalues, a condition number, a gradient norm)
    come from floating-point work whose last digits, and at rounding level whole values, differ
    between CPUs and BLAS builds: the table is compared on everything else.
    """
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [tuple(re.sub(_NUMBER, "<num>", cell.strip()) if j == 3 else cell.strip()
                  for j, cell in enumerate(re.split(r"(?<!\\)\|", row)[1:-1])) for row in rows]


def _render():
    import pathlib
    import runpy

    root = pathlib.Path(__file__).resolve().parents[1]
    return root, runpy.run_path(str(root / "docs" / "make_robustness.py"))["render"]()


def test_robustness_doc_is_current():
    root, rendered = _render()
    doc = (root / "docs" / "robustness.md").read_text()
    assert len(doc_structure(doc)) == len(CASES)
    assert doc_structure(doc) == doc_structure(rendered), "run python docs/make_robustness.py"


def test_robustness_doc_comparison_ignores_machine_dependent_numbers():
    """Another CPU printed the duplicated column's largest Hessian entry as 73.6, not 69: still current;
    a changed error type or message text is not."""
    _, rendered = _render()
    line = next(x for x in rendered.splitlines() if "duplicated column, l2 = 0" in x)
    other_cpu = rendered.replace(line, re.sub(r"largest [\d.e+-]+", "largest 73.6", line))
    assert other_cpu != rendered or "largest" not in line
    assert doc_structure(other_cpu) == doc_structure(rendered)
    assert doc_structure(rendered.replace(line, line.replace("not positive definite", "singular"))) != \
        doc_structure(rendered)
    assert doc_structure(rendered.replace(line, line.replace("SingularHessianError", "ValueError"))) != \
        doc_structure(rendered)
