"""Compile cost of the Numba kernels, in fresh processes: empty NUMBA_CACHE_DIR, then populated.

    python -m bench.compile_time

Each child process imports fastinfl, then fits and computes influences on a
small problem twice: the first call compiles (or loads from the cache), the
second shows what is left when everything is compiled. Prints a markdown table.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine

N, D = 2000, 20

CHILD = f"""
import json, sys, time
t0 = time.perf_counter()
import fastinfl
out = {{"import": time.perf_counter() - t0}}
for dtype in sys.argv[1:]:
    X, y, _ = fastinfl.datasets.make_logistic({N}, {D}, seed=0, dtype=dtype)
    for key in ("first", "second"):
        t = time.perf_counter()
        model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
        fastinfl.Influence(model, X, y).influence(X[:10], y[:10])
        out[key] = time.perf_counter() - t
print(json.dumps(out))
"""


def run_child(cache_dir, *dtypes):
    """Run CHILD in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir``: (its timings, wall time)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTINFL_CACHE="1")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *dtypes], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.splitlines()[-1]), time.perf_counter() - t


def main():
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastinfl-numba-cache-") as cache:
        for dtype, state in [("float64", "empty (cold)"), ("float64", "warm"),
                             ("float32", "float64 only (cold for float32)"), ("float32", "warm")]:
            out, wall = run_child(cache, dtype)
            rows.append((f"fit + influence, {dtype}", state, out["import"], out["first"], out["second"],
                         wall))
        imports = [run_child(cache) for _ in range(3)]
        out, wall = min(imports, key=lambda r: r[1])
        rows.append(("import only (best of 3)", "warm", out["import"], None, None, wall))
        files = [f for f in Path(cache).rglob("*") if f.is_file()]
        size_mb = sum(f.stat().st_size for f in files) / 1e6

    def sec(x):
        return "" if x is None else f"{x:.3f}"

    print("## Compile time\n")
    print(f"`{shlex.join(['python', '-m', 'bench.compile_time', *sys.argv[1:]])}`, "
          f"problem {N} x {D}, each row a fresh process sharing one temporary NUMBA_CACHE_DIR  ")
    print(f"Machine: {machine.describe()}\n")
    print("| run | Numba cache | import fastinfl (s) | first call (s) | second call (s) | process wall (s) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, state, *times in rows:
        print(f"| {name} | {state} | " + " | ".join(sec(t) for t in times) + " |")
    print(f"\nCache afterwards: {len(files)} files, {size_mb:.1f} MB. A call is "
          "`LogisticRegression(l2=1).fit` then `Influence(...).influence` on 10 test points (direct solver).")


if __name__ == "__main__":
    main()
