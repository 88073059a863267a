"""fastinfl beside the NumPy / SciPy / scikit-learn code a user would write (see cases.py).

With the project's default ``--benchmark-disable`` each callable runs once, so this
file is a smoke test that still checks the two results agree. Time it with
``pytest bench --benchmark-enable``; groups are ``f"{op}|{n}x{d}"``. Where the
reference computes only part of the result (cg_k100: 10 of the 100 SciPy
solves), its benchmark times that part; ``extra_info["ref_time_scale"]`` is the
factor ``python -m bench.report`` applies.
"""

import pytest

from bench.cases import CASES
from bench.memory import peak_memory


@pytest.mark.parametrize("impl", ["fastinfl", "reference"])
@pytest.mark.parametrize("op", list(CASES))
def test_core(benchmark, problem, op, impl):
    case = problem.case(op)  # inputs prepared and fastinfl compiled, untimed
    benchmark.group = f"{op}|{problem.n}x{problem.d}"
    benchmark.extra_info.update(dtype=problem.dtype.name, reference=case.reference_name, note=case.note,
                                ref_time_scale=case.ref_time_scale)
    result = benchmark(getattr(case, impl))
    if impl == "fastinfl":
        case.check(result, case.result("reference"))
    else:
        case.check(case.result("fastinfl"), result)


def test_top_k_memory(problem):
    """fastinfl's top_k never forms the (m, n) influence matrix: its peak is a fraction of it."""
    case = problem.case("top_k")
    _, traced, _ = peak_memory(case.fastinfl)
    m = case.result("fastinfl").helpful.shape[0]
    full = 8 * m * problem.n
    assert traced < full / 4, f"top_k traced {traced / 2**20:.1f} MiB, (m, n) is {full / 2**20:.1f} MiB"
