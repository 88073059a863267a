"""Numba's disk cache for fastinfl's kernels, invalidated by a change to any kernel module.

Numba checks a cached function against its own source file only, but a kernel
compiles the kernels it calls into itself: ``cg._cg_solve`` contains
``dense._hvp``, the drivers contain ``sigmoid`` and ``blas`` helpers, and every
kernel freezes constants from ``_config``. After an edit of ``dense.py`` the
cached CG kept running the old HVP (bench/RESULTS.md, "End-to-end jobs"). The
locator below gives every kernel the same source stamp: the hashes of all
modules in ``fastinfl/kernels/`` and of ``fastinfl/_config.py``, so any edit
recompiles every kernel on its next first call. Where Numba's locator interface
differs (another version), Numba's own per-file stamp stays in use.
"""

import os

from numba.core import caching

_KERNELS = os.path.dirname(os.path.abspath(__file__))
_SOURCES = tuple(sorted(os.path.join(_KERNELS, f) for f in os.listdir(_KERNELS) if f.endswith(".py"))) + (
    os.path.join(os.path.dirname(_KERNELS), "_config.py"),)


class KernelCacheLocator(caching.InTreeCacheLocator):
    """``__pycache__`` next to the kernel module; stamp = every kernel source (and _config.py)."""

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


def install():
    """Put the locator first in Numba's list (once; call before any kernel is decorated)."""
    classes = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if isinstance(classes, list) and hasattr(caching, "_hash_source_file") and KernelCacheLocator not in classes:
        classes.insert(0, KernelCacheLocator)
