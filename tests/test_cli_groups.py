"""``fastinfl run --loss`` and ``--groups``: the command line against the Python API (in process)."""

import csv

import numpy as np
import pytest

import fastinfl
from fastinfl.cli import main


def _main(argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("groups")
    X, y, _ = fastinfl.datasets.make_logistic(260, 4, seed=3, dtype=np.float64)
    np.savez(d / "train.npz", X=X[:250], y=y[:250])
    np.savez(d / "test.npz", X=X[250:], y=y[250:])
    labels = np.arange(250) % 6 - 1  # groups 0..4, and -1 (no group)
    np.save(d / "groups.npy", labels)
    (d / "groups.txt").write_text("group\n" + "\n".join(map(str, labels)) + "\n")
    return d, X[:250], y[:250], X[250:], y[250:], labels


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("source", ["groups.npy", "groups.txt"])
def test_groups_out_lists_the_api_group_changes(files, source):
    d, X, y, Xt, yt, labels = files
    assert _main(["run", d / "train.npz", d / "test.npz", "--k", "3", "--quiet", "--out", d / "top.csv",
                 "--groups", d / source, "--groups-out", d / "groups.csv", "--group-steps", "2"]) == 0
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(X, y), X, y)
    change = inf.group_change(Xt, yt, labels, steps=2)  # (10, 5): groups 0..4
    rows = _read(d / "groups.csv")
    for t in range(len(yt)):
        helpful = [r for r in rows if int(r["test_index"]) == t and r["kind"] == "helpful"]
        harmful = [r for r in rows if int(r["test_index"]) == t and r["kind"] == "harmful"]
        up = np.argsort(-change[t], kind="stable")
        expect_helpful = [g for g in up[:3] if change[t, g] > 0]  # removal raises the loss: it helped
        assert [int(r["group"]) for r in helpful] == expect_helpful
        expect_harmful = [g for g in np.argsort(change[t], kind="stable")[:3] if change[t, g] < 0]
        assert [int(r["group"]) for r in harmful] == expect_harmful
        for r in helpful + harmful:
            g = int(r["group"])
            assert float(r["loo_change"]) == pytest.approx(change[t, g], rel=1e-12)
            assert int(r["size"]) == np.count_nonzero(labels == g)


def test_loss_option_reaches_loo_change(files):
    d, X, y, Xt, yt, _ = files
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(X, y), X, y)
    for loss in ("exact", "linear"):
        assert _main(["run", d / "train.npz", d / "test.npz", "--k", "2", "--quiet", "--loss", loss,
                     "--out", d / f"{loss}.csv"]) == 0
        for r in _read(d / f"{loss}.csv"):
            t, i = int(r["test_index"]), int(r["train_index"])
            api = inf.loo_change(Xt[t:t + 1], yt[t:t + 1], [i], correction="newton", loss=loss)[0, 0]
            assert float(r["loo_change"]) == pytest.approx(api, rel=1e-9)


def test_group_file_errors(files, tmp_path, capsys):
    d, *_ = files
    (tmp_path / "short.txt").write_text("1\n2\n")
    (tmp_path / "word.txt").write_text("g\n1\nx\n")
    base = ["run", d / "train.npz", d / "test.npz", "--quiet", "--groups-out", tmp_path / "o.csv"]
    assert _main([*base, "--groups", tmp_path / "short.txt"]) == 1
    assert "2 group labels for 250 training rows" in capsys.readouterr().err
    assert _main([*base, "--groups", tmp_path / "word.txt"]) == 1
    assert "line 2 is 'x', not an integer group label" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _main(["run", d / "train.npz", d / "test.npz", "--groups", d / "groups.npy"])
    assert exc.value.code == 2 and "--groups FILE and --groups-out FILE go together" in capsys.readouterr().err
