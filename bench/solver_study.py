"""Solver study (issue 15): every solver on ill-conditioned data, against the direct solve.

    python -m bench.solver_study [--n 100000] [--rhos 0,0.9,0.99,0.999] [--d 100] [--wide-d 1000]
                                 [--wide-n 20000] [--m 10] [--lissa-depth 300] [--pydvl PYTHON]
                                 [--cases synthetic,wide,real] [--real-l2s 1,0.01] [--json PATH]

Cases: ``make_logistic(n, d, correlation=rho)`` (float64, AR(1) features) for
each rho, one wide case (d = ``--wide-d``, rho = 0.99, n = ``--wide-n``), and the
real data sets of docs/validation.md (breast cancer, digits 1 vs 7: the same
80/20 split and standardisation as tests/test_validation.py ``load_case``).
Each case: a model fitted with ``fastinfl.LogisticRegression(l2=1)`` (the real
data sets also at l2 = 0.01, where H is far worse conditioned); m held-out
test points; s_test (H^-1 g for the m test gradients) by every method; the
influence of those m test points on the first 2000 training points.

Reported per method: passes over X (Hessian-vector products with all running
right-hand sides; forming H or its diagonal counts one), iterations (max over
right-hand sides), wall time of the solve from a fresh ``Influence``
(preconditioner / eigenpairs included, constructor not), and the max relative
error of the influence matrix against the direct solve (max |I - I_direct| /
max |I_direct|). Methods that do not reach their tolerance are still measured
(``run`` without raising) and marked "not converged".

Methods: direct (Cholesky); cg (fused kernel, tol 1e-10); pcg-jacobi; pcg-nystrom
(adaptive rank); lissa (deterministic, full-batch Koh & Liang recursion, scale =
lambda_max, ``--lissa-depth`` steps at most, tol 1e-10); lissa-sgd (Koh & Liang's
stochastic version: samples of min(1000, n / 4) rows, 1000 steps, 1 repetition); arnoldi (rank
50; rank 20 too); scipy's ``cg`` on the same HVP (one right-hand side at a time,
rtol 1e-10, and its default rtol 1e-5); pyDVL's CgInfluence (``--pydvl`` names a
Python with pydvl and torch; run in a subprocess on the same data, default
settings and rtol 1e-10/atol 0), compared with its own direct solve: pyDVL
regularises every parameter with the same lambda (intercept included), so its
reference is H + l2 * e_b e_b^T (n x its mean-loss Hessian), not fastinfl's H.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import scipy.sparse.linalg

import fastinfl
from bench import machine
from fastinfl.solvers_iterative import PCG, Arnoldi, LiSSA

L2 = 1.0
TOL = 1e-10
N_TRAIN_COLS = 2000
SGD_ROWS, SGD_DEPTH = 1000, 1000  # stochastic LiSSA: rows per sample (at most n / 4), steps


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data
def load_case(name):
    """tests/test_validation.py ``load_case``: seed-0 80/20 split, constant columns dropped, standardised."""
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
    else:
        X, y = load_digits(return_X_y=True)
        keep = (y == 1) | (y == 7)
        X, y = X[keep], (y[keep] == 7).astype(np.int64)
    X = np.asarray(X, dtype=np.float64)
    perm = np.random.default_rng(0).permutation(X.shape[0])
    n_train = int(round(0.8 * X.shape[0]))
    tr, te = perm[:n_train], perm[n_train:]
    sd = X[tr].std(axis=0)
    X = X[:, sd > 0]
    X = (X - X[tr].mean(axis=0)) / sd[sd > 0]
    return X[tr], y[tr], X[te], y[te]


def synthetic(n, d, rho, m):
    X, y, _ = fastinfl.datasets.make_logistic(n + m, d, seed=0, dtype=np.float64, correlation=rho)
    return X[:n], y[:n], X[n:], y[n:]


# --------------------------------------------------------------- counting
class Counter:
    """Counts HVP passes (calls) on an Influence's Hessian operator."""

    def __init__(self, hess):
        self.passes = 0
        self.vectors = 0
        inner = hess.hvp

        def hvp(V):
            self.passes += 1
            self.vectors += V.shape[0]
            return inner(V)

        hess.hvp = hvp
        inner_diag = hess.operator.hessian_diagonal

        def diag(*args):
            self.passes += 1
            return inner_diag(*args)

        hess.operator.hessian_diagonal = diag


def method_runs(model, X, y, X_test, y_test, lissa_depth):
    """{name: (passes, iterations, seconds, S (m, p), note)} for every fastinfl-side method."""
    out = {}

    def fresh():
        inf = fastinfl.Influence(model, X, y, tol=TOL, max_iter=20000)
        return inf, Counter(inf.hessian_operator)

    def timed(name, solve):
        inf, count = fresh()
        G = inf.gradients(X_test, y_test)
        w = time.perf_counter()
        S, iters, note, extra_passes = solve(inf, G)
        out[name] = dict(passes=count.passes + extra_passes, iters=iters, time=time.perf_counter() - w, S=S,
                         note=note)
        log(f"  {name}: {out[name]['time']:.2f} s, {out[name]['passes']} passes, {note}")

    def direct(inf, G):
        inf.solver = "direct"
        return inf.solve(G), 0, "", 1

    def cg(inf, G):
        inf.solver = "cg"
        S = inf.solve(G)
        it = int(inf.cg_n_iter_.max())
        return S, it, "", it

    def pcg(prec, rank=None):
        def solve(inf, G):
            solver = PCG(inf.hessian_operator, TOL, 20000, prec, rank)
            S, n_iter, resid, status = solver.run(G)
            note = f"rank {solver.M.rank}" if prec == "nystrom" else ""
            if (status != 0).any():
                note += " not converged"
            return S, int(n_iter.max()), note.strip(), 0
        return solve

    def lissa(inf, G):
        solver = LiSSA(inf.hessian_operator, TOL, depth=lissa_depth)
        S, n_iter, resid, status = solver.run(G)
        note = f"scale {solver.scale:.3g}, residual {resid.max():.1e}" + ("" if (status == 0).all() else
                                                                         ", not converged")
        return S, int(n_iter.max()), note, 0

    def lissa_sgd(inf, G):
        rows = min(SGD_ROWS, inf.n_samples // 4)
        solver = LiSSA(inf.hessian_operator, TOL, depth=SGD_DEPTH, batch_size=rows, repetitions=1)
        S, n_iter, resid, status = solver.run(G)
        # the sampled-row steps read SGD_DEPTH * rows rows: counted as passes of n rows (+1 residual check)
        rows_read = SGD_DEPTH * rows / inf.n_samples
        return S, int(n_iter.max()), f"{rows}-row samples, residual {resid.max():.1e}", int(np.ceil(rows_read))

    def arnoldi(rank):
        def solve(inf, G):
            solver = Arnoldi(inf.hessian_operator, rank=rank)
            S = solver.solve(G)
            return S, solver.n_hvp_setup_, f"{solver.n_hvp_setup_} Lanczos vectors, residual " \
                                           f"{solver.residual_.max():.2f}", 0
        return solve

    def scipy_cg(rtol):
        def solve(inf, G):
            p = inf.n_params
            op = scipy.sparse.linalg.LinearOperator((p, p), matvec=lambda v: inf.hessian_operator.hvp(v[None, :])[0],
                                                    dtype=np.float64)
            S = np.empty_like(G)
            iters = 0
            bad = 0
            for q in range(G.shape[0]):
                count = [0]
                S[q], info = scipy.sparse.linalg.cg(op, G[q], rtol=rtol, atol=0.0, maxiter=20000,
                                                    callback=lambda xk: count.__setitem__(0, count[0] + 1))
                iters = max(iters, count[0])
                bad += info != 0
            return S, iters, "one rhs at a time" + (f", {bad} not converged" if bad else ""), 0
        return solve

    timed("direct", direct)
    timed("cg", cg)
    timed("pcg-jacobi", pcg("jacobi"))
    timed("pcg-nystrom", pcg("nystrom"))
    timed("lissa", lissa)
    timed("lissa-sgd", lissa_sgd)
    timed("arnoldi-50", arnoldi(50))
    timed("arnoldi-20", arnoldi(20))
    timed("scipy-cg", scipy_cg(TOL))
    timed("scipy-cg-default", scipy_cg(1e-5))
    return out


def run_pydvl(python, X, y, X_test, y_test, model):
    """pyDVL's CgInfluence in a subprocess: {name: dict(time, iters, S or influence)} or an error string."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        np.savez(data, X=X, y=y, X_test=X_test, y_test=y_test, coef=model.coef_, intercept=model.intercept_,
                 l2=model.l2, cols=N_TRAIN_COLS)
        result = os.path.join(tmp, "out.npz")
        proc = subprocess.run([python, os.path.join(os.path.dirname(__file__), "_pydvl_peer.py"), data, result],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        with np.load(result, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            return {name: dict(time=meta[name]["time"], note=meta[name]["note"], I=f[name])
                    for name in meta}


def study_case(name, X, y, X_test, y_test, args, l2=L2):
    log(f"{name}: fitting {X.shape} ...")
    model = fastinfl.LogisticRegression(l2=l2).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="direct")
    H = inf.hessian()
    w = np.linalg.eigvalsh(H)
    cond = float(w[-1] / w[0])
    log(f"  cond(H) = {cond:.3g}")
    runs = method_runs(model, X, y, X_test, y_test, args.lissa_depth)
    cols = np.arange(min(N_TRAIN_COLS, X.shape[0]))
    op, curv = inf.operator, inf.curvature
    I_ref = op.influence(curv, runs["direct"]["S"], cols)
    scale = np.abs(I_ref).max()
    rows = []
    for method, r in runs.items():
        err = np.abs(op.influence(curv, r["S"], cols) - I_ref).max() / scale
        rows.append(dict(case=name, n=X.shape[0], d=X.shape[1], cond=cond, method=method, passes=r["passes"],
                         iters=r["iters"], time=r["time"], err=float(err), note=r["note"]))
    if args.pydvl:
        log("  pyDVL ...")
        peer = run_pydvl(args.pydvl, X, y, X_test, y_test, model)
        if isinstance(peer, str):
            rows.append(dict(case=name, n=X.shape[0], d=X.shape[1], cond=cond, method="pydvl-cg", passes=None,
                             iters=None, time=None, err=None, note=f"failed: {peer}"))
        else:
            # pyDVL's own reference: fastinfl's H plus l2 on the intercept (pyDVL regularises every parameter)
            Hp = H.copy()
            Hp[-1, -1] += l2
            G_test = inf.gradients(X_test, y_test)
            Ip = op.influence(curv, np.linalg.solve(Hp, G_test.T).T, cols)
            for key, r in peer.items():
                # pyDVL: mean-loss Hessian, so its values are n x ours; sign as fitted (reported)
                Iq = r["I"] / X.shape[0]
                sign = 1.0 if np.sum(Iq * Ip) >= 0 else -1.0
                err = np.abs(sign * Iq - Ip).max() / np.abs(Ip).max()
                rows.append(dict(case=name, n=X.shape[0], d=X.shape[1], cond=cond, method=key, passes=None,
                                 iters=None, time=r["time"], err=float(err), note=r["note"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.solver_study", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rhos", default="0,0.9,0.99,0.999")
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--wide-d", type=int, default=1000)
    parser.add_argument("--wide-n", type=int, default=20_000)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--lissa-depth", type=int, default=300)
    parser.add_argument("--pydvl", default=None, help="a Python with pydvl and torch installed")
    parser.add_argument("--cases", default="synthetic,wide,real")
    parser.add_argument("--real-l2s", default="1,0.01", help="l2 values for the real data sets")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    warnings.simplefilter("ignore", fastinfl.StationarityWarning)

    log("warm-up (compiles the float64 kernels) ...")
    Xw, yw, Xtw, ytw = synthetic(5000, 10, 0.5, 3)
    method_runs(fastinfl.LogisticRegression(l2=L2).fit(Xw, yw), Xw, yw, Xtw, ytw, 5)

    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    rows = []
    if "synthetic" in cases:
        for rho in [float(r) for r in args.rhos.split(",")]:
            rows += study_case(f"rho={rho:g}", *synthetic(args.n, args.d, rho, args.m), args)
    if "wide" in cases:
        rows += study_case("rho=0.99 wide", *synthetic(args.wide_n, args.wide_d, 0.99, args.m), args)
    if "real" in cases:
        for name in ("breast_cancer", "digits_1_vs_7"):
            X, y, Xt, yt = load_case(name)
            for l2 in [float(v) for v in args.real_l2s.split(",")]:
                label = name if l2 == L2 else f"{name} l2={l2:g}"
                rows += study_case(label, X, y, Xt[: args.m], yt[: args.m], args, l2)
    total = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)

    argv = sys.argv[1:] if argv is None else argv
    print("## Solver study (issue 15)\n")
    print(f"`{shlex.join(['python', '-m', 'bench.solver_study', *argv])}`, float64, l2 = {L2:g} unless "
          f"stated, m = {args.m} "
          f"test points, tol 1e-10; {total:.0f} s; 1-minute load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end (shared machine: times are single runs, compare within a case)  ")
    print(f"Machine: {machine.describe()}\n")
    print("| case | n | d | cond(H) | method | passes | iterations | time (s) | time / direct | max rel. error "
          "| note |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    direct_time = {r["case"]: r["time"] for r in rows if r["method"] == "direct"}
    for r in rows:
        t = "" if r["time"] is None else f"{r['time']:.3f}"
        ratio = "" if r["time"] is None else f"{r['time'] / direct_time[r['case']]:.1f}"
        err = "" if r["err"] is None else f"{r['err']:.1e}"
        print(f"| {r['case']} | {r['n']} | {r['d']} | {r['cond']:.3g} | {r['method']} | "
              f"{'' if r['passes'] is None else r['passes']} | {'' if r['iters'] is None else r['iters']} | {t} | "
              f"{ratio} | {err} | {r['note']} |")


if __name__ == "__main__":
    main()
