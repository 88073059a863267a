"""A binary model's classes_ (any label type, strings included) round-trip through the state file when it
has them; a state without them (an older file, or a model without classes_) loads as before."""

import zipfile

import numpy as np
import pytest

import fastinfl
from fastinfl import StateError


def _binary(X, y01, names):
    """A fitted binary model with classes_ ``names`` and its training labels, before and after the unified
    estimator (issue 24): fitted on the names when the model keeps classes_, else on 0/1 with classes_ set."""
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y01)
    if getattr(model, "classes_", None) is None:  # a binary model without classes_: labels 0/1
        model.classes_ = np.asarray(names)
        return model, y01
    labels = np.asarray(names)[y01.astype(int)]
    return fastinfl.LogisticRegression(l2=1.0).fit(X, labels), labels


@pytest.mark.parametrize("names", [["no", "yes"], [-1, 1], [False, True]])
def test_binary_classes_round_trip(tmp_path, names):
    X, y01, _ = fastinfl.datasets.make_logistic(200, 3, seed=0)
    model, y = _binary(X, y01, names)
    path = fastinfl.Influence(model, X, y).save(tmp_path / "state.npz")
    with zipfile.ZipFile(path) as zf:
        assert "classes.npy" in zf.namelist()
    loaded = fastinfl.Influence.load(path, X, y)
    assert loaded.model.classes_.tolist() == names
    np.testing.assert_array_equal(loaded.model.coef_, model.coef_)


def test_a_binary_state_without_classes_loads(tmp_path):
    X, y, _ = fastinfl.datasets.make_logistic(200, 3, seed=0)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    had = getattr(model, "classes_", None)
    path = inf.save(tmp_path / "state.npz")
    loaded = fastinfl.Influence.load(path, X, y)
    if had is None:
        assert getattr(loaded.model, "classes_", None) is None
    else:
        assert loaded.model.classes_.tolist() == np.asarray(had).tolist()


def test_binary_classes_of_the_wrong_shape_are_refused(tmp_path):
    X, y01, _ = fastinfl.datasets.make_logistic(200, 3, seed=0)
    model, y = _binary(X, y01, ["no", "yes"])
    path = fastinfl.Influence(model, X, y).save(tmp_path / "state.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for bad, message in ((np.array(["no", "yes", "maybe"]), "classes"), (np.array(["no", "no"]), "two distinct labels")):
        arrays["classes"] = bad
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(StateError, match=message):
            fastinfl.Influence.load(tmp_path / "bad.npz", X, y)
