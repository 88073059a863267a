"""The conformance grid: every (model, kind of data, solver, quantity) cell against the NumPy reference.

Registries below (MODELS, KINDS, SOLVERS, QUANTITIES) generate one test per
cell, as scikit-learn runs its common checks on every estimator. A cell either
matches ``fastinfl.reference`` (explicit design matrix, ``np.linalg.inv`` /
``pinv``) within its solver's tolerance, or is listed in REFUSED with the clear
error a user gets; docs/architecture.md ("The conformance grid") shows the same
table. The Influence object of a (model, kind, solver) is built once and shared
by its quantities (the data are tiny: the grid costs compiling, not computing).
Dask cells run on a real ``distributed.LocalCluster``. CUDA (Numba's simulator)
has its own suite, tests/test_cuda.py, which runs each model there.
"""

import atexit
import re

import numpy as np
import pytest
import scipy.sparse

import fastinfl
from fastinfl import reference

N, D, M, K = 40, 3, 3, 3
L2 = 0.7


# ------------------------------------------------------------------------------------------- models
def _features(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N + M, D))
    X[:, 1] *= 0.5
    X[rng.random(X.shape) < 0.3] = 0.0  # sparse-like, so that CSR has something to skip
    X = X.astype(np.float32).astype(np.float64)  # the float32 kind holds the same numbers
    return rng, X


def _logistic():
    rng, X = _features(1)
    y = (rng.random(N + M) < 1 / (1 + np.exp(-(X @ [1.0, -0.5, 0.8] + 0.2)))).astype(float)
    return X, y, fastinfl.LogisticRegression(l2=L2)


def _poisson():
    rng, X = _features(2)
    y = rng.poisson(np.exp(X @ [0.4, -0.3, 0.2] + 0.3)).astype(float)
    return X, y, fastinfl.PoissonRegression(l2=L2)


def _multinomial():
    rng, X = _features(3)
    Z = X @ rng.normal(size=(D, K))
    y = np.array([rng.choice(K, p=np.exp(z) / np.exp(z).sum()) for z in Z])
    return X, y, fastinfl.MultinomialLogisticRegression(l2=L2)


MODELS = {"logistic": _logistic, "poisson": _poisson, "multinomial": _multinomial}


# --------------------------------------------------------------------------------------- data kinds
_CLUSTER = {}


def _dask(X):
    import dask.array as da
    from distributed import Client, LocalCluster

    if "client" not in _CLUSTER:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
        _CLUSTER["client"] = Client(cluster)
        atexit.register(lambda: (_CLUSTER["client"].close(), cluster.close()))
    return da.from_array(X, chunks=(16, -1))


KINDS = {
    "dense": lambda X: X,
    "float32": lambda X: X.astype(np.float32),
    "csr": scipy.sparse.csr_matrix,
    "dask": _dask,
}

SOLVERS = {
    "direct": {"solver": "direct"},
    "cg": {"solver": "cg", "tol": 1e-13},
    "pcg-jacobi": {"solver": "cg", "preconditioner": "jacobi", "tol": 1e-13},
    "pcg-nystrom": {"solver": "cg", "preconditioner": "nystrom", "rank": 2, "tol": 1e-13},
    "lissa": {"solver": "lissa", "tol": 1e-8, "lissa_depth": 20000},
    "arnoldi": {"solver": "arnoldi", "rank": "full"},
}
# relative tolerance (max-norm against the largest reference entry) of each solver's answers
RTOL = {"direct": 1e-9, "cg": 1e-8, "pcg-jacobi": 1e-8, "pcg-nystrom": 1e-8, "lissa": 1e-6, "arnoldi": 1e-7}

# Cells refused on purpose: (model, kind) -> (error type, message pattern). A refusal is a clear error.
REFUSED = {}
GROUPS = [np.array([0, 3, 9]), np.array([5])]
IDX = np.array([0, 7, 13, 39])


# ----------------------------------------------------------------------------------- the reference
def _reference(model_name):
    """Every quantity of the fitted model by plain NumPy (dict), and the fitted model and data."""
    X, y, model = MODELS[model_name]()
    Xtr, ytr, Xte, yte = X[:N], y[:N], X[N:], y[N:]
    model.fit(Xtr, ytr)
    ref = {}
    if model_name == "multinomial":
        c, b = model.coef_, model.intercept_
        H = reference.mn_hessian(Xtr, c, b, l2=L2)
        Hinv = reference.mn_pinv(H)
        G = reference.mn_per_example_gradients(Xtr, ytr, c, b)
        Gt = reference.mn_per_example_gradients(Xte, yte, c, b)
        ref["leverage"] = reference.mn_leverage(Xtr, c, H, b)[IDX]
        ref["perturbation"] = reference.mn_perturbation(Xtr, ytr, Xte, yte, c, b, l2=L2)[:, IDX]
        ref["loo_newton"] = reference.mn_newton_loo_change(Xtr, ytr, Xte, yte, c, IDX, b, l2=L2)
        Pi = reference.mn_probabilities(Xtr, c, b)
        Xt = reference.design(Xtr)
        group = []
        for S in GROUPS:
            HS = sum(np.kron(np.diag(Pi[i]) - np.outer(Pi[i], Pi[i]), np.outer(Xt[i], Xt[i])) for i in S)
            group.append(reference.mn_pinv(H - HS) @ G[S].sum(axis=0))
        ref["group_delta"] = np.array(group)
        Pt = reference.mn_probabilities(Xte, c, b)
        Rt = Pt - np.eye(K)[yte.astype(int)]
        Xtt = reference.design(Xte)
        # linear test-loss change: g_test . delta = sum_k r_tk (x~_t . delta_k)
        ref["group_change"] = np.einsum("tk,tj,gkj->tg", Rt, Xtt, ref["group_delta"].reshape(len(GROUPS), K, -1))
    else:
        loss = model.loss
        c, b = model.coef_, model.intercept_
        H = reference.hessian(Xtr, c, b, l2=L2, loss=loss)
        Hinv = np.linalg.inv(H)
        G = reference.per_example_gradients(Xtr, ytr, c, b, loss=loss)
        Gt = reference.per_example_gradients(Xte, yte, c, b, loss=loss)
        lev = reference.leverage(Xtr, c, H, b, loss=loss)
        ref["leverage"] = lev[IDX]
        ref["perturbation"] = reference.perturbation(Xtr, ytr, Xte, yte, c, b, l2=L2, loss=loss)[:, IDX]
        I = -Gt @ Hinv @ G.T
        ref["loo_newton"] = (-I / (1 - lev))[:, IDX]
        Xt = reference.design(Xtr)
        w = reference._loss(Xt @ model.params_, ytr, loss)[2]
        deltas = np.array([np.linalg.solve(H - (Xt[S].T * w[S]) @ Xt[S], G[S].sum(axis=0)) for S in GROUPS])
        ref["group_change"] = Gt @ deltas.T  # linear: r_t x~_t . delta
    ref["hessian"] = H
    ref["s_test"] = Gt @ Hinv
    ref["influence"] = (-Gt @ Hinv @ G.T)[:, IDX]
    ref["influence_all"] = -Gt @ Hinv @ G.T
    ref["params_change"] = (G @ Hinv)[IDX]
    ref["self_influence"] = np.einsum("ij,ij->i", G @ Hinv, G)[IDX]
    return model, (Xtr, ytr, Xte, yte), ref


_REFS = {}
_INFS = {}


def _ref(model_name):
    if model_name not in _REFS:
        _REFS[model_name] = _reference(model_name)
    return _REFS[model_name]


def _influence(model_name, kind, solver):
    """The Influence of a cell's (model, kind, solver), built once, or the exception its construction raised."""
    key = (model_name, kind, solver)
    if key not in _INFS:
        model, (Xtr, ytr, _, _), ref = _ref(model_name)
        kwargs = dict(SOLVERS[solver])
        if kwargs.get("rank") == "full":  # Arnoldi exact: every eigenpair of the (gauged) Hessian
            kwargs["rank"] = ref["hessian"].shape[0] - (1 if model_name == "multinomial" else 0)
        try:
            _INFS[key] = fastinfl.Influence(model, KINDS[kind](Xtr), ytr, **kwargs)
        except Exception as exc:  # noqa: BLE001 - kept to be asserted by the cell
            _INFS[key] = exc
    return _INFS[key]


# ------------------------------------------------------------------------------------- quantities
def _top_k(inf, Xte, yte, ref):
    got = inf.top_k(Xte, yte, k=3)
    _, low_v, _, high_v = reference.top_k(ref["influence_all"], 3)
    return {"top_k helpful": (got.helpful, low_v), "top_k harmful": (got.harmful, high_v)}


QUANTITIES = {
    "s_test": lambda inf, Xte, yte, ref: {"s_test": (inf.s_test(Xte, yte), ref["s_test"])},
    "influence": lambda inf, Xte, yte, ref: {"influence": (inf.influence(Xte, yte, IDX), ref["influence"])},
    "top_k": _top_k,
    "params_change": lambda inf, Xte, yte, ref: {"params_change": (inf.params_change(IDX), ref["params_change"])},
    "self_influence": lambda inf, Xte, yte, ref: {
        "self_influence": (inf.self_influence(IDX), ref["self_influence"])},
    "leverage": lambda inf, Xte, yte, ref: {"leverage": (inf.leverage(IDX), ref["leverage"])},
    "loo_change": lambda inf, Xte, yte, ref: {
        "loo_change newton": (inf.loo_change(Xte, yte, IDX, correction="newton", loss="linear"),
                              ref["loo_newton"])},
    "group_change": lambda inf, Xte, yte, ref: {
        "group_change newton": (inf.group_change(Xte, yte, GROUPS, correction="newton", loss="linear"),
                                ref["group_change"])},
    "perturbation": lambda inf, Xte, yte, ref: {
        "perturbation": (inf.perturbation(Xte, yte, IDX), ref["perturbation"])},
}

CELLS = [(m, k, s, q) for m in MODELS for k in KINDS for s in SOLVERS for q in QUANTITIES]
# LiSSA needs ~cond(H) log(1/tol) passes (hundreds), each a task graph on Dask: seconds per cell, so those
# cells run in the slow tier (pytest -m slow; CI runs both).
SLOW = {("dask", "lissa")}
_OUTCOMES = {"passed": 0, "refused": 0}


@pytest.mark.parametrize(("model_name", "kind", "solver", "quantity"), [
    pytest.param(*c, id="-".join(c), marks=[pytest.mark.slow] if (c[1], c[2]) in SLOW else []) for c in CELLS])
def test_cell(model_name, kind, solver, quantity):
    model, (_, _, Xte, yte), ref = _ref(model_name)
    inf = _influence(model_name, kind, solver)
    refused = REFUSED.get((model_name, kind))
    if refused is not None:
        error, pattern = refused
        assert isinstance(inf, error) and re.search(pattern, str(inf)), repr(inf)
        _OUTCOMES["refused"] += 1
        return
    if isinstance(inf, Exception):
        raise inf
    for what, (got, want) in QUANTITIES[quantity](inf, Xte, yte, ref).items():
        got = np.asarray(got)
        assert got.shape == want.shape, (what, got.shape, want.shape)
        assert np.array_equal(np.isnan(got), np.isnan(want)), what
        scale = np.nanmax(np.abs(want))
        err = np.nanmax(np.abs(got - want)) / scale
        assert err <= RTOL[solver], f"{what}: relative error {err:.3g} > {RTOL[solver]:g}"
    _OUTCOMES["passed"] += 1


def test_grid_summary():
    """Runs last in this module: prints how many cells passed and were refused (pytest -s shows it)."""
    total = len(CELLS)
    print(f"\nconformance grid: {total} cells, {_OUTCOMES['passed']} passed, {_OUTCOMES['refused']} refused "
          f"({', '.join(f'{m} on {k}' for m, k in REFUSED) or 'none'})")
    assert _OUTCOMES["passed"] + _OUTCOMES["refused"] <= total
