"""``fastinfl run`` on sparse files: scipy.sparse .npz plus labels, and svmlight text; never densified."""

import csv

import numpy as np
import pytest
import scipy.sparse

import fastinfl
from fastinfl.cli import main


def _main(argv):
    return main([str(a) for a in argv])


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_sparse_npz_and_svmlight_give_the_dense_answer(tmp_path):
    X, y, _ = fastinfl.datasets.make_logistic(400, 30, seed=1, density=0.2, dtype=np.float64)
    tr, te = slice(0, 380), slice(380, 384)
    scipy.sparse.save_npz(tmp_path / "train.npz", X[tr])
    scipy.sparse.save_npz(tmp_path / "test.npz", X[te])
    np.save(tmp_path / "ytr.npy", y[tr])
    np.save(tmp_path / "yte.npy", y[te])
    np.savez(tmp_path / "dense_train.npz", X=X[tr].toarray(), y=y[tr])
    np.savez(tmp_path / "dense_test.npz", X=X[te].toarray(), y=y[te])
    runs = {"sparse": ["run", tmp_path / "train.npz", tmp_path / "test.npz", "--labels", tmp_path / "ytr.npy",
                       tmp_path / "yte.npy"],
            "dense": ["run", tmp_path / "dense_train.npz", tmp_path / "dense_test.npz"]}
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    for name, rows in (("train.svm", tr), ("test.svm", te)):  # libsvm's 1-based column indices
        sklearn_datasets.dump_svmlight_file(X[rows], np.where(y[rows] == 1, 1, -1), str(tmp_path / name),
                                            zero_based=False)
    runs["svm"] = ["run", tmp_path / "train.svm", tmp_path / "test.svm"]
    out = {}
    for name, argv in runs.items():
        assert _main([*argv, "--k", "3", "--quiet", "--out", tmp_path / f"{name}.csv"]) == 0, name
        out[name] = _read(tmp_path / f"{name}.csv")
    for name in ("sparse", "svm"):
        assert [r["train_index"] for r in out[name]] == [r["train_index"] for r in out["dense"]], name
        for a, b in zip(out[name], out["dense"], strict=True):
            assert float(a["influence"]) == pytest.approx(float(b["influence"]), rel=1e-8)


@pytest.fixture()
def svm_files(tmp_path):
    """Zero-based svmlight train/test files (scikit-learn's default) whose test rows have no column 0,
    and the same data as dense .npz files (the reference)."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    X, y, _ = fastinfl.datasets.make_logistic(300, 8, seed=4, dtype=np.float64)
    X[280:, 0] = 0.0  # the test rows: column 0 never occurs in test.svm
    tr, te = slice(0, 280), slice(280, 300)
    sklearn_datasets.dump_svmlight_file(X[tr], y[tr], str(tmp_path / "train.svm"))
    sklearn_datasets.dump_svmlight_file(X[te], y[te], str(tmp_path / "test.svm"))
    np.savez(tmp_path / "train.npz", X=X[tr], y=y[tr])
    np.savez(tmp_path / "test.npz", X=X[te], y=y[te])
    return tmp_path


def test_zero_based_svmlight_test_file_without_column_0_is_not_shifted(svm_files):
    """Issue 25 item 10: test.svm was read as one-based (every feature one column off), exit 0."""
    assert " 0:" not in (svm_files / "test.svm").read_text()  # the case: no column 0 in the test file
    out = {}
    for kind, ext in (("svm", "svm"), ("dense", "npz")):
        assert _main(["run", svm_files / f"train.{ext}", svm_files / f"test.{ext}", "--k", "3", "--quiet",
                      "--out", svm_files / f"{kind}.csv"]) == 0
        out[kind] = _read(svm_files / f"{kind}.csv")
    assert [r["train_index"] for r in out["svm"]] == [r["train_index"] for r in out["dense"]]
    for a, b in zip(out["svm"], out["dense"], strict=True):
        assert float(a["test_loss"]) == pytest.approx(float(b["test_loss"]), rel=1e-10)
        assert float(a["influence"]) == pytest.approx(float(b["influence"]), rel=1e-8)


def test_svmlight_base_or_width_mismatch_names_both_files(svm_files, capsys):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    X, y, _ = fastinfl.datasets.make_logistic(50, 8, seed=5, dtype=np.float64)
    sklearn_datasets.dump_svmlight_file(X, y, str(svm_files / "one.svm"), zero_based=False)  # 1..8
    sklearn_datasets.dump_svmlight_file(np.hstack([X, X[:, :1]]), y, str(svm_files / "wide.svm"))  # 0..8
    train, one, wide = (str(svm_files / name) for name in ("train.svm", "one.svm", "wide.svm"))
    cases = [
        (one, train, f"fastinfl: error: {train}: column index 0 occurs, but the training file {one} is "
                     "one-based (libsvm: its first column is 1): write both files with the same base "
                     "(scikit-learn's dump_svmlight_file(zero_based=...))."),
        (train, one, f"fastinfl: error: {one}: column index 8 is beyond the columns it may have: the "
                     f"training file {train} has 8 columns (zero-based, indices up to 7)."),
        (train, wide, f"fastinfl: error: {wide}: column index 8 is beyond the columns it may have: the "
                      f"training file {train} has 8 columns (zero-based, indices up to 7)."),
    ]
    for train_file, test_file, message in cases:
        assert _main(["run", train_file, test_file, "--quiet"]) == 1
        assert capsys.readouterr().err == message + "\n"
