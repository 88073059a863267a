"""The first calls of a new process, as a user makes them: seconds per call and signatures compiled.

    python bench/first_call.py [float64|float32]

Run it with an installation's interpreter from a folder outside the checkout (so that the installed
package is imported), e.g. a fresh venv with an empty Numba cache: with the shipped kernel cache it
compiles nothing (bench/RESULTS.md, "Fast from the first call").
"""
import json, os, sys, time
t0 = time.perf_counter()
import fastinfl
t_import = time.perf_counter() - t0
from fastinfl.kernels import _cache
X, y, _ = fastinfl.datasets.make_logistic(5000, 8, seed=0, dtype=sys.argv[1] if len(sys.argv) > 1 else "float64")
steps = {}
t = time.perf_counter(); model = fastinfl.LogisticRegression(l2=1.0).fit(X, y); steps["fit"] = time.perf_counter() - t
t = time.perf_counter(); inf = fastinfl.Influence(model, X, y); steps["Influence"] = time.perf_counter() - t
t = time.perf_counter(); inf.influence(X[:10], y[:10]); steps["influence"] = time.perf_counter() - t
t = time.perf_counter(); inf.top_k(X[:10], y[:10], 5); steps["top_k"] = time.perf_counter() - t
t = time.perf_counter(); model.score(X, y); steps["score"] = time.perf_counter() - t
print(json.dumps({"import": round(t_import, 3), "steps": {k: round(v, 3) for k, v in steps.items()},
                  "total": round(sum(steps.values()), 3), "compiled": _cache.compile_counts(),
                  "shipped": _cache.shipped() is not None, "reason": _cache._shipped_reason,
                  "file": fastinfl.__file__, "load": os.getloadavg()[0]}))
