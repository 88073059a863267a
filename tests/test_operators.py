"""The operator layer: import rules, and one Ctrl-C / BLAS path for every public operation."""

import ast
import os
import pathlib
import signal
import threading
import time

import numpy as np
import pytest
from problems import make_problem

import fastinfl
from fastinfl.operators import policy

PACKAGE = pathlib.Path(fastinfl.__file__).parent


def _imports():
    """{module: set of fastinfl modules it imports} from the source (relative imports resolved)."""
    graph = {}
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = parts[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.level and not mod.startswith("fastinfl"):
                    continue
                # "from pkg import submodule" imports the submodule; "from mod import name", mod
                subs = {f"{mod}.{a.name}" for a in node.names} & modules
                deps.update(subs if len(subs) == len(node.names) else subs | {mod})
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("fastinfl"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_module_above_the_operator_layer_imports_a_kernel():
    graph = _imports()
    for module, deps in graph.items():
        if module.startswith(("fastinfl.kernels", "fastinfl.operators")):
            continue
        assert not {d for d in deps if d.startswith("fastinfl.kernels")}, module


def test_validation_and_config_import_neither_models_nor_kernels():
    graph = _imports()
    assert graph["fastinfl._config"] <= {"fastinfl"}, graph["fastinfl._config"]
    # _validation may read the tuning constants (SMALL_ARRAY), nothing else of the package
    assert graph["fastinfl._validation"] <= {"fastinfl", "fastinfl._config"}, graph["fastinfl._validation"]


def test_no_import_cycle():
    graph = _imports()
    graph = {m: {d for d in deps if d != "fastinfl"} for m, deps in graph.items()}  # the package itself
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in graph[m]:
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, m, d]))
            if d not in state:
                visit(d, [*path, m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.fixture(scope="module")
def data():
    X, y = make_problem(n=600, d=5, seed=4)
    return X, y, fastinfl.LogisticRegression(l2=1.0).fit(X, y)


def _operations(X, y, model):
    Xt, yt = X[:7], y[:7]

    def inf(solver="auto"):
        return fastinfl.Influence(model, X, y, solver=solver)

    def lazy_direct():
        # Built for CG (H not formed), then switched: the first direct solve forms H (a kernel pass).
        # With solver "direct" or "auto" H is formed in the constructor ("Influence()" above).
        i = inf("cg")
        i.solver = "direct"
        return i

    # each entry builds what it needs first, then returns the call that is interrupted
    return {
        "fit": lambda: lambda: fastinfl.LogisticRegression(l2=1.0).fit(X, y),
        "objective": lambda: lambda: model.objective(X, y),
        "predict_proba": lambda: lambda: model.predict_proba(X),
        "losses": lambda: lambda: model.losses(X, y),
        "Influence()": lambda: lambda: inf(),
        "hessian": lambda: inf("cg").hessian,
        "gradients": lambda: inf().gradients,
        "hvp": lambda: (lambda i: lambda: i.hvp(np.ones(6)))(inf()),
        "inverse_hvp cg": lambda: (lambda i: lambda: i.inverse_hvp(np.ones(6)))(inf("cg")),
        "inverse_hvp direct": lambda: (lambda i: lambda: i.inverse_hvp(np.ones(6)))(lazy_direct()),
        "s_test": lambda: (lambda i: lambda: i.s_test(Xt, yt))(inf("cg")),
        "influence": lambda: (lambda i: lambda: i.influence(Xt, yt))(inf()),
        "top_k": lambda: (lambda i: lambda: i.top_k(Xt, yt, k=3))(inf()),
        "params_change": lambda: (lambda i: lambda: i.params_change([1, 2]))(inf("cg")),
        "self_influence": lambda: (lambda i: lambda: i.self_influence([1, 2]))(inf("cg")),
        "leverage": lambda: (lambda i: lambda: i.leverage([1, 2]))(inf("cg")),
    }


OPERATIONS = ["fit", "objective", "predict_proba", "losses", "Influence()", "hessian", "gradients", "hvp",
              "inverse_hvp cg", "inverse_hvp direct", "s_test", "influence", "top_k", "params_change",
              "self_influence", "leverage"]


@pytest.mark.parametrize("name", OPERATIONS)
def test_every_operation_stops_on_sigint_through_the_one_policy(name, data, monkeypatch):
    """A real SIGINT during each operation's kernel: the kernel sees its stop flag, KeyboardInterrupt
    reaches the caller, and the same operation then runs normally."""
    X, y, model = data
    assert set(_operations(X, y, model)) == set(OPERATIONS)
    call = _operations(X, y, model)[name]()
    real_run = policy.run
    seen = {"calls": 0, "stopped": False}

    def slow_run(kernel, *args, work, parallel):
        def polling_kernel(*kernel_args):
            stop = kernel_args[-1]
            seen["calls"] += 1
            deadline = time.monotonic() + 10
            while not stop[0] and time.monotonic() < deadline:
                time.sleep(0.002)
            seen["stopped"] = bool(stop[0])
            return kernel(*kernel_args)

        return real_run(polling_kernel, *args, work=1 << 62, parallel=parallel)  # force the worker path

    monkeypatch.setattr(policy, "run", slow_run)
    # Python's own Ctrl-C handler, even where a shell started the tests in the background with
    # SIGINT ignored (no job control)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert seen["calls"] >= 1 and seen["stopped"], seen
    monkeypatch.setattr(policy, "run", real_run)
    _operations(X, y, model)[name]()()  # usable afterwards


def test_blas_is_single_threaded_exactly_while_a_parallel_pass_runs(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []

    def probe(stop):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

    before = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    # every library held to one thread (a single-threaded caller would stop NumPy's OpenBLAS instead:
    # tests/test_blas_quiesce.py)
    monkeypatch.setattr(policy, "QUIESCE_BLAS", False)
    policy.run(probe, work=0, parallel=True)
    policy.run(probe, work=0, parallel=False)
    assert seen[0] == {1} and seen[1] == before
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == before


def _private_members():
    """{module: private names it defines on its own objects} (``self._x = ...`` and ``def _x`` in a class)."""
    defined = {}
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in ast.walk(node):
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("_"):
                        names.add(item.name)
                    if (isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name)
                            and item.value.id == "self" and isinstance(item.ctx, ast.Store)):
                        names.add(item.attr)
        defined[path] = {n for n in names if n.startswith("_") and not n.startswith("__")}
    return defined


def test_no_module_reads_another_modules_private_members():
    """The private state and methods of a class (Influence's operator, curvature, solvers; a model's helpers)
    are read only in the module that defines the class: other modules use its public interface."""
    defined = _private_members()
    offences = []
    for path, own in defined.items():
        foreign = set().union(*(names for other, names in defined.items() if other != path)) - own
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name.split(".")[0] for node in ast.walk(tree)
                   if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}  # kernels._x is API
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in foreign
                    and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"} | modules)):
                offences.append(f"{path.relative_to(PACKAGE.parent)}: {ast.unparse(node)}")
    assert not offences, "\n".join(sorted(set(offences)))
