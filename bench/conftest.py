"""Benchmark problems: one per (n, d, dtype), built once per session.

The default size runs in seconds; FASTINFL_BENCH_LARGE=1 adds n = 10^4 at d = 1000
and n = 10^5 and 10^6 at d = 100, marked ``slow``.
"""

import os

import numpy as np
import pytest

from bench.cases import Problem

SHAPES = [(20_000, 50)]
if os.environ.get("FASTINFL_BENCH_LARGE") == "1":
    SHAPES += [(10_000, 1000), (100_000, 100), (1_000_000, 100)]

PARAMS = [
    pytest.param((n, d, dtype), id=f"{n}x{d}-{np.dtype(dtype).name}",
                 marks=[pytest.mark.slow] if (n, d) != SHAPES[0] else [])
    for n, d in SHAPES
    for dtype in (np.float64, np.float32)
]


@pytest.fixture(scope="session", params=PARAMS)
def problem(request):
    """The :class:`bench.cases.Problem` for one (n, d, dtype)."""
    return Problem(*request.param)
