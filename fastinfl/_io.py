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
    """One input file, read and checked.

    ``X`` (n, d) features, ``y`` (n,) labels; for CSV also the feature column names, the label
    column's name, the row IDs (from ``--id-col`` or a leading unnamed index column: strings, one
    per row) and notes for the user (such as "column 0 read as the row index"); else None / [].
    ``layout``: for an svmlight file, its column base and width (``io_sparse.Layout``), else None.
    """

    X: np.ndarray
    y: np.ndarray
    columns: list | None
    label: str | None = None
    ids: list | None = None
    notes: tuple = ()
    layout: object = None


_NEEDS_LABELS = ("the test file needs its labels too (influence is measured on each test point's loss, "
                 "which needs its label)")


def load_dataset(path, label_col=None, labels=None, id_col=None, drop_cols=(), n_features=None,
                 multiclass=False, labels_optional=False):
    """Read features and labels from ``path`` (.npz, .npy or .csv) and check them.

    Parameters
    ----------
    path : str
        ``.npz`` with arrays ``X`` and ``y``; ``.npy`` with the labels in the last column,
        or all columns features when ``labels`` is given; ``.csv`` with a header line.
    label_col : str, optional
        CSV only: the label column, by name or by 0-based position in the header (negative
        counts from the end: -1 is the last). Default: the last column (after ID and dropped
        columns), for a training file (``n_features`` None) only when it holds exactly two
        distinct values or ``multiclass`` is set; otherwise an InputError lists the columns
        that could be the label. The same rule holds for the last column of a ``.npy`` file.
    labels : str, optional
        ``.npy`` only: a ``.npy`` file of labels, one per row of ``path``.
    id_col : str, optional
        CSV only: a column of row IDs (any text), carried into the output, never a feature.
        Without it, a leading column with an empty name (pandas' ``to_csv`` index) is the IDs.
    drop_cols : sequence of str
        CSV only: columns to ignore.
    n_features : int, optional
        The training file's feature count, when ``path`` is the test file: a test file with
        exactly that many columns and no labels gets a message saying it needs its labels,
        or, with ``labels_optional``, is read with ``y`` None (no labels).
    multiclass : bool
        A training file's last column is the label whatever its number of distinct values.
    labels_optional : bool
        A test file (``n_features`` given) may have no labels: ``y`` is then None.

    Raises
    ------
    InputError
        Unreadable file, wrong shape or type, non-finite feature, label other than 0/1.
    """
    path = str(path)
    ext = _extension(path)
    optional = labels_optional and n_features is not None
    if ext == ".npz":
        return _load_npz(path, n_features is not None, optional)
    if ext == ".npy":
        return _load_npy(path, labels, n_features, multiclass, optional)
    return _load_csv(path, label_col, id_col, tuple(drop_cols), n_features, multiclass, optional)


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


def _load_npz(path, is_test=False, optional=False):
    data = _np_load(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not a .npz archive (it holds a single array: save X and y with "
                         "numpy.savez).")
    with data:
        missing = [key for key in ("X", "y") if key not in data.files]
        if optional and missing == ["y"]:  # a test file without labels: the model's predicted labels
            try:
                X = data["X"]
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise InputError(f"{path}: cannot read its arrays ({exc}).") from None
            _check_features(X, lambda r, c: f"{path}: array X, row {r}, column {c}", f"{path}: array X")
            return Dataset(X, None, None)
        if missing:
            found = ", ".join(data.files) or "none"
            hint = f"; {_NEEDS_LABELS}" if is_test and missing == ["y"] else ""
            raise InputError(f"{path}: no array named {missing[0]!r} (it has {found}; expected X and y){hint}.")
        try:
            X, y = data["X"], data["y"]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: cannot read its arrays ({exc}).") from None
    _check_features(X, lambda r, c: f"{path}: array X, row {r}, column {c}", f"{path}: array X")
    _check_labels(y, X.shape[0], lambda r: f"{path}: array y, row {r}", f"{path}: array y")
    return Dataset(X, _squeeze(y), None)


def _load_npy(path, labels, n_features=None, multiclass=False, optional=False):
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
    if n_features is not None and arr.ndim == 2 and arr.shape[1] == n_features:
        if optional:  # a test file without labels: the model's predicted labels
            _check_features(arr, where, path)
            return Dataset(arr, None, None)
        raise InputError(f"{path}: {arr.shape[1]} columns, as many as the training file has features: "
                         f"{_NEEDS_LABELS}. Put them in the last column, or pass --labels.")
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InputError(f"{path}: expected a 2-D array of features with the labels in the last column; "
                         f"got shape {arr.shape} (or pass --labels).")
    d = arr.shape[1] - 1
    X = np.ascontiguousarray(arr[:, :d])
    _check_features(X, where, path)
    _check_labels(arr[:, d], arr.shape[0], lambda r: f"{path}: row {r}, column {d} (labels, the last)", path)
    if n_features is None and not multiclass:
        count = np.unique(arr[:, d]).shape[0]
        if count != 2:
            raise InputError(f"{path}: its last column (column {d}), read as the labels, has {_values(count)}: "
                             "a binary label has two. If it is a label of several classes, pass --multiclass; "
                             "if the labels are elsewhere, save the features alone and pass --labels "
                             "TRAIN_LABELS TEST_LABELS.")
    return Dataset(X, arr[:, d], None)


def _values(count):
    return "one distinct value" if count == 1 else f"{count} distinct values"


CANDIDATE_MAX_VALUES = 10  # columns with 2..10 distinct values are listed as possible labels


def _label_candidates(path, delim, header, skip):
    """'name' (k values) of the columns (not in ``skip``) with 2 to 10 distinct values, two-valued first."""
    seen = [set() for _ in header]
    for _, fields in _csv_rows(path, delim):
        for j, text in enumerate(fields[:len(header)]):
            if j not in skip and len(seen[j]) <= CANDIDATE_MAX_VALUES:
                seen[j].add(text.strip())
    counts = [(len(values), j) for j, values in enumerate(seen)
              if j not in skip and 2 <= len(values) <= CANDIDATE_MAX_VALUES]
    return [f"{header[j]!r} ({k} values)" for k, j in sorted(counts)]


def resolve_column(path, header, label_col, listing):
    """The index of the label column ``label_col``: a column name, else a 0-based position (negative
    from the end); InputError naming the columns when it is neither."""
    if label_col in header:
        return header.index(label_col)
    try:
        pos = int(label_col)
    except (TypeError, ValueError):
        return None
    if not -len(header) <= pos < len(header):
        raise InputError(f"{path}: --label {label_col}: no column at that position; the file has {len(header)} "
                         f"columns, positions 0 to {len(header) - 1} (or -1 for the last): {listing}.")
    return pos % len(header)


_DELIMITERS = (",", ";", "\t", "|")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path, label_col, id_col, drop_cols, n_features, multiclass=False, optional=False):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            second = f.readline()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a CSV text file ({exc}).") from None
    # The delimiter: the one the header line uses most (a header has no decimal commas).
    delim = max(_DELIMITERS, key=first.count)
    delim = delim if first.count(delim) else ","
    shown = {"\t": "tab"}.get(delim, repr(delim))
    try:
        header = next(csv.reader([first], delimiter=delim), [])
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV text file ({exc}).") from None
    header = [name.strip() for name in header]
    if any(header) and all(_is_number(name) for name in header if name):
        raise InputError(f"{path}: line 1 ({first.strip()[:60]!r}) holds numbers, not column names: the "
                         "file has no header line. Add one naming the columns (the labels in the last "
                         "column, or in the one named by --label).")
    notes = [] if delim == "," else [f"{path}: fields separated by {shown}."]
    listing = ", ".join(name or "(unnamed)" for name in header)

    def column(name, option):
        j = resolve_column(path, header, name, listing) if option == "--label" else (
            header.index(name) if name in header else None)
        if j is None:
            hint = f"; {_NEEDS_LABELS}" if option == "--label" and n_features is not None else ""
            what = "for the labels" if option == "--label" else f"for {option}"
            raise InputError(f"{path}: no column named {name!r} {what} (columns: {listing}){hint}.")
        return j

    id_j = None
    if id_col is not None:
        id_j = column(id_col, "--id-col")
    elif len(header) > 2 and header[0] == "":
        id_j = 0
        notes.append(f"{path}: column 0 has no name: read as the row index (as pandas' to_csv writes it), "
                     "not as a feature; the output gives each row's index from it (train_id, test_id).")
    dropped = {column(name, "--drop-cols") for name in drop_cols}
    other = [j for j in range(len(header)) if j != id_j and j not in dropped]
    unlabelled = optional and len(other) == n_features  # a test file of features only: no labels
    if label_col is not None and not (unlabelled and label_col not in header):
        label_j = column(label_col, "--label")
        if label_j == id_j or label_j in dropped:
            raise InputError(f"{path}: column {header[label_j]!r} is both the labels and an ID or dropped column.")
    elif unlabelled:
        label_j = None
    elif other:
        label_j = other[-1]
        if n_features is not None and len(other) == n_features:
            raise InputError(f"{path}: {len(other)} columns ({', '.join(header[j] for j in other)}), as many "
                             f"as the training file has features: {_NEEDS_LABELS}. Add the label column "
                             "(the last, or the one named by --label).")
    features = [j for j in other if j != label_j]
    if label_col is None and not other or not features:
        raise InputError(f"{path}: expected a header line naming at least one feature column and a "
                         f"label column; got {len(header)} column(s) ({listing}).")
    n_fields = len(next(csv.reader([second], delimiter=delim), [])) if second.strip() else len(header)
    if n_fields != len(header):
        raise InputError(f"{path}: line 2 (row 0) has {n_fields} fields but the header has {len(header)}"
                         f"{'' if delim == ',' else f' (fields separated by {shown})'}.")
    # IDs and labels are text (labels may be class names): read with the csv module, checking every
    # row's field count on the way; the features with numpy.
    ids = [] if id_j is not None else None
    label_text = []
    for r, (line, fields) in enumerate(_csv_rows(path, delim)):
        if len(fields) != len(header):
            raise _ragged(path, line, r, fields, header)
        if id_j is not None:
            ids.append(fields[id_j].strip())
        if label_j is None:
            continue
        text = fields[label_j].strip()
        if not text:
            raise InputError(f"{_csv_where(path, r, delim)}, column {header[label_j]!r}: an empty label.")
        label_text.append(text)
    numeric = sorted(features)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            data = np.loadtxt(path, dtype=np.float64, delimiter=delim, skiprows=1, ndmin=2, comments=None,
                              quotechar='"', encoding="utf-8-sig",
                              usecols=numeric if len(numeric) < len(header) else None)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a CSV text file ({exc}).") from None
    except ValueError as exc:
        raise (_csv_parse_error(path, header, delim, numeric, label_j)
               or InputError(f"{path}: malformed CSV ({exc}).")) from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: no data rows after the header.")
    if data.shape[1] != len(numeric):
        raise InputError(f"{path}: the header has {len(header)} columns but the data rows have "
                         f"{data.shape[1]}.")
    pos = {j: i for i, j in enumerate(numeric)}
    columns = [header[j] for j in features]
    X = np.ascontiguousarray(data[:, [pos[j] for j in features]])
    _check_features(X, lambda r, c: f"{_csv_where(path, r, delim)}, column {columns[c]!r}", path)
    if label_j is None:
        return Dataset(X, None, columns, None, ids, tuple(notes))
    y = _label_array(label_text)
    _check_labels(y, X.shape[0], lambda r: f"{_csv_where(path, r, delim)}, column {header[label_j]!r}", path)
    if label_col is None and n_features is None and not multiclass:
        count = len(set(label_text))
        if count != 2:  # the last column is the label only when it is binary, or when told
            name = header[label_j]
            found = _label_candidates(path, delim, header, {id_j, label_j} | dropped)
            shown = ("columns with 2 to 10 distinct values: " + ", ".join(found[:8])
                     + (f" and {len(found) - 8} more" if len(found) > 8 else "")) if found else \
                "no other column has 2 to 10 distinct values"
            raise InputError(f"{path}: the last column, {name!r}, has {_values(count)}, so it is not taken as "
                             f"the label unasked: name the label column with --label COLUMN (a name, or a "
                             f"0-based position such as -1) or pass --multiclass to make {name!r} the label of "
                             f"a multi-class model ({shown}).")
    return Dataset(X, y, columns, header[label_j], ids, tuple(notes))


def _csv_rows(path, delim=","):
    """(line number, fields) of the data rows of a CSV file, skipping empty lines as numpy does."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delim)
        next(reader, None)
        for fields in reader:
            if fields:
                yield reader.line_num, fields


def _csv_where(path, row, delim=","):
    """'PATH: line L (row R)' for data row ``row`` (0-based)."""
    for r, (line, _) in enumerate(_csv_rows(path, delim)):
        if r == row:
            return f"{path}: line {line} (row {row})"
    return f"{path}: row {row}"


def _ragged(path, line, r, fields, header):
    return InputError(f"{path}: line {line} (row {r}) has {len(fields)} fields but the header "
                      f"has {len(header)}.")


def _csv_parse_error(path, header, delim, numeric, label_j):
    """InputError locating the first field numpy could not read, or None if none is found."""
    for r, (line, fields) in enumerate(_csv_rows(path, delim)):
        if len(fields) != len(header):
            return _ragged(path, line, r, fields, header)
        for j in numeric:
            name, text = header[j], fields[j]
            try:
                if "_" in text:  # Python's float() accepts 1_000, numpy does not
                    raise ValueError
                float(text)
            except ValueError:
                if not text.strip():
                    return InputError(f"{path}: line {line} (row {r}), column {name!r}: an empty field.")
                hint = ""
                if "," in text and delim != ",":
                    hint = f" (decimal commas? fields are separated by {delim!r}; write 1.5, not 1,5)"
                elif j != label_j:
                    hint = (f" (if column {name!r} holds names or IDs, pass --id-col {name} to carry it into "
                            f"the output, or --drop-cols {name} to ignore it)")
                return InputError(f"{path}: line {line} (row {r}), column {name!r}: {text!r}, not a "
                                  f"number{hint}.")
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


def _label_array(texts):
    """Labels read as text: float64 when every one is a number, else the strings (class names)."""
    try:
        return np.array([float(t) for t in texts])
    except ValueError:
        return np.array(texts)


def _check_labels(y, n, where, name):
    """Labels: one per row, class labels: 0/1 (binary), integers, or text names (several classes).

    ``where(row)`` words a location. Numbers must be finite integers (0.5 is not a class).
    """
    if y.dtype.kind not in "biufU":
        raise InputError(f"{name}: labels must be numbers or text class names; got dtype {y.dtype}.")
    if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
        raise InputError(f"{name}: labels must be a 1-D array; got shape {y.shape}.")
    if y.shape[0] != n:
        raise InputError(f"{name}: {y.shape[0]} labels for {n} rows of features.")
    if y.dtype.kind == "U":
        return
    values = _squeeze(y).astype(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where(r)}: label {values[r]:g} (labels are classes: 0 and 1 for a binary "
                         "model, or integers or names for several classes).")


def _squeeze(y):
    return y[:, 0] if y.ndim == 2 else y
