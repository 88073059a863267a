"""Is Numba's on-disk cache cold? The command line says so before a first run compiles for long.

How it decides (no compiling, a few milliseconds): every core kernel (CORE_MODULES) is a Numba
dispatcher with ``cache=True``; its cache index file (``<name>-<line>.pyXY.nbi`` under
``__pycache__`` or ``NUMBA_CACHE_DIR``) lists the signatures compiled so far and is ignored by
Numba when the source changed (a stamp). A kernel is *ready* for a dtype when its valid index
holds a signature with a 2-D array of that dtype, or holds signatures but none with any 2-D float
array (kernels that never see X, such as the scalar helpers). The cache is *cold* when fewer than
half of the kernels are ready: a first run, a new Numba or fastinfl version, ``FASTINFL_CACHE=0``.
A few kernels compiled later (say CG, first used after many direct solves) do not count as cold:
they take a second or two, not the full compile.
"""

import sys

# Measured: `python -m bench.compile_time`, cold cache, on the 2-core machine of bench/RESULTS.md
# (section "Compile time"). The demo compiles float64 (the seed example) then float32.
COMPILE_SECONDS = {"float64": 20, "float32": 20}


# The kernels every binary run needs; the multinomial, sparse and GPU kernels are compiled only by
# runs that use them, so counting them would call a warm cache cold (or the reverse).
CORE_MODULES = ("fastinfl.kernels.dense", "fastinfl.kernels.cg", "fastinfl.kernels.sigmoid",
                "fastinfl.kernels.blas")


def _dispatchers():
    """Every Numba dispatcher with an on-disk cache defined in the core kernel modules."""
    from numba.core.dispatcher import Dispatcher

    seen = {}
    for name in CORE_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and hasattr(getattr(obj, "_cache", None), "_cache_file"):
                seen[id(obj)] = obj
    return list(seen.values())


def _signatures(dispatcher):
    """The signatures (as text) in a dispatcher's valid cache index; empty when there is none."""
    try:
        index = dispatcher._cache._cache_file._load_index()
    except Exception:  # unreadable or foreign index: Numba would recompile too
        return []
    return [str(key[0]) for key in index]


def cold_dtypes(dtypes):
    """The dtypes (names, e.g. "float32") among ``dtypes`` for which the kernel cache is cold."""
    import fastinfl.influence  # noqa: F401  (loads every kernel module)
    import fastinfl.model  # noqa: F401

    kernels = [_signatures(d) for d in _dispatchers()]
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
    any of ``dtypes``. Returns the estimate in seconds (0 when warm)."""
    seconds = sum(COMPILE_SECONDS.get(d, 20) for d in cold_dtypes(dtypes))
    if seconds and not quiet:
        print(f"fastinfl: compiling kernels (first run only, about {seconds} s)…",
              file=sys.stderr if file is None else file, flush=True)
    return seconds
