"""The build compiles the kernels and ships their cache (fastinfl/kernels/_cache.py says how it is used).

After build_py has copied the package into the build tree, a child process imports fastinfl from
there and runs `fastinfl compile` with Numba targeting a portable CPU level (FASTINFL_CACHE_LEVELS,
default x86-64-v3 on x86-64, generic elsewhere); the cache lands in fastinfl/_kernel_cache/<level>/
inside the build tree, so the wheel (tagged for this Python and platform: the cache is both) carries
it. FASTINFL_CACHE_LEVELS=none builds without it (every kernel then compiles on first use). An
editable install ships nothing: its kernels cache into __pycache__ beside the sources.
"""

import os
import platform
import subprocess
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution


def _levels():
    default = "x86-64-v3" if platform.machine().lower() in ("x86_64", "amd64") else "generic"
    value = os.environ.get("FASTINFL_CACHE_LEVELS", default).strip()
    return [] if value in ("", "none", "0") else value.split(",")


class BuildWithKernelCache(build_py):
    def run(self):
        super().run()
        levels = _levels()
        if getattr(self, "editable_mode", False) or not levels:
            return
        # fastinfl is imported from the build tree in child processes only, writing no bytecode there
        # and no cache but the shipped one.
        with tempfile.TemporaryDirectory(prefix="fastinfl-build-") as tmp:
            build_lib = os.path.abspath(self.build_lib)
            path = os.pathsep.join(p for p in (build_lib, os.environ.get("PYTHONPATH")) if p)
            env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1", NUMBA_CACHE_DIR=tmp)
            code = ("import sys; from fastinfl.cli.compile import build_shipped; "
                    "build_shipped(sys.argv[1], sys.argv[2].split(','))")
            package = os.path.join(build_lib, "fastinfl")
            subprocess.run([sys.executable, "-c", code, package, ",".join(levels)], env=env, cwd=tmp,
                           check=True)


class PlatformDistribution(Distribution):
    """The shipped cache is machine code for one Python version and platform: a platform wheel."""

    def has_ext_modules(self):
        return bool(_levels())


setup(cmdclass={"build_py": BuildWithKernelCache}, distclass=PlatformDistribution)
