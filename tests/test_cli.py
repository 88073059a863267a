"""The command line, run as a subprocess like a user would."""

import re
import subprocess
import sys

import pytest


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fastinfl.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_demo_prints_seed_table_and_agreement():
    proc = _run("demo", "--n", "3000", "--d", "5")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for solver in ("direct", "cg"):
        block = out.split(f"solver='{solver}':")[1]
        values = [float(v) for v in re.findall(r"\): (-?\d+\.\d{6})", block)[:3]]
        assert values == [0.000104, 0.228624, -0.225480], solver
    agree = float(re.search(r"Direct and CG agree to (\S+) ", out).group(1))
    assert agree < 1e-10
    assert "not a stationary point" in out
    assert "linearly separable" in out
    assert re.search(r"l2=1: w\*=0\.701613, b\*=-1\.449169", out)
    assert len(re.findall(r"test point \d \(y=[01]\): most helpful rows", out)) == 5


def test_usage_error_exit_status():
    proc = _run("no-such-command")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"]])
def test_help(args):
    proc = _run(*args)
    assert proc.returncode == 0 and "usage: fastinfl" in proc.stdout
