"""Top-k training points of every test point with their predicted leave-one-out change, in batches."""

import math

import numpy as np

from ..influence import TopK
from .progress import progress


def _test_batch(m, k):
    """Test points per top_k call: about 50 progress steps, a (b, 2 b k) loo_change block <= 32 MiB."""
    cap = max(1, math.isqrt(2**22 // (2 * k)))
    return max(1, min(256, cap, -(-m // 50)))


def top_k_loo(inf, X_test, y_test, k, quiet, newton=True, loss="exact"):
    """``inf.top_k`` of every test point, in batches under a progress bar.

    With ``newton``, also the Newton-corrected predicted leave-one-out change of each listed
    training point (``inf.loo_change(..., correction="newton")`` on the batch's listed rows; NaN
    in slots without a training point, index -1). Returns (TopK, (helpful_loo, harmful_loo)),
    each (m, k), or (TopK, None).
    """
    m = X_test.shape[0]
    top = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)))
    loo = np.full((m, 2 * k), np.nan) if newton else None
    step = _test_batch(m, k)
    with progress("top-k", total=m, enabled=not quiet) as bar:
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            part = inf.top_k(X_test[lo:hi], y_test[lo:hi], k)
            for field, value in zip(top, part, strict=True):
                field[lo:hi] = value
            if newton:
                listed = np.concatenate([part.helpful_idx, part.harmful_idx], axis=1)
                idx, where = np.unique(listed.ravel(), return_inverse=True)
                where = where.reshape(listed.shape)
                valid = idx >= 0  # -1: a padded slot, no training point
                change = np.full((hi - lo, idx.shape[0]), np.nan)
                if valid.any():
                    change[:, valid] = inf.loo_change(X_test[lo:hi], y_test[lo:hi], idx[valid],
                                                      correction="newton", loss=loss)
                loo[lo:hi] = np.take_along_axis(change, where, axis=1)
            bar.update(hi - lo)
    return top, ((loo[:, :k], loo[:, k:]) if newton else None)
