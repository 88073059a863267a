"""fastinfl beside NumPy and beside a second process: the slowdowns a benchmark in isolation hides.

    python -m bench.interleave [--n 200000] [--d 100] [--rounds 3] [--seconds 3]

1. Beside NumPy, in one process, no pauses: a fastinfl HVP (one vector, parallel
   kernel) timed alone (after a 0.3 s pause: every thread pool asleep) and right
   after a NumPy BLAS call (a 400 x 400 matmul, whose OpenBLAS threads keep
   spinning for a while); and the same NumPy call alone and right after the HVP
   (Numba's OpenMP threads spin too). Best and median of ``--alternations`` pairs per round.
2. Beside a second process: HVPs per second of one process alone, and of two at
   once (each pinned to nothing, all cores shared), as the ratio of the pair's
   total to one alone; and the CPU seconds (all threads, spinning included) per
   HVP, whose ratio (one alone over the pair) is what the throughput ratio would
   be on an idle machine whose cores both processes keep busy: on a machine
   loaded by other jobs the wall-time ratio says little (a second process gets
   a second share of the machine), the CPU ratio still shows spin-waiting.

3. Spinning, load-robust: the CPU seconds the process burns in the 50 ms after
   a NumPy call, after a NumPy call then an HVP, and after an HVP, while the
   calling thread sleeps: all of it is idle thread pools spinning (OpenBLAS's,
   Numba's OpenMP team), CPU that a kernel or a second process needed.

Each measurement runs in fresh child processes per variant (environment given
below), alternating variants round by round; "default" is fastinfl as installed
(no environment variable set by the user).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PAIR = """
import json, sys, time
import numpy as np
import fastinfl
n, d, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
X, y, _ = fastinfl.datasets.make_logistic(n, d, seed=0, dtype=np.float64)
inf = fastinfl.Influence(fastinfl.LogisticRegression.from_params(np.full(d, 0.1), -0.5, l2=1.0), X, y,
                         stationarity_tol=1e300)
v = np.random.default_rng(0).standard_normal((1, d + 1))
A = np.random.default_rng(1).standard_normal((400, 400))
inf.hvp(v); A @ A
if mode == "numpy":
    out = {"hvp alone": [], "hvp after numpy": [], "numpy alone": [], "numpy after hvp": []}
    for _ in range(int(sys.argv[4])):
        time.sleep(0.3); t = time.perf_counter(); inf.hvp(v); out["hvp alone"].append(time.perf_counter() - t)
        A @ A; t = time.perf_counter(); inf.hvp(v); out["hvp after numpy"].append(time.perf_counter() - t)
        time.sleep(0.3); t = time.perf_counter(); A @ A; out["numpy alone"].append(time.perf_counter() - t)
        inf.hvp(v); t = time.perf_counter(); A @ A; out["numpy after hvp"].append(time.perf_counter() - t)
elif mode == "spin":  # CPU burnt by idle pools in the 50 ms after a call, while this thread sleeps
    out = {"after numpy": [], "after numpy, then hvp": [], "after hvp": []}
    for _ in range(9):
        calls = (("after numpy", lambda: A @ A), ("after numpy, then hvp", lambda: (A @ A, inf.hvp(v))),
                 ("after hvp", lambda: inf.hvp(v)))
        for key, call in calls:
            time.sleep(0.3); call(); t = time.process_time(); time.sleep(0.05)
            out[key].append(time.process_time() - t)
else:  # throughput until the shared start time + seconds
    start, seconds = float(sys.argv[4]), float(sys.argv[5])
    while time.time() < start:
        time.sleep(0.001)
    count, cpu = 0, time.process_time()
    while time.time() < start + seconds:
        inf.hvp(v); count += 1
    out = {"calls": count / seconds, "cpu_per_call": (time.process_time() - cpu) / count}
print(json.dumps(out))
"""

VARIANTS = {
    # the environment each variant's children get on top of the caller's
    "default": {},
    "quiesce only": {"GOMP_SPINCOUNT": "300000"},
    "passive only": {"FASTINFL_QUIESCE_BLAS": "0"},
    "before (no quiesce, OpenMP spin-wait)": {"FASTINFL_QUIESCE_BLAS": "0", "OMP_WAIT_POLICY": "",
                                              "GOMP_SPINCOUNT": "300000"},
}


def _env(extra):
    env = dict(os.environ)
    for key, value in extra.items():
        if value == "":
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _child(args, extra, mode, *more):
    return subprocess.Popen([sys.executable, "-c", PAIR, str(args.n), str(args.d), mode, *map(str, more)],
                            env=_env(extra), stdout=subprocess.PIPE, text=True)


def _result(proc):
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError("child failed")
    return json.loads(out.splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--alternations", type=int, default=9, help="NumPy/HVP pairs per child")
    args = parser.parse_args(argv)
    numpy_side = {v: {} for v in VARIANTS}
    spin = {v: {} for v in VARIANTS}
    procs = {v: {"one": [], "two": [], "cpu one": [], "cpu two": []} for v in VARIANTS}
    for _ in range(args.rounds):
        for variant, extra in VARIANTS.items():
            for key, times in _result(_child(args, extra, "numpy", args.alternations)).items():
                numpy_side[variant].setdefault(key, []).extend(times)
            for key, times in _result(_child(args, extra, "spin")).items():
                spin[variant].setdefault(key, []).extend(times)
            start = time.time() + 8  # after the children's setup
            one = _result(_child(args, extra, "rate", start, args.seconds))
            procs[variant]["one"].append(one["calls"])
            procs[variant]["cpu one"].append(one["cpu_per_call"])
            start = time.time() + 8
            pair = [_result(p) for p in [_child(args, extra, "rate", start, args.seconds) for _ in range(2)]]
            procs[variant]["two"].append(sum(p["calls"] for p in pair))
            procs[variant]["cpu two"].append(statistics.mean(p["cpu_per_call"] for p in pair))
    print(f"`python -m bench.interleave --n {args.n} --d {args.d} --rounds {args.rounds} --seconds "
          f"{args.seconds} --alternations {args.alternations}`; load {os.getloadavg()[0]:.1f} at the end\n")
    print("| variant | HVP alone (ms) | HVP right after NumPy (ms) | ratio | NumPy alone (ms) | "
          "NumPy right after HVP (ms) | ratio | 1 process (HVP/s) | 2 processes (HVP/s) | ratio | "
          "CPU ms per HVP, 1 process | 2 processes | ratio 1/2 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        t = {k: (min(v) * 1e3, statistics.median(v) * 1e3) for k, v in numpy_side[variant].items()}
        one, two = max(procs[variant]["one"]), max(procs[variant]["two"])
        cpu1, cpu2 = min(procs[variant]["cpu one"]) * 1e3, min(procs[variant]["cpu two"]) * 1e3

        def cell(k, t=t):
            return f"{t[k][0]:.2f} (median {t[k][1]:.2f})"

        print(f"| {variant} | {cell('hvp alone')} | {cell('hvp after numpy')} | "
              f"{t['hvp after numpy'][0] / t['hvp alone'][0]:.2f} | {cell('numpy alone')} | "
              f"{cell('numpy after hvp')} | {t['numpy after hvp'][0] / t['numpy alone'][0]:.2f} | "
              f"{one:.0f} | {two:.0f} | {two / one:.2f} | {cpu1:.2f} | {cpu2:.2f} | {cpu1 / cpu2:.2f} |")

    keys = list(next(iter(spin.values())))
    print("\nCPU ms burnt by idle thread pools in the 50 ms after the call (median; the calling thread "
          "sleeps)\n")
    print("| variant | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for variant in VARIANTS:
        cells = " | ".join(f"{statistics.median(spin[variant][k]) * 1e3:.1f}" for k in keys)
        print(f"| {variant} | {cells} |")


if __name__ == "__main__":
    main()
