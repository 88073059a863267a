"""fastinfl: fast, verified influence functions for L2-regularised logistic regression."""

from . import datasets, reference, robustness
from .exceptions import (
    AccuracyWarning,
    ConvergenceError,
    SingularHessianError,
    StateError,
    StationarityWarning,
    VerificationError,
)
from .influence import Influence, TopK
from .loo import loo_retrain
from .classifier import LogisticRegression
from .multinomial import MultinomialLogisticRegression
from .poisson import PoissonRegression
from .operators.policy import get_num_threads, set_compile_notice, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "AccuracyWarning",
    "ConvergenceError",
    "Influence",
    "LogisticRegression",
    "MultinomialLogisticRegression",
    "PoissonRegression",
    "SingularHessianError",
    "StateError",
    "TopK",
    "StationarityWarning",
    "VerificationError",
    "datasets",
    "get_num_threads",
    "loo_retrain",
    "reference",
    "robustness",
    "set_compile_notice",
    "set_num_threads",
]
