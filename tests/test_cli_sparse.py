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
