"""How much of X an exact top-k could skip: the bound |I(t, i)| <= ||s_t|| |r_i| ||x~_i|| (issue 11, item 8).

    python -m bench.topk_bound [--n 200000] [--d 50] [--scales 3,5,8] [--points 20] [--k 10]

Data: ``make_logistic(n, d)`` features times ``scale`` with labels redrawn from the
scaled margins, so that a larger scale gives a better-separated problem (training
accuracy printed). For each of ``points`` training rows used as test points, the
exact top-k (k helpful and k harmful) is computed from the full influence row;
its threshold is the smaller of the two k-th largest magnitudes. Rows whose bound
||s_t|| |r_i| ||x~_i|| is below the threshold cannot enter either list, so a
top-k that visits rows in decreasing bound order and stops there reads only the
printed fraction of X (exactly; a real kernel also needs the rows sorted by the
bound once per Influence, and overshoots by its block size).
"""

import argparse

import numpy as np

import fastinfl


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200000)
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--scales", default="3,5,8")
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    n, d, k = args.n, args.d, args.k
    X0, _, _ = fastinfl.datasets.make_logistic(n, d, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    coef = rng.standard_normal(d) / np.sqrt(d)
    print(f"`python -m bench.topk_bound --n {n} --d {d} --scales {args.scales} --points {args.points} --k {k}`\n")
    print("| feature scale | training accuracy | fraction of X read: median | max |")
    print("|---|---|---|---|")
    for scale in (float(s) for s in args.scales.split(",")):
        X = X0 * scale
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ coef - 0.5)))).astype(np.float64)
        model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
        inf = fastinfl.Influence(model, X, y)
        r = inf.gradients()[:, -1]  # r_i: the intercept column of g_i = r_i x~_i
        Xa = np.hstack([X, np.ones((n, 1))])
        bound = np.sort(np.abs(r) * np.linalg.norm(Xa, axis=1))[::-1]
        idx = rng.choice(n, args.points, replace=False)
        S = inf.s_test(X[idx], y[idx])
        fractions = []
        for s in S:
            I = -(Xa @ s) * r
            helpful = np.sort(I[I < 0])[:k]
            harmful = np.sort(I[I > 0])[::-1][:k]
            if len(helpful) < k or len(harmful) < k:
                fractions.append(1.0)  # a list not full: no row may be skipped
                continue
            threshold = min(-helpful[-1], harmful[-1])
            fractions.append(np.count_nonzero(np.linalg.norm(s) * bound >= threshold) / n)
        print(f"| {scale:g} | {model.score(X, y):.3f} | {np.median(fractions):.3f} | {max(fractions):.3f} |")


if __name__ == "__main__":
    main()
