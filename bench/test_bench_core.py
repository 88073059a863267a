"""fastinfl beside the NumPy / SciPy / scikit-learn code a user would write (see cases.py).

With the project's default ``--benchmark-disable`` each callable runs once, so this
file is a smoke test that still checks the two results agree. Time it with
``pytest bench --benchmark-enable``; groups are ``f"{op}|{n}x{d}"``.
"""

import pytest

from bench.cases import CASES


@pytest.mark.parametrize("impl", ["fastinfl", "reference"])
@pytest.mark.parametrize("op", list(CASES))
def test_core(benchmark, problem, op, impl):
    case = problem.case(op)  # inputs prepared and fastinfl compiled, untimed
    benchmark.group = f"{op}|{problem.n}x{problem.d}"
    benchmark.extra_info.update(dtype=problem.dtype.name, reference=case.reference_name, note=case.note)
    result = benchmark(getattr(case, impl))
    case.check(result, case.result("reference" if impl == "fastinfl" else "fastinfl"))
