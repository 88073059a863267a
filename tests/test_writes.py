"""Every write is atomic: on an error, a full disk or Ctrl-C the previous file is intact and nothing is left.

Full disk: ``resource.setrlimit(RLIMIT_FSIZE)`` in a subprocess (Python ignores SIGXFSZ, so a write
past the limit fails with EFBIG, as on a full disk). Ctrl-C: a real SIGINT sent to a ``fastinfl run``
subprocess while it writes its output (its CSV writer slowed down so that the signal lands mid-write).
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from child_process import default_sigint

import fastinfl
from fastinfl._atomic import WriteError, atomic_write

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits and signals")


def _leftovers(folder, keep):
    """Files in ``folder`` other than ``keep`` (temporary files of an interrupted write would show here)."""
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if p.name not in keep)


def test_atomic_write_keeps_previous_file_on_an_exception(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old content\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert target.read_text() == "old content\n"
    assert _leftovers(tmp_path, {"out.csv"}) == []
    with atomic_write(target, "w") as f:
        f.write("new\n")
    assert target.read_text() == "new\n" and _leftovers(tmp_path, {"out.csv"}) == []


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    with atomic_write(target, "w") as f:
        f.write("new\n")
    assert (os.stat(target).st_mode & 0o777) == 0o640


def test_atomic_write_names_the_file_when_the_folder_is_missing(tmp_path):
    with pytest.raises(WriteError, match=r"cannot write .*nofolder/x.csv: No such file or directory"):
        with atomic_write(tmp_path / "nofolder" / "x.csv", "w"):
            pass


def _limited(script, limit, cwd):
    """Run ``script`` in a subprocess whose file-size limit is ``limit`` bytes from the line '# LIMIT' on."""
    before, after = textwrap.dedent(script).split("# LIMIT\n")
    code = (before + "import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, "
            f"({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n" + after)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_save_on_a_full_disk_keeps_the_previous_state(tmp_path):
    """Issue 25 item 4: inf.save() over a good state under ``ulimit -f`` used to leave a truncated file."""
    X, y, _ = fastinfl.datasets.make_logistic(2000, 60, seed=0, dtype=np.float64)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="direct")
    inf.s_test(X[:2], y[:2])
    good = inf.save(tmp_path / "state.npz")
    before = good.read_bytes()
    assert len(before) > 30_000  # the 61 x 61 factor alone is 29,768 bytes
    proc = _limited("""
        import numpy as np, fastinfl
        X, y = np.load("X.npy"), np.load("y.npy")
        inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=2.0).fit(X, y), X, y, solver="direct")
        inf.s_test(X[:2], y[:2])
        # LIMIT
        try:
            inf.save("state.npz")
        except OSError as exc:
            print(type(exc).__name__, exc.errno, exc)
        """, 16_384, tmp_path)
    assert proc.returncode == 0, proc.stderr
    name, errno, message = proc.stdout.strip().split(" ", 2)
    assert (name, int(errno)) == ("WriteError", 27)  # EFBIG
    assert message == "cannot write state.npz: File too large; the previous file is unchanged."
    assert good.read_bytes() == before
    assert _leftovers(tmp_path, {"state.npz", "X.npy", "y.npy"}) == []
    loaded = fastinfl.Influence.load(good, X, y)  # still the l2 = 1 state
    assert loaded.model.l2 == 1.0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with train.csv (4,000 rows) and test.csv (30 rows), 4 features and a label column."""
    folder = tmp_path_factory.mktemp("writes")
    X, y, _ = fastinfl.datasets.make_logistic(4030, 4, seed=2, dtype=np.float64)
    for name, rows in (("train.csv", slice(0, 4000)), ("test.csv", slice(4000, 4030))):
        table = np.column_stack([X[rows], y[rows]])
        np.savetxt(folder / name, table, delimiter=",", header="a,b,c,d,label", comments="", fmt="%.17g")
    return folder


def _cli(args, prefix=""):
    """The command line of ``fastinfl ARGS`` in a subprocess, after the Python code ``prefix``."""
    code = prefix + "import sys\nfrom fastinfl.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", code, *args]


def test_run_out_on_a_full_disk_keeps_the_previous_output(files, tmp_path):
    """Issue 25 item 4: `fastinfl run --out` on a full disk replaced the output with a CSV cut mid-row."""
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    first = subprocess.run(_cli(["run", "train.csv", "test.csv", "--k", "2", "--out", "out.csv", "--quiet"]),
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "out.csv").read_bytes()
    limit = (tmp_path / "train.csv").stat().st_size + 10_000  # the inputs are read, not written
    proc = _limited("""
        import sys
        from fastinfl.cli import main
        # LIMIT
        sys.exit(main(["run", "train.csv", "test.csv", "--k", "400", "--out", "out.csv", "--quiet"]))
        """, min(limit, 20_000), tmp_path)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr == ("fastinfl: error: cannot write out.csv: File too large; the previous file is "
                           "unchanged.\n")
    assert (tmp_path / "out.csv").read_bytes() == before
    assert _leftovers(tmp_path, {"out.csv", "train.csv", "test.csv"}) == []


_SLOW_CSV = """
import csv as _csv, time
import fastinfl.cli.output as _output

class _SlowWriter:
    def __init__(self, f, **kw):
        self._w = _csv.writer(f, **kw)
        self.writerow = self._w.writerow
    def writerows(self, rows):
        for j, row in enumerate(rows):
            self._w.writerow(row)
            if j % 100 == 99:
                time.sleep(0.02)

class _SlowCSV:
    writer = _SlowWriter

_output.csv = _SlowCSV
"""


def test_sigint_while_writing_self_influence_keeps_the_previous_file(files, tmp_path):
    """Issue 25 item 4: Ctrl-C while --self-influence was written left a well-formed but truncated CSV."""
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    previous = "rank,train_index,label,self_influence\nprevious run\n"
    (tmp_path / "self.csv").write_text(previous)
    cmd = _cli(["run", "train.csv", "test.csv", "--k", "1", "--out", "top.csv", "--quiet",
                "--self-influence", "self.csv", "--self-k", "0"], prefix=_SLOW_CSV)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 240
    temp = None
    while time.monotonic() < deadline and proc.poll() is None:  # wait for the self-influence temporary file
        temp = next((p for p in tmp_path.iterdir() if p.name.startswith(".self.csv.")), None)
        if temp is not None and temp.exists() and temp.stat().st_size > 1000:
            break
        time.sleep(0.005)
    assert temp is not None and proc.poll() is None, "the output was not being written when checked"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "fastinfl: interrupted\n"
    assert (tmp_path / "self.csv").read_text() == previous
    assert _leftovers(tmp_path, {"self.csv", "top.csv", "train.csv", "test.csv"}) == []


@pytest.mark.parametrize("option", ["--out", "--self-influence"])
def test_output_naming_an_input_is_refused(files, tmp_path, option):
    """Issue 25 item 4: `--out` naming the test input silently overwrote it. Also under another name."""
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    os.symlink(tmp_path / "test.csv", tmp_path / "alias.csv")
    before = (tmp_path / "test.csv").read_bytes()
    for target in ("test.csv", "./alias.csv"):
        args = ["run", "train.csv", "test.csv", "--quiet", option, target]
        if option != "--out":
            args += ["--out", "top.csv"]
        proc = subprocess.run(_cli(args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        assert proc.stderr == (f"fastinfl: error: {option} {target} is the input file test.csv (TEST): "
                               "refusing to overwrite an input; write the output to another file.\n")
        assert (tmp_path / "test.csv").read_bytes() == before
    assert _leftovers(tmp_path, {"train.csv", "test.csv", "alias.csv"}) == []


def test_two_outputs_naming_one_file_are_refused(files, tmp_path):
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    proc = subprocess.run(_cli(["run", "train.csv", "test.csv", "--quiet", "--out", "o.csv",
                                "--self-influence", "o.csv"]), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr == ("fastinfl: error: --self-influence o.csv and --out o.csv are the same file: give "
                           "each output its own name.\n")


def test_plot_error_keeps_the_previous_plot(files, tmp_path, monkeypatch):
    """A failing savefig (an unknown image format) leaves the previous file as it was and no temporary."""
    pytest.importorskip("matplotlib")
    from fastinfl.cli import main

    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    (tmp_path / "plot.xyz").write_bytes(b"previous plot")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "train.csv", "test.csv", "--k", "2", "--quiet", "--out", "top.csv",
                 "--plot", "plot.xyz"]) == 1
    assert (tmp_path / "plot.xyz").read_bytes() == b"previous plot"
    assert _leftovers(tmp_path, {"train.csv", "test.csv", "top.csv", "plot.xyz"}) == []
