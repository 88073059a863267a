"""Large synthetic data end to end on a memory-mapped X: generate, fit, Hessian, top-k, time and memory.

    python -m bench.end_to_end [--n 10_000_000] [--d 100] [--dir DIR] [--m 1000] [--k 10] [--keep]

Stages, in one process:

1. ``make_logistic(n, d, seed=0, dtype=float32, out=DIR/X.npy)``: X written
   chunk by chunk to a .npy file and returned as a read-only memory map; y in RAM;
2. a warm-up on a small read-only memory map (read-only arrays are their own
   Numba type: this loads or compiles those kernel variants; untimed elsewhere);
3. ``fastinfl.LogisticRegression(l2=1.0).fit(X, y)``;
4. ``Influence(model, X, y)``: validation, residuals and the stationarity check;
5. ``inf.hessian()``;
6. ``inf.top_k(X_test, y_test, k)`` for m test points from ``make_logistic(m, d,
   seed=1)`` in memory (solver "auto" = direct at p = d + 1: it reuses H).

After each stage it prints the process's peak resident set so far
(``ru_maxrss`` and /proc/self/status VmHWM, which agree) and the current
resident set split into anonymous memory (the library's arrays) and file pages
(the mapped X, counted once touched, though the kernel can drop them under
pressure), plus the peak anonymous memory during the stage, sampled every 10 ms
by a thread. The .npy file is deleted at the end unless ``--keep``.
"""

import argparse
import os
import resource
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import fastinfl
from bench import machine
from bench.memory import _status_bytes

MiB = 2**20


class AnonPeak:
    """Samples RssAnon every ``interval`` s in a daemon thread; ``take()`` returns and resets the peak."""

    def __init__(self, interval=0.01):
        self.peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval):
        while not self._stop.wait(interval):
            v = _status_bytes("RssAnon") or 0
            with self._lock:
                self.peak = max(self.peak, v)

    def take(self):
        v = _status_bytes("RssAnon") or 0
        with self._lock:
            peak, self.peak = max(self.peak, v), v
        return peak

    def stop(self):
        self._stop.set()
        self._thread.join()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--m", type=int, default=1000, help="test points for top_k")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dir", default=None, help="folder for X.npy (default: a new folder in $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep X.npy")
    args = parser.parse_args(argv)

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fastinfl-e2e-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "X.npy"
    need = args.n * args.d * 4
    free = shutil.disk_usage(folder).free
    if free < need * 1.1:
        parser.error(f"{folder} has {free / 2**30:.1f} GiB free; X.npy needs {need / 2**30:.1f} GiB")

    rows = []
    sampler = AnonPeak()
    sampler.take()

    def stage(name, fn):
        print(f"{name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
        rows.append((name, wall, maxrss, _status_bytes("VmHWM"), sampler.take(), _status_bytes("RssAnon"),
                     _status_bytes("RssFile")))
        return result

    start = (_status_bytes("RssAnon"), _status_bytes("RssFile"))
    load_start = os.getloadavg()[0]
    try:
        X, y, _ = stage(f"make_logistic(out=X.npy): {args.n} x {args.d} float32, "
                        f"{need / 1e9:.2f} GB file",
                        lambda: fastinfl.datasets.make_logistic(args.n, args.d, seed=0, dtype=np.float32,
                                                                out=path))
        X_test, y_test, _ = fastinfl.datasets.make_logistic(args.m, args.d, seed=1, dtype=np.float32)

        def warm_up():
            small = folder / "warmup.npy"
            Xw, yw, _ = fastinfl.datasets.make_logistic(5000, args.d, seed=2, dtype=np.float32, out=small)
            mw = fastinfl.LogisticRegression(l2=1.0).fit(Xw, yw)
            fastinfl.Influence(mw, Xw, yw).top_k(X_test, y_test, k=args.k)
            del Xw
            small.unlink()

        stage("warm-up: the same on a 5000-row memory map (kernel compile / cache load)", warm_up)
        model = stage("LogisticRegression(l2=1.0).fit(X, y)",
                      lambda: fastinfl.LogisticRegression(l2=1.0).fit(X, y))
        inf = stage("Influence(model, X, y)", lambda: fastinfl.Influence(model, X, y))
        solver = "direct" if inf.uses_direct else "cg"
        stage("inf.hessian()", inf.hessian)
        top = stage(f"inf.top_k(X_test, y_test, k={args.k}), m = {args.m}",
                    lambda: inf.top_k(X_test, y_test, k=args.k))
    finally:
        sampler.stop()
        if not args.keep:
            X = inf = None
            path.unlink(missing_ok=True)
            if not args.dir:
                folder.rmdir()

    argv = sys.argv[1:] if argv is None else argv
    print(f"## End to end, {args.n} x {args.d} float32 memory-mapped\n")
    print(f"`{shlex.join(['python', '-m', 'bench.end_to_end', *argv])}`  ")
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    print(f"Machine: {machine.describe()}, {ram / 2**30:.0f} GiB RAM; 1-minute load average "
          f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end  ")
    print(f"Fit: {model.n_iter_} Newton steps; top_k: solver {solver}, most harmful training point for "
          f"test point 0: {top.harmful_idx[0, 0]} "
          f"(influence {top.harmful[0, 0]:.4g}). Before the first stage: RssAnon {start[0] / MiB:.0f} MiB, "
          f"RssFile {start[1] / MiB:.0f} MiB.\n")
    print("| stage | wall (s) | ru_maxrss (MiB) | VmHWM (MiB) | peak RssAnon in stage (MiB) "
          "| RssAnon after (MiB) | RssFile after (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, wall, maxrss, hwm, anon_peak, anon, file_ in rows:
        print(f"| {name} | {wall:.2f} | {maxrss / MiB:.0f} | {hwm / MiB:.0f} | {anon_peak / MiB:.0f} | "
              f"{anon / MiB:.0f} | {file_ / MiB:.0f} |")


if __name__ == "__main__":
    main()
