"""issue 24, "a command line that never guesses": the label column, test files without labels, --quiet,
output suffixes, progress in steps, and `fastinfl bench` without scikit-learn."""

import csv
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastinfl
from fastinfl.cli import main
from fastinfl.cli.progress import chunks

ROOT = pathlib.Path(__file__).resolve().parents[1]
OCCUPATIONS = ["teacher", "farmer", "nurse", "clerk", "driver", "artist"]


def _main(argv, capsys):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, "\n".join(line for line in err.splitlines() if "compiling kernels" not in line)


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def affairs(tmp_path_factory):
    """The reproduction: a real 0/1 label (had_affair) in the middle, a text column of 6 values last."""
    d = tmp_path_factory.mktemp("affairs")
    rng = np.random.default_rng(24)
    n = 120
    X = rng.standard_normal((n, 3))
    had = (X @ [1.0, -1.0, 0.5] + rng.standard_normal(n) > 0).astype(int)
    children = rng.integers(0, 2, n)
    occ = rng.choice(OCCUPATIONS, n)
    header = ["age", "years_married", "had_affair", "rating", "children", "occupation"]
    rows = [[f"{a:.6f}", f"{b:.6f}", h, f"{c:.6f}", ch, o] for (a, b, c), h, ch, o in zip(X, had, children, occ, strict=True)]
    _write(d / "train.csv", header, rows[:100])
    _write(d / "test.csv", header, rows[100:])
    return d, X, had, children, occ


def test_a_text_last_column_is_not_taken_as_the_label(affairs, capsys):
    d = affairs[0]
    status, out, err = _main(["run", d / "train.csv", d / "test.csv"], capsys)
    assert status == 1 and out == ""
    assert err.count("\n") == 0, err  # one line
    assert err.startswith("fastinfl: error: ")
    assert "the last column, 'occupation', has 6 distinct values" in err
    assert "--label COLUMN" in err and "--multiclass" in err
    # the candidates: the two-valued columns first
    assert "'had_affair' (2 values), 'children' (2 values), 'occupation' (6 values)" not in err  # not the last
    assert "columns with 2 to 10 distinct values: 'had_affair' (2 values), 'children' (2 values)" in err


@pytest.mark.parametrize("label", ["had_affair", "2", "-4"])
def test_label_by_name_or_position(affairs, label, tmp_path, capsys):
    d, X, had, children, occ = affairs
    out = tmp_path / "top.csv"
    # occupation is text: a feature only when dropped (or an ID)
    status, _, err = _main(["run", d / "train.csv", d / "test.csv", "--label", label, "--drop-cols", "occupation",
                            "--k", "2", "--quiet", "--out", out], capsys)
    assert status == 0, err
    assert err == ""
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    Xtr = np.column_stack([X[:100], children[:100]])
    model = fastinfl.LogisticRegression(l2=1.0).fit(Xtr, had[:100])
    top = fastinfl.Influence(model, Xtr, had[:100]).top_k(np.column_stack([X[100:], children[100:]]),
                                                        had[100:], 2)
    first = [r for r in rows if r["test_index"] == "0" and r["kind"] == "harmful"]
    assert [int(r["train_index"]) for r in first] == top.harmful_idx[0][top.harmful[0] > 0].tolist()
    assert {r["test_label"] for r in rows} <= {"0", "1"}


def test_label_col_is_the_same_option(affairs, tmp_path, capsys):
    d = affairs[0]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    base = ["run", d / "train.csv", d / "test.csv", "--drop-cols", "occupation", "--quiet", "--k", "1"]
    assert _main([*base, "--label", "had_affair", "--out", a], capsys)[0] == 0
    assert _main([*base, "--label-col", "had_affair", "--out", b], capsys)[0] == 0
    assert a.read_text() == b.read_text()


def test_label_position_out_of_range(affairs, capsys):
    d = affairs[0]
    status, _, err = _main(["run", d / "train.csv", d / "test.csv", "--label", "6"], capsys)
    assert status == 1 and "--label 6: no column at that position; the file has 6 columns" in err


def test_multiclass_takes_the_last_column(affairs, tmp_path, capsys):
    d = affairs[0]
    out = tmp_path / "top.csv"
    status, _, err = _main(["run", d / "train.csv", d / "test.csv", "--multiclass", "--k", "1", "--out", out],
                           capsys)
    assert status == 0, err
    assert "6 classes: multinomial" in err
    assert {r["test_label"] for r in csv.DictReader(io.StringIO(out.read_text()))} <= set(OCCUPATIONS)


def test_npy_last_column_of_many_values_needs_multiclass(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    np.save(tmp_path / "train.npy", np.column_stack([X, np.arange(60) % 3]))
    np.save(tmp_path / "test.npy", np.column_stack([X[:5], np.arange(5) % 3]))
    status, _, err = _main(["run", tmp_path / "train.npy", tmp_path / "test.npy"], capsys)
    assert status == 1 and "has 3 distinct values" in err and "--multiclass" in err
    status, _, err = _main(["run", tmp_path / "train.npy", tmp_path / "test.npy", "--multiclass", "--quiet",
                            "--out", tmp_path / "top.json"], capsys)
    assert status == 0, err


def test_text_labels_for_a_binary_model(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 2))
    y = np.where(X[:, 0] + rng.standard_normal(50) > 0, "yes", "no")
    _write(tmp_path / "train.csv", ["a", "b", "answer"], [[*r, v] for r, v in zip(X[:40], y[:40], strict=True)])
    _write(tmp_path / "test.csv", ["a", "b", "answer"], [[*r, v] for r, v in zip(X[40:], y[40:], strict=True)])
    status, out, err = _main(["run", tmp_path / "train.csv", tmp_path / "test.csv", "--k", "1", "--quiet"], capsys)
    assert status == 0, err
    assert {r["test_label"] for r in csv.DictReader(io.StringIO(out))} <= {"yes", "no"}


@pytest.mark.parametrize("kind", ["csv", "npz", "npy"])
def test_a_test_file_without_labels_explains_the_predicted_label(affairs, kind, tmp_path, capsys):
    d, X, had, children, occ = affairs
    Xtr, Xte = X[:100], X[100:]
    if kind == "csv":
        _write(tmp_path / "train.csv", ["a", "b", "c", "y"], [[*r, v] for r, v in zip(Xtr, had[:100], strict=True)])
        _write(tmp_path / "test.csv", ["a", "b", "c"], Xte.tolist())
    elif kind == "npz":
        np.savez(tmp_path / "train.npz", X=Xtr, y=had[:100])
        np.savez(tmp_path / "test.npz", X=Xte)
    else:
        np.save(tmp_path / "train.npy", np.column_stack([Xtr, had[:100]]))
        np.save(tmp_path / "test.npy", Xte)
    out = tmp_path / "top.json"
    status, _, err = _main(["run", tmp_path / f"train.{kind}", tmp_path / f"test.{kind}", "--k", "2", "--out", out],
                           capsys)
    assert status == 0, err
    assert "has no labels: each test point's influences are on its loss at the label the model predicts" in err
    import json

    records = json.loads(out.read_text())
    model = fastinfl.LogisticRegression(l2=1.0).fit(Xtr, had[:100])
    pred = np.asarray(model.predict(Xte))
    assert [r["label"] for r in records] == pred.astype(int).tolist()
    np.testing.assert_allclose([r["loss"] for r in records], model.losses(Xte, pred.astype(float)), rtol=1e-12)
    top = fastinfl.Influence(model, Xtr, had[:100]).top_k(Xte, pred.astype(float), 2)
    assert [e["train_index"] for e in records[0]["harmful"]] == top.harmful_idx[0][top.harmful[0] > 0].tolist()
    # --quiet: nothing on stderr
    status, _, err = _main(["run", tmp_path / f"train.{kind}", tmp_path / f"test.{kind}", "--quiet", "--out", out],
                           capsys)
    assert status == 0 and err == ""


def test_quiet_prints_nothing_but_errors(tmp_path, capsys):
    """Notes (a semicolon delimiter, an index column, labels read as 0 and 1) are off with --quiet."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 2))
    y = np.where(X[:, 0] > 0, "b", "a")
    rows = [[i, *r, v] for i, (r, v) in enumerate(zip(X, y, strict=True))]
    for name, part in (("train.csv", rows[:30]), ("test.csv", rows[30:])):
        with open(tmp_path / name, "w") as f:
            f.write(";x1;x2;y\n" + "".join(";".join(map(str, r)) + "\n" for r in part))
    argv = ["run", tmp_path / "train.csv", tmp_path / "test.csv", "--k", "1", "--out", tmp_path / "top.csv"]
    status, _, err = _main(argv, capsys)
    assert status == 0 and "note:" in err  # without --quiet: the notes
    status, out, err = _main([*argv, "--quiet"], capsys)
    assert status == 0 and out == "" and err == ""


@pytest.mark.parametrize("option", ["--out", "--self-influence", "--groups-out"])
def test_unknown_output_suffix_is_an_error(affairs, option, tmp_path, capsys):
    d = affairs[0]
    extra = ["--groups", tmp_path / "g.npy"] if option == "--groups-out" else []
    np.save(tmp_path / "g.npy", np.zeros(100, np.int64))
    status, _, err = _main(["run", d / "train.csv", d / "test.csv", "--label", "had_affair", option,
                            tmp_path / "x.parquet", *extra], capsys)
    assert status == 2
    assert "output files are .csv or .json ('.parquet' is not one of them)" in err
    assert not (tmp_path / "x.parquet").exists()


def test_chunks_move_a_bar_in_about_fifty_steps():
    for n in (1, 7, 377, 4096, 6366, 10**6):
        parts = chunks(n)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
        assert len(parts) == min(n, 50) or 40 <= len(parts) <= 50, (n, len(parts))


def test_self_influence_bar_advances_per_batch(monkeypatch, tmp_path, capsys):
    """377 rows (one chunk of 4096 before: 0 % then 100 %) are now about 50 updates of the bar."""
    import fastinfl.cli.run as run

    updates = []

    class Bar:
        def update(self, k):
            updates.append(k)

    import contextlib

    @contextlib.contextmanager
    def fake(desc, total=None, enabled=True, **kw):
        yield Bar() if desc == "self-influence" else type("B", (), {"update": lambda self, k: None})()

    monkeypatch.setattr(run, "progress", fake)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((377, 4))
    y = (X[:, 0] + rng.standard_normal(377) > 0).astype(float)
    np.savez(tmp_path / "train.npz", X=X, y=y)
    np.savez(tmp_path / "test.npz", X=X[:3], y=y[:3])
    assert _main(["run", tmp_path / "train.npz", tmp_path / "test.npz", "--quiet", "--out", tmp_path / "t.csv",
                  "--self-influence", tmp_path / "si.csv"], capsys)[0] == 0
    assert sum(updates) == 377 and len(updates) >= 40


def test_bench_without_scikit_learn_works_or_names_the_extra(tmp_path):
    """A plain `pip install .` has no scikit-learn: `fastinfl bench` must not print a traceback."""
    blocker = tmp_path / "block"
    (blocker / "sklearn").mkdir(parents=True)
    (blocker / "sklearn" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sklearn'\", "
                                                     "name='sklearn')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]))
    cmd = [sys.executable, "-m", "fastinfl.cli", "bench"]
    proc = subprocess.run([*cmd, "--ops", "fit", "--n", "2000", "--d", "5"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "fastinfl: error: fastinfl bench --ops fit times scikit-learn's fit too, and scikit-learn is not "
        "installed: from the checkout, pip install '.[test]' (or pip install scikit-learn), or leave fit out "
        "of --ops.")
    proc = subprocess.run([*cmd, "--ops", "hvp", "--n", "2000", "--d", "5", "--budget", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "hvp" in proc.stdout


def test_chunks_of_cg_solves_hold_at_least_32_rows():
    parts = chunks(377, minimum=32)
    assert len(parts) == 12 and all(hi - lo <= 32 for lo, hi in parts) and parts[-1][1] == 377
