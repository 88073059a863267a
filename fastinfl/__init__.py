"""fastinfl: fast, verified influence functions for L2-regularised logistic regression."""

from . import datasets, reference
from .exceptions import ConvergenceError, SingularHessianError, StationarityWarning, VerificationError
from .influence import Influence
from .model import LogisticRegression

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "Influence",
    "LogisticRegression",
    "SingularHessianError",
    "StationarityWarning",
    "VerificationError",
    "datasets",
    "reference",
]
