"""fastinfl's models as scikit-learn estimators: labels of any type, C, clone, search, pipelines, weights.

References: scikit-learn's own LogisticRegression / PoissonRegressor fits (tight tol), scikit-learn's common
checks, and, for sample weights, the same data with rows duplicated (an integer weight is that many copies).
"""

import warnings

import numpy as np
import pytest
import scipy.sparse
from problems import make_problem

import fastinfl
from fastinfl._estimator import expected_failed_checks

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression as SkLogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

with warnings.catch_warnings():  # "does not inherit from BaseEstimator": by design, import fastinfl needs no sklearn
    warnings.simplefilter("ignore", UserWarning)
    _COMMON_CHECKS = parametrize_with_checks([fastinfl.LogisticRegression(), fastinfl.PoissonRegression()],
                                             expected_failed_checks=expected_failed_checks)


@_COMMON_CHECKS
def test_scikit_learn_common_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the checks provoke feature-name warnings on purpose
        warnings.simplefilter("ignore", FutureWarning)
        check(estimator)


def test_every_common_check_passes():
    assert expected_failed_checks(fastinfl.LogisticRegression()) == {}
    assert expected_failed_checks(fastinfl.PoissonRegression()) == {}


@pytest.mark.parametrize("labels", [("no", "yes"), (-1, 1), (False, True), (3, 7), (0.0, 1.0)])
def test_any_two_labels_give_the_0_1_model(labels):
    X, y01 = make_problem(n=200, d=3, seed=2)
    y = np.where(y01 == 1, labels[1], labels[0])
    ref = fastinfl.LogisticRegression(l2=0.5).fit(X, y01)
    model = fastinfl.LogisticRegression(l2=0.5).fit(X, y)
    assert model.classes_.tolist() == list(labels)
    np.testing.assert_allclose(model.params_, ref.params_, rtol=0, atol=1e-12)
    assert model.predict(X).tolist() == np.where(ref.predict(X) == 1, labels[1], labels[0]).tolist()
    assert model.predict_proba(X).shape == (200, 2)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, rtol=1e-15)
    assert model.score(X, y) == ref.score(X, y01)
    inf, ref_inf = fastinfl.Influence(model, X, y), fastinfl.Influence(ref, X, y01)
    np.testing.assert_allclose(inf.influence(X[:3], y[:3]), ref_inf.influence(X[:3], y01[:3]), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="not among the model's classes"):
        inf.influence(X[:1], ["maybe"])


def test_pandas_categorical_labels_and_frames():
    pd = pytest.importorskip("pandas")
    X, y01 = make_problem(n=150, d=3, seed=3)
    frame = pd.DataFrame(X, columns=["age", "income", "score"], index=[f"p{i}" for i in range(150)])
    y = pd.Series(pd.Categorical(np.where(y01 == 1, "churn", "stay")), index=frame.index)
    model = fastinfl.LogisticRegression().fit(frame, y)
    assert model.classes_.tolist() == ["churn", "stay"]
    assert model.feature_names_in_.tolist() == ["age", "income", "score"] and model.n_features_in_ == 3
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(frame.rename(columns={"age": "AGE"}))
    inf = fastinfl.Influence(model, frame, y)
    top = inf.top_k(frame.iloc[[4, 9]], None, k=3)
    table = top.to_frame()
    assert table["test"].tolist()[:3] == ["p4"] * 3 and table.shape == (12, 6)
    assert (table["train"] == frame.index[table["train_position"]]).all()
    influence = inf.influence(frame.iloc[[4, 9]], None)
    for (test, pos), row in zip(table[["test", "train_position"]].itertuples(index=False), table.itertuples()):
        t = {"p4": 0, "p9": 1}[test]
        assert row.influence == influence[t, pos]


def test_multiclass_by_the_labels():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = fastinfl.LogisticRegression(C=10.0).fit(X, names)
    sk = SkLogisticRegression(C=10.0, tol=1e-12, max_iter=10000).fit(X, names)
    assert model.multinomial and model.classes_.tolist() == names[[0, 50, 100]].tolist()
    assert model.predict_proba(X).shape == (150, 3) and model.decision_function(X).shape == (150, 3)
    np.testing.assert_allclose(model.predict_proba(X), sk.predict_proba(X), atol=1e-5)  # lbfgs stops short of 1e-6
    assert (model.predict(X) == sk.predict(X)).mean() == 1.0
    soft = fastinfl.MultinomialLogisticRegression(l2=0.1).fit(X, names)
    np.testing.assert_allclose(model.params_, soft.params_, rtol=0, atol=1e-10)
    inf, ref = fastinfl.Influence(model, X, names), fastinfl.Influence(soft, X, names)
    np.testing.assert_allclose(inf.influence(X[:4], names[:4]), ref.influence(X[:4], names[:4]), rtol=1e-10)
    np.testing.assert_allclose(inf.loo_change(X[:2], names[:2], [0, 60]), ref.loo_change(X[:2], names[:2], [0, 60]),
                               rtol=1e-10)


def test_C_is_sklearns_inverse_penalty_and_only_one_is_given():
    X, y = make_problem(n=300, d=4, seed=4)
    a = fastinfl.LogisticRegression(C=4.0).fit(X, y)
    b = fastinfl.LogisticRegression(l2=0.25).fit(X, y)
    np.testing.assert_array_equal(a.params_, b.params_)
    assert a.l2_ == 0.25 and fastinfl.LogisticRegression().fit(X, y).l2_ == 1.0
    assert fastinfl.LogisticRegression(C=np.inf).fit(X, y).l2_ == 0.0
    sk = SkLogisticRegression(C=4.0, tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(a.coef_, sk.coef_[0], rtol=1e-6)
    with pytest.raises(ValueError, match="at most one of l2 and C"):
        fastinfl.LogisticRegression(l2=1.0, C=1.0).fit(X, y)
    with pytest.raises(ValueError, match="C must be > 0"):
        fastinfl.LogisticRegression(C=0.0).fit(X, y)


def test_clone_search_and_pipeline():
    X, y = make_problem(n=240, d=4, seed=5)
    model = fastinfl.LogisticRegression(C=2.0, tol=1e-9)
    twin = clone(model)
    assert twin is not model and twin.get_params() == model.get_params() == {
        "C": 2.0, "fit_intercept": True, "l2": None, "max_iter": 100, "tol": 1e-9}
    assert repr(model) == "LogisticRegression(C=2.0, tol=1e-09)"
    search = GridSearchCV(fastinfl.LogisticRegression(), {"C": [0.01, 1.0, 100.0]}, cv=3).fit(X, y)
    assert search.best_params_["C"] in (0.01, 1.0, 100.0)
    assert search.best_estimator_.predict_proba(X).shape == (240, 2)
    pipe = make_pipeline(StandardScaler(), fastinfl.LogisticRegression(C=1.0)).fit(X, y)
    Xs = pipe[:-1].transform(X)
    np.testing.assert_array_equal(pipe[-1].params_, fastinfl.LogisticRegression(C=1.0).fit(Xs, y).params_)
    assert fastinfl.Influence(pipe[-1], Xs, y).self_influence([0, 1]).shape == (2,)
    with pytest.raises(ValueError, match="Invalid parameter 'alpha'"):
        model.set_params(alpha=1.0)


def test_from_sklearn_takes_multinomial_models_and_pipelines():
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), SkLogisticRegression(C=0.5, max_iter=5000)).fit(X, y)
    model = fastinfl.LogisticRegression.from_sklearn(pipe, X, y)
    assert model.multinomial and model.converged_ and model.classes_.tolist() == [0, 1, 2]
    direct = fastinfl.LogisticRegression(C=0.5).fit(pipe[:-1].transform(X), y)
    np.testing.assert_allclose(model.params_, direct.params_, rtol=0, atol=1e-8)
    Xt = model.feature_transform_.transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastinfl.Influence(model, Xt, y)  # at the optimum: no StationarityWarning


def _weighted_problem(seed=6):
    X, y = make_problem(n=120, d=3, seed=seed)
    s = np.random.default_rng(seed).integers(0, 4, size=120).astype(np.float64)
    s[:3] = (0.0, 1.0, 3.0)
    dup = np.repeat(np.arange(120), s.astype(int))  # the rows, each as often as its weight
    return X, y, s, dup


@pytest.mark.parametrize("sparse", [False, True])
def test_integer_weights_are_duplicated_rows(sparse):
    X, y, s, dup = _weighted_problem()
    Xk = scipy.sparse.csr_matrix(X) if sparse else X
    weighted = fastinfl.LogisticRegression(l2=0.7).fit(Xk, y, sample_weight=s)
    copies = fastinfl.LogisticRegression(l2=0.7).fit(X[dup], y[dup])
    np.testing.assert_allclose(weighted.params_, copies.params_, rtol=0, atol=1e-10)
    sk = SkLogisticRegression(C=1 / 0.7, tol=1e-12, max_iter=10000).fit(X, y, sample_weight=s)
    np.testing.assert_allclose(weighted.coef_, sk.coef_[0], rtol=1e-6)
    assert weighted.objective(X, y, s) == pytest.approx(copies.objective(X[dup], y[dup]), rel=1e-12)

    Xt, yt = make_problem(n=5, d=3, seed=7)
    inf = fastinfl.Influence(weighted, Xk, y, sample_weight=s)
    ref = fastinfl.Influence(copies, X[dup], y[dup])
    groups = [np.flatnonzero(dup == i) for i in range(1, 8)]  # the copies of rows 1..7 (row 0 has weight 0)
    rows = np.arange(1, 8)
    # removing a weighted row = removing all its copies: first order is the sum of the copies' influences
    by_group = np.stack([ref.influence(Xt, yt, g).sum(axis=1) for g in groups], axis=1)
    np.testing.assert_allclose(inf.influence(Xt, yt, rows), by_group, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(inf.leverage(rows), [ref.leverage(g).sum() for g in groups], rtol=1e-9)
    np.testing.assert_allclose(inf.loo_change(Xt, yt, rows), ref.group_change(Xt, yt, groups), rtol=1e-8, atol=1e-14)
    assert np.all(inf.influence(Xt, yt, [0]) == 0.0)  # weight 0: removing it changes nothing
    # and against an actual refit without the weighted row 2 (weight 3)
    keep = np.arange(120) != 2
    refit = fastinfl.LogisticRegression(l2=0.7).fit(X[keep], y[keep], sample_weight=s[keep])
    actual = refit.losses(Xt, yt) - weighted.losses(Xt, yt)
    np.testing.assert_allclose(inf.loo_change(Xt, yt, [2])[:, 0], actual, rtol=0.1)  # one Newton step, 3 copies
    assert np.abs(inf.loo_change(Xt, yt, [2])[:, 0] - actual).max() < 0.1 * np.abs(inf.influence(Xt, yt, [2])).max()


def test_weights_for_poisson_and_the_refusals():
    X, _ = make_problem(n=150, d=3, seed=8)
    counts = np.random.default_rng(8).poisson(np.exp(0.3 * X[:, 0]))
    s = np.random.default_rng(9).integers(1, 3, size=150).astype(float)
    dup = np.repeat(np.arange(150), s.astype(int))
    a = fastinfl.PoissonRegression(l2=0.5).fit(X, counts, sample_weight=s)
    b = fastinfl.PoissonRegression(l2=0.5).fit(X[dup], counts[dup])
    np.testing.assert_allclose(a.params_, b.params_, rtol=0, atol=1e-10)
    assert a.score(X, counts, s) == pytest.approx(b.score(X[dup], counts[dup]), rel=1e-12)
    with pytest.raises(ValueError, match="sample_weight must hold finite weights >= 0"):
        fastinfl.PoissonRegression().fit(X, counts, sample_weight=-s)
    with pytest.raises(ValueError, match=r"got 'cg'. Settings such as solver come after it: pass them by keyword"):
        fastinfl.Influence(a, X, counts, "cg")
    with pytest.raises(ValueError, match="sample_weight has 3 weights"):
        fastinfl.PoissonRegression().fit(X, counts, sample_weight=[1, 2, 3])
    inf = fastinfl.Influence(a, X, counts, sample_weight=s)
    with pytest.raises(ValueError, match="cannot be saved"):
        inf.save("never-written.npz")
    with pytest.warns(fastinfl.StationarityWarning):  # weights forgotten: not the optimum of this objective
        fastinfl.Influence(a, X, counts)


def test_y_test_none_means_the_predicted_label():
    X, y = make_problem(n=200, d=3, seed=10)
    y = np.where(y == 1, "b", "a")
    model = fastinfl.LogisticRegression().fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    Xt = X[:6] + 0.3
    predicted = model.predict(Xt)
    np.testing.assert_array_equal(inf.influence(Xt, None), inf.influence(Xt, predicted))
    np.testing.assert_array_equal(inf.loo_change(Xt, None, [1, 2]), inf.loo_change(Xt, predicted, [1, 2]))
    for a, b in zip(inf.top_k(Xt, None, k=3), inf.top_k(Xt, predicted, k=3)):
        np.testing.assert_array_equal(a, b)
    from sklearn.datasets import load_iris

    Xi, yi = load_iris(return_X_y=True)
    multi = fastinfl.LogisticRegression().fit(Xi, yi)
    inf3 = fastinfl.Influence(multi, Xi, yi)
    np.testing.assert_array_equal(inf3.group_change(Xi[:3], None, [[0, 1], [70]]),
                                  inf3.group_change(Xi[:3], multi.predict(Xi[:3]), [[0, 1], [70]]))
    counts = np.random.default_rng(1).poisson(1.0, size=200)
    pois = fastinfl.Influence(fastinfl.PoissonRegression().fit(X, counts), X, counts)
    with pytest.raises(ValueError, match="y_test is required with X_test for a PoissonRegression"):
        pois.influence(X[:2], None)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_state_files_keep_the_labels(tmp_path, n_classes):
    rng = np.random.default_rng(n_classes)
    X = rng.standard_normal((90, 3))
    y = np.array(["apple", "kiwi", "pear"])[:n_classes][rng.integers(0, n_classes, 90)]
    inf = fastinfl.Influence(fastinfl.LogisticRegression(C=3.0).fit(X, y), X, y)
    before = inf.influence(X[:3], None)  # forms the factor, saved with the state
    back = fastinfl.Influence.load(inf.save(tmp_path / "state.npz"), X, y)
    assert type(back.model) is fastinfl.LogisticRegression and back.model.classes_.tolist() == sorted(set(y))
    np.testing.assert_allclose(back.influence(X[:3], None), before, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(back.model.predict(X), inf.model.predict(X))


@pytest.mark.parametrize("sparse", [False, True])
def test_multinomial_integer_weights_are_duplicated_rows(sparse):
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)[::2]
    y = y[::2]
    n = X.shape[0]
    s = np.random.default_rng(11).integers(0, 4, size=n).astype(np.float64)
    s[:4] = (0.0, 1.0, 3.0, 2.0)
    dup = np.repeat(np.arange(n), s.astype(int))
    Xk = scipy.sparse.csr_matrix(X) if sparse else X
    weighted = fastinfl.LogisticRegression(C=2.0).fit(Xk, y, sample_weight=s)
    copies = fastinfl.LogisticRegression(C=2.0).fit(X[dup], y[dup])
    assert weighted.multinomial
    np.testing.assert_allclose(weighted.params_, copies.params_, rtol=0, atol=1e-9)
    sk = SkLogisticRegression(C=2.0, tol=1e-12, max_iter=10000).fit(X, y, sample_weight=s)
    np.testing.assert_allclose(weighted.predict_proba(X), sk.predict_proba(X), atol=1e-5)  # lbfgs stops short

    Xt, yt = X[1::7] + 0.1, y[1::7]
    rows = np.arange(1, 6)
    groups = [np.flatnonzero(dup == i) for i in rows]
    for solver in ("direct", "cg"):
        inf = fastinfl.Influence(weighted, Xk, y, sample_weight=s, solver=solver)
        ref = fastinfl.Influence(copies, X[dup], y[dup], solver=solver)
        by_group = np.stack([ref.influence(Xt, yt, g).sum(axis=1) for g in groups], axis=1)
        np.testing.assert_allclose(inf.influence(Xt, yt, rows), by_group, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(inf.leverage(rows), [ref.leverage(g).sum() for g in groups], rtol=1e-7)
        np.testing.assert_allclose(inf.loo_change(Xt, yt, rows), ref.group_change(Xt, yt, groups),
                                   rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(inf.hessian(), ref.hessian(), rtol=1e-12, atol=1e-12)
    assert np.all(inf.influence(Xt, yt, [0]) == 0.0)


def test_poisson_from_sklearn_pipeline():
    from sklearn.linear_model import PoissonRegressor

    rng = np.random.default_rng(12)
    X = rng.standard_normal((300, 4)) * [1.0, 3.0, 0.5, 2.0] + 5.0
    counts = rng.poisson(np.exp(0.2 + 0.3 * (X[:, 0] - 5.0)))
    s = rng.integers(1, 3, size=300).astype(float)
    pipe = make_pipeline(StandardScaler(), PoissonRegressor(alpha=0.01)).fit(X, counts, poissonregressor__sample_weight=s)
    model = fastinfl.PoissonRegression.from_sklearn(pipe, X, counts, sample_weight=s)
    Xs = model.feature_transform_.transform(X)
    direct = fastinfl.PoissonRegression(l2=0.01 * s.sum()).fit(Xs, counts, sample_weight=s)
    np.testing.assert_allclose(model.params_, direct.params_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.predict(Xs), pipe.predict(X), rtol=1e-4)  # sklearn's tol=1e-4 stops short
    with pytest.raises(ValueError, match="must be a fitted scikit-learn PoissonRegressor"):
        fastinfl.PoissonRegression.from_sklearn(SkLogisticRegression().fit(X, counts > 1), X, counts)
