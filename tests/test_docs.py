"""The documentation site: every public name has an API page, the guide's code runs, one build command."""

import inspect
import pathlib
import re

import pytest

import fastinfl

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The user-guide pages whose code blocks are executed (the README's are run by test_readme.py).
GUIDE = ["getting_started", "concepts", "solvers", "data", "models", "accuracy_limits", "accuracy", "serving",
         "performance"]


def documented():
    """{module: set of names} listed in docs/api.rst's autosummary blocks."""
    out, module = {}, None
    for line in (DOCS / "api.rst").read_text().splitlines():
        m = re.match(r"\.\. currentmodule:: (\S+)", line)
        if m:
            module = m.group(1)
        elif re.match(r"   [A-Za-z_]\w*$", line):
            out.setdefault(module, set()).add(line.strip())
    return out


def public_names(module):
    """The module's __all__, else the functions and classes it defines without a leading underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__]
    return {n for n in names if not inspect.ismodule(getattr(module, n)) and not n.isupper()}


@pytest.mark.parametrize("name", ["fastinfl", "fastinfl.robustness", "fastinfl.datasets",
                                  "fastinfl.reference", "fastinfl.serving", "fastinfl.io_sparse",
                                  "fastinfl.io_dask"])
def test_api_reference_lists_every_public_name(name):
    import importlib

    module = importlib.import_module(name)
    missing = public_names(module) - documented().get(name, set())
    assert not missing, f"docs/api.rst has no entry for {sorted(missing)} of {name}"


def test_every_public_submodule_of_fastinfl_all_has_a_section():
    modules = {n for n in fastinfl.__all__ if inspect.ismodule(getattr(fastinfl, n))}
    assert modules <= {m.split(".")[-1] for m in documented() if m.startswith("fastinfl.")}


def test_guide_pages_are_in_the_toctree():
    toctree = (DOCS / "user_guide.md").read_text()
    for page in GUIDE[1:] + ["cli", "conclusions", "architecture", "validation"]:
        assert re.search(rf"^{page}$", toctree, flags=re.M), page


def test_the_docs_build_command_is_in_the_readme_and_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "sphinx-build -W -n --keep-going -b html docs docs/_build/html"
    assert f"pip install '.[docs]' && {command}" in readme
    installed = re.search(r"pip install -q '\.\[([a-z,]+)\]'", ci)  # one build for every extra CI needs
    assert command in ci and installed and "docs" in installed.group(1).split(",")


def guide_blocks():
    for page in GUIDE:
        text = (DOCS / f"{page}.md").read_text()
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S)):
            yield pytest.param(page, block, id=f"{page}-{i}")


@pytest.mark.slow  # seconds to tens of seconds each (Dask, digits refits, cold compiles): the slow tier
@pytest.mark.parametrize("page, block", list(guide_blocks()))
def test_guide_python_blocks_run(page, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    exec(compile(block, str(DOCS / f"{page}.md"), "exec"), {})
