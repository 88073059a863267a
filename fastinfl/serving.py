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
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from concurrent.futures import Future

import numpy as np

from ._validation import check_indices, check_scalar
from .operators import TopK

__all__ = ["Batcher", "QueueFull", "allowed_hosts", "guarded_protocol", "make_app", "serve_main"]


class QueueFull(RuntimeError):
    """The batcher already holds ``max_queue`` test points waiting: try again later (HTTP 503)."""


_K_SHARED = 64  # top_k requests with k up to this share batches; above it, k within a power of two


def _k_class(k):
    """Batching group of a top_k request: 0 for k <= 64, then one group per power of two."""
    return 0 if k <= _K_SHARED else (k - 1).bit_length() - (_K_SHARED - 1).bit_length()


class _Request:
    __slots__ = ("kind", "X", "y", "key", "k", "future")

    def __init__(self, kind, X, y, key, k):
        self.kind, self.X, self.y, self.key, self.k = kind, X, y, key, k
        self.future = Future()


class _Lane:
    """Requests waiting for one dispatcher thread, and its batching state (see Batcher._take_batch)."""

    def __init__(self, lock, max_batch):
        self.cond = threading.Condition(lock)
        self.pending = collections.deque()
        self.queued = 0  # test points in pending
        self.last_size = max_batch  # requests in the previous batch: 1 means a lone caller
        self.recent_rows = max_batch  # test points a batch waits for at most
        self.thread = None


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
    and never joins a batch). A batch groups ``top_k`` requests of similar k
    (all k <= 64, or k within the same power of two above that: computed once
    with the largest k of the batch, a sorted top-k list's first k entries being
    the top-k for k, so a request is computed at k <= 64 or at less than twice
    its own k) and ``influence`` requests with the same ``train_idx``. ``top_k`` requests
    with k > 64 have a dispatcher thread of their own: a client asking for large
    k shares the cores with the others but never holds their batches up. A
    request whose future is cancelled before its batch starts is dropped.
    Answers equal unbatched calls up to rounding: the batched solve and block
    products may sum in another order (indices agree unless two values tie to
    rounding). An error in the batched call is raised in every caller of the batch.
    """

    def __init__(self, inf, max_batch=64, max_wait_ms=2.0, max_queue=4096):
        self.inf = inf
        self.max_batch = check_scalar(max_batch, "max_batch", integer=True, min_value=1)
        self.max_wait = check_scalar(max_wait_ms, "max_wait_ms") / 1000.0
        self.max_queue = check_scalar(max_queue, "max_queue", integer=True, min_value=1)
        self._lock = threading.Lock()
        self._closed = False
        self.batches_ = 0  # batched calls made (for measurements)
        self._lanes = (_Lane(self._lock, self.max_batch), _Lane(self._lock, self.max_batch))  # k <= 64; k > 64
        for i, lane in enumerate(self._lanes):
            lane.thread = threading.Thread(target=self._dispatch, args=(lane,), name=f"fastinfl-batcher-{i}",
                                           daemon=True)
            lane.thread.start()

    # ------------------------------------------------------------ callers
    def submit_top_k(self, X_test, y_test, k=10):
        """A Future of the :class:`~fastinfl.TopK` of (m, k) arrays for these test points (as ``inf.top_k``)."""
        test = self.inf.test_operator(X_test, y_test, "X_test")
        k = check_scalar(k, "k", integer=True, min_value=1)
        if k > self.inf.n_samples:
            raise ValueError(f"k must be <= the number of training points ({self.inf.n_samples}); got {k}.")
        # the labels as given (the operator's y are class codes, which inf.top_k would read as labels)
        return self._submit(_Request("top_k", test.X, np.asarray(y_test), _k_class(k), k))

    def submit_influence(self, X_test, y_test, train_idx=None):
        """A Future of the (m, n_sel) influence matrix (as ``inf.influence``)."""
        test = self.inf.test_operator(X_test, y_test, "X_test")
        idx = check_indices(train_idx, self.inf.n_samples)
        self.inf.check_result_size((test.n_samples, idx.shape[0]), "influence")
        key = None if train_idx is None else idx.tobytes()
        return self._submit(_Request("influence", test.X, np.asarray(y_test), key, idx))

    def top_k(self, X_test, y_test, k=10):
        """Blocking :meth:`submit_top_k`."""
        return self.submit_top_k(X_test, y_test, k).result()

    def influence(self, X_test, y_test, train_idx=None):
        """Blocking :meth:`submit_influence`."""
        return self.submit_influence(X_test, y_test, train_idx).result()

    def close(self, wait=True):
        """Stop accepting requests; the dispatchers finish what is queued, then exit."""
        with self._lock:
            self._closed = True
            for lane in self._lanes:
                lane.cond.notify_all()
        if wait:
            for lane in self._lanes:
                lane.thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def queued(self):
        """Test points waiting for a batch."""
        return sum(lane.queued for lane in self._lanes)

    def _submit(self, req):
        m = req.X.shape[0]
        lane = self._lanes[req.kind == "top_k" and req.key > 0]
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            queued = self.queued
            if queued + m > self.max_queue and queued:
                raise QueueFull(f"{queued} test points are already waiting (max_queue={self.max_queue})")
            lane.pending.append(req)
            lane.queued += m
            lane.cond.notify()
        return req.future

    # ------------------------------------------------------------ dispatchers
    def _take_batch(self, lane):
        """Wait for a first request, then up to max_wait for more; pop a batch (None once closed and empty)."""
        with self._lock:
            while not lane.pending:
                if self._closed:
                    return None
                lane.cond.wait()
            # A lone caller (the previous batch held one request) does not wait: under concurrency,
            # requests also queue up while the previous batch computes. Nor does a batch wait once it
            # is as large as recent batches (a maximum decaying by 10 % a batch): C callers who wait
            # for their answer before asking again are all back by then, and waiting for more only
            # adds max_wait to every batch (bench/RESULTS.md, "Micro-batching").
            deadline = time.perf_counter() + (self.max_wait if lane.last_size > 1 else 0.0)
            while lane.queued < lane.recent_rows and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                lane.cond.wait(left)
            first = lane.pending[0]
            group = (first.kind, first.key)
            batch, rows, rest = [], 0, collections.deque()
            while lane.pending:
                req = lane.pending.popleft()
                if (req.kind, req.key) == group and (not batch or rows + req.X.shape[0] <= self.max_batch):
                    batch.append(req)
                    rows += req.X.shape[0]
                else:
                    rest.append(req)
            lane.pending = rest
            lane.queued -= rows
            lane.last_size = len(batch)
            lane.recent_rows = max(rows, min(self.max_batch, int(0.9 * lane.recent_rows)))
            return batch

    def _dispatch(self, lane):
        while True:
            batch = self._take_batch(lane)
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # handed to every caller of the batch
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(exc)

    def _run(self, batch):
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop cancelled requests
        if not batch:
            return
        X = batch[0].X if len(batch) == 1 else np.concatenate([r.X for r in batch])
        y = batch[0].y if len(batch) == 1 else np.concatenate([r.y for r in batch])
        with self._lock:
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
DEFAULT_REQUEST_TIMEOUT = 10.0  # seconds for a request's headers and body to arrive
DEFAULT_MAX_CONNECTIONS = 1000
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")  # Host names accepted for a loopback bind address
_JSON_BYTES_PER_NUMBER = 21  # a float64 as JSON with its separator ("-0.0012345678901234, "), for 413 messages
_INLINE_BYTES = 16 << 10  # bodies up to this size are parsed on the event loop, larger in a worker
_CHUNK_NUMBERS = 1024  # numbers per encoding step: the GIL is free for the event loop between steps
_INLINE_NUMBERS = _CHUNK_NUMBERS  # answers of one step are encoded on the event loop, larger ones in a worker
_PIECE_BYTES = 1 << 18  # bytes per message of a response body
_ENCODING = threading.Lock()  # one encoding step at a time: encoding is GIL-bound, and fewer threads
#                               wanting the GIL means a shorter wait for the event loop's thread

log = logging.getLogger("fastinfl.serve")


def _one_line(exc):
    return " ".join(str(exc).split())


def _short(value):
    """repr of a value for an error message, cut to 40 characters (a 4000-digit integer stays readable)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _json_array(a, out, cancelled, in_worker):
    """Append the JSON of a 1-D or 2-D array to ``out`` as byte pieces, NaN and inf as null.

    Encoded ``_CHUNK_NUMBERS`` numbers at a time, each step one short C call after which
    the event loop's thread can take the GIL; ``in_worker`` (not on the event loop's
    thread), one step at a time over all threads. Returns False, unfinished, once
    ``cancelled`` (a threading.Event) is set.
    """
    width = a.shape[1] if a.ndim == 2 else 1
    step = max(1, _CHUNK_NUMBERS // max(width, 1))
    out.append(b"[")
    for lo in range(0, a.shape[0], step):
        if cancelled is not None and cancelled.is_set():
            return False
        with _ENCODING if in_worker else contextlib.nullcontext():
            text = json.dumps(a[lo:lo + step].tolist())[1:-1]
        if a.dtype.kind == "f":
            text = text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null")
        out.append((", " + text if lo else text).encode())
    out.append(b"]")
    return True


def _encode(fields, cancelled=None, in_worker=False):
    """JSON object of ``{name: array}`` as a list of byte pieces (None once ``cancelled`` is set)."""
    pieces = []
    for i, (name, value) in enumerate(fields.items()):
        pieces.append(("{" if i == 0 else ", ").encode() + json.dumps(name).encode() + b": ")
        if not _json_array(np.asarray(value), pieces, cancelled, in_worker):
            return None
    pieces.append(b"}")
    blocks, block, size = [], [], 0
    for piece in pieces:  # messages of about _PIECE_BYTES
        block.append(piece)
        size += len(piece)
        if size >= _PIECE_BYTES:
            blocks.append(b"".join(block))
            block, size = [], 0
    if block:
        blocks.append(b"".join(block))
    return blocks


class _JSONPieces:
    """ASGI response of a JSON body given as byte pieces, sent one by one (a large body is never joined)."""

    def __init__(self, pieces):
        self.pieces = pieces

    async def __call__(self, scope, receive, send):
        size = sum(len(p) for p in self.pieces)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(size).encode())]})
        for i, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i + 1 < len(self.pieces)})


async def _send_json(send, status, payload, headers=()):
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _host_name(header):
    """The name part of a Host header value, lower case: 'LocalHost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")  # 'localhost.' is 'localhost'


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(bind, extra=()):
    """Host header names accepted by a service bound to ``bind``, or None for any (``extra`` holds '*').

    The bind address itself, with the localhost names for a loopback address, plus
    ``extra``; a wildcard bind (0.0.0.0, ::) accepts any IP literal as well, noted by
    the entry ``"<ip>"`` (a DNS rebinding page reaches the service by a name, never
    by an IP literal).
    """
    if "*" in extra:
        return None
    names = {_host_name(bind)} | {_host_name(h) for h in extra}
    try:
        ip = ipaddress.ip_address(_host_name(bind))
    except ValueError:
        ip = None
    if _host_name(bind) == "localhost" or (ip is not None and ip.is_loopback):
        names |= set(LOCAL_NAMES)
    if ip is not None and ip.is_unspecified:
        names.add("<ip>")
    return frozenset(names)


class _Front:
    """Outermost ASGI layer: Host allow-list, bearer token, JSON content type, access log, last-resort 500.

    Checks in this order, each answering JSON ``{"error": ...}``: Host header not in
    ``hosts`` (400), a ``/v1/`` path without ``Authorization: Bearer <token>`` (401;
    ``/healthz`` needs no token), a POST whose Content-Type is not application/json
    (415). Logs one line per request on the ``fastinfl.serve`` logger (INFO).
    """

    def __init__(self, app, hosts=None, token=None):
        self.app, self.hosts = app, hosts
        self.token = None if token is None else token.encode()

    def _host_ok(self, scope):
        """Exactly one Host header, naming an allowed host."""
        if self.hosts is None:
            return True
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        name = _host_name(values[0]) if len(values) == 1 else None
        return name in self.hosts or ("<ip>" in self.hosts and name is not None and _is_ip(name))

    def _token_ok(self, headers):
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, sent = time.perf_counter(), {"status": None, "bytes": 0, "left": False}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            else:
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        async def receive_logged():
            message = await receive()
            sent["left"] |= message["type"] == "http.disconnect"
            return message

        headers = dict(scope["headers"])  # uvicorn gives lower-case names
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        try:
            if not self._host_ok(scope):
                host = headers.get(b"host", b"").decode("latin-1")
                await _send_json(send_logged, 400, {"error": f"Host header {_short(host)} is not allowed: this "
                                                    "service answers to its bind address (add names with "
                                                    "--allow-host)"})
            elif self.token is not None and scope["path"].startswith("/v1/") and not self._token_ok(headers):
                await _send_json(send_logged, 401, {"error": "missing or wrong token: send the header "
                                                    "'Authorization: Bearer TOKEN'"},
                                 [(b"www-authenticate", b"Bearer")])
            elif scope["method"] == "POST" and content_type != b"application/json":
                await _send_json(send_logged, 415, {"error": "Content-Type must be application/json; got "
                                                    f"{_short(content_type.decode('latin-1'))}"})
            else:
                await self.app(scope, receive_logged, send_logged)
        except Exception as exc:  # Starlette re-raises what its 500 handler answered and logged
            if "fastinfl.request_id" not in scope:  # not logged yet: it failed outside that handler
                rid = _log_failure(scope, exc)
                if sent["status"] is None:
                    await _send_json(send_logged, 500, _failure_body(rid), [(b"connection", b"close")])
        finally:
            status = "client disconnected" if sent["left"] else sent["status"]
            client = "%s:%s" % tuple(scope["client"]) if scope.get("client") else "-"
            log.info('%s "%s %s" %s %d B %.1f ms', client, scope["method"], scope["path"], status, sent["bytes"],
                     1000 * (time.perf_counter() - start))


def _log_failure(scope, exc):
    """Log one line for an unexpected error; return its request id (also put in ``scope``)."""
    rid = secrets.token_hex(6)
    scope["fastinfl.request_id"] = rid
    log.error("request %s: %s %s failed: %s: %s", rid, scope.get("method"), scope.get("path"),
              type(exc).__name__, _one_line(exc)[:500])
    return rid


def _failure_body(rid):
    return {"error": f"internal error: the server's log has the details under request id {rid}",
            "request_id": rid}


class _Disconnected(Exception):
    """The client left before its answer was ready: the work was cancelled (or its result dropped)."""


def make_app(inf, batcher=None, max_body=DEFAULT_MAX_BODY, max_result=DEFAULT_MAX_RESULT, hosts=None, token=None,
             workers=4):
    """The ASGI app of ``fastinfl serve`` over ``inf`` (requests coalesced by ``batcher`` when given).

    Endpoints (design contract, "Callers"): ``POST /v1/top_k`` ``{"X", "y", "k"}``,
    ``POST /v1/influence`` ``{"X", "y", "train_idx"}``, ``POST /v1/self_influence``
    ``{"train_idx"}``, ``GET /healthz``. Labels ``y`` are the model's own values (its
    ``classes_``, JSON strings, numbers or booleans; 0 and 1 for a binary model without
    ``classes_``); omitted or null, the labels the model predicts for ``X``. Answers of
    top_k and influence give the labels used as ``"y"``. Errors are JSON ``{"error": ...}``: 400
    (body not a JSON object, nested too deeply, Host not in ``hosts``), 401 (no or
    wrong bearer ``token``, when one is set), 415 (Content-Type not application/json),
    422 (invalid values: the library's ValueError message), 413 (body over
    ``max_body`` bytes, or a response over ``max_result`` numbers: refused before any
    work), 503 (the batcher's queue is full), 404 / 405; an unexpected error is a 500
    ``{"error", "request_id"}`` with ``Connection: close`` and one log line.

    Parsing a large body, unbatched computations and encoding a large answer run in
    a pool of ``workers`` threads, never on the event loop; the answer is encoded in
    steps that let the event loop run. When the client disconnects, its request is
    dropped from the batcher's queue if still there, and its result is not encoded.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastinfl-serve")

    class _Error(Exception):
        def __init__(self, status, message):
            self.status, self.message = status, message

    async def off_loop(big, fn, *args):
        """fn(*args) in the worker pool when ``big``, else here (work too small to block the loop)."""
        if big:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        return fn(*args)

    async def read_body(request):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body:
            raise _Error(413, f"request body of {int(size)} bytes exceeds the limit of {max_body} bytes")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise _Error(413, f"request body exceeds the limit of {max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(raw):
        try:
            body = json.loads(raw)
        except RecursionError:  # json raises it at the interpreter's depth limit (1000), before any harm
            raise _Error(400, "the body's JSON is nested too deeply") from None
        except ValueError as exc:  # also invalid UTF-8 and integers of over 4300 digits
            raise _Error(400, f"the body is not valid JSON: {_one_line(exc)}") from None
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
        except (ValueError, OverflowError) as exc:  # ragged rows, integers beyond float64
            raise _Error(422, f"{name}: {exc}") from None
        if arr.ndim != ndim:
            raise bad()
        return arr

    classes = model_classes(getattr(inf, "model", None))
    regressor = classes is None  # a count model: y holds observed counts, never predicted
    classes = np.array([0, 1]) if regressor else classes
    codes = {_label_key(c): j for j, c in enumerate(classes.tolist())}
    shown = ", ".join(json.dumps(c) for c in classes[:10].tolist()) + (", ..." if len(classes) > 10 else "")

    def labels(body, X):
        """(y for the library, the labels as the model's own values) from the field "y": a list of the
        model's labels (JSON strings, numbers or booleans, as in classes_); omitted or null: the labels
        the model predicts for X."""
        value = field(body, "y", required=False)
        if regressor:
            if value is None:
                raise _Error(422, "y is required for a count model: the observed counts of the test points "
                                  "(its prediction, the mean, would make every first-order influence 0)")
            counts = as_array(value, "y", 1)
            return counts, counts
        if value is None:
            given = np.asarray(inf.model.predict(X)).tolist()
        elif not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise _Error(422, f"y must be a list of labels, each one of the model's classes ({shown}); or omit y "
                              "(or send null) for the labels the model predicts")
        else:
            given = value
        try:
            idx = np.array([codes[_label_key(v)] for v in given], dtype=np.int64)
        except KeyError:
            bad = next(v for v in given if _label_key(v) not in codes)
            raise _Error(422, f"y holds {_short(bad)}, which is not one of the model's classes ({shown})") from None
        except (TypeError, ValueError, OverflowError):  # nan, inf, integers beyond float64
            bad = next(v for v in given if not _valid_key(v))
            raise _Error(422, f"y holds {_short(bad)}, which is not one of the model's classes ({shown})") from None
        label_values = classes[idx]
        # the library takes 0/1 for a binary model without classes_, else labels mapped through classes_
        binary01 = getattr(getattr(inf, "model", None), "classes_", None) is None
        return (idx.astype(np.float64) if binary01 else label_values), label_values

    def check_result(count, what):
        if count > max_result:
            raise _Error(413, f"the {what} would hold {count} numbers (about {count * _JSON_BYTES_PER_NUMBER / 1e6:.1f}"
                              f" MB of JSON), more than the limit of {max_result} numbers (--max-result): "
                              "ask for fewer test points or training indices")

    def train_idx(body):
        value = field(body, "train_idx", required=False)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise _Error(422, "train_idx must be a list of integers")
        n = inf.n_samples
        bad = next((v for v in value if not -n <= v < n), None)  # before int64: 2**64 does not fit
        if bad is not None:
            raise _Error(422, f"train_idx holds {_short(bad)}, out of range for {n} training points "
                              f"(valid: -{n} to {n - 1})")
        return np.array(value, dtype=np.int64)

    def submit(fn, *args):
        """A Future of fn(*args): the batcher's method when batching, else ``inf``'s in the pool."""
        if batcher is not None:
            return getattr(batcher, "submit_" + fn)(*args)
        return pool.submit(getattr(inf, fn), *args)

    def start_top_k(raw):
        body = parse(raw)
        X = as_array(field(body, "X"), "X", 2)
        k = field(body, "k", required=False, default=10)
        if not isinstance(k, int) or isinstance(k, bool):
            raise _Error(422, f"k must be an integer; got {_short(k)}")
        if 1 <= k <= inf.n_samples:  # else the library's message says what k may be
            check_result(4 * X.shape[0] * k, "top-k lists")
        y, shown_y = labels(body, X)
        return submit("top_k", X, y, k), lambda top: {**top._asdict(), "y": shown_y}

    def start_influence(raw):
        body = parse(raw)
        X = as_array(field(body, "X"), "X", 2)
        idx = train_idx(body)
        check_result(X.shape[0] * (inf.n_samples if idx is None else idx.shape[0]), "influence matrix")
        y, shown_y = labels(body, X)
        return submit("influence", X, y, idx), lambda out: {"influence": out, "y": shown_y}

    def start_self_influence(raw):
        idx = train_idx(parse(raw))
        check_result(inf.n_samples if idx is None else idx.shape[0], "self-influence list")
        return pool.submit(inf.self_influence, idx), lambda out: {"self_influence": out}

    async def until_disconnect(receive):
        while (await receive())["type"] != "http.disconnect":
            pass

    async def unless_disconnected(request, work, cancelled):
        """The result of the awaitable ``work``; if the client leaves first, cancel it and raise _Disconnected."""
        work = asyncio.ensure_future(work)
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even when dropped
        watch = asyncio.ensure_future(until_disconnect(request.receive))
        try:
            done, _ = await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():
                cancelled.set()
                work.cancel()
        if work not in done:
            raise _Disconnected()
        return work.result()

    def endpoint(start):
        """A route: parse and check the body, start the work (``start``), answer its fields as JSON."""
        async def handle(request):
            raw = await read_body(request)
            cancelled = threading.Event()
            try:
                future, fields = await off_loop(len(raw) > _INLINE_BYTES, start, raw)
                result = fields(await unless_disconnected(request, asyncio.wrap_future(future), cancelled))
            except QueueFull as exc:
                raise _Error(503, f"server busy: {exc}") from None
            except ValueError as exc:  # the library's validation: names the argument
                raise _Error(422, _one_line(exc)) from None
            big = sum(np.size(v) for v in result.values()) > _INLINE_NUMBERS
            encoded = off_loop(big, _encode, result, cancelled, big)
            return _JSONPieces(await unless_disconnected(request, encoded, cancelled))
        return handle

    async def healthz(request):
        return JSONResponse({"status": "ok", "n_train": inf.n_samples, "n_features": inf.operator.n_features,
                             "n_params": inf.n_params, "classes": None if regressor else classes.tolist()})

    async def on_error(request, exc):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def on_http(request, exc):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def on_disconnect(request, exc):  # nobody reads it: the access log says "client disconnected"
        return Response(status_code=400)

    async def on_other(request, exc):  # one log line and a request id, never a traceback
        rid = _log_failure(request.scope, exc)
        return JSONResponse(_failure_body(rid), status_code=500, headers={"Connection": "close"})

    routes = [Route("/v1/top_k", endpoint(start_top_k), methods=["POST"]),
              Route("/v1/influence", endpoint(start_influence), methods=["POST"]),
              Route("/v1/self_influence", endpoint(start_self_influence), methods=["POST"]),
              Route("/healthz", healthz, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={
        _Error: on_error, HTTPException: on_http, ClientDisconnect: on_disconnect, _Disconnected: on_disconnect,
        Exception: on_other})
    return _Front(app, hosts, token)


def guarded_protocol(request_timeout=DEFAULT_REQUEST_TIMEOUT, max_connections=DEFAULT_MAX_CONNECTIONS):
    """uvicorn's h11 protocol with a deadline for each request and a cap on open connections.

    A connection must deliver a whole request (headers and body) within
    ``request_timeout`` seconds of opening or of its previous answer, else it is
    closed: a slow-loris client holds a socket for seconds, not forever. Beyond
    ``max_connections`` open connections one waiting for its request is closed: the
    oldest of those that sent part of a request, else the oldest of those that sent
    nothing yet (idle), else the new one (every other has a request in hand). A flood
    of slow sockets evicts itself, not a client whose request is still in flight.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._deadline, self._answered = None, None
            self._wait()
            if len(self.connections) > max_connections:
                waiting = [c for c in self.connections if c is not self and getattr(c, "_waiting_since", None)
                           and not c.transport.is_closing()]
                victim = min(waiting, key=lambda c: (not c._partial, c._waiting_since), default=self)
                victim.transport.close()

        def _wait(self):
            """Start the deadline of the next request."""
            self._waiting_since, self._partial = self.loop.time(), False
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(request_timeout, self.transport.close)

        def _check_request(self):
            """Stop the deadline once a new request has arrived whole."""
            cycle = self.cycle
            if self._waiting_since and cycle is not None and cycle is not self._answered and not cycle.more_body:
                self._waiting_since = None
                self._deadline.cancel()

        def data_received(self, data):
            super().data_received(data)
            self._check_request()
            self._partial = self._waiting_since is not None  # part of a request, not all of it

        def on_response_complete(self):
            self._answered = self.cycle
            if not self.transport.is_closing():
                self._wait()
            super().on_response_complete()  # may start a pipelined request
            self._check_request()

        def connection_lost(self, exc):
            self._waiting_since = None
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def _number(kind, low, high=None):
    """argparse type: a ``kind`` (int or float) in [low, high]."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if not (low <= value and (high is None or value <= high)):  # NaN too
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}; got {text}")
        return value
    return parse


def _parser():
    ap = argparse.ArgumentParser(
        prog="fastinfl serve", description="HTTP service over a saved Influence state (POST /v1/top_k, "
        "/v1/influence, /v1/self_influence with Content-Type application/json; GET /healthz).",
        epilog="Ctrl-C (exit status 130) or SIGTERM stops it after the requests in flight; exit status 2: a bad "
        "argument, file or address.")
    ap.add_argument("state", metavar="STATE", help="state file written by Influence.save")
    ap.add_argument("--train", required=True, help="training data the state was computed on (.npz with X and y, "
                    ".npy with labels in the last column, or .csv with a header line); required")
    ap.add_argument("--label", "--label-col", dest="label_col", default=None, metavar="COLUMN",
                    help="CSV label column, by name or 0-based position (-1: the last) (default: the last column; "
                    "the state's checksum of the labels tells a wrong column)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                    "only; 0.0.0.0 for every interface)")
    ap.add_argument("--port", type=_number(int, 0, 65535), default=8000, help="TCP port (default: 8000; 0 picks a free one, "
                    "printed on start)")
    ap.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="also accept requests whose Host header names NAME (repeatable; '*' accepts any; "
                    "default: only the bind address, plus localhost and ::1 for 127.0.0.1)")
    ap.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on /v1/ requests "
                    "(default: the FASTINFL_TOKEN environment variable, which keeps the token out of ps; "
                    "none: no authentication)")
    ap.add_argument("--max-batch", type=_number(int, 1), default=64, metavar="N",
                    help="test points per batched call (default: 64)")
    ap.add_argument("--max-wait-ms", type=_number(float, 0.0), default=2.0, metavar="MS",
                    help="wait for a batch to fill (default: 2 ms)")
    ap.add_argument("--max-queue", type=_number(int, 1), default=4096, metavar="N",
                    help="test points waiting before 503 (default: 4096)")
    ap.add_argument("--no-batching", action="store_true", help="one kernel call per request (default: batching)")
    ap.add_argument("--max-body", type=_number(int, 1), default=DEFAULT_MAX_BODY, metavar="BYTES",
                    help=f"request body bytes, else 413 (default: {DEFAULT_MAX_BODY}, 1 MiB)")
    ap.add_argument("--max-result", type=_number(int, 1), default=DEFAULT_MAX_RESULT, metavar="N",
                    help=f"numbers in a response, else 413 before any work (default: {DEFAULT_MAX_RESULT}, "
                    f"about {DEFAULT_MAX_RESULT * _JSON_BYTES_PER_NUMBER >> 20} MiB of JSON)")
    ap.add_argument("--request-timeout", type=_number(float, 0.001), default=DEFAULT_REQUEST_TIMEOUT, metavar="SECONDS",
                    help=f"seconds for a request's headers and body to arrive, else the connection is closed "
                    f"(default: {DEFAULT_REQUEST_TIMEOUT:g})")
    ap.add_argument("--max-connections", type=_number(int, 1), default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                    help=f"open connections at most; beyond it the oldest one with a partial request is closed (default: "
                    f"{DEFAULT_MAX_CONNECTIONS}, lowered to fit the open-file limit)")
    ap.add_argument("--quiet", action="store_true", help="no access log line per request (default: one line "
                    "per request on stderr)")
    ap.add_argument("--log-level", default="warning", metavar="LEVEL",
                    choices=("critical", "error", "warning", "info", "debug"),
                    help="uvicorn's own log level: critical, error, warning, info or debug (default: warning)")
    return ap


def service_thread_defaults():
    """OMP_WAIT_POLICY=PASSIVE for a service, unless the environment already sets it (call before any kernel).

    With OpenMP's default spin-waiting, idle team threads keep their cores busy, so
    concurrent callers and a second service process starve each other (measured:
    bench/measurement_notes.md, fastinfl/serving.py).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _raise_fd_limit(ceiling=65536):
    """Raise the soft limit of open files towards the hard limit (at most ``ceiling``); return the soft limit."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _listen(host, port):
    """A listening TCP socket on (host, port)."""
    import socket

    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def model_classes(model):
    """The model's labels as an array: ``classes_``, 0 and 1 for a binary model without it; None for a count
    model (a regressor: its y are counts, not classes)."""
    if getattr(model, "_estimator_type", None) == "regressor":
        return None
    classes = getattr(model, "classes_", None)
    return np.array([0, 1]) if classes is None else np.asarray(classes)


def _label_key(value):
    """A dictionary key under which a label and a class compare as in NumPy: 1 == 1.0, True apart, text apart."""
    if isinstance(value, (str, np.str_)):
        return ("s", str(value))
    if isinstance(value, (bool, np.bool_)):
        return ("b", bool(value))
    number = float(value)  # OverflowError for integers beyond float64
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("not a label")
    return ("n", number)


def _valid_key(value):
    try:
        _label_key(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _describe(inf):
    """'2000 rows, 5 features, classes 0, 1' for the listening line."""
    classes = model_classes(inf.model)
    if classes is None:
        return f"{inf.n_samples} rows, {inf.operator.n_features} features, counts ({type(inf.model).__name__})"
    names = [_label_text(c) for c in classes.tolist()]
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    return f"{inf.n_samples} rows, {inf.operator.n_features} features, classes {shown}"


def _label_text(label):
    """A label as the listening line shows it: 0 and 1 for the float labels 0.0 and 1.0 (the JSON number is
    the same), anything else as str()."""
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


class _Terminated(Exception):
    """SIGTERM arrived (re-raised by uvicorn after its graceful shutdown)."""


def _stopped_by_sigterm(signum, frame):
    raise _Terminated()


def serve_main(argv=None):
    """``fastinfl serve STATE --train TRAIN [--host 127.0.0.1] [--port 8000]``: run the service until SIGTERM/Ctrl-C.

    Returns the process exit status: 0 after SIGTERM, 2 for a bad file or address
    (one line on stderr), 130 after Ctrl-C. uvicorn's shutdown on SIGTERM or SIGINT stops
    accepting connections and lets requests in flight complete; the batcher then
    finishes its queue.
    """
    args = _parser().parse_args(argv)
    token = args.token or os.environ.get("FASTINFL_TOKEN") or None
    service_thread_defaults()
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        print("fastinfl serve needs the optional extra 'serve' (starlette and uvicorn): from a checkout, "
              "pip install '.[serve]'", file=sys.stderr)
        return 2
    from ._io import load_dataset
    from .influence import Influence

    def fail(message):
        print(f"fastinfl serve: error: {' '.join(message.split())}", file=sys.stderr)
        return 2

    batcher = None
    try:
        try:
            # the state knows the model: its checksum of the labels catches a wrong column, whatever its values
            train = load_dataset(args.train, label_col=args.label_col, multiclass=True)
            inf = Influence.load(args.state, train.X, train.y)
        except (ValueError, OSError) as exc:  # InputError and StateError are ValueErrors naming the file
            return fail(str(exc))
        try:
            sock = _listen(args.host, args.port)
        except OSError as exc:
            return fail(f"cannot listen on {args.host}:{args.port}: {exc}")
        inf.s_test(train.X[:1], train.y[:1])  # compile or load the kernels before the first request
        inf.top_k(train.X[:1], train.y[:1], k=1)
        fds = _raise_fd_limit()
        max_connections = args.max_connections if fds is None else min(args.max_connections, max(fds - 64, 1))
        if max_connections < args.max_connections:
            print(f"fastinfl serve: note: --max-connections lowered to {max_connections} (open-file limit {fds})",
                  file=sys.stderr)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING if args.quiet else logging.INFO)
        log.propagate = False
        batcher = None if args.no_batching else Batcher(inf, args.max_batch, args.max_wait_ms, args.max_queue)
        app = make_app(inf, batcher, args.max_body, args.max_result, allowed_hosts(args.host, args.allow_host), token)
        config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=30,
                                http=guarded_protocol(args.request_timeout, max_connections))
        host, port = sock.getsockname()[:2]
        print(f"fastinfl serve: listening on http://{f'[{host}]' if ':' in host else host}:{port} "
              f"(model: {_describe(inf)})", flush=True)
        if threading.current_thread() is threading.main_thread():  # uvicorn re-raises SIGTERM once stopped
            signal.signal(signal.SIGTERM, _stopped_by_sigterm)
        sys.setswitchinterval(0.001)  # the event loop waits for the GIL less while workers encode
        uvicorn.Server(config).run(sockets=[sock])
    except _Terminated:
        return 0
    except KeyboardInterrupt:
        print("fastinfl serve: interrupted", file=sys.stderr)
        return 130
    finally:
        if batcher is not None:
            batcher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
