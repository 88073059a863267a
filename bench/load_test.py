"""Load test of ``fastinfl serve`` over loopback, and of the Batcher in-process: requests/s, p50/p99, errors.

    python -m bench.load_test [--n 100000] [--d 50] [--clients 1,8,32] [--requests 400] [--seconds 20]
                              [--k 10] [--inprocess-only]

1. In-process (no HTTP): C Python threads each ask ``top_k`` of one test point,
   once straight through ``inf.top_k`` and once through
   ``Batcher(inf, max_batch=64, max_wait_ms=2)``: requests/s and the ratio
   (the issue's target: 32 callers get >= 5x with batching), and this process's
   CPU seconds per request (on a machine shared with other work, wall-clock
   requests/s depend on the CPU share that C threads win from the other
   processes; CPU per request does not).
2. HTTP: the server (``python -m fastinfl.serving STATE --train TRAIN --port P``, with
   and without ``--no-batching``) on 127.0.0.1; C client threads (one httpx
   client each) POST /v1/top_k with one test point; requests/s, p50 and p99
   latency, errors (any status other than 200; must be 0).

Every run is bounded: at most ``--requests`` requests per case and ``--seconds``
per case, then it stops by itself. Data: ``make_logistic(n, d)`` float64, solver
"direct" (state saved with its Cholesky factor); test points from seed 1.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import fastinfl
from fastinfl.serving import Batcher


def _problem(n, d):
    X, y, _ = fastinfl.datasets.make_logistic(n, d, seed=0, dtype=np.float64)
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(X, y), X, y, solver="direct")
    Xt, yt, _ = fastinfl.datasets.make_logistic(256, d, seed=1, dtype=np.float64)
    inf.top_k(Xt[:2], yt[:2], k=3)  # forms H, factors it, compiles
    return inf, X, y, Xt, yt


def _drive(clients, requests, seconds, call):
    """C threads call ``call(i)`` until ``requests`` in all or ``seconds``; (req/s, latencies s, errors)."""
    lock = threading.Lock()
    issued = [0]
    lat, errors = [], [0]
    deadline = time.perf_counter() + seconds
    start = threading.Barrier(clients + 1)

    def worker():
        start.wait()
        while True:
            with lock:
                if issued[0] >= requests or time.perf_counter() > deadline:
                    return
                i = issued[0]
                issued[0] += 1
            t = time.perf_counter()
            ok = call(i)
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                errors[0] += not ok

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    _drive.cpu_per_request = (time.process_time() - cpu0) / max(1, len(lat))  # this process's CPU seconds
    return len(lat) / (time.perf_counter() - t0), np.array(lat), errors[0]


def inprocess(args, inf, Xt, yt):
    print("\n### In-process: C threads, one test point per top_k call\n")
    print("| clients | direct req/s | Batcher req/s | ratio | direct CPU ms/req | Batcher CPU ms/req | CPU ratio "
          "| direct p50 ms | Batcher p50 ms | batches |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in args.clients:
        def direct(i):
            inf.top_k(Xt[i % 256:i % 256 + 1], yt[i % 256:i % 256 + 1], k=args.k)
            return True

        rate_d, lat_d, _ = _drive(c, args.requests, args.seconds, direct)
        cpu_d = _drive.cpu_per_request
        with Batcher(inf, max_batch=64, max_wait_ms=2) as batcher:
            def batched(i):
                batcher.top_k(Xt[i % 256:i % 256 + 1], yt[i % 256:i % 256 + 1], k=args.k)
                return True

            rate_b, lat_b, _ = _drive(c, args.requests, args.seconds, batched)
            cpu_b = _drive.cpu_per_request
            nb = batcher.batches_
        print(f"| {c} | {rate_d:.1f} | {rate_b:.1f} | {rate_b / rate_d:.2f} | {cpu_d * 1e3:.2f} | {cpu_b * 1e3:.2f} | "
              f"{cpu_d / cpu_b:.2f} | {np.median(lat_d) * 1e3:.1f} | "
              f"{np.median(lat_b) * 1e3:.1f} | {nb} |")
        sys.stdout.flush()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(args, inf, X, y, Xt, yt):
    import httpx

    print("\n### HTTP over loopback: C client threads, POST /v1/top_k with one test point\n")
    print("| server | clients | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        state = inf.save(os.path.join(tmp, "state.npz"))
        train = os.path.join(tmp, "train.npz")
        np.savez(train, X=X, y=y)
        bodies = [json.dumps({"X": Xt[i:i + 1].tolist(), "y": yt[i:i + 1].tolist(), "k": args.k}) for i in range(256)]
        for mode, extra in (("batching", []), ("no batching", ["--no-batching"])):
            port = _free_port()
            proc = subprocess.Popen([sys.executable, "-m", "fastinfl.serving", state, "--train", train,
                                     "--port", str(port), *extra])
            url = f"http://127.0.0.1:{port}"
            try:
                for _ in range(600):
                    try:
                        if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.2)
                for c in args.clients:
                    local = threading.local()
                    # Made before timing: an httpx.Client builds an SSL context (CA certificates) even for
                    # http://, tens of ms of CPU each, which 32 new clients at once spent inside their first
                    # requests (p99 ~1 s at 32 clients; bench/RESULTS.md, "Micro-batching").
                    made = [httpx.Client(timeout=60) for _ in range(c)]
                    pool, pool_lock = list(made), threading.Lock()

                    def call(i):
                        if not hasattr(local, "client"):
                            with pool_lock:
                                local.client = pool.pop()
                        try:
                            r = local.client.post(url + "/v1/top_k", content=bodies[i % 256],
                                                  headers={"content-type": "application/json"})
                            return r.status_code == 200
                        except httpx.HTTPError:
                            return False

                    rate, lat, err = _drive(c, args.requests, args.seconds, call)
                    for client in made:
                        client.close()
                    print(f"| {mode} | {c} | {lat.size} | {rate:.1f} | {np.percentile(lat, 50) * 1e3:.1f} | "
                          f"{np.percentile(lat, 99) * 1e3:.1f} | {err} |")
                    sys.stdout.flush()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--inprocess-only", action="store_true")
    args = ap.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    import numba

    print(f"n={args.n} d={args.d} k={args.k} requests<={args.requests} seconds<={args.seconds} per case; "
          f"cpus={os.cpu_count()} numba threads={numba.config.NUMBA_NUM_THREADS}")
    inf, X, y, Xt, yt = _problem(args.n, args.d)
    inprocess(args, inf, Xt, yt)
    if not args.inprocess_only:
        http(args, inf, X, y, Xt, yt)


if __name__ == "__main__":
    main()
