"""Aggregate throughput under concurrent callers: threads, processes and an over-subscribed machine.

    python -m bench.concurrency [--n 100000] [--d 50] [--seconds 3] [--threads 1,2,4,8]
                                [--layers omp,tbb,workqueue] [--repeats 3]

Each case runs in a fresh subprocess (the Numba threading layer is chosen per
process) over the same query: ``inf.top_k`` of one test point (k = 10) on
``make_logistic(n, d)`` float64, solver "direct" (H formed once before timing).
Cases, all timed in the same run so that their ratios are comparable on a
machine shared with other work:

- ``threads T``: T Python threads call the query in a loop for ``--seconds``;
  aggregate calls/s, and its ratio to T = 1;
- ``processes 2``: two processes run the one-thread loop side by side; their
  summed calls/s over one process alone;
- ``busy``: one CPU-bound Python process per core runs beside the query loop;
  the speed-up of fastinfl over the NumPy reference (solve, X~ @ s, argpartition)
  is compared with the same speed-up on the quiet machine.

Every case is repeated ``--repeats`` times and the best is kept.
"""

import argparse
import json
import os
import subprocess
import sys
import time

WORKER = r"""
import json, os, sys, threading, time
import numpy as np
import fastinfl
n, d, seconds, T, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
X, y, _ = fastinfl.datasets.make_logistic(n, d, seed=0, dtype=np.float64)
model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
inf = fastinfl.Influence(model, X, y, solver="direct")
Xt, yt, _ = fastinfl.datasets.make_logistic(64, d, seed=1, dtype=np.float64)
H = inf.hessian()
Xa = np.hstack([X, np.ones((n, 1))])
r = model.predict_proba(X)[:, 1] - y

def fastinfl_query(i):
    inf.top_k(Xt[i:i + 1], yt[i:i + 1], k=10)

def numpy_query(i):
    xt = np.append(Xt[i], 1.0)
    g = (1 / (1 + np.exp(-(xt @ inf._coef_params))) - yt[i]) * xt
    s = np.linalg.solve(H, g)
    I = -(Xa @ s) * r
    np.argpartition(I, 10)[:10]; np.argpartition(-I, 10)[:10]

inf._coef_params = np.append(model.coef_, model.intercept_)
query = fastinfl_query if mode == "fastinfl" else numpy_query
for i in range(3):
    query(i)
counts = [0] * T
go = threading.Event()
def loop(j):
    go.wait()
    end = time.perf_counter() + seconds
    c = 0
    while time.perf_counter() < end:
        query((j + c) % 64)
        c += 1
    counts[j] = c
threads = [threading.Thread(target=loop, args=(j,)) for j in range(T)]
for t in threads:
    t.start()
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
t0 = time.perf_counter()
go.set()
for t in threads:
    t.join()
import numba
print(json.dumps({"calls_per_s": sum(counts) / (time.perf_counter() - t0), "layer": numba.threading_layer()
                  if mode == "fastinfl" else None}))
"""

BUSY = "while True: pass"


def _start(args, layer, T, mode="fastinfl"):
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(args.n), str(args.d), str(args.seconds), str(T),
                             mode], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _run_together(procs):
    """Start the timed loops of already-set-up processes at the same moment; their calls/s."""
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        line = p.stdout.readline()
        p.wait()
        out.append(json.loads(line) if line else {"calls_per_s": float("nan"), "crashed": p.returncode})
    return out


def measure(args, layer):
    """Best-of-repeats calls/s for every case on one threading layer."""
    rows = {}

    def best(key, value):
        rows[key] = value if value != value else max(rows.get(key, 0.0), value)  # NaN: crashed

    for _ in range(args.repeats):
        for T in args.threads:
            best(f"threads {T}", _run_together([_start(args, layer, T)])[0]["calls_per_s"])
        best("processes 2", sum(r["calls_per_s"] for r in _run_together([_start(args, layer, 1),
                                                                          _start(args, layer, 1)])))
        best("numpy quiet", _run_together([_start(args, layer, 1, "numpy")])[0]["calls_per_s"])
        for mode in ("fastinfl", "numpy"):
            p = _start(args, layer, 1, mode)
            busy = []
            try:
                assert p.stdout.readline().strip() == "ready"
                busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count())]
                time.sleep(0.5)
                p.stdin.write("go\n")
                p.stdin.flush()
                best(f"{mode} busy", json.loads(p.stdout.readline())["calls_per_s"])
                p.wait()
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", default="1,2,4,8")
    ap.add_argument("--layers", default="omp,tbb,workqueue")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    try:
        from fastinfl.operators.policy import available_layers
    except ImportError:  # a checkout before the thread policy: assume the requested layers exist
        def available_layers():
            return args.layers.split(",")

    print(f"n={args.n} d={args.d} seconds={args.seconds} repeats={args.repeats} cpus={os.cpu_count()} "
          f"FASTINFL_NUM_THREADS={os.environ.get('FASTINFL_NUM_THREADS', '(unset)')}")
    print("| layer | case | calls/s | ratio | target |")
    print("|---|---|---|---|---|")
    for layer in args.layers.split(","):
        if layer not in available_layers():
            print(f"| {layer} | not available here | | | |")
            continue
        rows = measure(args, layer)
        one = rows["threads 1"]
        for T in args.threads:
            ratio = rows[f"threads {T}"] / one
            print(f"| {layer} | {T} threads | {rows[f'threads {T}']:.1f} | {ratio:.2f} x 1 thread | >= 0.9 |")
        print(f"| {layer} | 2 processes | {rows['processes 2']:.1f} | {rows['processes 2'] / one:.2f} x 1 process"
              " | >= 0.8 |")
        quiet = one / rows["numpy quiet"]
        busy = rows["fastinfl busy"] / rows["numpy busy"]
        print(f"| {layer} | busy machine ({os.cpu_count()} spinning processes) | {rows['fastinfl busy']:.1f} "
              f"| speed-up over NumPy {busy:.2f} busy vs {quiet:.2f} quiet = {busy / quiet:.2f} | >= 0.7 |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
