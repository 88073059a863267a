"""Influence.save / Influence.load: same answers, one verifying pass over X, mismatching data refused.

Tampered and damaged files: tests/test_state_tamper.py."""

import json

import numpy as np
import pytest

import fastinfl
from fastinfl import _state
from fastinfl.operators import policy


@pytest.fixture(scope="module")
def data():
    X, y, _ = fastinfl.datasets.make_logistic(3000, 6, seed=0, dtype=np.float64)
    Xt, yt, _ = fastinfl.datasets.make_logistic(5, 6, seed=1, dtype=np.float64)
    return X, y, Xt, yt, fastinfl.LogisticRegression(l2=1.0).fit(X, y)


def _assert_same(a, b):
    """Equal to rounding: the recomputed margins differ from the original ones in the last bits (group_change
    and loo_change amplify that by their conditioning)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype.kind == "f":
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * np.abs(a).max())
    else:
        np.testing.assert_array_equal(b, a)


def _answers(inf, Xt, yt):
    return [*inf.top_k(Xt, yt, k=4), inf.influence(Xt, yt), inf.s_test(Xt, yt), inf.self_influence([0, 5, 7]),
            inf.leverage([1, 2]), inf.inverse_hvp(np.ones(inf.n_params))]


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_loaded_state_gives_identical_answers(tmp_path, data, solver):
    X, y, Xt, yt, model = data
    inf = fastinfl.Influence(model, X, y, solver=solver, damping=0.01, tol=1e-11)
    before = _answers(inf, Xt, yt)
    path = inf.save(tmp_path / "state.npz")
    loaded = fastinfl.Influence.load(path, X, y)
    # The same factor; residuals and weights recomputed by the load pass (margins summed in another order).
    for a, b in zip(before, _answers(loaded, Xt, yt)):
        _assert_same(a, b)
    assert (loaded.solver, loaded.damping, loaded.tol, loaded.grad_norm_) == (solver, 0.01, 1e-11, inf.grad_norm_)
    np.testing.assert_array_equal(loaded.model.params_, model.params_)
    assert loaded.model.l2 == model.l2


def test_load_makes_one_verifying_pass_over_X(tmp_path, data, monkeypatch):
    """Counting every kernel call: loading validates X (finiteness scan), then one pass checks the file
    (checksum, residuals, weights, gradient, H v for the factor check) and forms no Hessian."""
    X, y, Xt, yt, model = data
    inf = fastinfl.Influence(model, X, y, solver="direct")
    inf.s_test(Xt, yt)  # forms H and its Cholesky factor: both go into the file
    path = inf.save(tmp_path / "state.npz")
    called = []
    real_run = policy.run

    def counting_run(kernel, *args, **kw):
        called.append(kernel.__name__)
        return real_run(kernel, *args, **kw)

    monkeypatch.setattr(policy, "run", counting_run)
    loaded = fastinfl.Influence.load(path, X, y)
    assert called == ["_sum_squares", "_verify_pass"]
    called.clear()
    np.testing.assert_array_equal(loaded.s_test(Xt, yt), inf.s_test(Xt, yt))
    # the test points' own validation and gradients; no Hessian pass (the factor was loaded)
    assert "_hessian_sum" not in called and "_loss_grad" not in called, called


def test_state_file_is_versioned_npz_without_pickle(tmp_path, data):
    X, y, _, _, model = data
    path = fastinfl.Influence(model, X, y).save(tmp_path / "s.npz")
    with np.load(path, allow_pickle=False) as npz:  # every entry loads without pickle
        header = json.loads(npz["header"].tobytes().decode())
        assert set(npz.files) == {"header", "coef", "intercept", "ridge", "classes"}  # residuals, weights: recomputed
    assert header["format"] == "fastinfl.influence" and header["version"] == _state.FORMAT_VERSION == 2
    fp = header["fingerprint"]
    assert (fp["n_samples"], fp["n_features"], fp["dtype"], fp["check"]) == (3000, 6, "float64", "full")
    assert len(fp["x_checksum"]) == 32 and "grad_norm" not in header  # recomputed on load


def _rewrite(path, out, **changes):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(out, **arrays)
    return out


def test_load_refuses_other_files(tmp_path, data):
    X, y, _, _, model = data
    path = fastinfl.Influence(model, X, y).save(tmp_path / "s.npz")
    with pytest.raises(fastinfl.StateError, match="state format version 99"):
        fastinfl.Influence.load(_rewrite(path, tmp_path / "v.npz", version=99), X, y)
    with pytest.raises(fastinfl.StateError, match="no 'fastinfl.influence' header"):
        fastinfl.Influence.load(_rewrite(path, tmp_path / "f.npz", format="other"), X, y)
    np.savez(tmp_path / "pickled.npz", header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(fastinfl.StateError, match="'header' is an object array"):  # would need pickle
        fastinfl.Influence.load(tmp_path / "pickled.npz", X, y)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(fastinfl.StateError, match="junk.npz is not a fastinfl state file, or is damaged"):
        fastinfl.Influence.load(tmp_path / "junk.npz", X, y)


def test_load_refuses_mismatching_training_data(tmp_path, data):
    X, y, _, _, model = data
    path = fastinfl.Influence(model, X, y).save(tmp_path / "s.npz")
    with pytest.raises(ValueError, match=r"X_train has shape \(2999, 6\) but the state"):
        fastinfl.Influence.load(path, X[:-1], y[:-1])
    with pytest.raises(ValueError, match="X_train has dtype float32 but the state"):
        fastinfl.Influence.load(path, X.astype(np.float32), y)
    flipped = y.copy()
    flipped[1234] = 1 - flipped[1234]
    with pytest.raises(ValueError, match="y_train differs from the labels"):
        fastinfl.Influence.load(path, X, flipped)
    changed = X.copy()
    changed[1234, 3] += 1e-9
    with pytest.raises(fastinfl.StateError, match="checksum of every element of X_train"):
        fastinfl.Influence.load(path, changed, y)
    with pytest.raises(fastinfl.StateError, match="same row order"):
        fastinfl.Influence.load(path, X[::-1], y)


def test_sample_check_is_opt_in_and_misses_a_change_outside_the_sample(tmp_path, data):
    X, y, _, _, model = data
    inf = fastinfl.Influence(model, X, y)
    row = int(np.setdiff1d(np.arange(3000), _state._sample_rows(3000))[0])
    changed = X.copy()
    changed[row, 3] += 1e-6  # small enough that the recomputed gradient stays stationary
    # the opt-in sample does not cover this row (its documented risk): loads
    fastinfl.Influence.load(inf.save(tmp_path / "sample.npz", check="sample"), changed, y)
    with pytest.raises(fastinfl.StateError, match="SHA-256 of the 1024 sampled rows"):
        fastinfl.Influence.load(tmp_path / "sample.npz", np.where(np.arange(3000)[:, None] == 0, X + 1, X), y)
    with pytest.raises(fastinfl.StateError, match="checksum of every element of X_train"):  # the default
        fastinfl.Influence.load(inf.save(tmp_path / "full.npz"), changed, y)
    with pytest.raises(ValueError, match="check must be one of"):
        inf.save(tmp_path / "x.npz", check="none")


@pytest.fixture(scope="module")
def multinomial_data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2500, 5))
    Z = X @ rng.standard_normal((5, 4)) + rng.gumbel(size=(2500, 4))
    names = np.array(["ant", "bee", "cat", "dog"])
    y = names[np.argmax(Z, axis=1)]  # string labels: classes_ travels in the file
    model = fastinfl.MultinomialLogisticRegression(l2=0.5).fit(X, y)
    return X, y, X[:6], y[:6], model


def _multinomial_answers(inf, Xt, yt):
    return [*_answers(inf, Xt, yt), inf.params_change([3, 9]), inf.loo_change(Xt, yt, [0, 4, 8]),
            inf.group_change(Xt, yt, [[1, 2], [5]])]


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_multinomial_state_round_trip(tmp_path, multinomial_data, solver, monkeypatch):
    X, y, Xt, yt, model = multinomial_data
    inf = fastinfl.Influence(model, X, y, solver=solver, damping=0.01)
    before = _multinomial_answers(inf, Xt, yt)  # direct: forms H and factors H + c Pi_0, both saved
    path = inf.save(tmp_path / "mn.npz")
    called = []
    real_run = policy.run

    def counting_run(kernel, *args, **kw):
        called.append(kernel.__name__)
        return real_run(kernel, *args, **kw)

    monkeypatch.setattr(policy, "run", counting_run)
    loaded = fastinfl.Influence.load(path, X, y)
    assert called == ["_sum_squares", "_verify_pass"], called  # validation of X_train, then one pass
    assert isinstance(loaded.model, fastinfl.MultinomialLogisticRegression)
    assert loaded.model.classes_.tolist() == ["ant", "bee", "cat", "dog"]
    np.testing.assert_array_equal(loaded.model.params_, model.params_)
    called.clear()
    after = _multinomial_answers(loaded, Xt, yt)
    if solver == "direct":  # the factor came from the file: no Hessian pass
        assert "_mn_hessian" not in called, called
    for a, b in zip(before, after):  # residuals and probabilities recomputed: equal to rounding
        _assert_same(a, b)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["classes"].dtype.kind == "U" and ("cholesky" in npz.files) == (solver == "direct")


def test_multinomial_load_refuses_mismatching_training_data(tmp_path, multinomial_data):
    X, y, _, _, model = multinomial_data
    path = fastinfl.Influence(model, X, y).save(tmp_path / "mn.npz")
    swapped = y.copy()
    swapped[[0, 1]] = y[[1, 0]] if y[0] != y[1] else ["ant", "bee"]
    with pytest.raises(ValueError, match="y_train differs from the labels"):
        fastinfl.Influence.load(path, X, swapped)
    with pytest.raises(ValueError, match=r"y_train holds labels \['emu'\]"):
        fastinfl.Influence.load(path, X, np.where(y == "dog", "emu", y))
    changed = X.copy()
    changed[-1, 2] += 1e-9
    with pytest.raises(fastinfl.StateError, match="checksum of every element"):
        fastinfl.Influence.load(path, changed, y)
    with pytest.raises(ValueError, match=r"X_train has shape \(2499, 5\) but the state"):
        fastinfl.Influence.load(path, X[:-1], y[:-1])


def test_float32_memmap_state_checks_every_element(tmp_path):
    """float32 data (hashed as their 32-bit patterns) from a memory map: a change of one element in its
    last bit is refused; the same data load and answer as a fresh Influence."""
    X, y, _ = fastinfl.datasets.make_logistic(5000, 7, seed=2, dtype=np.float32, out=str(tmp_path / "X.npy"))
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="direct")
    Xt, yt = np.asarray(X[:3]), y[:3]
    expected = inf.influence(Xt, yt)
    path = inf.save(tmp_path / "s.npz")
    _assert_same(expected, fastinfl.Influence.load(path, X, y).influence(Xt, yt))
    changed = np.array(X)
    changed[4321, 6] = np.nextafter(changed[4321, 6], np.float32(np.inf))
    with pytest.raises(fastinfl.StateError, match="checksum of every element of X_train"):
        fastinfl.Influence.load(path, changed, y)


@pytest.mark.parametrize("multinomial", [False, True])
def test_state_without_intercept_round_trip(tmp_path, multinomial):
    """p = d (no intercept column in the load pass): answers as before saving, factor accepted."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1500, 4))
    if multinomial:
        y = np.argmax(X @ rng.standard_normal((4, 3)) + rng.gumbel(size=(1500, 3)), axis=1)
        model = fastinfl.MultinomialLogisticRegression(l2=0.5, fit_intercept=False).fit(X, y)
    else:
        y = (X @ rng.standard_normal(4) + rng.logistic(size=1500) > 0).astype(float)
        model = fastinfl.LogisticRegression(l2=0.5, fit_intercept=False).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="direct")
    before = inf.influence(X[:4], y[:4])
    loaded = fastinfl.Influence.load(inf.save(tmp_path / "s.npz"), X, y)
    _assert_same(before, loaded.influence(X[:4], y[:4]))
    assert loaded.grad_norm_ == pytest.approx(inf.grad_norm_, rel=1e-6, abs=1e-9)


def test_multinomial_float_labels_round_trip(tmp_path):
    """Class labels 0.5, 1.5, 2.5 (floats) are saved as floats and read back."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((900, 3))
    y = 0.5 + np.argmax(X @ rng.standard_normal((3, 3)) + rng.gumbel(size=(900, 3)), axis=1)
    inf = fastinfl.Influence(fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y), X, y)
    loaded = fastinfl.Influence.load(inf.save(tmp_path / "f.npz"), X, y)
    assert loaded.model.classes_.tolist() == [0.5, 1.5, 2.5]
    _assert_same(inf.influence(X[:3], y[:3]), loaded.influence(X[:3], y[:3]))


@pytest.mark.parametrize("settings", [
    dict(solver="direct", damping=1e-3, verify=True, verify_rtol=1e-5, batch_size=7, memory_limit=2**27),
    dict(solver="cg", tol=1e-11, max_iter=77),
    dict(solver="cg", preconditioner="jacobi"),
    dict(solver="cg", preconditioner="nystrom", rank=3, seed=7),
    dict(solver="lissa", lissa_depth=500, lissa_scale=40.0, lissa_repetitions=2, lissa_batch_size=50, seed=5,
         tol=0.5),
    dict(solver="arnoldi", rank=4, seed=3),
], ids=["direct", "cg", "pcg-jacobi", "pcg-nystrom", "lissa", "arnoldi"])
@pytest.mark.parametrize("model_class", [fastinfl.LogisticRegression, fastinfl.PoissonRegression])
def test_save_load_keeps_every_setting_of_every_solver(settings, model_class, tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 4))
    y = (rng.random(200) < 0.5).astype(float) if model_class is fastinfl.LogisticRegression else \
        rng.poisson(1.5, 200).astype(float)
    model = model_class(l2=1.0).fit(X, y)
    fastinfl.Influence(model, X, y, **settings).save(tmp_path / "s.npz")
    back = fastinfl.Influence.load(tmp_path / "s.npz", X, y)
    assert type(back.model) is model_class
    assert {k: getattr(back, k) for k in settings} == settings
