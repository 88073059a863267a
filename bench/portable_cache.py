"""Kernel speed of the shipped portable cache against a native compile, A/B in the same run.

    python -m bench.portable_cache --portable TREE_A --native TREE_B --native-cache DIR [--rounds 3]

TREE_A: a package tree whose fastinfl/_kernel_cache holds the portable build (setup.py's build_lib,
or ``fastinfl.cli.compile.build_shipped``); TREE_B: the same sources without it, its kernels compiled
natively into DIR (``NUMBA_CACHE_DIR=DIR fastinfl compile``). Each round runs one child process per
side, alternating, timing the fastinfl side of the kernel cases of bench/cases.py (best of
``--repeats`` within a child, best over rounds); the children check which cache served them.
``--cpu``: one Numba and one BLAS thread per child, timed by process CPU time (``time.process_time``),
which time-slicing with other jobs on a loaded machine does not inflate as it does wall time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
import numpy as np
from bench.cases import CASES, Problem
from fastinfl.kernels import _cache
n, d, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
out = {}
for dtype in sys.argv[3].split(","):
    pb = Problem(n, d, dtype)
    for name in ("hessian", "hessian_kernel", "hvp", "hvp_k16", "hvp_k100", "cg_k20", "top_k"):
        case = CASES[name](pb)
        best = np.inf
        clock = time.process_time if sys.argv[5] == "cpu" else time.perf_counter
        for _ in range(repeats):
            t = clock(); case.fastinfl(); best = min(best, clock() - t)
        out[f"{name} {dtype}"] = best
shipped = _cache.shipped() is not None
print(json.dumps({"times": out, "compiled": _cache.compile_counts(), "shipped": shipped}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--portable", required=True)
    parser.add_argument("--native", required=True)
    parser.add_argument("--native-cache", required=True)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args(argv)
    bench_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    best = {}
    with tempfile.TemporaryDirectory() as empty:
        sides = {"portable": (args.portable, empty), "native": (args.native, args.native_cache)}
        for _ in range(args.rounds):
            for side, (tree, cache) in sides.items():
                env = dict(os.environ, PYTHONPATH=tree + os.pathsep + bench_root, NUMBA_CACHE_DIR=cache,
                           FASTINFL_COMPILE_NOTICE="0")
                if args.cpu:
                    env.update(NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
                child = [sys.executable, "-c", CHILD, str(args.n), str(args.d), args.dtypes,
                         str(args.repeats), "cpu" if args.cpu else "wall"]
                proc = subprocess.run(child, env=env, capture_output=True, text=True, check=True, cwd=empty)
                out = json.loads(proc.stdout.splitlines()[-1])
                assert out["shipped"] == (side == "portable"), out
                assert not out["compiled"], (side, out["compiled"])  # timed code came from the caches
                for key, t in out["times"].items():
                    best.setdefault(key, {}).setdefault(side, []).append(t)
    print(f"`python -m bench.portable_cache {' '.join(argv if argv is not None else sys.argv[1:])}`: "
          f"n={args.n}, d={args.d}, {args.rounds} alternating rounds, best of {args.repeats} per child, "
          f"{'process CPU time, 1 thread' if args.cpu else 'wall time, all threads'}; "
          f"load {os.getloadavg()[0]:.1f} at the end\n")
    print("| case | native (ms) | portable (ms) | portable / native |")
    print("|---|---:|---:|---:|")
    for key, sides_ in best.items():
        nat, por = min(sides_["native"]), min(sides_["portable"])
        print(f"| {key} | {nat * 1e3:.2f} | {por * 1e3:.2f} | {por / nat:.3f} |")


if __name__ == "__main__":
    main()
