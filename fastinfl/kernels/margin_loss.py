"""Per-row losses of one margin z = x~ . theta (K = 1), chosen by an integer ``family`` code.

Every pass that reads labels (loss and gradient, setup, per-example
gradients, curvature) takes ``family`` as an argument and calls these
helpers once per row: one compiled kernel serves every loss (a runtime code,
not a specialisation: no extra compile per model, and the branch costs
nothing beside the row's dot product). The passes that use only the
residuals r_i = d loss / d z and weights w_i = d^2 loss / d z^2 (Hessian, HVP,
influence, top-k) are loss-free. Adding a loss: a code here, its branch in
each helper, and its Python description in ``fastinfl/losses.py``.

- ``LOGISTIC``: log(1 + e^z) - y z, y in {0, 1} (stable forms in ``sigmoid``);
- ``POISSON``: e^z - y z (log link; y >= 0), r = e^z - y, w = e^z.
"""

import math

from .._config import kernel
from . import sigmoid

LOGISTIC = 0
POISSON = 1
FAMILIES = {"logistic": LOGISTIC, "poisson": POISSON}


@kernel(inline=True)
def loss_residual_weight(z, y, family):
    """(loss, residual, weight) of label ``y`` at margin ``z``."""
    if family == POISSON:
        mu = math.exp(z)
        return mu - y * z, mu - y, mu
    return sigmoid.loss_residual_weight(z, y)


@kernel(inline=True)
def residual(z, y, family):
    """d loss / d z at margin ``z``."""
    if family == POISSON:
        return math.exp(z) - y
    return sigmoid.residual(z, y)


@kernel()
def value(z, y, family):
    """The loss of label ``y`` at margin ``z`` (Poisson: without the constant log(y!))."""
    if family == POISSON:
        return math.exp(z) - y * z
    return sigmoid.log_loss(z, y)


@kernel()
def mean(z, family):
    """The predicted mean at margin ``z``: sigma(z) (P(y = 1)) or e^z (the Poisson rate)."""
    if family == POISSON:
        return math.exp(z)
    return sigmoid.expit(z)
