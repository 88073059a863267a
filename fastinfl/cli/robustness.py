"""``fastinfl robustness``: the fewest training rows whose removal flips a conclusion, on the user's files."""

import os
import sys

import numpy as np

from .._io import check_same_features, load_dataset
from ..influence import Influence
from ..robustness import METHODS, drop_to_flip, relabel_to_flip
from .output import CommandError, opened
from .run import fit

EPILOG = """\
Targets: coef:J (the sign of coefficient J), significance:J:LEVEL (whether coefficient J is
significant at LEVEL, two-sided Wald z-test with standard errors from the penalised Hessian; with
--l2 0 the classical ones), prediction:ROW (the predicted label of row ROW of the --test file).
J is a feature's position counting from 0, or its column name in a CSV file. Rows count from 0.
The table lists the rows in the order chosen with the target's value predicted after each; the
last line gives the value after an actual refit without them (or with their labels flipped, for
--relabel), which decides 'flipped'. Values: the coefficient, the z-statistic, or P(y = 1) of the
test row. Labels: two classes (0/1, or any two values: the larger is class 1).
Exit status: 0 done (flipped or not), 1 error, 2 usage error."""


def add_parser(sub, common, non_negative_float):
    """Register ``fastinfl robustness`` on the subparsers ``sub`` (argparse)."""
    import argparse

    p = sub.add_parser("robustness", parents=[common],
                       help="the fewest training rows whose removal flips a coefficient's sign, its "
                            "significance or a prediction, verified by refitting",
                       description="Fit L2 logistic regression on TRAIN and find a small set of training "
                                   "rows whose removal (or relabelling) flips a conclusion; verify it by "
                                   "refitting (docs/conclusions.md).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", metavar="TRAIN", help="training data (.npz, .npy or .csv), features and labels")
    p.add_argument("--target", default="coef:0", metavar="coef:J|significance:J:LEVEL|prediction:ROW",
                   help="the conclusion to flip (default coef:0)")
    p.add_argument("--test", metavar="TEST",
                   help="the file holding the row of prediction:ROW: .npz or .csv like TRAIN (its labels are "
                        "not used), or .npy of features only")
    p.add_argument("--method", choices=METHODS, default="greedy",
                   help="greedy (default): drop, refit by warm-started Newton steps, re-rank; newton: "
                        "first-order ranking, Newton-checked sets; additive: first order (AMIP)")
    p.add_argument("--max-fraction", type=float, default=0.01, metavar="F",
                   help="the most rows to drop (or relabel), as a fraction of TRAIN's rows, in (0, 0.5] "
                        "(default 0.01)")
    p.add_argument("--relabel", action="store_true",
                   help="with prediction:ROW: flip training labels instead of dropping rows (greedy)")
    p.add_argument("--l2", type=non_negative_float, default=1.0,
                   help="L2 penalty on the coefficients, 1/C of scikit-learn (default 1.0)")
    p.add_argument("--label", "--label-col", dest="label_col", metavar="COLUMN",
                   help="CSV label column, by name or 0-based position (-1: the last). Default: the last "
                        "column, when it has exactly two distinct values (else an error lists the candidates)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="plot the target against the number of rows dropped (needs matplotlib)")
    return p


def _parse_target(text, train, test_path, args):
    """(target tuple for drop_to_flip, a short description) from ``--target``."""
    parts = text.split(":")
    kind = parts[0]
    need = {"coef": 2, "significance": 3, "prediction": 2}.get(kind)
    if need is None or len(parts) != need:
        raise CommandError(f"--target must be coef:J, significance:J:LEVEL or prediction:ROW; got {text!r}.")
    if kind == "prediction":
        if test_path is None:
            raise CommandError("--target prediction:ROW needs --test TEST, the file holding that row.")
        test = _load_test(test_path, train, args)
        try:
            row = int(parts[1])
        except ValueError:
            raise CommandError(f"--target prediction:ROW: ROW must be a row number; got {parts[1]!r}.") \
                from None
        if not 0 <= row < test.shape[0]:
            raise CommandError(f"--target prediction:{row}: {test_path} has rows 0 to {test.shape[0] - 1}.")
        return ("prediction", test[row]), f"prediction of row {row} of {test_path}, P(y = 1)"
    d = train.X.shape[1]
    name = parts[1]
    columns = list(train.columns or [])
    if name in columns:
        j = columns.index(name)
    else:
        try:
            j = int(name)
        except ValueError:
            raise CommandError(f"--target {kind}:{name}: no feature column named {name!r}"
                               + (f" (columns: {', '.join(columns)})" if columns else "") + ".") from None
        if not 0 <= j < d:
            raise CommandError(f"--target {kind}:{j}: J must be in 0..{d - 1} (TRAIN has {d} features).")
    label = f"coef {j}" + (f" ({columns[j]})" if columns else "")
    if kind == "coef":
        return ("coef", j), label
    try:
        level = float(parts[2])
    except ValueError:
        level = float("nan")
    if not 0.0 < level < 1.0:
        raise CommandError("--target significance:J:LEVEL: LEVEL must be a number in (0, 1); "
                           f"got {parts[2]!r}.")
    return ("significance", j, level), f"significance of {label} at {level:g}, z = coef / SE"


def _load_test(path, train, args):
    """The test file's features (labels not needed): .npy of features only, else through load_dataset."""
    d = train.X.shape[1]
    if path.lower().endswith(".npy"):
        try:
            X = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        if X.ndim != 2 or X.shape[1] not in (d, d + 1):
            raise CommandError(f"{path}: expected shape (m, {d}) (or (m, {d + 1}) with labels last); "
                               f"got {X.shape}.")
        return np.asarray(X[:, :d], dtype=np.float64)
    test = load_dataset(path, train.label or args.label_col, n_features=d, labels_optional=True)
    check_same_features(train, args.train, test, path)
    return test.X


def _binary_labels(y, path):
    classes = np.unique(y)
    if classes.shape[0] != 2:
        raise CommandError(f"{path}: robustness needs two classes of labels; got {classes.shape[0]}.")
    return (y == classes[1]).astype(np.float64), classes


def robustness(args):
    """The ``robustness`` command: search, verify, print a table, optionally plot."""
    if args.plot is not None:
        folder = os.path.dirname(args.plot)
        if folder and not os.path.isdir(folder):
            raise CommandError(f"cannot write {args.plot}: no folder {folder}.")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install matplotlib "
                               "(or, from a fastinfl checkout, pip install '.[plot]').") from None
    if args.label_col and not args.train.lower().endswith(".csv"):
        raise CommandError("--label goes with .csv files.")
    train = load_dataset(args.train, args.label_col)
    y, classes = _binary_labels(train.y, args.train)
    target, what = _parse_target(args.target, train, args.test, args)
    if args.relabel and target[0] != "prediction":
        raise CommandError("--relabel goes with --target prediction:ROW.")
    n = y.shape[0]
    model = fit(train.X, y, args.l2, args.quiet, args.train)
    inf = Influence(model, train.X, y)
    try:
        if args.relabel:
            count = int(np.floor(args.max_fraction * n + 1e-9))
            if not 0.0 < args.max_fraction <= 0.5 or count < 1:
                raise ValueError("--max-fraction must be in (0, 0.5] and allow at least one of the "
                                 f"{n} rows; got {args.max_fraction}.")
            res = relabel_to_flip(inf, target[1], max_count=count)
        else:
            res = drop_to_flip(inf, target, max_fraction=args.max_fraction, method=args.method)
    except ValueError as exc:  # argument errors name the library's argument: say which option it is
        raise CommandError(str(exc).replace("max_fraction", "--max-fraction").replace("target", "--target")) \
            from None
    _print_table(res, what, args, n, classes)
    if args.plot is not None:
        _plot(res, what, args.plot)


def _print_table(res, what, args, n, classes):
    out = sys.stdout
    action = "relabelled" if args.relabel else "dropped"
    method = "greedy relabelling" if args.relabel else res.method
    print(f"fastinfl robustness: {what}; {args.train}, {n} rows, l2 = {args.l2:g}, method {method}, "
          f"at most {int(np.floor(args.max_fraction * n + 1e-9))} rows (classes {classes[0]!s} -> 0, "
          f"{classes[1]!s} -> 1)", file=out)
    print(f"{'step':>5} {'row ' + action:>14} {'predicted':>12}", file=out)
    print(f"{0:5d} {'-':>14} {res.path[0]:12.6g}", file=out)
    for k, (i, v) in enumerate(zip(res.indices, res.path[1:], strict=True), start=1):
        print(f"{k:5d} {int(i):14d} {v:12.6g}", file=out)
    verdict = "FLIPPED" if res.flipped else "not flipped"
    found = "" if res.found else f"; the method predicts no flip within --max-fraction {args.max_fraction:g}"
    k = len(res.indices)
    print(f"refit with the {k} row{'s' if k != 1 else ''} {action} ({100 * res.fraction:.3g}% of {n}): "
          f"{res.refit:.6g} (full fit {res.original:.6g}) -> {verdict}{found}", file=out)


def _plot(res, what, path):
    """The predicted target against the number of rows dropped, the refit marked; written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    k = np.arange(res.path.shape[0])
    ax.plot(k, res.path, marker="o", ms=4, label=f"predicted ({res.method})")
    ax.plot([k[-1]], [res.refit], marker="*", ms=12, ls="none", color="C3",
            label="refit: " + ("flipped" if res.flipped else "not flipped"))
    kind = res.target[0]
    if kind == "significance":
        import scipy.stats

        crit = scipy.stats.norm.ppf(1 - res.target[2] / 2)
        for c in (-crit, crit):
            ax.axhline(c, color="0.5", lw=0.8, ls="--")
    else:
        ax.axhline(0.5 if kind == "prediction" else 0.0, color="0.5", lw=0.8, ls="--")
    ax.set(xlabel="training rows " + ("relabelled" if res.method == "relabel" else "dropped"), ylabel=what)
    ax.set_title(f"{len(res.indices)} rows ({100 * res.fraction:.3g}%): "
                 + ("flipped" if res.flipped else "not flipped"), fontsize=10)
    ax.legend(fontsize=8)
    fmt = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    try:
        with opened(path, "wb") as f:  # atomic: a previous plot stays intact on any error
            fig.savefig(f, dpi=110, format=fmt)
    except ValueError as exc:
        raise CommandError(f"cannot write {path}: {exc}") from None
