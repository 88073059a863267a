"""
At scale: a Dask cluster and a memory-mapped file
=================================================

Two ways to work on training data larger than you want in memory, both with the same API as
NumPy arrays:

* **Dask**: X and y as ``dask.array`` chunked by rows; every pass runs fastinfl's serial kernels
  where each block lives and brings back only p- or p^2-sized sums (results equal the in-memory
  ones to rounding). Here a ``distributed.LocalCluster`` of 2 worker threads.
* **A memory map**: ``make_logistic(..., out="X.npy")`` writes X chunk by chunk; the returned
  read-only ``numpy.memmap`` is streamed by the kernels block by block, so the process touches
  pages, not a copy.

Sizes are smaller than a real run (the whole site builds in about three minutes on a 2-core
machine): 200,000 x 20 rows on Dask, 1,000,000 x 50 float32 (190 MiB) memory-mapped. The 10^7-row
runs (and a 100-worker cost model) are in the benchmarks, "End to end" and "Dask".
"""

# %%
import os
import resource
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

import fastinfl


def rss_mib():
    """The process's resident memory now and its peak so far (Linux /proc; MiB)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


timings = {}

# %%
# Dask: a LocalCluster
# --------------------
# ``chunks=`` gives lazy dask arrays; ``persist`` keeps the blocks in the workers' memory between
# the passes of the fit, the Hessian and the solves.
X, y, _ = fastinfl.datasets.make_logistic(200_000, 20, chunks=50_000)
X_test, y_test, _ = fastinfl.datasets.make_logistic(5, 20, seed=1)
with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
        Client(cluster):
    X, y = X.persist(), y.persist()
    t0 = time.perf_counter()
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    timings["Dask: fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inf = fastinfl.Influence(model, X, y)
    top = inf.top_k(X_test, y_test, k=3)  # one pass over the blocks; NumPy (5, 3) arrays back
    timings["Dask: Influence + top_k"] = time.perf_counter() - t0
print("most harmful training rows of test point 0:", top.harmful_idx[0])

# %%
# The same data in memory gives the same answer.
X_mem, y_mem, _ = fastinfl.datasets.make_logistic(200_000, 20)
model_mem = fastinfl.LogisticRegression(l2=1.0).fit(X_mem, y_mem)
top_mem = fastinfl.Influence(model_mem, X_mem, y_mem).top_k(X_test, y_test, k=3)
print("same rows in memory:", bool((top_mem.harmful_idx == top.harmful_idx).all()),
      "max coefficient difference", float(np.abs(model_mem.coef_ - model.coef_).max()))
del X_mem, y_mem

# %%
# A memory-mapped file
# --------------------
# 1,000,000 x 50 float32 written to a temporary ``.npy`` without holding it in memory, then used
# as it is. We record the process's resident memory before and after.
path = os.path.join(tempfile.mkdtemp(), "X.npy")
rss_before, _ = rss_mib()
t0 = time.perf_counter()
X, y, _ = fastinfl.datasets.make_logistic(1_000_000, 50, out=path)
timings["memmap: write X"] = time.perf_counter() - t0
X_test, y_test, _ = fastinfl.datasets.make_logistic(100, 50, seed=1)
t0 = time.perf_counter()
model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
timings["memmap: fit"] = time.perf_counter() - t0
t0 = time.perf_counter()
inf = fastinfl.Influence(model, X, y)
top = inf.top_k(X_test, y_test, k=10)
timings["memmap: Influence + top_k"] = time.perf_counter() - t0
rss_after, peak = rss_mib()
print(f"X: {type(X).__name__} {X.shape} {X.dtype}, {X.nbytes / 2**20:.0f} MiB on disk")
print(f"resident memory {rss_before:.0f} MiB before, {rss_after:.0f} MiB after (peak {peak:.0f} MiB); "
      f"maximum resident set by getrusage {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
      "MiB")
print("resident memory counts the file's pages the kernels have read (the page cache mapped into "
      "the process), which the kernel can drop at any time; no copy of X is made.")
for name, seconds in timings.items():
    print(f"{name:>28}: {seconds:6.2f} s")

# %%
# The figure: time per stage.
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(timings), list(timings.values()), color=["C0"] * 2 + ["C1"] * 3)
ax.invert_yaxis()
ax.set(xlabel="seconds (this build's machine; shared, so indicative only)")
fig.tight_layout()
plt.show()
