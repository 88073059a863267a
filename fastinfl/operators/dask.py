"""The operator over Dask arrays: every pass is a map over row blocks and a fixed-order reduction.

X is a ``dask.array.Array`` (n, d) chunked by rows only (one chunk across the
columns). Each pass is one ``blockwise`` layer: on every row block (where the
block lives, on a thread, process or cluster worker) the serial kernels of
``fastinfl.kernels.blocks`` compute a p- or p^2-sized partial result, and the
partials are summed (or merged, for top-k) ``DASK_SPLIT_EVERY`` at a time in
block order. The reduction tree depends only on the number of blocks, so the
result does not depend on which worker ran what; another row partitioning
changes only the rounding (about 1e-15 relative).

Margins and curvature (r, w) stay in Dask, persisted (in memory on the workers
of a ``dask.distributed`` cluster, in this process for the local schedulers).
What moves per pass: the parameters or vectors (8 p k bytes, once per worker)
to the blocks and one partial (8 p k bytes for an HVP, 8 p^2 for the Hessian,
8 (p + 2) for the gradient) per block up the reduction tree; rows of X move
only for ``rows`` / ``gradients`` of selected training points (the result
itself). Whatever scheduler is active (``dask.config.set(scheduler=...)`` or a
``distributed.Client``) runs the passes.
"""

import math
import warnings
from functools import partial

import dask
import dask.array as da
import numpy as np

from .. import _validation
from .._config import DASK_SPLIT_EVERY, INFLUENCE_BLOCK_BYTES
from ..kernels import blocks as kb
from ..kernels import dense as kd
from . import policy
from .base import Curvature, Operator, TopK

# A top-k slot not filled by a block (value inf) gets this index: it sorts after every real row.
_NO_ROW = float(2**62)


class DaskRechunkWarning(UserWarning):
    """X arrived chunked across its columns and was rechunked to one chunk across them (a copy per pass)."""


def _compute(*collections):
    """``dask.compute`` under the active scheduler, BLAS held to one thread in this process meanwhile.

    Block kernels call BLAS from every scheduler thread of this process (the
    local schedulers); worker processes of ``dask.distributed`` get one BLAS
    thread from their nanny (OPENBLAS_NUM_THREADS=1).
    """
    with policy.single_threaded_blas():
        return dask.compute(*collections)


def _persist(*collections):
    with policy.single_threaded_blas():
        return dask.persist(*collections)


def _c(a, dtype=None):
    return np.ascontiguousarray(a, dtype=dtype)


def gather_rows(X, idx, width, fit_intercept):
    """(n_sel, width) dense float64 rows x~_i of the Dask array X for ``idx`` (one compute of those rows only),
    the intercept's 1 in the last column when ``fit_intercept``: ``rows`` of the binary and softmax operators."""
    A = np.empty((idx.shape[0], width))
    d = X.shape[1]
    if idx.shape[0]:
        A[:, :d] = _compute(X[idx])[0]
    if fit_intercept:
        A[:, d] = 1.0
    return A


# ------------------------------------------------------------ block tasks
# Module-level functions (pickled by reference): each receives NumPy blocks and runs one kernel
# through policy.run, serially (the scheduler supplies the parallelism).
def _check_block(X, y, loss):
    """(1, 4): sum of squares of X; labels: how many are invalid for ``loss``, the first such row (or -1), its value."""
    out = np.zeros((1, 4))
    out[0, 0] = policy.run(kb.sum_squares_block, _c(X), work=X.size, parallel=False)
    out[0, 2] = -1.0
    if y is not None:
        bad = np.flatnonzero(_validation.bad_labels(y, loss))
        out[0, 1] = bad.size
        if bad.size:
            out[0, 2], out[0, 3] = bad[0], y[bad[0]]
    return out


def _loss_grad_block(X, y, family, coef, intercept, p):
    """(n_b + 2 + p,): margins, then loss sum, min signed margin, gradient sum."""
    n = X.shape[0]
    out = np.empty(n + 2 + p)
    out[n], out[n + 1] = policy.run(kb.loss_grad_block, _c(X), y, family, coef, intercept, out[n + 2:], out[:n],
                                    work=X.size, parallel=False)
    return out


def _head(packed, tail):
    return packed[: packed.shape[0] - tail]


def _tail(packed, tail):
    return packed[packed.shape[0] - tail:][None, :]


def _margins_block(X, y, family, coef, intercept, what):
    out = np.empty(X.shape[0])
    policy.run(kb.margins_block, _c(X), y if y is not None else np.empty(0), family, coef, intercept, what, out,
               work=X.size, parallel=False)
    return out


def _curvature_block(z, y, family):
    """(2, n_b): residuals, weights."""
    out = np.empty((2, z.shape[0]))
    policy.run(kb.curvature_block, z, y, family, out[0], out[1], work=z.size, parallel=False)
    return out


def _gradients_block(X, y, family, coef, intercept, p):
    out = np.empty((X.shape[0], p))
    policy.run(kb.per_example_grads_block, _c(X), y, family, coef, intercept, out, work=X.size, parallel=False)
    return out


def _hessian_block(X, w, p):
    """(1, p, p): lower triangle of sum_i w_i x~_i x~_i^T over the block."""
    H = np.zeros((1, p, p))
    policy.run(kd._hessian_rows, _c(X), _c(w), 0, X.shape[0], H[0], work=X.size * p, parallel=False)
    return H


def _hvp_block(X, w, V):
    out = np.empty((1,) + V.shape)
    policy.run(kb.hvp_block, _c(X), _c(w), V, out[0], work=X.size * V.shape[0], parallel=False)
    return out


def _influence_block(S, X, r):
    """(m, n_b) = -(S x~_i) r_i for every row of the block."""
    out = np.empty((S.shape[0], X.shape[0]))
    policy.run(kb.influence_block, _c(X), _c(r), _c(S), np.arange(X.shape[0]), out,
               work=X.shape[0] * S.size, parallel=False)
    return out


def _top_k_block(X, r, St, rows, k):
    """(1, m, 4k): per test point the block's k smallest I (value, global row) and k smallest -I."""
    n = X.shape[0]
    m = St.shape[1]
    neg_v, pos_v = np.full((m, k), np.inf), np.full((m, k), np.inf)
    neg_i, pos_i = np.full((m, k), n, np.int64), np.full((m, k), n, np.int64)
    policy.run(kd._top_k_rows, _c(X), _c(r), _c(St), 0, n, neg_v, neg_i, pos_v, pos_i, work=X.size * m,
               parallel=False)
    out = np.empty((1, m, 4 * k))
    for j, (v, i) in enumerate(((neg_v, neg_i), (pos_v, pos_i))):
        out[0, :, 2 * j * k: (2 * j + 1) * k] = v
        out[0, :, (2 * j + 1) * k: (2 * j + 2) * k] = np.where(np.isinf(v), _NO_ROW, i + rows[0])
    return out


def _merge_top_k(parts, axis=None, keepdims=True, k=1):
    """Merge stacked top-k candidates (B, m, 4k) into (1, m, 4k): the k smallest (value, row) pairs of each half."""
    if parts.ndim != 3 or parts.shape[0] == 0:  # dask's meta inference
        return parts[:1]
    out = np.empty((1,) + parts.shape[1:])
    for h in range(2):
        v = np.concatenate(list(parts[:, :, 2 * h * k: (2 * h + 1) * k]), axis=1)
        i = np.concatenate(list(parts[:, :, (2 * h + 1) * k: (2 * h + 2) * k]), axis=1)
        order = np.lexsort((i, v), axis=-1)[:, :k]  # by value, ties to the smaller row
        out[0, :, 2 * h * k: (2 * h + 1) * k] = np.take_along_axis(v, order, axis=1)
        out[0, :, (2 * h + 1) * k: (2 * h + 2) * k] = np.take_along_axis(i, order, axis=1)
    return out


def _first(x, axis=None, keepdims=True):
    return x


def _sum0(x, axis=None, keepdims=True):
    """Sum over axis 0 in block order (left to right), float64."""
    out = np.array(x[:1], dtype=np.float64)
    for b in range(1, x.shape[0]):
        out[0] += x[b]
    return out


def _ordered_sum(parts):
    """(…) float64 sum over axis 0 of ``parts`` (one row per block), DASK_SPLIT_EVERY at a time in block order."""
    return da.reduction(parts, _first, _sum0, combine=_sum0, axis=0, keepdims=True, dtype=np.float64,
                        split_every=DASK_SPLIT_EVERY, concatenate=True)[0]


# ----------------------------------------------------------------- building
def from_dask(X, y, fit_intercept, name="X", n_features=None, loss="logistic"):
    """The validated :class:`DaskOperator` over dask X (and y: dask or NumPy), in one pass over the data.

    Checks as :func:`fastinfl._validation.check_X` / ``check_y`` do (shape,
    finite values whose squares fit float64, labels valid for ``loss``), naming the first bad
    entry by its global row. Integer X becomes float64; X chunked across its
    columns is rechunked once (with a :class:`DaskRechunkWarning`); y is
    rechunked to X's row chunks, converted to float64 and persisted.
    """
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}.")
    if any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes along its rows: call {name}.compute_chunk_sizes() "
                         "first.")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 rows.")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has no features: shape {X.shape}.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the model has {n_features}.")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}. Convert it with .astype(float).")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.numblocks[1] != 1:
        warnings.warn(
            f"{name} is chunked across its {X.shape[1]} columns ({X.numblocks[1]} chunks): rechunked to one "
            "chunk across them, a copy on every pass. Chunk it by rows only, for example "
            f"{name}.rechunk({{1: -1}}).persist() once.", DaskRechunkWarning, stacklevel=4)
        X = X.rechunk({1: -1})
    yname = "y" + name[1:]
    if y is not None:
        y = _labels(y, X, yname, loss)
    checks = da.blockwise(_check_block, "bk", X, "bj", y, "b" if y is not None else None,
                          new_axes={"k": 4}, adjust_chunks={"b": 1}, dtype=np.float64, concatenate=True, loss=loss)
    if y is not None:
        y, checks = _persist(y, checks)
    (checks,) = _compute(checks)
    offsets = np.concatenate([[0], np.cumsum(X.chunks[0])])
    if not np.isfinite(checks[:, 0].sum()):
        _raise_bad_value(X, checks[:, 0], offsets, name)
    if y is not None and checks[:, 1].sum():
        b = int(np.flatnonzero(checks[:, 1])[0])
        row, value = int(offsets[b] + checks[b, 2]), checks[b, 3]
        what = "NaN or inf" if not np.isfinite(value) else f"{value:g}"
        raise _validation.BadValueError(
            f"{yname} must hold {_validation.LABELS[loss]}; found {what} (first at row {row}).", yname, row)
    return DaskOperator(X, y, fit_intercept, loss)


def _labels(y, X, yname, loss):
    """y as a float64 dask array with X's row chunks (not yet checked against ``loss``)."""
    n = X.shape[0]
    if not _validation.is_dask_array(y):
        y = _validation.check_labels(y, n, yname, loss)  # in memory already: the NumPy checks, then distribute
        return da.from_array(y, chunks=(X.chunks[0],))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{yname} must be 1-D; got shape {y.shape}.")
    if y.shape[0] != n:
        raise ValueError(f"{yname} has {y.shape[0]} labels but X{yname[1:]} has {n} rows (axis 0 must agree).")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{yname} must hold real numbers; got dtype {y.dtype}. Convert it with .astype(float).")
    y = y.astype(np.float64)
    if y.chunks[0] != X.chunks[0]:
        y = y.rechunk((X.chunks[0],))
    return y


def _raise_bad_value(X, sums, offsets, name):
    """Reload the first block whose sum of squares is not finite and raise check_finite's error for it."""
    bad = np.flatnonzero(~np.isfinite(sums))
    b = int(bad[0]) if bad.size else int(np.argmax(sums))
    (block,) = _compute(X.blocks[b])
    try:
        _validation.check_finite(block, name)
    except _validation.BadValueError as exc:
        row = int(offsets[b] + exc.row)
        raise _validation.BadValueError(str(exc).replace(f"row {exc.row})", f"row {row})"), name, row,
                                        exc.column) from None
    raise _validation.BadValueError(
        f"{name} holds values so large that the sum of their squares overflows float64. Scale the features "
        "(for example standardise them).", name, int(offsets[b]))


# ----------------------------------------------------------------- operator
class DaskOperator(Operator):
    """Passes over a dask (n, d) float32/float64 array chunked by rows; build it with ``as_operator``.

    ``X`` is kept as given (lazy or persisted: persist it yourself when it fits
    in the cluster's memory, else every pass reads it from its source again);
    ``y`` is a persisted float64 dask array. Margins (from :meth:`loss_grad`) and
    :class:`Curvature` are persisted dask arrays; every returned quantity is NumPy.
    """

    kind = "dask"

    def __init__(self, X, y, fit_intercept, loss="logistic"):
        super().__init__(X.shape[0], X.shape[1], fit_intercept, X.dtype, y is not None, loss)
        self.X = X
        self.y = y
        self.offsets = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)

    @property
    def n_blocks(self):
        return self.X.numblocks[0]

    def _params(self, coef, intercept):
        return _c(coef, np.float64), float(intercept) if self.fit_intercept else 0.0

    def _labels(self):
        if self.y is None:
            raise ValueError("labels are required for this quantity: pass y with X.")
        return self.y


    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        coef, b = self._params(coef, intercept)
        p = self.n_params
        packed = da.blockwise(_loss_grad_block, "b", self.X, "bj", self._labels(), "b", dtype=np.float64,
                              concatenate=True, adjust_chunks={"b": lambda c: c + 2 + p}, family=self.family,
                              coef=coef, intercept=b, p=p)
        (packed,) = _persist(packed)
        tails = da.blockwise(_tail, "bk", packed, "b", new_axes={"k": 2 + p}, adjust_chunks={"b": 1},
                             dtype=np.float64, tail=2 + p)
        z = da.blockwise(_head, "b", packed, "b", adjust_chunks={"b": self.X.chunks[0]}, dtype=np.float64,
                         tail=2 + p)
        sums, min_margin = _compute(_ordered_sum(tails), tails[:, 1].min())
        return float(sums[0]), sums[2:].copy(), float(min_margin), z

    def margins(self, coef, intercept):
        return self._margins(coef, intercept, 0)

    def means(self, coef, intercept):
        return self._margins(coef, intercept, 1)

    def losses(self, coef, intercept):
        return self._margins(coef, intercept, 2)

    def _margins(self, coef, intercept, what):
        coef, b = self._params(coef, intercept)
        y = self._labels() if what == 2 else None
        z = da.blockwise(_margins_block, "b", self.X, "bj", y, "b" if what == 2 else None, dtype=np.float64,
                         concatenate=True, family=self.family, coef=coef, intercept=b, what=what)
        return _compute(z)[0]

    def gradients(self, coef, intercept, idx=None):
        coef, b = self._params(coef, intercept)
        p = self.n_params
        if idx is None:
            G = da.blockwise(_gradients_block, "bi", self.X, "bj", self._labels(), "b", new_axes={"i": p},
                             dtype=np.float64, concatenate=True, family=self.family, coef=coef, intercept=b, p=p)
            return _compute(G)[0]
        Xs, ys = _compute(self.X[idx], self._labels()[idx])
        out = np.empty((Xs.shape[0], p))
        if Xs.shape[0]:
            out = _gradients_block(Xs, _c(ys), self.family, coef, b, p)
        return out

    def curvature(self, margins):
        rw = da.blockwise(_curvature_block, "kb", margins, "b", self._labels(), "b", new_axes={"k": 2},
                          dtype=np.float64, family=self.family)
        (rw,) = _persist(rw)
        return Curvature(rw[0], rw[1])

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        p = self.n_params
        parts = da.blockwise(_hessian_block, "bij", self.X, "bk", curv.weights, "b",
                             new_axes={"i": p, "j": p}, adjust_chunks={"b": 1}, dtype=np.float64,
                             concatenate=True, p=p)
        (L,) = _compute(_ordered_sum(parts))
        H = np.tril(L) + np.tril(L, -1).T
        H[np.diag_indices(p)] += ridge
        return H

    def hvp(self, curv, ridge, V):
        V = _c(V, np.float64)
        Vd = da.from_array(V, chunks=V.shape)
        parts = da.blockwise(_hvp_block, "bqi", self.X, "bj", curv.weights, "b", Vd, "qi",
                             adjust_chunks={"b": 1}, dtype=np.float64, concatenate=True)
        (out,) = _compute(_ordered_sum(parts))
        return out + ridge * V

    def rows(self, idx):
        return gather_rows(self.X, idx, self.n_params, self.fit_intercept)

    def influence(self, curv, S, idx):
        S = _c(S, np.float64)
        if idx.shape[0] == 0:
            return np.empty((S.shape[0], 0))
        Xs = self.X[idx]
        rs = curv.residuals[idx].rechunk((Xs.chunks[0],))
        return _compute(self._influence_map(S, Xs, rs, chunks=(S.shape[0],)))[0]

    def _influence_map(self, S, X, r, chunks):
        """(m, n) lazy I[t, i] = -(S_t . x~_i) r_i over the row blocks of X, test points in ``chunks``."""
        Sd = da.from_array(S, chunks=(chunks, S.shape[1]))
        return da.blockwise(_influence_block, "qb", Sd, "qi", X, "bj", r, "b", dtype=np.float64,
                            concatenate=True)

    def influence_to_zarr(self, curv, S, path, dtype=np.float64, overwrite=False):
        """Write the (m, n) influence matrix to a Zarr array at ``path`` from the blocks, where they live.

        Blocks of the matrix are (test points, X's row chunk); test points are
        split so that one block stays below INFLUENCE_BLOCK_BYTES. Returns
        the Zarr array (opened for reading).
        """
        import zarr

        S = _c(S, np.float64)
        m = S.shape[0]
        rows = max(self.X.chunks[0])
        per = max(1, min(m, INFLUENCE_BLOCK_BYTES // (8 * rows)))
        full = self._influence_map(S, self.X, curv.residuals, chunks=per).astype(dtype)
        if len(set(self.X.chunks[0][:-1])) > 1 or self.X.chunks[0][-1] > rows:
            full = full.rechunk({1: rows})  # Zarr needs regular chunks
        with policy.single_threaded_blas():
            da.to_zarr(full, str(path), overwrite=overwrite)
        return zarr.open_array(str(path), mode="r")

    def top_k(self, curv, S, k):
        S = _c(S, np.float64)
        m = S.shape[0]
        St = da.from_array(_c(S.T), chunks=(S.shape[1], m))
        offsets = da.arange(self.n_samples, chunks=(self.X.chunks[0],), dtype=np.int64)  # block b: its rows
        parts = da.blockwise(_top_k_block, "btq", self.X, "bj", curv.residuals, "b", St, "it", offsets, "b",
                             new_axes={"q": 4 * k}, adjust_chunks={"b": 1}, dtype=np.float64, concatenate=True,
                             k=k)
        merge = partial(_merge_top_k, k=k)
        merged = da.reduction(parts, _first, merge, combine=merge, axis=0, keepdims=True, dtype=np.float64,
                              split_every=DASK_SPLIT_EVERY, concatenate=True)
        (res,) = _compute(merged)
        res = res[0]
        low, low_i = res[:, :k].copy(), res[:, k: 2 * k].astype(np.int64)
        high, high_i = -res[:, 2 * k: 3 * k], res[:, 3 * k:].astype(np.int64)
        # A helpful point needs I < 0 and a harmful one I > 0: pad the rest (as the dense kernel does).
        pad_low, pad_high = ~(low < 0.0), ~(high > 0.0)
        low[pad_low], low_i[pad_low] = np.nan, -1
        high[pad_high], high_i[pad_high] = np.nan, -1
        return TopK(low_i, low, high_i, high)

    def residuals(self, curv, idx):
        return _compute(curv.residuals[idx])[0] if idx.shape[0] else np.empty(0)

    def weights(self, curv, idx):
        return _compute(curv.weights[idx])[0] if idx.shape[0] else np.empty(0)
