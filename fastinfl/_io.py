"""Loading the command line's input files, with errors that name the file, row and column.

Every check the library would make (shape, finite values, labels 0/1) is made here first, so
that a problem is reported in the file's terms: rows count from 0, as in the command's output;
CSV messages also give the line in the file (line = row + 2 when there are no empty lines, the
header being line 1).
"""

import csv
import os
import warnings
import zipfile
from typing import NamedTuple

import numpy as np

from ._validation import check_finite

FORMATS = (".npz", ".npy", ".csv")


class InputError(ValueError):
    """A problem with an input file; the message names the file and, where it applies, row and column."""


class Dataset(NamedTuple):
    """Features ``X`` (n, d), labels ``y`` (n,) and, for CSV, the feature column names (else None)."""

    X: np.ndarray
    y: np.ndarray
    columns: list | None


def load_dataset(path, label_col=None, labels=None):
    """Read features and labels from ``path`` (.npz, .npy or .csv) and check them.

    Parameters
    ----------
    path : str
        ``.npz`` with arrays ``X`` and ``y``; ``.npy`` with the labels in the last column,
        or all columns features when ``labels`` is given; ``.csv`` with a header line.
    label_col : str, optional
        CSV only: the name of the label column (default: the last column).
    labels : str, optional
        ``.npy`` only: a ``.npy`` file of labels, one per row of ``path``.

    Raises
    ------
    InputError
        Unreadable file, wrong shape or type, non-finite feature, label other than 0/1.
    """
    path = str(path)
    ext = _extension(path)
    if ext == ".npz":
        return _load_npz(path)
    if ext == ".npy":
        return _load_npy(path, labels)
    return _load_csv(path, label_col)


def check_same_features(train, train_path, test, test_path):
    """Raise InputError unless ``test`` has the feature columns of ``train`` (count and, for CSV, names)."""
    d_train, d_test = train.X.shape[1], test.X.shape[1]
    if d_train != d_test:
        raise InputError(f"{test_path}: {d_test} feature columns, but {train_path} has {d_train}.")
    if train.columns is not None and test.columns is not None and train.columns != test.columns:
        j = next(j for j, (a, b) in enumerate(zip(train.columns, test.columns, strict=True)) if a != b)
        raise InputError(
            f"{test_path}: feature column {j} is {test.columns[j]!r}, but in {train_path} it is "
            f"{train.columns[j]!r} (the feature columns must be the same, in the same order)."
        )


def _extension(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InputError(f"{path}: unknown file type {ext or '(none)'!r}; use .npz (arrays X and y), "
                         ".npy or .csv.")
    return ext


def _np_load(path):
    try:
        return np.load(path, allow_pickle=False)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}.") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a valid {_extension(path)} file ({exc}).") from None


def _load_npz(path):
    data = _np_load(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not a .npz archive (it holds a single array: save X and y with "
                         "numpy.savez).")
    with data:
        missing = [key for key in ("X", "y") if key not in data.files]
        if missing:
            found = ", ".join(data.files) or "none"
            raise InputError(f"{path}: no array named {missing[0]!r} (it has {found}; expected X and y).")
        try:
            X, y = data["X"], data["y"]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: cannot read its arrays ({exc}).") from None
    _check_features(X, lambda r, c: f"{path}: array X, row {r}, column {c}", f"{path}: array X")
    _check_labels(y, X.shape[0], lambda r: f"{path}: array y, row {r}", f"{path}: array y")
    return Dataset(X, _squeeze(y), None)


def _load_npy(path, labels):
    arr = _np_load(path)
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: a .npz archive, not a .npy array: rename it to .npz.")

    def where(r, c):
        return f"{path}: row {r}, column {c}"

    if labels is not None:
        if os.path.splitext(labels)[1].lower() != ".npy":
            raise InputError(f"{labels}: a labels file must be a .npy array.")
        _check_features(arr, where, path)
        y = _np_load(labels)
        if not isinstance(y, np.ndarray):
            raise InputError(f"{labels}: a .npz archive, not a .npy array of labels.")
        _check_labels(y, arr.shape[0], lambda r: f"{labels}: row {r}", labels)
        return Dataset(arr, _squeeze(y), None)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InputError(f"{path}: expected a 2-D array of features with the labels in the last column; "
                         f"got shape {arr.shape} (or pass --labels).")
    d = arr.shape[1] - 1
    X = np.ascontiguousarray(arr[:, :d])
    _check_features(X, where, path)
    _check_labels(arr[:, d], arr.shape[0], lambda r: f"{path}: row {r}, column {d} (labels, the last)", path)
    return Dataset(X, arr[:, d], None)


def _load_csv(path, label_col):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a CSV text file ({exc}).") from None
    header = [name.strip() for name in header]
    if len(header) < 2:
        raise InputError(f"{path}: expected a header line naming at least one feature column and a "
                         f"label column; got {len(header)} column(s).")
    if label_col is None:
        j = len(header) - 1
    elif label_col in header:
        j = header.index(label_col)
    else:
        raise InputError(f"{path}: no column named {label_col!r} for the labels (columns: "
                         f"{', '.join(header)}).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            data = np.loadtxt(path, dtype=np.float64, delimiter=",", skiprows=1, ndmin=2, comments=None,
                              quotechar='"', encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a CSV text file ({exc}).") from None
    except ValueError as exc:
        raise _csv_parse_error(path, header) or InputError(f"{path}: malformed CSV ({exc}).") from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: no data rows after the header.")
    if data.shape[1] != len(header):
        raise InputError(f"{path}: the header has {len(header)} columns but the data rows have "
                         f"{data.shape[1]}.")
    columns = header[:j] + header[j + 1:]

    X = np.ascontiguousarray(np.delete(data, j, axis=1))
    _check_features(X, lambda r, c: f"{_csv_where(path, r)}, column {columns[c]!r}", path)
    _check_labels(data[:, j], X.shape[0], lambda r: f"{_csv_where(path, r)}, column {header[j]!r}", path)
    return Dataset(X, data[:, j], columns)


def _csv_rows(path):
    """(line number, fields) of the data rows of a CSV file, skipping empty lines as numpy does."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)
        for fields in reader:
            if fields:
                yield reader.line_num, fields


def _csv_where(path, row):
    """'PATH: line L (row R)' for data row ``row`` (0-based)."""
    for r, (line, _) in enumerate(_csv_rows(path)):
        if r == row:
            return f"{path}: line {line} (row {row})"
    return f"{path}: row {row}"


def _csv_parse_error(path, header):
    """InputError locating the first field numpy could not read, or None if none is found."""
    for r, (line, fields) in enumerate(_csv_rows(path)):
        if len(fields) != len(header):
            return InputError(f"{path}: line {line} (row {r}) has {len(fields)} fields but the header "
                              f"has {len(header)}.")
        for name, text in zip(header, fields, strict=True):
            try:
                if "_" in text:  # Python's float() accepts 1_000, numpy does not
                    raise ValueError
                float(text)
            except ValueError:
                what = "an empty field" if not text.strip() else f"{text!r}, not a number"
                return InputError(f"{path}: line {line} (row {r}), column {name!r}: {what}.")
    return None


def _check_features(X, where, name):
    """Shape, type and finiteness of a feature array; ``where(row, col)`` words a location."""
    if X.dtype.kind not in "biuf":
        raise InputError(f"{name}: features must be numbers; got dtype {X.dtype}.")
    if X.ndim != 2:
        raise InputError(f"{name}: features must be a 2-D array (rows, features); got shape {X.shape}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{name}: no data: the features have shape {X.shape}.")
    try:
        check_finite(X, name)  # the library's own check, in one pass
    except ValueError:
        bad = ~np.isfinite(X)
        if bad.any():
            r = int(np.flatnonzero(bad.any(axis=1))[0])
            c = int(np.flatnonzero(bad[r])[0])
            raise InputError(f"{where(r, c)}: {X[r, c]} (features must be finite).") from None
        r, c = np.unravel_index(np.argmax(np.abs(X)), X.shape)
        raise InputError(f"{where(r, c)}: {X[r, c]:.3g}: features this large overflow float64 when squared; "
                         "scale them (for example standardise them).") from None


def _check_labels(y, n, where, name):
    """Labels: numbers or bools, one per row, each 0 or 1; ``where(row)`` words a location."""
    if y.dtype.kind not in "biuf":
        raise InputError(f"{name}: labels must be 0 or 1; got dtype {y.dtype}.")
    if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
        raise InputError(f"{name}: labels must be a 1-D array; got shape {y.shape}.")
    if y.shape[0] != n:
        raise InputError(f"{name}: {y.shape[0]} labels for {n} rows of features.")
    values = _squeeze(y).astype(np.float64)
    bad = (values != 0.0) & (values != 1.0)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where(r)}: label {values[r]:g} (labels must be 0 or 1).")


def _squeeze(y):
    return y[:, 0] if y.ndim == 2 else y
