"""Throughput table: fastinfl against the reference code and against this machine's measured limits.

    python -m bench.report [--n 1000000] [--d 100] [--dtype float64] [--ops hessian,hvp,...]

Each time is the best of up to 5 runs, repeated while their total is under
``--budget`` seconds (so a run longer than that is timed once), after one
untimed fastinfl run that compiles or loads the kernels. The fit (sklearn takes
10-30 s at the default size) runs only when asked: ``--ops ...,fit``.
Achieved throughput uses the bound that binds on this machine: flops (Hessian
2 n p^2, k HVPs 4 n p k, top-k 2 n p m) against float64 GEMM, or bytes of X
read (n d itemsize per pass) against memory read bandwidth. Where the reference
times only part of the work (cg_k100: 10 of the 100 SciPy solves) its time is
scaled to the whole, as the table says. For top_k a second table gives the peak
extra memory of both sides (see bench/memory.py).
"""

import argparse
import shlex
import sys
import time

import numpy as np

from bench import machine
from bench.cases import CASES, Problem
from bench.memory import peak_memory


def best_time(fn, budget, max_reps=5):
    """(best wall time of ``fn`` in seconds, its last result)."""
    best, spent, reps = np.inf, 0.0, 0
    while reps == 0 or (reps < max_reps and spent < budget):
        t = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best, result


def fraction(rate, limit):
    """``rate / limit`` as a percentage, never above 100%: a rate above the measured limit means the
    limit was not the machine's (data in cache, a disturbed measurement), shown as ">100%*"."""
    frac = rate / limit
    return ">100%*" if frac > 1.0 else f"{frac:.0%}"


def roofline(case, seconds, gflops, gbs):
    """(achieved rate, fraction of the machine limit) for whichever of flops or bytes binds."""
    if case.flops is None:
        return "", ""
    if case.flops / gflops >= case.bytes / gbs:
        rate = case.flops / seconds / 1e9
        return f"{rate:.1f} GFLOP/s", fraction(rate, gflops)
    rate = case.bytes / seconds / 1e9
    return f"{rate:.1f} GB/s", fraction(rate, gbs)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rows (default 1000000)")
    parser.add_argument("--d", type=int, default=100, help="features (default 100)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="dtype of X (default float64)")
    parser.add_argument("--ops", default=",".join(op for op in CASES if op != "fit"),
                        help="comma-separated, from: " + ", ".join(CASES))
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of repeats per timing")
    args = parser.parse_args(argv)
    ops = args.ops.split(",")
    unknown = sorted(set(ops) - set(CASES))
    if unknown:
        parser.error(f"unknown --ops {unknown}; choose from {list(CASES)}")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log("measuring machine limits ...")
    limits = [(machine.dgemm_gflops(), machine.read_bandwidth_gbs())]
    log(f"building the {args.n} x {args.d} {args.dtype} problem ...")
    pb = Problem(args.n, args.d, args.dtype)
    timed, memory = [], []
    for op in ops:
        log(f"{op} ...")
        case = pb.case(op)
        t_fast, res_fast = best_time(case.fastinfl, args.budget)
        t_ref, res_ref = best_time(case.reference, args.budget)
        case.check(res_fast, res_ref)
        timed.append((op, case, t_fast, t_ref * case.ref_time_scale))
        if case.track_memory:
            del res_fast, res_ref
            log(f"{op}: peak memory ...")
            memory.append((op, case, peak_memory(case.fastinfl)[1:], peak_memory(case.reference)[1:]))
    log("measuring machine limits again ...")
    limits.append((machine.dgemm_gflops(), machine.read_bandwidth_gbs()))
    # The best of the two measurements: the limit the machine showed it can reach.
    gflops, gbs = max(g for g, _ in limits), max(b for _, b in limits)

    argv = sys.argv[1:] if argv is None else argv
    print(f"## Throughput, {args.n} x {args.d} {args.dtype}\n")
    print(f"`{shlex.join(['python', '-m', 'bench.report', *argv])}`  ")
    try:
        import sklearn

        versions = f", scikit-learn {sklearn.__version__}"
    except ImportError:  # needed by the fit case only
        versions = ""
    print(f"Machine: {machine.describe()}{versions}  ")
    print(f"Limits measured in this run (before / after): float64 GEMM "
          f"{limits[0][0]:.0f} / {limits[1][0]:.0f} GFLOP/s (NumPy, 2000 x 2000), memory read "
          f"{limits[0][1]:.1f} / {limits[1][1]:.1f} GB/s (400 MB, BLAS gemv); fractions use the higher.\n")
    print("| operation | size | fastinfl (s) | reference | reference (s) | speed-up | fastinfl achieved "
          "| of limit |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for op, case, t_fast, t_ref in timed:
        rate, frac = roofline(case, t_fast, gflops, gbs)
        name = f"{op} ({case.note})" if case.note else op
        print(f"| {name} | {args.n}x{args.d} {args.dtype} | {t_fast:.4f} | {case.reference_name} | "
              f"{t_ref:.4f} | {t_ref / t_fast:.2f}x | {rate} | {frac} |")
    if any(frac == ">100%*" for frac in (roofline(c, t, gflops, gbs)[1] for _, c, t, _ in timed)):
        print("\n\\* faster than the limit measured in this run: the data fit in cache (small n x d), or "
              "the limit's measurement was disturbed by other load; the fraction is not meaningful.")
    if memory:
        print("\nPeak extra memory of one call (MiB): allocations traced by tracemalloc (NumPy buffers and "
              "Numba's, all threads), and the rise of the resident set (VmHWM reset before the call, a "
              "lower bound: memory freed earlier is reused).\n")
        print("| operation | fastinfl traced | fastinfl RSS rise | reference traced | reference RSS rise |")
        print("|---|---:|---:|---:|---:|")

        def mib(x):
            return "n/a" if x is None else f"{x / 2**20:.1f}"

        for op, case, (f_tr, f_rss), (r_tr, r_rss) in memory:
            print(f"| {op} ({case.note}) | {mib(f_tr)} | {mib(f_rss)} | {mib(r_tr)} | {mib(r_rss)} |")


if __name__ == "__main__":
    main()
