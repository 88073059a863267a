"""The kernel cache shipped with the package, `fastinfl compile`, and the compile notice.

Compiles are counted (cache misses of fastinfl's kernels, ``kernels._cache.compile_counts``), never
timed. The notice's estimate is forced high or low through ``_config.COMPILE_SECONDS`` in the child
so that no assertion depends on this machine's speed.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastinfl
from fastinfl.kernels import _cache

ROOT = Path(fastinfl.__file__).resolve().parents[1]
NOTICE = "fastinfl: compiling kernels for float64 data (first use only, about"


def _child(code, env=None, args=(), pythonpath=None, cwd=None):
    env = dict(os.environ, FASTINFL_CACHE="1", **(env or {}))
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


# A cheap first compile: one scalar helper, called from Python.
FIRST_COMPILE = """
import logging, sys
import fastinfl
from fastinfl import _config
from fastinfl.kernels import _cache, sigmoid
_config.COMPILE_SECONDS = {{"float64": {seconds}, "float32": {seconds}}}
records = []
handler = type("H", (logging.Handler,), {{"emit": lambda s, r: records.append(r)}})()
logging.getLogger("fastinfl").addHandler(handler)
logging.getLogger("fastinfl").setLevel(logging.INFO)
{setup}
sigmoid.expit(0.5); sigmoid.log1pexp(0.5)
print(len([r for r in records if r.getMessage().startswith({notice!r})]))
"""


@pytest.mark.parametrize("seconds, setup, env, interactive, logged, printed", [
    (1e4, "", {}, False, 1, False),  # a script: the logger only
    (1e4, "", {}, True, 1, True),  # python -i: the logger and one line on stderr
    (1e4, "", {"FASTINFL_COMPILE_NOTICE": "0"}, True, 0, False),
    (1e4, "fastinfl.set_compile_notice(False)", {}, True, 0, False),
    (1e4, "fastinfl.set_compile_notice(True)", {}, False, 1, True),
    (1e-9, "", {}, True, 0, False),  # an estimate under NOTICE_MIN_SECONDS: silent
])
def test_compile_notice(tmp_path, seconds, setup, env, interactive, logged, printed):
    code = FIRST_COMPILE.format(seconds=seconds, setup=setup, notice=NOTICE)
    proc = _child(code, env=dict(env, NUMBA_CACHE_DIR=str(tmp_path)), args=("-i",) if interactive else ())
    assert int(proc.stdout.split()[0]) == logged
    assert proc.stderr.count(NOTICE) == (1 if printed else 0), proc.stderr


def test_notice_estimate_scales_with_the_probe(monkeypatch):
    monkeypatch.setattr(_cache, "probe_seconds", lambda: 3 * fastinfl._config.COMPILE_PROBE_SECONDS)
    expected = 3 * fastinfl._config.COMPILE_SECONDS["float64"]
    assert _cache.estimate_seconds(["float64"]) == pytest.approx(expected)
    with pytest.raises(ValueError):
        fastinfl.set_compile_notice("loud")


COUNT = """
import json, sys
import fastinfl
from fastinfl.cli.compile import warm_up
from fastinfl.kernels import _cache
warm_up(["float64"], ["dense"])
print(json.dumps({"compiled": _cache.compile_counts(), "shipped": _cache.shipped() is not None,
                  "reason": _cache._shipped_reason, "file": fastinfl.__file__}))
"""


def _count(env, pythonpath=None, cwd=None):
    return json.loads(_child(COUNT, env=env, pythonpath=pythonpath, cwd=cwd).stdout.splitlines()[-1])


@pytest.mark.slow  # compiles the dense float64 kernels once (~20 s on 2 cores)
def test_second_process_after_fastinfl_compile_compiles_nothing(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "fastinfl.cli", "compile", "--dtypes", "float64", "--kinds",
                           "dense"], capture_output=True, text=True, env=dict(os.environ, **env), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "kernel signatures compiled" in proc.stderr
    assert _count(env)["compiled"] == {}


@pytest.mark.slow  # builds a shipped cache (the dense float64 kernels for x86-64-v3) in a copy of the package
@pytest.mark.skipif(not _cache.LOCATORS, reason="another Numba: no shipped cache")
def test_shipped_cache_serves_a_cold_process_and_a_source_change_falls_back(tmp_path, monkeypatch):
    from fastinfl.cli.compile import build_shipped

    tree = tmp_path / "site"
    shutil.copytree(ROOT / "fastinfl", tree / "fastinfl", ignore=shutil.ignore_patterns("__pycache__",
                                                                                       "_kernel_cache"))
    level = "x86-64-v3" if "avx2" in _cache._host()[1] else "generic"
    monkeypatch.setenv("PYTHONPATH", str(tree))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "build-user-cache"))
    build_shipped(str(tree / "fastinfl"), [level], compile_args=["--dtypes", "float64", "--kinds", "dense"])
    manifest = json.loads((tree / "fastinfl" / "_kernel_cache" / level / "manifest.json").read_text())
    assert manifest["cpu_name"] == level and manifest["stamp"]

    user = {"NUMBA_CACHE_DIR": str(tmp_path / "user-cache")}  # empty: a fresh installation's user
    out = _count(user, pythonpath=tree, cwd=tmp_path)
    assert out["file"].startswith(str(tree)) and out["shipped"], out["reason"]
    assert out["compiled"] == {}
    assert not list((tmp_path / "user-cache").rglob("*.nbi"))  # nothing compiled, nothing written

    with open(tree / "fastinfl" / "kernels" / "sigmoid.py", "a") as f:
        f.write("\n# an edit\n")
    out = _count(user, pythonpath=tree, cwd=tmp_path)
    assert not out["shipped"] and "other kernel sources" in out["reason"]
    assert sum(out["compiled"].values()) > 10  # native compiles into the user's cache
