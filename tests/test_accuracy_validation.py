"""Beyond first order against actual refits on real data (the figures of docs/validation_accuracy.md)."""

import pytest
from accuracy_cases import GROUP_SIZES, groups, single_points


def _check_single(res):
    # exact evaluation of the test loss is never worse than the linear carry-over (beyond rounding of r)
    for correction in ("none", "newton"):
        assert res[(correction, "exact")][0] >= res[(correction, "linear")][0] - 1e-4


def _check_groups(res, converges=True):
    r = {label: v[0] for label, v in res.items()}
    assert r["Newton, exact"] > r["first order"]  # one Newton step beats the first-order sum
    assert r["Newton x2, exact"] >= r["Newton, exact"] - 1e-3
    if converges:
        assert r["Newton x5, exact"] > 0.999  # steps converge to the refit


def test_exact_loss_on_digits_single_points():
    res = single_points("digits_1_vs_7", 0.1)
    _check_single(res)
    # measured 0.9904 vs 0.9420 pooled: the exact loss is what makes the Newton step pay here
    assert res[("newton", "exact")][0] > 0.985 > 0.95 > res[("newton", "linear")][0]


def test_groups_by_feature_quantiles_on_digits():
    _check_groups(groups("digits_1_vs_7", 0.1, "quantile"))


@pytest.mark.slow
@pytest.mark.parametrize("l2", [1.0, 0.1])
@pytest.mark.parametrize("name", ["breast_cancer", "digits_1_vs_7"])
def test_the_whole_table(name, l2):
    _check_single(single_points(name, l2))
    for kind in [*map(str, GROUP_SIZES), "quantile"]:
        # 200 of 289 digits at l2 = 0.1: five steps reach r = 0.97 only (the table says so)
        _check_groups(groups(name, l2, kind), converges=not (name == "digits_1_vs_7" and l2 == 0.1 and kind == "200"))
