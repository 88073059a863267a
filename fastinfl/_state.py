"""Persisted state of an :class:`~fastinfl.Influence`: a versioned .npz file without pickle.

Layout (``numpy.savez``; read with ``allow_pickle=False``, so loading never runs code):

- ``header``: UTF-8 JSON as a uint8 array: ``format`` ("fastinfl.influence"),
  ``version`` (FORMAT_VERSION), the fastinfl version that wrote it, the model's
  hyper-parameters, the solver settings, ``grad_norm`` and the training-data
  ``fingerprint``;
- ``coef`` (d,), ``intercept`` (1,): the parameters theta;
- ``residuals``, ``weights`` (n,): r_i = sigma(z_i) - y_i and w_i = sigma(z_i) sigma(-z_i)
  at theta (what a pass over X would recompute);
- ``ridge`` (p,): the diagonal added to sum_i w_i x~_i x~_i^T;
- ``hessian`` (p, p) when it has been formed, and ``cholesky`` (p, p, lower)
  when the direct solver has factored it (after a direct solve, both are present).

A MultinomialLogisticRegression state (header ``model.class``; K classes, P = K p) holds
``coef`` (K, d), ``intercept`` (K,), ``classes`` (K,) (the model's labels: integers, booleans or
strings, never objects), ``residuals`` (n, K) r_i = pi_i - e_{y_i}, ``weights`` (n, K) the
probabilities pi_i, ``ridge`` (P,), ``hessian`` (P, P) the exact H (singular along the gauge) and
``cholesky`` the factor of the gauged H + c Pi_0 that the direct solver uses
(operators/multinomial.py). Same format version: an older reader refuses it by its model class.

Fingerprint of the training data (checked by :func:`load`): the shape, the
dtype, a SHA-256 of all labels, and a SHA-256 of the raw bytes of a
deterministic sample of FINGERPRINT_ROWS rows (evenly spaced, first and last
included). The sample keeps loading O(sample) instead of a pass over X: a
change confined to rows outside the sample is not detected. ``check="full"``
hashes every row of X instead (one pass over X, about 1 s per GB).
"""

import hashlib
import json

import numpy as np

FORMAT = "fastinfl.influence"
FORMAT_VERSION = 1
# Rows of X hashed by the default ("sample") fingerprint.
FINGERPRINT_ROWS = 1024
# Rows per chunk hashed by check="full" (bounded memory for memory maps).
_FULL_CHUNK_BYTES = 1 << 26
CHECKS = ("sample", "full")


def _sample_rows(n):
    return np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_ROWS)).astype(np.int64))


def fingerprint(X, y, check="sample"):
    """Dict identifying training data: shape, dtype, SHA-256 of the labels and of sampled (or all) rows.

    ``X`` (n, d) C-contiguous float32/float64 and ``y`` (n,) float64 as validated.
    """
    n, d = X.shape
    if check == "full":
        h = hashlib.sha256()
        step = max(1, _FULL_CHUNK_BYTES // max(1, X.itemsize * d))
        for begin in range(0, n, step):
            h.update(np.ascontiguousarray(X[begin:begin + step]).tobytes())
        rows, sampled = h.hexdigest(), n
    else:
        idx = _sample_rows(n)
        rows, sampled = hashlib.sha256(np.ascontiguousarray(X[idx]).tobytes()).hexdigest(), int(idx.shape[0])
    return {
        "n_samples": int(n),
        "n_features": int(d),
        "dtype": np.dtype(X.dtype).name,
        "labels_sha256": hashlib.sha256(np.ascontiguousarray(y, dtype=np.float64).tobytes()).hexdigest(),
        "rows_hashed": sampled,
        "rows_sha256": rows,
        "check": check,
    }


def save(inf, path, check="sample"):
    """Write the state of ``inf`` to ``path`` (see the module docstring); returns ``path``."""
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(map(repr, CHECKS))}; got {check!r}.")
    op = inf._op
    model = inf.model
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fastinfl_version": _version(),
        "model": {"class": type(model).__name__, "l2": float(model.l2), "fit_intercept": bool(op.fit_intercept),
                  "tol": float(model.tol), "max_iter": int(model.max_iter)},
        "settings": {"solver": inf.solver, "damping": inf.damping, "tol": inf.tol, "max_iter": inf.max_iter,
                     "verify": inf.verify, "verify_rtol": inf.verify_rtol, "batch_size": inf.batch_size,
                     "memory_limit": inf.memory_limit},
        "grad_norm": inf.grad_norm_,
        "fingerprint": fingerprint(op.X, op.y, check),
    }
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        "coef": np.asarray(inf._coef, np.float64),
        "intercept": np.atleast_1d(np.asarray(inf._intercept, np.float64)),
        "residuals": np.asarray(inf._curv.residuals, np.float64),
        "weights": np.asarray(inf._curv.weights, np.float64),
        "ridge": inf._hess.ridge,
    }
    if inf._multi:
        arrays["classes"] = _plain_classes(model.classes_)
    if inf._hess._H is not None:
        arrays["hessian"] = inf._hess._H
    for solver in inf._solvers.values():
        chol = getattr(getattr(solver, "inner", solver), "_chol", None)
        if chol is not None:
            arrays["cholesky"] = chol[0]
            break
    with open(path, "wb") as f:  # an open file: numpy.savez must not append ".npz" to the caller's name
        np.savez(f, **arrays)
    return path


def _plain_classes(classes):
    """``classes`` as an array numpy saves without pickle (object labels as their common type), else ValueError."""
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        classes = np.array(classes.tolist())
    if classes.dtype.kind not in "biufUS":
        raise ValueError(f"save needs class labels that are integers, booleans or strings; the model's classes_ "
                         f"have dtype {np.asarray(classes).dtype} and would need pickle.")
    return classes


def _version():
    from . import __version__

    return __version__


def read(path):
    """(header dict, arrays dict) from a state file, refusing anything that is not one (ValueError)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a fastinfl state file (.npz without pickle): {exc}") from None
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
        ok = header.get("format") == FORMAT
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{path} is not a fastinfl state file (no '{FORMAT}' header).")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has state format version {header.get('version')!r}; this fastinfl ({_version()}) reads "
            f"version {FORMAT_VERSION}. Save it again with this version."
        )
    return header, arrays


def check_fingerprint(header, X, y, path):
    """Raise ValueError naming what differs when (X, y) are not the data the state was computed on."""
    want = header["fingerprint"]
    got_shape, want_shape = X.shape, (want["n_samples"], want["n_features"])
    if got_shape != want_shape:
        raise ValueError(f"X_train has shape {got_shape} but the state in {path} was computed on "
                         f"{want_shape}: load it with the same training data.")
    if np.dtype(X.dtype).name != want["dtype"]:
        raise ValueError(f"X_train has dtype {np.dtype(X.dtype).name} but the state in {path} was computed "
                         f"on {want['dtype']} data: pass X_train as {want['dtype']}.")
    got = fingerprint(X, y, want["check"])
    if got["labels_sha256"] != want["labels_sha256"]:
        raise ValueError(f"y_train differs from the labels the state in {path} was computed on "
                         "(SHA-256 of the labels): load it with the same training data.")
    if got["rows_sha256"] != want["rows_sha256"]:
        what = "rows of X_train" if want["check"] == "full" else \
            f"the {want['rows_hashed']} sampled rows of X_train (evenly spaced)"
        raise ValueError(f"X_train differs from the data the state in {path} was computed on (SHA-256 of "
                         f"{what}): load it with the same training data, in the same row order.")


class _Restore:
    """What Influence.__init__ takes from a state file instead of a pass over X (``_state=``)."""

    def __init__(self, header, arrays, path):
        self.header, self.arrays, self.path = header, arrays, path

    def restore_curvature(self, op):
        """(grad_norm, Curvature) after checking that ``op`` holds the saved training data."""
        from .operators import Curvature

        check_fingerprint(self.header, op.X, op.y, self.path)
        return float(self.header["grad_norm"]), Curvature(self.arrays["residuals"], self.arrays["weights"])


def load(cls, path, X_train, y_train, stationarity_tol=1e-6):
    """``cls`` (Influence) from a state file and its training data; see Influence.load."""
    from .model import LogisticRegression
    from .multinomial import MultinomialLogisticRegression

    header, arrays = read(path)
    m = header["model"]
    if m["class"] == "LogisticRegression":
        model = LogisticRegression.from_params(arrays["coef"], float(arrays["intercept"][0]), l2=m["l2"],
                                               fit_intercept=m["fit_intercept"])
    elif m["class"] == "MultinomialLogisticRegression" and "classes" in arrays:
        model = MultinomialLogisticRegression.from_params(arrays["coef"], arrays["intercept"], l2=m["l2"],
                                                          fit_intercept=m["fit_intercept"],
                                                          classes=arrays["classes"])
    else:
        raise ValueError(f"{path} holds a {m['class']} state; this fastinfl loads LogisticRegression and "
                         "MultinomialLogisticRegression states.")
    model.tol, model.max_iter = m["tol"], m["max_iter"]
    inf = cls(model, X_train, y_train, **header["settings"], stationarity_tol=stationarity_tol,
              _state=_Restore(header, arrays, path))
    if not np.array_equal(inf._hess.ridge, arrays["ridge"]):
        raise ValueError(f"{path} is inconsistent: its ridge diagonal does not follow from l2 and damping.")
    if "hessian" in arrays:
        inf._hess._H = arrays["hessian"]
    if "cholesky" in arrays and inf._use_direct:
        solver = inf._solver
        getattr(solver, "inner", solver)._chol = (arrays["cholesky"], True)
    return inf
