"""Compiling the kernels ahead of use: the warm-up workloads, ``fastinfl compile``, the shipped cache.

``WORKLOADS`` are the user-level calls, through the public API, on small data
of each dtype: every kernel signature they compile is one a user's job needs.
``fastinfl compile`` runs them so that later processes load every kernel from
the cache (a service container compiles at image build); the package build
(setup.py) runs them in a child process targeting a portable CPU level and
ships the result (``kernels/_cache.py``). ``bench.compile_time --per-call``
counts what each step compiles.

The command line's cold-cache notice: :func:`cold_dtypes` decides from the
cache index files (the user's and the shipped one), without compiling, in a few
milliseconds: a kernel is *ready* for a dtype when an index it would read holds
a signature with a 2-D array of that dtype, or holds signatures but none with
a 2-D float array (kernels that never see X). The cache is *cold* when fewer
than half of the core kernels (CORE_MODULES) are ready.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# The kernels every binary run needs; the multinomial, sparse and GPU kernels are compiled only by
# runs that use them, so counting them would call a warm cache cold (or the reverse).
CORE_MODULES = ("fastinfl.kernels.dense", "fastinfl.kernels.cg", "fastinfl.kernels.sigmoid",
                "fastinfl.kernels.blas")
DTYPES = ("float64", "float32")
KINDS = ("dense", "multinomial", "csr")


# ------------------------------------------------------------------ the warm-up workloads
# Rows of the warm-up data: X (and its nonzeros) above _config.SMALL_ARRAY values, so that the
# validation's parallel finiteness kernel runs too; small enough that every step takes milliseconds.
ROWS = 2000


def _dense(state, dtype):
    import fastinfl

    X, y, _ = fastinfl.datasets.make_logistic(ROWS, 6, seed=0, dtype=dtype)
    state.update(X=X, y=y, Xt=X[:4], yt=y[:4], groups=[[0, 1], [2, 3, 4]])


def _fit(s):
    import fastinfl

    s["model"] = fastinfl.LogisticRegression(l2=1.0).fit(s["X"], s["y"])
    s["model"].score(s["X"], s["y"])


def _influence_object(s):
    import fastinfl

    s["inf"] = fastinfl.Influence(s["model"], s["X"], s["y"])


def _cg(s):
    import fastinfl

    fastinfl.Influence(s["model"], s["X"], s["y"], solver="cg").influence(s["Xt"], s["yt"])


def _read_only(s):
    """The same on a read-only X (a memory map opened with mode "r"): Numba types it apart."""
    import fastinfl

    X = s["X"].copy()
    X.setflags(write=False)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, s["y"])
    inf = fastinfl.Influence(model, X, s["y"])
    inf.influence(X[:4], s["yt"])
    inf.top_k(X[:4], s["yt"], 3)
    fastinfl.Influence(model, X, s["y"], solver="cg").influence(X[:4], s["yt"])


def _poisson(s):
    """PoissonRegression on the same X (counts as labels): the Poisson loss's kernels."""
    import numpy as np

    import fastinfl

    counts = np.random.default_rng(0).poisson(1.0, s["X"].shape[0]).astype(np.float64)
    model = fastinfl.PoissonRegression(l2=1.0).fit(s["X"], counts)
    inf = fastinfl.Influence(model, s["X"], counts)
    inf.influence(s["Xt"], counts[:4])
    inf.top_k(s["Xt"], counts[:4], 3)
    inf.self_influence()
    fastinfl.Influence(model, s["X"], counts, solver="cg").influence(s["Xt"], counts[:4])


def _iterative(s):
    import fastinfl

    for solver in ("lissa", "arnoldi"):
        fastinfl.Influence(s["model"], s["X"], s["y"], solver=solver).influence(s["Xt"], s["yt"])


def _multinomial(state, dtype):
    import numpy as np

    import fastinfl

    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, 5)).astype(dtype)
    y = np.argmax(X[:, :3] + rng.standard_normal((ROWS, 3)), axis=1)
    model = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    inf.influence(X[:4], y[:4])
    inf.top_k(X[:4], y[:4], 3)
    inf.self_influence()
    inf.loo_change(X[:4], y[:4])
    fastinfl.Influence(model, X, y, solver="cg").influence(X[:4], y[:4])


def _csr(state, dtype):
    import numpy as np

    import fastinfl

    X, y, _ = fastinfl.datasets.make_logistic(ROWS, 20, seed=0, dtype=dtype, density=0.2)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    inf.influence(X[:4], y[:4])
    inf.top_k(X[:4], y[:4], 3)
    inf.self_influence()
    inf.loo_change(X[:4], y[:4])
    fastinfl.Influence(model, X, y, solver="cg").influence(X[:4], y[:4])
    y3 = np.asarray(X[:, :3].toarray().argmax(axis=1))  # three classes: the multinomial model on CSR
    model = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y3)
    inf = fastinfl.Influence(model, X, y3)
    inf.influence(X[:4], y3[:4])
    inf.top_k(X[:4], y3[:4], 3)


# (kind, step name, function of the state dict); each kind's first step makes its data.
WORKLOADS = (
    ("dense", "data", None),
    ("dense", "fit", _fit),
    ("dense", "Influence", _influence_object),
    ("dense", "influence", lambda s: s["inf"].influence(s["Xt"], s["yt"])),
    ("dense", "top_k", lambda s: s["inf"].top_k(s["Xt"], s["yt"], 3)),
    ("dense", "self_influence", lambda s: s["inf"].self_influence()),
    ("dense", "loo_change", lambda s: s["inf"].loo_change(s["Xt"], s["yt"])),
    ("dense", "group_change", lambda s: s["inf"].group_change(s["Xt"], s["yt"], s["groups"])),
    ("dense", "losses", lambda s: s["model"].losses(s["Xt"], s["yt"])),
    ("dense", "solver cg", _cg),
    ("dense", "solvers lissa, arnoldi", _iterative),
    ("dense", "read-only X (fit, Influence, influence, top_k, cg)", _read_only),
    ("dense", "Poisson (fit, Influence, influence, top_k, self, cg)", _poisson),
    ("multinomial", "multinomial (fit, Influence, influence, top_k, self, loo, cg)", None),
    ("csr", "CSR (fit, Influence, influence, top_k, self, loo, cg; multinomial fit, influence, top_k)", None),
)
_MAKERS = {"dense": _dense, "multinomial": _multinomial, "csr": _csr}


def warm_up(dtypes=DTYPES, kinds=KINDS, step=None):
    """Run the workloads of ``kinds`` on every dtype; ``step(kind, name, dtype, seconds)`` after each."""
    import warnings

    for dtype in dtypes:
        for kind in kinds:
            state = {}
            for k, name, fn in WORKLOADS:
                if k != kind:
                    continue
                t = time.perf_counter()
                with warnings.catch_warnings():  # tiny data: convergence and accuracy notes are expected
                    warnings.simplefilter("ignore")
                    if fn is None:
                        _MAKERS[kind](state, dtype)
                    else:
                        fn(state)
                if step is not None:
                    step(kind, name, dtype, time.perf_counter() - t)


# ------------------------------------------------------------------ cold-cache detection and notice
def _dispatchers():
    """The core kernels (``_config.KERNELS`` of CORE_MODULES) with fastinfl's on-disk cache."""
    from .. import _config

    return [d for d in _config.KERNELS if d.py_func.__module__ in CORE_MODULES
            and hasattr(getattr(d, "_cache", None), "cached_signatures")]


def cold_dtypes(dtypes):
    """The dtypes (names, e.g. "float32") among ``dtypes`` for which the kernel cache is cold."""
    import fastinfl.influence  # noqa: F401  (loads every kernel module)
    import fastinfl.model  # noqa: F401

    kernels = [d._cache.cached_signatures() for d in _dispatchers()]
    if not kernels:  # FASTINFL_CACHE=0: nothing is cached, every process compiles
        return list(dtypes)
    cold = []
    for dtype in dtypes:
        ready = sum(1 for sigs in kernels if sigs and (
            any(f"array({dtype}, 2d" in s for s in sigs)
            or not any("array(float32, 2d" in s or "array(float64, 2d" in s for s in sigs)))
        if ready < len(kernels) / 2:
            cold.append(dtype)
    return cold


def notice(dtypes, quiet=False, file=None):
    """Print "compiling kernels (first run only, about N s)..." on stderr when the cache is cold for
    any of ``dtypes``, N scaled from a probe compile on this machine; the library's own notice then
    stays silent. Returns the estimate in seconds (0 when warm)."""
    from ..operators.policy import kernel_cache as _cache

    cold = cold_dtypes(dtypes)
    if not cold:
        return 0
    seconds = _cache.estimate_seconds(cold)
    if quiet:
        _cache.set_compile_notice(False)
    else:
        _cache.announce(seconds, stderr=file or sys.stderr)
    return seconds


# ------------------------------------------------------------------ fastinfl compile, the shipped cache
def _parser():
    """The parser of ``fastinfl compile`` (also read by the README synopsis test)."""
    parser = argparse.ArgumentParser(
        prog="fastinfl compile",
        description="Compile every kernel into Numba's cache (NUMBA_CACHE_DIR, else __pycache__ beside "
                    "the installed package, else the user-wide cache) by running each operation once "
                    "on small data, so that later processes load them instead of compiling; run it "
                    "where the service will run (a container's image build). Kernels already in the "
                    "cache, or in the cache shipped with the package, load in milliseconds.")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help=f"comma-separated dtypes of X to compile for (default {','.join(DTYPES)})")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated kinds of data/model (default {','.join(KINDS)})")
    parser.add_argument("--quiet", action="store_true", help="no line per step")
    parser.add_argument("--manifest", metavar="FOLDER", help=argparse.SUPPRESS)  # the package build
    return parser


def compile_main(argv):
    """``fastinfl compile``: run the warm-up workloads so that later processes compile nothing."""
    parser = _parser()
    args = parser.parse_args(argv)
    dtypes, kinds = args.dtypes.split(","), args.kinds.split(",")
    for value, allowed, name in ((dtypes, DTYPES, "--dtypes"), (kinds, KINDS, "--kinds")):
        if set(value) - set(allowed):
            parser.error(f"{name}: choose from {', '.join(allowed)}; got {','.join(value)}")
    from ..operators.policy import kernel_cache as _cache

    _cache.set_compile_notice(False)
    t0 = time.perf_counter()

    def step(kind, name, dtype, seconds):
        if not args.quiet:
            print(f"fastinfl compile: {dtype} {name}: {seconds:.1f} s", file=sys.stderr, flush=True)

    warm_up(dtypes, kinds, step)
    counts = _cache.compile_counts()
    print(f"fastinfl compile: {sum(counts.values())} kernel signatures compiled, "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.manifest:
        write_manifest(args.manifest, compile_seconds=time.perf_counter() - t0)
    return 0


def write_manifest(folder, **extra):
    """The shipped cache's manifest.json in ``folder``: what a process must match to load it."""
    import numba
    from numba.core.registry import cpu_target

    from ..operators.policy import kernel_cache as _cache

    triple, cpu_name, features = cpu_target.target_context.codegen().magic_tuple()
    manifest = dict(stamp=_cache.stamp_hex(), numba=numba.__version__, python=sys.implementation.cache_tag,
                    triple=triple, cpu_name=cpu_name, features=features,
                    requires=list(_cache.LEVELS[cpu_name]), **extra)
    with open(os.path.join(folder, _cache.MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def build_shipped(package_dir, levels=("x86-64-v3",), compile_args=()):
    """Compile the shipped cache of the package at ``package_dir`` (a build tree) for each CPU level.

    One child process per level, importing fastinfl from the build tree, with Numba targeting the
    level (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES="") and caching into a temporary NUMBA_CACHE_DIR; the
    kernels' files then go flat into ``package_dir/_kernel_cache/<level>`` beside the manifest.
    ``compile_args``: more arguments of ``fastinfl compile`` (default: every dtype and kind).
    """
    import shutil

    root = os.path.dirname(os.path.abspath(package_dir))
    for level in levels:
        out = os.path.join(package_dir, "_kernel_cache", level)
        shutil.rmtree(out, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="fastinfl-build-cache-") as tmp:
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp, NUMBA_CPU_NAME=level, NUMBA_CPU_FEATURES="",
                       FASTINFL_CACHE="1", PYTHONDONTWRITEBYTECODE="1",
                       PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fastinfl.cli", "compile", "--quiet", "--manifest", tmp,
                            *compile_args],
                           env=env, cwd=tmp, check=True)
            kernels = [d for d in os.listdir(tmp) if d.startswith("kernels_")]
            if len(kernels) != 1:
                raise RuntimeError(f"expected one kernel cache folder in {tmp}, found {kernels}")
            shutil.copytree(os.path.join(tmp, kernels[0]), out)
            shutil.copy(os.path.join(tmp, "manifest.json"), out)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"fastinfl: kernel cache for {level} built in {time.perf_counter() - t:.0f} s "
              f"({size / 1e6:.1f} MB)", file=sys.stderr, flush=True)
