"""Memory this process can still use, and whether the direct solver's dense Hessian fits in it.

The direct solver forms H as a dense (P, P) float64 matrix and factors it: it needs 8 P^2 bytes
to keep, and DIRECT_PEAK_COPIES times that while factoring (H and its Cholesky factor). Whether
that fits is decided from the user's ``memory_limit`` (H itself, as for every other result) and
from the memory the machine has available now (the peak), never from a fixed parameter count.
"""

import os

import numpy as np

from ._config import DIRECT_PEAK_COPIES

GIB = float(1 << 30)


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory():
    """Bytes of memory available to this process (Linux ``MemAvailable``, bounded by a cgroup's limit
    less its usage; elsewhere the free physical pages), or None when it cannot be told."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            avail = None
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 1 << 60:  # "max" / unlimited: no bound
            left = max(0, limit - usage)
            avail = left if avail is None else min(avail, left)
            break
    return avail


def direct_bytes(n_params):
    """(bytes of H kept, bytes at the peak of its factorisation) for ``n_params`` parameters."""
    held = 8 * int(n_params) ** 2
    return held, DIRECT_PEAK_COPIES * held


def direct_shortfall(n_params, memory_limit, available=None):
    """None when the direct solver fits (H within ``memory_limit``, the factorisation's peak within the
    available memory), else a sentence saying what it needs and what there is."""
    held, peak = direct_bytes(n_params)
    if held > memory_limit:
        return (f"the dense Hessian of {n_params:,} parameters needs {held / GIB:.3g} GiB, more than "
                f"memory_limit={memory_limit / GIB:.3g} GiB")
    available = available_memory() if available is None else available
    if available is not None and peak > available:
        return (f"forming and factoring the dense Hessian of {n_params:,} parameters needs "
                f"{peak / GIB:.3g} GiB ({DIRECT_PEAK_COPIES} x {held / GIB:.3g} GiB), and this machine has "
                f"{available / GIB:.3g} GiB available")
    return None


def hessian_passes(X, n_params):
    """What forming H costs, in passes over X: n_params for dense X (n p^2 against n p); for scipy.sparse X
    sum_i nnz_i^2 / nnz (pairs of nonzeros against nonzeros) times the classes (n_params / columns)."""
    import scipy.sparse

    if not scipy.sparse.issparse(X):  # dense (NumPy, dask, device arrays)
        return n_params
    per_row = np.diff(X.tocsr().indptr).astype(np.float64)
    nnz = per_row.sum()
    classes = max(1, n_params // max(1, X.shape[1]))  # K for the multinomial model (P = K p), else 1
    return classes * float(per_row @ per_row) / max(nnz, 1.0)
