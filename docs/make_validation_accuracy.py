"""Regenerate docs/validation_accuracy.md: beyond first order (issue 18) against actual refits.

Usage (from the repository root): ``python docs/make_validation_accuracy.py`` (writes the file;
``--stdout`` prints it). Deterministic; about a minute. The set-up is tests/accuracy_cases.py, which
tests/test_accuracy_validation.py checks.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from accuracy_cases import (  # noqa: E402
    GROUP_METHODS,
    GROUP_SIZES,
    N_BINS,
    N_GROUPS,
    N_TEST,
    N_TRAIN,
    SINGLE,
    groups,
    single_points,
)

CASES = ["breast_cancer", "digits_1_vs_7"]
L2S = [1.0, 0.1]


def render():
    lines = [
        "# Validation beyond first order: exact test loss, and removing groups",
        "",
        "Same data, split and standardisation as [validation.md](validation.md); "
        "`fastinfl.LogisticRegression(l2)` at l2 = 1 and 0.1; predictions against actual refits "
        "(`fastinfl.loo_retrain`, Newton to max|grad| <= 1e-12 n).",
        "",
        "## Single points: the test loss carried linearly or evaluated exactly",
        "",
        f"For the {N_TEST} test points of highest loss, the {N_TRAIN} training points of largest |influence| "
        "each removed and refitted. `loo_change(correction, loss)`: parameters moved by H^-1 g_i "
        "(none) or H^-1 g_i / (1 - h_i) (newton); the test loss then carried to first order (linear) or "
        "evaluated at the moved parameters (exact). Pearson r pooled over the pairs, r of the worst test "
        "point, and the largest |pred - actual| / |actual| over the pairs.",
        "",
        "| data set | l2 | " + " | ".join(f"{c}, {lo}: r / worst r / max rel err" for c, lo in SINGLE) + " |",
        "|---|---|" + "---|" * len(SINGLE),
    ]
    for name in CASES:
        for l2 in L2S:
            res = single_points(name, l2)
            lines.append(f"| {name} | {l2:g} | " + " | ".join(
                f"{res[key][0]:.4f} / {res[key][1]:.4f} / {res[key][2]:.3g}" for key in SINGLE) + " |")
    lines += [
        "",
        "## Groups removed together",
        "",
        f"`group_change(groups, correction, loss, steps)` against refits without each group: {N_GROUPS} random "
        f"groups of {', '.join(map(str, GROUP_SIZES))} training points, and {N_BINS} groups that are the "
        f"rank quantile bins of the first feature (a coherent region each); {N_TEST} test points of highest "
        "loss. Each cell: Pearson r over the test points x groups / largest |pred - actual| divided by the "
        "largest |actual| / (for steps >= 2) number of calls that raised AccuracyWarning (a later Newton "
        "decrement above 0.1 x the first: that call had at least one unconverged group).",
        "",
        "| data set | l2 | groups | " + " | ".join(label for label, *_ in GROUP_METHODS) + " |",
        "|---|---|---|" + "---|" * len(GROUP_METHODS),
    ]
    for name in CASES:
        for l2 in L2S:
            for kind in [*map(str, GROUP_SIZES), "quantile"]:
                res = groups(name, l2, kind)
                what = f"{N_GROUPS} x {kind} random" if kind != "quantile" else f"{N_BINS} quantile bins"
                cells = []
                for label, _, _, steps in GROUP_METHODS:
                    r, err, warned = res[label]
                    cells.append(f"{r:.4f} / {err:.3g}" + (f" / {warned}" if steps > 1 else ""))
                lines.append(f"| {name} | {l2:g} | {what} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Reading it",
        "",
        "- Exact evaluation of the test loss matched the linear carry-over on single points (never worse "
        "by more than 1e-4 in r) and helps most where the Newton correction is large (digits at "
        "l2 = 0.1: worst-point r 0.967 -> 0.997); it is the default (`loss=\"exact\"`).",
        "- For groups, one Newton step (Woodbury on H's factor) has a higher r than the first-order sum "
        "in every row, but not always a smaller worst error: removing 200 of 289 digits moves the fit so "
        "far that one step overshoots some test losses (max error 1.3 and 3.9 x the largest change). A "
        "second step closes most of the rest, and five reach the refit except for 200 of 289 digits at "
        "l2 = 0.1 (r 0.97). Use `steps=2` to get the convergence check: `group_decrements_` and the "
        "AccuracyWarning flag the groups to refit.",
        "- Breast cancer at l2 = 0.1 is limited by a few training points whose removal moves the fit "
        "beyond any one-step prediction (training row 206 in validation.md): no single-point "
        "correction captures it; groups containing it need several steps.",
        "",
        "Regenerate: `python docs/make_validation_accuracy.py` (deterministic).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--stdout" in sys.argv:
        print(text)
    else:
        (ROOT / "docs" / "validation_accuracy.md").write_text(text)
