"""The command line's synopsis (docs/cli.md) matches every command's parser (--help), its CSV example runs as
written, the harmful-points example (docs/concepts.md) prints what it shows, and extras install from a checkout
(the README's set-up section)."""

import argparse
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"  # the synopsis and the CSV example (moved from the README, issue 27)
CONCEPTS = ROOT / "docs" / "concepts.md"  # why harmful points often share the test label


def _parsers():
    """{command: its argparse parser}, as `fastinfl COMMAND --help` prints them."""
    from fastinfl import serving
    from fastinfl.cli import compile as compile_cmd
    from fastinfl.cli.main import _parser

    parser = _parser()[0]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parsers = dict(sub.choices)
    parsers["serve"] = serving._parser()  # `fastinfl serve` and `compile` hand over to their own parsers
    parsers["compile"] = compile_cmd._parser()
    return parsers


def _synopsis():
    """{command: its synopsis text} from docs/cli.md's block under "## Synopsis"."""
    text = CLI_DOC.read_text()
    section = text[text.index("## Synopsis\n"):]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    entries = {}
    for line in block.splitlines():
        m = re.match(r"fastinfl (\w+)", line)
        if m:
            command = m.group(1)
            entries[command] = line
        else:
            entries[command] += " " + line.strip()
    return entries


def test_the_synopsis_names_every_command_and_option_of_help():
    parsers, synopsis = _parsers(), _synopsis()
    assert set(synopsis) == set(parsers), "commands: README synopsis vs fastinfl --help"
    for command, parser in parsers.items():
        text = synopsis[command]
        shown = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
        options = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
                   and "--help" not in a.option_strings]
        for action in options:
            primary = action.option_strings[0]
            assert primary in shown, f"fastinfl {command}: {primary} is in --help but not in the README synopsis"
            if action.choices:
                choices = "|".join(map(str, action.choices))
                assert f"{primary} {choices}" in text, f"fastinfl {command} {primary}: choices {choices}"
        known = {s for a in options for s in a.option_strings}
        assert shown <= known, f"fastinfl {command}: the README synopsis has {sorted(shown - known)}"
        for positional in (a for a in parser._actions if not a.option_strings and a.metavar):
            assert positional.metavar in text, f"fastinfl {command}: {positional.metavar}"
    # the list: serve, --scheduler, lissa and arnoldi were missing
    assert "fastinfl serve STATE" in synopsis["serve"] and "--scheduler" in synopsis["run"]
    assert "auto|direct|cg|lissa|arnoldi" in synopsis["run"]


def test_extras_install_from_a_checkout_never_as_from_pypi():
    """No `pip install fastinfl[...]` (or 'fastinfl[...]') anywhere: fastinfl is not on PyPI."""
    bad = []
    for path in [README, *ROOT.glob("docs/*.md"), *ROOT.glob("fastinfl/**/*.py"), *ROOT.glob("bench/*.py")]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"fastinfl\[", line):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert bad == []
    text = README.read_text()
    assert "it is not on PyPI" in text and "pip install '.[serve]'" in text and "pip install '.[dask]'" in text


def _block(marker):
    return re.search(rf"<!-- {marker}.*?-->\n```bash\n(.*?)```", CLI_DOC.read_text(), re.S).group(1)


def test_the_csv_example_runs_as_written(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "-c", "set -e\n" + _block("cli-example")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "test_index,test_label,test_loss,kind,rank,train_index,influence,loo_change"
    assert len(lines) == 1 + 2 * 2 * 2  # two test rows, 2 helpful and 2 harmful each
    assert "new.csv has no labels" in proc.stderr
    # and the error shown without --label, word for word
    shown = re.search(r"because the last column is not a two-valued label:\n\n```text\n(.*?)\n```",
                      CLI_DOC.read_text(), re.S).group(1)
    proc = subprocess.run(["bash", "-c", "fastinfl run people.csv new.csv --k 2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == shown


def test_the_harmful_points_example_prints_what_the_readme_shows():
    text = CONCEPTS.read_text()
    section = text[text.index("## Why harmful training points often share"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```python\n.*?```\n\n```text\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == shown
    assert "labels: [1." in shown  # the most harmful point shares the test point's label (1)


@pytest.mark.parametrize("command", ["run", "serve", "robustness", "bench", "demo", "compile"])
def test_help_runs(command, capsys):
    from fastinfl.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: fastinfl {command}" in capsys.readouterr().out
