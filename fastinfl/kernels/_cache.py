"""Numba's disk cache for fastinfl's kernels: one source stamp, a cache shipped with the package, a notice.

**One stamp.** Numba checks a cached function against its own source file only,
but a kernel compiles the kernels it calls into itself: ``cg._cg_solve``
contains ``dense._hvp``, the drivers contain ``sigmoid`` and ``blas`` helpers,
and every kernel freezes constants from ``_config``. After an edit of
``dense.py`` the cached CG kept running the old HVP (bench/RESULTS.md,
"End-to-end jobs"). The locators below give every kernel the same source stamp:
the SHA-256 of every module in ``fastinfl/kernels/`` and of
``fastinfl/_config.py``, so any edit recompiles every kernel on its next first
call. Where Numba's locator interface differs (another version), Numba's own
per-file stamp stays in use and nothing is shipped.

**The shipped cache.** The project's build (setup.py, ``build_py``) compiles every
kernel through the public warm-up path (``fastinfl compile``) in a child process
whose Numba targets a portable CPU level (``NUMBA_CPU_NAME=x86-64-v3``,
``NUMBA_CPU_FEATURES=""``) instead of the build machine's CPU, and puts the
cache in ``fastinfl/_kernel_cache/<level>/`` with a ``manifest.json``. Numba
keys every cache entry by (signature, the codegen's "magic tuple" (target
triple, CPU name, CPU features), bytecode hash), so a process targeting its
own CPU would never find those entries; :class:`KernelCache` looks them up
under the manifest's magic tuple instead, after the user's own cache, when the
manifest matches this process: the same kernel stamp, Numba version and Python
cache tag, the same target triple, and a CPU with every feature the level
requires (LLVM's names). Otherwise kernels compile natively into the user's
cache, as without a shipped cache. The shipped files are only read.

**The notice.** The first kernel compile of a process that will take more than
``NOTICE_MIN_SECONDS`` says so once, with an estimate: the compile seconds
measured on the reference machine (``_config.COMPILE_SECONDS``) scaled by a
probe compile timed here. It goes to the ``fastinfl`` logger (INFO) and, in an
interactive shell or notebook, to stderr; ``FASTINFL_COMPILE_NOTICE=0`` or
:func:`set_compile_notice` turns it off.
"""

import json
import logging
import os
import sys
import threading
import time

from numba.core import caching

from .. import _config

_KERNELS = os.path.dirname(os.path.abspath(__file__))
_PACKAGE = os.path.dirname(_KERNELS)
_SOURCES = tuple(sorted(os.path.join(_KERNELS, f) for f in os.listdir(_KERNELS) if f.endswith(".py"))) + (
    os.path.join(_PACKAGE, "_config.py"),)
SHIPPED = os.path.join(_PACKAGE, "_kernel_cache")
MANIFEST = "manifest.json"
# CPU levels a build may target (the x86-64 psABI levels, in LLVM's feature names; "generic": none).
LEVELS = {
    "x86-64-v3": ("sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16", "sahf",
                  "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"),
    "generic": (),
}
NOTICE_MIN_SECONDS = 2.0
log = logging.getLogger("fastinfl")


def source_stamp():
    """The kernels' source stamp: the SHA-256 of every kernel module and of _config.py, in file order."""
    stamps = []
    for path in _SOURCES:
        st = os.stat(path)
        stamps.append(caching._hash_source_file(path, st.st_mtime, st.st_size))
    return tuple(stamps)


def stamp_hex():
    """The source stamp as one hexadecimal digest (the manifest's ``stamp``)."""
    import hashlib

    return hashlib.sha256(b"".join(source_stamp())).hexdigest()


class _KernelStamp:
    """Mixin: the stamp is every kernel source (and _config.py); applies to fastinfl's kernels only."""

    def get_source_stamp(self):
        return source_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _KERNELS:
            return None  # not a fastinfl kernel: Numba's own locators decide
        return super().from_function(py_func, py_file)


# Numba's own order, each with the kernel stamp: NUMBA_CACHE_DIR when set, else __pycache__ next to
# the module, else the user-wide cache directory (a read-only installation).
_BASES = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
LOCATORS = [type("Kernel" + name, (_KernelStamp, getattr(caching, name)), {})
            for name in _BASES if hasattr(caching, name)]
KernelCacheLocator = _KernelStamp


# ------------------------------------------------------------------ the shipped cache
class _Codegen:
    """Stands for the codegen that built the shipped cache: Numba's index keys hold its magic tuple."""

    def __init__(self, magic):
        self._magic = magic

    def magic_tuple(self):
        return self._magic


_shipped = None  # (folder, _Codegen) of the usable shipped level, False when none; found once
_shipped_reason = ""  # why none is used


def _host():
    import llvmlite.binding as ll

    features = {name for name, on in ll.get_host_cpu_features().items() if on}
    return ll.get_process_triple(), features


def _check_manifest(manifest, triple, features):
    """Why the shipped level described by ``manifest`` cannot serve this process ("" when it can)."""
    import numba

    if manifest.get("stamp") != stamp_hex():
        return "built from other kernel sources"
    if manifest.get("numba") != numba.__version__:
        return f"built for numba {manifest.get('numba')}, this is {numba.__version__}"
    if manifest.get("python") != sys.implementation.cache_tag:
        return f"built for {manifest.get('python')}, this is {sys.implementation.cache_tag}"
    if manifest.get("triple") != triple:
        return f"built for {manifest.get('triple')}, this is {triple}"
    missing = sorted(set(manifest.get("requires", ())) - features)
    if missing:
        return f"this CPU lacks {', '.join(missing)} ({manifest.get('cpu_name')})"
    return ""


def shipped():
    """(folder, codegen stand-in) of the shipped cache level this process can use, or None (once)."""
    global _shipped, _shipped_reason
    if _shipped is None:
        _shipped, reasons = False, []
        try:
            levels = sorted(os.listdir(SHIPPED)) if os.path.isdir(SHIPPED) else []
            triple, features = _host() if levels else (None, None)
            found = []
            for level in levels:
                path = os.path.join(SHIPPED, level, MANIFEST)
                if not os.path.isfile(path):
                    continue
                with open(path) as f:
                    manifest = json.load(f)
                why = _check_manifest(manifest, triple, features)
                if why:
                    reasons.append(f"{level}: {why}")
                else:  # the most specific usable level first
                    found.append((len(manifest.get("requires", ())), level, manifest))
            if found:
                _, level, manifest = max(found)
                magic = (manifest["triple"], manifest["cpu_name"], manifest["features"])
                _shipped = (os.path.join(SHIPPED, level), _Codegen(magic))
            elif not levels:
                reasons.append("none in this installation (an editable install or a build without it)")
        except (OSError, ValueError, KeyError) as exc:  # an unreadable manifest: compile natively
            reasons.append(f"unreadable ({exc})")
        _shipped_reason = "; ".join(reasons)
        if reasons:
            log.debug("fastinfl: shipped kernel cache not used: %s", _shipped_reason)
    return _shipped or None


class KernelCache(caching.FunctionCache):
    """Numba's per-function cache (the user's: NUMBA_CACHE_DIR, __pycache__ or the user-wide folder),
    then the shipped cache, read-only, under its own magic tuple; a miss announces the compile."""

    def __init__(self, py_func):
        super().__init__(py_func)
        level = shipped()
        self._shipped = level and (caching.IndexDataCacheFile(
            cache_path=level[0], filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp()), level[1])

    def _load_overload(self, sig, target_context):
        data = super()._load_overload(sig, target_context)
        if data is None and self._enabled and self._shipped:
            files, codegen = self._shipped
            data = files.load(self._index_key(sig, codegen))
            if data is not None:
                data = self._impl.rebuild(target_context, data)
        if data is None and self._enabled:
            _compiling(sig)
        return data

    def cached_signatures(self):
        """The signatures (as text) this cache would load, from the user's cache or the shipped one."""
        found = []
        for files in (self._cache_file, self._shipped and self._shipped[0]):
            if files:
                try:
                    found += [str(key[0]) for key in files._load_index()]
                except Exception:  # unreadable or foreign index: Numba would recompile too
                    pass
        return found


# ------------------------------------------------------------------ the compile notice
_notice = {"mode": _config.COMPILE_NOTICE, "done": False}
_notice_lock = threading.Lock()


def set_compile_notice(mode):
    """Whether a first call that compiles for long says so: "auto" (the default: the ``fastinfl``
    logger, and stderr in an interactive shell or notebook), True (stderr always), False (never).
    ``FASTINFL_COMPILE_NOTICE=0`` sets False at import."""
    if mode not in ("auto", True, False):
        raise ValueError(f"mode must be 'auto', True or False; got {mode!r}.")
    _notice["mode"] = {True: "1", False: "0"}.get(mode, mode)


def _interactive():
    """An interactive interpreter (python -i, the REPL) or an IPython shell or notebook."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "IPython" in sys.modules and \
        getattr(sys.modules["IPython"], "get_ipython", lambda: None)() is not None


def probe_seconds():
    """Seconds this process takes to compile a small reference function (after Numba's one-off setup)."""
    import numpy as np
    from numba import njit

    def reference(x, y):
        s = 0.0
        for i in range(x.shape[0]):
            s += np.exp(x[i]) * y[i] + np.log1p(abs(x[i]))
        return s

    njit(reference).compile("float64(float32[:], float32[:])")  # Numba's first-compile setup
    t = time.perf_counter()
    njit(reference).compile("float64(float64[:], float64[:])")
    return time.perf_counter() - t


def estimate_seconds(dtypes=("float64",)):
    """Seconds to compile every kernel a dtype's binary jobs use, here: the reference machine's
    seconds (``_config.COMPILE_SECONDS``) times this machine's probe over the reference probe."""
    scale = probe_seconds() / _config.COMPILE_PROBE_SECONDS
    return scale * sum(_config.COMPILE_SECONDS.get(str(d), max(_config.COMPILE_SECONDS.values()))
                       for d in dtypes)


def notice_line(seconds):
    return f"fastinfl: compiling kernels (first run only, about {max(1, round(seconds))} s)…"


def announce(seconds, stderr=None, line=None):
    """Say once per process that kernels are compiling for about ``seconds``; later calls are silent.
    ``stderr``: print the line there (None: in an interactive session only); ``line``: the text
    (default: the command line's). Returns whether it spoke."""
    with _notice_lock:
        if _notice["done"] or _notice["mode"] == "0":
            _notice["done"] = True
            return False
        _notice["done"] = True
    line = line or notice_line(seconds)
    why = f" (shipped kernel cache: {_shipped_reason})" if _shipped_reason else ""
    log.info("%s%s", line, why)
    if stderr if stderr is not None else (_notice["mode"] == "1" or _interactive()):
        print(line, file=sys.stderr, flush=True)
    return True


def _compiling(sig):
    """A kernel is about to compile (a cache miss): the notice, once, when it will take long."""
    if _notice["done"] or _notice["mode"] == "0":
        return
    dtype = next((str(t.dtype) for t in getattr(sig, "args", sig) if getattr(t, "ndim", 0) == 2), "float64")
    seconds = estimate_seconds([dtype])
    if seconds >= NOTICE_MIN_SECONDS:
        announce(seconds, line=f"fastinfl: compiling kernels for {dtype} data (first use only, about "
                                f"{max(1, round(seconds))} s in all over the first calls of fit, "
                                "influence, top_k and CG; cached afterwards)…")
    else:
        _notice["done"] = True


# ------------------------------------------------------------------ compile counts
def compile_counts():
    """{kernel name: signatures compiled in this process} over every kernel (cache loads excluded)."""
    return {f"{d.py_func.__module__}.{d.py_func.__qualname__}": sum(d._cache_misses.values())
            for d in _config.KERNELS if d._cache_misses}


def install():
    """Put the locators first in Numba's list and make them the kernels' cache (once; call before any
    kernel is decorated)."""
    classes = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if not isinstance(classes, list) or not hasattr(caching, "_hash_source_file") or len(LOCATORS) != 3:
        return  # another Numba: its per-file stamps stay in use
    if not any(c in classes for c in LOCATORS):
        classes[:0] = LOCATORS
    _config.CACHE_CLASS = KernelCache
