"""Calibrate group_change's AccuracyWarning against actual refits (issue 23: it fired for 100 of 100 groups).

    python -m bench.group_warning [--groups 100] [--steps 2]

scikit-learn's digits (1000 training rows, 10 classes, standardised, l2 = 1) and its binary 3-vs-8 subset;
random half-size groups removed and refitted for real (fastinfl.loo_retrain(groups=)). Per group: the
Newton decrements of group_change(steps=...) and the relative error of its predicted test-loss changes,
||predicted - actual|| / ||actual|| over 50 test points. Prints the decrement ratios (last / first) beside
the errors (the estimate group_error_ is the squared ratio), and how many groups each threshold flags.
"""

import argparse
import warnings

import numpy as np

import fastinfl


def _data(binary):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    if binary:
        keep = (y == 3) | (y == 8)
        X, y = X[keep], (y[keep] == 8).astype(float)
    X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-9)
    n = min(1000, X.shape[0] - 50)
    return X[:n], y[:n], X[n:n + 50], y[n:n + 50]


def run(binary, n_groups, steps, seed=0):
    X, y, Xt, yt = _data(binary)
    model = (fastinfl.LogisticRegression if binary else fastinfl.MultinomialLogisticRegression)(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    rng = np.random.default_rng(seed)
    groups = [rng.choice(X.shape[0], X.shape[0] // 2, replace=False) for _ in range(n_groups)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = inf.group_change(Xt, yt, groups, steps=steps)
    est = inf.group_error_
    actual = fastinfl.loo_retrain(model, X, y, None, Xt, yt, groups=groups)
    err = np.linalg.norm(pred - actual, axis=0) / np.linalg.norm(actual, axis=0)
    r = np.corrcoef(pred.ravel(), actual.ravel())[0, 1]
    return est, err, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args(argv)
    for binary in (False, True):
        est, err, r = run(binary, args.groups, args.steps)
        print(f"\n{'binary 3 vs 8' if binary else 'multinomial, 10 classes'}: steps={args.steps}, {args.groups} "
              f"half-size groups, Pearson r(predicted, refit) = {r:.4f}")
        print(f"  estimate group_error_ (last/first decrement)^2: median {np.median(est):.3g}, max {est.max():.3g}; "
              f"relative error: median {np.median(err):.3g}, max {err.max():.3g}; "
              f"error <= 2 x estimate for {np.mean(err <= 2 * est):.0%} of groups")
        for thr in (0.01, 0.03, 0.1, 0.3):
            flagged = est > thr
            print(f"  estimate > {thr}: {flagged.sum()} groups flagged (their max error "
                  f"{err[flagged].max() if flagged.any() else float('nan'):.3g}); unflagged max error "
                  f"{err[~flagged].max() if (~flagged).any() else float('nan'):.3g}")


if __name__ == "__main__":
    main()
