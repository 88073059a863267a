"""The whole influence job (bench/e2e.py) under pytest-benchmark: fastinfl against the best NumPy/SciPy code.

Groups are ``f"e2e_{job}|{n}x{d}x{m}"``. The default size runs in seconds;
FASTINFL_BENCH_LARGE=1 adds the issue's other sizes, marked ``slow``. With the
project's default ``--benchmark-disable`` each side runs once and the results
are compared (a smoke test).
"""

import os
import warnings

import pytest

from bench.e2e import SIZES, TOP_K_SIZE, Job

E2E_SIZES = SIZES[:1] + (SIZES[1:] + [TOP_K_SIZE] if os.environ.get("FASTINFL_BENCH_LARGE") == "1" else [])


@pytest.fixture(scope="module", params=[pytest.param(s, id="x".join(map(str, s)),
                                                     marks=[pytest.mark.slow] if s != SIZES[0] else [])
                                        for s in E2E_SIZES])
def job_data(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Job(*request.param, kind="influence")


@pytest.mark.parametrize("impl", ["fastinfl", "numpy"])
@pytest.mark.parametrize("kind", ["influence", "top_k"])
def test_e2e(benchmark, job_data, kind, impl):
    job = job_data
    if kind == "influence" and (job.n, job.d, job.m) == TOP_K_SIZE:
        pytest.skip("top_k only at this size")
    job.kind = kind
    other = job.numpy() if impl == "fastinfl" else job.fastinfl()  # also warms the kernels
    benchmark.group = f"e2e_{kind}|{job.n}x{job.d}x{job.m}"
    result = benchmark(getattr(job, impl))
    if impl == "fastinfl":
        job.check(result, other)
    else:
        job.check(other, result)
