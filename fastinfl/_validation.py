"""Input checks run by every public entry point before any kernel.

This module imports neither the models nor the kernels: a check that needs a
kernel (the parallel finiteness scan of a large X) receives it as an argument.
Errors about values carry ``row`` and ``column`` attributes (:class:`BadValueError`)
so that a file loader can reword them in its own terms.
"""

import numbers
import operator
import sys

import numpy as np

from ._config import SMALL_ARRAY


class BadValueError(ValueError):
    """A ValueError about one entry of an array: ``name``, ``row`` and ``column`` (None for 1-D) say which."""

    def __init__(self, message, name, row, column=None):
        super().__init__(message)
        self.name = name
        self.row = row
        self.column = column


def is_dask_array(a):
    """True for a ``dask.array.Array`` (never imports dask: one cannot exist unless dask.array is loaded)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(a, module.Array)


def _refuse_dask(a, name):
    if is_dask_array(a):
        raise ValueError(
            f"{name} is a dask array, which is not accepted here: converting it would gather every "
            f"chunk into this process. Pass {name}.compute() if it fits in memory (models and "
            "Influence accept dask X and y directly)."
        )


def _as_array(a, name):
    _refuse_dask(a, name)
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype.kind == "O":  # numbers held as objects (a pandas frame of mixed types): converted once
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} must hold real numbers; got dtype object holding another type: {exc}") from None
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype} (Complex data not supported).")
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold real numbers; got dtype {arr.dtype}. Convert it with .astype(float)."
        )
    return arr


def _first_bad(bad):
    """(row, column or None) of the first True entry of a 1-D or 2-D boolean array."""
    flat = int(np.flatnonzero(bad.ravel())[0])
    if bad.ndim == 1:
        return flat, None
    return flat // bad.shape[1], flat % bad.shape[1]


def check_finite(arr, name, sum_squares=None):
    """Raise BadValueError naming the first entry of ``arr`` that is NaN or inf, or whose square overflows.

    One pass: the float64 sum of squares is finite exactly when every value is
    finite and every product of two values (Hessian entries) fits in float64.
    ``sum_squares(arr)`` computes it when given (a parallel kernel for large X);
    else NumPy does.
    """
    if arr.dtype.kind != "f":
        return
    if sum_squares is not None and arr.size > SMALL_ARRAY:
        total = sum_squares(arr)
    elif arr.size <= SMALL_ARRAY:  # a request's few rows: a dot product is the cheapest check
        flat = arr.reshape(-1).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # inf or NaN is the answer, not a warning
            total = float(np.dot(flat, flat))
    else:
        letters = "ij"[: arr.ndim]
        total = np.einsum(f"{letters},{letters}->", arr, arr, dtype=np.float64)
    if np.isfinite(total):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = _first_bad(bad)
        raise BadValueError(f"{name} contains NaN or inf (first at row {row}).", name, row, col)
    big = np.abs(arr)
    row, col = _first_bad(big == big.max())
    advice = " Scale the features (for example standardise them)." if name.startswith("X") else ""
    raise BadValueError(
        f"{name} holds values up to {float(big.max()):.3g} in magnitude: their squares overflow float64.{advice}",
        name, row, col,
    )


def check_X(X, name="X", n_features=None, sum_squares=None):
    """Return X as a C-contiguous float32 or float64 (n, d) array, copying only when needed.

    float32 stays float32; ints and bools become float64. ``sum_squares``: see
    :func:`check_finite`.
    """
    arr = _as_array(X, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {arr.shape}. Reshape your data: "
                         f"{name}.reshape(-1, 1) for one feature, {name}.reshape(1, -1) for one sample.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 rows.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features: 0 feature(s) (shape={arr.shape}) while a minimum of 1 is "
                         "required.")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features but the model has {n_features}."
        )
    dtype = np.float32 if arr.dtype == np.float32 else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite(arr, name, sum_squares)
    return arr


# What the labels of each loss (``fastinfl.losses``) must hold, as error messages say it.
LABELS = {"logistic": "labels 0 and 1 only", "poisson": "non-negative finite counts"}


def bad_labels(y, loss):
    """(n,) bool: the float64 labels ``y`` that ``loss`` cannot take (NaN and inf included)."""
    if loss == "poisson":
        return ~(np.isfinite(y) & (y >= 0.0))
    return (y != 0.0) & (y != 1.0)


def check_y(y, n_samples, name="y"):
    """Return labels as a float64 (n,) array of 0.0/1.0; bool and 0/1 numbers accepted.

    ``name`` is "y" or "y_<suffix>"; its features are named "X" or "X_<suffix>".
    """
    return check_labels(y, n_samples, name, "logistic")


def check_labels(y, n_samples, name="y", loss="logistic"):
    """Return the labels of ``loss`` as a float64 (n,) array: 0/1 (bool accepted) or counts >= 0 (Poisson)."""
    arr = _as_array(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {arr.shape[0]} labels but X{name[1:]} has {n_samples} rows (axis 0 must agree)."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = bad_labels(arr, loss)
    if bad.any():
        check_finite(arr, name)  # names the first NaN or inf, if that is what is wrong
        found = np.unique(arr[bad])[:5]
        row = int(np.flatnonzero(bad)[0])
        raise BadValueError(
            f"{name} must hold {LABELS[loss]}; found {found.tolist()} (first at row {row}).", name, row
        )
    return arr


def check_two_classes(y, name="y"):
    """Raise ValueError when the 0/1 labels ``y`` hold only one class (an unpenalised intercept has no optimum)."""
    if (y == y[0]).all():
        raise ValueError(
            f"{name} holds only class {int(y[0])}: with an unpenalised intercept the loss has no minimum "
            "(the intercept runs off to infinity). Fit data with both classes, or fit_intercept=False."
        )


def check_vector(v, name, size):
    """Return a finite float64 vector of length ``size``."""
    arr = np.ascontiguousarray(_as_array(v, name), dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},); got {arr.shape}.")
    check_finite(arr, name)
    return arr


def check_vectors(V, name, p):
    """Return (V2, was_1d): V of shape (p,) or (k, p) as a C-contiguous float64 (k, p) array."""
    arr = _as_array(V, name)
    was_1d = arr.ndim == 1
    if was_1d:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != p:
        raise ValueError(f"{name} must have shape ({p},) or (k, {p}); got {np.shape(V)}.")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    check_finite(arr, name)
    return arr, was_1d


def check_scalar(value, name, *, min_value=0.0, strict=False, integer=False, allow_none=False):
    """Return a validated non-negative (or positive) float or int."""
    if value is None and allow_none:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a real number"
        raise ValueError(f"{name} must be {what}; got {value!r}.")
    value = operator.index(value) if integer else float(value)
    if not integer and not np.isfinite(value):  # a Python int is finite, and may not fit a float (10**400)
        raise ValueError(f"{name} must be finite; got {value}.")
    if value < min_value or (strict and value == min_value):
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be {rel} {min_value}; got {value}.")
    return value


def check_indices(idx, n, name="train_idx"):
    """Return int64 indices in [0, n); None means all; negatives count from the end.

    Duplicates are allowed and give repeated columns.
    """
    if idx is None:
        return np.arange(n, dtype=np.int64)
    _refuse_dask(idx, name)
    arr = np.asarray(idx)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if arr.dtype == bool:
        raise ValueError(f"{name} must hold integer indices; got a boolean array (use np.flatnonzero).")
    if arr.dtype == object and arr.size and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.flat):  # Python ints: any size
        big = next((int(v) for v in arr.flat if not -n <= v < n), None)
        if big is not None:
            raise ValueError(f"{name} holds {big}, out of range for {n} training points (valid: -{n} to {n - 1}).")
        arr = arr.astype(np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer indices; got dtype {arr.dtype}.")
    bad = (arr >= n) if arr.dtype.kind == "u" else (arr < -n) | (arr >= n)  # before any cast wraps
    if bad.any():
        raise ValueError(
            f"{name} holds {arr[bad][0]}, out of range for {n} training points "
            f"(valid: -{n} to {n - 1})."
        )
    arr = arr.astype(np.int64)
    return np.ascontiguousarray(np.where(arr < 0, arr + n, arr))


def check_bool(value, name):
    """Return ``value`` if it is True or False (numpy bools included), else raise ValueError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


def check_choice(value, name, choices):
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


# ------------------------------------------------------ multi-class labels
def check_class_labels(y, n_samples, classes=None, name="y"):
    """Return (codes int64 (n,), classes (K,)) for labels of any type (ints, strings, bools).

    With ``classes`` None they are the sorted unique labels (at least two);
    otherwise every label must be one of ``classes`` (sorted, as a model's
    ``classes_``) and codes index into it.
    """
    try:
        arr = np.asarray(y)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {arr.shape[0]} labels but X{name[1:]} has {n_samples} rows (axis 0 must agree)."
        )
    if arr.dtype.kind == "f":
        check_finite(arr, name)
    if arr.dtype.kind not in "biufUSO":
        raise ValueError(f"{name} must hold class labels (integers or strings); got dtype {arr.dtype}.")
    if classes is None:
        try:
            classes = np.unique(arr)
        except TypeError as exc:
            raise ValueError(f"{name} holds labels that cannot be sorted together: {exc}") from None
        if classes.shape[0] < 2:
            raise ValueError(
                f"{name} holds only one class ({classes.tolist()}): a classifier needs at least two."
            )
    try:
        codes = np.clip(np.searchsorted(classes, arr), 0, classes.shape[0] - 1)
        bad = classes[codes] != arr
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} labels cannot be compared with the model's classes: {exc}") from None
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        found = np.unique(arr[bad])[:5].tolist()
        raise BadValueError(
            f"{name} holds labels {found} that are not among the model's classes {classes.tolist()} "
            f"(first at row {row}).", name, row
        )
    return np.ascontiguousarray(codes, dtype=np.int64), classes


# ------------------------------------------------------------------ scipy.sparse input
def is_sparse(X):
    """True for a scipy.sparse matrix or array (scipy.sparse is imported only when X comes from it)."""
    if not type(X).__module__.startswith("scipy.sparse"):
        return False
    import scipy.sparse

    return scipy.sparse.issparse(X)


def check_csr(X, name="X", n_features=None):
    """Return X as a CSR matrix whose arrays the CSR kernels take, checked in O(nnz); copies only when needed.

    CSR is kept as it is (its arrays are not copied); any other format (CSC,
    COO, ...) is converted once with ``tocsr()``. Values: float32 stays float32,
    other reals become float64; indices and indptr become int32 or int64 (both
    the same). Unsorted and repeated column indices are accepted: a repeated
    column counts as the sum of its entries, as in scipy. Checks: shape (not
    empty, ``n_features``), indptr (starts at 0, non-decreasing), column indices
    in range and finite values; a bad entry is reported by its row and column.
    """
    import scipy.sparse

    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}.")
    n, d = X.shape
    if n == 0:
        raise ValueError(f"{name} is empty: it has 0 rows.")
    if d == 0:
        raise ValueError(f"{name} has no features: shape {X.shape}.")
    if n_features is not None and d != n_features:
        raise ValueError(f"{name} has {d} features but the model has {n_features}.")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}. Convert it with .astype(float).")
    if X.format != "csr":
        X = X.tocsr()
    indptr, indices, data = X.indptr, X.indices, X.data
    if indptr.ndim != 1 or indptr.shape[0] != n + 1 or indptr.dtype.kind not in "iu":
        raise ValueError(f"{name}.indptr must be an integer array of length n_samples + 1 = {n + 1}; "
                         f"got {indptr.dtype} of shape {indptr.shape}.")
    if indptr[0] != 0:
        raise ValueError(f"{name}.indptr must start at 0; got {indptr[0]}.")
    steps = np.diff(indptr)
    if (steps < 0).any():
        row = int(np.flatnonzero(steps < 0)[0])
        raise BadValueError(f"{name}.indptr decreases at row {row}: a malformed CSR matrix.", name, row)
    nnz = int(indptr[-1])
    if indices.shape[0] < nnz or data.shape[0] < nnz or indices.dtype.kind not in "iu":
        raise ValueError(f"{name} is a malformed CSR matrix: indptr[-1] = {nnz} but indices has "
                         f"{indices.shape[0]} and data {data.shape[0]} entries.")
    if indices.shape[0] > nnz or data.shape[0] > nnz:
        indices, data = indices[:nnz], data[:nnz]
    if nnz:
        bad = None
        lo, hi = indices.min(), indices.max()
        if lo < 0 or hi >= d:
            bad = (indices < 0) | (indices >= d)
        if bad is not None:
            s = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(indptr, s, side="right") - 1)
            raise BadValueError(f"{name} has column index {int(indices[s])} out of range for {d} columns "
                                f"(first at row {row}).", name, row, int(indices[s]))
    big = np.int64 if (nnz > np.iinfo(np.int32).max or indptr.dtype.itemsize > 4
                       or indices.dtype.itemsize > 4 or indptr.dtype.kind == "u") else np.int32
    vdtype = np.float32 if data.dtype == np.float32 else np.float64
    new = (np.ascontiguousarray(indptr, dtype=big), np.ascontiguousarray(indices, dtype=big),
           np.ascontiguousarray(data, dtype=vdtype))
    if any(a is not b for a, b in zip(new, (X.indptr, X.indices, X.data))):
        cls = scipy.sparse.csr_array if isinstance(X, scipy.sparse.sparray) else scipy.sparse.csr_matrix
        X = cls((new[2], new[1], new[0]), shape=(n, d), copy=False)
        # scipy may narrow the index dtype it was given: the kernels get the arrays chosen here
        X.indptr, X.indices = new[0], new[1]
    _check_finite_csr(new[2], new[0], new[1], name)
    return X


def _check_finite_csr(data, indptr, indices, name):
    """BadValueError naming the row and column of the first NaN/inf (or overflowing) stored value."""
    if data.size == 0:
        return
    total = np.einsum("i,i->", data, data, dtype=np.float64)
    if np.isfinite(total):
        return
    bad = ~np.isfinite(data)
    what = "contains NaN or inf"
    if not bad.any():
        big = np.abs(data)
        bad = big == big.max()
        what = f"holds values up to {float(big.max()):.3g} in magnitude: their squares overflow float64"
    s = int(np.flatnonzero(bad)[0])
    row = int(np.searchsorted(indptr, s, side="right") - 1)
    col = int(indices[s])
    raise BadValueError(f"{name} {what} (first at row {row}, column {col}).", name, row, col)


def check_groups(groups, n, name="groups"):
    """Groups as a list of distinct, sorted int64 index arrays (each non-empty, in [0, n)).

    ``groups`` is a list of index arrays, or an (n,) integer array of group labels
    (label g >= 0 puts the point in group g; negative labels put it in no group;
    groups are numbered by label, empty labels skipped).
    """
    if isinstance(groups, np.ndarray) and groups.ndim == 1 and groups.shape[0] == n and \
            groups.dtype.kind in "iu" and not isinstance(groups, list):
        labels = groups.astype(np.int64)
        out = [np.flatnonzero(labels == g) for g in np.unique(labels[labels >= 0])]
    else:
        if isinstance(groups, np.ndarray) and groups.ndim == 1:
            raise ValueError(
                f"{name} as an array must be (n,) = ({n},) integer group labels; got shape {groups.shape} "
                f"and dtype {groups.dtype}. Pass a list of index arrays for explicit groups."
            )
        try:
            items = list(groups)
        except TypeError:
            raise ValueError(f"{name} must be a list of index arrays or (n,) integer labels; "
                             f"got {type(groups).__name__}.") from None
        out = []
        for g, item in enumerate(items):
            idx = check_indices(item, n, f"{name}[{g}]")
            if np.unique(idx).shape[0] != idx.shape[0]:
                raise ValueError(f"{name}[{g}] lists a training point more than once.")
            out.append(np.sort(idx))
    if not out:
        raise ValueError(f"{name} holds no group (every label negative, or an empty list).")
    for g, idx in enumerate(out):
        if idx.shape[0] == 0:
            raise ValueError(f"{name}[{g}] is empty.")
        if idx.shape[0] >= n:
            raise ValueError(f"{name}[{g}] removes every training point: nothing is left to refit.")
    return out
