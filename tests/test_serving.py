"""Micro-batching (Batcher) and the HTTP service (a real uvicorn server on 127.0.0.1, spoken to over HTTP)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastinfl
from fastinfl.serving import Batcher, QueueFull


@pytest.fixture(scope="module")
def problem():
    X, y, _ = fastinfl.datasets.make_logistic(2000, 5, seed=0, dtype=np.float64)
    Xt, yt, _ = fastinfl.datasets.make_logistic(20, 5, seed=1, dtype=np.float64)
    inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(X, y), X, y)
    return inf, X, y, Xt, yt


def _assert_top_k_equal(got, want):
    for g, w in zip(got, want):
        if g.dtype.kind == "i":
            np.testing.assert_array_equal(g, w)
        else:  # batched solve and block products may sum in another order: rounding only
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)


def test_import_fastinfl_does_not_import_a_web_framework():
    code = ("import sys, fastinfl, fastinfl.serving; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_batcher_coalesces_and_matches_unbatched_calls(problem):
    inf, _, _, Xt, yt = problem
    with Batcher(inf, max_batch=8, max_wait_ms=2000) as batcher:
        # 20 single-point requests queued at once: batches of 8, 8 and 4 (the last after max_wait)
        futures = [batcher.submit_top_k(Xt[i:i + 1], yt[i:i + 1], k=1 + i % 5) for i in range(20)]
        results = [f.result(timeout=60) for f in futures]
        assert batcher.batches_ == 3
    for i, top in enumerate(results):
        _assert_top_k_equal(top, inf.top_k(Xt[i:i + 1], yt[i:i + 1], k=1 + i % 5))


def test_batcher_stops_waiting_once_as_large_as_recent_batches(problem):
    """Callers who wait for their answers come back as many as the last batch held: the next batch goes
    as soon as they are in, not after max_wait (here a minute: the futures' timeout would fire first)."""
    inf, _, _, Xt, yt = problem
    with Batcher(inf, max_batch=64, max_wait_ms=60_000) as batcher:
        batcher._lanes[0].recent_rows = 4  # as after batches of 4 (it starts at max_batch: the first batches wait)
        futures = [batcher.submit_top_k(Xt[i:i + 1], yt[i:i + 1], k=3) for i in range(4)]
        for i, f in enumerate(futures):
            _assert_top_k_equal(f.result(timeout=30), inf.top_k(Xt[i:i + 1], yt[i:i + 1], k=3))
        assert batcher.batches_ == 1 and batcher._lanes[0].recent_rows == 4


def test_batcher_from_many_threads(problem):
    inf, _, _, Xt, yt = problem
    idx = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    results, errors = {}, []
    with Batcher(inf, max_batch=16, max_wait_ms=5) as batcher:
        def caller(t):
            try:
                for rep in range(5):
                    i = (t + rep) % 20
                    results[("top_k", t, rep)] = (i, batcher.top_k(Xt[i:i + 1], yt[i:i + 1], k=4))
                    results[("infl", t, rep)] = (i, batcher.influence(Xt[i:i + 1], yt[i:i + 1], train_idx=idx))
                    results[("all", t, rep)] = (i, batcher.influence(Xt[i:i + 1], yt[i:i + 1]))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(results) == 12 * 5 * 3
    for (kind, _, _), (i, got) in results.items():
        x, label = Xt[i:i + 1], yt[i:i + 1]
        if kind == "top_k":
            _assert_top_k_equal(got, inf.top_k(x, label, k=4))
        else:
            want = inf.influence(x, label, train_idx=idx if kind == "infl" else None)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15 * np.abs(want).max())


class _Gated:
    """An Influence whose top_k waits for a gate (to hold the dispatcher busy), or fails."""

    def __init__(self, inf, fail=False):
        self.inf, self.fail, self.gate = inf, fail, threading.Event()
        self.n_samples = inf.n_samples

    def test_operator(self, X, y, name):
        return self.inf.test_operator(X, y, name)

    def top_k(self, X, y, k):
        self.gate.wait(60)
        if self.fail:
            raise fastinfl.ConvergenceError("boom")
        return self.inf.top_k(X, y, k=k)


def test_batcher_validates_in_the_caller_bounds_its_queue_and_reports_errors(problem):
    inf, _, _, Xt, yt = problem
    gated = _Gated(inf)
    batcher = Batcher(gated, max_batch=1, max_wait_ms=0, max_queue=2)
    with pytest.raises(ValueError, match="k must be <= the number of training points"):
        batcher.submit_top_k(Xt[:1], yt[:1], k=5000)
    with pytest.raises(ValueError, match="X_test has 4 features but the model has 5"):
        batcher.submit_top_k(Xt[:1, :4], yt[:1])
    first = batcher.submit_top_k(Xt[:1], yt[:1], k=2)  # taken by the dispatcher, which waits at the gate
    while batcher.queued:
        time.sleep(0.01)
    queued = [batcher.submit_top_k(Xt[i:i + 1], yt[i:i + 1], k=2) for i in (1, 2)]
    with pytest.raises(QueueFull, match="max_queue=2"):
        batcher.submit_top_k(Xt[3:4], yt[3:4], k=2)
    gated.gate.set()
    batcher.close()  # finishes what was queued
    for i, f in zip((0, 1, 2), [first, *queued]):
        _assert_top_k_equal(f.result(timeout=60), inf.top_k(Xt[i:i + 1], yt[i:i + 1], k=2))
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit_top_k(Xt[:1], yt[:1])

    failing = _Gated(inf, fail=True)
    failing.gate.set()
    with Batcher(failing) as batcher:
        with pytest.raises(fastinfl.ConvergenceError, match="boom"):
            batcher.top_k(Xt[:1], yt[:1], k=2)


class _Recording:
    """An Influence that records the k of every top_k call; calls wait for a gate."""

    def __init__(self, inf):
        self.inf, self.ks, self.gate = inf, [], threading.Event()
        self.n_samples = inf.n_samples

    def test_operator(self, X, y, name):
        return self.inf.test_operator(X, y, name)

    def top_k(self, X, y, k):
        self.gate.wait(60)
        self.ks.append((X.shape[0], k))
        return self.inf.top_k(X, y, k=k)


def test_batcher_never_runs_a_small_k_request_at_a_large_k(problem):
    """k=1500 requests queued beside k=10 and k=40 ones: the small ones are batched together at k=40, the large
    ones apart (their own dispatcher), and every answer equals its unbatched call."""
    inf, _, _, Xt, yt = problem
    spy = _Recording(inf)
    ks = [10, 1500, 40, 1500, 10, 1500, 40, 10]
    with Batcher(spy, max_batch=64, max_wait_ms=500) as batcher:
        futures = [batcher.submit_top_k(Xt[i:i + 1], yt[i:i + 1], k=k) for i, k in enumerate(ks)]
        spy.gate.set()
        results = [f.result(timeout=60) for f in futures]
    assert sorted(spy.ks) == [(3, 1500), (5, 40)]
    for i, (k, top) in enumerate(zip(ks, results)):
        assert top.harmful_idx.shape == (1, k)
        _assert_top_k_equal(top, inf.top_k(Xt[i:i + 1], yt[i:i + 1], k=k))


def test_batcher_k_classes():
    from fastinfl.serving import _k_class

    assert [_k_class(k) for k in (1, 64, 65, 128, 129, 256, 257, 20000)] == [0, 0, 1, 1, 2, 2, 3, 9]


def test_batcher_drops_requests_cancelled_while_queued(problem):
    inf, _, _, Xt, yt = problem
    spy = _Recording(inf)
    with Batcher(spy, max_batch=1, max_wait_ms=0) as batcher:
        first = batcher.submit_top_k(Xt[:1], yt[:1], k=3)  # taken by the dispatcher, held at the gate
        while batcher.queued:
            time.sleep(0.01)
        dropped = batcher.submit_top_k(Xt[1:2], yt[1:2], k=4)
        kept = batcher.submit_top_k(Xt[2:3], yt[2:3], k=5)
        assert dropped.cancel() and not first.cancel()  # queued: cancellable; running: not
        spy.gate.set()
        _assert_top_k_equal(kept.result(timeout=60), inf.top_k(Xt[2:3], yt[2:3], k=5))
        _assert_top_k_equal(first.result(timeout=60), inf.top_k(Xt[:1], yt[:1], k=3))
    assert spy.ks == [(1, 3), (1, 5)] and dropped.cancelled()


# ------------------------------------------------------------------ the HTTP service
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, inf, X, y, *args):
        self.port = _free_port()
        state = inf.save(tmp_path / "state.npz")
        np.savez(tmp_path / "train.npz", X=X, y=y)
        self.log_path = tmp_path / "server.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastinfl.serving", str(state), "--train", str(tmp_path / "train.npz"),
                 "--port", str(self.port), *args], stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not start: {self.log_path.read_text()}")
            time.sleep(0.2)

    def post(self, path, body=None, content=None):
        import httpx

        if content is None:
            content = json.dumps(body)  # allows NaN tokens, as a careless client would send
        return httpx.post(self.url + path, content=content, headers={"content-type": "application/json"},
                          timeout=60)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory, problem):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    inf, X, y, _, _ = problem
    srv = Server(tmp_path_factory.mktemp("serve"), inf, X, y, "--max-body", "20000", "--max-result", "5000")
    yield srv
    srv.stop()


def test_endpoints_answer_like_the_library(server, problem):
    import httpx

    inf, _, _, Xt, yt = problem
    health = httpx.get(server.url + "/healthz", timeout=30).json()
    assert health == {"status": "ok", "n_train": 2000, "n_features": 5, "n_params": 6, "classes": [0, 1]}
    r = server.post("/v1/top_k", {"X": Xt[:3].tolist(), "y": yt[:3].tolist(), "k": 4})
    assert r.status_code == 200
    got = r.json()
    want = inf.top_k(Xt[:3], yt[:3], k=4)
    for name in want._fields:
        np.testing.assert_allclose(np.array(got[name], dtype=float), getattr(want, name), rtol=1e-12)
    idx = [0, 10, 1999]
    r = server.post("/v1/influence", {"X": Xt[:2].tolist(), "y": yt[:2].tolist(), "train_idx": idx})
    np.testing.assert_allclose(r.json()["influence"], inf.influence(Xt[:2], yt[:2], idx), rtol=1e-12)
    r = server.post("/v1/self_influence", {"train_idx": idx})
    np.testing.assert_allclose(r.json()["self_influence"], inf.self_influence(idx), rtol=1e-12)


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/top_k", "{not json", 400, "not valid JSON"),
    ("/v1/top_k", "[1, 2]", 400, "must be a JSON object"),
    ("/v1/top_k", {"y": [1]}, 422, "missing field 'X'"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4]], "y": [1]}, 422, "X_test has 4 features but the model has 5"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [2]}, 422, "y holds 2, which is not one of the model's classes (0, 1)"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": ["1"]}, 422, "y holds '1', which is not one of the model's classes"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [[1]]}, 422, "y must be a list of labels"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4]]}, 422, "X has 4 features"),
    ("/v1/top_k", {"X": [[1, 2, float("nan"), 4, 5]], "y": [1]}, 422, "NaN or inf"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [1], "k": 0}, 422, "k must be >= 1"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [1], "k": 2001}, 422, "k must be <= the number of training"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [1], "k": "3"}, 422, "k must be an integer"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5], [1, 2]], "y": [1, 0]}, 422, "X:"),
    ("/v1/top_k", {"X": [[1, "a", 3, 4, 5]], "y": [1]}, 422, "X must be a list of lists of numbers"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [1, 0]}, 422, "has 2 labels but X_test has 1 rows"),
    ("/v1/top_k", {"X": [[1, 2, 3, 4, 5]], "y": [1], "k": 2000}, 413, "more than the limit of 5000"),
    ("/v1/influence", {"X": [[1, 2, 3, 4, 5]], "y": [1], "train_idx": [2000]}, 422, "out of range"),
    ("/v1/influence", {"X": [[1, 2, 3, 4, 5]] * 3, "y": [1] * 3}, 413, "influence matrix would hold 6000"),
    ("/v1/self_influence", {"train_idx": [1.5]}, 422, "train_idx must be a list of integers"),
    ("/v1/top_k", {"X": [[0.5] * 5] * 1000, "y": [1] * 1000}, 413, "exceeds the limit of 20000 bytes"),
])
def test_bad_requests_get_4xx_with_an_error_never_500(server, path, body, status, message):
    r = server.post(path, content=body if isinstance(body, str) else None, body=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_unknown_routes_and_methods(server):
    import httpx

    r = httpx.get(server.url + "/v1/nothing", timeout=30)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(server.url + "/v1/top_k", timeout=30)
    assert r.status_code == 405 and "error" in r.json()


def test_full_queue_gets_503_and_sigterm_lets_requests_in_flight_complete(tmp_path, problem):
    pytest.importorskip("starlette")
    inf, X, y, Xt, yt = problem
    # One test point may wait (max_queue 1) and a batch waits 3 s to fill (max_wait): the first
    # request is still waiting when the second arrives and when SIGTERM is sent.
    srv = Server(tmp_path, inf, X, y, "--max-queue", "1", "--max-wait-ms", "3000")
    try:
        first = {}
        t = threading.Thread(target=lambda: first.update(r=srv.post(
            "/v1/top_k", {"X": Xt[:1].tolist(), "y": yt[:1].tolist(), "k": 3})))
        t.start()
        time.sleep(1.0)
        busy = srv.post("/v1/top_k", {"X": Xt[1:2].tolist(), "y": yt[1:2].tolist(), "k": 3})
        assert busy.status_code == 503 and "server busy" in busy.json()["error"]
        srv.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert first["r"].status_code == 200
        np.testing.assert_array_equal(first["r"].json()["harmful_idx"], inf.top_k(Xt[:1], yt[:1], k=3).harmful_idx)
        assert srv.stop() == 0  # SIGTERM is the ordinary way to stop a service
    finally:
        srv.stop()


def test_serve_main_reports_bad_files(tmp_path, problem, capsys):
    from fastinfl.serving import serve_main

    inf, X, y, _, _ = problem
    state = inf.save(tmp_path / "state.npz")
    np.savez(tmp_path / "other.npz", X=X[:100], y=y[:100])
    assert serve_main([str(state), "--train", str(tmp_path / "other.npz")]) == 2
    assert "X_train has shape (100, 5) but the state" in capsys.readouterr().err
    assert serve_main([str(tmp_path / "missing.npz"), "--train", str(tmp_path / "other.npz")]) == 2
    assert os.path.exists(state)


def test_service_sets_a_passive_openmp_wait_policy_unless_one_is_set(monkeypatch):
    from fastinfl.serving import service_thread_defaults

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    service_thread_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    service_thread_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_labels_are_the_models_own_values_and_omitted_means_predicted(tmp_path):
    """issue 24: a model trained on "a"/"b"/"c" is queried with "y": ["a"], answers with its labels, and
    explains its predictions when y is omitted or null."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    rng = np.random.default_rng(24)
    X = rng.standard_normal((300, 3))
    names = np.array(["a", "b", "c"])
    y = names[np.argmax(X @ rng.standard_normal((3, 3)) + rng.standard_normal((300, 3)), axis=1)]
    model = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X, y)
    inf = fastinfl.Influence(model, X, y)
    Xt = rng.standard_normal((3, 3))
    srv = Server(tmp_path, inf, X, y)
    try:
        assert srv.post("/v1/top_k", {"X": Xt[:1].tolist(), "y": ["a"], "k": 3}).status_code == 200
        r = srv.post("/v1/top_k", {"X": Xt.tolist(), "y": ["a", "c", "b"], "k": 3})
        got = r.json()
        assert got["y"] == ["a", "c", "b"]
        _assert_top_k_equal([np.array(got[f], dtype=np.asarray(v).dtype) for f, v in
                             zip(fastinfl.TopK._fields, inf.top_k(Xt, np.array(["a", "c", "b"]), 3), strict=True)],
                            inf.top_k(Xt, np.array(["a", "c", "b"]), 3))
        pred = model.predict(Xt)
        for body in ({"X": Xt.tolist(), "k": 3}, {"X": Xt.tolist(), "y": None, "k": 3}):
            got = srv.post("/v1/top_k", body).json()
            assert got["y"] == pred.tolist()
            np.testing.assert_array_equal(got["harmful_idx"], inf.top_k(Xt, pred, 3).harmful_idx)
        got = srv.post("/v1/influence", {"X": Xt[:2].tolist(), "train_idx": [0, 5]}).json()
        assert got["y"] == pred[:2].tolist()
        np.testing.assert_allclose(got["influence"], inf.influence(Xt[:2], pred[:2], [0, 5]), rtol=1e-12)
        r = srv.post("/v1/top_k", {"X": Xt[:1].tolist(), "y": [0]})
        assert r.status_code == 422
        assert r.json()["error"] == "y holds 0, which is not one of the model's classes (\"a\", \"b\", \"c\")"
        import httpx

        assert httpx.get(srv.url + "/healthz", timeout=30).json()["classes"] == ["a", "b", "c"]
    finally:
        srv.stop()
    assert "classes a, b, c" in srv.log_path.read_text()


def test_binary_labels_omitted_are_the_predicted_ones(server, problem):
    inf, X, y, Xt, yt = problem
    got = server.post("/v1/top_k", {"X": Xt[:4].tolist(), "k": 2}).json()
    pred = inf.model.predict(Xt[:4])
    assert got["y"] == np.asarray(pred).astype(int).tolist()
    np.testing.assert_array_equal(got["helpful_idx"], inf.top_k(Xt[:4], np.asarray(pred, float), 2).helpful_idx)
    got = server.post("/v1/top_k", {"X": Xt[:2].tolist(), "y": [1.0, 0], "k": 2}).json()
    assert got["y"] == [1, 0]


def test_a_count_model_is_served_with_observed_counts(tmp_path):
    """A PoissonRegression state: y holds counts (not classes), is required, and /healthz has no classes."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    import httpx

    rng = np.random.default_rng(25)
    X = rng.standard_normal((200, 3))
    y = rng.poisson(np.exp(0.3 * X[:, 0])).astype(np.float64)
    inf = fastinfl.Influence(fastinfl.PoissonRegression(l2=1.0).fit(X, y), X, y)
    Xt, yt = X[:2] + 0.1, np.array([3.0, 0.0])
    srv = Server(tmp_path, inf, X, y)
    try:
        got = srv.post("/v1/top_k", {"X": Xt.tolist(), "y": yt.tolist(), "k": 3}).json()
        assert got["y"] == [3.0, 0.0]
        np.testing.assert_array_equal(got["harmful_idx"], inf.top_k(Xt, yt, 3).harmful_idx)
        r = srv.post("/v1/top_k", {"X": Xt.tolist(), "k": 3})
        assert r.status_code == 422 and "y is required for a count model" in r.json()["error"]
        assert httpx.get(srv.url + "/healthz", timeout=30).json()["classes"] is None
    finally:
        srv.stop()
    assert "counts (PoissonRegression)" in srv.log_path.read_text()
