"""Multinomial Hessian and HVP: fastinfl's fused kernels vs the NumPy a competent user writes.

Usage: ``python -m bench.multinomial [--n 100000] [--d 100] [--classes 10] [--ks 1,10] [--repeats 3]``
(from the repository root, PYTHONPATH set). Prints a markdown table: best-of-N seconds, the ratio to
NumPy, and the fraction of the machine's GEMM limit (dgemm rate measured in the same run).

``--pydvl PYTHON [--peer-n 10000] [--peer-d 100] [--peer-m 100]`` instead compares the full (m, n)
influence matrix with pyDVL's ``DirectInfluence`` on a torch linear model holding the same fitted
parameters (bench/_pydvl_peer.py, run by PYTHON, a Python with pydvl and torch): fastinfl's
``Influence(model, X, y).influence(X_test, y_test)`` from scratch against pyDVL's fit + influences
(each the best of ``--repeats``; fastinfl's kernels compiled and cached first), and the largest difference from the
matrix both should compute (pyDVL regularises the intercepts too: fastinfl's H plus l2 on them).

Flop counts (the "GEMM limit" divides them by the measured dgemm rate):
- Hessian: K^2 n p^2, the multiply-adds of the symmetric (K p)^2 result
  (sum_i (diag pi_i - pi_i pi_i^T) (x) x~_i x~_i^T) counted once per unique entry;
- HVP for k vectors: 4 n p K k (two products of the n x p rows with the k K class blocks).
The NumPy reference: per class pair (a <= b) one BLAS product X~^T (w_ab * X~) with
w_ab = delta_ab pi_a - pi_a pi_b (K (K + 1) / 2 gemms, BLAS on all threads); the HVP as
T = X~ V^T, scaled by W_i row by row, then T^T X~.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

import fastinfl
from bench.machine import describe, dgemm_gflops, read_bandwidth_gbs


def _best(fn, repeats):
    fn()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def numpy_hessian(Xt, Pi, ridge):
    K, p = Pi.shape[1], Xt.shape[1]
    H = np.empty((K * p, K * p))
    for a in range(K):
        for b in range(a + 1):
            w = (Pi[:, a] if a == b else 0.0) - Pi[:, a] * Pi[:, b]
            blk = Xt.T @ (w[:, None] * Xt)
            H[a * p:(a + 1) * p, b * p:(b + 1) * p] = blk
            H[b * p:(b + 1) * p, a * p:(a + 1) * p] = blk.T
    H[np.diag_indices_from(H)] += ridge
    return H


def numpy_hvp(Xt, Pi, ridge, V):
    k = V.shape[0]
    K, p = Pi.shape[1], Xt.shape[1]
    T = (Xt @ V.reshape(k * K, p).T).reshape(-1, k, K)
    T = Pi[:, None, :] * (T - np.einsum("ika,ia->ik", T, Pi)[:, :, None])
    return (T.reshape(-1, k * K).T @ Xt).reshape(k, K * p) + ridge * V


def pydvl_comparison(python, n, d, K, m, repeats):
    """Print the fastinfl vs pyDVL DirectInfluence row for an (n, d) K-class problem and m test points."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n + m, d))
    W = rng.standard_normal((K, d)) / np.sqrt(d)
    y = np.argmax(X @ W.T + rng.gumbel(size=(n + m, K)), axis=1)  # a draw from softmax(X W^T)
    X, X_test, y, y_test = X[:n], X[n:], y[:n], y[n:]
    l2 = 1.0
    model = fastinfl.MultinomialLogisticRegression(l2=l2).fit(X, y)

    def ours():
        return fastinfl.Influence(model, X, y).influence(X_test, y_test)

    I = ours()
    t_ours = _best(ours, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        data, result = os.path.join(tmp, "data.npz"), os.path.join(tmp, "out.npz")
        np.savez(data, X=X, y=y, X_test=X_test, y_test=y_test, coef=model.coef_, intercept=model.intercept_, l2=l2,
                 repeats=repeats)
        peer = os.path.join(os.path.dirname(__file__), "_pydvl_peer.py")
        subprocess.run([python, peer, "--direct-multinomial", data, result], check=True, timeout=3600)
        with np.load(result, allow_pickle=False) as f:
            meta, I_peer = json.loads(str(f["meta"])), f["influence"] / n  # mean-loss Hessian: n x ours
    # References from fastinfl's explicit H: ours is -G_t H^+ G^T; pyDVL's regularises every parameter,
    # so its matrix is H plus l2 on the intercepts as well.
    from fastinfl import reference

    inf = fastinfl.Influence(model, X, y)
    p = d + 1
    H = inf.hessian()
    G, Gt = inf.gradients(), inf.gradients(X_test, y_test)
    I_ref = -Gt @ reference.mn_pinv(H) @ G.T
    Hp = H.copy()
    Hp[np.arange(K) * p + d, np.arange(K) * p + d] += l2
    I_peer_ref = -Gt @ np.linalg.solve(Hp, G.T)
    sign = 1.0 if np.sum(I_peer * I_peer_ref) >= 0 else -1.0
    t_peer = meta["fit"] + meta["influences"]
    print(f"Full influence matrix, n = {n}, d = {d}, K = {K} (P = {K * p}), m = {m} test points, float64; "
          f"{meta['note']}.\n")
    print("| | time (s) | speed-up of fastinfl | max abs diff from its matrix / max abs value |")
    print("|---|---|---|---|")
    print(f"| fastinfl `Influence(model, X, y).influence(X_test, y_test)` (best of {repeats}) | {t_ours:.3g} | "
          f"| {np.abs(I - I_ref).max() / np.abs(I_ref).max():.1e} (-G_t H^+ G^T) |")
    print(f"| pyDVL `DirectInfluence(...).fit(loader)` + `influences(...)` (best of {repeats}: fit {meta['fit']:.3g} s, "
          f"influences {meta['influences']:.3g} s) | {t_peer:.3g} | {t_peer / t_ours:.1f}x "
          f"| {np.abs(sign * I_peer - I_peer_ref).max() / np.abs(I_peer_ref).max():.1e} (H + l2 on the "
          f"intercepts{'' if sign > 0 else '; opposite sign'}) |")
    print(f"\nThe two matrices differ by {np.abs(I_peer_ref - I_ref).max() / np.abs(I_ref).max():.1e} "
          "(relative): pyDVL cannot leave the intercepts unregularised.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=lambda s: int(s.replace("_", "")), default=100_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--ks", default="1,10")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pydvl", default=None, help="a Python with pydvl and torch: compare with DirectInfluence")
    ap.add_argument("--peer-n", type=int, default=10_000)
    ap.add_argument("--peer-d", type=int, default=100)
    ap.add_argument("--peer-m", type=int, default=100)
    args = ap.parse_args(argv)
    if args.pydvl:
        print(f"Machine: {describe()}.")
        return pydvl_comparison(args.pydvl, args.peer_n, args.peer_d, args.classes, args.peer_m, args.repeats)
    n, d, K = args.n, args.d, args.classes
    p = d + 1
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    coef = rng.standard_normal((K, d)) / np.sqrt(d)
    Z = X @ coef.T
    y = np.array([rng.choice(K, p=row) for row in np.exp(Z) / np.exp(Z).sum(1, keepdims=True)]) if n <= 20_000 \
        else np.argmax(Z + rng.gumbel(size=Z.shape), axis=1)  # a draw from softmax(Z), vectorised
    y[:K] = np.arange(K)
    model = fastinfl.MultinomialLogisticRegression.from_params(coef, np.zeros(K), l2=1.0)
    op = model.operator(X, y, "X_train")
    curv = op.curvature(op.margins(model.coef_, model.intercept_))
    ridge = np.tile(np.r_[np.ones(d), 0.0], K)
    Xt = np.hstack([X, np.ones((n, 1))])
    Pi = np.asarray(curv.weights)

    gflops = dgemm_gflops()
    gbs = read_bandwidth_gbs()
    print(f"Machine: {describe()}; dgemm {gflops:.0f} GFLOP/s, read {gbs:.1f} GB/s (shared machine: noisy).")
    print(f"n = {n}, d = {d}, K = {K} (P = {K * p}), float64; best of {args.repeats}.\n")
    print("| operation | fastinfl s | NumPy s | speed-up | fastinfl % of GEMM limit | NumPy % of GEMM limit "
          "| max rel diff |")
    print("|---|---|---|---|---|---|---|")

    def row(name, fast, ref, flops, read_bytes):
        a, b = fast(), ref()
        diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        tf, tr = _best(fast, args.repeats), _best(ref, args.repeats)
        limit = max(flops / (gflops * 1e9), read_bytes / (gbs * 1e9))
        print(f"| {name} | {tf:.4g} | {tr:.4g} | {tr / tf:.2f}x | {100 * limit / tf:.0f}% | {100 * limit / tr:.0f}% "
              f"| {diff:.1e} |")

    row("Hessian (K p)^2", lambda: op.hessian(curv, ridge), lambda: numpy_hessian(Xt, Pi, ridge),
        K * K * n * p * p, 8 * n * d)
    for k in [int(s) for s in args.ks.split(",")]:
        V = rng.standard_normal((k, K * p))
        row(f"HVP, k = {k}", lambda V=V: op.hvp(curv, ridge, V), lambda V=V: numpy_hvp(Xt, Pi, ridge, V),
            4 * n * p * K * k, 8 * n * d)


if __name__ == "__main__":
    main()
