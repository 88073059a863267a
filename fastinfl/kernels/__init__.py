"""Numba kernels: one module per kind of data; nothing here validates or allocates results for the API.

``dense`` (in-memory or memory-mapped arrays), ``cg`` (batched conjugate gradient
on the dense HVP), ``sigmoid`` (stable scalar helpers), ``blas`` (dsyrk for kernels), ``blocks``
(serial entry points over one whole row block, for the Dask operator's tasks).
Only the operator layer (``fastinfl.operators``) imports these modules. ``_cache``: Numba's
disk cache of every kernel is invalidated by an edit of any kernel module (kernels inline each other).
"""

from . import _cache

_cache.install()
