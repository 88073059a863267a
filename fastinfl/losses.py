"""The losses of the models, in margin space: per row, a value, a residual and a curvature weight.

A model is a loss of the margin z_i = x~_i . theta plus the L2 term: F(theta) =
sum_i loss(y_i, z_i) + (l2/2) ||coef||^2. Everything below the model needs from
the loss, per row, is

- its value ``loss(y, z)``,
- the residual r = d loss / dz (so the per-example gradient is g_i = r_i x~_i),
- the curvature weight w = d^2 loss / dz^2 (so H = sum_i w_i x~_i x~_i^T + ridge),

and, for prediction, the mean ``mu(z)`` (the inverse link). The compiled passes
evaluate the same three quantities in ``kernels/margin_loss.py`` (selected by a
code, one kernel for every loss); this module holds the NumPy forms, used on
small arrays (a group's rows, test points) and as the reference in tests.
The multinomial (softmax) loss has K margins per row and its own stack
(``fastinfl.multinomial``, ``operators/multinomial.py``).

| name       | labels                 | loss(y, z)                | r              | w              | mu(z)      |
|------------|------------------------|---------------------------|----------------|----------------|------------|
| "logistic" | 0 / 1                  | log(1 + e^z) - y z        | sigma(z) - y   | sigma(z)sigma(-z) | sigma(z) |
| "poisson"  | counts >= 0            | e^z - y z (+ log y!)      | e^z - y        | e^z            | e^z        |

The Poisson objective leaves out the constant log(y!) (it moves no parameter);
the per-example test loss of :class:`fastinfl.PoissonRegression` includes it
(the negative log-likelihood), and every loss *change* is the same either way.
"""

import numpy as np
import scipy.special


class MarginLoss:
    """One loss of a single margin: ``name`` (the kernels' code key), ``labels`` (what y must hold)."""

    name = ""
    labels = ""

    def value(self, z, y):
        """loss(y, z), elementwise (without constants that do not depend on z)."""
        raise NotImplementedError

    def derivatives(self, z, y):
        """(r, w): d loss / dz and d^2 loss / dz^2, elementwise."""
        raise NotImplementedError

    def change(self, z, y, dz):
        """loss(y, z + dz) - loss(y, z), elementwise, without cancellation when dz is small."""
        raise NotImplementedError

    def mean(self, z):
        """The predicted mean mu(z) (inverse link), elementwise."""
        raise NotImplementedError

    def __repr__(self):
        return f"<loss {self.name!r}>"


class Logistic(MarginLoss):
    """Binary log-loss log(1 + e^z) - y z, y in {0, 1}, computed stably in margin space."""

    name = "logistic"
    labels = "labels 0 and 1"

    def value(self, z, y):
        return np.logaddexp(0.0, z) - y * z

    def derivatives(self, z, y):
        return scipy.special.expit(z) - y, scipy.special.expit(z) * scipy.special.expit(-z)

    def change(self, z, y, dz):
        """With u = -(2y - 1) z the loss is softplus(u); the change is log1p(sigma(u) expm1(du))
        for |du| < 1 (no cancellation when the change is tiny, even when sigma(u) is) and
        softplus(u + du) - softplus(u) otherwise."""
        sign = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
        u = -sign * z
        du = -sign * dz
        u, du = np.broadcast_arrays(u, du)
        small = np.abs(du) < 1.0
        with np.errstate(over="ignore"):
            near = np.log1p(scipy.special.expit(u) * np.expm1(np.where(small, du, 0.0)))
            far = np.logaddexp(0.0, u + du) - np.logaddexp(0.0, u)
        return np.where(small, near, far)

    def mean(self, z):
        return scipy.special.expit(z)


class Poisson(MarginLoss):
    """Poisson deviance in margin space with the log link: e^z - y z, y >= 0 (counts or rates)."""

    name = "poisson"
    labels = "non-negative counts"

    def value(self, z, y):
        return np.exp(z) - y * z

    def derivatives(self, z, y):
        mu = np.exp(z)
        return mu - y, mu

    def change(self, z, y, dz):
        """e^z expm1(dz) - y dz: expm1 keeps the digits of a small change."""
        return np.exp(z) * np.expm1(dz) - y * dz

    def mean(self, z):
        return np.exp(z)


LOSSES = {"logistic": Logistic(), "poisson": Poisson()}
