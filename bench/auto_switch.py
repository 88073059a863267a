"""Where solver="auto" should switch from the direct solver to CG: both timed over p and m.

    python -m bench.auto_switch [--n 100000] [--ps 50,200,500,1000,2000,3000] [--ms 10,100]
                                [--max-elements 100000000]

For each number of parameters p (d = p - 1 features plus the intercept) and m
test points, s_test (H^-1 g for the m test gradients) is timed from a fresh
``Influence`` (constructor untimed, its time in its own column):

- direct: ``solver="direct"``: forming H (one pass, timed alone), then
  ``s_test``: Cholesky, m gradients and the triangular solves;
- cg: ``solver="cg"``: ``s_test`` by batched CG to tol 1e-10 (its passes over X
  in the table).

Data: ``make_logistic(n_p, d, seed=0)`` in float64, n_p = min(n, max_elements
// p) rows so that X stays below 800 MB and the run near 2-3 minutes (so n is
smaller for the largest p: the table says which). Both costs grow linearly in n
(H: 2 n p^2 flops; CG: 4 n p m per pass) so their ratio hardly depends on it,
but CG's pass count does: it grows with the conditioning of H, which for these
i.i.d. Gaussian features is nearly ideal (few passes). "break-even passes" is
the pass count at which CG would cost as much as the direct solver: real data
needing more passes than that are faster direct. The model uses the generating
coefficients (l2 = 1), not a fit (fits at p = 3000 take minutes); only timings
and pass counts are used, so the StationarityWarning is silenced. Each time is
a single run (best of 3 where under 0.3 s), except H, which does not depend on m:
each row shows the faster of the Hessians formed for its p (one per m). "H cores"
is process CPU time over wall time while forming H: below 2 on this 2-core
machine, H used one core (or the other was busy).
"""

import argparse
import os
import shlex
import sys
import time
import warnings

import numpy as np

import fastinfl
from bench import machine

L2 = 1.0


def measure(X, y, model, X_test, y_test):
    """Timings of both solvers for these test points: a dict."""
    w = time.perf_counter()
    fastinfl.Influence(model, X, y, solver="direct")
    out = {"setup": time.perf_counter() - w}

    def direct():
        inf = fastinfl.Influence(model, X, y, solver="direct")
        w, c = time.perf_counter(), time.process_time()
        inf.hessian()
        t_h, c_h = time.perf_counter() - w, time.process_time() - c
        w = time.perf_counter()
        S = inf.s_test(X_test, y_test)
        return t_h, c_h, time.perf_counter() - w, S

    def cg():
        inf = fastinfl.Influence(model, X, y, solver="cg")
        w = time.perf_counter()
        S = inf.s_test(X_test, y_test)
        return time.perf_counter() - w, int(inf.cg_n_iter_.max()), S

    runs = [direct()]
    if runs[0][0] + runs[0][2] < 0.3:
        runs += [direct(), direct()]
    out["hessian"], out["hessian_cpu"], out["solve"], S_direct = min(runs, key=lambda r: r[0] + r[2])
    runs = [cg()]
    if runs[0][0] < 0.3:
        runs += [cg(), cg()]
    out["cg"], out["passes"], S_cg = min(runs, key=lambda r: r[0])
    out["err"] = float(np.linalg.norm(S_cg - S_direct) / np.linalg.norm(S_direct))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.auto_switch", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--ps", default="50,200,500,1000,2000,3000")
    parser.add_argument("--ms", default="10,100")
    parser.add_argument("--max-elements", type=float, default=1e8, help="cap on n_p * p (X's entries)")
    args = parser.parse_args(argv)
    ps = [int(v) for v in args.ps.split(",")]
    ms = [int(v) for v in args.ms.split(",")]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    warnings.simplefilter("ignore", fastinfl.StationarityWarning)
    log("warm-up (loads or compiles the float64 kernels) ...")
    Xw, yw, cw = fastinfl.datasets.make_logistic(5000, 20, seed=0, dtype=np.float64)
    mw = fastinfl.LogisticRegression.from_params(cw, -0.5, l2=L2)
    for m in ms:
        measure(Xw, yw, mw, Xw[:m], yw[:m])

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    rows = []
    for p in ps:
        d = p - 1
        n_p = int(min(args.n, args.max_elements // p))
        log(f"p = {p}: generating {n_p} x {d} ...")
        X, y, coef = fastinfl.datasets.make_logistic(n_p, d, seed=0, dtype=np.float64)
        X_test, y_test, _ = fastinfl.datasets.make_logistic(max(ms), d, seed=1, dtype=np.float64)
        model = fastinfl.LogisticRegression.from_params(coef, -0.5, l2=L2)
        runs = []
        for m in ms:
            log(f"p = {p}, m = {m} ...")
            runs.append((p, n_p, m, measure(X, y, model, X_test[:m], y_test[:m])))
        # H does not depend on m: every row uses the fastest of the Hessians formed for this p.
        best = min((r for *_, r in runs), key=lambda r: r["hessian"])
        for *_, r in runs:
            r["hessian"], r["hessian_cpu"] = best["hessian"], best["hessian_cpu"]
            r["direct"] = r["hessian"] + r["solve"]
        rows += runs
        del X
    total = time.perf_counter() - t_start

    argv = sys.argv[1:] if argv is None else argv
    print("## Direct solver vs CG (solver=\"auto\" switch)\n")
    print(f"`{shlex.join(['python', '-m', 'bench.auto_switch', *argv])}`, float64, "
          f"{total:.0f} s after the warm-up; 1-minute load average {load_start:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end  ")
    print(f"Machine: {machine.describe()}  ")
    print(f"Current rule: direct while p <= {fastinfl.influence.AUTO_DIRECT_MAX_P}.\n")
    print("| p | n | m | setup (s) | direct: H (s) | H cores | Cholesky + solve (s) | direct (s) | cg (s) "
          "| cg passes | break-even passes | faster | cg / direct | rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for p, n_p, m, r in rows:
        faster = "direct" if r["direct"] < r["cg"] else "**cg**"
        even = r["direct"] / (r["cg"] / r["passes"])
        cores = r["hessian_cpu"] / r["hessian"]
        print(f"| {p} | {n_p} | {m} | {r['setup']:.3f} | {r['hessian']:.3f} | {cores:.1f} | "
              f"{r['solve']:.4f} | {r['direct']:.3f} | {r['cg']:.3f} | "
              f"{r['passes']} | {even:.0f} | {faster} | {r['cg'] / r['direct']:.2f} | {r['err']:.1e} |")
    print()
    for m in ms:
        sub = [(p, r) for p, _, mm, r in rows if mm == m]
        cg_wins = [p for p, r in sub if r["cg"] < r["direct"]]
        if not cg_wins:
            print(f"- m = {m}: direct faster at every p measured (up to {sub[-1][0]}).")
        else:
            first = cg_wins[0]
            below = [p for p, _ in sub if p < first]
            where = f"between p = {below[-1]} and {first}" if below else f"at or below p = {first}"
            print(f"- m = {m}: CG faster from p = {first} on ({where}); "
                  f"CG wins at p = {', '.join(map(str, cg_wins))}.")


if __name__ == "__main__":
    main()
