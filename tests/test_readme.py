"""The README's Python code blocks run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python code block"
    for block in blocks:
        namespace = {}
        exec(compile(block, str(README), "exec"), namespace)
        if "actual" in namespace:  # the quick start: Newton-corrected prediction tracks the refit
            pred, actual = namespace["pred"], namespace["actual"]
            assert pred.shape == actual.shape == (5,)
            assert abs(pred - actual).max() < 0.5 * abs(actual).max()


def test_readme_quick_start_needs_only_fastinfl_and_prints_both_changes():
    """After the README's `pip install .` alone: no scikit-learn (made unimportable here)."""
    import subprocess
    import sys

    block = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    code = "import sys; sys.modules['sklearn'] = None; sys.modules['pandas'] = None\n" + block
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "training row   influence   predicted change   actual change (refit)"
    table = [[float(v) for v in line.split()] for line in lines[1:]]
    assert len(table) == 5
    for _, influence, predicted, actual in table:
        assert influence > 0 and predicted < 0 and actual < 0
        assert abs(predicted - actual) < 0.1 * abs(actual)


def test_readme_commands_are_the_ci_commands():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install '.[test]' && pytest" in text
    installed = re.search(r"pip install -q '\.\[([a-z,]+)\]'", ci)  # one build for every extra CI needs
    assert installed and "test" in installed.group(1).split(",") and "\npytest " in ci
    assert "\npytest -m slow" in ci  # CI runs the slow tier too
    assert "pip install . && fastinfl demo" in text


@pytest.mark.slow  # the 10^6-row demo: about a minute
def test_readme_main_command_runs_as_written():
    """`fastinfl demo` with its defaults (10^6 x 50 synthetic rows): the README's main job."""
    import shutil
    import subprocess
    import sys

    assert "&& fastinfl demo\n" in README.read_text()
    exe = shutil.which("fastinfl")
    cmd = [exe, "demo", "--quiet"] if exe else [sys.executable, "-m", "fastinfl.cli", "demo", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Training point 1 (x=1.0, y=0): 0.228624" in proc.stdout
    assert "1,000,000 training and 1,000 test points, 50 features" in proc.stdout
    assert "all 10 among the" in proc.stdout  # self-influence ranks every planted mislabel
    assert "actual change (refit)" in proc.stdout
