"""Reading sparse training and test files for the command line: scipy ``.npz`` and svmlight / libsvm text.

``load_sparse(path, labels=None, n_features=None)`` returns ``(X, y)`` with X a
``scipy.sparse.csr_matrix`` (never densified) and y float64 labels 0/1, or
raises ``SparseInputError`` (a ValueError) naming the file:

- ``.npz`` written by ``scipy.sparse.save_npz`` plus ``labels``: a ``.npy``
  array or a text file with one label per line;
- svmlight / libsvm text (``.svm``, ``.svmlight``, ``.libsvm``) through
  scikit-learn's ``load_svmlight_file`` (needs scikit-learn); the labels are in
  the file, and labels -1/+1 are read as 0/1. A training file's column indices are
  taken as 1-based (libsvm) unless index 0 occurs (scikit-learn's ``zero_based="auto"``);
  :func:`load_svmlight` returns that ``Layout`` (base and width), and a test file
  read ``like`` it gets the same base and width, whatever indices it happens to hold (a
  zero-based test file without column 0 is not shifted); an index the training layout
  cannot hold is an error naming both files. ``n_features`` makes a file that wide.

Features are checked as the library would (finite values, indices in range;
the error gives the row and column) and labels must be 0/1.
"""

import os
from typing import NamedTuple

import numpy as np

from ._validation import BadValueError, check_csr, check_y

SPARSE_FORMATS = (".svm", ".svmlight", ".libsvm")


class SparseInputError(ValueError):
    """A problem with a sparse input file; the message names the file."""


class Layout(NamedTuple):
    """Columns of an svmlight training file: its ``path``, ``zero_based`` (its first column's index is 0,
    else 1) and ``n_features`` (its width)."""

    path: str
    zero_based: bool
    n_features: int


def is_sparse_npz(path):
    """True when ``path`` is a ``.npz`` written by ``scipy.sparse.save_npz`` (it has ``format`` and ``shape``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return isinstance(data, np.lib.npyio.NpzFile) and {"format", "shape", "data"} <= set(data.files)
    except (OSError, ValueError):
        return False


def load_sparse(path, labels=None, n_features=None):
    """(X csr_matrix (n, d), y float64 (n,)) from a scipy ``.npz`` + ``labels``, or an svmlight / libsvm file."""
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in SPARSE_FORMATS:
        return load_svmlight(path, n_features)[:2]
    elif ext == ".npz":
        if labels is None:
            raise SparseInputError(f"{path}: a scipy.sparse .npz holds no labels: pass a labels file "
                                   "(.npy, or text with one label per line).")
        X = _load_npz(path)
        y = _load_labels(labels)
    else:
        raise SparseInputError(f"{path}: unknown sparse file type {ext or '(none)'!r}; use .npz "
                               "(scipy.sparse.save_npz) or .svm / .svmlight / .libsvm.")
    return _checked(path, X, y, labels, n_features)


def load_svmlight(path, n_features=None, like=None):
    """(X csr (n, d), y (n,), ``Layout``) from an svmlight / libsvm file.

    ``like``: the training file's Layout; the file is read with its base and width
    (``n_features`` is then ignored). Without it the base is detected (0 when index 0 occurs).
    """
    path = str(path)
    X, y = _load_svmlight(path)  # raw: file index j in column j
    n = X.shape[0]
    lowest = int(X.indices.min()) if X.nnz else 1
    highest = int(X.indices.max()) if X.nnz else 0
    if like is None:
        zero_based = lowest == 0
    else:
        zero_based, n_features = like.zero_based, like.n_features
        if lowest == 0 and not zero_based:
            raise SparseInputError(f"{path}: column index 0 occurs, but the training file {like.path} is "
                                   "one-based (libsvm: its first column is 1): write both files with the "
                                   "same base (scikit-learn's dump_svmlight_file(zero_based=...)).")
    base = 0 if zero_based else 1
    width = highest + 1 - base
    if n_features is not None and width > n_features:
        where = (f"the training file {like.path} has {n_features} columns "
                 f"({'zero' if zero_based else 'one'}-based, indices up to {n_features - 1 + base})"
                 if like is not None else f"n_features is {n_features}")
        raise SparseInputError(f"{path}: column index {highest} is beyond the columns it may have: {where}.")
    d = n_features if n_features is not None else width
    X = type(X)((X.data, X.indices - base, X.indptr), shape=(n, d))
    X, y = _checked(path, X, y, path, n_features)
    return X, y, Layout(path, zero_based, d)


def _checked(path, X, y, labels_name, n_features):
    """(X, y) checked as the library would, errors naming the file (row, column) or the labels file."""
    try:
        X = check_csr(X, "X", n_features=n_features)
    except BadValueError as exc:
        raise SparseInputError(f"{path}: row {exc.row}"
                               + (f", column {exc.column}" if exc.column is not None else "")
                               + f": {exc}") from None
    except ValueError as exc:
        raise SparseInputError(f"{path}: {exc}") from None
    try:
        y = check_y(y, X.shape[0], "y")
    except BadValueError as exc:
        raise SparseInputError(f"{labels_name}: label row {exc.row}: {exc}") from None
    except ValueError as exc:
        raise SparseInputError(f"{labels_name}: {exc}") from None
    return X, y


def _load_npz(path):
    import scipy.sparse

    try:
        return scipy.sparse.load_npz(path)
    except OSError as exc:
        raise SparseInputError(f"{path}: cannot read: {exc.strerror or exc}.") from None
    except (ValueError, KeyError) as exc:
        raise SparseInputError(f"{path}: not a scipy.sparse .npz (save it with scipy.sparse.save_npz): "
                               f"{exc}") from None


def _load_labels(path):
    try:
        if os.path.splitext(path)[1].lower() == ".npy":
            y = np.load(path, allow_pickle=False)
        else:
            y = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except OSError as exc:
        raise SparseInputError(f"{path}: cannot read labels: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise SparseInputError(f"{path}: labels must be numbers, one per line ({exc}).") from None
    return y


def _load_svmlight(path):
    """(X, y) with file index j in column j (``zero_based=True``: no shift), labels -1/+1 as 0/1."""
    try:
        from sklearn.datasets import load_svmlight_file
    except ImportError:
        raise SparseInputError(f"{path}: reading svmlight / libsvm files needs scikit-learn "
                               "(pip install scikit-learn).") from None
    try:
        X, y = load_svmlight_file(path, dtype=np.float64, zero_based=True)
    except OSError as exc:
        raise SparseInputError(f"{path}: cannot read: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise SparseInputError(f"{path}: not a valid svmlight / libsvm file ({exc}).") from None
    values = set(np.unique(y).tolist())
    if values <= {-1.0, 1.0}:
        y = (y > 0).astype(np.float64)  # libsvm's binary convention
    return X, y
