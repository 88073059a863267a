"""Persisted state of an :class:`~fastinfl.Influence`: a versioned .npz file, verified on load, never trusted.

Layout (a zip of ``.npy`` members, as ``numpy.savez`` writes; read without pickle):

- ``header``: UTF-8 JSON as a uint8 array: ``format`` ("fastinfl.influence"),
  ``version`` (FORMAT_VERSION), the fastinfl version that wrote it, the model's
  hyper-parameters, the solver settings and the training-data ``fingerprint``;
- ``coef`` (d,), ``intercept`` (1,): the parameters theta (binary model); ``classes`` (2,),
  optional: a binary model's ``classes_`` when it has them (its labels, strings included; absent:
  0 and 1, and a model without the attribute);
- ``ridge`` (p,): the diagonal added to sum_i w_i x~_i x~_i^T;
- ``cholesky`` (p, p), lower triangular, when the direct solver has factored H.

A MultinomialLogisticRegression state (header ``model.class``; K classes, P = K p) holds
``coef`` (K, d), ``intercept`` (K,), ``classes`` (K,) (integers, booleans or strings, never
objects), ``ridge`` (P,) and ``cholesky`` the factor of the gauged H + c Pi_0 that the direct
solver uses (operators/multinomial.py).

What :func:`load` checks, before anything is answered (every failure is a
:class:`~fastinfl.StateError` naming the file):

- the zip's central directory: only the members above, each no larger (uncompressed) than
  the shapes implied by the training data given to ``load`` allow (a zip bomb is refused
  before it is inflated); then every member's ``.npy`` header: exact dtype and shape;
  no object arrays; all values finite; the header's fields and their types;
- one pass over X (``kernels/checksum.py``) recomputes the residuals and curvature weights
  from the parameters (they are not stored), the gradient norm (the stationarity warning),
  a checksum of every element of X (the default fingerprint, ``check="full"``), and H v for
  a few random vectors v: the factor must satisfy ||L L^T v - H v|| <= FACTOR_RTOL ||H v||
  (fresh random v on every load, so an error of L L^T in any direction, not only along fixed
  vectors, is seen with high probability: the three v would all have to miss it);
- labels: SHA-256 of all of y; shape and dtype of X; the ridge follows from l2 and damping.

Fingerprint of X: ``check="full"`` (the default) is the 128-bit keyed checksum of every
element of X described in ``kernels/checksum.py``, computed inside the pass above at no extra
read of X; a single changed element is always detected, other changes escape with probability
about 2^-64 per lane (for data not crafted against its public keys). ``check="sample"`` (opt-in)
hashes only FINGERPRINT_ROWS evenly spaced rows with SHA-256 and skips the checksum: a change
confined to other rows is NOT detected and ``load`` then answers for the old data.

Format version 1 (fastinfl 0.1.0 before this change: stored residuals and weights, a sampled
fingerprint by default) is refused with a StateError that says how to write the file again.
"""

import contextlib
import hashlib
import json
import math
import struct
import zipfile
import zlib

import numpy as np

from ._atomic import atomic_write
from .exceptions import StateError
from .operators.dense import verify_pass

FORMAT = "fastinfl.influence"
FORMAT_VERSION = 2
CHECKS = ("full", "sample")
CHECKSUM = "fastinfl.rowhash.2x64"
# Rows of X hashed by the opt-in "sample" fingerprint.
FINGERPRINT_ROWS = 1024
# Random vectors v of the factor check, and its tolerance on ||L L^T v - H v|| / ||H v||
# (rounding of H and of its Cholesky factor is ~p * 1e-16).
FACTOR_VECTORS = 3
FACTOR_RTOL = 1e-8
MAX_HEADER_BYTES = 1 << 20
# Bytes allowed for a member's .npy header on top of its data.
_NPY_SLACK = 4096
# Bytes per class label (a "<U256" string).
MAX_LABEL_BYTES = 1024
# Errors that reading a damaged or crafted zip / .npy / JSON can raise.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
                TypeError, IndexError, RecursionError, struct.error, UnicodeDecodeError, OverflowError,
                NotImplementedError)


def _sample_rows(n):
    return np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_ROWS)).astype(np.int64))


def _theta(coef, intercept, fit_intercept):
    """(K, p) rows [w_k, b_k] (K = 1 for the binary model)."""
    coef = np.atleast_2d(np.asarray(coef, np.float64))
    if not fit_intercept:
        return np.ascontiguousarray(coef)
    return np.ascontiguousarray(np.hstack([coef, np.reshape(np.asarray(intercept, np.float64), (-1, 1))]))


def fingerprint(op, theta, check="full"):
    """Dict identifying the training data of ``op``: shape, dtype, SHA-256 of the labels, checksum of X.

    ``check="full"``: the checksum of every element (one pass over X); ``"sample"``: SHA-256 of
    FINGERPRINT_ROWS rows only (a change elsewhere goes unnoticed).
    """
    X, y = op.X, op.y
    n, d = X.shape
    fp = {
        "n_samples": int(n),
        "n_features": int(d),
        "dtype": np.dtype(X.dtype).name,
        "labels_sha256": hashlib.sha256(np.ascontiguousarray(y, dtype=np.float64).tobytes()).hexdigest(),
        "check": check,
    }
    if check == "full":
        fp["checksum"] = CHECKSUM
        fp["x_checksum"] = verify_pass(op, theta, np.empty((0, theta.size)), True)[3]
    else:
        idx = _sample_rows(n)
        fp["rows_hashed"] = int(idx.shape[0])
        fp["rows_sha256"] = _sample_sha(X, idx)
    return fp


def _sample_sha(X, idx):
    return hashlib.sha256(np.ascontiguousarray(X[idx]).tobytes()).hexdigest()


def save(inf, path, check="full"):
    """Write the state of ``inf`` to ``path`` atomically (see the module docstring); returns ``path``."""
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(map(repr, CHECKS))}; got {check!r}.")
    op = inf.operator
    coef, intercept = inf.params
    model = inf.model
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fastinfl_version": _version(),
        "model": {"class": type(model).__name__, "l2": float(model.l2_), "fit_intercept": bool(op.fit_intercept),
                  "tol": float(model.tol), "max_iter": int(model.max_iter)},
        "settings": {"solver": inf.solver, "damping": inf.damping, "tol": inf.tol, "max_iter": inf.max_iter,
                     "verify": inf.verify, "verify_rtol": inf.verify_rtol, "batch_size": inf.batch_size,
                     "memory_limit": inf.memory_limit, "preconditioner": inf.preconditioner, "rank": inf.rank,
                     "seed": inf.seed, "lissa_depth": inf.lissa_depth, "lissa_scale": inf.lissa_scale,
                     "lissa_repetitions": inf.lissa_repetitions, "lissa_batch_size": inf.lissa_batch_size},
        "fingerprint": fingerprint(op, _theta(coef, intercept, op.fit_intercept), check),
    }
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        "coef": np.asarray(coef, np.float64),
        "intercept": np.atleast_1d(np.asarray(intercept, np.float64)),
        "ridge": inf.hessian_operator.ridge,
    }
    if getattr(model, "classes_", None) is not None:  # classifiers: their labels, of any type
        arrays["classes"] = _plain_classes(model.classes_)
    for solver in inf.solvers:
        chol = getattr(getattr(solver, "inner", solver), "factor_", None)
        if chol is not None:
            arrays["cholesky"] = np.tril(chol[0])  # dpotrs reads the lower triangle only
            break
    with atomic_write(path) as f:  # a file object: numpy.savez must not append ".npz" to the caller's name
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


# ------------------------------------------------------------------ reading
@contextlib.contextmanager
def _guard(path):
    """Every error of a damaged or crafted file as one StateError naming ``path``."""
    try:
        yield
    except StateError:
        raise
    except FileNotFoundError:
        raise
    except _READ_ERRORS as exc:
        raise StateError(f"{path} is not a fastinfl state file, or is damaged "
                         f"({type(exc).__name__}: {exc}).") from None


def _fail(path, what):
    raise StateError(f"{path}: {what}")


def _npy_header(f, path, name):
    """(shape, fortran_order, dtype) from an open .npy member, refusing object dtypes."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_NPY_SLACK)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_NPY_SLACK)
    else:
        _fail(path, f"member {name!r} has .npy format version {version}; expected 1.0 or 2.0.")
    if dtype.hasobject:
        _fail(path, f"member {name!r} is an object array (it would need pickle to load): refused.")
    return shape, fortran, dtype


def _read_member(zf, path, name, shape, kinds, max_itemsize=8):
    """Array ``name`` after checking its size in the zip's central directory, then its .npy header's shape
    and dtype.

    ``shape``: the exact shape; ``kinds``: dtype kinds allowed ("f" means float64 exactly).
    """
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        _fail(path, f"member {name!r} is missing.")
    limit = math.prod(shape) * max_itemsize + _NPY_SLACK
    if info.file_size > limit:
        _fail(path, f"member {name!r} would expand to {info.file_size:,} bytes; an array of shape {shape} "
                    f"needs at most {limit:,}: refused before reading (a damaged file or a zip bomb).")
    with zf.open(info) as f:
        got_shape, fortran, dtype = _npy_header(f, path, name)
        if tuple(got_shape) != tuple(shape):
            _fail(path, f"member {name!r} has shape {tuple(got_shape)}; the training data given to load "
                        f"imply {tuple(shape)}.")
        if kinds == "f":
            if dtype != np.float64:
                _fail(path, f"member {name!r} has dtype {dtype}; expected float64.")
        elif dtype.kind not in kinds or dtype.itemsize > max_itemsize:
            _fail(path, f"member {name!r} has dtype {dtype}; expected numbers, booleans or strings of at "
                        f"most {max_itemsize} bytes per label.")
        count = math.prod(shape)
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            _fail(path, f"member {name!r} is truncated ({len(data):,} of {count * dtype.itemsize:,} bytes).")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
        _fail(path, f"member {name!r} holds {bad.size:,} non-finite values (first at flat index {bad[0]}).")
    return arr


def _read_header(zf, path):
    names = zf.namelist()
    if len(names) != len(set(names)):
        _fail(path, "the zip holds duplicate members.")
    try:
        info = zf.getinfo("header.npy")
    except KeyError:
        raise StateError(f"{path} is not a fastinfl state file (no '{FORMAT}' header).") from None
    if info.file_size > MAX_HEADER_BYTES:
        _fail(path, f"its header would expand to {info.file_size:,} bytes (at most {MAX_HEADER_BYTES:,}).")
    with zf.open(info) as f:
        shape, _, dtype = _npy_header(f, path, "header")
        if dtype != np.uint8 or len(shape) != 1:
            raise StateError(f"{path} is not a fastinfl state file (no '{FORMAT}' header).")
        text = f.read(MAX_HEADER_BYTES)
    try:
        header = json.loads(text.decode())
    except (ValueError, RecursionError) as exc:
        raise StateError(f"{path} is not a fastinfl state file (its header is not JSON: "
                         f"{type(exc).__name__}).") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StateError(f"{path} is not a fastinfl state file (no '{FORMAT}' header).")
    version = header.get("version")
    if version == 1:
        _fail(path, "it has state format version 1 (an earlier fastinfl: stored residuals and a sampled "
                    "fingerprint), which this fastinfl does not trust. Write it again: "
                    "Influence(model, X_train, y_train).save(path).")
    if version != FORMAT_VERSION:
        raise StateError(f"{path} has state format version {version!r}; this fastinfl ({_version()}) reads "
                         f"version {FORMAT_VERSION}. Save it again with this version.")
    _check_header(header, path)
    return header


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_fields(path, where, values, spec):
    """Every field of ``spec`` (name -> (predicate, description)) present in ``values`` (the header's field
    ``where``, the header itself when None) and valid; no others."""
    field = f"header field {where}" if where else "the header"
    if not isinstance(values, dict):
        _fail(path, f"{field} must be an object; got {type(values).__name__}.")
    extra = set(values) - set(spec)
    if extra:
        _fail(path, f"{field} has unknown entries {sorted(extra)}.")
    prefix = f"{where}." if where else ""
    for key, (ok, what) in spec.items():
        if key not in values:
            _fail(path, f"header field {prefix}{key} is missing.")
        if not ok(values[key]):
            _fail(path, f"header field {prefix}{key} must be {what}; got {values[key]!r}.")


_INT32 = 2 ** 31


def _check_header(header, path):
    from .solvers import SOLVERS
    from .solvers_iterative import PRECONDITIONERS

    def optional_int(v):
        return v is None or (_is_int(v) and 1 <= v < 2 ** 62)

    _check_fields(path, None, header, {
        "format": (lambda v: True, ""), "version": (lambda v: True, ""),
        "fastinfl_version": (lambda v: isinstance(v, str), "a string"),
        "model": (lambda v: True, ""), "settings": (lambda v: True, ""), "fingerprint": (lambda v: True, "")})
    _check_fields(path, "model", header["model"], {
        "class": (lambda v: v in ("LogisticRegression", "PoissonRegression", "MultinomialLogisticRegression"),
                  "'LogisticRegression', 'PoissonRegression' or 'MultinomialLogisticRegression'"),
        "l2": (lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
        "fit_intercept": (lambda v: isinstance(v, bool), "true or false"),
        "tol": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        "max_iter": (lambda v: _is_int(v) and 1 <= v < _INT32, "an integer in [1, 2**31)")})
    _check_fields(path, "settings", header["settings"], {
        "solver": (lambda v: v in SOLVERS, f"one of {SOLVERS}"),
        "damping": (lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
        "tol": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        "max_iter": (lambda v: _is_int(v) and 1 <= v < _INT32, "an integer in [1, 2**31)"),
        "verify": (lambda v: isinstance(v, bool), "true or false"),
        "verify_rtol": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        "batch_size": (lambda v: v is None or (_is_int(v) and 1 <= v < 2 ** 62), "null or an integer >= 1"),
        "memory_limit": (lambda v: _is_int(v) and 1 <= v < 2 ** 62, "an integer >= 1"),
        "preconditioner": (lambda v: v in PRECONDITIONERS, f"one of {PRECONDITIONERS}"),
        "rank": (optional_int, "null or an integer >= 1"),
        "seed": (lambda v: _is_int(v) and abs(v) < 2 ** 62, "an integer"),
        "lissa_depth": (optional_int, "null or an integer >= 1"),
        "lissa_scale": (lambda v: v is None or (_is_real(v) and v > 0), "null or a finite number > 0"),
        "lissa_repetitions": (lambda v: _is_int(v) and 1 <= v < 2 ** 62, "an integer >= 1"),
        "lissa_batch_size": (optional_int, "null or an integer >= 1")})
    fp = header["fingerprint"]
    common = {
        "n_samples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "n_features": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
        "labels_sha256": (_is_sha256, "a SHA-256 hex digest"),
        "check": (lambda v: v in CHECKS, f"one of {CHECKS}")}
    if isinstance(fp, dict) and fp.get("check") == "sample":
        _check_fields(path, "fingerprint", fp, common | {
            "rows_hashed": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "rows_sha256": (_is_sha256, "a SHA-256 hex digest")})
    else:
        _check_fields(path, "fingerprint", fp, common | {
            "checksum": (lambda v: v == CHECKSUM, repr(CHECKSUM)),
            "x_checksum": (lambda v: isinstance(v, str) and len(v) == 32 and _is_hex(v), "32 hex digits")})


def _is_hex(v):
    return all(c in "0123456789abcdef" for c in v)


def _is_sha256(v):
    return isinstance(v, str) and len(v) == 64 and _is_hex(v)


def _n_classes_bound(y_train, n):
    """At most how many classes a model fitted on ``y_train`` has (its distinct labels; n if unreadable)."""
    try:
        return max(2, int(np.unique(np.asarray(y_train)).shape[0]))
    except (TypeError, ValueError):
        return max(2, n)


def read_header(path):
    """The header dict of a state file, checked (fields, types, format version)."""
    with _guard(path), zipfile.ZipFile(path) as zf:
        return _read_header(zf, path)


CLASSIFIERS = ("LogisticRegression", "MultinomialLogisticRegression")


def is_softmax(class_name, n_classes):
    """Whether a state of model class ``class_name`` with ``n_classes`` holds the softmax (K, d) parameters."""
    return class_name == "MultinomialLogisticRegression" or (class_name == "LogisticRegression" and n_classes > 2)


def read(path, n_features, n_classes_max=2):
    """(header, arrays) of a state file, every member checked against the shapes the training data imply.

    ``n_features``: d of X_train; ``n_classes_max``: the most classes a multinomial state may have.
    """
    with _guard(path), zipfile.ZipFile(path) as zf:
        header = _read_header(zf, path)
        m = header["model"]
        d = n_features
        p = d + int(m["fit_intercept"])
        classifier = m["class"] in CLASSIFIERS
        arrays = {}
        allowed = {"header", "coef", "intercept", "ridge", "cholesky"} | ({"classes"} if classifier else set())
        names = {name[:-4] if name.endswith(".npy") else name for name in zf.namelist()}
        unknown = names - allowed
        if unknown:
            _fail(path, f"unexpected members {sorted(unknown)} (format version {FORMAT_VERSION} holds "
                        f"{sorted(allowed)}).")
        K = 1
        if "classes" in names:
            with zf.open(zf.getinfo("classes.npy")) as f:
                shape, _, _ = _npy_header(f, path, "classes")
            if len(shape) != 1 or not 2 <= shape[0] <= n_classes_max:
                _fail(path, f"member 'classes' has shape {tuple(shape)}; y_train has {n_classes_max} "
                            f"distinct labels, so a model fitted on it has 2 to {n_classes_max} classes.")
            K = int(shape[0])
            arrays["classes"] = _read_member(zf, path, "classes", (K,), "biufUS", MAX_LABEL_BYTES)
        elif m["class"] == "MultinomialLogisticRegression":
            _fail(path, "member 'classes' is missing.")
        if is_softmax(m["class"], K):
            arrays["coef"] = _read_member(zf, path, "coef", (K, d), "f")
        else:
            if "classes" in arrays and (K != 2 or arrays["classes"][0] == arrays["classes"][1]):
                _fail(path, f"member 'classes' must hold the two distinct labels of a binary model; got "
                            f"{arrays['classes'].tolist()[:5]}.")
            K = 1
            arrays["coef"] = _read_member(zf, path, "coef", (d,), "f")
        arrays["intercept"] = _read_member(zf, path, "intercept", (K,), "f")
        arrays["ridge"] = _read_member(zf, path, "ridge", (K * p,), "f")
        if "cholesky" in names:
            arrays["cholesky"] = _read_member(zf, path, "cholesky", (K * p, K * p), "f")
    return header, arrays


class _Restore:
    """What Influence.__init__ takes from a state file instead of trusting it (``_state=``): the one pass over
    X that checks the fingerprint and recomputes residuals, weights, the gradient norm and H v."""

    def __init__(self, header, arrays, path):
        self.header, self.arrays, self.path = header, arrays, path
        self.V = self.HV = None

    def restore_curvature(self, op):
        """(grad_norm, Curvature) after checking that ``op`` holds the saved training data."""
        header, arrays, path = self.header, self.arrays, self.path
        want = header["fingerprint"]
        X, y = op.X, op.y
        saved = (want["n_samples"], want["n_features"])
        if X.shape != saved:
            raise StateError(f"X_train has shape {X.shape} but the state in {path} was computed on {saved}: "
                             "load it with the same training data.")
        dtype = np.dtype(X.dtype).name
        if dtype != want["dtype"]:
            raise StateError(f"X_train has dtype {dtype} but the state in {path} was computed on "
                             f"{want['dtype']} data: pass X_train as {want['dtype']}.")
        labels = hashlib.sha256(np.ascontiguousarray(y, dtype=np.float64).tobytes()).hexdigest()
        if labels != want["labels_sha256"]:
            raise StateError(f"y_train differs from the labels the state in {path} was computed on "
                             "(SHA-256 of the labels): load it with the same training data.")
        m = header["model"]
        theta = _theta(arrays["coef"], arrays["intercept"], m["fit_intercept"])
        multi = getattr(op, "multiclass", False)
        if "cholesky" in arrays:
            V = np.random.default_rng().standard_normal((FACTOR_VECTORS, theta.size))
            if multi:  # the factor is of H + c Pi_0: compare on N_0^perp, where it equals H
                from .operators.multinomial import null_mask, project

                V = project(V, null_mask(arrays["ridge"], theta.shape[0]), theta.shape[0])
        else:
            V = np.empty((0, theta.size))
        full = want["check"] == "full"
        Z, grad, self.HV, digest = verify_pass(op, theta, V, full)
        self.V = V
        if full and digest != want["x_checksum"]:
            raise StateError(f"X_train differs from the data the state in {path} was computed on (checksum "
                             "of every element of X_train): load it with the same training data, in the same "
                             "row order.")
        if not full and _sample_sha(X, _sample_rows(X.shape[0])) != want["rows_sha256"]:
            raise StateError(f"X_train differs from the data the state in {path} was computed on (SHA-256 "
                             f"of the {want['rows_hashed']} sampled rows of X_train, evenly spaced): load it "
                             "with the same training data, in the same row order.")
        d = X.shape[1]
        grad[:, :d] += m["l2"] * np.atleast_2d(arrays["coef"])  # the L2 term (intercepts unpenalised)
        return float(np.linalg.norm(grad)), op.curvature(Z if multi else np.ascontiguousarray(Z[:, 0]))

    def check_factor(self, ridge):
        """StateError unless the stored Cholesky factor L satisfies L L^T v = H v on the random vectors."""
        L, path = self.arrays["cholesky"], self.path
        if np.any(np.triu(L, 1)):
            _fail(path, "its Cholesky factor is not lower triangular.")
        diag = np.diag(L)
        if not np.all(diag > 0):
            _fail(path, f"its Cholesky factor has a diagonal entry {diag.min():.3g} <= 0 (not a factor of a "
                        "positive definite matrix).")
        HV = self.HV + self.V * ridge
        LLV = (L @ (L.T @ self.V.T)).T
        scale = np.linalg.norm(HV, axis=1)
        err = float(np.max(np.linalg.norm(LLV - HV, axis=1) / np.where(scale > 0, scale, 1.0)))
        if not err <= FACTOR_RTOL:
            _fail(path, f"its Cholesky factor does not match the Hessian of the training data given to load: "
                        f"||L L^T v - H v|| / ||H v|| = {err:.3g} on random vectors v (at most "
                        f"{FACTOR_RTOL:g} from rounding).")


def load(cls, path, X_train, y_train, stationarity_tol=1e-6):
    """``cls`` (Influence) from a state file and its training data, verified (module docstring)."""
    from ._validation import check_X
    from .classifier import LogisticRegression
    from .model import ridge_diagonal
    from .multinomial import MultinomialLogisticRegression, ridge_vector
    from .poisson import PoissonRegression

    # shape and dtype of X_train bound what the file may hold; its finiteness is checked by Influence below
    X_train = check_X(X_train, "X_train", sum_squares=lambda X: 0.0)
    n, d = X_train.shape
    classifier = read_header(path)["model"]["class"] in CLASSIFIERS
    header, arrays = read(path, d, _n_classes_bound(y_train, n) if classifier else 2)
    m = header["model"]
    multi = arrays["coef"].ndim == 2
    try:
        if m["class"] == "MultinomialLogisticRegression":
            model = MultinomialLogisticRegression.from_params(arrays["coef"], arrays["intercept"], l2=m["l2"],
                                                              fit_intercept=m["fit_intercept"],
                                                              classes=arrays["classes"])
        elif multi:
            model = LogisticRegression.from_params(arrays["coef"], arrays["intercept"], l2=m["l2"],
                                                   fit_intercept=m["fit_intercept"], classes=arrays["classes"])
        else:
            if not m["fit_intercept"] and arrays["intercept"][0] != 0.0:
                _fail(path, "its intercept is not 0 but the model has fit_intercept=false.")
            if m["class"] == "LogisticRegression":
                model = LogisticRegression.from_params(arrays["coef"], float(arrays["intercept"][0]), l2=m["l2"],
                                                       fit_intercept=m["fit_intercept"], classes=arrays.get("classes"))
            else:
                model = PoissonRegression.from_params(arrays["coef"], float(arrays["intercept"][0]), l2=m["l2"],
                                                      fit_intercept=m["fit_intercept"])
    except StateError:
        raise
    except ValueError as exc:
        raise StateError(f"{path}: its model is not valid: {exc}") from None
    model.tol, model.max_iter = m["tol"], m["max_iter"]
    damping = header["settings"]["damping"]
    ridge = (ridge_vector(len(arrays["classes"]), d, m["fit_intercept"], m["l2"], damping) if multi
             else ridge_diagonal(d, m["fit_intercept"], m["l2"], damping))
    if not np.array_equal(ridge, arrays["ridge"]):
        _fail(path, "its ridge diagonal does not follow from l2 and damping.")
    restore = _Restore(header, arrays, path)
    inf = cls(model, X_train, y_train, **header["settings"], stationarity_tol=stationarity_tol,
              _state=restore)
    if "cholesky" in arrays:
        restore.check_factor(ridge)
        if inf.uses_direct:
            solver = inf.solver_
            getattr(solver, "inner", solver).set_factor(arrays["cholesky"])
    return inf
