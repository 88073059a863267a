"""Serving influence queries: a micro-batching front and the ``fastinfl serve`` HTTP service.

:class:`Batcher` is plain Python (threads): many callers each ask for one (or a
few) test points; a dispatcher thread coalesces what arrives within
``max_wait_ms`` into one batched call (one solve for all right-hand sides, one
streamed pass over X for all test points), so that 32 single-point callers cost
about one pass over X instead of 32.

The HTTP service (:func:`make_app`, :func:`serve_main`; optional extra ``serve``:
Starlette on uvicorn) is imported lazily: ``import fastinfl`` and
``import fastinfl.serving`` never import a web framework.

    python -m fastinfl.serving STATE --train TRAIN [--host 127.0.0.1] [--port 8000]
"""

import argparse
import collections
import os
import sys
import threading
import time
from concurrent.futures import Future

import numpy as np

from ._validation import check_indices, check_scalar
from .operators import TopK

__all__ = ["Batcher", "QueueFull", "make_app", "serve_main"]


class QueueFull(RuntimeError):
    """The batcher already holds ``max_queue`` test points waiting: try again later (HTTP 503)."""


class _Request:
    __slots__ = ("kind", "X", "y", "key", "k", "future")

    def __init__(self, kind, X, y, key, k):
        self.kind, self.X, self.y, self.key, self.k = kind, X, y, key, k
        self.future = Future()


class Batcher:
    """Thread-safe front that coalesces concurrent requests into batched :class:`~fastinfl.Influence` calls.

    Parameters
    ----------
    inf : Influence
    max_batch : int
        Test points per batched call at most.
    max_wait_ms : float
        How long the dispatcher waits, after the first request of a batch
        arrives, for more to join it; skipped when the previous batch held a
        single request (a lone caller pays no wait), and cut short once the
        batch holds as many test points as recent batches did.
    max_queue : int
        Test points waiting at most; beyond it :meth:`submit_top_k` and
        :meth:`submit_influence` raise :class:`QueueFull`.

    Notes
    -----
    Each request is validated in the caller's thread (a bad one raises there
    and never joins a batch). A batch groups ``top_k`` requests (computed once
    with the largest k of the batch: a sorted top-k list's first k entries are
    the top-k for k) and ``influence`` requests with the same ``train_idx``.
    Answers equal unbatched calls up to rounding: the batched solve and block
    products may sum in another order (indices agree unless two values tie to
    rounding). An error in the batched call is raised in every caller of the batch.
    """

    def __init__(self, inf, max_batch=64, max_wait_ms=2.0, max_queue=4096):
        self.inf = inf
        self.max_batch = check_scalar(max_batch, "max_batch", integer=True, min_value=1)
        self.max_wait = check_scalar(max_wait_ms, "max_wait_ms") / 1000.0
        self.max_queue = check_scalar(max_queue, "max_queue", integer=True, min_value=1)
        self._pending = collections.deque()
        self._queued = 0  # test points in _pending
        self._cond = threading.Condition()
        self._closed = False
        self.batches_ = 0  # batched calls made (for measurements)
        self._last_size = self.max_batch  # requests in the previous batch: 1 means a lone caller
        self._recent_rows = self.max_batch  # test points a batch waits for at most (see _take_batch)
        self._thread = threading.Thread(target=self._dispatch, name="fastinfl-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ callers
    def submit_top_k(self, X_test, y_test, k=10):
        """A Future of the :class:`TopK` of (m, k) arrays for these test points (as ``inf.top_k``)."""
        test = self.inf._test_operator(X_test, y_test, "X_test")
        k = check_scalar(k, "k", integer=True, min_value=1)
        if k > self.inf.n_samples:
            raise ValueError(f"k must be <= the number of training points ({self.inf.n_samples}); got {k}.")
        return self._submit(_Request("top_k", test.X, test.y, None, k))

    def submit_influence(self, X_test, y_test, train_idx=None):
        """A Future of the (m, n_sel) influence matrix (as ``inf.influence``)."""
        test = self.inf._test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.inf.n_samples)
        self.inf._check_result_size((test.n_samples, idx.shape[0]), "influence")
        key = None if train_idx is None else idx.tobytes()
        return self._submit(_Request("influence", test.X, test.y, key, idx))

    def top_k(self, X_test, y_test, k=10):
        """Blocking :meth:`submit_top_k`."""
        return self.submit_top_k(X_test, y_test, k).result()

    def influence(self, X_test, y_test, train_idx=None):
        """Blocking :meth:`submit_influence`."""
        return self.submit_influence(X_test, y_test, train_idx).result()

    def close(self, wait=True):
        """Stop accepting requests; the dispatcher finishes what is queued, then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def queued(self):
        """Test points waiting for a batch."""
        return self._queued

    def _submit(self, req):
        m = req.X.shape[0]
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._queued + m > self.max_queue and self._queued:
                raise QueueFull(f"{self._queued} test points are already waiting (max_queue={self.max_queue})")
            self._pending.append(req)
            self._queued += m
            self._cond.notify()
        return req.future

    # ------------------------------------------------------------ dispatcher
    def _take_batch(self):
        """Wait for a first request, then up to max_wait for more; pop a batch (None once closed and empty)."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            # A lone caller (the previous batch held one request) does not wait: under concurrency,
            # requests also queue up while the previous batch computes. Nor does a batch wait once it
            # is as large as recent batches (a maximum decaying by 10 % a batch): C callers who wait
            # for their answer before asking again are all back by then, and waiting for more only
            # adds max_wait to every batch (bench/RESULTS.md, "Micro-batching").
            deadline = time.perf_counter() + (self.max_wait if self._last_size > 1 else 0.0)
            while self._queued < self._recent_rows and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            first = self._pending[0]
            group = (first.kind, first.key)
            batch, rows, rest = [], 0, collections.deque()
            while self._pending:
                req = self._pending.popleft()
                if (req.kind, req.key) == group and (not batch or rows + req.X.shape[0] <= self.max_batch):
                    batch.append(req)
                    rows += req.X.shape[0]
                else:
                    rest.append(req)
            self._pending = rest
            self._queued -= rows
            self._last_size = len(batch)
            self._recent_rows = max(rows, min(self.max_batch, int(0.9 * self._recent_rows)))
            return batch

    def _dispatch(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # handed to every caller of the batch
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(exc)

    def _run(self, batch):
        X = batch[0].X if len(batch) == 1 else np.concatenate([r.X for r in batch])
        y = batch[0].y if len(batch) == 1 else np.concatenate([r.y for r in batch])
        self.batches_ += 1
        bounds = np.cumsum([0] + [r.X.shape[0] for r in batch])
        if batch[0].kind == "top_k":
            k = max(r.k for r in batch)
            top = self.inf.top_k(X, y, k=k)
            for r, lo, hi in zip(batch, bounds[:-1], bounds[1:]):
                r.future.set_result(TopK(*(np.ascontiguousarray(f[lo:hi, : r.k]) for f in top)))
        else:
            idx = batch[0].k  # the validated train_idx
            out = self.inf.influence(X, y, None if batch[0].key is None else idx)
            for r, lo, hi in zip(batch, bounds[:-1], bounds[1:]):
                r.future.set_result(out[lo:hi].copy())


# ---------------------------------------------------------------------------- HTTP service
DEFAULT_MAX_BODY = 1 << 20  # bytes of a request body
DEFAULT_MAX_RESULT = 1 << 20  # numbers in a response (influence matrix, top-k lists)


def _nan_to_none(rows):
    """Lists of floats with NaN (top-k padding) as None: JSON has no NaN."""
    return [[None if v != v else v for v in row] for row in rows]


def make_app(inf, batcher=None, max_body=DEFAULT_MAX_BODY, max_result=DEFAULT_MAX_RESULT):
    """The Starlette app of ``fastinfl serve`` over ``inf`` (requests coalesced by ``batcher`` when given).

    Endpoints (design contract, "Callers"): ``POST /v1/top_k`` ``{"X", "y", "k"}``,
    ``POST /v1/influence`` ``{"X", "y", "train_idx"}``, ``POST /v1/self_influence``
    ``{"train_idx"}``, ``GET /healthz``. Errors are JSON ``{"error": ...}``: 400
    (body not a JSON object), 422 (invalid values: the library's ValueError
    message), 413 (body over ``max_body`` bytes, or a response over
    ``max_result`` numbers), 503 (the batcher's queue is full), 404 / 405.
    """
    import asyncio
    import json

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    class _Error(Exception):
        def __init__(self, status, message):
            self.status, self.message = status, message

    async def body_json(request):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body:
            raise _Error(413, f"request body of {int(size)} bytes exceeds the limit of {max_body} bytes")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise _Error(413, f"request body exceeds the limit of {max_body} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise _Error(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _Error(400, "the body must be a JSON object")
        return body

    def field(body, name, required=True, default=None):
        if name not in body:
            if required:
                raise _Error(422, f"missing field {name!r}")
            return default
        return body[name]

    def as_array(value, name, ndim):
        """A real array of ``ndim`` dimensions from JSON lists (bools and strings refused)."""
        def bad():
            return _Error(422, f"{name} must be {'a list of lists' if ndim == 2 else 'a list'} of numbers")

        if not isinstance(value, list) or (ndim == 2 and not all(isinstance(r, list) for r in value)):
            raise bad()
        flat = value if ndim == 1 else [v for r in value for v in r]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
            raise bad()
        try:
            arr = np.array(value, dtype=np.float64)
        except (ValueError, OverflowError) as exc:  # ragged rows, huge integers
            raise _Error(422, f"{name}: {exc}") from None
        if arr.ndim != ndim:
            raise bad()
        return arr

    def check_result(count, what):
        if count > max_result:
            raise _Error(413, f"the {what} would hold {count} numbers, more than the limit of {max_result}: "
                              "ask for fewer test points or training indices")

    def train_idx(body):
        value = field(body, "train_idx", required=False)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise _Error(422, "train_idx must be a list of integers")
        return np.array(value, dtype=np.int64) if value else np.zeros(0, np.int64)

    async def compute(fn):
        try:
            return await fn()
        except _Error:
            raise
        except QueueFull as exc:
            raise _Error(503, f"server busy: {exc}") from None
        except ValueError as exc:  # the library's validation: names the argument
            raise _Error(422, str(exc)) from None

    async def top_k(request):
        body = await body_json(request)
        X = as_array(field(body, "X"), "X", 2)
        y = as_array(field(body, "y"), "y", 1)
        k = field(body, "k", required=False, default=10)
        if not isinstance(k, int) or isinstance(k, bool):
            raise _Error(422, f"k must be an integer; got {k!r}")
        if 1 <= k <= inf.n_samples:  # else the library's message says what k may be
            check_result(4 * X.shape[0] * k, "top-k lists")

        async def run():
            if batcher is not None:
                return await asyncio.wrap_future(batcher.submit_top_k(X, y, k))
            return await run_in_threadpool(inf.top_k, X, y, k)

        top = await compute(run)
        return JSONResponse({"helpful_idx": top.helpful_idx.tolist(), "helpful": _nan_to_none(top.helpful.tolist()),
                             "harmful_idx": top.harmful_idx.tolist(), "harmful": _nan_to_none(top.harmful.tolist())})

    async def influence(request):
        body = await body_json(request)
        X = as_array(field(body, "X"), "X", 2)
        y = as_array(field(body, "y"), "y", 1)
        idx = train_idx(body)
        check_result(X.shape[0] * (inf.n_samples if idx is None else idx.shape[0]), "influence matrix")

        async def run():
            if batcher is not None:
                return await asyncio.wrap_future(batcher.submit_influence(X, y, idx))
            return await run_in_threadpool(inf.influence, X, y, idx)

        return JSONResponse({"influence": (await compute(run)).tolist()})

    async def self_influence(request):
        body = await body_json(request)
        idx = train_idx(body)
        check_result(inf.n_samples if idx is None else idx.shape[0], "self-influence list")

        async def run():
            return await run_in_threadpool(inf.self_influence, idx)

        return JSONResponse({"self_influence": (await compute(run)).tolist()})

    async def healthz(request):
        return JSONResponse({"status": "ok", "n_train": inf.n_samples, "n_features": inf._op.n_features,
                             "n_params": inf.n_params})

    async def on_error(request, exc):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def on_http(request, exc):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def on_disconnect(request, exc):
        return JSONResponse({"error": "client disconnected"}, status_code=400)

    async def on_other(request, exc):  # never a traceback to the client
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    routes = [Route("/v1/top_k", top_k, methods=["POST"]), Route("/v1/influence", influence, methods=["POST"]),
              Route("/v1/self_influence", self_influence, methods=["POST"]),
              Route("/healthz", healthz, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={_Error: on_error, HTTPException: on_http,
                                                        ClientDisconnect: on_disconnect, Exception: on_other})


def _parser():
    ap = argparse.ArgumentParser(prog="fastinfl serve", description="HTTP service over a saved Influence state "
                                 "(POST /v1/top_k, /v1/influence, /v1/self_influence; GET /healthz).")
    ap.add_argument("state", help="state file written by Influence.save")
    ap.add_argument("--train", required=True, help="training data the state was computed on (.npz with X and y, "
                    ".npy with labels in the last column, or .csv)")
    ap.add_argument("--label-col", default=None, help="CSV label column (default: the last)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-batch", type=int, default=64, help="test points per batched call (default 64)")
    ap.add_argument("--max-wait-ms", type=float, default=2.0, help="wait for a batch to fill (default 2 ms)")
    ap.add_argument("--max-queue", type=int, default=4096, help="test points waiting before 503 (default 4096)")
    ap.add_argument("--no-batching", action="store_true", help="one kernel call per request")
    ap.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="request body bytes (default 1 MiB)")
    ap.add_argument("--max-result", type=int, default=DEFAULT_MAX_RESULT,
                    help="numbers in a response (default 2^20)")
    ap.add_argument("--log-level", default="warning")
    return ap


def service_thread_defaults():
    """OMP_WAIT_POLICY=PASSIVE for a service, unless the environment already sets it (call before any kernel).

    With OpenMP's default spin-waiting, idle team threads keep their cores busy, so
    concurrent callers and a second service process starve each other: measured
    (bench.concurrency, omp layer, 2 cores, idle machine) 8 threads 0.68x one thread
    and 2 processes 0.51x one process when active, 1.13x and 0.92x when passive, for
    20 % less throughput of a lone caller (bench/RESULTS.md, "Serving").
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def serve_main(argv=None):
    """``fastinfl serve STATE --train TRAIN [--host 127.0.0.1] [--port 8000]``: run the service until SIGTERM/Ctrl-C.

    Returns the process exit status. uvicorn's shutdown on SIGTERM or SIGINT
    stops accepting connections and lets requests in flight complete; the
    batcher then finishes its queue.
    """
    args = _parser().parse_args(argv)
    service_thread_defaults()
    try:
        import uvicorn
        import starlette  # noqa: F401
    except ImportError:
        print("fastinfl serve needs the optional extra 'serve': pip install 'fastinfl[serve]' "
              "(starlette and uvicorn)", file=sys.stderr)
        return 2
    from ._io import InputError, load_dataset
    from .influence import Influence

    try:
        train = load_dataset(args.train, label_col=args.label_col)
        inf = Influence.load(args.state, train.X, train.y)
    except (InputError, ValueError, OSError) as exc:
        print(f"fastinfl serve: error: {exc}", file=sys.stderr)
        return 2
    inf.s_test(train.X[:1], train.y[:1])  # compile or load the kernels before the first request
    inf.top_k(train.X[:1], train.y[:1], k=1)
    batcher = None if args.no_batching else Batcher(inf, args.max_batch, args.max_wait_ms, args.max_queue)
    app = make_app(inf, batcher, args.max_body, args.max_result)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=30)
    try:
        uvicorn.Server(config).run()
    finally:
        if batcher is not None:
            batcher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
