"""Dask LocalCluster of 2 worker processes vs one process, on the same memory-mapped float32 data.

    python -m bench.dask_scale [--n 10_000_000] [--d 100] [--m 1000] [--k 10] [--rows 262144]
                               [--workers 2] [--dir DIR] [--keep]

1. ``make_logistic(n, d, seed=0, dtype=float32, out=DIR/X.npy)`` (X on disk, y in RAM);
2. single process (Numba's threads over both cores), on the read-only memory map:
   ``fit``, ``Influence()`` (validation, margins, curvature), ``hessian()``, ``top_k`` of m
   test points (``make_logistic(m, d, seed=1)``, in memory);
3. the same on a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, X read
   by ``fastinfl.io_dask.from_npy`` (every task maps the file and reads its ``--rows`` rows, as
   the single process reads its memory map; y is a dask array from memory).

Both sides first run the same operations on a small memory map (compiling or loading the
read-only kernel variants; untimed). The task stream of the cluster gives the time of each
block task by kind (per-partition times, for the scaling model in bench/RESULTS.md), and the
bytes of partial results each pass moves are printed from the sizes. X.npy is deleted at the
end unless ``--keep``.
"""

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastinfl
from bench import machine


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _stages(X, y, Xt, yt, k, meter=lambda: 0):
    """[(stage, seconds, bytes by meter())], the model and the top-k: fit, Influence(), hessian(), top_k."""
    rows = []
    out = {}

    def stage(name, fn):
        b = meter()
        t, out["last"] = _timed(fn)
        rows.append((name() if callable(name) else name, t, meter() - b))
        return out["last"]

    model = stage("fit", lambda: fastinfl.LogisticRegression(l2=1.0).fit(X, y))
    rows[-1] = (f"fit ({model.n_iter_} Newton steps)",) + rows[-1][1:]
    inf = stage("Influence(model, X, y)", lambda: fastinfl.Influence(model, X, y))
    stage("inf.hessian()", inf.hessian)
    top = stage(f"inf.top_k(X_test, y_test, k={k}), m = {Xt.shape[0]}", lambda: inf.top_k(Xt, yt, k))
    return rows, model, top


def _task_times(stream):
    """{task kind: (count, median s, total s)} from a distributed task stream."""
    from dask.utils import key_split

    by = {}
    for rec in stream:
        for ss in rec["startstops"]:
            if ss["action"] == "compute":
                by.setdefault(key_split(rec["key"]), []).append(ss["stop"] - ss["start"])
    return {kind: (len(v), float(np.median(v)), float(np.sum(v))) for kind, v in sorted(by.items())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=1 << 18,
                        help="rows per dask block (default 262144: 105 MB of float32 at d = 100)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream

    from fastinfl import io_dask

    base = Path(args.dir or tempfile.mkdtemp(prefix="fastinfl-dask-"))
    base.mkdir(parents=True, exist_ok=True)
    path = base / "X.npy"
    small = base / "X_small.npy"
    load = [os.getloadavg()[0]]
    try:
        t_gen, (X, y, _) = _timed(lambda: fastinfl.datasets.make_logistic(args.n, args.d, seed=0,
                                                                            dtype=np.float32, out=path))
        Xs, ys, _ = fastinfl.datasets.make_logistic(5000, args.d, seed=2, dtype=np.float32, out=small)
        Xt, yt, _ = fastinfl.datasets.make_logistic(args.m, args.d, seed=1, dtype=np.float32)
        _stages(Xs, ys, Xt[:5], yt[:5], 2)  # warm-up: read-only kernel variants
        single, model_1, top_1 = _stages(X, y, Xt, yt, args.k)

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            def as_dask(p, labels):
                Xd = io_dask.from_npy(p, rows=args.rows)
                return Xd, da.from_array(labels, chunks=(Xd.chunks[0],))

            _stages(*as_dask(small, ys), Xt[:5], yt[:5], 2)  # warm-up on the workers
            Xd, yd = as_dask(path, y)
            def sent():  # bytes the workers sent to other workers and to this client
                return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())

            with get_task_stream(client) as stream:
                multi, model_d, top_d = _stages(Xd, yd, Xt, yt, args.k, sent)
            tasks = _task_times(stream.data)
            transfers = sum(ss["stop"] - ss["start"] for rec in stream.data for ss in rec["startstops"]
                            if ss["action"] == "transfer")
            n_blocks = Xd.numblocks[0]
        load.append(os.getloadavg()[0])
        assert dask.config.get("scheduler", None) in (None, "dask.distributed", "threads")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    p = args.d + 1
    agree = (np.max(np.abs(model_1.params_ - model_d.params_)) / np.max(np.abs(model_1.params_)),
             np.array_equal(top_1.harmful_idx, top_d.harmful_idx))
    print(f"## Dask LocalCluster ({args.workers} workers x 1 thread) vs one process, "
          f"{args.n} x {args.d} float32 memory-mapped\n")
    print(f"`python -m bench.dask_scale {shlex.join(sys.argv[1:] if argv is None else argv)}` "
          f"({time.strftime('%H:%M')}); {n_blocks} blocks of {args.rows} rows  ")
    print(machine.describe() + f"; 1-minute load average {load[0]:.1f} at the start, {load[-1]:.1f} at the end  ")
    print(f"make_logistic(out=X.npy): {t_gen:.1f} s. Dask vs single process: parameters agree to "
          f"{agree[0]:.1e} (relative), top-k harmful indices identical: {agree[1]}.\n")
    print(f"| stage | one process (s) | dask, {args.workers} workers (s) | ratio | bytes sent by workers (MB) |")
    print("|---|---:|---:|---:|---:|")
    total = [0.0, 0.0]
    for (name, a, _), (_, b, moved) in zip(single, multi):
        total[0] += a
        total[1] += b
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} | {moved / 1e6:.1f} |")
    print(f"| **all four** | {total[0]:.2f} | {total[1]:.2f} | **{total[1] / total[0]:.2f}** | |\n")
    print("Block tasks on the workers (per-partition times, from the task stream):\n")
    print("| task | count | median (s) | total (s) | median per 10^6 rows (s) |")
    print("|---|---:|---:|---:|---:|")
    for kind, (count, med, tot) in tasks.items():
        per = f"{med / args.rows * 1e6:.3f}" if "block" in kind else ""
        print(f"| {kind} | {count} | {med:.4f} | {tot:.2f} | {per} |")
    print(f"\nWorker-to-worker transfers took {transfers:.2f} s in all (task stream).")
    print(f"\nPartial results per pass ({n_blocks} blocks, p = {p}): gradient {n_blocks * 8 * (p + 2) / 1e6:.3f} MB, "
          f"Hessian {n_blocks * 8 * p * p / 1e6:.2f} MB, HVP of k vectors {n_blocks * 8 * p / 1e6:.3f} k MB, "
          f"top-k {n_blocks * 8 * 4 * args.k * args.m / 1e6:.1f} MB; the client receives one of each.")


if __name__ == "__main__":
    main()
