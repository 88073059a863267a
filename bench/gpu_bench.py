"""GPU measurement (issue 17): fastinfl's CUDA operator against a 20-line PyTorch script, and the CPU path's thread scaling.

Run from a checkout root on a machine with an NVIDIA GPU, CuPy and PyTorch::

    PYTHONUNBUFFERED=1 python -m bench.gpu_bench --out OUTDIR       # about 4-5 minutes on an H200
    NUMBA_ENABLE_CUDASIM=1 python -m bench.gpu_bench --small        # smoke test without a GPU (no torch/cupy)

Jobs (influence from given parameters: weights, Hessian, Cholesky, full (m, n) influence matrix)
(n, d, m) = (10^5, 100, 100), (10^6, 100, 10), (2 10^5, 1000, 10), (10^7, 100, 10) in float64 and
float32; top_k (k = 10) of 1000 test points on 10^7 x 100; the Newton fit on 10^7 x 100. Data are
generated on the device; the GPU timings start with X, y already there (as the PyTorch script's).
Every GPU time is the median of ``--repeat`` runs after one warm-up, between device synchronisations.
The table goes to OUTDIR/gpu_bench.md as it grows (a run cut short keeps what it measured).
"""

import argparse
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

L2 = 1.0
JOBS = [(100_000, 100, 100), (1_000_000, 100, 10), (200_000, 1000, 10), (10_000_000, 100, 10)]
SMALL_JOBS = [(300, 5, 3), (200, 12, 2)]


class Report:
    def __init__(self, out):
        self.path = Path(out) / "gpu_bench.md" if out else None
        self.lines = []

    def __call__(self, line=""):
        print(line, flush=True)
        self.lines.append(line)
        if self.path:
            self.path.write_text("\n".join(self.lines) + "\n")


def sync():
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        cuda.synchronize()


def timed(fn, repeat):
    """(median seconds, last result) over ``repeat`` runs after one warm-up, synchronised."""
    out = fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


# ------------------------------------------------------------------ data
def make_data(n, d, dtype, seed):
    """X (n, d), y (n,), coef (d,), intercept on the device (CuPy), or NumPy under the simulator."""
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal(d) / np.sqrt(d)
    b = 0.25
    try:
        import cupy as cp
    except ImportError:
        cp = None
    if cp is None or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        X = rng.standard_normal((n, d)).astype(dtype)
        z = X.astype(np.float64) @ coef + b
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float64)
        return X, y, coef, b
    g = cp.random.default_rng(seed)
    X = g.standard_normal((n, d), dtype=np.float32 if dtype == np.float32 else np.float64)
    z = X.astype(cp.float64) @ cp.asarray(coef) + b if dtype == np.float32 else X @ cp.asarray(coef) + b
    y = (g.random(n) < 1 / (1 + cp.exp(-z))).astype(cp.float64)
    del z
    return X, y, coef, b


def ridge_of(d):
    return np.append(np.full(d, L2), 0.0)


# ------------------------------------------------------------- fastinfl GPU
def fastinfl_influence(X, y, Xte, yte, coef, b, as_device=True):
    """Influence(device='cuda') from given parameters: operator setup (validation pass), loss/gradient
    and weights, Hessian, Cholesky, s_test, full influence matrix."""
    from fastinfl.operators.cuda import CudaOperator

    op = CudaOperator(X, y, True)
    _, _, _, h = op.loss_grad(coef, b)
    curv = op.curvature(h)
    chol = op.factor(curv, ridge_of(X.shape[1]))
    G = CudaOperator(Xte, yte, True).gradients(coef, b, as_device=True)
    S = chol.solve(G, as_device=True)
    return op.influence(curv, S, as_device=as_device)


def fastinfl_influence_stages(X, y, Xte, yte, coef, b):
    """The same pipeline with a device synchronisation after each stage: ms per stage."""
    from fastinfl.operators.cuda import CudaOperator

    marks = [time.perf_counter()]

    def mark():
        sync()
        marks.append(time.perf_counter())

    op = CudaOperator(X, y, True)
    mark()
    _, _, _, h = op.loss_grad(coef, b)
    curv = op.curvature(h)
    mark()
    H = op.hessian_device(curv, ridge_of(X.shape[1]))
    mark()
    from fastinfl.operators.cuda import CudaCholesky
    from fastinfl.exceptions import SingularHessianError

    chol = CudaCholesky(op, H, SingularHessianError)
    mark()
    G = CudaOperator(Xte, yte, True).gradients(coef, b, as_device=True)
    S = chol.solve(G, as_device=True)
    mark()
    op.influence(curv, S, as_device=True)
    mark()
    return [1e3 * (b_ - a_) for a_, b_ in zip(marks[:-1], marks[1:])]


def fastinfl_top_k(X, y, Xte, yte, coef, b, k):
    from fastinfl.operators.cuda import CudaOperator

    op = CudaOperator(X, y, True)
    _, _, _, h = op.loss_grad(coef, b)
    curv = op.curvature(h)
    chol = op.factor(curv, ridge_of(X.shape[1]))
    G = CudaOperator(Xte, yte, True).gradients(coef, b, as_device=True)
    S = chol.solve(G, as_device=True)
    return op.top_k(curv, S, k)


def fastinfl_fit(X, y, tol=1e-10, max_iter=50):
    """Newton's method of LogisticRegression.fit, on the CUDA operator (same steps, line search, stop rule)."""
    import scipy.linalg

    from fastinfl.operators.cuda import CudaOperator

    op = CudaOperator(X, y, True)
    n, d = op.n, op.d
    ridge = ridge_of(d)
    theta = np.zeros(d + 1)

    def evaluate(t):
        loss, g, _, h = op.loss_grad(t[:d], t[d])
        g[:d] += L2 * t[:d]
        return loss + 0.5 * L2 * t[:d] @ t[:d], g, h

    F, g, h = evaluate(theta)
    for it in range(max_iter):
        if np.max(np.abs(g)) <= tol * n:
            break
        H = op.hessian(op.curvature(h), ridge)
        step = -scipy.linalg.cho_solve(scipy.linalg.cho_factor(H, lower=True), g)
        t = 1.0
        for _ in range(60):
            F2, g2, h2 = evaluate(theta + t * step)
            if F2 <= F + 1e-4 * t * (g @ step) + 8 * np.finfo(float).eps * abs(F):
                break
            t *= 0.5
        theta = theta + t * step
        F, g, h = F2, g2, h2
    return theta, it


# ------------------------------------------------------------------ PyTorch
def torch_influence(X, y, Xte, yte, coef, b):
    """The twenty-line PyTorch script: data on the device, everything in X's dtype."""
    import torch

    n, d = X.shape
    w = torch.as_tensor(coef, dtype=X.dtype, device=X.device)
    ridge = torch.as_tensor(ridge_of(d), dtype=X.dtype, device=X.device)
    ones = torch.ones(n, 1, dtype=X.dtype, device=X.device)
    q = torch.sigmoid(X @ w + b)
    s, r = q * (1 - q), q - y
    A = torch.cat([X, ones], 1) * s.sqrt()[:, None]
    H = A.T @ A + torch.diag(ridge)
    L = torch.linalg.cholesky(H)
    qt = torch.sigmoid(Xte @ w + b)
    Gt = (qt - yte)[:, None] * torch.cat([Xte, torch.ones(Xte.shape[0], 1, dtype=X.dtype, device=X.device)], 1)
    S = torch.cholesky_solve(Gt.T, L).T
    return -(S[:, :d] @ X.T + S[:, d:]) * r[None, :]


def torch_top_k(X, y, Xte, yte, coef, b, k, block=1 << 18):
    """The script with its final GEMM in row blocks, torch.topk per block, then over the candidates."""
    import torch

    n, d = X.shape
    w = torch.as_tensor(coef, dtype=X.dtype, device=X.device)
    ridge = torch.as_tensor(ridge_of(d), dtype=X.dtype, device=X.device)
    q = torch.sigmoid(X @ w + b)
    s, r = q * (1 - q), q - y
    A = torch.cat([X, torch.ones(n, 1, dtype=X.dtype, device=X.device)], 1) * s.sqrt()[:, None]
    H = A.T @ A + torch.diag(ridge)
    del A
    L = torch.linalg.cholesky(H)
    qt = torch.sigmoid(Xte @ w + b)
    Gt = (qt - yte)[:, None] * torch.cat([Xte, torch.ones(Xte.shape[0], 1, dtype=X.dtype, device=X.device)], 1)
    S = torch.cholesky_solve(Gt.T, L).T
    lo_v, lo_i, hi_v, hi_i = [], [], [], []
    for lo in range(0, n, block):
        I = -(S[:, :d] @ X[lo:lo + block].T + S[:, d:]) * r[None, lo:lo + block]
        v, i = torch.topk(I, k, dim=1, largest=False)
        lo_v.append(v), lo_i.append(i + lo)
        v, i = torch.topk(I, k, dim=1, largest=True)
        hi_v.append(v), hi_i.append(i + lo)
    v, j = torch.topk(torch.cat(lo_v, 1), k, dim=1, largest=False)
    hv, hj = torch.topk(torch.cat(hi_v, 1), k, dim=1, largest=True)
    return v, torch.gather(torch.cat(lo_i, 1), 1, j), hv, torch.gather(torch.cat(hi_i, 1), 1, hj)


def torch_fit(X, y, n_iter):
    """Newton's method in PyTorch with the same number of iterations as fastinfl's fit (float64)."""
    import torch

    n, d = X.shape
    Xt = torch.cat([X, torch.ones(n, 1, dtype=X.dtype, device=X.device)], 1)
    ridge = torch.as_tensor(ridge_of(d), dtype=X.dtype, device=X.device)
    theta = torch.zeros(d + 1, dtype=X.dtype, device=X.device)

    def evaluate(t):
        z = Xt @ t
        F = torch.nn.functional.softplus(z).sum() - y @ z + 0.5 * L2 * (t[:d] @ t[:d])
        g = Xt.T @ (torch.sigmoid(z) - y) + ridge * t
        return F, g, z

    F, g, z = evaluate(theta)
    for _ in range(n_iter):
        q = torch.sigmoid(z)
        A = Xt * (q * (1 - q)).sqrt()[:, None]
        H = A.T @ A + torch.diag(ridge)
        step = -torch.cholesky_solve(g[:, None], torch.linalg.cholesky(H))[:, 0]
        t = 1.0
        for _ in range(60):
            F2, g2, z2 = evaluate(theta + t * step)
            if F2 <= F + 1e-4 * t * (g @ step):
                break
            t *= 0.5
        theta, F, g, z = theta + t * step, F2, g2, z2
    return theta


# ------------------------------------------------------------------- checks
def check_small(rep, dtypes, n=2000, d=20):
    """CudaOperator against the CPU kernels on n x d (every quantity); max relative errors."""
    from fastinfl.operators import as_operator
    from fastinfl.operators.cuda import CudaOperator

    rep(f"### Agreement with the CPU path ({n} x {d}, fit_intercept, random parameters; max relative error)")
    rep("")
    rep("| dtype | loss | grad | H (syrk / gemm / numba) | hvp k=3 | cg k=4 | influence | top_k idx equal | gradients |")
    rep("|---|---:|---:|---|---:|---:|---:|---|---:|")
    import fastinfl.operators.cuda as opmod

    for dtype in dtypes:
        rng = np.random.default_rng(1)
        X = rng.standard_normal((n, d)).astype(dtype)
        y = (rng.random(n) < 0.4).astype(np.float64)
        coef, b = rng.standard_normal(d) * 0.2, 0.1
        ridge = ridge_of(d)
        cpu = as_operator(X, y)
        loss_c, g, _, z = cpu.loss_grad(coef, b)
        cc = cpu.curvature(z)
        r = np.asarray(cc.residuals)
        Hc = cpu.hessian(cc, ridge)
        Xt = np.hstack([X.astype(np.float64), np.ones((n, 1))])

        def rel(a, ref):
            return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))

        op = CudaOperator(X, y, True)
        loss, grad, _, h = op.loss_grad(coef, b)
        curv = op.curvature(h)
        hs = []
        saved = opmod.HESSIAN_IMPL
        for impl in ("syrk", "gemm", "numba"):
            if impl != "numba" and op.cupy is None:
                hs.append("n/a")
                continue
            opmod.HESSIAN_IMPL = impl
            hs.append(f"{rel(op.hessian(curv, ridge), Hc):.1e}")
        opmod.HESSIAN_IMPL = saved
        V = rng.standard_normal((3, d + 1))
        B = rng.standard_normal((4, d + 1))
        Xs, _, _, st = op.cg(curv, ridge, B, 1e-12, 200)
        S = rng.standard_normal((5, d + 1))
        Iref = -(S @ Xt.T) * r
        tk = op.top_k(curv, S, 5)
        same = bool((tk.helpful_idx == np.argsort(Iref, axis=1, kind="stable")[:, :5]).all()
                    and (tk.harmful_idx == np.argsort(-Iref, axis=1, kind="stable")[:, :5]).all())
        G = cpu.gradients(coef, b)
        rep(f"| {np.dtype(dtype).name} | {abs(loss - loss_c) / loss_c:.1e} | {rel(grad, g):.1e} | "
            f"{' / '.join(hs)} | {rel(op.hvp(curv, ridge, V), V @ Hc):.1e} | "
            f"{rel(Xs, np.linalg.solve(Hc, B.T).T):.1e} | {rel(op.influence(curv, S), Iref):.1e} | {same} | "
            f"{rel(op.gradients(coef, b), G):.1e} |")
    rep("")


# ------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--small", action="store_true", help="tiny sizes (simulator / smoke test)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="2,4,8,16", help="CPU thread counts (float64 jobs)")
    ap.add_argument("--budget", type=float, default=280.0, help="seconds after which CPU runs are skipped")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true", help="CPU section only (script test without a GPU)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rep = Report(args.out)
    sim = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    jobs = SMALL_JOBS if args.small else JOBS
    topk_n, topk_m, fit_n = (400, 5, 300) if args.small else (10_000_000, 1000, 10_000_000)
    try:
        import torch
    except ImportError:
        torch = None
    if sim:
        torch = None
    try:
        import cupy as cp
    except ImportError:
        cp = None

    rep("## GPU benchmark (`python -m bench.gpu_bench`)")
    rep("")
    smi = "nvidia-smi not found"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        pass
    import numba

    vers = [f"Python {platform.python_version()}", f"numba {numba.__version__}"]
    try:
        import numba_cuda

        vers.append(f"numba-cuda {numba_cuda.__version__}")
    except Exception:
        pass
    if cp is not None:
        vers.append(f"cupy {cp.__version__}")
    if torch is not None:
        vers.append(f"torch {torch.__version__}")
    rep(f"GPU: {smi}; CPU: {os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
        + ", ".join(vers) + (" (CUDA SIMULATOR)" if sim else ""))
    rep("")

    gpu_times = {}
    if not args.skip_gpu:
        run_gpu(args, rep, sim, jobs, topk_n, topk_m, fit_n, torch, cp, gpu_times)
    if not args.skip_cpu:
        run_cpu(args, rep, jobs, topk_n, topk_m, fit_n, gpu_times, t_start)
    rep("")
    rep(f"Total wall time of this run: {time.perf_counter() - t_start:.0f} s")


def run_gpu(args, rep, sim, jobs, topk_n, topk_m, fit_n, torch, cp, gpu_times):
    check_small(rep, (np.float64, np.float32), *((150, 5) if args.small else (2000, 20)))

    # ---------------------------------------------------------- GPU jobs
    rep("### Influence from given parameters (full (m, n) matrix left on the device)")
    rep("")
    rep("fastinfl: `CudaOperator` setup (device finiteness pass) + loss/gradient/weights + Hessian "
        "(cuBLAS DSYRK on sqrt(s)-scaled float64 blocks) + Cholesky (cuSOLVER) + s_test + influence kernel. "
        "PyTorch: the script (sigmoid, A.T @ A, Cholesky, one GEMM), in X's dtype. "
        "`to host`: fastinfl with the matrix copied to a NumPy array.")
    rep("")
    rep("| n | d | m | dtype | fastinfl GPU (ms) | PyTorch (ms) | fastinfl / PyTorch | fastinfl GPU + to host (ms) "
        "| max rel. diff vs PyTorch | stages, synchronised (ms): setup / loss+grad+weights / Hessian / Cholesky "
        "/ s_test / influence |")
    rep("|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for dtype in (np.float64, np.float32):
        for (n, d, m) in jobs:
            try:
                X, y, coef, b = make_data(n, d, dtype, seed=n + d)
                Xte, yte = X[:m].copy(), y[:m].copy()
                t_f, I_f = timed(lambda: fastinfl_influence(X, y, Xte, yte, coef, b), args.repeat)
                t_h, _ = timed(lambda: fastinfl_influence(X, y, Xte, yte, coef, b, as_device=False), 1)
                t_t, diff = float("nan"), float("nan")
                if torch is not None:
                    Xg, yg = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.as_tensor(X).dtype)
                    Xtg, ytg = torch.as_tensor(Xte), torch.as_tensor(yte, dtype=Xg.dtype)
                    t_t, I_t = timed(lambda: torch_influence(Xg, yg, Xtg, ytg, coef, b), args.repeat)
                    I_fd = torch.as_tensor(cp.asarray(I_f)) if cp is not None else None
                    diff = float((I_fd - I_t.double()).abs().max() / I_t.double().abs().max())
                    del I_t, I_fd
                gpu_times[(n, d, m, np.dtype(dtype).name)] = t_f
                st = fastinfl_influence_stages(X, y, Xte, yte, coef, b)
                rep(f"| {n:.0e} | {d} | {m} | {np.dtype(dtype).name} | {1e3 * t_f:.2f} | {1e3 * t_t:.2f} | "
                    f"{t_f / t_t:.2f} | {1e3 * t_h:.2f} | {diff:.1e} | " + "/".join(f"{x:.2f}" for x in st) + " |")
                del X, y, Xte, yte, I_f
                if cp is not None:
                    cp.get_default_memory_pool().free_all_blocks()
            except Exception as exc:  # keep measuring the rest
                rep(f"| {n} | {d} | {m} | {np.dtype(dtype).name} | FAILED: {type(exc).__name__}: {exc} |")
    rep("")

    # top-k and fit
    rep("### top_k (k = 10) and the fit")
    rep("")
    rep("| job | fastinfl GPU (ms) | PyTorch (ms) | fastinfl / PyTorch | agreement |")
    rep("|---|---:|---:|---:|---|")
    for dtype in (np.float64, np.float32):
        try:
            X, y, coef, b = make_data(topk_n, 100 if not args.small else 10, dtype, seed=7)
            Xte, yte = X[:topk_m].copy(), y[:topk_m].copy()
            t_f, tk = timed(lambda: fastinfl_top_k(X, y, Xte, yte, coef, b, 10), 1 if not args.small else 1)
            t_t, agree = float("nan"), ""
            if torch is not None:
                Xg = torch.as_tensor(X)
                yg, Xtg, ytg = (torch.as_tensor(a, dtype=Xg.dtype) for a in (y, Xte, yte))
                t_t, tt = timed(lambda: torch_top_k(Xg, yg, Xtg, ytg, coef, b, 10), 1)
                same_h = float((tk.helpful_idx == tt[1].cpu().numpy()).mean())
                same_g = float((tk.harmful_idx == tt[3].cpu().numpy()).mean())
                agree = f"same indices: helpful {same_h:.4f}, harmful {same_g:.4f}"
                del tt
            gpu_times[("top_k", np.dtype(dtype).name)] = t_f
            rep(f"| top_k m={topk_m}, {topk_n:.0e} x 100, {np.dtype(dtype).name} | {1e3 * t_f:.1f} | {1e3 * t_t:.1f} "
                f"| {t_f / t_t:.2f} | {agree} |")
            del X, y
            if cp is not None:
                cp.get_default_memory_pool().free_all_blocks()
        except Exception as exc:
            rep(f"| top_k {np.dtype(dtype).name} | FAILED: {type(exc).__name__}: {exc} |")
    try:
        X, y, _, _ = make_data(fit_n, 100 if not args.small else 10, np.float64, seed=11)
        t_f, (theta, its) = timed(lambda: fastinfl_fit(X, y), 1)
        t_t, agree = float("nan"), ""
        if torch is not None:
            Xg, yg = torch.as_tensor(X), torch.as_tensor(y)
            t_t, th_t = timed(lambda: torch_fit(Xg, yg, its), 1)
            agree = f"max abs theta diff {float(np.abs(theta - th_t.cpu().numpy()).max()):.1e}"
        gpu_times[("fit",)] = t_f
        rep(f"| fit {fit_n:.0e} x 100 float64, l2=1, tol=1e-10 ({its} Newton steps) | {1e3 * t_f:.1f} | "
            f"{1e3 * t_t:.1f} | {t_f / t_t:.2f} | {agree} |")
        del X, y
    except Exception as exc:
        rep(f"| fit | FAILED: {type(exc).__name__}: {exc} |")
    rep("")

    # Hessian variants
    if cp is not None and not sim:
        import fastinfl.operators.cuda as opmod
        from fastinfl.operators.cuda import CudaOperator

        rep("### Hessian alone: cuBLAS DSYRK / DGEMM on scaled float64 blocks vs the Numba `gram` kernel (ms)")
        rep("")
        rep("| n | d | dtype | syrk | gemm | numba gram | PyTorch A.T @ A (with forming A) |")
        rep("|---:|---:|---|---:|---:|---:|---:|")
        for (n, d) in ((1_000_000, 100), (200_000, 1000)):
            for dtype in (np.float64, np.float32):
                try:
                    X, y, coef, b = make_data(n, d, dtype, seed=3)
                    op = CudaOperator(X, y, True)
                    curv = op.curvature(op.loss_grad(coef, b)[3])
                    row = []
                    for impl in ("syrk", "gemm", "numba"):
                        opmod.HESSIAN_IMPL = impl
                        row.append(timed(lambda: op.hessian_device(curv, ridge_of(d)), args.repeat)[0])
                    opmod.HESSIAN_IMPL = "auto"
                    tt = float("nan")
                    if torch is not None:
                        Xg = torch.as_tensor(X)
                        sg = torch.as_tensor(curv.weights, dtype=Xg.dtype, device=Xg.device)

                        def th():
                            A = torch.cat([Xg, torch.ones(n, 1, dtype=Xg.dtype, device=Xg.device)], 1) * sg.sqrt()[:, None]
                            return A.T @ A

                        tt = timed(th, args.repeat)[0]
                    rep(f"| {n:.0e} | {d} | {np.dtype(dtype).name} | " + " | ".join(f"{1e3 * t:.2f}" for t in row)
                        + f" | {1e3 * tt:.2f} |")
                    del X, y, op, curv
                    cp.get_default_memory_pool().free_all_blocks()
                except Exception as exc:
                    rep(f"| {n} | {d} | {np.dtype(dtype).name} | FAILED: {type(exc).__name__}: {exc} |")
        rep("")


def set_threads(t):
    """Run the CPU path on t threads: fastinfl's budget, from which each parallel kernel call sets its
    thread count (on the calling thread or a kernel worker thread), and this thread's Numba count.

    numba.set_num_threads alone is per thread: kernels run in worker threads kept all
    NUMBA_NUM_THREADS (at 21fda8e, the H200 run: hessian() and top_k in every column).
    """
    import numba

    import fastinfl

    fastinfl.set_num_threads(t)
    numba.set_num_threads(t)


def run_cpu(args, rep, jobs, topk_n, topk_m, fit_n, gpu_times, t_start):
    import numba

    import fastinfl

    try:
        import threadpoolctl

        from fastinfl.operators.policy import single_threaded_blas

        t0 = time.perf_counter()
        info = threadpoolctl.threadpool_info()
        t1 = time.perf_counter()
        with single_threaded_blas():
            pass
        t2 = time.perf_counter()
        rep("threadpoolctl: " + "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} thr, "
                                          f"{Path(i.get('filepath', '')).name})" for i in info)
            + f". threadpool_info() {1e3 * (t1 - t0):.1f} ms, one single_threaded_blas() enter/exit "
            f"{1e3 * (t2 - t1):.1f} ms; numba threading layer: {numba.config.THREADING_LAYER}")
        rep("")
    except Exception as exc:
        rep(f"threadpoolctl diagnostics FAILED: {exc}")
    rep("### fastinfl CPU path on the same machine (Influence(model, X, y).influence(X_test, y_test), seconds)")
    rep("")
    threads = [int(t) for t in args.threads.split(",") if int(t) <= numba.config.NUMBA_NUM_THREADS]
    rep(f"Numba threads: {threads} (of {numba.config.NUMBA_NUM_THREADS}); one timed run after a warm-up on "
        "the first rows. Cells: total (setup: validation + loss/gradient + weights / hessian() / influence(): "
        "Cholesky + s_test + influence kernel). `GPU speed-up` = CPU at the most threads / fastinfl GPU.")
    rep("")
    rep("| n | d | m | dtype | " + " | ".join(f"{t} thr" for t in threads) + " | scaling | GPU speed-up |")
    rep("|---:|---:|---:|---|" + "---:|" * (len(threads) + 2))

    def cpu_job(Xh, yh, coef, b, m):
        """Seconds of (Influence() setup: validation + loss/gradient pass + weights, hessian(), influence())."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model = fastinfl.LogisticRegression.from_params(coef, b, l2=L2)
            inf = fastinfl.Influence(model, Xh, yh, solver="direct", memory_limit=1 << 36)
            t1 = time.perf_counter()
            inf.hessian()
            t2 = time.perf_counter()
            inf.influence(Xh[:m], yh[:m])
            t3 = time.perf_counter()
            return t1 - t0, t2 - t1, t3 - t2

    def host(a):
        return a.get() if hasattr(a, "get") else np.asarray(a)

    for dtype in (np.float64, np.float32):
        for (n, d, m) in jobs:
            if time.perf_counter() - t_start > args.budget:
                rep(f"| {n} | {d} | {m} | {np.dtype(dtype).name} | skipped (time budget) |")
                continue
            try:
                X, y, coef, b = make_data(n, d, dtype, seed=n + d)
                Xh, yh = host(X), host(y)
                del X, y
                ts, stages = [], []
                for t in (threads if dtype == np.float64 else threads[-1:]):
                    set_threads(t)
                    cpu_job(Xh[:5000], yh[:5000], coef, b, m)
                    stages.append(cpu_job(Xh, yh, coef, b, m))
                    ts.append(sum(stages[-1]))
                cells = [f"{t:.3f} ({a:.3f}/{h:.3f}/{i:.3f})" for t, (a, h, i) in zip(ts, stages)]
                if len(ts) < len(threads):
                    cells = ["-"] * (len(threads) - len(ts)) + cells
                scal = f"{ts[0] / ts[-1]:.1f}x" if len(ts) > 1 else "-"
                g = gpu_times.get((n, d, m, np.dtype(dtype).name))
                speed = f"{ts[-1] / g:.0f}x" if g else "-"
                rep(f"| {n:.0e} | {d} | {m} | {np.dtype(dtype).name} | " + " | ".join(cells)
                    + f" | {scal} | {speed} |")
                del Xh, yh
            except Exception as exc:
                rep(f"| {n} | {d} | {m} | {np.dtype(dtype).name} | FAILED: {type(exc).__name__}: {exc} |")
    # top_k scaling on 10^6 rows and the top-k / fit at 10^7 with all threads
    try:
        nk = 400 if args.small else 1_000_000
        X, y, coef, b = make_data(nk, 100 if not args.small else 10, np.float64, seed=7)
        Xh, yh = host(X), host(y)
        del X, y
        ts = []
        for t in threads:
            if time.perf_counter() - t_start > args.budget:
                break
            set_threads(t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = fastinfl.LogisticRegression.from_params(coef, b, l2=L2)
                inf = fastinfl.Influence(model, Xh, yh, solver="direct")
                inf.top_k(Xh[:10], yh[:10], k=10)
                t0 = time.perf_counter()
                inf.top_k(Xh[:topk_m], yh[:topk_m], k=10)
                ts.append(time.perf_counter() - t0)
        rep("")
        rep(f"top_k (m={topk_m}, k=10) on {nk:.0e} x 100 float64, CPU (s): "
            + ", ".join(f"{t} thr {x:.3f}" for t, x in zip(threads, ts))
            + (f"; scaling {ts[0] / ts[-1]:.1f}x" if len(ts) > 1 else ""))
        del Xh, yh
    except Exception as exc:
        rep(f"top_k CPU scaling FAILED: {type(exc).__name__}: {exc}")
    for what in ("top_k", "fit"):
        if time.perf_counter() - t_start > args.budget:
            rep(f"CPU {what} at {topk_n:.0e} rows: skipped (time budget)")
            continue
        try:
            set_threads(threads[-1])
            X, y, coef, b = make_data(topk_n if what == "top_k" else fit_n, 100 if not args.small else 10,
                                      np.float64, seed=7 if what == "top_k" else 11)
            Xh, yh = host(X), host(y)
            del X, y
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                if what == "top_k":
                    model = fastinfl.LogisticRegression.from_params(coef, b, l2=L2)
                    fastinfl.Influence(model, Xh, yh, solver="direct").top_k(Xh[:topk_m], yh[:topk_m], k=10)
                    g = gpu_times.get(("top_k", "float64"))
                else:
                    fastinfl.LogisticRegression(l2=L2, tol=1e-10).fit(Xh, yh)
                    g = gpu_times.get(("fit",))
                tc = time.perf_counter() - t0
            rep(f"CPU {what} at {Xh.shape[0]:.0e} x {Xh.shape[1]} float64, {threads[-1]} threads: {tc:.3f} s"
                + (f" (GPU speed-up {tc / g:.0f}x)" if g else ""))
            del Xh, yh
        except Exception as exc:
            rep(f"CPU {what} FAILED: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
