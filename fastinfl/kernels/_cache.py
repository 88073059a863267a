"""Numba's disk cache for fastinfl's kernels, invalidated by a change to any kernel module.

Numba checks a cached function against its own source file only, but a kernel
compiles the kernels it calls into itself: ``cg._cg_solve`` contains
``dense._hvp``, the drivers contain ``sigmoid`` and ``blas`` helpers, and every
kernel freezes constants from ``_config``. After an edit of ``dense.py`` the
cached CG kept running the old HVP (bench/RESULTS.md, "End-to-end jobs"). The
locators below give every kernel the same source stamp: the hashes of all
modules in ``fastinfl/kernels/`` and of ``fastinfl/_config.py``, so any edit
recompiles every kernel on its next first call. Where Numba's locator interface
differs (another version), Numba's own per-file stamp stays in use.
"""

import os

from numba.core import caching

_KERNELS = os.path.dirname(os.path.abspath(__file__))
_SOURCES = tuple(sorted(os.path.join(_KERNELS, f) for f in os.listdir(_KERNELS) if f.endswith(".py"))) + (
    os.path.join(os.path.dirname(_KERNELS), "_config.py"),)


class _KernelStamp:
    """Mixin: the stamp is every kernel source (and _config.py); applies to fastinfl's kernels only."""

    def get_source_stamp(self):
        stamps = []
        for path in _SOURCES:
            st = os.stat(path)
            stamps.append(caching._hash_source_file(path, st.st_mtime, st.st_size))
        return tuple(stamps)

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


def install():
    """Put the locators first in Numba's list (once; call before any kernel is decorated)."""
    classes = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if not isinstance(classes, list) or not hasattr(caching, "_hash_source_file") or len(LOCATORS) != 3:
        return  # another Numba: its per-file stamps stay in use
    if not any(c in classes for c in LOCATORS):
        classes[:0] = LOCATORS
