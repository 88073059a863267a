"""Time of Influence.save / Influence.load on a large state (default 10^6 x 100, float32 memory map).

    python -m bench.state_load [--n 1000000] [--d 100] [--repeats 3] [--dir DIR]

X is written by ``make_logistic(..., out=DIR/X.npy)`` and opened as a memory map;
the model is ``from_params`` at the generating coefficients (no fit: the timing
of interest is the state, not the fit), with the Hessian and its Cholesky
factor formed before saving. Reported: save, load (best of ``--repeats``:
validation of X + fingerprint + reading the file), load with the state saved
with ``check="full"``, a fresh Influence (a pass over X) for comparison, and the
first ``top_k`` of one test point after loading. Target (issue 11): load < 1 s.
"""

import argparse
import os
import tempfile
import time

import numpy as np

import fastinfl


def _best(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        X, y, coef = fastinfl.datasets.make_logistic(args.n, args.d, seed=0, out=os.path.join(tmp, "X.npy"))
        model = fastinfl.LogisticRegression.from_params(coef, 0.0, l2=1.0)
        fresh, inf = _best(lambda: fastinfl.Influence(model, X, y, stationarity_tol=1e300), 1)
        inf.top_k(X[:1], y[:1], k=10)  # forms H and its factor (they go into the file)
        path = os.path.join(tmp, "state.npz")
        save_s, _ = _best(lambda: inf.save(path), 1)
        load_s, loaded = _best(lambda: fastinfl.Influence.load(path, X, y, stationarity_tol=1e300), args.repeats)
        first_s, _ = _best(lambda: loaded.top_k(X[:1], y[:1], k=10), 1)
        full = os.path.join(tmp, "full.npz")
        inf.save(full, check="full")
        full_s, _ = _best(lambda: fastinfl.Influence.load(full, X, y, stationarity_tol=1e300), args.repeats)
        size = os.path.getsize(path) / 2**20
    print(f"n={args.n} d={args.d} float32 memory map; state file {size:.1f} MiB; best of {args.repeats}")
    print("| step | seconds | target |")
    print("|---|---|---|")
    print(f"| Influence(model, X, y) (a pass over X) | {fresh:.3f} | |")
    print(f"| inf.save(path) | {save_s:.3f} | |")
    print(f"| Influence.load(path, X, y) (sampled fingerprint) | {load_s:.3f} | < 1 |")
    print(f"| Influence.load, state saved with check='full' | {full_s:.3f} | |")
    print(f"| first top_k of one test point after load | {first_s:.3f} | |")


if __name__ == "__main__":
    main()
