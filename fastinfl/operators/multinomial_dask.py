"""The multinomial (softmax) operator over Dask arrays: every pass a map over row blocks, summed in block order.

X is a ``dask.array.Array`` (n, d) chunked by rows (rechunked to one chunk
across the columns if needed). Each pass is one ``blockwise`` layer running a
serial whole-block kernel of ``kernels/multinomial.py`` (``*_block``) through
``policy.run(..., parallel=False)`` where the block lives; the per-block
partials (P for the gradient, P^2 for the Hessian, k P for an HVP, m 4k for
top-k) come back to the client and are added (merged) in block order, so the
result depends only on the row partitioning, never on the scheduler or the
worker count. The logits and curvature (residuals, probabilities) stay
persisted in Dask; class codes are NumPy (the model maps the labels once).
Conventions and the gauge: ``operators/multinomial_base.py``.
"""

import dask.array as da
import numpy as np

from .. import _validation
from ..kernels import blocks as kb
from ..kernels import multinomial as kernels
from . import policy
from .base import Curvature, TopK
from .dask import _c, _compute, _persist, gather_rows  # the binary Dask operator's plumbing
from .multinomial_base import MultinomialOperator


# ------------------------------------------------------------ block tasks (module level: pickled by name)
def _finite_block(X):
    return np.full((1,), policy.run(kb.sum_squares_block, _c(X), work=X.size, parallel=False))


def _loss_grad_block(X, y, theta):
    """(n_b K + 2 + P,): logits, then loss sum, min margin, gradient sum."""
    n, (K, p) = X.shape[0], theta.shape
    out = np.empty(n * K + 2 + K * p)
    Z = out[: n * K].reshape(n, K)
    grad = np.empty((K, p))
    out[n * K], out[n * K + 1] = policy.run(kernels.loss_grad_block, _c(X), y, theta, grad, Z, work=X.size * K,
                                            parallel=False)
    out[n * K + 2:] = grad.reshape(-1)
    return out


def _logits_block(X, theta):
    Z = np.empty((X.shape[0], theta.shape[0]))
    policy.run(kernels.logits_block, _c(X), theta, Z, work=X.size * theta.shape[0], parallel=False)
    return Z


def _curvature_block(Z, y):
    """(n_b, 2 K): residuals, then probabilities."""
    n, K = Z.shape
    R, Pi = np.empty((n, K)), np.empty((n, K))
    kernels._mn_curvature(_c(Z), y, R, Pi)
    return np.hstack([R, Pi])


def _grads_block(X, y, theta):
    out = np.empty((X.shape[0], theta.size))
    policy.run(kernels.grads_block, _c(X), _c(y), theta, out, work=X.size * theta.shape[0], parallel=False)
    return out


def _hessian_block(X, Pi, K, p):
    """(1, P^2 + K p^2): the block's lower-triangle partials G and Dg, flattened."""
    G, Dg = np.empty((K * p, K * p)), np.empty((K, p, p))
    policy.run(kernels.hessian_block, _c(X), _c(Pi), G, Dg, work=X.size * K * p, parallel=False)
    return np.concatenate([G.reshape(-1), Dg.reshape(-1)])[None]


def _hvp_block(X, Pi, V):
    out = np.empty((1,) + V.shape)
    policy.run(kernels.hvp_block, _c(X), _c(Pi), V, out[0], work=X.size * V.size // X.shape[1], parallel=False)
    return out


def _diagonal_block(X, Wd, p):
    """(1, p, K) sum_i x~_ij^2 Wd[i, a] over the block."""
    out = np.zeros((1, p, Wd.shape[1]))
    A = np.asarray(X, dtype=np.float64)
    out[0, : A.shape[1]] = (A * A).T @ Wd
    if p > A.shape[1]:
        out[0, A.shape[1]] = Wd.sum(axis=0)
    return out


def _influence_block(S, X, R):
    out = np.empty((S.shape[0], X.shape[0]))
    policy.run(kernels.influence_block, _c(X), _c(R), S, out, work=X.shape[0] * S.size, parallel=False)
    return out


def _top_k_block(X, R, S, first, k):
    """(1, m, 4k): the block's k smallest I (values, global rows) and k smallest -I."""
    n, m = X.shape[0], S.shape[0]
    neg_v, pos_v = np.full((m, k), np.inf), np.full((m, k), np.inf)
    neg_i, pos_i = np.full((m, k), n, np.int64), np.full((m, k), n, np.int64)
    policy.run(kernels.top_k_block, _c(X), _c(R), S, neg_v, neg_i, pos_v, pos_i, work=X.size * m, parallel=False)
    out = np.empty((1, m, 4 * k))
    for h, (v, i) in enumerate(((neg_v, neg_i), (pos_v, pos_i))):
        out[0, :, 2 * h * k: (2 * h + 1) * k] = v
        out[0, :, (2 * h + 1) * k: (2 * h + 2) * k] = np.where(np.isinf(v), np.inf, i + first[0])
    return out


def _in_order(parts):
    """Sum of ``parts`` (n_blocks, ...) over axis 0, block by block in order, float64."""
    out = np.array(parts[0], dtype=np.float64)
    for b in range(1, parts.shape[0]):
        out += parts[b]
    return out


# ------------------------------------------------------------------ building
def check_dask_X(X, name="X", n_features=None):
    """X (dask, n x d) validated in one pass (shape, real, finite: the first bad row named), chunked by rows."""
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}.")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes along its rows: call {name}.compute_chunk_sizes() first.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the model has {n_features}.")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}. Convert it with .astype(float).")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    (sums,) = _compute(da.blockwise(_finite_block, "b", X, "bj", adjust_chunks={"b": 1}, dtype=np.float64,
                                    concatenate=True))
    if not np.isfinite(sums.sum()):
        bad = np.flatnonzero(~np.isfinite(sums))
        b = int(bad[0]) if bad.size else int(np.argmax(sums))
        first = int(np.sum(X.chunks[0][:b]))
        (block,) = _compute(X.blocks[b])
        try:
            _validation.check_finite(block, name)
        except _validation.BadValueError as exc:
            row = first + exc.row
            raise _validation.BadValueError(str(exc).replace(f"row {exc.row})", f"row {row})"), name, row,
                                            exc.column) from None
        raise _validation.BadValueError(f"{name} holds values so large that the sum of their squares overflows "
                                        "float64. Scale the features.", name, first)
    return X


class DaskMultinomialOperator(MultinomialOperator):
    """Every pass of multinomial logistic regression over a dask (n, d) array chunked by rows.

    See :class:`~fastinfl.operators.multinomial_base.MultinomialOperator`; build
    with :func:`~fastinfl.operators.multinomial.as_multinomial_operator`. ``X``
    is kept as given (persist it yourself when it fits the cluster's memory);
    the class codes (NumPy, from the model) are sent as a dask array with X's
    row chunks. Logits and :class:`Curvature` are persisted dask arrays.
    """

    kind = "dask-multinomial"

    def __init__(self, X, codes, n_classes, fit_intercept):
        super().__init__(X.shape[0], X.shape[1], fit_intercept, X.dtype, codes, n_classes)
        self.X = X
        self._y = None if codes is None else da.from_array(codes, chunks=(X.chunks[0],))
        self._rows = da.arange(X.shape[0], chunks=(X.chunks[0],), dtype=np.int64)  # block b: its global rows

    def _ylab(self):
        self._labels()
        return self._y

    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        theta = self._theta(coef, intercept)
        K, tail = self.n_classes, 2 + self.n_params
        packed = da.blockwise(_loss_grad_block, "b", self.X, "bj", self._ylab(), "b", dtype=np.float64,
                              concatenate=True, adjust_chunks={"b": lambda c: c * K + tail}, theta=theta)
        (packed,) = _persist(packed)
        sizes = [c * K + tail for c in self.X.chunks[0]]
        ends = np.cumsum(sizes)
        tails = da.stack([packed[e - tail:e] for e in ends])
        Z = da.concatenate([packed[e - s:e - tail].reshape(-1, K) for e, s in zip(ends, sizes, strict=True)])
        (tails,) = _compute(tails)
        return float(_in_order(tails[:, :1])[0]), _in_order(tails[:, 2:]), float(tails[:, 1].min()), Z

    def margins(self, coef, intercept):
        Z = da.blockwise(_logits_block, "bk", self.X, "bj", new_axes={"k": self.n_classes}, dtype=np.float64,
                         concatenate=True, theta=self._theta(coef, intercept))
        return _compute(Z)[0]

    def gradients(self, coef, intercept, idx=None):
        theta = self._theta(coef, intercept)
        if idx is None:
            G = da.blockwise(_grads_block, "bi", self.X, "bj", self._ylab(), "b", new_axes={"i": self.n_params},
                             dtype=np.float64, concatenate=True, theta=theta)
            return _compute(G)[0]
        Xs = _compute(self.X[idx])[0]
        return _grads_block(Xs, self._labels()[idx], theta)

    def curvature(self, margins):
        K = self.n_classes
        Z = margins if isinstance(margins, da.Array) else da.from_array(margins, chunks=(self.X.chunks[0], K))
        RP = da.blockwise(_curvature_block, "bk", Z, "bk", self._ylab(), "b", adjust_chunks={"k": 2 * K},
                          dtype=np.float64, concatenate=True)
        (RP,) = _persist(RP)
        return Curvature(RP[:, :K], RP[:, K:])

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        K, p, P = self.n_classes, self.row_params, self.n_params
        parts = da.blockwise(_hessian_block, "bi", self.X, "bj", curv.weights, "bk",
                             new_axes={"i": P * P + K * p * p}, adjust_chunks={"b": 1}, dtype=np.float64,
                             concatenate=True, K=K, p=p)
        total = _in_order(_compute(parts)[0])
        H = np.empty((P, P))
        kernels.assemble_hessian(total[: P * P].reshape(P, P), total[P * P:].reshape(K, p, p),
                                 _c(ridge, np.float64), H)
        return H

    def hvp(self, curv, ridge, V):
        V = _c(V, np.float64)
        Vd = da.from_array(V, chunks=V.shape)
        parts = da.blockwise(_hvp_block, "bqi", self.X, "bj", curv.weights, "bk", Vd, "qi",
                             adjust_chunks={"b": 1}, dtype=np.float64, concatenate=True)
        return _in_order(_compute(parts)[0]) + V * ridge

    def _diagonal_pass(self, Wd):
        Wdd = Wd if isinstance(Wd, da.Array) else da.from_array(Wd, chunks=(self.X.chunks[0], self.n_classes))
        parts = da.blockwise(_diagonal_block, "bjk", self.X, "bi", Wdd, "bk", new_axes={"j": self.row_params},
                             adjust_chunks={"b": 1}, dtype=np.float64, concatenate=True, p=self.row_params)
        return _in_order(_compute(parts)[0])

    def rows(self, idx):
        return gather_rows(self.X, idx, self.row_params, self.fit_intercept)

    def influence(self, curv, S, idx):
        S = _c(S, np.float64)
        if idx.shape[0] == 0:
            return np.empty((S.shape[0], 0))
        Xs = self.X[idx]
        R = curv.residuals[idx]  # a dask array, or NumPy (the Newton-corrected residuals of _multiclass)
        R = R.rechunk((Xs.chunks[0], self.n_classes)) if isinstance(R, da.Array) else \
            da.from_array(R, chunks=(Xs.chunks[0], self.n_classes))
        Sd = da.from_array(S, chunks=S.shape)
        out = da.blockwise(_influence_block, "qb", Sd, "qi", Xs, "bj", R, "bk", dtype=np.float64,
                           concatenate=True)
        return _compute(out)[0]

    def top_k(self, curv, S, k):
        S = _c(S, np.float64)
        Sd = da.from_array(S, chunks=S.shape)
        parts = da.blockwise(_top_k_block, "btq", self.X, "bj", curv.residuals, "bk", Sd, "ti", self._rows, "b",
                             new_axes={"q": 4 * k}, adjust_chunks={"b": 1}, dtype=np.float64, concatenate=True,
                             k=k)
        parts = _compute(parts)[0]  # (n_blocks, m, 4k), merged here in block order
        out = []
        for h in range(2):
            v = np.concatenate(list(parts[:, :, 2 * h * k: (2 * h + 1) * k]), axis=1)
            i = np.concatenate(list(parts[:, :, (2 * h + 1) * k: (2 * h + 2) * k]), axis=1)
            order = np.lexsort((i, v), axis=-1)[:, :k]  # by value, ties to the smaller row
            out.append((np.take_along_axis(v, order, axis=1), np.take_along_axis(i, order, axis=1)))
        (low, low_i), (high, high_i) = out
        high = -high
        pad_low, pad_high = ~(low < 0.0), ~(high > 0.0)  # a helpful point needs I < 0, a harmful one I > 0
        low[pad_low], high[pad_high] = np.nan, np.nan
        low_i = np.where(pad_low, -1, low_i).astype(np.int64)
        high_i = np.where(pad_high, -1, high_i).astype(np.int64)
        return TopK(low_i, low, high_i, high)

    def residuals(self, curv, idx):
        """(n_sel, K) r_i of rows ``idx`` as NumPy."""
        return _compute(curv.residuals[idx])[0] if isinstance(curv.residuals, da.Array) else curv.residuals[idx]

    def weights(self, curv, idx):
        """(n_sel, K) pi_i of rows ``idx`` as NumPy."""
        return _compute(curv.weights[idx])[0] if isinstance(curv.weights, da.Array) else curv.weights[idx]
