"""The ``fastinfl`` command: its parser, and one-line errors with exit statuses."""

import argparse
import math
import os
import subprocess
import sys
import warnings

from .._io import InputError
from ..influence import SOLVERS
from .output import CommandError, format_conflict

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
fastinfl: influence functions for L2-regularised logistic regression (Numba kernels).
  fastinfl demo    the seed example end to end, then synthetic data with planted mislabels
  fastinfl run     the most helpful and harmful training points of every test point, on your files
  fastinfl serve   an HTTP service over a saved Influence state (extra 'serve')
  fastinfl bench   throughput against NumPy/SciPy and this machine's limits (from a checkout)
  fastinfl robustness  the fewest training rows whose removal flips a conclusion, verified by refits
  fastinfl compile compile every kernel into the cache now (a service container's image build)
'fastinfl COMMAND --help' describes each command's options."""


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


def _names(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names; got {text!r}")
    return names


_positive_int.__name__ = "positive integer"
_non_negative_int.__name__ = "integer"
_non_negative_float.__name__ = "number"
_names.__name__ = "column names"

RUN_EPILOG = """\
Input files: .npz with arrays X (n, d) and y (n,); .npy of shape (n, d + 1) with the labels in
the last column (or (n, d) with --labels); .csv with a header line naming the columns, separated
by commas (or semicolons, tabs, |: detected from the header), the labels in the column named by
--label-col (default: the last). Labels are 0 or 1. The TEST file needs its labels too: influence
is measured on each test point's loss. A CSV column with an empty name first (pandas' to_csv
index) is read as row IDs, not as a feature; --id-col names another ID column.
Output: one row per (test point, kind, rank) with columns test_index, test_id (with IDs),
test_label, test_loss, kind (helpful|harmful), rank (1 = most), train_index, train_id (with IDs),
influence, loo_change (predicted change in the test loss on removing that training point and
refitting, Newton-corrected); indices are row positions counting from 0. A helpful point has
negative influence, a harmful one positive: when fewer than K training points have the right
sign, the list is shorter. Format: from the --out file's extension (.csv, .json), else --format.
Exit status: 0 done, 1 error (input, fit, output), 2 usage error, 130 interrupted."""

BENCH_DESCRIPTION = """\
Throughput table of fastinfl against the NumPy/SciPy code a user would write, and against this
machine's measured limits (float64 GEMM rate, memory read bandwidth). Runs 'python -m bench.report'
of the fastinfl checkout in the current directory (the bench/ folder is not installed). At the
default 10^6 x 100 it takes about 3 minutes on 2 cores and needs about 2 GiB of memory; time grows
with n x d."""

# seconds of `fastinfl bench` at the default size (bench/RESULTS.md: about a minute per table plus
# two for top_k and cg_k100, on 2 cores); scaled by n x d, plus the machine-limit measurements
BENCH_SECONDS_DEFAULT = 180
BENCH_OPS = ("hessian", "hessian_kernel", "hvp", "hvp_k16", "hvp_k100", "cg_k20", "cg_k100", "top_k", "fit")


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress bars or notes (bars are drawn on stderr only when it is a "
                             "terminal, for steps longer than a second; TQDM_DISABLE=1 also hides them)")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(prog="fastinfl", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="HTTP service over a saved Influence state (extra 'serve'; "
                                 "fastinfl serve --help)", add_help=False)
    sub.add_parser("compile", help="compile every kernel into the cache now (fastinfl compile --help)",
                   add_help=False)
    p_demo = sub.add_parser("demo", parents=[common], help="the seed example end to end, then synthetic data",
                            description="The seed notebook's example by direct solve and CG, then a "
                                        "synthetic data set with planted mislabels: fit, self-influence, "
                                        "top-k throughput, and two predictions checked by refitting.")
    p_demo.add_argument("--n", type=_positive_int, default=1_000_000, help="synthetic training rows "
                        "(default 1000000)")
    p_demo.add_argument("--d", type=_positive_int, default=50, help="synthetic features (default 50)")
    p_demo.add_argument("--m", type=_positive_int, default=1000, help="synthetic test points (default 1000)")

    p_run = sub.add_parser("run", parents=[common], help="top-k influential training points of your files",
                           description="Fit L2 logistic regression on TRAIN and write, for every test "
                                       "point in TEST (features and labels),\nthe k most helpful and k "
                                       "most harmful training points.",
                           epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_run.add_argument("train", metavar="TRAIN", help="training data (.npz, .npy or .csv), features and labels")
    p_run.add_argument("test", metavar="TEST", help="test data with their labels, same format options and "
                                                    "features")
    p_run.add_argument("--l2", type=_non_negative_float, default=1.0,
                       help="L2 penalty on the coefficients, 1/C of scikit-learn (default 1.0)")
    p_run.add_argument("--k", type=_positive_int, default=10,
                       help="training points listed per test point and kind (default 10; fewer when fewer "
                            "have the right sign)")
    p_run.add_argument("--solver", choices=SOLVERS, default="auto",
                       help="inverse-Hessian solver (default auto)")
    p_run.add_argument("--damping", type=_non_negative_float, default=0.0, metavar="D",
                       help="added to the Hessian's diagonal (default 0)")
    p_run.add_argument("--out", metavar="FILE", help="output file, .csv or .json (default: stdout)")
    p_run.add_argument("--format", choices=("csv", "json"),
                       help="output format for stdout (default csv), or for an output file named without "
                            ".csv or .json")
    p_run.add_argument("--label", "--label-col", dest="label_col", metavar="COLUMN",
                       help="CSV label column, by name or 0-based position (-1: the last). Default: the last "
                            "column, only when it has exactly two distinct values or with --multiclass; "
                            "otherwise an error lists the candidate columns (--label-col: the same option)")
    p_run.add_argument("--multiclass", action="store_true",
                       help="take the last column as the label whatever its number of distinct values "
                            "(several: multinomial logistic regression); default: only a two-valued last "
                            "column is taken unasked")
    p_run.add_argument("--id-col", metavar="NAME",
                       help="CSV column of row IDs (any text): carried into the output as train_id and "
                            "test_id, never a feature")
    p_run.add_argument("--drop-cols", type=_names, default=[], metavar="NAME[,NAME...]",
                       help="CSV columns to ignore (neither features nor labels)")
    p_run.add_argument("--labels", nargs=2, metavar=("TRAIN_LABELS", "TEST_LABELS"),
                       help=".npy label files for .npy features (then every column is a feature)")
    p_run.add_argument("--self-influence", metavar="FILE",
                       help="also write the training points ranked by self-influence, highest first "
                            "(candidates for mislabelling), to FILE (.csv or .json)")
    p_run.add_argument("--self-k", type=_non_negative_int, metavar="N",
                       help="how many to list in --self-influence FILE (default: --k; 0: all)")
    p_run.add_argument("--plot", metavar="FILE.png",
                       help="plot predicted vs actual leave-one-out change (needs matplotlib)")
    p_run.add_argument("--scheduler", metavar="ADDRESS",
                       help="with a Zarr store (a folder STORE.zarr holding arrays X and y) as TRAIN: the "
                            "dask scheduler, tcp://host:port, local[:N] (a LocalCluster), threads or "
                            "synchronous (needs the extra 'dask')")
    p_run.add_argument("--loss", choices=("exact", "linear"), default="exact",
                       help="loo_change: the test loss evaluated at the predicted parameters (exact, "
                            "default) or carried to first order (linear); docs/validation_accuracy.md")
    p_run.add_argument("--groups", metavar="FILE",
                       help="group label of every training row (.npy of integers, or text with one "
                            "integer per line, an optional header first); negative: in no group")
    p_run.add_argument("--groups-out", metavar="FILE",
                       help="with --groups: per test point, the K groups whose removal would raise its "
                            "loss most (helpful) and lower it most (harmful), with the predicted change")
    p_run.add_argument("--group-steps", type=_positive_int, default=1, metavar="N",
                       help="Newton steps per group removal (default 1; 2 adds a convergence check)")

    p_bench = sub.add_parser("bench", help="throughput table against NumPy/SciPy and the machine's limits "
                                           "(from a checkout)", description=BENCH_DESCRIPTION)
    p_bench.add_argument("--n", type=_positive_int, default=1_000_000, help="rows (default 1000000)")
    p_bench.add_argument("--d", type=_positive_int, default=100, help="features (default 100)")
    p_bench.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                         help="dtype of X (default float64)")
    p_bench.add_argument("--ops", metavar="OP[,OP...]",
                         help="operations to time, comma-separated, from: " + ", ".join(BENCH_OPS)
                              + " (default: all but fit, which runs scikit-learn's fit too: 10-30 s)")
    p_bench.add_argument("--budget", type=_non_negative_float, metavar="SECONDS",
                         help="seconds of repeats per timing: each time is the best of up to 5 runs while "
                              "their total is under this (default 5)")
    p_bench.set_defaults(debug=False, quiet=False)
    from .robustness import add_parser as add_robustness_parser

    add_robustness_parser(sub, common, _non_negative_float)
    return parser, p_run, p_bench


def check_run_args(parser, args):
    """Usage errors (exit 2) and output folders that do not exist (exit 1), before any work."""
    ext = {os.path.splitext(p)[1].lower() for p in (args.train, args.test)}
    from .run import is_sparse_file

    sparse = all(is_sparse_file(p) for p in (args.train, args.test))
    if args.labels is not None and ext != {".npy"} and not sparse:
        parser.error("--labels goes with .npy feature files (TRAIN and TEST both .npy) or scipy.sparse .npz files")
    for option, value in (("--label", args.label_col), ("--id-col", args.id_col),
                          ("--drop-cols", args.drop_cols)):
        if value and ".csv" not in ext:
            parser.error(f"{option} goes with .csv files")
    if args.self_k is not None and args.self_influence is None:
        parser.error("--self-k goes with --self-influence FILE")
    if (args.groups is None) != (args.groups_out is None):
        parser.error("--groups FILE and --groups-out FILE go together")
    for option, path in (("--out", args.out), ("--self-influence", args.self_influence),
                         ("--groups-out", args.groups_out)):
        conflict = format_conflict(path, args.format, option)
        if conflict:
            parser.error(conflict)
    if args.self_k is None:
        args.self_k = args.k
    for path in (args.out, args.self_influence, args.plot, args.groups_out):
        folder = os.path.dirname(path) if path else ""
        if folder and not os.path.isdir(folder):
            raise CommandError(f"cannot write {path}: no folder {folder}.")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install matplotlib "
                               "(or, from a fastinfl checkout, pip install '.[plot]').") from None


def _importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def bench(args):
    """``python -m bench.report`` of the checkout in the current directory, as a child process."""
    root = os.getcwd()
    if not os.path.isfile(os.path.join(root, "bench", "report.py")):
        raise CommandError(
            "fastinfl bench runs the benchmark suite in the bench/ folder of a fastinfl checkout, "
            "which is not part of the installed package: run it from the repository's root."
        )
    ops = args.ops.split(",") if args.ops else list(BENCH_OPS[:-1])
    unknown = [op for op in ops if op not in BENCH_OPS]
    if unknown:
        raise CommandError(f"--ops: unknown operation {unknown[0]!r}; the operations are {', '.join(BENCH_OPS)}.")
    if "fit" in ops and not _importable("sklearn"):
        raise CommandError("fastinfl bench --ops fit times scikit-learn's fit too, and scikit-learn is not "
                           "installed: from the checkout, pip install '.[test]' (or pip install scikit-learn), "
                           "or leave fit out of --ops.")
    argv = ["--n", str(args.n), "--d", str(args.d), "--dtype", args.dtype]
    if args.ops:
        argv += ["--ops", args.ops]
    if args.budget is not None:
        argv += ["--budget", str(args.budget)]
    ops = len(args.ops.split(",")) if args.ops else len(BENCH_OPS) - 1
    seconds = 20 + BENCH_SECONDS_DEFAULT * (args.n * args.d / 1e8) * ops / (len(BENCH_OPS) - 1)
    when = f"about {seconds / 60:.0f} minutes" if seconds >= 90 else f"about {seconds:.0f} s"
    print(f"fastinfl bench: {args.n:,} x {args.d} {args.dtype}, {ops} operations: {when} on 2 cores "
          "(less on a bigger machine); the table is printed at the end.", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", "bench.report", *argv], cwd=root)
    if proc.returncode:
        raise CommandError(f"python -m bench.report {' '.join(argv)} failed (exit status {proc.returncode}).")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, without the source line."""
    print(f"fastinfl: warning: {category.__name__}: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None):
    """Entry point of the ``fastinfl`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv and argv[0] == "serve":  # its own parser (fastinfl.serving), optional extra 'serve'
        from ..serving import serve_main

        return serve_main(argv[1:])
    if argv and argv[0] == "compile":  # its own parser (cli/compile.py)
        from .compile import compile_main

        return compile_main(argv[1:])
    parser, p_run, _ = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores showwarning
            warnings.showwarning = _show_warning
            if args.command == "demo":
                from .demo import demo

                demo(n=args.n, d=args.d, m=args.m, quiet=args.quiet)
            elif args.command == "bench":
                bench(args)
            elif args.command == "robustness":
                from .robustness import robustness

                robustness(args)
            else:
                from .run import run

                check_run_args(p_run, args)
                run(args)
            sys.stdout.flush()
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("fastinfl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader stopped early (| head): not an error; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        message = str(exc) if isinstance(exc, (CommandError, InputError)) else f"{type(exc).__name__}: {exc}"
        print(f"fastinfl: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
