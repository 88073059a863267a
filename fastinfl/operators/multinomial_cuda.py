"""The multinomial (softmax) operator on an NVIDIA GPU: training rows resident on the device.

``CudaMultinomialOperator(X, codes, n_classes, fit_intercept)`` keeps X on the
device as the binary :class:`~fastinfl.operators.cuda.CudaOperator` does, and
shares its device code (:class:`~fastinfl.operators.cuda.CudaRows`: transfer
and validation of X, the row-product and X~^T W passes, the weighted Gram, row
gathers, the streamed top-k). Per-row class values (logits, residuals R,
probabilities Pi) stay on the device class-major, (K, n); the few kernels that
work on them are in ``kernels/multinomial_cuda.py``. Every method returns NumPy
float64 arrays in the layouts of ``operators/multinomial_base.py``, which holds
the parameter space, the gauge and the CG on it.

Passes (P = K p):

- logits: one ``rowdot`` with the (K, p) parameters; loss, gradient, residuals
  and probabilities from them (``row_stats``) plus one ``xtw`` (X~^T R^T);
- HVP, per row block: T = X~ V^T (``rowdot``, k K columns), T_i <- W_i T_i
  (``curvature_mix``), then X~^T T (``xtw``);
- Hessian: the K (K + 1) / 2 class-pair blocks sum_i W_i[a, b] x~_i x~_i^T, each
  a weighted Gram (``gram``, as the binary Hessian without cuBLAS), assembled on
  the host (the direct solver factors there);
- influence: T = S~ X~_idx^T (``rowdot``, m K rows) then the residual-weighted
  sum over the classes (``combine_residuals``), in column blocks;
- top-k: ``top_k_rows`` with K margins (one source with the binary model).

CG is the base class's projected CG on these HVPs (one host round trip of the
(k, P) vectors per iteration). Sample weights are refused (as for the binary
model on CUDA).
"""

import numpy as np

from .base import Curvature
from .cuda import BLOCK_BYTES, CudaMargins, CudaRows, _blocks, is_device_array
from .multinomial_base import MultinomialOperator

MAX_GRID_Y = 65535  # CUDA's limit on a grid's y dimension (the per-row kernels stride over vectors beyond it)


class CudaLogits(CudaMargins):
    """Logits (device, (K, n)) of one ``loss_grad`` call, with the Curvature computed in the same pass;
    ``np.asarray`` gives the (n, K) NumPy logits."""

    def __array__(self, dtype=None, copy=None):
        z = np.ascontiguousarray(self.z_dev.copy_to_host().T)
        return z if dtype is None else z.astype(dtype)


class CudaMultinomialOperator(CudaRows, MultinomialOperator):
    """Every pass of multinomial logistic regression over (X, class codes) held on the GPU.

    See :class:`~fastinfl.operators.multinomial_base.MultinomialOperator`; build
    with :func:`~fastinfl.operators.multinomial.as_multinomial_operator` (``device="cuda"``).

    Parameters
    ----------
    X : (n, d) NumPy (validated by the caller, copied once), CuPy or Numba device array (validated on the
        device); float32 kept as float32, every sum in float64
    codes : (n,) int64 class codes in [0, K) (checked by the model) or None
    n_classes : int, K >= 2
    fit_intercept : bool
    name : str, what errors call X
    """

    kind = "cuda-multinomial"

    def __init__(self, X, codes, n_classes, fit_intercept, name="X"):
        self._init_device(X, name)
        super().__init__(self.X.shape[0], self.X.shape[1], fit_intercept, self.X.dtype, codes, n_classes)
        self.n, self.d, self.p = self.n_samples, self.n_features, self.row_params
        self.mk = _mn_kernels()
        self.y_dev = None
        if codes is not None:
            self.y_dev = self.cuda.to_device(np.ascontiguousarray(codes, dtype=np.int64))

    # -------------------------------------------------------------- helpers
    def _theta_dev(self, coef, intercept):
        return self.cuda.to_device(self._theta(coef, intercept))

    def _labels_dev(self):
        self._labels()
        return self.y_dev

    def _logits_dev(self, coef, intercept, idx_dev=None):
        """(K, n_sel) device logits of the rows of the device indices ``idx_dev`` (all when None)."""
        idx_dev = self._idx(None) if idx_dev is None else idx_dev
        Zt = self._empty((self.n_classes, idx_dev.shape[0]))
        self._rowdot(idx_dev, self._theta_dev(coef, intercept), self._ones(self.n), 1.0, Zt)
        return Zt

    def _row_stats(self, Zt, y_dev):
        """(loss parts, min-margin parts, Rt, Pit) of device logits Zt (K, n_sel) with labels y_dev."""
        k = self.k
        K, n = Zt.shape
        Rt = self._empty((K, n))
        Pit = self._empty((K, n))
        nb = _blocks(n, k.TPB)
        lpart = self._empty(nb)
        mpart = self._empty(nb)
        self.mk.row_stats[nb, k.TPB](Zt, y_dev, Rt, Pit, lpart, mpart)
        return lpart, mpart, Rt, Pit

    def _host_rows(self, a):
        """(n, K) NumPy copy of a class-major (K, n) device array."""
        return np.ascontiguousarray(a.copy_to_host().T)

    def _class_major(self, a):
        """A (K, n) float64 device array of per-row class values: device arrays as they are, NumPy (n, K)
        (as ``residuals`` returns them, e.g. with replaced rows) transposed and copied."""
        if is_device_array(a) or hasattr(a, "copy_to_host"):
            return a
        return self.cuda.to_device(np.ascontiguousarray(np.asarray(a, dtype=np.float64).T))

    # ------------------------------------------------------ passes at theta
    def loss_grad(self, coef, intercept):
        """(loss, grad (P,), min margin, logits handle); min margin = min_i z_{i,y_i} - max_{k != y_i} z_ik.

        Two passes over X (logits; X~^T R^T), one copy to the host."""
        y_dev = self._labels_dev()
        k = self.k
        Zt = self._logits_dev(coef, intercept)
        lpart, mpart, Rt, Pit = self._row_stats(Zt, y_dev)
        K, p = self.n_classes, self.p
        out = self._empty(2 + K * p)  # loss sum, min margin, gradient (K, p): one copy to the host
        k.reduce_scalars[1, k.TPB](lpart, mpart, out)
        self._xtw(0, self.n, Rt, out[2:].reshape(K, p), False)
        res = out.copy_to_host()
        return float(res[0]), res[2:], float(res[1]), CudaLogits(Zt, Curvature(Rt, Pit))

    def margins(self, coef, intercept):
        """(n, K) logits."""
        return self._host_rows(self._logits_dev(coef, intercept))

    def curvature(self, margins):
        """:class:`Curvature` of device arrays (residuals R, probabilities Pi), class-major (K, n)."""
        y_dev = self._labels_dev()
        if isinstance(margins, CudaMargins):
            return margins.curvature
        Zt = self._class_major(margins)
        _, _, Rt, Pit = self._row_stats(Zt, y_dev)
        return Curvature(Rt, Pit)

    def gradients(self, coef, intercept, idx=None):
        """(n_sel, P) per-example gradients r_i (x) x~_i of rows ``idx`` (all when None)."""
        codes = self._labels()
        idx = np.arange(self.n, dtype=np.int64) if idx is None else np.ascontiguousarray(idx, dtype=np.int64)
        idx_dev = self._idx(idx)
        Zt = self._logits_dev(coef, intercept, idx_dev)
        _, _, Rt, _ = self._row_stats(Zt, self.cuda.to_device(np.ascontiguousarray(codes[idx])))
        P = self.n_params
        out = self._empty((idx.shape[0], P))
        k = self.k
        self.mk.gather_gradients[(_blocks(idx.shape[0], k.TY), _blocks(P, k.TX)), (k.TX, k.TY)](
            self.X, idx_dev, self.p, Rt, out)
        return out.copy_to_host()

    def residuals(self, curv, idx):
        """(n_sel, K) r_i of rows ``idx`` as NumPy."""
        return self._curv_host(curv, 0)[idx]

    def weights(self, curv, idx):
        """(n_sel, K) probabilities pi_i of rows ``idx`` as NumPy (W_i follows from them)."""
        return self._curv_host(curv, 1)[idx]

    # ----------------------------------------------------- curvature passes
    def hessian(self, curv, ridge):
        """(P, P) sum_i W_i (x) x~_i x~_i^T + diag(ridge): one weighted Gram per class pair a <= b."""
        K, p, k = self.n_classes, self.p, self.k
        Pit = curv.weights
        H = np.empty((self.n_params, self.n_params))
        s = self._empty(self.n)
        G = self._empty((p, p))
        zero = np.zeros(p)
        for a in range(K):
            for b in range(a + 1):
                self.mk.pair_weights[_blocks(self.n, k.TPB), k.TPB](Pit, a, b, s)
                self._gram(s, G)
                self._finish_hessian(G, zero)  # mirror the lower triangle (each block is symmetric)
                block = G.copy_to_host()
                H[a * p:(a + 1) * p, b * p:(b + 1) * p] = block
                if a != b:
                    H[b * p:(b + 1) * p, a * p:(a + 1) * p] = block.T
        H[np.diag_indices_from(H)] += np.asarray(ridge, dtype=np.float64)
        return H

    def hvp(self, curv, ridge, V):
        """(k, P) rows H v_q, all k in one pass over X (per row block: X~ V^T, W_i, X~^T)."""
        V = np.ascontiguousarray(np.atleast_2d(V), dtype=np.float64)
        kv, K, p = V.shape[0], self.n_classes, self.p
        Vd = self.cuda.to_device(V)
        V2 = Vd.reshape(kv * K, p)
        out = self._empty((kv, self.n_params))
        out2 = out.reshape(kv * K, p)
        rows = max(self.k.TX, min(self.n, BLOCK_BYTES // (8 * kv * K)))
        T = self._empty((kv * K, rows))
        idx = self._idx(None)
        ones = self._ones(self.n)
        for lo in range(0, self.n, rows):
            hi = min(self.n, lo + rows)
            Tb = T[:, : hi - lo] if hi - lo < rows else T
            self._rowdot(idx[lo:hi], V2, ones, 1.0, Tb)
            self.mk.curvature_mix[(_blocks(hi - lo, self.k.TPB), min(kv, MAX_GRID_Y)), self.k.TPB](
                curv.weights, lo, K, Tb)
            self._xtw(lo, hi, Tb, out2, lo > 0)
        grid = (_blocks(self.n_params, self.k.TX), _blocks(kv, self.k.TY))
        self.k.add_ridge[grid, (self.k.TX, self.k.TY)](self._dev(ridge), Vd, out)
        return out.copy_to_host()

    def hessian_diagonal(self, curv, ridge):
        """(P,) diag(H) = sum_i W_i[a, a] x~_ij^2 + ridge, in one pass (the Jacobi preconditioner)."""
        k, K, p = self.k, self.n_classes, self.p
        nch = max(1, min(256, _blocks(self.n, 4 * k.TX)))
        per = _blocks(self.n, nch)
        nch = _blocks(self.n, per)
        part = self._empty((nch, K, p))
        self.mk.diagonal_parts[(nch, _blocks(p, k.TX), _blocks(K, k.TY)), (k.TX, k.TY)](
            self.X, curv.weights, p, per, part)
        D = self._empty((K, p))
        self._reduce(part, nch, D, False)
        return D.copy_to_host().reshape(-1) + np.asarray(ridge, dtype=np.float64)

    # ------------------------------------------------------------ influence
    def influence(self, curv, S, idx):
        """(m, n_sel) -(s_t . g_i), g_i = r_i (x) x~_i; ``curv.residuals`` on the device, or NumPy (n, K)."""
        S = np.ascontiguousarray(np.atleast_2d(S), dtype=np.float64)
        m, K, p = S.shape[0], self.n_classes, self.p
        Rt = self._class_major(curv.residuals)
        S2 = self.cuda.to_device(S.reshape(m * K, p))
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        n_sel = idx.shape[0]
        out = np.empty((m, n_sel))
        cols = max(self.k.TX, min(max(n_sel, 1), BLOCK_BYTES // (8 * m * K)))
        T = self._empty((m * K, cols))
        ones = self._ones(self.n)
        for lo in range(0, n_sel, cols):
            hi = min(n_sel, lo + cols)
            idx_dev = self._idx(idx[lo:hi])
            Tb = T[:, : hi - lo] if hi - lo < cols else T
            Ob = self._empty((m, hi - lo))
            self._rowdot(idx_dev, S2, ones, 1.0, Tb)
            self.mk.combine_residuals[(_blocks(hi - lo, self.k.TPB), min(m, MAX_GRID_Y)), self.k.TPB](
                Tb, Rt, idx_dev, K, -1.0, Ob)
            out[:, lo:hi] = Ob.copy_to_host()
        return out

    def top_k(self, curv, S, k):
        """:class:`~fastinfl.operators.TopK` (m, k), streamed on the device (``top_k_rows``, K margins)."""
        S = np.ascontiguousarray(np.atleast_2d(S), dtype=np.float64)
        return self._top_k(self._class_major(curv.residuals),
                           self.cuda.to_device(S.reshape(S.shape[0] * self.n_classes, self.p)), k)


def _mn_kernels():
    from ..kernels import multinomial_cuda

    return multinomial_cuda


__all__ = ["CudaMultinomialOperator"]
