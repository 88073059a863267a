"""top_k never reports a point of the wrong sign: helpful means influence < 0, harmful > 0."""

import numpy as np

import fastinfl


def test_top_k_pads_slots_without_a_point_of_the_right_sign():
    # 4 training points, k = n: every point has one sign, so each list must be padded.
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 1, 0, 1])
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    X_test, y_test = np.array([[0.5], [2.5]]), np.array([0, 1])
    top = inf.top_k(X_test, y_test, k=4)
    full = inf.influence(X_test, y_test)
    for t in range(2):
        neg = np.flatnonzero(full[t] < 0)
        pos = np.flatnonzero(full[t] > 0)
        assert 0 < len(neg) < 4 and 0 < len(pos) < 4  # the case the padding is for
        # the real entries: exactly the points of that sign, in order of influence
        np.testing.assert_array_equal(top.helpful_idx[t, : len(neg)], neg[np.argsort(full[t, neg])])
        np.testing.assert_array_equal(top.harmful_idx[t, : len(pos)], pos[np.argsort(-full[t, pos])])
        assert (top.helpful[t, : len(neg)] < 0).all() and (top.harmful[t, : len(pos)] > 0).all()
        # the rest: index -1 and NaN, never a point of the other sign
        assert (top.helpful_idx[t, len(neg):] == -1).all() and np.isnan(top.helpful[t, len(neg):]).all()
        assert (top.harmful_idx[t, len(pos):] == -1).all() and np.isnan(top.harmful[t, len(pos):]).all()
