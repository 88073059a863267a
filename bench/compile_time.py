"""Compile cost of the Numba kernels, in fresh processes: empty NUMBA_CACHE_DIR, then populated.

    python -m bench.compile_time               # cold / warm first-call times
    python -m bench.compile_time --per-kernel  # which kernels and signatures the cold time goes to
    python -m bench.compile_time --per-call    # signatures compiled and seconds per user-level call

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


# Times every Dispatcher.compile (the kernel's own time: nested compiles of the kernels it calls are
# subtracted) in a process with a cold cache, while the demo-like steps run on float64 and float32.
PER_KERNEL = f"""
import json, sys, time
import numba.core.dispatcher as dispatcher
orig, stack, spent = dispatcher.Dispatcher.compile, [], {{}}
def compile(self, sig):
    t = time.perf_counter()
    stack.append(0.0)
    try:
        return orig(self, sig)
    finally:
        dt = time.perf_counter() - t
        inner = stack.pop()
        if stack:
            stack[-1] += dt
        key = self.py_func.__module__ + "." + self.py_func.__qualname__ + " " + str(sig)
        spent[key] = spent.get(key, 0.0) + dt - inner
dispatcher.Dispatcher.compile = compile
import fastinfl
t0 = time.perf_counter()
for dtype in sys.argv[1:]:
    X, y, _ = fastinfl.datasets.make_logistic({N}, {D}, seed=0, dtype=dtype)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    inf.influence(X[:10], y[:10]); inf.top_k(X[:10], y[:10], 3); inf.self_influence(); model.losses(X, y)
    fastinfl.Influence(model, X, y, solver="cg").inverse_hvp(inf.gradients(X[:2], y[:2]))
print(json.dumps({{"total": time.perf_counter() - t0, "kernels": spent}}))
"""


# Each warm-up step of `fastinfl compile` (fastinfl/cli/compile.py, WORKLOADS) in a process with a cold
# cache: kernel signatures compiled (cache misses of fastinfl's kernels) and seconds.
PER_CALL = """
import json, sys, time
t0 = time.perf_counter()
import fastinfl
from fastinfl.cli.compile import warm_up
from fastinfl.kernels import _cache
rows, before = [], {}
def step(kind, name, dtype, seconds):
    global before
    counts = _cache.compile_counts()
    rows.append([dtype, name, sum(counts.values()) - sum(before.values()), seconds])
    before = counts
import_s = time.perf_counter() - t0
probe = _cache.probe_seconds()
warm_up(sys.argv[1].split(","), sys.argv[2].split(","), step)
print(json.dumps({"import": import_s, "rows": rows, "shipped": _cache.shipped() is not None, "probe": probe}))
"""


def per_call(dtypes=("float64", "float32"), kinds=("dense", "multinomial", "csr"), cache=None):
    """Signatures compiled and seconds of each user-level call, cold (or ``cache``) NUMBA_CACHE_DIR."""
    with tempfile.TemporaryDirectory(prefix="fastinfl-numba-cache-") as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache or tmp, FASTINFL_CACHE="1", FASTINFL_COMPILE_NOTICE="0")
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PER_CALL, ",".join(dtypes), ",".join(kinds)], env=env,
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
    out = json.loads(proc.stdout.splitlines()[-1])
    print("## Compile time per user-level call (cold cache)\n")
    print(f"`python -m bench.compile_time --per-call`: the warm-up steps of `fastinfl compile` "
          f"(fastinfl/cli/compile.py) in one fresh process, empty NUMBA_CACHE_DIR, shipped cache "
          f"{'used' if out['shipped'] else 'absent or not used'}; load `{os.getloadavg()[0]:.1f}` at the end  ")
    print(f"Machine: {machine.describe()}\n")
    print("| dtype | step | signatures compiled | s |")
    print("|---|---|---:|---:|")
    for dtype, name, count, seconds in out["rows"]:
        print(f"| {dtype} | {name} | {count} | {seconds:.2f} |")
    total = sum(r[2] for r in out["rows"]), sum(r[3] for r in out["rows"])
    print(f"| all | | {total[0]} | {total[1]:.1f} |")
    print(f"\nimport fastinfl {out['import']:.2f} s; process wall {wall:.1f} s; probe compile "
          f"(kernels._cache.probe_seconds) {out['probe']:.3f} s. The compile notice's reference "
          "(_config.COMPILE_SECONDS) is a dtype's dense rows from fit to solver cg, with this probe.")


def per_kernel(dtypes=("float64", "float32")):
    """Cold-cache compile seconds of each (kernel, signature), largest first, and the total."""
    with tempfile.TemporaryDirectory(prefix="fastinfl-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTINFL_CACHE="1")
        proc = subprocess.run([sys.executable, "-c", PER_KERNEL, *dtypes], env=env, capture_output=True,
                              text=True, check=True)
    out = json.loads(proc.stdout.splitlines()[-1])
    print("## Compile time per kernel (cold cache)\n")
    print(f"`python -m bench.compile_time --per-kernel`, fit + influence + top_k + self_influence + CG on "
          f"{N} x {D}, {' then '.join(dtypes)}, one process, empty NUMBA_CACHE_DIR  ")
    print(f"Machine: {machine.describe()}\n")
    rows = sorted(out["kernels"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in rows)
    print(f"Steps took {out['total']:.1f} s, of which compiling {total:.1f} s in {len(rows)} "
          "(kernel, signature) pairs; exclusive seconds (nested compiles subtracted):\n")
    print("| kernel | signature | s | share |")
    print("|---|---|---:|---:|")
    for key, v in rows:
        name, sig = key.split(" ", 1)
        if v >= 0.2:
            print(f"| {name.removeprefix('fastinfl.')} | `{sig}` | {v:.2f} | {v / total:.0%} |")
    rest = [v for _, v in rows if v < 0.2]
    print(f"| {len(rest)} others | | {sum(rest):.2f} | {sum(rest) / total:.0%} |")


def run_child(cache_dir, *dtypes):
    """Run CHILD in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir``: (its timings, wall time)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTINFL_CACHE="1")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *dtypes], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.splitlines()[-1]), time.perf_counter() - t


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--per-kernel" in argv:
        per_kernel()
        return
    if "--per-call" in argv:
        per_call()
        return
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
