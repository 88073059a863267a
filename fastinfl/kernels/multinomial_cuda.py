"""Numba CUDA kernels of the multinomial (softmax) loss: only what the one-margin kernels cannot do.

Imported with ``fastinfl.kernels.cuda`` (only when ``device="cuda"`` is asked
for). The passes over X are those of ``kernels/cuda.py`` (``rowdot``: the K
logits or K projections of each row; ``xtw``: X~^T of per-row class values;
``gram``: weighted Grams; ``top_k_rows``: K margins); the kernels here work per
row on the K class values, never on X.

Layout: per-row class values are class-major device arrays (K, n) (``Zt``
logits, ``Rt`` residuals pi_i - e_{y_i}, ``Pit`` probabilities), so that a
class's values are contiguous in the rows, as ``rowdot`` writes them and
``xtw`` reads them. Curvature blocks are formed as on the CPU
(``kernels/multinomial.py``): W_i = diag(pi_i (sum_k pi_ik)) - pi_i pi_i^T,
diagonal entries pi_ia times the sum of the other classes (no cancellation).
Float64 throughout.
"""

import math

from numba import cuda, float64

from .cuda import TPB


@cuda.jit
def row_stats(Zt, y, Rt, Pit, loss_part, mmin_part):
    """Softmax derivatives of every row's logits Zt[:, i] (K, n) with label y[i] (int64 codes).

    Rt = pi - e_y (pi_y - 1 as minus the sum of the other classes), Pit = softmax;
    per block of TPB rows the sum of the losses -log pi_y and the min margin
    z_y - max_{k != y} z_k (``reduce_scalars`` finishes both). Arithmetic as the
    CPU's ``_row_stats``. 1-D grid of TPB threads.
    """
    sl = cuda.shared.array(TPB, float64)
    sm = cuda.shared.array(TPB, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x * TPB + tid
    loss = 0.0
    mm = math.inf
    if i < Zt.shape[1]:
        K = Zt.shape[0]
        yi = y[i]
        top = 0
        for k in range(1, K):
            if Zt[k, i] > Zt[top, i]:
                top = k
        m = Zt[top, i]
        s = 0.0
        s_other_top = 0.0
        s_other_y = 0.0
        other = -math.inf
        for k in range(K):
            e = math.exp(Zt[k, i] - m)
            Pit[k, i] = e
            s += e
            if k != top:
                s_other_top += e
            if k != yi:
                s_other_y += e
                if Zt[k, i] > other:
                    other = Zt[k, i]
        for k in range(K):
            pk = Pit[k, i] / s
            Pit[k, i] = pk
            Rt[k, i] = pk
        Rt[yi, i] = -s_other_y / s
        loss = (m - Zt[yi, i]) + math.log1p(s_other_top)
        mm = Zt[yi, i] - other
    sl[tid] = loss
    sm[tid] = mm
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            sl[tid] += sl[tid + step]
            sm[tid] = min(sm[tid], sm[tid + step])
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        loss_part[cuda.blockIdx.x] = sl[0]
        mmin_part[cuda.blockIdx.x] = sm[0]


@cuda.jit
def curvature_mix(Pit, lo, K, T):
    """T[q K + a, c] <- (W_i t)_a = pi_ia (S_i t_a - pi_i . t), t = T[q K : (q + 1) K, c], i = lo + c.

    The middle of an HVP: T (k K, rows) holds the K projections x~_i . v_q[a] of
    rows [lo, lo + rows) for each vector q (as ``rowdot`` writes them); S_i is
    the sum of pi_i (1, or sqrt(s_i) for a weighted row). In place. Grid
    (ceil(rows / TPB), min(k, 65535)), TPB threads (vectors grid-strided on y).
    """
    c = cuda.blockIdx.x * TPB + cuda.threadIdx.x
    if c < T.shape[1]:
        i = lo + c
        tot = 0.0
        for a in range(K):
            tot += Pit[a, i]
        for q in range(cuda.blockIdx.y, T.shape[0] // K, cuda.gridDim.y):  # k may pass the grid's 65535
            dot = 0.0
            for a in range(K):
                dot += Pit[a, i] * T[q * K + a, c]
            for a in range(K):
                T[q * K + a, c] = Pit[a, i] * (tot * T[q * K + a, c] - dot)


@cuda.jit
def pair_weights(Pit, a, b, out):
    """out[i] = W_i[a, b]: pi_ia times the sum of the other classes for a == b, else -pi_ia pi_ib.

    1-D grid.
    """
    i = cuda.grid(1)
    if i < out.shape[0]:
        pa = Pit[a, i]
        if a == b:
            rest = 0.0
            for k in range(Pit.shape[0]):
                if k != a:
                    rest += Pit[k, i]
            out[i] = pa * rest
        else:
            out[i] = -pa * Pit[b, i]


@cuda.jit
def diagonal_parts(X, Pit, p, rows_per_chunk, part):
    """part[c, a, j] = sum over rows i of chunk c of W_i[a, a] x~_ij^2 (the Jacobi diagonal of H).

    Grid (n_chunks, ceil(p / TX), ceil(K / TY)), block (TX, TY): thread (tx, ty)
    sums column j = tile + tx of class a = tile + ty (consecutive threads read
    consecutive columns of a row); ``reduce_parts`` adds the chunks in order.
    """
    n = X.shape[0]
    d = X.shape[1]
    K = Pit.shape[0]
    j = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    a = cuda.blockIdx.z * cuda.blockDim.y + cuda.threadIdx.y
    c = cuda.blockIdx.x
    if j >= p or a >= K:
        return
    r_lo = c * rows_per_chunk
    r_hi = min(n, r_lo + rows_per_chunk)
    acc = 0.0
    for i in range(r_lo, r_hi):
        x = 1.0
        if j < d:
            x = float64(X[i, j])
        rest = 0.0
        for k in range(K):
            if k != a:
                rest += Pit[k, i]
        acc += Pit[a, i] * rest * x * x
    part[c, a, j] = acc


@cuda.jit
def combine_residuals(T, Rt, idx, K, sign, out):
    """out[t, c] = sign * sum_a T[t K + a, c] Rt[a, idx[c]]: per-row class dot products (s_t[a] . x~_i, from
    ``rowdot``) weighted by the residuals: the influence -(s_t . g_i) with sign = -1. Grid (ceil(n_sel / TPB),
    min(m, 65535)), test points grid-strided on y."""
    c = cuda.blockIdx.x * TPB + cuda.threadIdx.x
    if c < T.shape[1]:
        i = idx[c]
        for t in range(cuda.blockIdx.y, out.shape[0], cuda.gridDim.y):  # m may pass the grid's 65535
            acc = 0.0
            for a in range(K):
                acc += T[t * K + a, c] * Rt[a, i]
            out[t, c] = sign * acc


@cuda.jit
def gather_gradients(X, idx, p, Rt, out):
    """out[c, a p + j] = Rt[a, c] x~_idx[c], j: per-example gradients r_i (x) x~_i.

    Rt (K, n_sel) holds the residuals of the selected rows. Grid (ceil(n_sel / TY), ceil(K p / TX)),
    block (TX, TY).
    """
    c = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    col = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    K = Rt.shape[0]
    if c < idx.shape[0] and col < K * p:
        a = col // p
        j = col - a * p
        i = idx[c]
        x = 1.0
        if j < X.shape[1]:
            x = float64(X[i, j])
        out[c, col] = Rt[a, c] * x
