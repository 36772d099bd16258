"""The one HTTP transport of the engines: JSON requests over pooled httpx2 connections, with one retry policy.

httpx2 is pydantic's maintained fork of httpx, the HTTP client of openai-python 3; its connection pool hands idle
connections to waiting requests without the repeated scheduling passes that made httpx 0.28 slow at 64 connections.

``HTTPTransport`` keeps one pooled ``httpx2.AsyncClient`` and one ``max_concurrency`` semaphore per event loop, made
lazily inside it. ``RetryPolicy`` says what is retried (408, 409, 425, 429, 5xx, connection errors, timeouts: the
failures where trying again is safe) and how long to wait (jittered exponential backoff, raised to a server's
``Retry-After``); any other 4xx fails at once with the server's own message. The LangChain engine, whose failures
are a provider SDK's exceptions rather than responses, retries with the same policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import httpx2

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


def server_message(response: httpx2.Response) -> str:
    """The error message a server put in its reply (OpenAI's ``error.message``, FastAPI's ``detail``, ...), at most
    500 characters; the reply's text or reason when it has none."""
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


@dataclass(eq=False)
class _Pool:
    """One event loop's client and the semaphore bounding its requests in flight."""

    client: httpx2.AsyncClient
    semaphore: asyncio.Semaphore


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
        # Idle connections are dropped after 4 s, before servers that close them at 5 s (uvicorn's default, used by
        # vLLM and SGLang) do, so a request never races a closing socket.
        limits = httpx2.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency,
                               keepalive_expiry=4.0)
        timeout = httpx2.Timeout(self.timeout, connect=min(10.0, self.timeout))
        headers = {"Authorization": f"Bearer {self._api_key}"}
        return _Pool(httpx2.AsyncClient(limits=limits, timeout=timeout, headers=headers),
                     asyncio.Semaphore(self.max_concurrency))

    async def aclose(self) -> None:
        """Close this event loop's client (a later request makes a new one)."""
        pool = self._pools.pop()
        if pool is not None:
            await pool.client.aclose()

    async def _attempt(self, pool: _Pool, method: str, url: str, body: dict[str, Any] | None,
                       attempt: int) -> tuple[Any, BackendError | None, float | None]:
        """One try: (the JSON reply, None, None), or (None, the failure, the server's Retry-After)."""
        try:
            async with pool.semaphore:  # the timeout is a deadline for the whole call, not per read
                response = await asyncio.wait_for(pool.client.request(method, url, json=body), self.timeout)
        except (httpx2.TimeoutException, httpx2.TransportError, asyncio.TimeoutError) as exc:
            kind = "connection failed" if isinstance(exc, httpx2.TransportError) and not isinstance(
                exc, httpx2.TimeoutException) else f"timed out (deadline {self.timeout:g} s)"
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
            _, failure, _ = await self._attempt(self._pools.get(), method, url, body, 1)
        except BackendError as exc:
            return exc
        return failure

    async def request_json(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One call with the retry policy; returns the JSON reply or raises BackendError naming the endpoint, the
        status (None for connection errors and timeouts) and the attempt."""
        pool = self._pools.get()
        attempt = 0
        while True:
            attempt += 1
            data, failure, hint = await self._attempt(pool, method, url, body, attempt)
            if failure is None:
                return data
            await self.retry.wait_or_raise(failure, hint)


__all__ = ["HTTPTransport", "RETRY_STATUSES", "RetryPolicy", "retry_after", "server_message"]
