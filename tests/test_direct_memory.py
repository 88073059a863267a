"""issue 24 item 6: the direct solver wherever it fits in memory (memory_limit and the machine), sparse X
included, not up to a fixed parameter count; a clear error when solver="direct" does not fit."""

import numpy as np
import pytest
import scipy.sparse as sp

import fastinfl
import fastinfl._memory as memory


def _sparse(n, d, per_row, seed=0):
    rng = np.random.default_rng(seed)
    cols = np.concatenate([rng.choice(d, per_row, replace=False) for _ in range(n)])
    X = sp.csr_matrix((rng.random(n * per_row), cols, np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    y = (np.asarray(X[:, : d // 2].sum(axis=1)).ravel() > np.asarray(X[:, d // 2:].sum(axis=1)).ravel())
    return X, y.astype(float)


@pytest.fixture(scope="module")
def text_like():
    """Short sparse rows over many columns, as TF-IDF: 3000 parameters (above the old dense crossover)."""
    X, y = _sparse(400, 3000, 8)
    model = fastinfl.LogisticRegression(l2=1.0).fit(X, y)
    return model, X, y


def test_auto_takes_direct_for_sparse_x_that_fits(text_like):
    model, X, y = text_like
    assert model.n_features_ + 1 > fastinfl.influence.AUTO_DIRECT_MAX_P
    inf = fastinfl.Influence(model, X, y)
    assert inf.uses_direct
    cg = fastinfl.Influence(model, X, y, solver="cg")
    a, b = inf.top_k(X[:5], y[:5], 4), cg.top_k(X[:5], y[:5], 4)
    np.testing.assert_array_equal(a.harmful_idx, b.harmful_idx)
    np.testing.assert_allclose(a.harmful, b.harmful, rtol=1e-6)


def test_auto_takes_cg_when_h_does_not_fit(text_like, monkeypatch):
    model, X, y = text_like
    p = model.n_features_ + 1
    assert not fastinfl.Influence(model, X, y, memory_limit=8 * p * p - 1).uses_direct
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 8 * p * p - 1)  # the factorisation's peak
    assert not fastinfl.Influence(model, X, y).uses_direct
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 8 * p * p)
    assert fastinfl.Influence(model, X, y).uses_direct


def test_auto_keeps_the_dense_crossover():
    """Dense X: forming H is p passes over X, so auto stays direct up to AUTO_DIRECT_MAX_P parameters."""
    rng = np.random.default_rng(1)
    for d, direct in ((1999, True), (2000, False)):
        X = rng.standard_normal((30, d))
        model = fastinfl.LogisticRegression.from_params(np.zeros(d), 0.0, l2=1.0)
        inf = fastinfl.Influence(model, X, (np.arange(30) % 2).astype(float), stationarity_tol=1e300)
        assert inf.uses_direct is direct, d


def test_auto_takes_cg_for_long_sparse_rows():
    """Sparse rows of 2500 nonzeros: forming H costs 2500 passes over X, more than AUTO_DIRECT_MAX_P."""
    X, y = _sparse(12, 2600, 2500)
    model = fastinfl.LogisticRegression.from_params(np.zeros(2600), 0.0, l2=1.0)
    assert memory.hessian_passes(X, 2601) == pytest.approx(2500)
    assert not fastinfl.Influence(model, X, y, stationarity_tol=1e300).uses_direct


def test_direct_beyond_memory_limit_is_a_clear_error(text_like):
    model, X, y = text_like
    with pytest.raises(ValueError, match=r"solver='direct': the dense Hessian of 3,001 parameters needs "
                                         r"0\.0671 GiB, more than memory_limit=0\.0625 GiB\. Use solver='cg'"):
        fastinfl.Influence(model, X, y, solver="direct", memory_limit=1 << 26)


def test_direct_beyond_the_machine_is_a_clear_error(text_like, monkeypatch):
    model, X, y = text_like
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 26)
    with pytest.raises(ValueError, match=r"solver='direct': forming and factoring the dense Hessian of 3,001 "
                                         r"parameters needs 0\.134 GiB \(2 x 0\.0671 GiB\), and this machine has "
                                         r"0\.0625 GiB available"):
        fastinfl.Influence(model, X, y, solver="direct")


def test_available_memory_is_a_positive_number_or_unknown():
    avail = memory.available_memory()
    assert avail is None or avail > 0
