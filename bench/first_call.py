"""The first calls of a new process, as a user makes them: seconds per call and signatures compiled.

    python bench/first_call.py [float64|float32]

Run it with an installation's interpreter from a folder outside the checkout (so that the installed
package is imported), e.g. a fresh venv with an empty Numba cache: with the shipped kernel cache it
compiles nothing (bench/RESULTS.md, "Fast from the first call"). Prints one JSON line.
"""

import json
import os
import sys
import time


def main(dtype="float64"):
    t0 = time.perf_counter()
    import fastinfl
    from fastinfl.operators.policy import kernel_cache

    t_import = time.perf_counter() - t0
    X, y, _ = fastinfl.datasets.make_logistic(5000, 8, seed=0, dtype=dtype)
    state = {}
    steps = {
        "fit": lambda: state.update(model=fastinfl.LogisticRegression(l2=1.0).fit(X, y)),
        "Influence": lambda: state.update(inf=fastinfl.Influence(state["model"], X, y)),
        "influence": lambda: state["inf"].influence(X[:10], y[:10]),
        "top_k": lambda: state["inf"].top_k(X[:10], y[:10], 5),
        "score": lambda: state["model"].score(X, y),
    }
    seconds = {}
    for name, step in steps.items():
        t = time.perf_counter()
        step()
        seconds[name] = round(time.perf_counter() - t, 3)
    total = round(sum(seconds.values()), 3)
    print(json.dumps({"import": round(t_import, 3), "steps": seconds, "total": total,
                      "compiled": kernel_cache.compile_counts(),
                      "shipped": kernel_cache.shipped() is not None,
                      "reason": kernel_cache._shipped_reason, "file": fastinfl.__file__,
                      "load": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
