"""The operator layer on an NVIDIA GPU: training rows resident on the device, Numba CUDA kernels.

``CudaOperator(X, y, fit_intercept)`` keeps X (float32 or float64, as given)
and y on the device; NumPy inputs are copied there once, CuPy arrays and Numba
device arrays are used in place (no copy when C-contiguous float32/float64).
Every method returns NumPy float64 arrays (``as_device=True`` where offered
returns a Numba device array instead; ``cupy.asarray`` wraps it without a copy).

Where cuBLAS wins it is used through CuPy when CuPy is installed: the Hessian
(``sum s_i x~_i x~_i^T``) as DSYRK on sqrt(s)-scaled float64 row blocks, and
the direct solver's Cholesky (cuSOLVER) and triangular solves. Without CuPy
(and always under the CUDA simulator) the Hessian comes from the ``gram``
Numba kernel and H is factored on the host (one p x p copy).

Float64 accumulation everywhere: see ``fastinfl.kernels.cuda``.
"""

import os

import numpy as np

from .base import CGResult, Curvature, Operator, TopK, rhs_scales

EXTRA_HINT = "from a fastinfl checkout, pip install '.[cuda]'"
# Rows per block of the cuBLAS Hessian's scaled float64 copy and of the HVP's (k, rows) buffer.
BLOCK_BYTES = 1 << 28
# Target number of thread blocks of the row-reduction and grid-stride kernels (a few per SM on an H200's
# 132 SMs).
TARGET_BLOCKS = 2048
HESSIAN_IMPL = os.environ.get("FASTINFL_CUDA_HESSIAN", "auto")  # auto | syrk | gemm | numba


def require_cuda():
    """Import numba.cuda and the kernels; ImportError naming the extra when numba-cuda or a GPU is missing."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba always ships numba.cuda stubs
        raise ImportError(f"device='cuda' needs numba-cuda: {EXTRA_HINT} ({exc})") from None
    try:
        available = cuda.is_available()
    except Exception as exc:  # driver or toolkit errors
        raise ImportError(f"device='cuda' found no usable CUDA driver ({exc}); {EXTRA_HINT} "
                          "and check the NVIDIA driver") from None
    if not available:
        raise ImportError(f"device='cuda' found no CUDA GPU (numba.cuda.is_available() is False); "
                          f"it needs an NVIDIA GPU with its driver and numba-cuda: {EXTRA_HINT}")
    from ..kernels import cuda as kernels

    return cuda, kernels


def _cupy():
    """CuPy when installed and usable (never under the simulator), else None."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def is_device_array(a):
    """True for CuPy arrays, Numba device arrays and anything exporting __cuda_array_interface__."""
    return hasattr(a, "__cuda_array_interface__")


class CudaMargins:
    """Margins z_i (device) of one ``loss_grad`` call, with the Curvature computed in the same pass."""

    def __init__(self, z_dev, curvature):
        self.z_dev = z_dev
        self.curvature = curvature

    def __array__(self, dtype=None, copy=None):
        z = self.z_dev.copy_to_host()
        return z if dtype is None else z.astype(dtype)


def _blocks(n, per):
    return max(1, (n + per - 1) // per)


def _stride_blocks(size, tpb):
    """Blocks of a grid-stride pass over ``size`` values: ceil(size / tpb), at most TARGET_BLOCKS."""
    return min(TARGET_BLOCKS, _blocks(size, tpb))


class CudaRows:
    """Training rows X~ held on the GPU: what every CUDA operator shares, whatever its loss.

    Device transfer and validation of X (``_init_device``), row indices, the
    row-product (``_rowdot``: values A_t . x~_i) and row-reduction (``_xtw``:
    X~^T W^T, ``_gram``: X~^T diag(s) X~) passes, row gathers, and the host
    copies of a curvature. Needs ``n``, ``d`` and ``p`` (the length of x~) set
    by the operator's constructor after ``_init_device``.
    """

    def _init_device(self, X, name):
        """Import numba.cuda (ImportError naming the extra without it or a GPU); X on the device, checked."""
        self.cuda, self.k = require_cuda()
        self.cupy = _cupy()
        self.X = self._matrix_to_device(X, name)
        self._all_idx = None

    def _matrix_to_device(self, X, name):
        cuda = self.cuda
        if is_device_array(X):
            A = cuda.as_cuda_array(X)
            if A.ndim != 2:
                raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {A.shape}.")
            if A.dtype not in (np.float32, np.float64):
                raise ValueError(f"a device X must be float32 or float64; got {A.dtype}. "
                                 "Convert it on the device (x.astype(cupy.float64)).")
            if not A.is_c_contiguous():
                raise ValueError("a device X must be C-contiguous; copy it (cupy.ascontiguousarray).")
            if A.shape[0] == 0 or A.shape[1] == 0:
                raise ValueError(f"X is empty: shape {A.shape}.")
            nb = _stride_blocks(A.size, self.k.TPB)
            part = self._empty(nb)
            self.k.sum_squares[nb, self.k.TPB](A.reshape(A.size), part)
            if not np.isfinite(part.copy_to_host().sum()):
                raise ValueError(f"{name} contains NaN or inf, or values whose squares overflow float64 "
                                 "(checked on the device; copy it to the host for the row).")
            return A
        A = np.asarray(X)
        dtype = np.float32 if A.dtype == np.float32 else np.float64
        return cuda.to_device(np.ascontiguousarray(A, dtype=dtype))

    def _idx(self, idx):
        """Device int64 row indices; None means all rows (cached)."""
        if idx is None:
            if self._all_idx is None:
                self._all_idx = self._empty(self.n, np.int64)
                self.k.iota[_blocks(self.n, self.k.TPB), self.k.TPB](self._all_idx)
            return self._all_idx
        if is_device_array(idx):
            return self.cuda.as_cuda_array(idx)
        return self.cuda.to_device(np.ascontiguousarray(idx, dtype=np.int64))

    def _dev(self, a):
        """A float64 (..) device array of a host or device input (no copy for device float64)."""
        if is_device_array(a):
            return self.cuda.as_cuda_array(a)
        return self.cuda.to_device(np.ascontiguousarray(a, dtype=np.float64))

    def _egrid(self, rows, cols):
        """Grid of the element kernels: row blocks on x (up to 2^31 - 1), column tiles on y."""
        return (_blocks(rows, self.k.TY), _blocks(cols, self.k.TX))

    def _empty(self, shape, dtype=np.float64):
        """Uninitialised device array: from CuPy's memory pool when CuPy is there (numba's own
        allocations call cuMemAlloc / cuMemFree each time, which synchronise), else numba's."""
        if self.cupy is not None:
            return self.cuda.as_cuda_array(self.cupy.empty(shape, dtype), sync=False)
        return self.cuda.device_array(shape, dtype)

    def _host(self, a, as_device):
        return a if as_device else a.copy_to_host()

    def _rowdot(self, idx_dev, A, scale, sign, out):
        m = A.shape[0]
        kern = self.k.rowdot_for(m)
        grid = (_blocks(idx_dev.shape[0], self.k.TX), _blocks(m, kern.TT))
        kern[grid, (self.k.TX, self.k.TY)](self.X, idx_dev, self.p, A, scale, sign, out)

    def _ones(self, n):
        if getattr(self, "_ones_dev", None) is None or self._ones_dev.shape[0] < n:
            self._ones_dev = self._empty(max(n, self.n))
            self.k.fill[_blocks(self._ones_dev.shape[0], self.k.TPB), self.k.TPB](self._ones_dev, 1.0)
        return self._ones_dev

    def _curv_host(self, curv, which):
        """NumPy copy of the residuals (0) or weights (1) (rows first), made once per Curvature."""
        cache = getattr(self, "_curv_cache", None)
        if cache is None or cache[0] is not curv:
            cache = self._curv_cache = (curv, {})
        if which not in cache[1]:
            a = curv[which]
            cache[1][which] = a if isinstance(a, np.ndarray) else self._host_rows(a)
        return cache[1][which]

    def _host_rows(self, a):
        """NumPy copy of a per-row device array of the curvature (one row per training point)."""
        return a.copy_to_host()

    def _xtw(self, lo, hi, W, out, accumulate):
        """out (k, p) (+)= sum_{i in [lo, hi)} W[:, i - lo] x~_i, summed in a fixed order."""
        k = W.shape[0]
        kern = self.k.xtw_for(k)
        tiles = _blocks(self.p, self.k.TX) * _blocks(k, kern.TQ)
        rows = hi - lo
        nch = max(1, min(TARGET_BLOCKS // tiles, _blocks(rows, 4 * self.k.TX),
                         (BLOCK_BYTES // 4) // (8 * k * self.p)))
        per = _blocks(rows, nch)
        per = _blocks(per, self.k.TX) * self.k.TX
        nch = _blocks(rows, per)
        part = self._empty((nch, k, self.p))
        kern[(nch, _blocks(self.p, self.k.TX), _blocks(k, kern.TQ)), (self.k.TX, self.k.TY)](
            self.X, lo, hi, self.p, W, per, part)
        self._reduce(part, nch, out, accumulate)

    def _reduce(self, part, nch, out, accumulate):
        grid = (_blocks(out.shape[1], self.k.TX), _blocks(out.shape[0], self.k.TY))
        self.k.reduce_parts[grid, (self.k.TX, self.k.TY)](part, nch, accumulate, out)

    def _gram(self, s, out=None):
        """Device (p, p) whose lower triangle is sum_i s_i x~_i x~_i^T (``gram`` kernel, any sign of s (n,));
        the upper triangle is left as it is (``_finish_hessian`` mirrors it)."""
        k, p = self.k, self.p
        tiles = _blocks(p, k.TX) * (_blocks(p, k.TX) + 1) // 2
        nch = max(1, min(TARGET_BLOCKS // tiles, _blocks(self.n, 4 * k.TX), BLOCK_BYTES // (8 * p * p)))
        per = _blocks(_blocks(self.n, nch), k.TX) * k.TX
        nch = _blocks(self.n, per)
        part = self._empty((nch, p, p))
        k.gram[(nch, _blocks(p, k.TX), _blocks(p, k.GRAM_TA)), (k.TX, k.TY)](self.X, s, p, per, part)
        H = self._empty((p, p)) if out is None else out
        self._reduce(part, nch, H, False)
        return H

    def _finish_hessian(self, H, ridge):
        """Device H (p, p) whose lower triangle holds the sums: += diag(ridge), mirror the lower triangle."""
        k, p = self.k, self.p
        k.finish_hessian[(_blocks(p, k.TX), _blocks(p, k.TY)), (k.TX, k.TY)](H, self._dev(ridge))

    def rows(self, idx=None, as_device=False):
        """(n_sel, p) x~_i as float64."""
        idx_dev = self._idx(idx)
        out = self._empty((idx_dev.shape[0], self.p))
        grid = self._egrid(idx_dev.shape[0], self.p)
        self.k.gather_rows[grid, (self.k.TX, self.k.TY)](self.X, idx_dev, self.p, self._ones(self.n), out)
        return self._host(out, as_device)

    def _top_k(self, R, S, k):
        """:class:`TopK` (m, k) of I[t, i] = -sum_a (S[t K + a] . x~_i) R[a, i]: device residuals R (K, n) and
        s_test class parts S (m K, p) (one margin: K = 1). Streamed by ``top_k_rows`` into per-chunk heaps,
        merged on the device; slots without a point of the right sign hold -1 / NaN; ties go to the smaller
        index."""
        cuda, kern = self.cuda, self.k
        m = S.shape[0] // R.shape[0]
        ttiles = _blocks(m, kern.TOPK_TT)
        nch = max(1, min(max(1, TARGET_BLOCKS // ttiles), _blocks(self.n, 8 * kern.TX),
                         max(1, (BLOCK_BYTES // 2) // (32 * m * k))))
        per = _blocks(_blocks(self.n, nch), kern.TX) * kern.TX
        nch = _blocks(self.n, per)
        init_v = np.full((nch, m, k), np.inf)
        init_i = np.full((nch, m, k), self.n, np.int64)
        lo_v, lo_i = cuda.to_device(init_v), cuda.to_device(init_i)
        hi_v, hi_i = cuda.to_device(init_v), cuda.to_device(init_i)
        kern.top_k_rows[(nch, ttiles), (kern.TX, kern.TY)](self.X, R, self.p, S, per,
                                                            lo_v, lo_i, hi_v, hi_i)
        out = []
        for v, i in ((lo_v, lo_i), (hi_v, hi_i)):
            ov, oi = cuda.to_device(init_v[0]), cuda.to_device(init_i[0])
            kern.top_k_merge[_blocks(m, kern.TPB), kern.TPB](nch, v, i, ov, oi)
            out.append((ov.copy_to_host(), oi.copy_to_host()))
        (hv, hidx), (gv, gidx) = out
        gv = -gv
        bad_h = ~(hv < 0.0)
        bad_g = ~(gv > 0.0)
        hv[bad_h], hidx[bad_h] = np.nan, -1
        gv[bad_g], gidx[bad_g] = np.nan, -1
        return TopK(hidx, hv, gidx, gv)


class CudaOperator(CudaRows, Operator):
    """Passes over the training rows (X, y) held on the GPU.

    Parameters
    ----------
    X : (n, d) NumPy, CuPy or Numba device array, float32 kept as float32, other reals as float64
    y : (n,) labels 0/1 or None (needed by everything but ``margins`` and ``rows``): NumPy (checked on
        the host, copied once) or a device array (checked and converted to float64 on the device)
    fit_intercept : bool
        p = d + 1 (x~ = [x, 1]) when True, else p = d.
    name : str
        What errors call X ("X", "X_train", ...); the labels are "y" plus its suffix.
    """

    kind = "cuda"

    def __init__(self, X, y=None, fit_intercept=True, name="X", loss="logistic"):
        self._init_device(X, name)
        super().__init__(self.X.shape[0], self.X.shape[1], fit_intercept, self.X.dtype, y is not None, loss)
        self.n, self.d, self.p = self.n_samples, self.n_features, self.n_params
        # Labels: the float64 device copy the kernels read; the NumPy copy (``y``) is made when asked for.
        self.y_dev = None if y is None else self._labels_to_device(y, "y" + name[1:])
        self._y_host = None

    @property
    def y(self):
        """(n,) float64 NumPy labels (what the models check), copied from the device on first use, or None."""
        if self._y_host is None and self.y_dev is not None:
            self._y_host = self.y_dev.copy_to_host()
        return self._y_host

    # ---------------------------------------------------------------- inputs
    def _labels_to_device(self, y, name):
        """(n,) float64 device labels: a device y checked and converted on the device (no copy to the host
        unless it is wrong, for the error); any other y checked by ``_validation.check_labels`` and copied once.
        The device check is that of 0/1 labels: other losses check on the host."""
        from .. import _validation

        if is_device_array(y) and self.loss == "logistic":
            Y = self.cuda.as_cuda_array(y)
            if Y.ndim == 2 and Y.shape[1] == 1:
                Y = Y[:, 0]
            if Y.shape == (self.n,) and Y.dtype.kind in "biuf":
                out = self._empty(self.n)
                nb = _stride_blocks(self.n, self.k.TPB)
                part = self._empty(nb)
                self.k.labels[nb, self.k.TPB](Y, out, part)
                if part.copy_to_host().sum() == 0.0:
                    return out
            y = Y.copy_to_host()  # wrong shape, dtype or values: the host check words the error
        if is_device_array(y):
            y = self.cuda.as_cuda_array(y).copy_to_host()
        return self.cuda.to_device(_validation.check_labels(y, self.n, name, self.loss))

    def _theta(self, coef, intercept):
        theta = np.empty((1, self.p))
        theta[0, : self.d] = coef
        if self.fit_intercept:
            theta[0, self.d] = intercept
        return self.cuda.to_device(theta)

    # ------------------------------------------------------------ row passes
    def _margins_dev(self, coef, intercept, idx=None):
        idx_dev = self._idx(idx)
        z = self._empty((1, idx_dev.shape[0]))
        self._rowdot(idx_dev, self._theta(coef, intercept), self._ones(self.n), 1.0, z)
        return z.reshape(idx_dev.shape[0])

    def margins(self, coef, intercept, as_device=False):
        """(n,) z_i = x_i . coef + intercept."""
        return self._host(self._margins_dev(coef, intercept), as_device)

    def means(self, coef, intercept):
        """(n,) predicted means, from the device margins by the CPU's stable kernel."""
        from ..kernels import dense

        z = self.margins(coef, intercept)
        dense._mean(z, self.family, z)
        return z

    def losses(self, coef, intercept):
        """(n,) per-example losses, from the device margins by the CPU's stable kernel."""
        from ..kernels import dense

        self._labels()
        z = self.margins(coef, intercept)
        dense._losses(z, self.y, self.family, z)
        return z

    def residuals(self, curv, idx):
        return self._curv_host(curv, 0)[idx]

    def weights(self, curv, idx):
        return self._curv_host(curv, 1)[idx]

    def loss_grad(self, coef, intercept):
        """(sum of losses, gradient (p,) without L2, min signed margin, margins handle), two passes over X."""
        self._labels()
        k = self.k
        z = self._margins_dev(coef, intercept)
        r = self._empty(self.n)
        s = self._empty(self.n)
        nb = _blocks(self.n, k.TPB)
        lpart = self._empty(nb)
        mpart = self._empty(nb)
        k.loss_terms[nb, k.TPB](z, self.y_dev, self.family, r, s, lpart, mpart)
        out = self._empty(2 + self.p)  # loss sum, min margin, gradient: one copy to the host
        k.reduce_scalars[1, k.TPB](lpart, mpart, out)
        self._xtw(0, self.n, r.reshape(1, self.n), out[2:].reshape(1, self.p), False)
        res = out.copy_to_host()
        return float(res[0]), res[2:], float(res[1]), CudaMargins(z, Curvature(r, s))

    def _labels(self):
        if self.y_dev is None:
            raise ValueError("labels are required for this quantity: pass y with X.")
        return self.y_dev

    def curvature(self, margins):
        """:class:`Curvature` of device arrays (residuals r, weights s) at the margins of ``loss_grad``."""
        self._labels()
        if isinstance(margins, CudaMargins):
            return margins.curvature
        z = self._dev(margins)
        r = self._empty(self.n)
        s = self._empty(self.n)
        self.k.residuals_weights[_blocks(self.n, self.k.TPB), self.k.TPB](z, self.y_dev, self.family, r, s)
        return Curvature(r, s)

    # --------------------------------------------------------------- Hessian
    def _hessian_impl(self):
        if HESSIAN_IMPL != "auto":
            return HESSIAN_IMPL
        return "syrk" if self.cupy is not None else "numba"

    def hessian_device(self, curv, ridge):
        """(p, p) H = sum_i s_i x~_i x~_i^T + diag(ridge) as a device array (CuPy when cuBLAS is used)."""
        impl = self._hessian_impl()
        p = self.p
        if impl == "numba":
            H = self._gram(curv.weights)
            self._finish_hessian(H, ridge)
            return H
        cp = self.cupy
        H = cp.zeros((p, p))
        rows = max(1, min(self.n, BLOCK_BYTES // (8 * p)))
        B = cp.empty((rows, p))
        Bn = self.cuda.as_cuda_array(B)
        for lo in range(0, self.n, rows):
            hi = min(self.n, lo + rows)
            self.k.scaled_rows[self._egrid(hi - lo, p), (self.k.TX, self.k.TY)](
                self.X, lo, hi, curv.weights, p, Bn)
            Bb = B[: hi - lo]
            if impl == "syrk":
                try:
                    cp.cublas.syrk("T", Bb, out=H, alpha=1.0, beta=1.0, lower=True)
                except (AttributeError, TypeError, ValueError):  # a CuPy without cublas.syrk
                    impl = "gemm"
                    H = cp.tril(H)
                    H = H + cp.tril(H, -1).T
            if impl == "gemm":
                H += Bb.T @ Bb
        if impl == "syrk":  # one triangle written, the other still zero (whichever CuPy's order maps to)
            H = H + H.T - cp.diag(cp.diag(H))
        H += cp.diag(cp.asarray(ridge, dtype=cp.float64))
        return H

    def hessian(self, curv, ridge):
        """(p, p) NumPy H = sum_i s_i x~_i x~_i^T + diag(ridge)."""
        H = self.hessian_device(curv, ridge)
        return H.get() if hasattr(H, "get") and not hasattr(H, "copy_to_host") else H.copy_to_host()

    def factor(self, curv, ridge):
        """Cholesky factor of H: on the device with CuPy (cuSOLVER), else on the host. ``.solve(B)``."""
        from .. import exceptions

        H = self.hessian_device(curv, ridge)
        return CudaCholesky(self, H, exceptions.SingularHessianError)

    # ------------------------------------------------------------------- HVP
    def _hvp_dev(self, curv, ridge_dev, V, out):
        """out (k, p) = H V (rows), V device (k, p): per row block T = s * (X~ V^T)^T, then X~^T T."""
        k = V.shape[0]
        rows = max(self.k.TX, min(self.n, BLOCK_BYTES // (8 * k)))
        T = self._empty((k, rows))
        idx = self._idx(None)
        for lo in range(0, self.n, rows):
            hi = min(self.n, lo + rows)
            Tb = T[:, : hi - lo]
            self._rowdot(idx[lo:hi], V, curv.weights, 1.0, Tb)
            self._xtw(lo, hi, Tb, out, lo > 0)
        grid = (_blocks(self.p, self.k.TX), _blocks(k, self.k.TY))
        self.k.add_ridge[grid, (self.k.TX, self.k.TY)](ridge_dev, V, out)

    def hvp(self, curv, ridge, V, as_device=False):
        """(k, p) rows H v_q for V (k, p), H = sum_i s_i x~_i x~_i^T + diag(ridge)."""
        V = self._dev(np.atleast_2d(V) if not is_device_array(V) else V)
        out = self._empty(V.shape)
        self._hvp_dev(curv, self._dev(ridge), V, out)
        return self._host(out, as_device)

    def cg(self, curv, ridge, B, tol, max_iter):
        """Batched CG on the device: (X (k, p), n_iter (k,), resid (k,), status (k,)) as ``kernels/cg.py``.

        Each right-hand side has its own step sizes and stops on its own (status
        CONVERGED, MAX_ITER, NOT_POSITIVE). Per iteration one HVP pass over X for
        all k columns and one update kernel; only the (k,) status vector comes
        back to the host (to stop once every column is done).
        """
        kern = self.k
        scale = rhs_scales(B) if isinstance(B, np.ndarray) else None  # exact: see operators.base.rhs_scales
        Bd = self._dev(B if scale is None else np.asarray(B, dtype=np.float64) * scale[:, None])
        k, p = Bd.shape
        X = self._empty((k, p))
        R = self._empty((k, p))
        P = self._empty((k, p))
        HP = self._empty((k, p))
        rs = self._empty(k)
        bnorm = self._empty(k)
        n_iter = self._empty(k, np.int64)
        resid = self._empty(k)
        status = self._empty(k, np.int64)
        ridge_dev = self._dev(ridge)
        kern.cg_init[k, kern.TPB](Bd, R, P, X, rs, bnorm, n_iter, resid, status)
        st = status.copy_to_host()
        for _ in range(max_iter):
            if not (st == kern.RUNNING).any():
                break
            self._hvp_dev(curv, ridge_dev, P, HP)
            kern.cg_step[k, kern.TPB](P, HP, X, R, rs, bnorm, float(tol), n_iter, resid, status)
            st = status.copy_to_host()
        st = np.where(st == kern.RUNNING, kern.MAX_ITER, st)
        x = X.copy_to_host()
        return CGResult(x if scale is None else x / scale[:, None], n_iter.copy_to_host(), resid.copy_to_host(), st)

    # ------------------------------------------------------------ influence
    def gradients(self, coef, intercept, idx=None, as_device=False):
        """(n_sel, p) per-example loss gradients r_i x~_i at (coef, intercept)."""
        idx_dev = self._idx(idx)
        z = self._margins_dev(coef, intercept, idx)
        out = self._empty((idx_dev.shape[0], self.p))
        grid = self._egrid(idx_dev.shape[0], self.p)
        self.k.gather_residuals[grid, (self.k.TX, self.k.TY)](self.X, idx_dev, self.p, z, self.y_dev, self.family,
                                                              out)
        return self._host(out, as_device)

    def influence(self, curv, S, idx=None, as_device=False):
        """(m, n_sel) I[t, c] = -(S_t . x~_i) r_i, i = idx[c]; S (m, p) s_test rows (host or device)."""
        S = self._dev(S)
        idx_dev = self._idx(idx)
        out = self._empty((S.shape[0], idx_dev.shape[0]))
        self._rowdot(idx_dev, S, curv.residuals, -1.0, out)
        return self._host(out, as_device)

    def top_k(self, curv, S, k):
        """Per test row the k most helpful (ascending I < 0) and most harmful (descending I > 0) rows.

        Returns a :class:`TopK` of (m, k) arrays; a slot
        without a point of the right sign has index -1 and value NaN. Ties go to
        the smaller index. Memory O(chunks * m * k), never the (m, n) matrix.
        """
        return self._top_k(curv.residuals.reshape(1, self.n), self._dev(S), k)


class CudaCholesky:
    """Cholesky factor of a device H: cuSOLVER through CuPy, else scipy on a host copy."""

    def __init__(self, op, H, error):
        self.op = op
        cp = op.cupy
        if cp is not None:
            import cupyx.scipy.linalg

            H = cp.asarray(H)
            self._solve_tri = cupyx.scipy.linalg.solve_triangular
            try:
                L = cp.linalg.cholesky(H)
            except np.linalg.LinAlgError:
                L = cp.full_like(H, cp.nan)
            if not bool(cp.isfinite(L).all()):
                raise error("the Hessian is not positive definite (Cholesky failed on the device): "
                            "add damping > 0 or fit with l2 > 0.")
            self.L = L
            self.on_device = True
        else:
            import scipy.linalg

            Hh = H.copy_to_host()
            try:
                self.L = scipy.linalg.cho_factor(Hh, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                raise error("the Hessian is not positive definite: add damping > 0 or fit with l2 > 0.") from None
            self.on_device = False

    def solve(self, B, as_device=False):
        """H^-1 applied to the rows of B (k, p)."""
        if self.on_device:
            cp = self.op.cupy
            Bd = cp.asarray(B, dtype=cp.float64)
            Y = self._solve_tri(self.L, Bd.T, lower=True)
            Xs = self._solve_tri(self.L, Y, lower=True, trans="T").T
            Xs = cp.ascontiguousarray(Xs)
            return Xs if as_device else Xs.get()
        import scipy.linalg

        Bh = B.copy_to_host() if hasattr(B, "copy_to_host") else np.asarray(B, dtype=np.float64)
        Xs = scipy.linalg.cho_solve(self.L, Bh.T, check_finite=False).T
        return self.op.cuda.to_device(np.ascontiguousarray(Xs)) if as_device else np.ascontiguousarray(Xs)


__all__ = ["CudaCholesky", "CudaOperator", "CudaRows", "require_cuda", "is_device_array"]
