"""pyDVL peers, run in a Python with pydvl + torch: CgInfluence on a binary study case
(bench/solver_study.py) and DirectInfluence on a multinomial one (bench/multinomial.py --pydvl).

    PYTHON bench/_pydvl_peer.py DATA.npz OUT.npz
    PYTHON bench/_pydvl_peer.py --direct-multinomial DATA.npz OUT.npz

A float64 ``torch.nn.Linear(d, 1)`` holding fastinfl's fitted parameters, the
mean binary cross-entropy loss, one full-batch DataLoader, ``regularization =
l2 / n`` (pyDVL adds it to the mean-loss Hessian for every parameter, intercept
included). Writes the (m, cols) influence of the test points on the first
``cols`` training points for pyDVL's default tolerances (rtol 1e-4, atol 1e-6)
and for rtol 1e-10, atol 0; ``meta`` (JSON) holds times and notes.
"""

import json
import sys
import time

import numpy as np
import pydvl
import torch
from pydvl.influence.torch import CgInfluence, DirectInfluence
from torch.utils.data import DataLoader, TensorDataset


def main(data_path, out_path):
    torch.set_num_threads(2)
    f = np.load(data_path)
    X, y = torch.from_numpy(f["X"]), torch.from_numpy(f["y"].astype(np.float64))[:, None]
    Xt, yt = torch.from_numpy(f["X_test"]), torch.from_numpy(f["y_test"].astype(np.float64))[:, None]
    n, d = X.shape
    cols = int(f["cols"])
    model = torch.nn.Linear(d, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight[:] = torch.from_numpy(f["coef"])[None, :]
        model.bias[:] = float(f["intercept"])
    loss = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(X, y), batch_size=n)
    results, meta = {}, {}
    for name, kwargs in [("pydvl-cg-default", {}), ("pydvl-cg-tight", dict(rtol=1e-10, atol=0.0, maxiter=20000))]:
        w = time.perf_counter()
        infl = CgInfluence(model, loss, regularization=float(f["l2"]) / n, warn_on_max_iteration=False,
                           **kwargs).fit(loader)
        values = infl.influences(Xt, yt, X[:cols], y[:cols]).detach().numpy()
        results[name] = values
        zero_rows = int((np.abs(values).max(axis=1) == 0).sum())
        meta[name] = dict(time=time.perf_counter() - w,
                          note=f"pyDVL {pydvl.__version__}, torch {torch.__version__}, {kwargs or 'defaults'}"
                               + (f", {zero_rows} all-zero rows" if zero_rows else ""))
    np.savez(out_path, meta=json.dumps(meta), **results)


def direct_multinomial(data_path, out_path):
    """DirectInfluence of a float64 ``torch.nn.Linear(d, K)`` holding fastinfl's multinomial parameters.

    Mean cross-entropy, one full-batch DataLoader, ``regularization = l2 / n`` (every parameter,
    intercepts included). Writes ``influence`` (m, n), the full matrix of pyDVL's ``influences``
    (mean-loss Hessian: n x the sum convention), and ``meta`` with the times of ``fit`` (the
    Hessian) and of ``influences`` in the fastest of ``repeats`` runs.
    """
    torch.set_num_threads(2)
    f = np.load(data_path)
    X, y = torch.from_numpy(f["X"]), torch.from_numpy(f["y"].astype(np.int64))
    Xt, yt = torch.from_numpy(f["X_test"]), torch.from_numpy(f["y_test"].astype(np.int64))
    n, d = X.shape
    coef = torch.from_numpy(f["coef"])
    model = torch.nn.Linear(d, coef.shape[0], dtype=torch.float64)
    with torch.no_grad():
        model.weight[:] = coef
        model.bias[:] = torch.from_numpy(f["intercept"])
    loader = DataLoader(TensorDataset(X, y), batch_size=n)
    best = None
    for _ in range(int(f["repeats"])):  # the first run also pays torch's one-time set-up
        w = time.perf_counter()
        infl = DirectInfluence(model, torch.nn.functional.cross_entropy,
                               regularization=float(f["l2"]) / n).fit(loader)
        fit_time = time.perf_counter() - w
        w = time.perf_counter()
        values = infl.influences(Xt, yt, X, y).detach().numpy()
        run = (fit_time + time.perf_counter() - w, fit_time, time.perf_counter() - w)
        best = run if best is None or run[0] < best[0] else best
    meta = dict(fit=best[1], influences=best[2], runs=int(f["repeats"]),
                note=f"pyDVL {pydvl.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    np.savez(out_path, meta=json.dumps(meta), influence=values)


if __name__ == "__main__":
    if sys.argv[1] == "--direct-multinomial":
        direct_multinomial(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
