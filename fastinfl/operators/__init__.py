"""The operator layer: one object per data set that runs every pass over its rows.

:func:`as_operator` turns user data into the operator for its kind (validated
once); models and :class:`fastinfl.Influence` call only operators and solvers,
never kernels. See docs/architecture.md for the layers and how to add a kind of data.
"""

from .. import _validation
from .base import (CONVERGED, MAX_ITER, NOT_POSITIVE, CGResult, Curvature, HessianOperator, Operator, Setup,
                   TopK)

__all__ = ["CONVERGED", "DEVICES", "MAX_ITER", "NOT_POSITIVE", "CGResult", "Curvature", "HessianOperator",
           "Operator", "Setup", "TopK", "as_operator"]


DEVICES = (None, "cpu", "cuda")


def as_operator(X, y=None, fit_intercept=True, name="X", n_features=None, device=None, defer_finite=False,
                loss="logistic"):
    """The :class:`Operator` over (X, y) for ``loss``, validated: y (if given) must hold its labels for every row.

    ``loss``: "logistic" (labels 0/1) or "poisson" (counts >= 0), see ``fastinfl.losses``.

    ``X`` may already be an :class:`Operator` (returned as is when ``y`` is None).
    A ``dask.array.Array`` X (with dask or NumPy y) gives a
    ``fastinfl.operators.dask.DaskOperator``; dask is imported only then.
    ``name`` ("X", "X_train", "X_test") names the arguments in errors; labels are
    named "y" plus the same suffix. ``n_features`` checks the column count.
    ``device="cuda"`` (or X a CuPy / Numba device array) gives the CUDA operator
    (``operators/cuda.py``, optional extra ``cuda``), imported only then.
    ``defer_finite``: the check that X is finite (a pass over X) is left to the
    operator's first pass, which raises the same error before returning anything
    (the caller's next step is :meth:`Operator.setup`, which reads X anyway).
    """
    if isinstance(X, Operator):
        if y is not None:
            raise ValueError(f"{name} is already an operator; pass its labels when building it.")
        return X
    if _validation.is_dask_array(X):  # before check_X, which would gather it
        if device == "cuda":
            raise ValueError(f"{name} is a dask array: its blocks run on CPU workers; device='cuda' does not "
                             "apply to it.")
        from .dask import from_dask

        return from_dask(X, y, fit_intercept, name, n_features, loss)
    if _validation.is_sparse(X):  # scipy.sparse: CSR kept, other formats converted to CSR once
        from .csr import CSROperator

        if device == "cuda":
            raise ValueError(f"{name} is a scipy.sparse matrix: device='cuda' takes dense arrays only.")
        X = _validation.check_csr(X, name, n_features=n_features)
        if y is not None:
            y = _validation.check_labels(y, X.shape[0], "y" + name[1:], loss)
        return CSROperator(X, y, fit_intercept, loss)
    if device not in DEVICES:
        raise ValueError(f"device must be None, 'cpu' or 'cuda'; got {device!r}.")
    on_device = hasattr(X, "__cuda_array_interface__")
    if device == "cuda" or (on_device and device is None):
        return _cuda_operator(X, y, fit_intercept, name, n_features, loss)
    if on_device:
        raise ValueError(f"{name} is a GPU array but device='cpu': pass device='cuda' or copy it to the host.")
    from .dense import DenseOperator, sum_squares

    X = _validation.check_X(X, name, n_features=n_features,
                            sum_squares=_finite_later if defer_finite else sum_squares)
    if y is not None:
        y = _validation.check_labels(y, X.shape[0], "y" + name[1:], loss)
    return DenseOperator(X, y, fit_intercept, unchecked=name if defer_finite else None, loss=loss)


def _finite_later(X):
    """check_X's finiteness test when the operator's first pass does it: 0.0 (passes) for now."""
    return 0.0


def _cuda_operator(X, y, fit_intercept, name, n_features, loss):
    """CudaOperator over (X, y): host X validated here then moved once; device X and all y checked there."""
    try:
        from .cuda import CudaOperator
    except ImportError as exc:
        raise ImportError(f"device='cuda' needs numba-cuda and an NVIDIA GPU: from a checkout, pip install '.[cuda]' ({exc})") from None
    if not hasattr(X, "__cuda_array_interface__"):
        from .dense import sum_squares

        X = _validation.check_X(X, name, n_features=n_features, sum_squares=sum_squares)
    elif n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the model has {n_features}.")
    return CudaOperator(X, y, fit_intercept, name, loss)
