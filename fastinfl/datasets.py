"""Built-in data: the seed notebook's example and reproducible synthetic data."""

import numpy as np


def seed():
    """The seed notebook's data: (X_train (3, 1), y_train (3,), X_test (1, 1), y_test (1,))."""
    X_train = np.array([[0.0], [1.0], [2.0]])
    y_train = np.array([0, 0, 1])
    return X_train, y_train, np.array([[1.5]]), np.array([1])


def seed_fit(lr=0.1, n_steps=2000):
    """The seed's own fit: plain gradient descent on the summed log-loss from (0, 0).

    Returns (w, b); with the defaults w = 6.872478, b = -10.066114. The data are
    separable, so this is not an optimum (none exists without L2).
    """
    X, y, _, _ = seed()
    x = X[:, 0]
    w = b = 0.0
    for _ in range(n_steps):
        p = 1.0 / (1.0 + np.exp(-(w * x + b)))
        w -= lr * float(np.sum((p - y) * x))
        b -= lr * float(np.sum(p - y))
    return w, b


_CHUNK_ROWS = 1 << 16
_CHUNK_ELEMENTS = 1 << 23  # float64 draws per chunk at most (64 MiB): wide d gets fewer rows


def _ar1(block, correlation):
    """Turn i.i.d. standard-normal columns into AR(1) ones in place: unit variance, corr(x_j, x_k) = rho^|j-k|."""
    if correlation:
        innovation = np.sqrt(1.0 - correlation**2)
        for j in range(1, block.shape[1]):
            block[:, j] *= innovation
            block[:, j] += correlation * block[:, j - 1]
    return block


def make_logistic(n, d, seed=0, dtype=np.float32, out=None, intercept=-0.5, chunks=None, correlation=0.0,
                  density=None):
    """Reproducible synthetic logistic-regression data, generated in row chunks.

    X has i.i.d. standard-normal entries; coef ~ N(0, 1/d) so that margins have
    unit scale; y_i ~ Bernoulli(expit(x_i . coef + intercept)). Chunk c of
    min(65536, 2^23 / d) rows is drawn from ``default_rng([seed, c])`` (at most
    64 MiB of float64 draws at a time): the same (n, d, seed) give the same data
    whatever the dtype or destination.

    Parameters
    ----------
    n, d : int
        Rows and features.
    seed : int
    dtype : float32 or float64
    out : str or path, optional
        Write X to this ``.npy`` file as a memory map, chunk by chunk, without
        holding it in memory; X is then returned as a read-only memory map.
    chunks : int or tuple of int, optional
        Return lazy ``dask.array`` X and y with these row chunks (one chunk
        across the columns) instead: nothing is generated until computed, and
        any chunking gives exactly the values of the in-memory call (each
        block regenerates the 64 MiB generator chunks it overlaps). Needs dask.
    correlation : float in (-1, 1)
        AR(1) correlation rho between neighbouring features (x_j = rho x_{j-1} +
        sqrt(1 - rho^2) e_j from the same draws: corr(x_j, x_k) = rho^|j-k|, unit
        variance), so that H is as ill-conditioned as real data (cond(X^T X)
        grows like ((1 + rho) / (1 - rho))^2). 0 gives exactly the i.i.d. data.
    density : float in (0, 1], optional
        Return X as a ``scipy.sparse.csr_matrix`` with about density * d
        nonzeros per row, in Zipf-distributed columns (see ``_make_logistic_csr``).

    Returns
    -------
    X : ndarray or memmap (n, d) of ``dtype`` (dask array with ``chunks``)
    y : ndarray (n,) of int8 labels 0/1 (dask array with ``chunks``)
    coef : ndarray (d,) float64, the true coefficients
    """
    n, d = int(n), int(d)
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be positive; got n={n}, d={d}.")
    if isinstance(correlation, bool) or not isinstance(correlation, (int, float, np.floating, np.integer)) \
            or not -1.0 < correlation < 1.0:
        raise ValueError(f"correlation must be a real number in (-1, 1); got {correlation!r}.")
    correlation = float(correlation)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
    if density is not None:
        if chunks is not None or correlation:
            raise ValueError("density (sparse X) cannot be combined with chunks or correlation.")
        if out is not None:
            raise ValueError("out is for dense X; save a sparse X with scipy.sparse.save_npz.")
        return _make_logistic_csr(n, d, seed, dtype, intercept, density)
    coef = np.random.default_rng([seed, 2**32 - 1]).standard_normal(d) / np.sqrt(d)
    if chunks is not None:
        if out is not None:
            raise ValueError("out and chunks cannot be combined: write a dask array with dask.array.to_zarr.")
        return (*_dask_logistic(n, d, seed, dtype, coef, intercept, chunks, correlation), coef)
    if out is None:
        X = np.empty((n, d), dtype=dtype)
    else:
        X = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=(n, d))
    y = np.empty(n, dtype=np.int8)
    rows = _generator_rows(d)
    for c, lo in enumerate(range(0, n, rows)):
        hi = min(n, lo + rows)
        X[lo:hi], y[lo:hi] = _chunk(seed, c, hi - lo, d, coef, intercept, correlation)
    if out is not None:
        X.flush()
        del X
        X = np.load(out, mmap_mode="r")
    return X, y, coef


def _generator_rows(d):
    """Rows per generator chunk: min(65536, 2^23 / d)."""
    return max(1, min(_CHUNK_ROWS, _CHUNK_ELEMENTS // d))


def _chunk(seed, c, rows, d, coef, intercept, correlation=0.0):
    """Generator chunk c (``rows`` rows): float64 X (rows, d) and boolean labels, from default_rng([seed, c])."""
    rng = np.random.default_rng([seed, c])
    block = _ar1(rng.standard_normal((rows, d)), correlation)
    z = block @ coef + intercept
    return block, rng.random(rows) < 1.0 / (1.0 + np.exp(-z))


def _rows(n, d, seed, coef, intercept, lo, hi, correlation=0.0):
    """(hi - lo, d + 1) float64: rows [lo, hi) of X and their labels, from the generator chunks they overlap."""
    R = _generator_rows(d)
    out = np.empty((hi - lo, d + 1))
    for c in range(lo // R, (hi - 1) // R + 1):
        c0, c1 = c * R, min(n, (c + 1) * R)
        block, labels = _chunk(seed, c, c1 - c0, d, coef, intercept, correlation)
        a, b = max(lo, c0), min(hi, c1)
        out[a - lo: b - lo, :d] = block[a - c0: b - c0]
        out[a - lo: b - lo, d] = labels[a - c0: b - c0]
    return out


def _dask_block(n, d, seed, coef, intercept, correlation, block_info=None):
    lo, hi = block_info[None]["array-location"][0]
    return _rows(n, d, seed, coef, intercept, lo, hi, correlation)


def _dask_logistic(n, d, seed, dtype, coef, intercept, chunks, correlation=0.0):
    """Lazy (X, y) dask arrays with row ``chunks``: one task per block makes both."""
    import dask.array as da

    rows = da.core.normalize_chunks((chunks, d), shape=(n, d), dtype=np.float64)[0]
    both = da.map_blocks(_dask_block, dtype=np.float64, chunks=(rows, (d + 1,)), token="make_logistic", n=n,
                         d=d, seed=seed, coef=coef, intercept=intercept, correlation=correlation)
    return both[:, :d].astype(dtype), both[:, d].astype(np.int8)


# ------------------------------------------------------------------ sparse (density=...)
_SPARSE_CHUNK_ROWS = 1 << 15
ZIPF_EXPONENT = 1.0


def _make_logistic_csr(n, d, seed, dtype, intercept, density):
    """Sparse X like hashed bag-of-words text: Zipf-distributed columns, generated in row chunks.

    Row i has Poisson(density * d) draws (at least 1) of a column; the column of
    popularity rank r (0-based) is drawn with probability proportional to
    1 / (r + 1)^ZIPF_EXPONENT, and ranks are scattered over the columns by a
    fixed permutation (as hashing would). A column drawn twice in a row keeps
    one entry holding the sum of its values, so rows have slightly fewer than
    density * d nonzeros. Values are standard normal; coef ~ N(0, 1 / (density d))
    so margins have about unit scale; y_i ~ Bernoulli(expit(x_i . coef + intercept)).
    Chunk c of 2^15 rows is drawn from ``default_rng([seed, c, 1])`` (memory per
    chunk O(2^15 density d)): the same (n, d, density, seed) give the same data.
    Returns (X csr_matrix (n, d) of ``dtype``, int32 indices when they fit, y int8 (n,), coef (d,)).
    """
    import scipy.sparse

    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1]; got {density}.")
    per_row = density * d
    fixed = np.random.default_rng([seed, 2**32 - 1, 1])
    coef = fixed.standard_normal(d) / np.sqrt(max(per_row, 1.0))
    cdf = np.cumsum(1.0 / np.arange(1, d + 1, dtype=np.float64) ** ZIPF_EXPONENT)
    cdf /= cdf[-1]
    column_of_rank = fixed.permutation(d)
    index_dtype = np.int32 if d <= np.iinfo(np.int32).max else np.int64
    parts_indptr, parts_indices, parts_data = [np.zeros(1, np.int64)], [], []
    y = np.empty(n, dtype=np.int8)
    total = 0
    for c, lo in enumerate(range(0, n, _SPARSE_CHUNK_ROWS)):
        hi = min(n, lo + _SPARSE_CHUNK_ROWS)
        rng = np.random.default_rng([seed, c, 1])
        counts = np.maximum(1, rng.poisson(per_row, hi - lo))
        draws = int(counts.sum())
        cols = column_of_rank[np.minimum(np.searchsorted(cdf, rng.random(draws), side="right"), d - 1)]
        vals = rng.standard_normal(draws)
        rows = np.repeat(np.arange(hi - lo), counts)
        block = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(hi - lo, d))
        block.sum_duplicates()  # also sorts the column indices of each row
        y[lo:hi] = rng.random(hi - lo) < 1.0 / (1.0 + np.exp(-(block @ coef + intercept)))
        parts_indptr.append(block.indptr[1:].astype(np.int64) + total)
        parts_indices.append(block.indices.astype(index_dtype))
        parts_data.append(block.data.astype(dtype))
        total += block.nnz
    indptr = np.concatenate(parts_indptr)
    if total <= np.iinfo(np.int32).max and index_dtype == np.int32:
        indptr = indptr.astype(np.int32)
    else:
        parts_indices = [a.astype(np.int64) for a in parts_indices]
    X = scipy.sparse.csr_matrix((np.concatenate(parts_data), np.concatenate(parts_indices), indptr),
                                shape=(n, d), copy=False)
    return X, y, coef
