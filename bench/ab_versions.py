"""A/B of two checkouts of fastinfl on the kernel benchmarks of issue 23 (no speed lost), in one run.

    python -m bench.ab_versions BASE_CHECKOUT NEW_CHECKOUT [--rounds 3]

Each round runs every case in a fresh process per checkout (PYTHONPATH = that checkout; its own Numba
cache, warmed before timing), alternating A, B, A, B so that the machine's load hits both alike; a case's
time is its best of 5 calls in a process and the best over rounds. Cases (public API only, so that any
two versions compare): dense binary 2e5 x 100 float64 (Influence setup: the fused loss/gradient/Hessian
pass; HVP k = 1 and 16; batched CG of 16 test points; top_k of 32 test points, k = 10; the fit),
multinomial K = 10 (2e4 x 50: setup and top_k), CSR 1e6 x 2^14 at 16 nonzeros a row (objective pass,
CG of 4 test points). Prints a table of both times and new/base.
"""

import argparse
import json
import os
import subprocess
import sys

CASES = r"""
import json, sys, time, warnings
import numpy as np, fastinfl
warnings.simplefilter("ignore")
out = {}

def best(name, fn, reps=5):
    fn()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); t.append(time.perf_counter() - t0)
    out[name] = min(t)

X, y, _ = fastinfl.datasets.make_logistic(200_000, 100, seed=0, dtype=np.float64)
Xt, yt = X[:32].copy(), y[:32].copy()
m = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
best("dense fit", lambda: fastinfl.LogisticRegression(l2=1.0).fit(X, y), reps=2)
best("dense setup (Influence)", lambda: fastinfl.Influence(m, X, y))
inf = fastinfl.Influence(m, X, y)
V1, V16 = np.ones(101), np.ones((16, 101))
best("dense hvp k=1", lambda: inf.hvp(V1))
best("dense hvp k=16", lambda: inf.hvp(V16))
cg = fastinfl.Influence(m, X, y, solver="cg")
best("dense cg 16", lambda: cg.s_test(Xt[:16], yt[:16]))
best("dense top_k 32", lambda: inf.top_k(Xt, yt, k=10))
del X, y, inf, cg
rng = np.random.default_rng(0)
Xm = rng.standard_normal((20_000, 50)); ym = rng.integers(0, 10, 20_000)
mm = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(Xm, ym)
best("multinomial setup", lambda: fastinfl.Influence(mm, Xm, ym))
infm = fastinfl.Influence(mm, Xm, ym)
best("multinomial top_k 8", lambda: infm.top_k(Xm[:8], ym[:8], k=10))
del Xm, infm
Xs, ys, _ = fastinfl.datasets.make_logistic(1_000_000, 2**14, seed=1, dtype=np.float64, density=16 / 2**14)
ms = fastinfl.LogisticRegression.from_params(np.zeros(2**14), 0.0, l2=1.0)
best("csr objective pass", lambda: ms.objective(Xs, ys))
infs = fastinfl.Influence(ms, Xs, ys, solver="cg", stationarity_tol=1e9)
best("csr cg 4", lambda: infs.s_test(Xs[:4], ys[:4]), reps=3)
print("RESULT " + json.dumps(out))
"""


def run(checkout):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    proc = subprocess.run([sys.executable, "-c", CASES], capture_output=True, text=True, env=env,
                          cwd=os.path.abspath(checkout))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"{checkout}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line[0][7:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    best = {"base": {}, "new": {}}
    for r in range(args.rounds):
        for which in ("base", "new"):
            for case, t in run(getattr(args, which)).items():
                best[which][case] = min(t, best[which].get(case, float("inf")))
        print(f"round {r + 1} done", file=sys.stderr)
    print(f"| case | base (s) | new (s) | new / base |\n|---|---|---|---|")
    for case in best["base"]:
        b, n = best["base"][case], best["new"].get(case, float("nan"))
        print(f"| {case} | {b:.4f} | {n:.4f} | {n / b:.3f} |")


if __name__ == "__main__":
    main()
