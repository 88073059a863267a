"""LogisticRegression: the Newton fit against scikit-learn and the numpy reference."""

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl import reference


@pytest.mark.parametrize("l2", [0.01, 0.1, 1.0, 10.0])
def test_fit_matches_sklearn_breast_cancer(breast_cancer, l2):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    X, y = breast_cancer
    model = fastinfl.LogisticRegression(l2=l2).fit(X, y)
    sk = SkLogisticRegression(C=1.0 / l2, solver="newton-cholesky", tol=1e-14, max_iter=1000).fit(X, y)
    expected = np.append(sk.coef_[0], sk.intercept_[0])
    # Both are Newton fits to a gradient tolerance: agreement to 1e-6 relative (contract), seen ~1e-8.
    np.testing.assert_allclose(model.params_, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    assert model.converged_ and model.n_iter_ <= 15
    # Independent check: a plain numpy Newton (fastinfl.reference.fit).
    coef, intercept = reference.fit(X, y, l2=l2)
    np.testing.assert_allclose(model.params_, np.append(coef, intercept), rtol=1e-6,
                               atol=1e-6 * np.abs(expected).max())


def test_fit_stationary_to_tolerance(breast_cancer):
    X, y = breast_cancer
    model = fastinfl.LogisticRegression(l2=1.0, tol=1e-10).fit(X, y)
    grad = reference.gradient(X, y, model.coef_, model.intercept_, l2=1.0)
    assert np.max(np.abs(grad)) <= 1e-10 * len(y)


def test_fit_without_intercept_matches_sklearn(breast_cancer):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    X, y = breast_cancer
    model = fastinfl.LogisticRegression(l2=2.0, fit_intercept=False).fit(X, y)
    sk = SkLogisticRegression(C=0.5, fit_intercept=False, solver="newton-cholesky", tol=1e-14).fit(X, y)
    assert model.params_.shape == (30,) and model.intercept_ == 0.0
    np.testing.assert_allclose(model.coef_, sk.coef_[0], rtol=1e-6, atol=1e-9)


def test_fit_float32_close_to_float64():
    X, y = make_problem(n=3000, d=8, seed=3)
    m64 = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    m32 = fastinfl.LogisticRegression(l2=1.0).fit(X.astype(np.float32), y)
    # The data differ by float32 rounding (rel. 6e-8); the fits by about as much times the condition.
    np.testing.assert_allclose(m32.params_, m64.params_, rtol=1e-5, atol=1e-6)


def test_predict_proba_and_objective_match_reference():
    X, y = make_problem(n=300, d=4, seed=1)
    model = fastinfl.LogisticRegression(l2=0.5).fit(X, y)
    z = X @ model.coef_ + model.intercept_
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], 1.0 / (1.0 + np.exp(-z)), rtol=1e-13)
    expected = reference.objective(X, y, model.coef_, model.intercept_, l2=0.5)
    assert model.objective(X, y) == pytest.approx(expected, rel=1e-13)


def test_fit_warm_start_converges_immediately():
    X, y = make_problem(n=500, d=3, seed=2)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    again = fastinfl.LogisticRegression(l2=1.0).fit(X, y, init_params=model.params_)
    assert again.n_iter_ <= 1
    np.testing.assert_allclose(again.params_, model.params_, rtol=1e-10)


def test_fit_max_iter_raises():
    X, y = make_problem(n=500, d=3, seed=2)
    with pytest.raises(fastinfl.ConvergenceError, match="max_iter=1 .*max\\|grad F\\|"):
        fastinfl.LogisticRegression(l2=1.0, max_iter=1).fit(X, y)


def test_fit_constant_feature_without_l2_is_singular():
    X, y = make_problem(n=200, d=3, seed=4)
    X[:, 1] = 1.0  # duplicates the intercept column: H singular with l2 = 0
    with pytest.raises(fastinfl.SingularHessianError, match="not positive definite.*l2 > 0"):
        fastinfl.LogisticRegression(l2=0.0).fit(X, y)
    # With l2 > 0 the problem is well posed again.
    assert fastinfl.LogisticRegression(l2=0.1).fit(X, y).converged_


def test_singular_hessian_error_is_linalg_error():
    assert issubclass(fastinfl.SingularHessianError, np.linalg.LinAlgError)


@pytest.mark.parametrize("separable_by", ["feature", "intercept-free"])
def test_fit_separable_raises(separable_by):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    y = (X[:, 0] > 0).astype(int)
    fit_intercept = separable_by == "feature"
    with pytest.raises(fastinfl.ConvergenceError, match="linearly separable"):
        fastinfl.LogisticRegression(l2=0.0, fit_intercept=fit_intercept).fit(X, y)


def test_from_params():
    model = fastinfl.LogisticRegression.from_params([1.0, -2.0], 0.5, l2=0.25)
    np.testing.assert_array_equal(model.params_, [1.0, -2.0, 0.5])
    assert model.n_iter_ == 0 and model.converged_ is None and model.l2 == 0.25
    assert fastinfl.LogisticRegression.from_params(3.0).coef_.shape == (1,)
    with pytest.raises(ValueError, match="intercept must be 0"):
        fastinfl.LogisticRegression.from_params([1.0], 1.0, fit_intercept=False)
    with pytest.raises(ValueError, match="coef contains NaN"):
        fastinfl.LogisticRegression.from_params([np.nan])
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        fastinfl.LogisticRegression.from_params([1.0], l2=-1.0)


def test_from_sklearn_binary_l2(breast_cancer):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    X, y = breast_cancer
    sk = SkLogisticRegression(C=4.0, tol=1e-10, max_iter=1000).fit(X, y)
    model = fastinfl.LogisticRegression.from_sklearn(sk)
    assert model.l2 == 0.25 and model.fit_intercept
    np.testing.assert_array_equal(model.params_, np.append(sk.coef_[0], sk.intercept_))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], sk.predict_proba(X)[:, 1], rtol=1e-12)


def test_from_sklearn_refuses_other_objectives(breast_cancer):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    X, y = breast_cancer
    with pytest.raises(ValueError, match="one-vs-rest"):
        from sklearn.multiclass import OneVsRestClassifier

        Xd, yd = np.random.default_rng(0).standard_normal((60, 2)), np.arange(60) % 3
        fastinfl.LogisticRegression.from_sklearn(OneVsRestClassifier(SkLogisticRegression()).fit(Xd, yd))
    with pytest.raises(ValueError, match="L2 penalty"):
        l1 = SkLogisticRegression(l1_ratio=1.0, solver="saga", max_iter=50)
        with pytest.warns(Warning):  # saga does not converge in 50 iterations; irrelevant here
            l1.fit(X, y)
        fastinfl.LogisticRegression.from_sklearn(l1)
    with pytest.raises(ValueError, match="class_weight"):
        fastinfl.LogisticRegression.from_sklearn(
            SkLogisticRegression(class_weight="balanced", max_iter=1000).fit(X, y))
    with pytest.raises(ValueError, match="liblinear"):
        fastinfl.LogisticRegression.from_sklearn(SkLogisticRegression(solver="liblinear").fit(X, y))
    with pytest.raises(ValueError, match="not a fitted"):
        fastinfl.LogisticRegression.from_sklearn(SkLogisticRegression())


def test_unpenalised_sklearn_maps_to_l2_zero(breast_cancer):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    X, y = make_problem(n=400, d=3, seed=5)
    sk = SkLogisticRegression(C=np.inf, solver="newton-cholesky").fit(X, y)
    assert fastinfl.LogisticRegression.from_sklearn(sk).l2 == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"l2": -0.5}, "l2 must be >= 0"), ({"tol": 0.0}, "tol must be > 0"),
     ({"max_iter": 0}, "max_iter must be >= 1"), ({"max_iter": 2.5}, "max_iter must be an integer"),
     ({"fit_intercept": "yes"}, "fit_intercept must be True or False")],
)
def test_fit_bad_hyperparameters(kwargs, match):
    X, y = make_problem(n=50, d=2)
    with pytest.raises(ValueError, match=match):
        fastinfl.LogisticRegression(**kwargs).fit(X, y)


@pytest.mark.parametrize(
    "X, y, match",
    [(np.ones(5), [0, 1, 0, 1, 0], "X must be 2-D"),
     (np.ones((5, 2)), [0.5, 1, 2, 1, 0], "Unknown label type: continuous"),
     (np.ones((5, 2)), [0, 1, 0], "y has 3 labels but X has 5 rows"),
     (np.zeros((0, 2)), [], "X is empty"),
     ([[0.0, 1.0], [np.nan, 1.0]], [0, 1], "X contains NaN or inf \\(first at row 1\\)"),
     ([["a", "b"]], [0], "X must hold real numbers")],
)
def test_fit_bad_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        fastinfl.LogisticRegression().fit(X, y)


def test_fit_does_not_modify_input():
    X, y = make_problem(n=100, d=3)
    X_copy, y_copy = X.copy(), y.copy()
    X.setflags(write=False)
    fastinfl.LogisticRegression().fit(X, y)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(y, y_copy)


def test_predict_proba_feature_count_checked():
    model = fastinfl.LogisticRegression.from_params([1.0, 2.0])
    with pytest.raises(ValueError, match="X has 3 features, but LogisticRegression is expecting 2 features"):
        model.predict_proba(np.ones((4, 3)))
    with pytest.raises(ValueError, match="not fitted"):
        fastinfl.LogisticRegression().predict_proba(np.ones((4, 3)))


def test_from_sklearn_accepts_l2_spelled_as_elasticnet(breast_cancer):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    X, y = breast_cancer
    sk = SkLogisticRegression(penalty="elasticnet", l1_ratio=0.0, C=2.0, solver="saga", max_iter=20)
    with pytest.warns(Warning):  # saga is not converged after 20 iterations and the penalty spelling is old
        sk.fit(X, y)
    assert fastinfl.LogisticRegression.from_sklearn(sk).l2 == 0.5


def test_influence_state_does_not_follow_later_model_changes():
    X, y = make_problem(n=300, d=3, seed=3)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    before = inf.influence(X[:4], y[:4])
    model.coef_ *= 2.0
    np.testing.assert_array_equal(inf.influence(X[:4], y[:4]), before)


def test_newton_takes_full_steps_when_the_objective_cannot_resolve_the_decrease():
    """Near the optimum the predicted decrease is below the rounding of a sum of n losses; the line search
    then takes a step that lowers max|grad F| (was: halved it, 8 Newton iterations instead of 5 here)."""
    X, y, _ = fastinfl.datasets.make_logistic(20000, 50, seed=0, dtype=np.float32)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    assert model.n_iter_ <= 6
    ref = fastinfl.LogisticRegression(l2=1.0).fit(X.astype(np.float64), y)  # the same values
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0, atol=1e-12)
    grad = fastinfl.Influence(model, X, y).grad_norm_
    assert grad <= model.tol * X.shape[0]
