"""``fastinfl run``: top-k helpful and harmful training points of every test point in the user's files."""

import os
import sys

import numpy as np

from .._io import check_same_features, load_dataset
from ..exceptions import ConvergenceError, SingularHessianError
from ..influence import Influence
from ..model import LogisticRegression
from . import compile as _compile
from .output import CommandError, output_format, top_header, top_records, top_rows, write
from .progress import progress
from .topk import top_k_loo


def fit(X, y, l2, quiet, source):
    """LogisticRegression(l2).fit(X, y) under a progress bar; fit errors become CommandError."""
    try:
        with progress("fit", enabled=not quiet):
            return LogisticRegression(l2=l2).fit(X, y)
    except (ConvergenceError, SingularHessianError) as exc:
        raise CommandError(f"fitting {source}: {type(exc).__name__}: {exc}") from exc


def _self_influence(args, inf, train):
    """Write the training points of highest self-influence g_i^T H^-1 g_i to ``args.self_influence``."""
    y_train = train.y
    n = y_train.shape[0]
    values = np.empty(n)
    step = max(4096, -(-n // 50))
    with progress("self-influence", total=n, enabled=not args.quiet) as bar:
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            values[lo:hi] = inf.self_influence(np.arange(lo, hi))
            bar.update(hi - lo)
    count = n if args.self_k == 0 else min(args.self_k, n)
    order = np.argsort(-values, kind="stable")[:count]
    ids = train.ids
    rows = [[r + 1, int(i)] + ([ids[i]] if ids is not None else []) + [int(y_train[i]), float(values[i])]
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


def _groups(args, inf, train, test, losses):
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
        head = [t] + ([ids[t]] if ids is not None else []) + [int(test.y[t]), float(losses[t])]
        for kind, order, sign in (("helpful", np.argsort(-change[t], kind="stable"), 1.0),
                                  ("harmful", np.argsort(change[t], kind="stable"), -1.0)):
            rank = 0
            for g in order[:k]:
                if not sign * change[t, g] > 0:
                    break
                rank += 1
                rows.append(head + [kind, rank, int(names[g]), int(sizes[g]), float(change[t, g])])
    write(args.groups_out, output_format(args.groups_out, args.format), header, rows)


def _note(message):
    print(f"fastinfl: note: {message}", file=sys.stderr)


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run(args):
    """The ``run`` command: top-k helpful and harmful training points of every test point."""
    labels = args.labels or (None, None)
    train = load_dataset(args.train, args.label_col, labels[0], args.id_col, args.drop_cols)
    # a CSV test file's labels are in the training file's label column, by name
    test_label = args.label_col or (train.label if os.path.splitext(args.test)[1].lower() == ".csv" else None)
    test = load_dataset(args.test, test_label, labels[1], args.id_col, args.drop_cols,
                        n_features=train.X.shape[1])
    for note in (*train.notes, *test.notes):
        _note(note)
    check_same_features(train, args.train, test, args.test)
    if np.all(train.y == train.y[0]):
        # the unpenalised intercept would diverge: the objective has no minimum
        raise CommandError(f"{args.train}: every label is {train.y[0]:g}; the training data need both "
                           "classes, 0 and 1.")
    dtype = "float32" if train.X.dtype == np.float32 else "float64"
    _compile.notice([dtype], quiet=args.quiet)
    model = fit(train.X, train.y, args.l2, args.quiet, args.train)
    inf = Influence(model, train.X, train.y, solver=args.solver, damping=args.damping)
    k = min(args.k, train.y.shape[0])
    top, loo = top_k_loo(inf, test.X, test.y, k, args.quiet, loss=args.loss)
    losses = model.losses(test.X, test.y)
    header = top_header(test.ids, train.ids)
    rows = top_rows(top, loo, test.y, losses, test.ids, train.ids)
    fmt = output_format(args.out, args.format)
    write(args.out, fmt, header, rows, lambda rows: top_records(header, rows, test.y, losses, test.ids))
    if args.self_influence is not None:
        _self_influence(args, inf, train)
    if args.groups is not None:
        _groups(args, inf, train, test, losses)
    if args.plot is not None:
        from .plot import plot

        plot(args, inf, model, train, test, losses)
    if args.out is not None and not args.quiet and _is_terminal(sys.stdout):
        extra = "".join(f", {kind} to {path}" for kind, path in (("self-influence", args.self_influence),
                                                                  ("plot", args.plot)) if path)
        print(f"fastinfl: wrote the {k} most helpful and {k} most harmful training points of "
              f"{test.y.shape[0]:,} test points to {args.out} ({fmt.upper()}){extra}.")
