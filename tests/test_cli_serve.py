"""``fastinfl serve`` from the command line: its entry point, help, file errors, and the serving page's example."""

import re

import pytest

from fastinfl.cli import main


def test_serve_help_through_the_fastinfl_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    assert "usage: fastinfl serve" in capsys.readouterr().out


def test_serve_with_a_missing_state_file_fails_cleanly(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "train.npz", X=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    assert main(["serve", tmp_path / "missing.npz", "--train", tmp_path / "train.npz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastinfl serve: error:") and "missing.npz" in err


def test_every_serve_option_states_its_default(capsys):
    from fastinfl.serving import _parser

    parser = _parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 15
    missing = [a.option_strings[0] for a in options if not re.search(r"default: |; required$", a.help)]
    assert missing == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_serve_with_a_corrupt_state_file_exits_2_with_one_line(tmp_path, capsys, damage):
    import numpy as np

    import fastinfl
    from fastinfl.serving import serve_main

    X, y, _ = fastinfl.datasets.make_logistic(200, 3, seed=0)
    state = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(X, y), X, y).save(tmp_path / "state.npz")
    np.savez(tmp_path / "train.npz", X=X, y=y)
    with open(state, "rb") as f:
        data = f.read()
    bad = {"garbage": b"not a zip file at all", "truncated": data[: len(data) // 2], "empty": b""}[damage]
    (tmp_path / "bad.npz").write_bytes(bad)
    assert serve_main([str(tmp_path / "bad.npz"), "--train", str(tmp_path / "train.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastinfl serve: error:") and err.count("\n") == 1 and "bad.npz" in err, err


def test_the_readme_serve_example_runs_as_written(tmp_path):
    """The serving page's block (docs/serving.md), from a CSV to a curl answer, with only the port changed."""
    import json
    import os
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("starlette")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    readme = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    block = re.search(r"<!-- serve-example.*?-->\n```bash\n(.*?)```", readme, re.S).group(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    assert block.count("8000") == 4  # the port and the healthz and two top_k URLs: all replaced below
    script = block.replace("8000", port) + "kill $(jobs -p)\nwait\n"
    # python: the interpreter running the tests (and its fastinfl); the README's waits are bounded
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    given, predicted = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert given["y"] == [1] and len(given["helpful_idx"][0]) == 3 and len(given["harmful"][0]) == 3, proc.stdout
    import numpy as np

    import fastinfl

    data = np.loadtxt(tmp_path / "train.csv", delimiter=",", skiprows=1)
    model = fastinfl.LogisticRegression(l2=1.0).fit(data[:, :-1], data[:, -1])
    x = np.array([[0.5, -1.0, 2.0]])
    assert predicted["y"] == np.asarray(model.predict(x)).astype(int).tolist()
    inf = fastinfl.Influence(model, data[:, :-1], data[:, -1])
    assert predicted["harmful_idx"] == inf.top_k(x, np.asarray(model.predict(x), float), 3).harmful_idx.tolist()
    assert (f"fastinfl serve: listening on http://127.0.0.1:{port} (model: 1000 rows, 3 features, classes 0, 1)"
            in proc.stdout), proc.stdout
    assert proc.stderr.count('"POST /v1/top_k" 200') == 2, proc.stderr  # one access-log line per request


@pytest.mark.parametrize("option, value, message", [
    ("--port", "70000", "argument --port: must be between 0 and 65535; got 70000"),
    ("--max-batch", "0", "argument --max-batch: must be >= 1; got 0"),
    ("--request-timeout", "nan", "argument --request-timeout: must be >= 0.001; got nan"),
    ("--max-body", "1e6", "argument --max-body: not an integer: '1e6'"),
])
def test_bad_serve_options_are_usage_errors(capsys, option, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "state.npz", "--train", "train.npz", option, value])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"fastinfl serve: error: {message}"
