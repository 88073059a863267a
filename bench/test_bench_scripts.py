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
