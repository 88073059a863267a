"""``fastinfl run`` on labels other than 0/1: several classes (multinomial), and two classes named otherwise."""

import csv

import numpy as np
import pytest

import fastinfl
from fastinfl.cli import main


def _main(argv):
    return main([str(a) for a in argv])


def _write(path, X, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"x{j}" for j in range(X.shape[1])] + ["label"])
        for row, label in zip(X, y, strict=True):
            w.writerow([*row, label])


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    d = tmp_path_factory.mktemp("mc")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 3))
    names = np.array(["bird", "cat", "dog"])
    y = names[np.argmax(X @ rng.standard_normal((3, 3)) + rng.standard_normal((90, 3)), axis=1)]
    _write(d / "train.csv", X[:80], y[:80])
    _write(d / "test.csv", X[80:], y[80:])
    return d, X[:80], y[:80], X[80:], y[80:]


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_text_classes_fit_the_multinomial_model_and_match_the_api(three, capsys):
    d, X, y, Xt, yt = three
    assert _main(["run", d / "train.csv", d / "test.csv", "--k", "2", "--multiclass", "--out", d / "top.csv"]) == 0
    assert "3 classes: multinomial" in capsys.readouterr().err
    model = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    I = inf.influence(Xt, yt)
    rows = _read(d / "top.csv")
    assert {r["test_label"] for r in rows} <= {"bird", "cat", "dog"}
    for r in rows:
        t, i = int(r["test_index"]), int(r["train_index"])
        assert r["test_label"] == yt[t]
        assert float(r["influence"]) == pytest.approx(I[t, i], rel=1e-9, abs=1e-15)
    for t in range(len(yt)):
        harmful = [int(r["train_index"]) for r in rows if int(r["test_index"]) == t and r["kind"] == "harmful"]
        expect = [i for i in np.argsort(-I[t], kind="stable")[:2] if I[t, i] > 0]
        assert harmful == expect


def test_two_classes_named_otherwise_are_the_binary_model(tmp_path, capsys):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((60, 2))
    y01 = (X[:, 0] + rng.standard_normal(60) > 0).astype(int)
    _write(tmp_path / "a.csv", X[:50], y01[:50])
    _write(tmp_path / "a_test.csv", X[50:], y01[50:])
    _write(tmp_path / "b.csv", X[:50], np.where(y01[:50] == 1, "yes", "no"))
    _write(tmp_path / "b_test.csv", X[50:], np.where(y01[50:] == 1, "yes", "no"))
    assert _main(["run", tmp_path / "a.csv", tmp_path / "a_test.csv", "--out", tmp_path / "a.out.csv"]) == 0
    assert _main(["run", tmp_path / "b.csv", tmp_path / "b_test.csv", "--out", tmp_path / "b.out.csv"]) == 0
    assert "labels no and yes read as 0 and 1" in capsys.readouterr().err
    a, b = _read(tmp_path / "a.out.csv"), _read(tmp_path / "b.out.csv")
    assert [r["influence"] for r in a] == [r["influence"] for r in b]  # the same model and numbers
    assert [r["test_label"] for r in b] == [{"0": "no", "1": "yes"}[r["test_label"]] for r in a]


def test_text_test_labels_against_numeric_training_labels(three, tmp_path, capsys):
    d, X, y, Xt, yt = three
    _write(tmp_path / "num.csv", X, np.searchsorted(["bird", "cat", "dog"], y))
    assert _main(["run", tmp_path / "num.csv", d / "test.csv", "--multiclass"]) == 1
    assert "its labels are text but the training labels" in capsys.readouterr().err


@pytest.mark.slow  # the multinomial kernels compile cold in this process: the slow tier, which CI runs too
def test_groups_with_several_classes_match_the_api(three, tmp_path):
    d, X, y, Xt, yt = three
    labels = np.arange(80) % 5 - 1  # groups 0..3, and -1 (no group)
    np.save(tmp_path / "groups.npy", labels)
    assert _main(["run", d / "train.csv", d / "test.csv", "--k", "2", "--quiet", "--multiclass",
                  "--out", tmp_path / "top.csv",
                  "--groups", tmp_path / "groups.npy", "--groups-out", tmp_path / "groups.csv"]) == 0
    inf = fastinfl.Influence(fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y), X, y)
    change = inf.group_change(Xt, yt, labels)  # (10, 4): Newton step, exact loss, as the command's defaults
    rows = _read(tmp_path / "groups.csv")
    assert {int(r["group"]) for r in rows} <= {0, 1, 2, 3}
    for t in range(len(yt)):
        mine = [r for r in rows if int(r["test_index"]) == t]
        assert {r["test_label"] for r in mine} <= {yt[t]}
        helpful = [int(r["group"]) for r in mine if r["kind"] == "helpful"]
        assert helpful == [g for g in np.argsort(-change[t], kind="stable")[:2] if change[t, g] > 0]
        harmful = [int(r["group"]) for r in mine if r["kind"] == "harmful"]
        assert harmful == [g for g in np.argsort(change[t], kind="stable")[:2] if change[t, g] < 0]
        for r in mine:
            g = int(r["group"])
            assert float(r["loo_change"]) == pytest.approx(change[t, g], rel=1e-12)
            assert int(r["size"]) == np.count_nonzero(labels == g)
