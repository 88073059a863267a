"""Scalar helpers in margin space, stable for any finite margin ``z``.

Branching on the sign of ``z`` keeps every ``exp`` argument <= 0, so nothing
overflows (scikit-learn's ``_loss``, glum's binomial family).
"""

import math

from .._config import kernel


@kernel()
def log1pexp(z):
    """log(1 + exp(z)) without overflow (softplus)."""
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@kernel()
def expit(z):
    """Logistic sigmoid 1 / (1 + exp(-z))."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@kernel()
def residual(z, y):
    """d loss / d z = expit(z) - y, with the y = 1 branch as -expit(-z) (no cancellation)."""
    if y > 0.5:
        return -expit(-z)
    return expit(z)


@kernel()
def hessian_weight(z):
    """d^2 loss / d z^2 = expit(z) * expit(-z) = e / (1 + e)^2 with e = exp(-|z|)."""
    e = math.exp(-abs(z))
    return e / ((1.0 + e) * (1.0 + e))


@kernel()
def log_loss(z, y):
    """Log-loss of label ``y`` in {0, 1} at margin ``z``: log1pexp(z) - y*z."""
    if y > 0.5:
        return log1pexp(-z)
    return log1pexp(z)


@kernel()
def loss_residual_weight(z, y):
    """(log_loss(z, y), residual(z, y), hessian_weight(z)) from one exp and one log1p, bitwise equal to them.

    With e = exp(-|z|) and the margin toward the label m = z (y = 1) or -z (y = 0): the loss is
    log1p(e) + max(-m, 0), the residual -+ expit(-m) (e / (1 + e) when m > 0, else 1 / (1 + e)) and the
    weight e / (1 + e)^2, the same expressions the three helpers evaluate (one exp each).
    """
    e = math.exp(-abs(z))
    ope = 1.0 + e
    pos = y > 0.5
    m = z if pos else -z
    loss = math.log1p(e)
    if m < 0.0:
        loss = -m + loss
    sig = e / ope if m > 0.0 else 1.0 / ope
    return loss, -sig if pos else sig, e / (ope * ope)
