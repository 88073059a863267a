"""The operator layer: one object per data set that runs every pass over its rows.

:func:`as_operator` turns user data into the operator for its kind (validated
once); models and :class:`fastinfl.Influence` call only operators and solvers,
never kernels. See docs/architecture.md for the layers and how to add a kind of data.
"""

from .. import _validation
from .base import (CONVERGED, MAX_ITER, NOT_POSITIVE, CGResult, Curvature, HessianOperator, Operator, Setup,
                   TopK)

__all__ = ["CONVERGED", "MAX_ITER", "NOT_POSITIVE", "CGResult", "Curvature", "HessianOperator", "Operator",
           "Setup", "TopK", "as_operator"]


def as_operator(X, y=None, fit_intercept=True, name="X", n_features=None, defer_finite=False):
    """The :class:`Operator` over (X, y), validated: y (if given) must hold 0/1 labels for every row of X.

    ``X`` may already be an :class:`Operator` (returned as is when ``y`` is None).
    ``name`` ("X", "X_train", "X_test") names the arguments in errors; labels are
    named "y" plus the same suffix. ``n_features`` checks the column count.
    ``defer_finite``: the check that X is finite (a pass over X) is left to the
    operator's first pass, which raises the same error before returning anything
    (the caller's next step is :meth:`Operator.setup`, which reads X anyway).
    """
    if isinstance(X, Operator):
        if y is not None:
            raise ValueError(f"{name} is already an operator; pass its labels when building it.")
        return X
    from .dense import DenseOperator, sum_squares

    X = _validation.check_X(X, name, n_features=n_features,
                            sum_squares=_finite_later if defer_finite else sum_squares)
    if y is not None:
        y = _validation.check_y(y, X.shape[0], "y" + name[1:])
    return DenseOperator(X, y, fit_intercept, unchecked=name if defer_finite else None)


def _finite_later(X):
    """check_X's finiteness test when the operator's first pass does it: 0.0 (passes) for now."""
    return 0.0
