"""``fastinfl run``: top-k helpful and harmful training points of every test point in the user's files."""

import os
import sys

import numpy as np

from .._atomic import same_file
from .._io import Dataset, check_same_features, load_dataset
from ..exceptions import ConvergenceError, SingularHessianError
from ..influence import Influence
from ..classifier import LogisticRegression
from ..multinomial import MultinomialLogisticRegression
from . import compile as _compile
from .output import CommandError, label_value, output_format, top_header, top_records, top_rows, write
from .progress import chunks, progress
from .topk import top_k_loo


def fit(X, y, l2, quiet, source, multinomial=False):
    """LogisticRegression(l2).fit(X, y) (or the multinomial model) under a progress bar; fit errors become CommandError."""
    try:
        with progress("fit", enabled=not quiet):
            return (MultinomialLogisticRegression if multinomial else LogisticRegression)(l2=l2).fit(X, y)
    except (ConvergenceError, SingularHessianError) as exc:
        raise CommandError(f"fitting {source}: {type(exc).__name__}: {exc}") from exc


def _self_influence(args, inf, train, y_shown):
    """Write the training points of highest self-influence g_i^T H^-1 g_i to ``args.self_influence``."""
    y_train = y_shown
    n = y_train.shape[0]
    values = np.empty(n)
    with progress("self-influence", total=n, enabled=not args.quiet) as bar:
        # about 50 steps, so that a few hundred rows move the bar too; CG solves a chunk's rows in one batch
        # (one pass over X per iteration for all of them): chunks of at least 32 rows keep those passes few
        for lo, hi in chunks(n, minimum=1 if inf.uses_direct else 32):
            values[lo:hi] = inf.self_influence(np.arange(lo, hi))
            bar.update(hi - lo)
    count = n if args.self_k == 0 else min(args.self_k, n)
    order = np.argsort(-values, kind="stable")[:count]
    ids = train.ids
    rows = [[r + 1, int(i)] + ([ids[i]] if ids is not None else []) + [label_value(y_train[i]), float(values[i])]
            for r, i in enumerate(order)]
    header = ["rank", "train_index"] + (["train_id"] if ids is not None else []) + ["label", "self_influence"]
    write(args.self_influence, output_format(args.self_influence, args.format), header, rows)


def load_groups(path, n):
    """(n,) int64 group labels from a .npy array or a text file with one integer per line (optional header)."""
    try:
        if path.lower().endswith(".npy"):
            labels = np.load(path, allow_pickle=False)
        else:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip()]
            if lines and not lines[0].lstrip("+-").isdigit():
                lines = lines[1:]  # a header
            bad = next((j for j, line in enumerate(lines) if not line.lstrip("+-").isdigit()), None)
            if bad is not None:
                raise CommandError(f"{path}: line {bad + 1} is {lines[bad]!r}, not an integer group label.")
            labels = np.array([int(line) for line in lines], dtype=np.int64)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise CommandError(f"{path}: group labels must be one integer per training row; got shape "
                           f"{labels.shape} of {labels.dtype}.")
    if labels.shape[0] != n:
        raise CommandError(f"{path}: {labels.shape[0]} group labels for {n} training rows.")
    return labels.astype(np.int64)


def _groups(args, inf, train, test, losses, y_shown):
    """Write, per test point, the groups whose removal would raise (helpful) or lower (harmful) its loss most."""
    labels = load_groups(args.groups, train.y.shape[0])
    names = np.unique(labels[labels >= 0])
    if names.size == 0:
        raise CommandError(f"{args.groups}: every label is negative: no group to remove.")
    sizes = np.array([np.count_nonzero(labels == g) for g in names])
    try:
        with progress("groups", enabled=not args.quiet):
            change = inf.group_change(test.X, test.y, labels, correction="newton", loss=args.loss,
                                      steps=args.group_steps)
    except ValueError as exc:
        raise CommandError(f"{args.groups}: {exc}") from None
    k = min(args.k, names.size)
    ids = test.ids
    header = (["test_index"] + (["test_id"] if ids is not None else [])
              + ["test_label", "test_loss", "kind", "rank", "group", "size", "loo_change"])
    rows = []
    for t in range(change.shape[0]):
        head = [t] + ([ids[t]] if ids is not None else []) + [label_value(y_shown[t]), float(losses[t])]
        for kind, order, sign in (("helpful", np.argsort(-change[t], kind="stable"), 1.0),
                                  ("harmful", np.argsort(change[t], kind="stable"), -1.0)):
            rank = 0
            for g in order[:k]:
                if not sign * change[t, g] > 0:
                    break
                rank += 1
                rows.append(head + [kind, rank, int(names[g]), int(sizes[g]), float(change[t, g])])
    write(args.groups_out, output_format(args.groups_out, args.format), header, rows)


def _classes(args, y_train, y_test):
    """(y_train, y_test, multinomial, classes) for the model from the labels as read.

    0/1 labels: the binary model. Two other classes (-1/1, "no"/"yes"): the binary model with the
    larger (sorted) class as 1, as scikit-learn does, said in a note. More classes: the multinomial
    model on the labels as they are. Test labels must be classes of the training data; ``y_test``
    None (a test file without labels) stays None. ``classes``: the sorted labels as read.
    """
    train_src, test_src = args.labels if args.labels else (args.train, args.test)  # where labels came from
    if y_test is not None and (y_train.dtype.kind == "U") != (y_test.dtype.kind == "U"):
        raise CommandError(f"{test_src}: its labels are {'text' if y_test.dtype.kind == 'U' else 'numbers'} "
                           f"but the training labels in {train_src} are "
                           f"{'text' if y_train.dtype.kind == 'U' else 'numbers'}.")
    classes = np.unique(y_train)
    if classes.size < 2:
        # the unpenalised intercept would diverge: the objective has no minimum
        raise CommandError(f"{train_src}: every label is {label_value(classes[0])}; the training data need at "
                           "least two classes.")
    unknown = np.setdiff1d(np.unique(y_test), classes) if y_test is not None else classes[:0]
    if unknown.size:
        raise CommandError(f"{test_src}: label {label_value(unknown[0])} is not a class of the training data "
                           f"({', '.join(str(label_value(c)) for c in classes[:10])}).")
    if classes.size > 2:
        if not args.quiet:
            _note(f"{train_src}: {classes.size} classes: multinomial (softmax) logistic regression.")
        return y_train, y_test, True, classes
    if y_train.dtype.kind != "U" and set(classes.tolist()) <= {0.0, 1.0}:
        return y_train, y_test, False, classes
    if not args.quiet:
        _note(f"{train_src}: labels {label_value(classes[0])} and {label_value(classes[1])} read as 0 and 1.")
    return ((y_train == classes[1]).astype(np.float64),
            None if y_test is None else (y_test == classes[1]).astype(np.float64), False, classes)


def _predicted_labels(args, model, X_test, multinomial, classes):
    """(y_test for the model, labels shown) of a test file without labels: the labels the model predicts."""
    pred = np.asarray(model.predict(X_test))
    if not args.quiet:
        _note(f"{args.test} has no labels: each test point's influences are on its loss at the label the "
              "model predicts for it (test_label is that predicted label).")
    if multinomial:
        return pred, pred
    codes = pred.astype(np.int64)  # the binary model is fitted on 0/1 (classes[1] as 1)
    return codes.astype(np.float64), np.asarray(classes)[codes]


def _check_distributed(args, train):
    """A Zarr training store: 0/1 labels of both classes (checked by dask), no full-row passes of the options."""
    import dask.array as da

    for option, value in (("--self-influence", args.self_influence), ("--plot", args.plot),
                          ("--groups", args.groups)):
        if value is not None:
            raise CommandError(f"{option} is not available with a Zarr training store ({args.train}): it "
                               "gathers training rows into this process.")
    classes = da.unique(train.y).compute()
    if classes.size < 2 or not set(classes.tolist()) <= {0, 1}:
        raise CommandError(f"{args.train}: a Zarr store's labels y must be 0 and 1 (both present); got "
                           f"{sorted(classes.tolist())[:10]}.")


def _note(message):
    print(f"fastinfl: note: {message}", file=sys.stderr)


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def is_sparse_file(path):
    """A scipy.sparse ``.npz`` (save_npz) or an svmlight / libsvm text file."""
    from .. import io_sparse

    ext = os.path.splitext(path)[1].lower()
    return ext in io_sparse.SPARSE_FORMATS or (ext == ".npz" and io_sparse.is_sparse_npz(path))


def _load(path, args, label_col, labels, n_features=None, in_memory=False, like=None):
    # a test file (n_features given) may come without labels: the model's predicted labels stand in
    """A data file through ``_io.load_dataset``, a sparse file (``io_sparse``: CSR, never densified),
    or a Zarr store (arrays X and y) as dask arrays. ``like``: the training file's svmlight layout, with
    which an svmlight test file is read (same column base and width)."""
    from .. import io_dask, io_sparse

    if is_sparse_file(path):
        if label_col or args.id_col or args.drop_cols:
            raise CommandError(f"{path}: --label, --id-col and --drop-cols go with .csv files.")
        try:
            if os.path.splitext(path)[1].lower() in io_sparse.SPARSE_FORMATS:
                X, y, layout = io_sparse.load_svmlight(path, n_features, like)
                return Dataset(X, y, None, layout=layout)
            X, y = io_sparse.load_sparse(path, labels, n_features)
        except io_sparse.SparseInputError as exc:
            raise CommandError(str(exc)) from None
        return Dataset(X, y, None)

    if not io_dask.is_zarr(path):
        return load_dataset(path, label_col, labels, args.id_col, args.drop_cols, n_features=n_features,
                            multiclass=args.multiclass, labels_optional=True)
    if args.id_col or args.drop_cols:
        raise CommandError(f"{path}: --id-col and --drop-cols go with .csv files, not a Zarr store.")
    return io_dask.load_any(path, label_col, labels, in_memory=in_memory)


def check_outputs(args):
    """CommandError when an output file is an input file (or the same file under another name: ``samefile``),
    or when two outputs name the same file: the command would overwrite its own input or output."""
    inputs = [("TRAIN", args.train), ("TEST", args.test), ("--groups", args.groups)]
    if args.labels:
        inputs += [("TRAIN_LABELS", args.labels[0]), ("TEST_LABELS", args.labels[1])]
    outputs = [("--out", args.out), ("--self-influence", args.self_influence), ("--plot", args.plot),
               ("--groups-out", args.groups_out)]
    outputs = [(option, path) for option, path in outputs if path is not None]
    for j, (option, path) in enumerate(outputs):
        for name, other in inputs:
            if other is not None and same_file(path, other):
                raise CommandError(f"{option} {path} is the input file {other} ({name}): refusing to "
                                   "overwrite an input; write the output to another file.")
        for other_option, other in outputs[:j]:
            if same_file(path, other):
                raise CommandError(f"{option} {path} and {other_option} {other} are the same file: give each "
                                   "output its own name.")


def run(args):
    """The ``run`` command: top-k helpful and harmful training points of every test point."""
    from .. import io_dask

    check_outputs(args)
    with io_dask.scheduler(args.scheduler):
        _run(args)


def _run(args):
    labels = args.labels or (None, None)
    train = _load(args.train, args, args.label_col, labels[0])
    # a CSV test file's labels are in the training file's label column, by name
    test_label = train.label or args.label_col if os.path.splitext(args.test)[1].lower() == ".csv" else None
    test = _load(args.test, args, test_label, labels[1], n_features=train.X.shape[1], in_memory=True,
                 like=train.layout)
    if not args.quiet:
        for note in (*train.notes, *test.notes):
            _note(note)
    check_same_features(train, args.train, test, args.test)
    if not isinstance(train.y, np.ndarray):  # a Zarr store (dask arrays): 0/1 labels, never gathered
        _check_distributed(args, train)
        shown_train, shown_test, multinomial, classes = train.y, test.y, False, np.array([0, 1])
    else:
        shown_train, shown_test = train.y, test.y  # labels as the files give them, for the output
        y_train, y_test, multinomial, classes = _classes(args, train.y, test.y)
        train, test = train._replace(y=y_train), test._replace(y=y_test)
    dtype = "float32" if train.X.dtype == np.float32 else "float64"
    _compile.notice([dtype], quiet=args.quiet)
    model = fit(train.X, train.y, args.l2, args.quiet, args.train, multinomial)
    if test.y is None:  # no labels in the test file: explain the model's predictions
        y_test, shown_test = _predicted_labels(args, model, test.X, multinomial, classes)
        test = test._replace(y=y_test)
    inf = Influence(model, train.X, train.y, solver=args.solver, damping=args.damping)
    k = min(args.k, train.y.shape[0])
    top, loo = top_k_loo(inf, test.X, test.y, k, args.quiet, loss=args.loss)
    losses = model.losses(test.X, test.y)
    header = top_header(test.ids, train.ids)
    rows = top_rows(top, loo, shown_test, losses, test.ids, train.ids)
    fmt = output_format(args.out, args.format)
    write(args.out, fmt, header, rows, lambda rows: top_records(header, rows, shown_test, losses, test.ids))
    if args.self_influence is not None:
        _self_influence(args, inf, train, shown_train)
    if args.groups is not None:
        _groups(args, inf, train, test, losses, shown_test)
    if args.plot is not None:
        from .plot import plot

        plot(args, inf, model, train, test, losses)
    if args.out is not None and not args.quiet and _is_terminal(sys.stdout):
        extra = "".join(f", {kind} to {path}" for kind, path in (("self-influence", args.self_influence),
                                                                  ("plot", args.plot)) if path)
        print(f"fastinfl: wrote the {k} most helpful and {k} most harmful training points of "
              f"{test.y.shape[0]:,} test points to {args.out} ({fmt.upper()}){extra}.")
