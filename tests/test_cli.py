"""The command line, run as a subprocess like a user would, checked against the Python API."""

import csv
import io
import json
import pathlib
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

import fastinfl
import fastinfl.cli.demo
import fastinfl.cli.run
from fastinfl.cli import main
from fastinfl.cli.progress import progress

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md"
CLI = [sys.executable, "-m", "fastinfl.cli"]
# The command with matplotlib made unimportable, whether or not it is installed.
CLI_NO_MPL = [sys.executable, "-c",
              "import sys; sys.modules['matplotlib'] = None; from fastinfl.cli import main; sys.exit(main())"]


NOTICE = re.compile(r"^fastinfl: compiling kernels \(first run only, about \d+ s\)…\n", flags=re.M)


def _run(*args, cwd=None, cmd=CLI, env=None):
    """The command as a subprocess; stderr without the cold-cache notice (it depends on the cache)."""
    proc = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env)
    proc.stderr = NOTICE.sub("", proc.stderr)
    return proc


def _write_csv(path, header, columns):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(zip(*[np.asarray(c).tolist() for c in columns], strict=True))


# ------------------------------------------------------------------------ demo
@pytest.mark.slow  # a ~18 s subprocess (the seed numbers are also checked in process: tests/test_seed.py)
def test_demo_explains_and_shows_checkable_results():
    proc = _run("demo", "--n", "3000", "--d", "5", "--m", "40")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for solver in ("direct", "cg"):
        block = out.split(f"solver='{solver}':")[1]
        values = [float(v) for v in re.findall(r"\): (-?\d+\.\d{6})", block)[:3]]
        assert values == [0.000104, 0.228624, -0.225480], solver
    agree = float(re.search(r"Direct and CG agree to (\S+) ", out).group(1))
    assert agree < 1e-10
    # plain words: what influence's sign means, what the seed notebook is, why the warning/error show
    assert "negative influence: the point HELPED" in out and "positive influence: the point HURT" in out
    assert "This project started from a notebook" in out
    assert "The warning above is part of the demonstration, not a failure" in out
    assert "not a stationary point" in out
    assert "linearly separable" in out
    assert re.search(r"l2=1: w\*=0\.701613, b\*=-1\.449169", out)
    assert "3,000 training and 40 test points, 5 features, float32" in out
    assert re.search(r"fit \(l2=1\): \S+ s, \d+ Newton iterations", out)
    # the synthetic part, recomputed by the API: planted mislabels found by self-influence
    X, y, coef = fastinfl.datasets.make_logistic(3040, 5, seed=0)
    ytr, planted = fastinfl.cli.demo.plant_mislabels(X[:3000], y[:3000], coef, 10)
    assert f"planted mislabels (training rows): {planted.tolist()}" in out
    model = fastinfl.LogisticRegression(l2=1.0).fit(X[:3000], ytr)
    inf = fastinfl.Influence(model, X[:3000], ytr)
    ranked = np.argsort(-inf.self_influence(), kind="stable")
    within = int(np.max(np.flatnonzero(np.isin(ranked, planted)))) + 1
    found = int(np.isin(ranked[:10], planted).sum())
    assert f"rows {ranked[:10].tolist()}" in out
    assert f"{found} of the 10 planted mislabels are among them, and all 10 among the {within:,} highest" in out
    assert within < 100  # they do stand out: 10 rows of 3000 within the top 100
    assert re.search(r"of each of the 40 test points: \S+ s, \S+ M influences/s", out)
    top = inf.top_k(X[3000:3003], y[3000:3003], k=3)
    lines = re.findall(r"test point (\d) \(y=([01])\): most helpful rows \[(.*?)\].*"
                       r"most harmful rows \[(.*?)\]", out)
    assert len(lines) == 3
    for t, label, helpful, harmful in lines:
        t = int(t)
        assert int(label) == y[3000 + t]
        assert [int(i) for i in helpful.split(",")] == top.helpful_idx[t].tolist()
        assert [int(i) for i in harmful.split(",")] == top.harmful_idx[t].tolist()
    # predicted vs actual leave-one-out change, side by side, for two refits
    t = int(np.argmax(model.losses(X[3000:], y[3000:])))
    assert f"Test point {t}, the one of highest loss" in out
    table = re.findall(r"^ +(\d+) most (harmful|helpful) +(\S+) +(\S+) +(\S+)$", out, flags=re.M)
    assert [kind for _, kind, *_ in table] == ["harmful", "helpful"]
    rows = [int(i) for i, *_ in table]
    actual = fastinfl.loo_retrain(model, X[:3000], ytr, rows, X[3000 + t:3001 + t], y[3000 + t:3001 + t])[0]
    np.testing.assert_allclose([float(a) for *_, a in table], actual, rtol=1e-4)  # printed to 5 digits
    assert float(table[0][4]) < 0 < float(table[1][4])


def test_usage_error_exit_status():
    proc = _run("no-such-command")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["run", "--help"]])
def test_help(args):
    proc = _run(*args)
    assert proc.returncode == 0 and "usage: fastinfl" in proc.stdout


# --------------------------------------------------------------- run: formats
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training (70) and test (12) points x 4 features in every input format, in one folder."""
    folder = tmp_path_factory.mktemp("data")
    X, y, _ = fastinfl.datasets.make_logistic(82, 4, seed=5, dtype=np.float64)
    Xtr, ytr, Xte, yte = X[:70], y[:70], X[70:], y[70:]
    names = ["f0", "f1", "f2", "f3"]
    for part, A, b in (("train", Xtr, ytr), ("test", Xte, yte)):
        np.savez(folder / f"{part}.npz", X=A.astype(np.float32), y=b)
        np.save(folder / f"{part}.npy", np.column_stack([A, b]))
        np.save(folder / f"X_{part}.npy", A)
        np.save(folder / f"y_{part}.npy", b.astype(bool))
        _write_csv(folder / f"{part}.csv", [*names, "y"], [*A.T, b])
        _write_csv(folder / f"{part}_mid.csv", ["f0", "label", "f1", "f2", "f3"], [A[:, 0], b, *A[:, 1:].T])
    return folder, Xtr, ytr, Xte, yte


def _reference(Xtr, ytr, Xte, yte, k, l2=1.0, solver="auto", damping=0.0):
    """TopK, Newton loo_change (helpful, harmful) of each test row, and the Influence, by the Python API."""
    model = fastinfl.LogisticRegression(l2=l2).fit(Xtr, ytr)
    inf = fastinfl.Influence(model, Xtr, ytr, solver=solver, damping=damping)
    top = inf.top_k(Xte, yte, k=k)
    loo = [np.array([inf.loo_change(Xte[t:t + 1], yte[t:t + 1], train_idx=idx[t], correction="newton")[0]
                     for t in range(len(yte))]) for idx in (top.helpful_idx, top.harmful_idx)]
    return top, loo, inf, model


def _parse_csv(text, m, k, y_test=None, losses=None):
    """(m, k) arrays train_index, influence, loo_change per kind from the CSV output; checks its layout
    and, when given, the test label and loss on every row."""
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["test_index", "test_label", "test_loss", "kind", "rank", "train_index",
                             "influence", "loo_change"]
    assert len(rows) == m * 2 * k
    if y_test is not None:
        assert [int(r["test_label"]) for r in rows] == np.repeat(y_test, 2 * k).tolist()
        np.testing.assert_allclose([float(r["test_loss"]) for r in rows], np.repeat(losses, 2 * k), rtol=1e-12)
    out = {}
    for kind in ("helpful", "harmful"):
        sel = [r for r in rows if r["kind"] == kind]
        assert [(int(r["test_index"]), int(r["rank"])) for r in sel] == \
            [(t, j) for t in range(m) for j in range(1, k + 1)]
        out[kind] = tuple(np.array([float(r[c]) for r in sel]).reshape(m, k)
                          for c in ("train_index", "influence", "loo_change"))
    # helpful rows first within each test point
    assert [r["kind"] for r in rows[: 2 * k]] == ["helpful"] * k + ["harmful"] * k
    return out


def _check(parsed, top, loo):
    for kind, idx, values, change in (("helpful", top.helpful_idx, top.helpful, loo[0]),
                                      ("harmful", top.harmful_idx, top.harmful, loo[1])):
        got_idx, got_values, got_change = parsed[kind]
        np.testing.assert_array_equal(got_idx, idx)
        np.testing.assert_allclose(got_values, values, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got_change, change, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("args, float32", [
    (["train.npz", "test.npz"], True),
    (["train.npy", "test.npy"], False),
    (["X_train.npy", "X_test.npy", "--labels", "y_train.npy", "y_test.npy"], False),
    (["train_mid.csv", "test_mid.csv", "--label-col", "label"], False),
    (["train.csv", "test.csv"], False),
    (["train.csv", "test.npz"], False),  # formats may differ; test.npz stays float32
], ids=["npz", "npy-last-column", "npy-labels", "csv-label-col", "csv-last-column", "csv-npz"])
def test_run_csv_output_matches_api(data, args, float32):
    folder, Xtr, ytr, Xte, yte = data
    proc = _run("run", *args, "--k", "3", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    Xtr_ = Xtr.astype(np.float32) if float32 else Xtr
    Xte_ = Xte.astype(np.float32) if float32 or args[1] == "test.npz" else Xte
    top, loo, _, model = _reference(Xtr_, ytr, Xte_, yte, 3)
    _check(_parse_csv(proc.stdout, len(yte), 3, yte, model.losses(Xte_, yte)), top, loo)


def test_run_json_self_influence_cg_damping(data):
    folder, Xtr, ytr, Xte, yte = data
    proc = _run("run", "train.csv", "test.csv", "--k", "4", "--l2", "0.5", "--solver", "cg", "--damping",
                "0.01", "--out", "top.json", "--self-influence", "si.json", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    top, loo, inf, model = _reference(Xtr, ytr, Xte, yte, 4, l2=0.5, solver="cg", damping=0.01)
    records = json.loads((folder / "top.json").read_text())
    assert [r["test_index"] for r in records] == list(range(len(yte)))
    assert [r["label"] for r in records] == yte.tolist()
    p = model.predict_proba(Xte)[:, 1]
    np.testing.assert_allclose([r["loss"] for r in records], -np.log(np.where(yte == 1, p, 1 - p)), rtol=1e-9)
    parsed = {kind: tuple(np.array([[e[key] for e in r[kind]] for r in records])
                          for key in ("train_index", "influence", "loo_change"))
              for kind in ("helpful", "harmful")}
    assert all([e["rank"] for e in r["harmful"]] == [1, 2, 3, 4] for r in records)
    _check(parsed, top, loo)
    # self-influence: the --k (4) highest, descending
    si = inf.self_influence()
    order = np.argsort(-si, kind="stable")[:4]
    ranking = json.loads((folder / "si.json").read_text())
    assert [e["rank"] for e in ranking] == [1, 2, 3, 4]
    assert [e["train_index"] for e in ranking] == order.tolist()
    assert [e["label"] for e in ranking] == ytr[order].tolist()
    np.testing.assert_allclose([e["self_influence"] for e in ranking], si[order], rtol=1e-10)


def test_run_out_csv_self_influence_all(data):
    folder, Xtr, ytr, Xte, yte = data
    proc = _run("run", "train.npy", "test.npy", "--k", "2", "--format", "csv", "--out", "top.txt",
                "--self-influence", "si.csv", "--self-k", "0", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    top, loo, inf, _ = _reference(Xtr, ytr, Xte, yte, 2)
    _check(_parse_csv((folder / "top.txt").read_text(), len(yte), 2), top, loo)
    rows = list(csv.DictReader(io.StringIO((folder / "si.csv").read_text())))
    si = inf.self_influence()
    assert [int(r["train_index"]) for r in rows] == np.argsort(-si, kind="stable").tolist()
    assert [int(r["rank"]) for r in rows] == list(range(1, 71))
    np.testing.assert_allclose([float(r["self_influence"]) for r in rows], np.sort(si)[::-1], rtol=1e-12)


def test_run_k_above_n_lists_each_training_point_once_by_its_sign(tmp_path):
    """k = n: a helpful point has negative influence, a harmful one positive; no point in both lists,
    slots without a point of the right sign left out (JSON and CSV), as the API's influence says."""
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    proc = _run("run", "d.npz", "d.npz", "--format", "json", "--k", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    infl = fastinfl.Influence(model, X, y).influence(X, y)
    assert len(records) == 4
    for t, r in enumerate(records):
        assert {e["train_index"] for e in r["helpful"]} == set(np.flatnonzero(infl[t] < 0).tolist())
        assert {e["train_index"] for e in r["harmful"]} == set(np.flatnonzero(infl[t] > 0).tolist())
        assert all(e["influence"] < 0 for e in r["helpful"]) and all(e["influence"] > 0 for e in r["harmful"])
        assert [e["rank"] for e in r["helpful"]] == list(range(1, len(r["helpful"]) + 1))
        assert len(r["helpful"]) + len(r["harmful"]) <= 4
    assert any(len(r["helpful"]) < 4 for r in records)  # the case of the issue: fewer than k of a sign
    proc = _run("run", "d.npz", "d.npz", "--k", "4", cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == sum(len(r["helpful"]) + len(r["harmful"]) for r in records)
    assert all((float(r["influence"]) < 0) == (r["kind"] == "helpful") for r in rows)
    assert all(r["train_index"] != "-1" and r["loo_change"] != "nan" for r in rows)


def test_plot(data):
    pytest.importorskip("matplotlib")
    folder, *_ = data
    proc = _run("run", "train.npz", "test.npz", "--k", "2", "--out", "top.csv", "--plot", "loo.png",
                cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert (folder / "loo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(data):
    folder, *_ = data
    proc = _run("run", "train.npz", "test.npz", "--out", "never.csv", "--plot", "x.png", cwd=folder,
                cmd=CLI_NO_MPL)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("fastinfl: error: --plot needs matplotlib: pip install matplotlib "
                                   "(or, from a fastinfl checkout, pip install '.[plot]').")
    assert not (folder / "never.csv").exists()  # stopped before any work


# ---------------------------------------------------------------- run: errors
@pytest.fixture(scope="module")
def bad(data):
    """The data folder plus broken files; returns the folder."""
    folder, Xtr, ytr, *_ = data
    (folder / "corrupt.npz").write_bytes(b"not a zip archive")
    (folder / "adir.npz").mkdir()
    (folder / "train.txt").write_text("1,2\n")
    np.savez(folder / "no_y.npz", X=Xtr)
    np.savez(folder / "x3d.npz", X=Xtr[:, :, None], y=ytr)
    np.save(folder / "flat.npy", Xtr[:, 0])
    np.save(folder / "y_short.npy", ytr[:-1])
    yte = data[4]
    np.save(folder / "y_test_three.npy", np.where(np.arange(len(yte)) == 2, 3, yte))
    X = Xtr.copy()
    X[4, 2] = np.nan
    np.savez(folder / "nan.npz", X=X, y=ytr)
    X = np.column_stack([Xtr, ytr])
    X[3, 1] = -np.inf
    np.save(folder / "inf.npy", X)
    X = Xtr.copy()
    X[1, 3] = -1e300
    np.savez(folder / "huge.npz", X=X, y=ytr)
    X = np.column_stack([Xtr, ytr])
    X[5, 4] = 2.5
    np.save(folder / "label2.npy", X)
    np.savez(folder / "half.npz", X=Xtr, y=np.where(np.arange(70) == 9, 0.5, ytr))
    np.savez(folder / "three_features.npz", X=Xtr[:, :3], y=ytr)
    np.savez(folder / "one_class.npz", X=Xtr, y=np.ones(70, bool))
    (folder / "abc.csv").write_text("x1,x2,y\n1,2,0\n3,4,1\n5,abc,0\n")
    (folder / "ragged.csv").write_text("x1,x2,y\n1,2,0\n3,1\n")
    (folder / "noheader.csv").write_text("1,2,0\n3,4,1\n5,6,0\n")
    (folder / "decimal_comma.csv").write_text("x1;x2;y\n1,5;2;0\n3;4;1\n")
    _write_csv(folder / "test_nolabel.csv", ["f0", "f1", "f2", "f3"], list(data[3].T))
    (folder / "header_only.csv").write_text("x1,x2,y\n")
    (folder / "nan.csv").write_text("x1,x2,y\n1,2,0\n3,4,1\n\n5,6,0\nnan,8,1\n")
    (folder / "minus1.csv").write_text("x1,x2,y\n1,2,0\n3,4, \n")
    _write_csv(folder / "renamed.csv", ["f0", "f1", "g2", "f3", "y"], [*Xtr[:5].T, ytr[:5]])
    # separable, and (with a duplicated column) singular at l2 = 0
    np.savez(folder / "separable.npz", X=[[0.0], [1.0], [2.0], [3.0]], y=[0, 0, 1, 1])
    np.savez(folder / "collinear.npz", X=[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], y=[0, 1, 0, 1])
    return folder


# arguments of `fastinfl run` -> the start of its one-line error message
ERRORS = {
    "missing.npz test.npz": "missing.npz: cannot read: No such file or directory.",
    "adir.npz test.npz": "adir.npz: cannot read: Is a directory.",
    "corrupt.npz test.npz": "corrupt.npz: not a valid .npz file",
    "train.txt test.npz": "train.txt: unknown file type '.txt'",
    "no_y.npz test.npz": "no_y.npz: no array named 'y' (it has X; expected X and y).",
    "x3d.npz test.npz": "x3d.npz: array X: features must be a 2-D array",
    "flat.npy test.npy": "flat.npy: expected a 2-D array of features with the labels in the last column",
    "X_train.npy X_test.npy --labels y_short.npy y_test.npy": "y_short.npy: 69 labels for 70 rows of "
                                                              "features.",
    "X_train.npy X_test.npy --labels y_train.npy y_test_three.npy": "y_test_three.npy: label 3 is not a class "
                                                                    "of the training data (0, 1).",
    "nan.npz test.npz": "nan.npz: array X, row 4, column 2: nan (features must be finite).",
    "train.npy inf.npy": "inf.npy: row 3, column 1: -inf (features must be finite).",
    "train.npz huge.npz": "huge.npz: array X, row 1, column 3: -1e+300: features this large overflow float64 "
                          "when squared; scale them (for example standardise them).",
    "label2.npy test.npy": "label2.npy: row 5, column 4 (labels, the last): label 2.5 (labels are classes: 0 "
                           "and 1 for a binary model, or integers or names for several classes).",
    "half.npz test.npz": "half.npz: array y, row 9: label 0.5 (labels are classes: 0 and 1 for a binary "
                         "model, or integers or names for several classes).",
    "abc.csv test.csv": "abc.csv: line 4 (row 2), column 'x2': 'abc', not a number (if column 'x2' holds "
                        "names or IDs, pass --id-col x2 to carry it into the output, or --drop-cols x2 to "
                        "ignore it).",
    "noheader.csv test.csv": "noheader.csv: line 1 ('1,2,0') holds numbers, not column names: the file has "
                             "no header line.",
    "train.csv noheader.csv": "noheader.csv: line 1 ('1,2,0') holds numbers, not column names",
    "decimal_comma.csv test.csv": "decimal_comma.csv: line 2 (row 0), column 'x1': '1,5', not a number "
                                  "(decimal commas? fields are separated by ';'; write 1.5, not 1,5).",
    "train.csv test.csv --id-col name": "train.csv: no column named 'name' for --id-col (columns: f0, f1, "
                                        "f2, f3, y).",
    "train.csv test.csv --drop-cols f1,zz": "train.csv: no column named 'zz' for --drop-cols",
    "ragged.csv test.csv": "ragged.csv: line 3 (row 1) has 2 fields but the header has 3.",
    "header_only.csv test.csv": "header_only.csv: no data rows after the header.",
    "train.csv nan.csv": "nan.csv: line 6 (row 3), column 'x1': nan (features must be finite).",
    "minus1.csv test.csv": "minus1.csv: line 3 (row 1), column 'y': an empty label.",
    "train.csv test.csv --label-col target": "train.csv: no column named 'target' for the labels (columns: "
                                             "f0, f1, f2, f3, y).",
    "one_class.npz test.npz": "one_class.npz: every label is 1; the training data need at least two "
                              "classes.",
    "train.npz three_features.npz": "three_features.npz: 3 feature columns, but train.npz has 4.",
    "train.csv renamed.csv": "renamed.csv: feature column 2 is 'g2', but in train.csv it is 'f2'",
    "separable.npz separable.npz --l2 0": "fitting separable.npz: ConvergenceError: the training data are "
                                          "linearly separable",
    "collinear.npz collinear.npz --l2 0": "fitting collinear.npz: SingularHessianError: the Hessian of the "
                                          "training objective is not positive definite",
    "train.npz test.npz --out nowhere/top.csv": "cannot write nowhere/top.csv: no folder nowhere.",
}


def _main(args, cwd, capsys, monkeypatch):
    """(exit status, stdout, stderr) of ``fastinfl ARGS`` run in this process (fast: no interpreter start)."""
    monkeypatch.chdir(cwd)
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, NOTICE.sub("", err)


@pytest.mark.parametrize("args", ERRORS)
def test_run_error_one_line_exit_1(bad, args, capsys, monkeypatch):
    status, out, err = _main(["run", *args.split()], bad, capsys, monkeypatch)
    assert status == 1, err
    assert out == ""
    assert err.startswith("fastinfl: error: " + ERRORS[args]), err
    assert err.count("\n") == 1


USAGE = {
    "train.csv test.csv --labels y_train.npy y_test.npy": "--labels goes with .npy feature files",
    "train.npz test.npz --label-col y": "--label goes with .csv files",
    "train.npz test.npz --label y": "--label goes with .csv files",
    "train.npz test.npz --out top.parquet": "--out top.parquet: output files are .csv or .json ('.parquet' is "
                                            "not one of them)",
    "train.npz test.npz --self-influence si": "--self-influence si: output files are .csv or .json (it has none)",
    "train.npz test.npz --id-col id": "--id-col goes with .csv files",
    "train.npz test.npz --drop-cols a": "--drop-cols goes with .csv files",
    "train.csv test.csv --format csv --out top.json": "--format csv contradicts the file name top.json",
    "train.csv test.csv --format json --self-influence si.csv": "--format json contradicts the file name si.csv",
    "train.npz test.npz --self-k 3": "--self-k goes with --self-influence FILE",
    "train.npz test.npz --k 0": "argument --k: must be a positive integer; got 0",
    "train.npz test.npz --l2=-1": "argument --l2: must be a finite number >= 0; got -1",
    "train.npz test.npz --solver lu": "argument --solver: invalid choice: 'lu'",
    "train.npz": "the following arguments are required: TEST",
}


@pytest.mark.parametrize("args", USAGE)
def test_run_usage_error_exit_2(bad, args, capsys, monkeypatch):
    status, out, err = _main(["run", *args.split()], bad, capsys, monkeypatch)
    assert status == 2, err
    assert err.startswith("usage: fastinfl run") and USAGE[args] in err, err


@pytest.mark.parametrize("args", ["missing.npz test.npz", "abc.csv test.csv", "train.csv nan.csv",
                                  "label2.npy test.npy", "separable.npz separable.npz --l2 0",
                                  "train.csv test.csv --label-col target", "train.npz test.npz --solver lu"])
def test_errors_in_a_subprocess(bad, args, capsys, monkeypatch):
    """As a real process: the same one-line message and exit status, no traceback."""
    proc = _run("run", *args.split(), cwd=bad)
    in_process = _main(["run", *args.split()], bad, capsys, monkeypatch)
    assert (proc.returncode, proc.stdout, proc.stderr) == in_process
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr


def test_debug_shows_traceback(bad):
    proc = _run("run", "missing.npz", "test.npz", "--debug", cwd=bad)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "InputError: missing.npz: cannot read" in proc.stderr


def test_interrupt_exit_130(capsys, monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastinfl.cli.demo, "demo", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "fastinfl: interrupted\n"


# ------------------------------------------------------------------- progress
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_tqdm_and_moves_during_one_long_call(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    term = _Terminal()
    with progress("top-k", total=4, file=term, delay=0.0, interval=0.01) as bar:
        assert isinstance(bar, __import__("tqdm").tqdm)
        bar.update(3)
        time.sleep(0.05)
    assert re.search(r"\rtop-k:  75%\|.*\| 3/4 \[", term.getvalue())
    term = _Terminal()
    with progress("fit", file=term, delay=0.0, interval=0.01):  # no update(): the monitor refreshes
        time.sleep(0.1)
    assert term.getvalue().count("\rfit: 00:00") >= 3


@pytest.mark.parametrize("case", ["under the delay", "--quiet", "not a terminal", "TQDM_DISABLE=1"])
def test_progress_bar_silent(case, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    stream, kwargs = _Terminal(), {"delay": 0.0}
    if case == "under the delay":
        kwargs = {"delay": 5.0}
    elif case == "--quiet":
        kwargs["enabled"] = False
    elif case == "not a terminal":
        stream = io.StringIO()
    else:
        monkeypatch.setenv("TQDM_DISABLE", "1")
    with progress("fit", total=3, file=stream, interval=0.01, **kwargs) as bar:
        bar.update(2)
        time.sleep(0.05)
    assert stream.getvalue() == ""


def test_no_hand_written_progress_bar():
    import fastinfl.cli.progress as mod

    assert not hasattr(fastinfl.cli, "Progress") and "tqdm.auto" in pathlib.Path(mod.__file__).read_text()


# ------------------------------------------------------------ docs/cli.md
@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_docs_cli_commands_run_as_shown(tmp_path):
    """Every command in docs/cli.md runs on its example files; shown output and errors match."""
    text = DOC.read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\n```text\n(.*?)```", text, flags=re.S))
    assert set(files) == {"train.csv", "test.csv"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
        data = np.loadtxt(tmp_path / name, delimiter=",", skiprows=1)
        part = name.split(".")[0]
        np.savez(tmp_path / f"{part}.npz", X=data[:, :-1], y=data[:, -1])
        np.save(tmp_path / f"X_{part}.npy", data[:, :-1])
        np.save(tmp_path / f"y_{part}.npy", data[:, -1])
    # the commands of the per-command sections; the synopsis's CSV example (cli-example) is run by
    # tests/test_readme_cli.py
    per_command = text[text.index("## `fastinfl demo`"):]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", per_command, flags=re.S)
                for line in block.strip().splitlines()]
    assert len(commands) == 5 and all(c.startswith("fastinfl ") for c in commands)
    try:
        import matplotlib  # noqa: F401
        have_mpl = True
    except ImportError:
        have_mpl = False
    results = {}
    for command in commands:
        proc = _run(*shlex.split(command)[1:], cwd=tmp_path)
        if "--plot" in command and not have_mpl:
            assert proc.returncode == 1 and "--plot needs matplotlib" in proc.stderr
        else:
            assert proc.returncode == 0, (command, proc.stderr)
        results[command] = proc.stdout
    for path in ("top.json", "top.csv", "suspects.csv") + (("loo.png",) if have_mpl else ()):
        assert (tmp_path / path).stat().st_size > 0, path
    # the output shown under a command is what it prints
    shown = re.findall(r"```bash\n([^\n]*)\n```\n\n<!-- output -->\n```text\n(.*?)```", text, flags=re.S)
    assert len(shown) == 1
    for command, output in shown:
        got = list(csv.reader(io.StringIO(results[command])))
        want = list(csv.reader(io.StringIO(output)))
        assert got[0] == want[0] and len(got) == len(want)
        for g, w in zip(got[1:], want[1:], strict=True):  # numbers to 1e-9: the last digits vary by CPU
            exact = [j for j, name in enumerate(got[0]) if name not in ("test_loss", "influence", "loo_change")]
            assert [g[j] for j in exact] == [w[j] for j in exact]
            np.testing.assert_allclose([float(g[j]) for j in range(len(g)) if j not in exact],
                                       [float(w[j]) for j in range(len(w)) if j not in exact], rtol=1e-9)
    # the error example: an empty x2 in the third data row of train.csv
    example = re.search(r"^fastinfl: error: train\.csv: .*$", text, flags=re.M).group(0)
    lines = files["train.csv"].splitlines()
    fields = lines[3].split(",")
    lines[3] = ",".join([fields[0], "", fields[2]])
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    proc = _run("run", "train.csv", "test.csv", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == example


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_bench_runs_the_report_from_a_checkout(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "fastinfl.cli", "bench", "--n", "3000", "--d", "4", "--ops",
                           "hvp", "--budget", "0"], capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| hvp | 3000x4 float64 |" in proc.stdout
    elsewhere = subprocess.run([sys.executable, "-m", "fastinfl.cli", "bench"], capture_output=True,
                               text=True, cwd=tmp_path, timeout=120)
    assert elsewhere.returncode == 1 and "from the repository's root" in elsewhere.stderr
    assert "Traceback" not in elsewhere.stderr


# ------------------------------------------------------- run: CSV columns, IDs
def _json_run(folder, *args):
    proc = _run("run", *args, "--k", "3", "--format", "json", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_pandas_index_column_is_row_ids_not_a_feature(data, tmp_path):
    pd = pytest.importorskip("pandas")
    folder, Xtr, ytr, Xte, yte = data
    names = ["f0", "f1", "f2", "f3"]
    for part, A, b, first in (("train", Xtr, ytr, 100), ("test", Xte, yte, 500)):
        frame = pd.DataFrame(A, columns=names, index=range(first, first + len(b)))
        frame["y"] = b
        frame.to_csv(tmp_path / f"{part}.csv")  # pandas' default: an unnamed index column first
    assert (tmp_path / "train.csv").read_text().startswith(",f0,f1,f2,f3,y\n")
    got, err = _json_run(tmp_path, "train.csv", "test.csv")
    assert "train.csv: column 0 has no name: read as the row index" in err
    plain, _ = _json_run(folder, "train.csv", "test.csv")  # the same data without the index column
    for g, p in zip(got, plain, strict=True):
        assert g["test_id"] == str(500 + g["test_index"])
        for kind in ("helpful", "harmful"):
            assert [e["train_index"] for e in g[kind]] == [e["train_index"] for e in p[kind]]
            assert [e["train_id"] for e in g[kind]] == [str(100 + e["train_index"]) for e in p[kind]]
            np.testing.assert_allclose([e["influence"] for e in g[kind]], [e["influence"] for e in p[kind]],
                                       rtol=1e-12)


def test_id_col_text_and_drop_cols(data, tmp_path):
    folder, Xtr, ytr, Xte, yte = data
    for part, A, b in (("train", Xtr, ytr), ("test", Xte, yte)):
        names = [f"{part}-{i}" for i in range(len(b))]
        _write_csv(tmp_path / f"{part}.csv", ["name", "f0", "f1", "note", "f2", "f3", "y"],
                   [names, A[:, 0], A[:, 1], np.arange(len(b)) * 7.0, A[:, 2], A[:, 3], b])
    proc = _run("run", "train.csv", "test.csv", cwd=tmp_path)
    assert proc.returncode == 1
    assert "column 'name': 'train-0', not a number (if column 'name' holds names or IDs, pass --id-col name" \
        in proc.stderr
    got, _ = _json_run(tmp_path, "train.csv", "test.csv", "--id-col", "name", "--drop-cols", "note")
    plain, _ = _json_run(folder, "train.csv", "test.csv")
    for g, p in zip(got, plain, strict=True):
        assert g["test_id"] == f"test-{g['test_index']}"
        for kind in ("helpful", "harmful"):
            assert [e["train_id"] for e in g[kind]] == [f"train-{e['train_index']}" for e in p[kind]]
            np.testing.assert_allclose([e["loo_change"] for e in g[kind]], [e["loo_change"] for e in p[kind]],
                                       rtol=1e-12)
    proc = _run("run", "train.csv", "test.csv", "--id-col", "name", "--drop-cols", "note", "--k", "1",
                "--self-influence", "si.csv", cwd=tmp_path)
    header = proc.stdout.splitlines()[0].split(",")
    assert header == ["test_index", "test_id", "test_label", "test_loss", "kind", "rank", "train_index",
                      "train_id", "influence", "loo_change"]
    si = list(csv.DictReader(io.StringIO((tmp_path / "si.csv").read_text())))
    assert all(r["train_id"] == f"train-{r['train_index']}" for r in si)


def test_semicolon_separated_csv_detected(data, tmp_path):
    folder, *_ = data
    for part in ("train", "test"):
        text = (folder / f"{part}.csv").read_text()
        (tmp_path / f"{part}.csv").write_text(text.replace(",", ";"))
    got, err = _json_run(tmp_path, "train.csv", "test.csv")
    assert "train.csv: fields separated by ';'." in err
    assert got == _json_run(folder, "train.csv", "test.csv")[0]


def test_run_help_says_test_file_needs_labels():
    proc = _run("run", "--help")
    assert "The TEST file needs its labels too" in proc.stdout
    for option in ("--id-col", "--drop-cols", "--format", "--out"):
        assert option in proc.stdout


def test_help_has_no_rst_markup():
    proc = _run("--help")
    assert proc.returncode == 0 and "``" not in proc.stdout and ":func:" not in proc.stdout
    assert "fastinfl run" in proc.stdout


# ------------------------------------------------------------- run: output
def test_out_json_inferred_and_self_influence_follows_its_extension(data):
    folder, *_ = data
    proc = _run("run", "train.npz", "test.npz", "--k", "2", "--out", "x.json", "--self-influence", "s.csv",
                "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads((folder / "x.json").read_text()), list)
    assert (folder / "s.csv").read_text().startswith("rank,train_index,label,self_influence\n")


def test_out_prints_summary_on_a_terminal(data, capsys, monkeypatch):
    folder, _, _, _, yte = data
    monkeypatch.setattr(fastinfl.cli.run, "_is_terminal", lambda stream: True)
    status, out, err = _main(["run", "train.npz", "test.npz", "--k", "2", "--out", "summary.csv"], folder,
                             capsys, monkeypatch)
    assert status == 0, err
    assert out == (f"fastinfl: wrote the 2 most helpful and 2 most harmful training points of {len(yte)} "
                   "test points to summary.csv (CSV).\n")
    monkeypatch.setattr(fastinfl.cli.run, "_is_terminal", lambda stream: False)  # a pipe or a file: silent
    assert _main(["run", "train.npz", "test.npz", "--out", "summary.csv"], folder, capsys, monkeypatch)[1] == ""


def test_broken_pipe_exits_quietly_with_0(tmp_path):
    """`fastinfl run ... | head -1`: the reader leaves after one line; the command exits 0, says nothing."""
    X, y, _ = fastinfl.datasets.make_logistic(800, 3, seed=2, dtype=np.float64)
    np.savez(tmp_path / "train.npz", X=X[:100], y=y[:100])
    np.savez(tmp_path / "test.npz", X=X[100:], y=y[100:])  # 700 x 2 x 10 rows: far more than a pipe holds
    proc = subprocess.Popen([*CLI, "run", "train.npz", "test.npz", "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("test_index,")
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 0 and NOTICE.sub("", err) == ""


# ------------------------------------------------------------------ bench, compile
def test_bench_help_describes_every_option_and_says_how_long():
    proc = _run("bench", "--help")
    assert proc.returncode == 0
    options = re.findall(r"^  (--\w+)[^\n]*?  +(\S.*)$", proc.stdout, flags=re.M)
    assert [o for o, _ in options] == ["--n", "--d", "--dtype", "--ops", "--budget"] or \
        {o for o, _ in options} >= {"--n", "--d", "--ops", "--budget"}
    for option in ("--n", "--d", "--dtype", "--ops", "--budget"):
        assert re.search(rf"^  {option} \S*( \S+)?\s+\S", proc.stdout, flags=re.M) or \
            re.search(rf"^  {option}.*\n {{10,}}\S", proc.stdout, flags=re.M), option
    assert "about 3 minutes" in proc.stdout


def test_bench_ops_are_the_report_cases():
    from bench.cases import CASES

    from fastinfl.cli.main import BENCH_OPS

    assert list(BENCH_OPS) == list(CASES)


def test_cold_cache_detected_without_compiling(tmp_path):
    """A fresh NUMBA_CACHE_DIR is cold for both dtypes; after a float64 call this process's is warm."""
    code = ("import json; from fastinfl.cli.compile import cold_dtypes; "
            "print(json.dumps(cold_dtypes(['float64', 'float32'])))")
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(tmp_path), FASTINFL_CACHE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(proc.stdout) == ["float64", "float32"], proc.stderr
    assert not list(tmp_path.rglob("*.nbi"))  # nothing was compiled to decide
    from fastinfl.cli.compile import cold_dtypes

    X, y, _ = fastinfl.datasets.make_logistic(300, 3, seed=0, dtype=np.float64)
    fastinfl.Influence(fastinfl.LogisticRegression().fit(X, y), X, y).top_k(X[:2], y[:2], 2)
    if fastinfl._config.CACHE:
        assert cold_dtypes(["float64"]) == []


def test_compile_notice_on_a_cold_cache(tmp_path):
    """The first run with an empty cache says it is compiling, before compiling (unless the package ships
    its kernels, as a wheel built by the project's build does: then it says nothing)."""
    np.savez(tmp_path / "d.npz", X=[[0.0], [1.0], [2.0], [3.0]], y=[0, 1, 0, 1])
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), FASTINFL_CACHE="1")
    code = ("import sys, fastinfl.cli.run as r; "
            "r.fit = lambda *a: sys.exit(3); "  # stop right after the notice: no compiling in this test
            "from fastinfl.kernels import _cache; print(_cache.shipped() is not None); "
            "from fastinfl.cli import main; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code, "run", "d.npz", "d.npz"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 3
    if proc.stdout == "True\n":  # an installed wheel ships its kernels: nothing to compile, no notice
        assert proc.stderr == ""
    else:  # a checkout or editable install: the empty cache is cold
        assert re.fullmatch(r"fastinfl: compiling kernels \(first run only, about \d+ s\)…\n", proc.stderr)
