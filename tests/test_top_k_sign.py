"""top_k's sign contract (issue 9, item 2): a helpful point has strictly negative influence, a harmful
one strictly positive; slots with no such training point are padded with index -1 and value NaN.

Written ahead of the API change in the operator refactor: it fails until ``Influence.top_k`` pads.
"""

import numpy as np
import pytest

import fastinfl

X = np.array([[0.0], [1.0], [2.0], [3.0]])
Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_top_k_never_lists_a_point_of_the_wrong_sign(solver, k):
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, Y)
    inf = fastinfl.Influence(model, X, Y, solver=solver)
    full = inf.influence(X, Y)
    top = inf.top_k(X, Y, k=k)
    for t in range(X.shape[0]):
        for idx, val, sign in ((top.helpful_idx[t], top.helpful[t], -1), (top.harmful_idx[t], top.harmful[t], 1)):
            want = np.flatnonzero(sign * full[t] > 0)
            want = want[np.argsort(-sign * full[t, want], kind="stable")][:k]  # most influential first
            filled = idx >= 0
            assert filled.sum() == len(want)
            assert np.all(filled[: len(want)]) and not np.any(filled[len(want):])  # padding at the end
            np.testing.assert_array_equal(idx[filled], want)
            assert np.all(sign * val[filled] > 0)
            np.testing.assert_allclose(val[filled], full[t, want], rtol=1e-9, atol=1e-15)
            assert np.all(np.isnan(val[~filled]))
    # with k = n every point appears in at most one list
    if k == X.shape[0]:
        for t in range(X.shape[0]):
            both = set(top.helpful_idx[t][top.helpful_idx[t] >= 0]) & set(top.harmful_idx[t][top.harmful_idx[t] >= 0])
            assert not both
