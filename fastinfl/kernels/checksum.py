"""One pass over X for ``Influence.load``: checksum of every row, margins, gradient and HVPs.

Loading a state file must check it against the training data (``fastinfl/_state.py``).
Everything that check needs from X comes from a single read of each row, while the
row is in L1 cache:

- ``checksum`` (2,) uint64: two independent 64-bit lanes of a keyed hash of the raw
  bits of every element, position-dependent (the column through per-column keys, the
  row through a final mix of the row's hash with its index). Per element
  ``m = (bits ^ k1_j) * k2_j`` (k2_j odd: a bijection of the bits), the row hash is
  the wrapping sum of ``m ^ (m >> 29)``, and a row adds ``fmix64(h_row + (i + 1) * G)``
  (MurmurHash3's finaliser, a bijection) to the lane. So a change of any single element
  always changes both lanes; other changes go undetected with probability about 2^-64 per
  lane for data not crafted against these public keys.
  Wrapping sums do not depend on the order of the chunks: the checksum is the same for
  any number of threads.
- ``Z`` (n, K): margins Theta x~_i (K = 1 binary, K classes multinomial).
- ``grad`` (K, p): sum_i r_i (x) x~_i with r_i = sigma(z_i) - y_i (binary) or
  softmax(z_i) - e_{y_i} (multinomial); the L2 term is the caller's.
- ``HV`` (k, K p): sum_i (W_i (x) x~_i x~_i^T) v_q for the rows v_q of ``V`` (k, K p),
  W_i = sigma'(z_i) (binary) or diag(pi_i) - pi_i pi_i^T (multinomial); no ridge term.

Row chunks depend on the sizes only and partial sums are merged in chunk order, so the
float results are bitwise identical for any number of Numba threads.
"""

import math

import numpy as np
from numba import prange

from .._config import MAX_CHUNKS, MIN_CHUNK_ROWS, PARALLEL_MIN_WORK, kernel
from . import margin_loss

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S29 = np.uint64(29)
_S33 = np.uint64(33)
_ONE = np.uint64(1)
_ZERO = np.int64(0)
_MIN_ROWS = np.int64(MIN_CHUNK_ROWS)
_MAX_CHUNKS = np.int64(MAX_CHUNKS)
_MIN_WORK = np.int64(PARALLEL_MIN_WORK)
# Partial sums of all chunks together stay below this many float64.
_MAX_PARTIAL = np.int64(1 << 23)


def checksum_keys(d):
    """(4, d) uint64 per-column keys k1, k2 of lane 0 and lane 1 (k2 odd; splitmix64): fixed, as saved
    checksums depend on them."""
    z = np.uint64(0x243F6A8885A308D3) + np.arange(1, 4 * d + 1, dtype=np.uint64) * _GOLDEN  # wraps mod 2^64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    keys = (z ^ (z >> np.uint64(31))).reshape(4, d)
    keys[1] |= _ONE
    keys[3] |= _ONE
    return keys


@kernel()
def _fmix64(h):
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


@kernel()
def _rows(X, bits, y, family, theta, V, keys, with_hash, lo, hi, Z, grad, HV, lanes):
    """Rows [lo, hi): margins into Z; adds to grad (K, p), HV (k, K p) and the checksum lanes (2,)."""
    d = X.shape[1]
    K, p = theta.shape
    k = V.shape[0]
    multi = K > 1
    z = np.empty(K)
    r = np.empty(K)
    pi = np.empty(K)
    U = np.empty((k, K))
    t = np.empty(K)
    for i in range(lo, hi):
        if with_hash:
            h0 = np.uint64(0)
            h1 = np.uint64(0)
            for j in range(d):
                b = np.uint64(bits[i, j])
                m0 = (b ^ keys[0, j]) * keys[1, j]
                m1 = (b ^ keys[2, j]) * keys[3, j]
                h0 += m0 ^ (m0 >> _S29)
                h1 += m1 ^ (m1 >> _S29)
            pos = np.uint64(i + 1) * _GOLDEN
            lanes[0] += _fmix64(h0 + pos)
            lanes[1] += _fmix64(h1 ^ pos)
        for c in range(K):
            acc = theta[c, d] if p > d else 0.0
            for j in range(d):
                acc += np.float64(X[i, j]) * theta[c, j]
            z[c] = acc
            Z[i, c] = acc
        for q in range(k):
            for c in range(K):
                acc = V[q, c * p + d] if p > d else 0.0
                for j in range(d):
                    acc += np.float64(X[i, j]) * V[q, c * p + j]
                U[q, c] = acc
        if multi:
            top = z[0]
            for c in range(1, K):
                top = max(top, z[c])
            norm = 0.0
            for c in range(K):
                pi[c] = math.exp(z[c] - top)
                norm += pi[c]
            for c in range(K):
                pi[c] /= norm
                r[c] = pi[c]
            r[np.int64(y[i])] -= 1.0
        else:
            _, r[0], pi[0] = margin_loss.loss_residual_weight(z[0], y[i], family)
        for c in range(K):
            rc = r[c]
            for j in range(d):
                grad[c, j] += rc * X[i, j]
            if p > d:
                grad[c, d] += rc
        for q in range(k):
            if multi:  # t = (diag(pi) - pi pi^T) u_q
                dot = 0.0
                for c in range(K):
                    dot += pi[c] * U[q, c]
                for c in range(K):
                    t[c] = pi[c] * (U[q, c] - dot)
            else:
                t[0] = pi[0] * U[q, 0]
            for c in range(K):
                tc = t[c]
                for j in range(d):
                    HV[q, c * p + j] += tc * X[i, j]
                if p > d:
                    HV[q, c * p + d] += tc


@kernel()
def chunk_count(n, d, acc):
    """Row chunks of the pass: 1 below PARALLEL_MIN_WORK, else enough to feed the threads with the
    partial sums (``acc`` float64 per chunk) bounded."""
    if n * d < _MIN_WORK:
        return 1
    c = max(1, min((n + _MIN_ROWS - 1) // _MIN_ROWS, _MAX_CHUNKS))
    return max(1, min(c, _MAX_PARTIAL // max(1, acc)))


@kernel(parallel=True)
def _verify_pass(X, bits, y, family, theta, V, keys, with_hash, Z, grads, hvs, lanes, stop):
    """The pass of the module docstring over X (n, d) float32/float64 with ``bits`` its raw view
    (uint32/uint64), labels y (n,) (of the one-margin loss ``family``, or class codes when theta has K > 1 rows),
    theta (K, p), V (k, K p), keys (4, d). Per row chunk c (``chunk_count`` of them, zeroed by the
    caller): grads[c] (K, p), hvs[c] (k, K p), lanes[c] (2,); Z (n, K) in place.
    The caller merges the chunks in order. Returns early (meaningless outputs) once stop[0] is set."""
    n = X.shape[0]
    nch = grads.shape[0]
    if nch == 1:  # no thread-pool launch for a small pass
        _rows(X, bits, y, family, theta, V, keys, with_hash, _ZERO, n, Z, grads[0], hvs[0], lanes[0])
        return
    rows = (n + nch - 1) // nch
    for c in prange(nch):
        if not stop[0]:
            _rows(X, bits, y, family, theta, V, keys, with_hash, c * rows, min(n, (c + 1) * rows), Z, grads[c],
                  hvs[c], lanes[c])
