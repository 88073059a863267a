"""Fixed cost of a small call: the public method against its arithmetic alone, on n = 1000, d = 10.

    python -m bench.call_overhead [--n 1000] [--d 10] [--repeats 7] [--calls 2000]

For ``hvp`` (one vector), ``s_test`` (direct solver, one test point) and
``top_k`` (one test point, k = 10): the best-of-``repeats`` mean over ``calls``
calls of the public method, and of the kernel calls it makes with
pre-validated arguments (the arithmetic: ``_hvp``; the test gradient kernel +
LAPACK ``dpotrs``; those + ``_top_k``). Overhead = public - arithmetic: validation,
the operator for the test points, the policy (the kernels here run as one
serial chunk: no thread pool, no BLAS limit), batching and result packaging.
Target (issue 11): overhead <= 100 us.
"""

import argparse
import time

import numpy as np
import scipy.linalg.lapack

import fastinfl
from fastinfl.kernels import dense as kernels


def _best_us(fn, repeats, calls):
    fn()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    X, y, _ = fastinfl.datasets.make_logistic(args.n, args.d, seed=0, dtype=np.float64)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y, solver="direct")
    x1, y1 = X[:1].copy(), y[:1].copy()
    p = args.d + 1
    v = np.ones(p)
    op, curv, ridge = inf.operator, inf.curvature, inf.hessian_operator.ridge
    chol = inf.solver_.factor()
    stop = np.zeros(1, np.uint8)
    V, out = v[None, :].copy(), np.empty((1, p))
    coef, b = model.coef_, float(model.intercept_)
    g = np.empty((1, p))
    k = 10
    tk = [np.empty((1, k)), np.empty((1, k), np.int64), np.empty((1, k)), np.empty((1, k), np.int64)]

    def s_arith():
        kernels._per_example_grads(x1, y1, 0, coef, b, g, stop)
        return scipy.linalg.lapack.dpotrs(chol[0], g.T, lower=1)[0].T

    def top_arith():
        S = np.ascontiguousarray(s_arith())
        kernels._top_k(op.X, curv.residuals, S, tk[0], tk[1], tk[2], tk[3], stop)

    cases = [
        ("hvp(v)", lambda: inf.hvp(v), lambda: kernels._hvp(op.X, curv.weights, ridge, V, out, stop)),
        ("s_test(x, y), direct", lambda: inf.s_test(x1, y1), s_arith),
        ("top_k(x, y, k=10)", lambda: inf.top_k(x1, y1, k=k), top_arith),
    ]
    print(f"n={args.n} d={args.d}; best of {args.repeats} x {args.calls} calls")
    print("| call | public us | arithmetic us | overhead us | target |")
    print("|---|---|---|---|---|")
    for name, public, arith in cases:
        pub, ari = _best_us(public, args.repeats, args.calls), _best_us(arith, args.repeats, args.calls)
        print(f"| {name} | {pub:.1f} | {ari:.1f} | {pub - ari:.1f} | <= 100 |")


if __name__ == "__main__":
    main()
