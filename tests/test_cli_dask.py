"""``fastinfl run STORE.zarr ... --scheduler``: a Zarr training store through the Dask operator."""

import csv

import numpy as np
import pytest

import fastinfl
from fastinfl.cli import main

da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")


def _main(argv):
    return main([str(a) for a in argv])


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_zarr_store_gives_the_in_memory_answer(tmp_path, capsys):
    X, y, _ = fastinfl.datasets.make_logistic(2400, 4, seed=2, dtype=np.float64)
    da.to_zarr(da.from_array(X[:2300], chunks=(600, 4)), str(tmp_path / "train.zarr"), component="X")
    da.to_zarr(da.from_array(y[:2300], chunks=600), str(tmp_path / "train.zarr"), component="y")
    np.savez(tmp_path / "train.npz", X=X[:2300], y=y[:2300])
    np.savez(tmp_path / "test.npz", X=X[2300:2304], y=y[2300:2304])
    for train, out in (("train.zarr", "z.csv"), ("train.npz", "n.csv")):
        assert _main(["run", tmp_path / train, tmp_path / "test.npz", "--k", "3", "--quiet",
                      "--scheduler", "synchronous", "--out", tmp_path / out]) == 0
    z, n = _read(tmp_path / "z.csv"), _read(tmp_path / "n.csv")
    assert [r["train_index"] for r in z] == [r["train_index"] for r in n]
    for a, b in zip(z, n, strict=True):
        assert float(a["influence"]) == pytest.approx(float(b["influence"]), rel=1e-9)
    assert _main(["run", tmp_path / "train.zarr", tmp_path / "test.npz", "--quiet",
                  "--self-influence", tmp_path / "s.csv"]) == 1
    assert "--self-influence is not available with a Zarr training store" in capsys.readouterr().err
