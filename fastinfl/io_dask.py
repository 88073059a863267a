"""Loading data as Dask arrays (Zarr stores, ``.npy`` files) and connecting to a Dask scheduler.

For the command line (``fastinfl run STORE.zarr ... --scheduler ADDRESS``) and
for scripts. Every function imports dask lazily: ``import fastinfl`` never does.

A Zarr store holds the features as an array ``X`` (n, d) and the labels as an
array ``y`` (n,), like the ``.npz`` files of the command line: write one with

>>> import dask.array as da                                    # doctest: +SKIP
>>> da.to_zarr(X, "train.zarr", component="X")                 # doctest: +SKIP
>>> da.to_zarr(y, "train.zarr", component="y")                 # doctest: +SKIP
"""

import os
from contextlib import contextmanager

import numpy as np

from ._io import Dataset, InputError, load_dataset

# Rows per block when a store's own chunks are smaller (a task per block costs about a millisecond).
MIN_BLOCK_BYTES = 1 << 25


def is_zarr(path):
    """True when ``path`` is a directory holding a Zarr store (v2 or v3 metadata)."""
    path = os.fspath(path)
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("zarr.json", ".zgroup", ".zarray"))


def _row_chunks(shape, itemsize, rows):
    """Rows per block: ``rows`` if given, else enough for MIN_BLOCK_BYTES of X."""
    if rows is not None:
        return int(rows)
    return max(1, min(shape[0], MIN_BLOCK_BYTES // max(1, itemsize * int(np.prod(shape[1:])))))


def load_zarr(path, rows=None):
    """A ``Dataset`` (X, y, ids) of dask arrays read lazily from the Zarr store at ``path``.

    The store holds arrays ``X`` (n, d) and ``y`` (n,) (or (n, 1)). X is read
    with ``dask.array.from_zarr`` and rechunked to whole rows (one chunk across
    the columns; ``rows`` rows per chunk, by default the store's row chunks, or
    more up to 32 MiB per block); y follows X's row chunks.

    Raises
    ------
    InputError
        Naming the store when it is not a Zarr store or lacks X or y, or their shapes disagree.
    """
    import dask.array as da

    path = os.fspath(path)
    if not is_zarr(path):
        raise InputError(f"{path}: not a Zarr store (no zarr.json, .zgroup or .zarray in it).")
    arrays = {}
    for name in ("X", "y"):
        try:
            arrays[name] = da.from_zarr(path, component=name)
        except Exception as exc:  # zarr raises several kinds for a missing array
            raise InputError(f"{path}: no array {name!r} in the store ({type(exc).__name__}: {exc}); "
                             "write X (n, d) and y (n,) with dask.array.to_zarr(..., component=...).") from None
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2:
        raise InputError(f"{path}: X must be 2-D (n_samples, n_features); got shape {X.shape}.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InputError(f"{path}: y has shape {y.shape} but X has {X.shape[0]} rows; y must be (n,).")
    if rows is None:
        rows = max(X.chunks[0][0], _row_chunks(X.shape, X.dtype.itemsize, None))
    X = X.rechunk({0: rows, 1: -1})
    return Dataset(X, y.rechunk((X.chunks[0],)), None)


def load_any(path, label_col=None, labels=None, in_memory=False):
    """``fastinfl run``'s loader: a Zarr store as dask arrays (:func:`load_zarr`), else ``_io.load_dataset``.

    ``in_memory=True`` computes a Zarr store's arrays into NumPy (for test points).
    """
    if not is_zarr(path):
        return load_dataset(path, label_col, labels)
    if label_col is not None or labels is not None:
        raise InputError(f"{path}: a Zarr store holds its labels as array 'y'; --label-col and --labels "
                         "do not apply.")
    data = load_zarr(path)
    if in_memory:
        import dask

        return Dataset(*dask.compute(data.X, data.y), None)
    return data


def _npy_block(path, block_info=None):
    lo, hi = block_info[None]["array-location"][0]
    return np.asarray(np.load(path, mmap_mode="r")[lo:hi])  # a read-only view of the mapped rows, no copy


def from_npy(path, rows=None):
    """The 2-D ``.npy`` file at ``path`` as a dask array whose tasks read their rows from a memory map.

    Nothing is read here; each task maps the file and reads its rows (so the
    graph holds the path, never the data: fine for a cluster whose workers
    share the file system). ``rows`` per block (default: 32 MiB blocks).
    """
    import dask.array as da

    path = os.path.abspath(os.fspath(path))
    head = np.load(path, mmap_mode="r")
    if head.ndim != 2:
        raise InputError(f"{path}: expected a 2-D array; got shape {head.shape}.")
    chunks = da.core.normalize_chunks((_row_chunks(head.shape, head.dtype.itemsize, rows), head.shape[1]),
                                      shape=head.shape)
    return da.map_blocks(_npy_block, dtype=head.dtype, chunks=chunks, token="fastinfl-npy", path=path,
                         meta=np.empty((0, 0), head.dtype))


@contextmanager
def scheduler(address, timeout="10s"):
    """Run the dask passes inside the block on the scheduler at ``address``.

    ``address``: ``tcp://host:port`` of a running ``dask.distributed``
    scheduler; ``local`` or ``local:N`` starts a LocalCluster of N worker
    processes (default: one per core) for the block's duration; ``threads``
    or ``synchronous`` use dask's in-process schedulers. None: no change.
    ``timeout``: how long to try to reach a remote scheduler.
    """
    if address is None:
        yield None
        return
    import dask

    if address in ("threads", "synchronous"):
        with dask.config.set(scheduler=address):
            yield None
        return
    from distributed import Client, LocalCluster

    if address == "local" or address.startswith("local:"):
        n = int(address.partition(":")[2] or os.cpu_count() or 1)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=timeout)
    except OSError as exc:
        raise InputError(f"cannot reach the dask scheduler at {address}: {exc}") from None
    with client:
        yield client
