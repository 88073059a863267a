"""``fastinfl run --plot``: predicted vs actual leave-one-out change (Koh & Liang, Figure 2)."""

import os

import numpy as np

from ..loo import loo_retrain
from .output import CommandError, opened
from .progress import progress
from .topk import top_k_loo


def plot(args, inf, model, train, test, losses):
    """Predicted (Newton) vs actual leave-one-out change, Koh & Liang Fig. 2 style, to ``args.plot``."""
    from matplotlib.figure import Figure

    tests = np.argsort(-losses, kind="stable")[:3]
    X_sel, y_sel = test.X[tests], test.y[tests]
    top, loo = top_k_loo(inf, X_sel, y_sel, min(5, train.y.shape[0]), quiet=True)
    pairs = np.concatenate([top.helpful_idx, top.harmful_idx], axis=1)
    predicted = np.concatenate(loo, axis=1)
    values = np.concatenate([-top.helpful, top.harmful], axis=1)
    keep = (pairs >= 0) & (values > 0)  # slots with a training point of the right sign
    idx = np.unique(pairs[keep])
    actual = np.full(pairs.shape, np.nan)
    with progress("refits", total=idx.shape[0], enabled=not args.quiet) as bar:
        for i in idx:
            change = loo_retrain(model, train.X, train.y, [i], X_sel, y_sel)[:, 0]
            rows, cols = np.nonzero((pairs == i) & keep)
            actual[rows, cols] = change[rows]
            bar.update()

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for row, t in enumerate(tests):
        ax.scatter(actual[row][keep[row]], predicted[row][keep[row]], s=22,
                   label=f"test point {t} (loss {losses[t]:.3g})")
    a, p = actual[keep], predicted[keep]
    lim = (max(np.abs(a).max(), np.abs(p).max()) * 1.08 if a.size else 1.0) or 1.0
    ax.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.8, zorder=0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           xlabel="actual change in test loss (leave-one-out refit)",
           ylabel="predicted change (influence, Newton-corrected)")
    kk = top.helpful_idx.shape[1]
    title = (f"Leave-one-out: the {kk} most helpful and {kk} most harmful training points\n"
             f"of the {len(tests)} highest-loss test points ({idx.shape[0]} refits)")
    if a.size > 1 and np.ptp(a) > 0 and np.ptp(p) > 0:
        title += f", Pearson r = {np.corrcoef(a, p)[0, 1]:.4f}"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fmt = os.path.splitext(args.plot)[1].lower().lstrip(".") or "png"
    try:
        with opened(args.plot, "wb") as f:  # atomic: a previous plot stays intact on any error
            fig.savefig(f, dpi=110, format=fmt)
    except ValueError as exc:
        raise CommandError(f"cannot write {args.plot}: {exc}") from None
