"""scikit-learn interplay: pipelines in from_sklearn, refitting from sklearn's parameters, predict/score."""

import numpy as np
import pytest
from problems import make_problem

import fastinfl

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression as SkLogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

X, Y = make_problem(n=200, d=4, seed=3)
X = X * np.array([1.0, 10.0, 0.1, 3.0]) + 5.0  # a scaler has something to do


def test_pipeline_ending_in_the_classifier():
    pipe = make_pipeline(StandardScaler(), SkLogisticRegression(C=2.0, tol=1e-12)).fit(X, Y)
    model = fastinfl.LogisticRegression.from_sklearn(pipe)
    assert model.l2 == 0.5
    Xt = model.feature_transform_.transform(X)  # influence is on the transformed features
    np.testing.assert_allclose(Xt, StandardScaler().fit(X).transform(X), rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(Xt)[:, 1], pipe.predict_proba(X)[:, 1], rtol=1e-10)
    direct = fastinfl.LogisticRegression.from_sklearn(pipe[-1])
    np.testing.assert_array_equal(model.params_, direct.params_)


def test_pipeline_not_ending_in_a_classifier_refused():
    pipe = make_pipeline(StandardScaler()).fit(X)
    with pytest.raises(ValueError, match=r"last step \(StandardScaler\) is not a fitted scikit-learn "
                                         r"linear model \(no coef_\).*ends with the model"):
        fastinfl.LogisticRegression.from_sklearn(pipe)


def test_default_tol_warns_and_refit_from_sklearn_params_does_not():
    sk = SkLogisticRegression(C=1.0).fit(X, Y)  # sklearn's default tol=1e-4: short of the optimum
    with pytest.warns(fastinfl.StationarityWarning):
        fastinfl.Influence(fastinfl.LogisticRegression.from_sklearn(sk), X, Y)
    model = fastinfl.LogisticRegression.from_sklearn(sk, X, Y)  # warm-started Newton refit
    assert model.converged_ and model.n_iter_ <= 10
    fastinfl.Influence(model, X, Y)  # no warning (warnings are errors in the tests)
    ref = fastinfl.LogisticRegression(l2=1.0).fit(X, Y)
    np.testing.assert_allclose(model.params_, ref.params_, rtol=1e-8, atol=1e-10)  # the same optimum
    pipe = make_pipeline(StandardScaler(), SkLogisticRegression()).fit(X, Y)
    refit = fastinfl.LogisticRegression.from_sklearn(pipe, X, Y)
    fastinfl.Influence(refit, refit.feature_transform_.transform(X), Y)


def test_predict_and_score_like_sklearn():
    sk = SkLogisticRegression(C=1.0, tol=1e-12).fit(X, Y)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, Y)
    np.testing.assert_array_equal(model.predict(X), sk.predict(X))
    assert model.predict(X).dtype == np.int64
    assert model.score(X, Y) == pytest.approx(sk.score(X, Y), abs=0)
    assert 0.5 < model.score(X, Y) <= 1.0
