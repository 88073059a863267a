"""``fastinfl serve`` is reachable from the command line's entry point."""

import pytest

from fastinfl.cli import main


def test_serve_help_through_the_fastinfl_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    assert "usage: fastinfl serve" in capsys.readouterr().out


def test_serve_with_a_missing_state_file_fails_cleanly(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "train.npz", X=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    assert main(["serve", tmp_path / "missing.npz", "--train", tmp_path / "train.npz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastinfl serve: error:") and "missing.npz" in err
