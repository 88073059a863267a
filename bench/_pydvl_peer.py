"""pyDVL's CgInfluence on one study case (run by bench/solver_study.py in a Python with pydvl + torch).

    PYTHON bench/_pydvl_peer.py DATA.npz OUT.npz

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
from pydvl.influence.torch import CgInfluence
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


if __name__ == "__main__":
    main(*sys.argv[1:])
