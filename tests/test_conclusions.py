"""fastinfl.robustness (drop_to_flip, relabel_to_flip) against actual refits.

The references are refits: an exhaustive search over every subset of up to KMAX rows (a batched
NumPy Newton fit per subset, written here independently of the library), scikit-learn refits of
every answer, and statsmodels' standard errors. Data: statsmodels' spector (32 rows) and
scikit-learn's iris, versicolor vs virginica by sepal length and width (100 rows); a synthetic
masking case (two outliers hiding each other, after Huang et al. 2024).
docs/make_validation_conclusions.py prints the same comparison as a table for docs/validation.md.
"""

import itertools

import numpy as np
import pytest
import scipy.special
import scipy.stats

import fastinfl
from fastinfl.robustness import FlipResult, drop_to_flip, relabel_to_flip, target_changes

L2 = 0.1  # the exhaustive cases (with l2 = 0 some subsets of spector leave separable data)
LEVEL = 0.05
METHODS = ("additive", "newton", "greedy")


# ------------------------------------------------------------------------------ data
def spector():
    import statsmodels.api as sm

    data = sm.datasets.spector.load_pandas()
    return data.exog.to_numpy(np.float64), data.endog.to_numpy(np.float64)


def iris_sepals():
    """Iris versicolor (0) vs virginica (1) by sepal length and width: 100 rows, overlapping classes."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    keep = y > 0
    return X[keep][:, :2].astype(np.float64), (y[keep] == 2).astype(np.float64)


def masking_case(seed=0, n=200, x_out=10.0):
    """n rows with no relation between x and y, plus two identical outliers (x_out, 1).

    Together they make coef_[0] positive; each one alone is fitted well by the slope that both
    hold up (small residual), so its first-order influence is small: each masks the other."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x -= x.mean()
    y = (rng.random(n) < 0.3).astype(np.float64)
    return np.concatenate([x, [x_out, x_out]])[:, None], np.concatenate([y, [1.0, 1.0]])


DATASETS = {"spector": (spector, 4), "iris_sepals": (iris_sepals, 3)}  # loader, KMAX


# ------------------------------------------------------------------------------ references
def tilde(X):
    return np.hstack([X, np.ones((X.shape[0], 1))])


def batched_refits(X, y, l2, masks, theta0):
    """Optimal theta (B, p) and inverse Hessian (B, p, p) of the objective with row weights masks (B, n).

    Plain Newton from theta0 on all B problems at once, to max|grad| <= 1e-10 n."""
    A = tilde(X)
    B, p = masks.shape[0], A.shape[1]
    ridge = np.full(p, l2)
    ridge[-1] = 0.0
    AA = np.einsum("ni,nj->nij", A, A).reshape(A.shape[0], p * p)  # rows vec(x~ x~^T): H by one GEMM
    theta = np.tile(theta0, (B, 1))
    for _ in range(50):
        z = theta @ A.T  # (B, n)
        s = scipy.special.expit(z)
        grad = ((s - y) * masks) @ A + ridge * theta
        H = ((s * (1 - s) * masks) @ AA).reshape(B, p, p) + np.diag(ridge)
        if np.max(np.abs(grad)) <= 1e-10 * X.shape[0]:
            return theta, np.linalg.inv(H)
        theta = theta - np.linalg.solve(H, grad[:, :, None])[:, :, 0]
    raise AssertionError("the reference Newton refits did not converge")


def target_L(target, theta, V):
    """(B,) coef, z-statistic or margin for parameters theta (B, p), inverse Hessians V (B, p, p)."""
    if target[0] == "coef":
        return theta[:, target[1]]
    if target[0] == "significance":
        j = target[1]
        return theta[:, j] / np.sqrt(V[:, j, j])
    return theta @ np.append(target[1], 1.0)


def conclusion(target, L):
    if target[0] == "significance":
        return np.abs(L) > scipy.stats.norm.ppf(1 - target[2] / 2)
    return L > 0


def all_subset_refits(X, y, l2, k, chunk=20000):
    """theta (C, p) and inverse Hessians (C, p, p) of the refits without each of the n-choose-k subsets."""
    n = X.shape[0]
    theta_full, _ = batched_refits(X, y, l2, np.ones((1, n)), np.zeros(X.shape[1] + 1))
    combos = np.array(list(itertools.combinations(range(n), k)))
    parts = []
    for lo in range(0, len(combos), chunk):
        part = combos[lo:lo + chunk]
        masks = np.ones((len(part), n))
        masks[np.arange(len(part))[:, None], part] = 0.0
        parts.append(batched_refits(X, y, l2, masks, theta_full[0]))
    return np.concatenate([t for t, _ in parts]), np.concatenate([v for _, v in parts])


_REFITS = {}


def exhaustive_minimum(X, y, l2, target, kmax):
    """The smallest k <= kmax such that dropping some k rows flips the target (refits), else None."""
    n = X.shape[0]
    theta_full, V_full = batched_refits(X, y, l2, np.ones((1, n)), np.zeros(X.shape[1] + 1))
    before = conclusion(target, target_L(target, theta_full, V_full))[0]
    for k in range(1, kmax + 1):
        key = (X.tobytes(), y.tobytes(), l2, k)  # the refits do not depend on the target: reuse them
        if key not in _REFITS:
            _REFITS[key] = all_subset_refits(X, y, l2, k)
        theta, V = _REFITS[key]
        if np.any(conclusion(target, target_L(target, theta, V)) != before):
            return k
    return None


def sklearn_params(X, y, l2):
    """theta of an independent scikit-learn fit (intercept unpenalised, C = 1/l2), tight tolerance."""
    from sklearn.linear_model import LogisticRegression

    C = np.inf if l2 == 0 else 1.0 / l2  # C = inf: unpenalised (penalty=None is deprecated since 1.8)
    est = LogisticRegression(solver="newton-cholesky", C=C, tol=1e-12, max_iter=1000).fit(X, y)
    return np.append(est.coef_[0], est.intercept_[0])


def independent_value(X, y, l2, target, drop=(), relabel=()):
    """The target's value after a scikit-learn refit without ``drop`` / with ``relabel`` flipped."""
    y = y.copy()
    y[list(relabel)] = 1 - y[list(relabel)]
    keep = np.setdiff1d(np.arange(X.shape[0]), list(drop))
    Xk, yk = X[keep], y[keep]
    theta = sklearn_params(Xk, yk, l2)
    A = tilde(Xk)
    s = scipy.special.expit(A @ theta)
    ridge = np.append(np.full(X.shape[1], l2), 0.0)
    V = np.linalg.inv((A.T * (s * (1 - s))) @ A + np.diag(ridge))
    L = target_L(target, theta[None], V[None])[0]
    return float(scipy.special.expit(L)) if target[0] == "prediction" else float(L)


def check_answer(res, X, y, l2, target, relabel=False):
    """Every answer: finite, verified, its refit equal to scikit-learn's, flipped judged on the refit."""
    assert isinstance(res, FlipResult)
    assert res.verified and np.isfinite([res.predicted, res.refit, res.original]).all()
    assert np.isfinite(res.path).all() and res.path.shape == (len(res.indices) + 1,)
    assert res.path[0] == res.original and res.path[-1] == res.predicted
    assert len(set(res.indices.tolist())) == len(res.indices)
    assert res.fraction == len(res.indices) / X.shape[0]
    kw = {"relabel": res.indices} if relabel else {"drop": res.indices}
    ref = independent_value(X, y, l2, target, **kw)
    assert res.refit == pytest.approx(ref, rel=1e-6, abs=1e-8)
    full = independent_value(X, y, l2, target)
    assert res.original == pytest.approx(full, rel=1e-6, abs=1e-8)
    to_L = (lambda v: scipy.special.logit(v)) if target[0] == "prediction" else (lambda v: v)
    was, now = (conclusion(target, np.array([to_L(v)]))[0] for v in (full, ref))
    assert res.flipped == bool(now != was)


def targets_for(X, model):
    d = X.shape[1]
    margins = np.abs(model.predict_proba(X)[:, 1] - 0.5)
    n = len(margins)
    rows = np.argsort(margins)[[n // 8, n // 4, n // 2]]  # three rows of rising confidence
    return ([("coef", j) for j in range(d)] + [("significance", j, LEVEL) for j in range(d)]
            + [("prediction", X[i]) for i in rows])


def case_id(t):
    return f"{t[0]}{t[1] if t[0] != 'prediction' else ''}"


# ------------------------------------------------------------------------------ tests
def test_significance_uses_the_hessian_standard_errors_of_statsmodels():
    """With l2 = 0, the z-statistic of the significance target is statsmodels' Logit z-value."""
    import statsmodels.api as sm

    X, y = spector()
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=0.0).fit(X, y), X, y)
    z = sm.Logit(y, sm.add_constant(X, prepend=False)).fit(disp=0, tol=1e-12).tvalues
    for j in range(3):
        res = drop_to_flip(inf, ("significance", j, LEVEL), max_fraction=0.1, refit=False)
        assert res.original == pytest.approx(z[j], rel=1e-7)


@pytest.mark.parametrize("l2", [0.0, L2])
def test_first_order_changes_are_the_derivative_and_track_refits(l2):
    """target_changes (the ranking) on spector, every target: exactly the derivative of the refitted
    target in a row's weight (finite differences of refits with that row's weight 1 - 1e-6: the
    z-statistic's includes its moving standard error), and close to refits without each row."""
    X, y = spector()
    model = fastinfl.LogisticRegression(l2=l2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    n, eps = X.shape[0], 1e-6
    theta_full, V_full = batched_refits(X, y, l2, np.ones((1, n)), np.zeros(4))
    theta_eps, V_eps = batched_refits(X, y, l2, 1.0 - eps * np.eye(n), theta_full[0])
    theta_loo, V_loo = batched_refits(X, y, l2, 1.0 - np.eye(n), theta_full[0])
    for target in targets_for(X, model):
        full = target_L(target, theta_full, V_full)[0]
        predicted = target_changes(inf, target)
        assert predicted.shape == (n,) and np.isfinite(predicted).all()
        derivative = (target_L(target, theta_eps, V_eps) - full) / eps
        assert np.max(np.abs(predicted - derivative)) < 1e-5 * np.max(np.abs(derivative)), case_id(target)
        actual = target_L(target, theta_loo, V_loo) - full
        assert np.corrcoef(predicted, actual)[0, 1] > 0.9, case_id(target)
        assert np.mean(np.sign(predicted) == np.sign(actual)) >= 0.9, case_id(target)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_greedy_against_exhaustive_search(name):
    """Greedy's set size vs the true minimum over all subsets of up to KMAX rows (refits).

    Wherever greedy's set has at most KMAX rows, no smaller set flips the target: greedy found
    the minimum (on these data; it is not guaranteed in general, see docs/conclusions.md). Where
    greedy needs more, or finds nothing, no set of up to KMAX rows exists either."""
    loader, kmax = DATASETS[name]
    X, y = loader()
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    proven = 0
    for target in targets_for(X, model):
        res = drop_to_flip(inf, target, max_fraction=0.25, method="greedy")
        check_answer(res, X, y, L2, target)
        k_greedy = len(res.indices) if res.flipped else None
        if k_greedy is None or k_greedy > kmax:
            assert exhaustive_minimum(X, y, L2, target, kmax) is None, case_id(target)
        else:
            assert exhaustive_minimum(X, y, L2, target, k_greedy - 1) is None, case_id(target)
            proven += 1
    assert proven >= 2


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_method_is_verified_by_refits(name, method):
    X, y = DATASETS[name][0]()
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    for target in targets_for(X, model):
        res = drop_to_flip(inf, target, max_fraction=0.1, method=method)
        check_answer(res, X, y, L2, target)
        assert res.method == method
        if method == "greedy":  # its path is a converged fit: the prediction is the refit
            assert res.predicted == pytest.approx(res.refit, rel=1e-6, abs=1e-8)
            assert res.found == res.flipped


def test_masking_additive_misses_greedy_finds():
    """Two outliers hide each other: the additive (first-order) method predicts no flip within 2%
    of the data, although dropping the two outliers flips the sign; greedy finds exactly them,
    and no single row flips it (refits of all 202), so greedy's answer is the minimum."""
    X, y = masking_case()
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    outliers = [200, 201]
    assert model.coef_[0] > 0
    assert independent_value(X, y, 1.0, ("coef", 0), drop=outliers) < 0
    additive = drop_to_flip(inf, ("coef", 0), max_fraction=0.02, method="additive")
    check_answer(additive, X, y, 1.0, ("coef", 0))
    assert not additive.found and additive.predicted > 0  # first order: still positive after 4 rows
    assert set(outliers) <= set(additive.indices.tolist())  # ranked first, but their sum underestimates
    greedy = drop_to_flip(inf, ("coef", 0), max_fraction=0.02, method="greedy")
    check_answer(greedy, X, y, 1.0, ("coef", 0))
    assert greedy.flipped and greedy.found and sorted(greedy.indices.tolist()) == outliers
    assert exhaustive_minimum(X, y, 1.0, ("coef", 0), 1) is None


def test_relabel_to_flip_against_refits_and_exhaustive_search():
    X, y = spector()
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    proba = model.predict_proba(X)[:, 1]
    for i in np.argsort(np.abs(proba - 0.5))[[8, 16, 24]]:
        target = ("prediction", X[i])
        res = relabel_to_flip(inf, X[i], max_count=8)
        check_answer(res, X, y, L2, target, relabel=True)
        assert res.flipped and res.method == "relabel"
        assert res.predicted == pytest.approx(res.refit, rel=1e-6)
        before = proba[i] > 0.5
        for k in range(1, min(len(res.indices), 3)):  # no smaller set of label flips exists
            for combo in itertools.combinations(range(len(y)), k):
                y2 = y.copy()
                y2[list(combo)] = 1 - y2[list(combo)]
                theta = fastinfl.LogisticRegression(l2=L2).fit(X, y2).params_
                assert (np.append(X[i], 1.0) @ theta > 0) == before


def test_no_set_within_the_limit_is_an_answer():
    """A prediction far from the boundary cannot be flipped by 1 of 32 rows: found and flipped
    False, the one row tried returned with its refit."""
    X, y = spector()
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    i = int(np.argmin(model.predict_proba(X)[:, 1]))
    for method in METHODS:
        res = drop_to_flip(inf, ("prediction", X[i]), max_fraction=1 / 32, method=method)
        assert not res.found and not res.flipped and len(res.indices) == 1
        check_answer(res, X, y, L2, ("prediction", X[i]))
    assert "not flipped" in repr(res) and "no flip predicted" in repr(res)


def test_refit_false_skips_the_refit_and_says_so():
    X, y = spector()
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=L2).fit(X, y), X, y)
    res = drop_to_flip(inf, ("coef", 1), max_fraction=0.2, refit=False)
    assert not res.verified and np.isnan(res.refit) and res.flipped == res.found
    assert "refit not run" in repr(res)


def test_float32_and_sparse_training_data_give_the_same_answer():
    import scipy.sparse

    X, y = spector()
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    ref = drop_to_flip(fastinfl.Influence(model, X, y), ("coef", 1), max_fraction=0.25)
    inf_csr = fastinfl.Influence(model, scipy.sparse.csr_matrix(X), y)
    sparse = drop_to_flip(inf_csr, ("coef", 1), max_fraction=0.25)
    assert sparse.indices.tolist() == ref.indices.tolist()
    assert sparse.refit == pytest.approx(ref.refit, rel=1e-9)
    X32 = X.astype(np.float32)
    m32 = fastinfl.LogisticRegression(l2=L2).fit(X32, y)
    res32 = drop_to_flip(fastinfl.Influence(m32, X32, y), ("coef", 1), max_fraction=0.25)
    assert res32.indices.tolist() == ref.indices.tolist() and res32.flipped == ref.flipped


@pytest.mark.parametrize("kwargs, match", [
    ({"target": ("coef",)}, "needs 2 entries"),
    ({"target": ("slope", 0)}, "target must be"),
    ({"target": "coef"}, "target must be"),
    ({"target": ("coef", 3)}, r"j must be an integer in \[0, 3\)"),
    ({"target": ("coef", 1.0)}, "j must be an integer"),
    ({"target": ("significance", 0, 1.5)}, r"level must be a number in \(0, 1\)"),
    ({"target": ("significance", 0)}, "needs 3 entries"),
    ({"target": ("prediction", [1.0, 2.0])}, r"target x must have shape \(3,\)"),
    ({"target": ("prediction", [1.0, np.nan, 2.0])}, "target x"),
    ({"max_fraction": 0.0}, "max_fraction must be > 0"),
    ({"max_fraction": 0.9}, r"max_fraction must be in \(0, 0.5\]"),
    ({"max_fraction": 0.01}, "allows no point"),
    ({"method": "exhaustive"}, "method must be one of"),
    ({"refit": "yes"}, "refit must be True or False"),
])
def test_argument_errors_name_the_argument(kwargs, match):
    X, y = spector()
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=L2).fit(X, y), X, y)
    args = {"target": ("coef", 0), "max_fraction": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        drop_to_flip(inf, **args)


def test_relabel_and_inf_argument_errors():
    X, y = spector()
    model = fastinfl.LogisticRegression(l2=L2).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    with pytest.raises(ValueError, match="inf must be a fastinfl.Influence"):
        drop_to_flip(model, ("coef", 0))
    with pytest.raises(ValueError, match="max_count must be >= 1"):
        relabel_to_flip(inf, X[0], max_count=0)
    with pytest.raises(ValueError, match=r"max_count must be <= the number of training rows \(32\)"):
        relabel_to_flip(inf, X[0], max_count=33)
    with pytest.raises(ValueError, match="target x must have shape"):
        relabel_to_flip(inf, X[:2])
    y3 = np.arange(30) % 3
    multi = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X[:30], y3)
    with pytest.raises(ValueError, match="binary fastinfl.LogisticRegression"):
        relabel_to_flip(fastinfl.Influence(multi, X[:30], y3), X[0])
    counts = np.arange(32) % 4
    poisson = fastinfl.PoissonRegression(l2=1.0).fit(X, counts)
    with pytest.raises(ValueError, match="got PoissonRegression"):
        drop_to_flip(fastinfl.Influence(poisson, X, counts), ("coef", 0), max_fraction=0.1)


# ------------------------------------------------------------------------------ command line
@pytest.fixture
def spector_csv(tmp_path):
    X, y = spector()
    path = tmp_path / "spector.csv"
    rows = "\n".join(",".join(f"{v:g}" for v in (*x, t)) for x, t in zip(X, y, strict=True))
    path.write_text("GPA,TUCE,PSI,GRADE\n" + rows + "\n")
    return str(path)


def test_cli_table_and_plot_match_the_api(spector_csv, tmp_path, capsys):
    from fastinfl.cli.main import main

    plot = tmp_path / "path.png"
    assert main(["robustness", spector_csv, "--target", "coef:TUCE", "--l2", "0.1", "--max-fraction", "0.25",
                 "--plot", str(plot), "--quiet"]) == 0
    out = capsys.readouterr().out
    X, y = spector()
    res = drop_to_flip(fastinfl.Influence(fastinfl.LogisticRegression(l2=0.1).fit(X, y), X, y), ("coef", 1),
                       max_fraction=0.25)
    lines = out.splitlines()
    assert "coef 1 (TUCE)" in lines[0] and "method greedy" in lines[0]
    chosen = [int(line.split()[1]) for line in lines[3:3 + len(res.indices)]]
    assert chosen == res.indices.tolist()
    assert lines[-1].startswith(f"refit with the {len(res.indices)} rows dropped") and "FLIPPED" in lines[-1]
    assert f"{res.refit:.6g}" in lines[-1]
    assert plot.stat().st_size > 1000 and not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_cli_prediction_relabel_and_significance(spector_csv, tmp_path, capsys):
    from fastinfl.cli.main import main

    assert main(["robustness", spector_csv, "--target", "prediction:3", "--test", spector_csv, "--relabel",
                 "--l2", "0", "--max-fraction", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "row relabelled" in out and "FLIPPED" in out
    X, y = spector()
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=0.0).fit(X, y), X, y)
    ref = relabel_to_flip(inf, X[3], max_count=9)
    assert f"{ref.refit:.6g} (full fit {ref.original:.6g})" in out
    np.save(tmp_path / "points.npy", X[[0, 3]])  # a .npy TEST of features only
    assert main(["robustness", spector_csv, "--target", "prediction:1", "--test",
                 str(tmp_path / "points.npy"), "--relabel", "--l2", "0", "--max-fraction", "0.3"]) == 0
    assert f"{ref.refit:.6g} (full fit {ref.original:.6g})" in capsys.readouterr().out
    assert main(["robustness", spector_csv, "--target", "significance:2:0.05", "--l2", "0",
                 "--max-fraction", "0.1", "--method", "newton"]) == 0
    out = capsys.readouterr().out
    assert "significance of coef 2 (PSI) at 0.05" in out and "refit with the" in out


@pytest.mark.parametrize("argv, message", [
    (["--target", "coef:FOO"], "no feature column named 'FOO'"),
    (["--target", "coef:7"], "J must be in 0..2"),
    (["--target", "slope:1"], "--target must be coef:J"),
    (["--target", "significance:1:2"], r"LEVEL must be a number in \(0, 1\)"),
    (["--target", "prediction:3"], "needs --test TEST"),
    (["--target", "coef:1", "--relabel"], "--relabel goes with --target prediction:ROW"),
    (["--target", "coef:1"], r"--max-fraction=0.01 allows no point of the 32 training rows"),
])
def test_cli_errors_are_one_line(spector_csv, capsys, argv, message):
    import re

    from fastinfl.cli.main import main

    assert main(["robustness", spector_csv, *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastinfl: error:") and len(err.splitlines()) == 1 and re.search(message, err)


def test_bench_script_runs_and_counts_two_passes_per_step(capsys):
    """bench/drop_to_flip.py end to end on a tiny problem; its counted cost model holds."""
    import re

    from bench import drop_to_flip as bench

    bench.main(["--n", "5000", "--d", "5", "--naive-steps", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| fastinfl greedy (setup" in out and "| naive: scikit-learn lbfgs" in out
    per_step = re.search(r"per greedy step \(counted\): ([\d.]+) X~ T .*?, ([\d.]+) X~\^T r", out)
    # a step: a Newton step or two, maybe a third on so small a problem, each one pass; never a refit
    assert per_step and 1 <= float(per_step.group(1)) <= 4 and 1 <= float(per_step.group(2)) <= 4


def test_docs_worked_example_prints_what_the_page_shows(capsys):
    """docs/conclusions.md: its Python block run as written prints its text block."""
    import pathlib
    import re

    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "conclusions.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, flags=re.S).group(1)
    shown = re.search(r"```text\n(FlipResult.*?)```", page, flags=re.S).group(1)
    exec(compile(code, "docs/conclusions.md", "exec"), {})
    assert capsys.readouterr().out == shown


def test_a_refit_without_an_optimum_raises_and_names_the_rows():
    """With l2 = 0, dropping the additive method's 4 rows leaves separable data: no silent number."""
    X = np.array([[0.0], [1.0], [2.0], [3.0], [1.5], [1.6], [1.2], [2.2]])
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0.0])
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=0.0).fit(X, y), X, y)
    message = r"refitting without training rows \[3, 1, 0, 2\].*separable"
    with pytest.raises(fastinfl.ConvergenceError, match=message):
        drop_to_flip(inf, ("coef", 0), max_fraction=0.5, method="additive")
    res = drop_to_flip(inf, ("coef", 0), max_fraction=0.5, method="greedy")  # its 2 rows leave an optimum
    check_answer(res, X, y, 0.0, ("coef", 0))
    assert res.flipped and res.indices.tolist() == [3, 0]
