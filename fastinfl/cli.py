"""The ``fastinfl`` command line: the seed demo, and influence on the user's own files."""

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import threading
import time
import warnings

import numpy as np

from . import datasets
from ._io import InputError, check_same_features, load_dataset
from .exceptions import ConvergenceError, SingularHessianError, StationarityWarning
from .influence import SOLVERS, Influence, TopK
from .loo import loo_retrain
from .model import LogisticRegression

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An error the command reports in one line on stderr, exiting with status 1."""


class Progress:
    """A one-line progress bar on stderr, drawn only once a step has run for ``delay`` seconds.

    Silent when ``enabled`` is false or ``stream`` is not a terminal. With ``total`` None it
    shows the elapsed time only (for a single call such as a fit). A background thread redraws
    it, so it moves during long kernel calls (they release the GIL). Use as a context manager;
    :meth:`update` counts finished items.
    """

    def __init__(self, desc, total=None, enabled=True, stream=None, delay=1.0, interval=0.2):
        self.desc = desc
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and self.stream.isatty()
        self.delay = delay
        self.interval = interval
        self.done = 0
        self._drawn = False

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.enabled:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, name="fastinfl-progress", daemon=True)
            self._thread.start()
        return self

    def update(self, n=1):
        """Count ``n`` more finished items."""
        self.done += n

    def _loop(self):
        if self._stop.wait(self.delay):
            return
        while True:
            self._draw()
            if self._stop.wait(self.interval):
                return

    def _draw(self, end=""):
        elapsed = time.perf_counter() - self._t0
        if self.total:
            frac = min(1.0, self.done / self.total)
            eta = f", {elapsed / frac * (1 - frac):.0f} s left" if 0 < frac < 1 else ""
            line = f"{self.desc} [{'#' * round(24 * frac):<24}] {self.done}/{self.total} {elapsed:.1f} s{eta}"
        else:
            line = f"{self.desc} ... {elapsed:.1f} s"
        self.stream.write(f"\r{line}\x1b[K{end}")
        self.stream.flush()
        self._drawn = True

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            if self._drawn:
                self._draw(end="\n")
        return False


# ------------------------------------------------------------------ shared steps
def _fit(X, y, l2, quiet, source):
    """LogisticRegression(l2).fit(X, y) under a progress bar; fit errors become CommandError."""
    try:
        with Progress("fit", enabled=not quiet):
            return LogisticRegression(l2=l2).fit(X, y)
    except (ConvergenceError, SingularHessianError) as exc:
        raise CommandError(f"fitting {source}: {type(exc).__name__}: {exc}") from exc


def _test_batch(m, k):
    """Test points per top_k call: about 50 progress steps, a (b, 2 b k) loo_change block <= 32 MiB."""
    cap = max(1, math.isqrt(2**22 // (2 * k)))
    return max(1, min(256, cap, -(-m // 50)))


def _top_k_loo(inf, X_test, y_test, k, quiet, newton=True):
    """``inf.top_k`` of every test point, in batches under a progress bar.

    With ``newton``, also the Newton-corrected predicted leave-one-out change of each listed
    training point (``inf.loo_change(..., correction="newton")`` on the batch's listed rows).
    Returns (TopK, (helpful_loo, harmful_loo)), each (m, k), or (TopK, None).
    """
    m = X_test.shape[0]
    top = TopK(np.empty((m, k), np.int64), np.empty((m, k)), np.empty((m, k), np.int64), np.empty((m, k)))
    loo = np.empty((m, 2 * k)) if newton else None
    step = _test_batch(m, k)
    with Progress("top-k", total=m, enabled=not quiet) as bar:
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            part = inf.top_k(X_test[lo:hi], y_test[lo:hi], k)
            for field, value in zip(top, part, strict=True):
                field[lo:hi] = value
            if newton:
                listed = np.concatenate([part.helpful_idx, part.harmful_idx], axis=1)
                idx, where = np.unique(listed.ravel(), return_inverse=True)
                change = inf.loo_change(X_test[lo:hi], y_test[lo:hi], idx, correction="newton")
                loo[lo:hi] = np.take_along_axis(change, where.reshape(listed.shape), axis=1)
            bar.update(hi - lo)
    return top, ((loo[:, :k], loo[:, k:]) if newton else None)


# -------------------------------------------------------------------------- demo
def _table(title, X, y, infl):
    print(title)
    for i, v in enumerate(infl):
        print(f"  Training point {i} (x={X[i, 0]}, y={y[i]}): {v:.6f}")


def _seed_demo():
    X, y, X_test, y_test = datasets.seed()
    w, b = datasets.seed_fit()
    print(f"Seed notebook: 3 training points, fitted by its gradient descent: w*={w:.6f}, b*={b:.6f}")
    seed_model = LogisticRegression.from_params([w], b, l2=0.0)
    tables = {}
    for solver in ("direct", "cg"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StationarityWarning)
            inf = Influence(seed_model, X, y, solver=solver)
        tables[solver] = inf.influence(X_test, y_test)[0]
        _table(f"Influence on the test point (x=1.5, y=1), solver={solver!r}:", X, y, tables[solver])
    diff = np.max(np.abs(tables["direct"] - tables["cg"]))
    print(f"Direct and CG agree to {diff:.1e} (max abs difference).")
    for w_ in caught:
        print(f"Warning: {w_.message}")

    print("\nA proper fit of the same data:")
    try:
        LogisticRegression(l2=0.0).fit(X, y)
    except ConvergenceError as exc:
        print(f"  l2=0: ConvergenceError: {exc}")
    model = LogisticRegression(l2=1.0).fit(X, y)
    print(f"  l2=1: w*={model.coef_[0]:.6f}, b*={model.intercept_:.6f} "
          f"({model.n_iter_} Newton iterations)")
    inf = Influence(model, X, y)
    _table("Influence at the l2=1 optimum:", X, y, inf.influence(X_test, y_test)[0])


def demo(n=1_000_000, d=50, m=1000, seed=0, quiet=False):
    """The seed notebook end to end, then synthetic data (n x d float32, m test points) for throughput."""
    _seed_demo()
    print(f"\nSynthetic data: {n:,} training and {m:,} test points, {d} features, float32 "
          "(fastinfl.datasets.make_logistic)")
    with Progress("generate", enabled=not quiet):
        Xs, ys, _ = datasets.make_logistic(n + m, d, seed=seed, dtype=np.float32)
    Xtr, ytr, Xte, yte = Xs[:n], ys[:n], Xs[n:], ys[n:]
    t0 = time.perf_counter()  # the same steps on a small slice: compiles (or loads) the float32 kernels
    small = LogisticRegression(l2=1.0).fit(Xtr[:2000], ytr[:2000])
    Influence(small, Xtr[:2000], ytr[:2000]).top_k(Xte[:2], yte[:2], 3)
    print(f"  kernels ready in {time.perf_counter() - t0:.2f} s (compiled on the first run, then "
          "loaded from Numba's disk cache)")
    t0 = time.perf_counter()
    model = _fit(Xtr, ytr, 1.0, quiet, "the synthetic data")
    t1 = time.perf_counter()
    print(f"  fit: {t1 - t0:.2f} s, {model.n_iter_} Newton iterations "
          f"({n * model.n_iter_ / (t1 - t0) / 1e6:.3g} M rows/s per iteration)")
    inf = Influence(model, Xtr, ytr)
    top, _ = _top_k_loo(inf, Xte, yte, 3, quiet, newton=False)
    t2 = time.perf_counter()
    print(f"  top-3 helpful and harmful training points of {m:,} test points: {t2 - t1:.2f} s, "
          f"{n * m / (t2 - t1) / 1e6:.3g} M influences/s\n  (Hessian, Cholesky, s_test, and all "
          f"{n * m:,} influences streamed through Influence.top_k, never stored)")
    for t in range(min(5, m)):
        print(f"  test point {t} (y={yte[t]}): most helpful rows {top.helpful_idx[t].tolist()} "
              f"({', '.join(f'{v:.2e}' for v in top.helpful[t])}); most harmful rows "
              f"{top.harmful_idx[t].tolist()} ({', '.join(f'{v:.2e}' for v in top.harmful[t])})")


# --------------------------------------------------------------------------- run
def _output_format(path, fmt):
    """``fmt``, else json for a .json file, else csv."""
    return fmt or ("json" if path is not None and path.lower().endswith(".json") else "csv")


@contextlib.contextmanager
def _output(path):
    """The file ``path`` opened for writing, or stdout when ``path`` is None."""
    if path is None:
        yield sys.stdout
        return
    try:
        f = open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}.") from None
    with f:
        yield f


def _write(path, fmt, header, rows, to_json=None):
    """Write ``rows`` (an iterable of lists) to ``path``, or stdout when None.

    CSV: ``header``, then the rows. JSON: ``to_json(rows)``, by default a list of one object per row.
    """
    with _output(path) as f:
        if fmt == "csv":
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        else:
            json.dump(to_json(rows) if to_json else [dict(zip(header, row, strict=True)) for row in rows],
                      f, indent=2)
            f.write("\n")


_TOP_HEADER = ["test_index", "kind", "rank", "train_index", "influence", "loo_change"]


def _top_rows(top, loo):
    """The rows of the top-k table, one per (test point, kind, rank), helpful first."""
    kinds = (("helpful", top.helpful_idx, top.helpful, loo[0]),
             ("harmful", top.harmful_idx, top.harmful, loo[1]))
    for t in range(top.helpful_idx.shape[0]):
        for kind, idx, infl, change in kinds:
            for j in range(idx.shape[1]):
                yield [t, kind, j + 1, int(idx[t, j]), float(infl[t, j]), float(change[t, j])]


def _top_records(rows, y_test, losses):
    """The top-k table as JSON: one object per test point with its label, loss and both lists."""
    records = [{"test_index": t, "label": int(y), "loss": float(loss), "helpful": [], "harmful": []}
               for t, (y, loss) in enumerate(zip(y_test, losses, strict=True))]
    for t, kind, rank, i, v, c in rows:
        records[t][kind].append({"rank": rank, "train_index": i, "influence": v, "loo_change": c})
    return records


def _self_influence(args, inf, y_train):
    """Write the training points of highest self-influence g_i^T H^-1 g_i to ``args.self_influence``."""
    n = y_train.shape[0]
    values = np.empty(n)
    step = max(4096, -(-n // 50))
    with Progress("self-influence", total=n, enabled=not args.quiet) as bar:
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            values[lo:hi] = inf.self_influence(np.arange(lo, hi))
            bar.update(hi - lo)
    count = n if args.self_k == 0 else min(args.self_k, n)
    order = np.argsort(-values, kind="stable")[:count]
    rows = [[r + 1, int(i), int(y_train[i]), float(values[i])] for r, i in enumerate(order)]
    _write(args.self_influence, _output_format(args.self_influence, args.format),
           ["rank", "train_index", "label", "self_influence"], rows)


def _plot(args, inf, model, train, test, losses):
    """Predicted (Newton) vs actual leave-one-out change, Koh & Liang Fig. 2 style, to ``args.plot``."""
    from matplotlib.figure import Figure

    tests = np.argsort(-losses, kind="stable")[:3]
    X_sel, y_sel = test.X[tests], test.y[tests]
    top, loo = _top_k_loo(inf, X_sel, y_sel, min(5, train.y.shape[0]), quiet=True)
    pairs = np.concatenate([top.helpful_idx, top.harmful_idx], axis=1)
    predicted = np.concatenate(loo, axis=1)
    idx, where = np.unique(pairs.ravel(), return_inverse=True)
    actual_by_idx = np.empty((len(tests), idx.shape[0]))
    with Progress("refits", total=idx.shape[0], enabled=not args.quiet) as bar:
        for j, i in enumerate(idx):
            actual_by_idx[:, j] = loo_retrain(model, train.X, train.y, [i], X_sel, y_sel)[:, 0]
            bar.update()
    actual = np.take_along_axis(actual_by_idx, where.reshape(pairs.shape), axis=1)

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for row, t in enumerate(tests):
        ax.scatter(actual[row], predicted[row], s=22, label=f"test point {t} (loss {losses[t]:.3g})")
    lim = max(np.abs(actual).max(), np.abs(predicted).max()) * 1.08 or 1.0
    ax.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.8, zorder=0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           xlabel="actual change in test loss (leave-one-out refit)",
           ylabel="predicted change (influence, Newton-corrected)")
    kk = top.helpful_idx.shape[1]
    title = (f"Leave-one-out: the {kk} most helpful and {kk} most harmful training points\n"
             f"of the {len(tests)} highest-loss test points ({idx.shape[0]} refits)")
    if np.ptp(actual) > 0 and np.ptp(predicted) > 0:
        title += f", Pearson r = {np.corrcoef(actual.ravel(), predicted.ravel())[0, 1]:.4f}"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    try:
        fig.savefig(args.plot, dpi=110)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot write {args.plot}: {exc}") from None


def _check_run_args(parser, args):
    """Usage errors (exit 2) and output folders that do not exist (exit 1), before any work."""
    ext = {os.path.splitext(p)[1].lower() for p in (args.train, args.test)}
    if args.labels is not None and ext != {".npy"}:
        parser.error("--labels goes with .npy feature files (TRAIN and TEST both .npy)")
    if args.label_col is not None and ".csv" not in ext:
        parser.error("--label-col goes with .csv files")
    if args.self_k is not None and args.self_influence is None:
        parser.error("--self-k goes with --self-influence FILE")
    if args.self_k is None:
        args.self_k = args.k
    for path in (args.out, args.self_influence, args.plot):
        folder = os.path.dirname(path) if path else ""
        if folder and not os.path.isdir(folder):
            raise CommandError(f"cannot write {path}: no folder {folder}.")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install matplotlib "
                               "(or 'fastinfl[plot]').") from None


def run(args):
    """The ``run`` command: top-k helpful and harmful training points of every test point."""
    labels = args.labels or (None, None)
    train = load_dataset(args.train, args.label_col, labels[0])
    test = load_dataset(args.test, args.label_col, labels[1])
    check_same_features(train, args.train, test, args.test)
    if np.all(train.y == train.y[0]):
        # the unpenalised intercept would diverge: the objective has no minimum
        raise CommandError(f"{args.train}: every label is {train.y[0]:g}; the training data need both "
                           "classes, 0 and 1.")
    model = _fit(train.X, train.y, args.l2, args.quiet, args.train)
    inf = Influence(model, train.X, train.y, solver=args.solver, damping=args.damping)
    top, loo = _top_k_loo(inf, test.X, test.y, min(args.k, train.y.shape[0]), args.quiet)
    losses = model.losses(test.X, test.y)
    _write(args.out, _output_format(args.out, args.format), _TOP_HEADER, _top_rows(top, loo),
           lambda rows: _top_records(rows, test.y, losses))
    if args.self_influence is not None:
        _self_influence(args, inf, train.y)
    if args.plot is not None:
        _plot(args, inf, model, train, test, losses)


# ---------------------------------------------------------------------- parsing
def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {text}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text}")
    return value


_positive_int.__name__ = "positive integer"
_non_negative_int.__name__ = "integer"
_non_negative_float.__name__ = "number"

_RUN_EPILOG = """\
Input files: .npz with arrays X (n, d) and y (n,); .npy of shape (n, d + 1) with the labels in
the last column (or (n, d) with --labels); .csv with a header line, comma-separated numbers, the
labels in the column named by --label-col (default: the last). Labels are 0 or 1.
Output: one row per (test point, kind, rank) with columns test_index, kind (helpful|harmful),
rank (1 = most), train_index, influence, loo_change (predicted change in the test loss on
removing that training point and refitting, Newton-corrected); indices count from 0.
Exit status: 0 done, 1 error (input, fit, output), 2 usage error, 130 interrupted."""


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress bars (drawn on stderr only when it is a terminal, for steps "
                             "longer than a second)")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(prog="fastinfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_demo = sub.add_parser("demo", parents=[common], help="the seed example end to end, then synthetic data",
                            description="The seed notebook's example by direct solve and CG, then a "
                                        "synthetic data set: fit and top-k throughput.")
    p_demo.add_argument("--n", type=_positive_int, default=1_000_000, help="synthetic training rows "
                        "(default 1000000)")
    p_demo.add_argument("--d", type=_positive_int, default=50, help="synthetic features (default 50)")
    p_demo.add_argument("--m", type=_positive_int, default=1000, help="synthetic test points (default 1000)")

    p_run = sub.add_parser("run", parents=[common], help="top-k influential training points of your files",
                           description="Fit L2 logistic regression on TRAIN and write, for every test "
                                       "point in TEST,\nthe k most helpful and k most harmful training "
                                       "points.",
                           epilog=_RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_run.add_argument("train", metavar="TRAIN", help="training data (.npz, .npy or .csv)")
    p_run.add_argument("test", metavar="TEST", help="test data, same format options and features")
    p_run.add_argument("--l2", type=_non_negative_float, default=1.0,
                       help="L2 penalty on the coefficients, 1/C of scikit-learn (default 1.0)")
    p_run.add_argument("--k", type=_positive_int, default=10,
                       help="training points listed per test point and kind (default 10; all when there "
                            "are fewer)")
    p_run.add_argument("--solver", choices=SOLVERS, default="auto",
                       help="inverse-Hessian solver (default auto)")
    p_run.add_argument("--damping", type=_non_negative_float, default=0.0, metavar="D",
                       help="added to the Hessian's diagonal (default 0)")
    p_run.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    p_run.add_argument("--format", choices=("csv", "json"),
                       help="output format (default: json for a .json file, else csv)")
    p_run.add_argument("--label-col", metavar="NAME", help="CSV label column (default: the last)")
    p_run.add_argument("--labels", nargs=2, metavar=("TRAIN_LABELS", "TEST_LABELS"),
                       help=".npy label files for .npy features (then every column is a feature)")
    p_run.add_argument("--self-influence", metavar="FILE",
                       help="also write the training points ranked by self-influence, highest first "
                            "(candidates for mislabelling), to FILE")
    p_run.add_argument("--self-k", type=_non_negative_int, metavar="N",
                       help="how many to list in --self-influence FILE (default: --k; 0: all)")
    p_run.add_argument("--plot", metavar="FILE.png",
                       help="plot predicted vs actual leave-one-out change (needs matplotlib)")
    # No options of its own (so that none can swallow an abbreviation): all go to bench.report.
    p_bench = sub.add_parser("bench", add_help=False,
                             help="throughput table against NumPy/SciPy and the machine's limits "
                                  "(from a checkout: runs python -m bench.report with these arguments)")
    p_bench.set_defaults(debug=False, quiet=False)
    return parser, p_run


def bench(report_args):
    """``python -m bench.report`` of the checkout in the current directory, with ``report_args``."""
    root = os.getcwd()
    if not os.path.isfile(os.path.join(root, "bench", "report.py")):
        raise CommandError(
            "fastinfl bench runs the benchmark suite in the bench/ folder of a fastinfl checkout, "
            "which is not part of the installed package: run it from the repository's root."
        )
    sys.path.insert(0, root)
    from bench import report

    report.main(report_args)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, without the source line."""
    print(f"fastinfl: warning: {category.__name__}: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None):
    """Entry point of the ``fastinfl`` command; returns the exit status."""
    parser, p_run = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with warnings.catch_warnings():  # restores showwarning
            warnings.showwarning = _show_warning
            if args.command == "demo":
                demo(n=args.n, d=args.d, m=args.m, quiet=args.quiet)
            elif args.command == "bench":
                bench(extra)
            else:
                _check_run_args(p_run, args)
                run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("fastinfl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            raise
        message = str(exc) if isinstance(exc, (CommandError, InputError)) else f"{type(exc).__name__}: {exc}"
        print(f"fastinfl: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
