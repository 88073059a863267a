"""Errors and warnings of fastinfl."""

import numpy as np


class ConvergenceError(RuntimeError):
    """An iterative method (Newton fit, conjugate gradient) did not reach its tolerance."""


class SingularHessianError(np.linalg.LinAlgError):
    """The Hessian is not positive definite: add ``damping`` or use ``l2 > 0``."""


class VerificationError(ArithmeticError):
    """``verify=True`` found a result that disagrees with the direct-inverse reference (a numerical failure)."""


class StationarityWarning(UserWarning):
    """The parameters are not a stationary point of the training objective.

    Influence functions assume grad F(theta) = 0; away from it they describe
    the quadratic model at theta, not the effect of refitting.
    """


class AccuracyWarning(UserWarning):
    """A prediction beyond first order is not converged (e.g. Newton steps of ``group_change``
    still large): take more steps, or refit."""


class StateError(ValueError):
    """A state file (``Influence.load``) that cannot be trusted: corrupt, truncated, tampered with, not a
    fastinfl state, or computed on other training data. The message names the file and what is wrong."""
