"""The benchmark scripts run end to end on tiny sizes and print their tables."""

from bench import auto_switch, end_to_end


def test_auto_switch_prints_table(capsys):
    auto_switch.main(["--n", "3000", "--ps", "20,60", "--ms", "2,9"])
    out = capsys.readouterr().out
    assert out.count("\n| 20 | 3000 |") == 2 and out.count("\n| 60 | 3000 |") == 2
    assert "- m = 9:" in out


def test_end_to_end_memory_mapped(tmp_path, capsys):
    end_to_end.main(["--n", "20_000", "--d", "5", "--m", "20", "--k", "3", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| inf.top_k(X_test, y_test, k=3), m = 20 |" in out
    assert not list(tmp_path.iterdir()), "X.npy must be deleted without --keep"


def test_report_prints_table(capsys):
    from bench import report

    report.main(["--n", "3000", "--d", "5", "--ops", "hessian,hvp,top_k", "--budget", "0"])
    out = capsys.readouterr().out
    assert "| hessian (with Influence() setup) | 3000x5 float64 |" in out
    assert "| top_k (m=1000, k=10" in out


def test_compile_time_prints_table(capsys):
    from bench import compile_time

    compile_time.main()  # fresh processes with an empty Numba cache: compiles everything once
    out = capsys.readouterr().out
    assert "| fit + influence, float64 | empty (cold) |" in out
    assert "| import only (best of 3) | warm |" in out


def test_e2e_prints_table_and_profile(capsys):
    from bench import e2e

    e2e.main(["--sizes", "3000x5x7", "--top-k-sizes", "2000x4x3", "--repeats", "1", "--profile"])
    out = capsys.readouterr().out
    assert "| influence 3000x5, m=7 |" in out and "| top_k 2000x4, m=3 |" in out
    assert "- top_k 2000x4, m=3: total" in out and "kernel setup" in out
