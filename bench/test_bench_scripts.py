"""The benchmark scripts run end to end on tiny sizes and print their tables."""

import re

import pytest

from bench import auto_switch, end_to_end


def test_auto_switch_prints_table(capsys):
    auto_switch.main(["--n", "3000", "--ps", "20,60", "--ms", "2,9"])
    out = capsys.readouterr().out
    assert out.count("\n| 20 | 3000 |") == 2 and out.count("\n| 60 | 3000 |") == 2
    assert "- m = 9:" in out


@pytest.mark.slow  # ~20 s
def test_end_to_end_memory_mapped(tmp_path, capsys):
    end_to_end.main(["--n", "20_000", "--d", "5", "--m", "20", "--k", "3", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| inf.top_k(X_test, y_test, k=3), m = 20 |" in out
    assert not list(tmp_path.iterdir()), "X.npy must be deleted without --keep"


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_report_prints_table(capsys):
    from bench import report

    report.main(["--n", "3000", "--d", "5", "--ops", "hessian,hvp,top_k", "--budget", "0"])
    out = capsys.readouterr().out
    assert "| hessian (with Influence() setup) | 3000x5 float64 |" in out
    assert "| top_k (m=1000, k=10" in out


@pytest.mark.slow  # ~100 s: three processes compile every kernel on a cold cache
def test_compile_time_prints_table(capsys):
    from bench import compile_time

    compile_time.main()  # fresh processes with an empty Numba cache: compiles everything once
    out = capsys.readouterr().out
    assert "| fit + influence, float64 | empty (cold) |" in out
    assert "| import only (best of 3) | warm |" in out


def test_report_fraction_of_limit_never_above_100_percent():
    from bench.report import fraction

    assert fraction(50.0, 100.0) == "50%"
    assert fraction(100.0, 100.0) == "100%"
    assert fraction(130.0, 100.0) == ">100%*"  # measured limit below the achieved rate: not a fraction


def test_report_small_problem_in_cache_is_not_above_100_percent(capsys):
    from bench import report

    report.main(["--n", "3000", "--d", "5", "--ops", "hvp", "--budget", "0"])
    out = capsys.readouterr().out
    fractions = re.findall(r"\| (\d+)% \|$", out, flags=re.M)
    assert all(int(f) <= 100 for f in fractions)


@pytest.mark.slow  # tens of seconds on 2 cores (subprocesses or cold compiles): the slow tier, which CI runs too
def test_serving_benchmarks_print_their_tables(tmp_path, capsys):
    from bench import call_overhead, load_test, state_load

    call_overhead.main(["--n", "500", "--d", "4", "--calls", "5", "--repeats", "1"])
    state_load.main(["--n", "3000", "--d", "4", "--repeats", "1", "--dir", str(tmp_path)])
    load_test.main(["--n", "3000", "--d", "4", "--clients", "1,3", "--requests", "12", "--seconds", "20",
                    "--inprocess-only"])
    out = capsys.readouterr().out
    assert "| top_k(x, y, k=10) |" in out
    assert "| Influence.load(path, X, y) (sampled fingerprint) |" in out
    assert "\n| 3 | " in out and not list(tmp_path.iterdir())


def test_solver_study_prints_table(capsys):
    from bench import solver_study

    solver_study.main(["--n", "3000", "--d", "8", "--rhos", "0,0.9", "--m", "3", "--lissa-depth", "20",
                       "--cases", "synthetic"])
    out = capsys.readouterr().out
    for method in ("direct", "cg", "pcg-jacobi", "pcg-nystrom", "lissa", "lissa-sgd", "arnoldi-50", "scipy-cg"):
        assert "| rho=0.9 | 3000 | 8 |" in out and f" | {method} | " in out


def test_sparse_prints_table(capsys):
    from bench import sparse

    sparse.main(["--n", "3000", "--d", "500", "--nnz", "5", "--m", "3", "--k", "2", "--skip", "lbfgs,sklearn"])
    out = capsys.readouterr().out
    assert "| hvp | Influence.hvp(v) |" in out and "| cg_m3 |" in out and "| top_k (m=3, k=2) |" in out


def test_e2e_prints_table_and_profile(capsys):
    from bench import e2e

    e2e.main(["--sizes", "3000x5x7", "--top-k-sizes", "2000x4x3", "--repeats", "1", "--profile"])
    out = capsys.readouterr().out
    assert "| influence 3000x5, m=7 |" in out and "| top_k 2000x4, m=3 |" in out
    assert "- top_k 2000x4, m=3: total" in out and "kernel setup" in out


def test_topk_bound_prints_fractions(capsys):
    from bench import topk_bound

    topk_bound.main(["--n", "3000", "--d", "5", "--scales", "4", "--points", "3", "--k", "3"])
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith("| 4 |")]
    assert row and all(0.0 < float(x) <= 1.0 for x in row[0].strip("|").split("|")[1:])


@pytest.mark.slow  # imports every scipy subpackage for its docstrings: ~15 s on 2 cores
def test_docstrings_direct_prints_table(capsys):
    pytest.importorskip("sklearn")
    from bench import docstrings_direct

    docstrings_direct.main(["--features", "300", "--m", "20", "--k", "3"])
    out = capsys.readouterr().out
    assert "TF-IDF 300 features" in out and "20 test" in out
    assert "| direct, forced |" in out and "CG and direct agree: 100.0%" in out
