"""Reading sparse training and test files for the command line: scipy ``.npz`` and svmlight / libsvm text.

``load_sparse(path, labels=None, n_features=None)`` returns ``(X, y)`` with X a
``scipy.sparse.csr_matrix`` (never densified) and y float64 labels 0/1, or
raises :class:`SparseInputError` (a ValueError) naming the file:

- ``.npz`` written by ``scipy.sparse.save_npz`` plus ``labels``: a ``.npy``
  array or a text file with one label per line;
- svmlight / libsvm text (``.svm``, ``.svmlight``, ``.libsvm``) through
  scikit-learn's ``load_svmlight_file`` (needs scikit-learn); the labels are in
  the file, and labels -1/+1 are read as 0/1; column indices are taken as 1-based
  (libsvm) unless index 0 occurs (scikit-learn's ``zero_based="auto"``). ``n_features`` makes a test file
  as wide as its training file (svmlight stores no width).

Features are checked as the library would (finite values, indices in range;
the error gives the row and column) and labels must be 0/1.
"""

import os

import numpy as np

from ._validation import BadValueError, check_csr, check_y

SPARSE_FORMATS = (".svm", ".svmlight", ".libsvm")


class SparseInputError(ValueError):
    """A problem with a sparse input file; the message names the file."""


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
        X, y = _load_svmlight(path, n_features)
        labels_name = path
    elif ext == ".npz":
        if labels is None:
            raise SparseInputError(f"{path}: a scipy.sparse .npz holds no labels: pass a labels file "
                                   "(.npy, or text with one label per line).")
        X = _load_npz(path)
        y = _load_labels(labels)
        labels_name = labels
    else:
        raise SparseInputError(f"{path}: unknown sparse file type {ext or '(none)'!r}; use .npz "
                               "(scipy.sparse.save_npz) or .svm / .svmlight / .libsvm.")
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


def _load_svmlight(path, n_features):
    try:
        from sklearn.datasets import load_svmlight_file
    except ImportError:
        raise SparseInputError(f"{path}: reading svmlight / libsvm files needs scikit-learn "
                               "(pip install scikit-learn).") from None
    try:
        X, y = load_svmlight_file(path, n_features=n_features, dtype=np.float64)
    except OSError as exc:
        raise SparseInputError(f"{path}: cannot read: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise SparseInputError(f"{path}: not a valid svmlight / libsvm file ({exc}).") from None
    values = set(np.unique(y).tolist())
    if values <= {-1.0, 1.0}:
        y = (y > 0).astype(np.float64)  # libsvm's binary convention
    return X, y
