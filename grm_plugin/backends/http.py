"""The one HTTP transport of the engines: JSON requests over pooled aiohttp connections, with one retry policy.

aiohttp is the asyncio HTTP client OpenRLHF and TRL's rollout workers use; on a judge's traffic (64 requests in
flight, a few KB each way) it costs about a seventh of the CPU per request of httpx2, whose pool and per-request
machinery were the largest cost per rollout in ``grm serve`` (``benchmarks/bench_http_clients.py``).

``HTTPTransport`` keeps one pooled ``aiohttp.ClientSession`` and one ``max_concurrency`` semaphore per event loop,
made lazily inside it. ``RetryPolicy`` says what is retried (408, 409, 425, 429, 5xx, connection errors, timeouts: the
failures where trying again is safe) and how long to wait (jittered exponential backoff, raised to a server's
``Retry-After``); any other 4xx fails at once with the server's own message. The LangChain engine, whose failures
are a provider SDK's exceptions rather than responses, retries with the same policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import random
import urllib.request
import weakref
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .._sync import PerLoop
from ..errors import BackendError

logger = logging.getLogger("grm_plugin.backends.http")

# HTTP statuses below 500 that mean "try again later"; every 5xx is retried too (RetryPolicy.is_retryable).
RETRY_STATUSES = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed engine call is tried again, and after how long.

    Args:
        max_retries: retries after the first attempt (0: never retry).
        backoff: the first delay in seconds; it doubles per attempt.
        backoff_max: upper bound on one delay, seconds.

    Example:
        >>> policy = RetryPolicy(max_retries=2, backoff=1.0, backoff_max=8.0)
        >>> [policy.is_retryable(status) for status in (400, 404, 429, 503)]
        [False, False, True, True]
        >>> 2.0 <= policy.delay(3) <= 4.0, policy.delay(1, hint=30.0)
        (True, 8.0)
    """

    max_retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 20.0

    @staticmethod
    def is_retryable(status: int) -> bool:
        """Whether an HTTP status is worth retrying: 408, 409, 425, 429 and every 5xx."""
        return status in RETRY_STATUSES or status >= 500

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): exponential from ``backoff``, capped at
        ``backoff_max``, jittered over its upper half so many callers spread apart; a server's ``Retry-After``
        ``hint`` raises it (up to ``backoff_max``)."""
        delay = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        delay = random.uniform(0.5 * delay, delay)
        if hint is not None:
            delay = min(self.backoff_max, max(delay, hint))
        return delay

    async def wait_or_raise(self, failure: BackendError, hint: float | None = None) -> None:
        """After the failed attempt ``failure.attempts``: raise ``failure`` when it is not retryable or the retries
        are spent (then saying how many attempts were made), else log it and sleep the backoff delay."""
        attempt = failure.attempts
        if not failure.retryable or attempt > self.max_retries:
            if failure.retryable:
                failure.args = (f"{failure.args[0]} (gave up after {attempt} attempts)",)
            raise failure
        delay = self.delay(attempt, hint)
        logger.warning("%s; retrying in %.2fs", failure, delay)
        await asyncio.sleep(delay)


def retry_after(headers: Any) -> float | None:
    """A ``Retry-After`` header in seconds (None when absent or not a number of seconds)."""
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value else None
    except (TypeError, ValueError, AttributeError):
        return None


def server_message(response: Any) -> str:
    """The error message a server put in its reply (OpenAI's ``error.message``, FastAPI's ``detail``, ...), at most
    500 characters; the reply's text or reason when it has none. ``response``: anything with ``json()``, ``text``
    and ``reason_phrase`` (an httpx/httpx2 response, or the transport's buffered reply)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:500].strip() or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(data.get("detail"), str):
            return data["detail"][:500]
        if isinstance(error, str):
            return error[:500]
    return str(data)[:500]


@dataclass(frozen=True)
class _Reply:
    """A reply read whole inside the call's deadline."""

    status_code: int
    headers: Any  # case-insensitive (a multidict)
    content: bytes
    reason_phrase: str
    charset: str | None = None

    def json(self) -> Any:
        return json.loads(self.content)  # bytes: UTF-8/16/32 detected as the JSON RFC says; errors are ValueErrors

    @property
    def text(self) -> str:
        return self.content.decode(self.charset or "utf-8", errors="replace")


def _ssl_context() -> Any:
    """What verifies TLS: the system's certificates (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured, as httpx2 did);
    on macOS and Windows the OS trust store through ``truststore`` when it is installed, where Python's own default
    store is often empty."""
    if platform.system() in ("Windows", "Darwin"):
        try:
            import ssl

            import truststore
        except ImportError:
            return True
        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True  # aiohttp's default context: ssl.create_default_context()


# Connection-level failures worth another attempt: refused/reset/closed connections (ClientConnectionError,
# ServerDisconnectedError), truncated bodies (ClientPayloadError), malformed HTTP (ClientResponseError) and raw OS
# errors, timeouts. A URL that is not http(s) is never retried.
_NOT_RETRIED = (aiohttp.InvalidURL, getattr(aiohttp, "NonHttpUrlClientError", aiohttp.InvalidURL))  # the 2nd: 3.10+
_CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)  # the last: Python 3.10's


@dataclass(eq=False)
class _Pool:
    """One event loop's session, the semaphore bounding its requests in flight, and the proxy of each origin."""

    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    loop: asyncio.AbstractEventLoop
    proxies: dict[str, str | None] = field(default_factory=dict)
    release: weakref.finalize | None = None

    def proxy(self, url: str) -> str | None:
        """The proxy the environment names for ``url`` (``HTTP(S)_PROXY``/``ALL_PROXY`` less ``NO_PROXY``), as
        httpx2's ``trust_env`` read them; looked up once per origin (aiohttp's own ``trust_env`` does it in a
        thread per request, and reads ``~/.netrc``, which clashes with our ``Authorization`` header)."""
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        if key not in self.proxies:
            proxies = urllib.request.getproxies_environment()
            scheme, host = origin[0].rstrip(":").lower(), origin[2].rsplit("@", 1)[-1] if len(origin) > 2 else ""
            proxy = proxies.get(scheme) or proxies.get("all")
            if proxy and urllib.request.proxy_bypass_environment(host, proxies):
                proxy = None
            self.proxies[key] = proxy or None
        return self.proxies[key]

    def forget(self) -> None:
        """Let go of a pool whose loop is closed: its session is released and the pool no longer holds the loop,
        so the loop (and this pool, the per-loop entry) can be collected."""
        if self.release is not None:
            self.release()
        self.session = self.semaphore = self.loop = None  # type: ignore[assignment]


def _release(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Release a session that was never closed, where it cannot be awaited: its transport was collected, its loop
    closed, or the interpreter is exiting (without this aiohttp logs "Unclosed client session" for each). Where no
    other thread runs its loop, its connections are shut now (on a closed loop they close when collected); a loop
    running in another thread is not touched from this one: the session is only marked closed, and the server drops
    its idle connections after its keep-alive."""
    connector = session.connector
    session.detach()
    if connector is None or connector.closed:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    # aiohttp's synchronous close, and its closed flag (the public close() is a coroutine of that loop).
    if loop.is_closed() or not loop.is_running() or running is loop:
        connector._close()
    else:
        connector._closed = True


class HTTPTransport:
    """JSON requests with the retry policy, over one pooled client per event loop.

    Args:
        api_key: bearer token; defaults to ``OPENAI_API_KEY`` or ``EMPTY`` (what vLLM accepts).
        timeout: seconds one attempt may take in all, however the server trickles its answer (connecting: at most
            10).
        max_concurrency: requests in flight at once, per event loop.
        retry: the retry policy.

    Pickles by its settings (clients are made again, lazily, where it is unpickled).
    """

    def __init__(self, *, api_key: str | None = None, timeout: float = 300.0, max_concurrency: int = 64,
                 retry: RetryPolicy | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self._pools: PerLoop[_Pool] = PerLoop(self._new_pool)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_pools"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pools = PerLoop(self._new_pool)

    def _new_pool(self) -> _Pool:
        # A host that runs each step in a new event loop (asyncio.run) leaves a pool per closed loop: release them.
        for old in self._pools.values():
            if old.loop is not None and old.loop.is_closed():
                old.forget()
        # Idle connections are dropped after 4 s, before servers that close them at 5 s (uvicorn's default, used by
        # vLLM and SGLang) do, so a request never races a closing socket. The semaphore keeps requests in flight at
        # the connector's limit, so none waits for a connection; the whole call's deadline is asyncio.wait_for's
        # (aiohttp's own timeouts: only connecting, at most 10 s).
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0, keepalive_timeout=4.0,
                                         ssl=_ssl_context())
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, self.timeout))
        headers = {"Authorization": f"Bearer {self._api_key}"}
        session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)
        loop = asyncio.get_running_loop()
        pool = _Pool(session, asyncio.Semaphore(self.max_concurrency), loop)
        pool.release = weakref.finalize(pool, _release, session, loop)  # also runs at exit
        return pool

    async def aclose(self) -> None:
        """Close this event loop's client (a later request makes a new one)."""
        pool = self._pools.pop()
        if pool is not None:
            if pool.release is not None:
                pool.release.detach()
            await pool.session.close()

    @staticmethod
    async def _send(pool: _Pool, method: str, url: str, data: bytes | None) -> _Reply:
        headers = _JSON_HEADERS if data is not None else None
        async with pool.session.request(method, url, data=data, headers=headers, allow_redirects=False,
                                        proxy=pool.proxy(url)) as response:
            content = await response.read()
            return _Reply(response.status, response.headers, content, response.reason or "", response.charset)

    async def _attempt(self, pool: _Pool, method: str, url: str, data: bytes | None,
                       attempt: int) -> tuple[Any, BackendError | None, float | None]:
        """One try: (the JSON reply, None, None), or (None, the failure, the server's Retry-After)."""
        try:
            async with pool.semaphore:  # the timeout is a deadline for the whole call, not per read
                response = await asyncio.wait_for(self._send(pool, method, url, data), self.timeout)
        except _NOT_RETRIED as exc:
            raise BackendError(f"{method} {url} failed on attempt {attempt}: not an http(s) URL ({exc!r})",
                               endpoint=url, attempts=attempt) from None
        except _CONNECTION_ERRORS as exc:  # TimeoutError (aiohttp's connect timeout, wait_for's) is an OSError
            kind = (f"timed out (deadline {self.timeout:g} s)" if isinstance(exc, asyncio.TimeoutError)
                    else "connection failed")
            return None, BackendError(f"{method} {url} {kind} on attempt {attempt}: {exc!r}", endpoint=url,
                                      attempts=attempt, retryable=True), None
        status = response.status_code
        if status >= 400:
            return None, BackendError(f"{method} {url} failed with status {status} on attempt {attempt}: "
                                      f"{server_message(response)}", endpoint=url, status=status, attempts=attempt,
                                      retryable=self.retry.is_retryable(status)), retry_after(response.headers)
        try:
            return response.json(), None, None
        except ValueError:
            raise BackendError(f"{method} {url} returned status {status} with a body that is not JSON: "
                               f"{response.text[:200]!r}", endpoint=url, status=status, attempts=attempt) from None

    async def try_once(self, method: str, url: str, body: dict[str, Any] | None = None) -> BackendError | None:
        """One attempt without retries (a health probe): None when it answered with JSON, else the failure."""
        try:
            _, failure, _ = await self._attempt(self._pools.get(), method, url, _encode(body), 1)
        except BackendError as exc:
            return exc
        return failure

    async def request_json(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One call with the retry policy; returns the JSON reply or raises BackendError naming the endpoint, the
        status (None for connection errors and timeouts) and the attempt."""
        pool = self._pools.get()
        data = _encode(body)
        attempt = 0
        while True:
            attempt += 1
            reply, failure, hint = await self._attempt(pool, method, url, data, attempt)
            if failure is None:
                return reply
            await self.retry.wait_or_raise(failure, hint)


_JSON_HEADERS = {"Content-Type": "application/json"}


def _encode(body: Any) -> bytes | None:
    """A request body as compact UTF-8 JSON (as httpx2 sent it: NaN and infinities refused with a ValueError)."""
    if body is None:
        return None
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


__all__ = ["HTTPTransport", "RETRY_STATUSES", "RetryPolicy", "retry_after", "server_message"]
