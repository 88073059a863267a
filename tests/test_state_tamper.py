"""Every tampering of a state file in issue 25 (items 1-3), and what ``Influence.load`` answers.

``CASES`` is the state-file table of docs/robustness.md (``python docs/make_robustness.py``
regenerates it). Each case edits a good state file (or the training data given to load) and
must end in exactly the error named, with a message naming the file and what is wrong.
"""

import atexit
import functools
import json
import pathlib
import re
import shutil
import tempfile
import warnings
import zipfile

import numpy as np
import pytest

import fastinfl
from fastinfl import StateError, StationarityWarning

N_ROWS = 20_000  # the size of issue 25's fingerprint example


@functools.lru_cache(maxsize=None)
def _data(kind):
    """(X, y, good state path) of a ``kind`` state in a temporary directory kept for the session."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="fastinfl-tamper-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    if kind == "multinomial":
        rng = np.random.default_rng(3)
        X = rng.standard_normal((2500, 5))
        y = np.argmax(X @ rng.standard_normal((5, 3)) + rng.gumbel(size=(2500, 3)), axis=1)
        model = fastinfl.MultinomialLogisticRegression(l2=0.5).fit(X, y)
    else:
        X, y, _ = fastinfl.datasets.make_logistic(N_ROWS, 6, seed=0, dtype=np.float64)
        model = fastinfl.LogisticRegression(l2=1.0 if kind != "other" else 2.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="cg" if kind == "cg" else "direct")
    inf.s_test(X[:2], y[:2])  # direct: the Cholesky factor goes into the file
    return X, y, inf.save(folder / "good.npz")


def _members(path):
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _header(members):
    return json.loads(members["header"].tobytes().decode())


def _with_header(members, **changes):
    """``members`` with header fields replaced (dotted names reach into model/settings/fingerprint)."""
    header = _header(members)
    for key, value in changes.items():
        where = header
        *path, last = key.split(".")
        for part in path:
            where = where[part]
        if value is _DROP:
            del where[last]
        else:
            where[last] = value
    return members | {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}


_DROP = object()


def _edit(**arrays):
    """A mutation replacing (or, with None, removing) members."""
    def mutate(members):
        out = dict(members)
        for name, value in arrays.items():
            if value is None:
                out.pop(name)
            else:
                out[name] = value(members) if callable(value) else value
        return out
    return mutate


def _write(members, path):
    with open(path, "wb") as f:
        np.savez(f, **members)


def _version_1(members):
    """A format-1 file as an earlier fastinfl wrote it, residuals cut to one row (issue 25 item 1)."""
    n = N_ROWS
    out = _with_header(members, version=1)
    return out | {"residuals": np.zeros(n)[:1], "weights": np.full(n, 0.25)}


def _other_factor(members):
    return _members(_data("other")[2])["cholesky"]


def _upper_garbage(members):
    L = members["cholesky"].copy()
    L[0, -1] = 1.0
    return L


def _nan_factor(members):
    L = members["cholesky"].copy()
    L[3, 2] = np.nan
    return L


def _nested_header(members):
    return np.frombuffer(("[" * 100_000 + "]" * 100_000).encode(), np.uint8)


def _zip_bomb(good, path):
    """The good file with ``coef`` replaced by a 64 MB array of zeros (deflated to ~64 KB)."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            if name != "coef.npy":
                dst.writestr(name, src.read(name))
        with dst.open("coef.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                     "shape": (8_000_000,)})
            chunk = bytes(1_000_000)
            for _ in range(64):
                f.write(chunk)


def _truncate(good, path):
    raw = pathlib.Path(good).read_bytes()
    pathlib.Path(path).write_bytes(raw[:len(raw) // 2])


def _flip_factor_bytes(good, path):
    raw = bytearray(pathlib.Path(good).read_bytes())
    at = raw.find(_members(good)["cholesky"].tobytes()[:64])
    raw[at + 8:at + 24] = bytes(b ^ 0xFF for b in raw[at + 8:at + 24])
    pathlib.Path(path).write_bytes(bytes(raw))


def _changed_x(X):
    X2 = X.copy()
    X2[1234, 3] += 0.5
    return X2


# (what, state kind, mutation of the members | raw file writer | None, change of X_train | None,
#  expected exception, regex of its message)
CASES = [
    ("format-1 file with its residuals cut to 1 row (issue 25 item 1: heap contents returned)", "binary",
     _version_1, None, StateError, r"state format version 1 .* Write it again"),
    ("residuals member (1 row) added to a format-2 file", "binary",
     _edit(residuals=np.zeros(1)), None, StateError, r"unexpected members \['residuals'\]"),
    ("short weights member added, solver='cg'", "cg",
     _edit(weights=np.full(10, 0.25)), None, StateError, r"unexpected members \['weights'\]"),
    ("Cholesky factor replaced by the identity", "binary",
     _edit(cholesky=lambda m: np.eye(7)), None, StateError, r"Cholesky factor does not match the Hessian"),
    ("Cholesky factor doubled", "binary",
     _edit(cholesky=lambda m: 2 * m["cholesky"]), None, StateError, r"Cholesky factor does not match"),
    ("Cholesky factor of another model (l2 = 2) on the same data", "binary",
     _edit(cholesky=_other_factor), None, StateError, r"Cholesky factor does not match"),
    ("Cholesky factor all zeros", "binary",
     _edit(cholesky=lambda m: np.zeros((7, 7))), None, StateError, r"diagonal entry 0 <= 0"),
    ("Cholesky factor with a NaN", "binary",
     _edit(cholesky=_nan_factor), None, StateError, r"'cholesky' holds 1 non-finite values"),
    ("Cholesky factor with a value above the diagonal", "binary",
     _edit(cholesky=_upper_garbage), None, StateError, r"not lower triangular"),
    ("Cholesky factor of the wrong shape", "binary",
     _edit(cholesky=lambda m: np.eye(6)), None, StateError,
     r"'cholesky' has shape \(6, 6\); .* imply \(7, 7\)"),
    ("multinomial: Cholesky factor doubled", "multinomial",
     _edit(cholesky=lambda m: 2 * m["cholesky"]), None, StateError, r"Cholesky factor does not match"),
    ("multinomial: 50 classes (the data have 3)", "multinomial",
     _edit(classes=np.arange(50)), None, StateError, r"'classes' has shape \(50,\); y_train has 3"),
    ("coef as integers", "binary",
     _edit(coef=lambda m: m["coef"].astype(np.int64)), None, StateError,
     r"'coef' has dtype int64; expected float64"),
    ("coef as float32", "binary",
     _edit(coef=lambda m: m["coef"].astype(np.float32)), None, StateError, r"'coef' has dtype float32"),
    ("coef as an object array (needs pickle)", "binary",
     _edit(coef=lambda m: m["coef"].astype(object)), None, StateError, r"'coef' is an object array"),
    ("coef with one entry too many", "binary",
     _edit(coef=lambda m: np.append(m["coef"], 1.0)), None, StateError,
     r"'coef' has shape \(7,\); .* \(6,\)"),
    ("coef times 1000 (grad_norm recomputed, not read)", "binary",
     _edit(coef=lambda m: 1000 * m["coef"]), None, StationarityWarning, r"not a stationary point"),
    ("coef missing", "binary",
     _edit(coef=None), None, StateError, r"member 'coef' is missing"),
    ("intercept empty (was an IndexError)", "binary",
     _edit(intercept=np.zeros(0)), None, StateError, r"'intercept' has shape \(0,\); .* \(1,\)"),
    ("grad_norm = 0 written into the header (to bypass the stationarity warning)", "binary",
     lambda m: _with_header(m, grad_norm=0.0), None, StateError,
     r"the header has unknown entries \['grad_norm'\]"),
    ("l2 changed in the header", "binary",
     lambda m: _with_header(m, **{"model.l2": 0.5}), None, StateError, r"ridge diagonal does not follow"),
    ("settings.damping a string (was a TypeError)", "binary",
     lambda m: _with_header(m, **{"settings.damping": "0"}), None, StateError,
     r"settings.damping must be a finite number >= 0; got '0'"),
    ("settings missing (was a KeyError)", "binary",
     lambda m: _with_header(m, settings=_DROP), None, StateError, r"header field settings is missing"),
    ("header JSON nested 100,000 deep (was a RecursionError)", "binary",
     _edit(header=_nested_header), None, StateError, r"its header is not JSON: RecursionError"),
    ("header an object array (needs pickle)", "binary",
     _edit(header=np.array([{"format": "fastinfl.influence"}], dtype=object)), None, StateError,
     r"'header' is an object array"),
    ("x_checksum edited", "binary",
     lambda m: _with_header(m, **{"fingerprint.x_checksum": "0" * 32}), None, StateError,
     r"checksum of every element of X_train"),
    ("fingerprint downgraded to a sample with a made-up digest", "binary",
     lambda m: _with_header(m, **{"fingerprint.check": "sample", "fingerprint.rows_hashed": 1024,
                                  "fingerprint.rows_sha256": "0" * 64, "fingerprint.x_checksum": _DROP,
                                  "fingerprint.checksum": _DROP}),
     None, StateError, r"SHA-256 of the 1024 sampled rows"),
    ("zip bomb: coef member of 64 MB of zeros, 64 KB compressed", "binary",
     _zip_bomb, None, StateError, r"'coef' would expand to 64,000,128 bytes; .* refused before reading"),
    ("file cut in half (was a BadZipFile)", "binary",
     _truncate, None, StateError, r"is not a fastinfl state file, or is damaged \(BadZipFile"),
    ("16 bytes of the factor flipped", "binary",
     _flip_factor_bytes, None, StateError, r"damaged \(BadZipFile: Bad CRC-32 for file 'cholesky.npy'\)"),
    ("X_train[1234, 3] += 0.5 of 20,000 rows (issue 25 item 3: accepted before)", "binary",
     None, _changed_x, StateError, r"X_train differs .* \(checksum of every element of X_train\)"),
    ("X_train rows in another order", "binary",
     None, lambda X: X[::-1], StateError, r"checksum of every element of X_train"),
]

_RAW = (_zip_bomb, _truncate, _flip_factor_bytes)


def outcome(case, folder):
    """(exception type name, message with ``folder`` removed) of loading the tampered state of ``case``."""
    what, kind, mutate, change_x, _, _ = case
    X, y, good = _data(kind)
    path = pathlib.Path(folder) / "bad.npz"
    if mutate is None:
        path = good
    elif mutate in _RAW:
        mutate(good, path)
    else:
        _write(mutate(_members(good)), path)
    X_load = X if change_x is None else change_x(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StationarityWarning)
        try:
            fastinfl.Influence.load(path, X_load, y)
        except (StateError, StationarityWarning) as exc:
            message = str(exc).replace(str(path.parent) + "/", "")
            return type(exc).__name__, message
    raise AssertionError(f"{what}: loaded without an error")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_tampered_state_is_refused(case, tmp_path):
    what, kind, _, _, exc, pattern = case
    name, message = outcome(case, tmp_path)
    assert name == exc.__name__, (what, message)
    assert re.search(pattern, message), (what, message)
    assert message.count("\n") == 0
    if exc is StateError:  # names the file
        assert "bad.npz" in message or "good.npz" in message


def test_state_error_is_a_value_error():
    assert issubclass(StateError, ValueError) and StateError is fastinfl.StateError


def test_zip_bomb_is_refused_without_inflating_it(tmp_path):
    import tracemalloc

    X, y, good = _data("binary")
    _zip_bomb(good, tmp_path / "bomb.npz")
    tracemalloc.start()
    with pytest.raises(StateError, match="refused before reading"):
        fastinfl.Influence.load(tmp_path / "bomb.npz", X, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak  # far below the 64 MB the member would expand to


def test_recompressed_good_state_loads_and_answers_the_same(tmp_path):
    """savez_compressed of the same members is the same state (the checks read either)."""
    X, y, good = _data("binary")
    with open(tmp_path / "c.npz", "wb") as f:
        np.savez_compressed(f, **_members(good))
    Xt = X[:4]
    np.testing.assert_array_equal(fastinfl.Influence.load(tmp_path / "c.npz", X, y).influence(Xt, y[:4]),
                                  fastinfl.Influence.load(good, X, y).influence(Xt, y[:4]))


def test_factor_check_catches_a_perturbation_of_one_entry(tmp_path):
    """One entry of the factor off by 1e-6 of its diagonal changes L L^T in one row and column only
    (influences off by ~1e-6): fresh random vectors on every load still see it (not tied to fixed
    directions)."""
    X, y, good = _data("binary")
    members = _members(good)
    L = members["cholesky"].copy()
    L[5, 2] += 1e-6 * L[5, 5]
    _write(members | {"cholesky": L}, tmp_path / "p.npz")
    for _ in range(3):
        with pytest.raises(StateError, match="Cholesky factor does not match"):
            fastinfl.Influence.load(tmp_path / "p.npz", X, y)


def test_missing_file_is_file_not_found(tmp_path):
    X, y, _ = _data("binary")
    with pytest.raises(FileNotFoundError):
        fastinfl.Influence.load(tmp_path / "none.npz", X, y)


def test_loaded_state_answers_like_a_fresh_influence():
    """Independent reference: Influence built from the model and the data (its own setup pass)."""
    X, y, good = _data("binary")
    loaded = fastinfl.Influence.load(good, X, y)
    fresh = fastinfl.Influence(loaded.model, X, y, solver="direct")
    Xt, yt = X[:5] + 0.1, y[:5]
    np.testing.assert_allclose(loaded.influence(Xt, yt), fresh.influence(Xt, yt), rtol=1e-9, atol=1e-15)
    assert loaded.grad_norm_ == pytest.approx(fresh.grad_norm_, rel=1e-6, abs=1e-12)


def _state_table_rows(text):
    start = text.index("## State files")
    end = text.find("\n## ", start + 1)  # the next section (the service's table) is not this one's
    lines = text[start:end if end >= 0 else None].splitlines()
    return [line for line in lines if line.startswith("| ") and not line.startswith("| `")]


def test_robustness_doc_state_table_is_current():
    """docs/robustness.md's state-file table matches CASES (numbers masked: error sizes vary per load)."""
    import runpy

    root = pathlib.Path(__file__).resolve().parents[1]
    rendered = runpy.run_path(str(root / "docs" / "make_robustness.py"))["render_state"]()
    doc = (root / "docs" / "robustness.md").read_text()

    def masked(rows):
        return [re.sub(r"[-+]?\d[\d.,]*(e[-+]?\d+)?", "<num>", row) for row in rows]

    assert len(_state_table_rows(doc)) == len(CASES) + 1  # and the header row
    assert masked(_state_table_rows(doc)) == masked(_state_table_rows(rendered)), \
        "run python docs/make_robustness.py"
