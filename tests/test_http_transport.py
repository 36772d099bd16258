"""HTTPTransport's promises, checked directly against a small local Starlette app under uvicorn (no language model is
involved: the app answers fixed JSON, statuses, hangs and plain text on purpose): retries on 503 then success, a 429's
Retry-After honoured, a 400 not retried, a hang cut by the total deadline, a refused connection classified as
retryable, a 200 that is not JSON failing as a BackendError, pooled keep-alive connections, the concurrency bound, and
pools released when their event loop is gone."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from grm_plugin.backends.http import HTTPTransport, RetryPolicy
from grm_plugin.errors import BackendError

FAST = RetryPolicy(max_retries=3, backoff=0.01, backoff_max=0.05)


class App:
    """The test server: what each route does is in its name; ``key`` (a query parameter) separates the tests' counts."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.peers: defaultdict[str, set[int]] = defaultdict(set)
        self.bodies: dict[str, object] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.inflight = self.max_inflight = 0
        self.app = Starlette(routes=[Route(f"/{name}", getattr(self, name), methods=["GET", "POST"]) for name in
                                     ("ok", "flaky", "limited", "bad", "hang", "trickle", "text", "slow", "error_text")])

    def _seen(self, request: Request) -> tuple[str, int]:
        key = request.query_params.get("key", "")
        self.calls[key] += 1
        self.times[key].append(time.monotonic())
        self.peers[key].add(request.client.port)
        return key, self.calls[key]

    async def ok(self, request: Request) -> Response:
        key, _ = self._seen(request)
        if request.method == "POST":
            self.bodies[key] = await request.json()
        self.headers[key] = dict(request.headers)
        return JSONResponse({"ok": True, "key": key})

    async def flaky(self, request: Request) -> Response:  # 503 twice, then an answer
        key, n = self._seen(request)
        if n <= 2:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        return JSONResponse({"attempt": n})

    async def limited(self, request: Request) -> Response:  # 429 with Retry-After: 1, then an answer
        key, n = self._seen(request)
        if n == 1:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "1"})
        return JSONResponse({"attempt": n})

    async def bad(self, request: Request) -> Response:
        self._seen(request)
        return JSONResponse({"error": {"message": "prompt too long"}}, status_code=400)

    async def hang(self, request: Request) -> Response:
        self._seen(request)
        await asyncio.sleep(60)
        return JSONResponse({})

    async def trickle(self, request: Request) -> Response:  # a byte every 50 ms: every read is quick
        self._seen(request)

        async def body():
            for _ in range(2000):
                yield b" "
                await asyncio.sleep(0.05)
            yield b"{}"
        return StreamingResponse(body(), media_type="application/json")

    async def text(self, request: Request) -> Response:
        self._seen(request)
        return PlainTextResponse("<html>a proxy login page</html>")

    async def error_text(self, request: Request) -> Response:
        self._seen(request)
        return PlainTextResponse("upstream gone", status_code=502)

    async def slow(self, request: Request) -> Response:
        self._seen(request)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.inflight -= 1
        return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def server():
    app = App()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app.app, log_level="warning", access_log=False, lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.01)
    app.url = f"http://127.0.0.1:{port}"
    yield app
    uv.should_exit = True
    thread.join(timeout=10)


def refused_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/models"


async def test_posts_json_with_the_bearer_token_and_returns_the_parsed_answer(server):
    transport = HTTPTransport(api_key="sk-test", retry=FAST)
    body = {"messages": [{"role": "user", "content": "héllo ✓"}], "n": 2}
    assert await transport.request_json("POST", f"{server.url}/ok?key=post", body) == {"ok": True, "key": "post"}
    assert server.bodies["post"] == body
    headers = server.headers["post"]
    assert headers["authorization"] == "Bearer sk-test" and headers["content-type"] == "application/json"
    assert await transport.request_json("GET", f"{server.url}/ok?key=get") == {"ok": True, "key": "get"}
    await transport.aclose()


async def test_a_503_is_retried_then_the_answer_returned(server):
    transport = HTTPTransport(retry=FAST)
    assert await transport.request_json("POST", f"{server.url}/flaky?key=503", {"x": 1}) == {"attempt": 3}
    assert server.calls["503"] == 3
    await transport.aclose()


async def test_a_503_after_the_retries_names_status_attempts_and_the_servers_message(server):
    transport = HTTPTransport(retry=RetryPolicy(max_retries=1, backoff=0.01))
    with pytest.raises(BackendError) as info:
        await transport.request_json("POST", f"{server.url}/flaky?key=503-give-up", {})
    error = info.value
    assert (error.status, error.attempts, error.retryable) == (503, 2, True)
    assert error.endpoint == f"{server.url}/flaky?key=503-give-up"
    assert str(error) == (f"POST {server.url}/flaky?key=503-give-up failed with status 503 on attempt 2: overloaded"
                          " (gave up after 2 attempts)")
    await transport.aclose()


async def test_a_429s_retry_after_is_honoured(server):
    transport = HTTPTransport(retry=RetryPolicy(max_retries=2, backoff=0.01, backoff_max=5.0))
    assert await transport.request_json("POST", f"{server.url}/limited?key=429", {}) == {"attempt": 2}
    first, second = server.times["429"]
    assert second - first >= 0.95  # the server's 1 s, not the 0.01 s backoff
    await transport.aclose()


async def test_a_400_is_not_retried_and_carries_the_servers_message(server):
    transport = HTTPTransport(retry=FAST)
    with pytest.raises(BackendError) as info:
        await transport.request_json("POST", f"{server.url}/bad?key=400", {})
    error = info.value
    assert (error.status, error.attempts, error.retryable) == (400, 1, False)
    assert str(error) == f"POST {server.url}/bad?key=400 failed with status 400 on attempt 1: prompt too long"
    assert server.calls["400"] == 1
    await transport.aclose()


async def test_a_5xx_with_a_text_body_reports_the_text(server):
    transport = HTTPTransport(retry=RetryPolicy(max_retries=0))
    with pytest.raises(BackendError, match=r"failed with status 502 on attempt 1: upstream gone \(gave up"):
        await transport.request_json("GET", f"{server.url}/error_text?key=502")
    await transport.aclose()


async def test_a_hang_is_cut_by_the_total_deadline_and_the_pool_still_works(server):
    transport = HTTPTransport(timeout=0.5, retry=RetryPolicy(max_retries=1, backoff=0.01))
    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"timed out \(deadline 0.5 s\) on attempt 2: .*gave up after 2 attempts"
                       ) as info:
        await transport.request_json("POST", f"{server.url}/hang?key=hang", {})
    assert time.perf_counter() - started < 5
    assert (info.value.status, info.value.attempts, info.value.retryable) == (None, 2, True)
    assert server.calls["hang"] == 2
    assert await transport.request_json("GET", f"{server.url}/ok?key=after-hang") == {"ok": True, "key": "after-hang"}
    await transport.aclose()


async def test_the_deadline_covers_a_body_trickled_a_byte_at_a_time(server):
    transport = HTTPTransport(timeout=0.5, retry=RetryPolicy(max_retries=0))
    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"timed out \(deadline 0.5 s\) on attempt 1"):
        await transport.request_json("GET", f"{server.url}/trickle?key=trickle")
    assert time.perf_counter() - started < 5
    await transport.aclose()


async def test_a_refused_connection_is_a_retryable_connection_failure():
    transport = HTTPTransport(retry=RetryPolicy(max_retries=2, backoff=0.01))
    url = refused_url()
    with pytest.raises(BackendError) as info:
        await transport.request_json("GET", url)
    error = info.value
    assert (error.status, error.attempts, error.retryable, error.endpoint) == (None, 3, True, url)
    assert str(error).startswith(f"GET {url} connection failed on attempt 3: ")
    assert str(error).endswith("(gave up after 3 attempts)")
    await transport.aclose()


async def test_a_200_that_is_not_json_is_a_backend_error_and_not_retried(server):
    transport = HTTPTransport(retry=FAST)
    with pytest.raises(BackendError) as info:
        await transport.request_json("POST", f"{server.url}/text?key=text", {})
    error = info.value
    assert (error.status, error.attempts, error.retryable) == (200, 1, False)
    assert str(error).startswith(f"POST {server.url}/text?key=text returned status 200 with a body that is not JSON: "
                                 "'<html>a proxy")
    assert server.calls["text"] == 1
    await transport.aclose()


async def test_a_url_that_is_not_http_fails_at_once():
    transport = HTTPTransport(retry=FAST)
    with pytest.raises(BackendError, match="not an http") as info:
        await transport.request_json("GET", "ftp://127.0.0.1/x")
    assert info.value.attempts == 1 and not info.value.retryable
    await transport.aclose()


async def test_try_once_makes_one_attempt_and_returns_the_failure(server):
    transport = HTTPTransport(retry=FAST)
    assert await transport.try_once("GET", f"{server.url}/ok?key=probe") is None
    failure = await transport.try_once("GET", f"{server.url}/flaky?key=probe-503")
    assert isinstance(failure, BackendError) and failure.status == 503 and server.calls["probe-503"] == 1
    failure = await transport.try_once("GET", f"{server.url}/text?key=probe-text")
    assert isinstance(failure, BackendError) and "not JSON" in str(failure)
    failure = await transport.try_once("GET", refused_url())
    assert isinstance(failure, BackendError) and failure.retryable and "connection failed on attempt 1" in str(failure)
    await transport.aclose()


async def test_connections_are_pooled_and_kept_alive(server):
    transport = HTTPTransport(max_concurrency=4, retry=FAST)
    for _ in range(5):
        await asyncio.gather(*(transport.request_json("GET", f"{server.url}/ok?key=pool") for _ in range(8)))
    assert server.calls["pool"] == 40 and len(server.peers["pool"]) <= 4  # at most one connection per slot
    await transport.aclose()


async def test_requests_in_flight_are_bounded_by_max_concurrency(server):
    transport = HTTPTransport(max_concurrency=3, retry=FAST)
    server.max_inflight = 0
    await asyncio.gather(*(transport.request_json("GET", f"{server.url}/slow?key=bound") for _ in range(12)))
    assert server.max_inflight == 3
    await transport.aclose()


def test_a_new_event_loop_per_call_leaves_no_pool_behind_and_it_pickles(server):
    """Hosts such as ms-swift run each step in a new asyncio.run loop: the pools of closed loops are released."""
    transport = pickle.loads(pickle.dumps(HTTPTransport(max_concurrency=4, retry=FAST)))
    for _ in range(4):
        assert asyncio.run(transport.request_json("GET", f"{server.url}/ok?key=loops"))["ok"]
    assert len([p for p in transport._pools.values() if p.session is not None]) == 1


def test_an_unclosed_transport_exits_without_aiohttps_unclosed_warnings(server):
    script = f"""
import asyncio
from grm_plugin._sync import run_sync
from grm_plugin.backends.http import HTTPTransport
t = HTTPTransport()
async def main():
    return await asyncio.gather(*(t.request_json("GET", {server.url + '/ok?key=exit'!r}) for _ in range(8)))
print(len(run_sync(main())))
for _ in range(2):
    asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "8", done.stderr
    assert "Unclosed" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_json_bodies_are_compact_utf8_and_refuse_nan():
    from grm_plugin.backends.http import _encode

    assert _encode({"a": "é", "b": [1, 2]}) == json.dumps({"a": "é", "b": [1, 2]}, ensure_ascii=False,
                                                            separators=(",", ":")).encode()
    assert _encode(None) is None
    with pytest.raises(ValueError):
        _encode({"x": float("nan")})
