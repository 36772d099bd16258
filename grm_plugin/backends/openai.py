"""OpenAIBackend: chat completions from any OpenAI-compatible server (vLLM, SGLang, hosted APIs) over httpx2.

httpx2 is pydantic's maintained fork of httpx, the HTTP client of openai-python 3; its connection pool hands idle
connections to waiting requests without the repeated scheduling passes that made httpx 0.28 slow at 64 connections.

One pooled ``httpx2.AsyncClient`` per backend, created lazily inside the event loop that first uses it; at most
``max_concurrency`` requests in flight; retries with jittered exponential backoff only where a retry is safe
(429, 5xx, connection errors, timeouts); any other 4xx fails at once with the server's own message.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Sequence

import httpx2

from ..errors import BackendError
from . import ChatMessages, Completion, SamplingParams, TokenLogprob
from ._retry import retry_delay

logger = logging.getLogger("grm_plugin.backends.openai")
RETRY_STATUSES = frozenset({408, 409, 425, 429})


def _is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def read_logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """A choice's ``logprobs.content`` (OpenAI's shape, as vLLM and SGLang serve it) as TokenLogprobs; None when
    the server sent none."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        top = {alt["token"]: float(alt["logprob"]) for alt in entry.get("top_logprobs") or []
               if isinstance(alt, dict) and isinstance(alt.get("token"), str) and alt.get("logprob") is not None}
        logprob = entry.get("logprob")
        tokens.append(TokenLogprob(entry["token"], None if logprob is None else float(logprob), top))
    return tuple(tokens)


def _server_message(response: httpx2.Response) -> str:
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


class OpenAIBackend:
    """Async chat completions against ``{base_url}/chat/completions``.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        model: the served model name; None asks the server's ``/models`` once and uses the only model it serves.
        api_key: bearer token; defaults to ``OPENAI_API_KEY`` or ``EMPTY``.
        max_concurrency: requests in flight at once.
        timeout: seconds per request.
        max_retries / retry_backoff / retry_backoff_max: the retry policy for 429, 5xx, connection errors, timeouts.
        use_n: send n samples as one request with ``n``; False sends n requests (APIs without ``n`` support).
        extra_body: JSON merged into every request body.
        structured_output: how a ScoresConstraint is sent: 'vllm' (``structured_outputs.regex``), 'vllm-legacy'
            (``guided_regex``), 'sglang' (``regex``).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout: float = 300.0,
        max_retries: int = 4,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 20.0,
        use_n: bool = True,
        extra_body: dict[str, Any] | None = None,
        structured_output: str = "vllm",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/chat/completions"
        self.model = model
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.use_n = use_n
        self.extra_body = dict(extra_body or {})
        self.structured_output = structured_output
        self._client: httpx2.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None

    @classmethod
    def from_config(cls, config: Any) -> "OpenAIBackend":
        if not config.base_url:
            from ..errors import ConfigError

            raise ConfigError("the 'openai' engine needs base_url (e.g. http://localhost:8000/v1); set base_url= "
                              "or GRM_BASE_URL")
        return cls(
            config.base_url,
            config.model,
            api_key=config.api_key.get_secret_value() if config.api_key else None,
            max_concurrency=config.max_concurrency,
            timeout=config.timeout,
            max_retries=config.max_retries,
            retry_backoff=config.retry_backoff,
            retry_backoff_max=config.retry_backoff_max,
            use_n=config.use_n,
            extra_body=config.extra_body,
            structured_output=config.structured_output,
        )

    # -- lifecycle --------------------------------------------------------------------------------------------
    def _ensure_client(self) -> httpx2.AsyncClient:
        if self._client is None:
            # Idle connections are dropped after 4 s, before servers that close them at 5 s (uvicorn's default, used
            # by vLLM and SGLang) do, so a request never races a closing socket.
            limits = httpx2.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency,
                                   keepalive_expiry=4.0)
            self._client = httpx2.AsyncClient(
                limits=limits,
                timeout=httpx2.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                headers={"Authorization": f"Bearer {self._api_key}"},
            )
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._model_lock = asyncio.Lock()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- requests ---------------------------------------------------------------------------------------------
    async def request_json(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call with the retry policy; returns the JSON body or raises BackendError."""
        client = self._ensure_client()
        assert self._semaphore is not None
        attempt = 0
        while True:
            attempt += 1
            delay_hint: float | None = None
            try:
                async with self._semaphore:
                    response = await client.request(method, url, json=body)
            except (httpx2.TimeoutException, httpx2.TransportError) as exc:
                kind = "timed out" if isinstance(exc, httpx2.TimeoutException) else "connection failed"
                failure = BackendError(f"{method} {url} {kind} on attempt {attempt}: {exc!r}", endpoint=url,
                                       attempts=attempt, retryable=True)
            else:
                if response.status_code < 400:
                    try:
                        data = response.json()
                    except ValueError:
                        raise BackendError(f"{method} {url} returned status {response.status_code} with a body that "
                                           f"is not JSON: {response.text[:200]!r}", endpoint=url,
                                           status=response.status_code, attempts=attempt) from None
                    return data
                message = _server_message(response)
                retryable = _is_retryable_status(response.status_code)
                failure = BackendError(f"{method} {url} failed with status {response.status_code} on attempt "
                                       f"{attempt}: {message}", endpoint=url, status=response.status_code,
                                       attempts=attempt, retryable=retryable)
                retry_after = response.headers.get("retry-after")
                if retry_after:
                    try:
                        delay_hint = float(retry_after)
                    except ValueError:
                        delay_hint = None
            if not failure.retryable or attempt > self.max_retries:
                if failure.retryable:
                    failure.args = (f"{failure.args[0]} (gave up after {attempt} attempts)",)
                raise failure
            delay = retry_delay(attempt, self.retry_backoff, self.retry_backoff_max, delay_hint)
            logger.warning("%s; retrying in %.2fs", failure, delay)
            await asyncio.sleep(delay)

    async def resolve_model(self) -> str:
        """The model name to send: the configured one, else the only model the server lists."""
        if self.model:
            return self.model
        self._ensure_client()
        assert self._model_lock is not None
        async with self._model_lock:
            if self.model:
                return self.model
            data = await self.request_json("GET", f"{self.base_url}/models")
            ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
            if len(ids) != 1:
                raise BackendError(f"no model configured and {self.base_url}/models lists {len(ids)} models "
                                   f"({', '.join(ids[:5])}); set model= or GRM_MODEL", endpoint=self.base_url)
            self.model = ids[0]
            return self.model

    def _constraint_body(self, regex: str) -> dict[str, Any]:
        """The request fields that ask this server for regex-guided decoding."""
        if self.structured_output == "sglang":
            return {"regex": regex}
        if self.structured_output == "vllm-legacy":
            return {"guided_regex": regex}
        return {"structured_outputs": {"regex": regex}}  # vLLM >= 0.10 ("on" and "vllm")

    async def _complete(self, messages: ChatMessages, n: int, sampling: SamplingParams) -> list[Completion]:
        body: dict[str, Any] = {
            "model": await self.resolve_model(),
            "messages": list(messages),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if n != 1:
            body["n"] = n
        if sampling.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = sampling.logprobs
        body.update(self.extra_body)
        body.update(sampling.extra_body)
        if sampling.constraint is not None:
            body.update(self._constraint_body(sampling.constraint.regex()))
        data = await self.request_json("POST", self.endpoint, body)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"POST {self.endpoint} returned no choices: {str(data)[:200]}", endpoint=self.endpoint)
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        share, remainder = divmod(completion_tokens, len(choices))
        completions = []
        for i, choice in enumerate(choices):
            message = choice.get("message") or {}
            text = message.get("content")
            if text is None:
                text = ""
            completions.append(Completion(
                text=text,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=prompt_tokens if i == 0 else 0,
                completion_tokens=share + (remainder if i == 0 else 0),
                logprobs=read_logprobs(choice) if sampling.logprobs else None,
            ))
        return completions

    async def _complete_n(self, messages: ChatMessages, n: int, sampling: SamplingParams) -> list[Completion]:
        if self.use_n or n == 1:
            return await self._complete(messages, n, sampling)
        singles = await asyncio.gather(*(self._complete(messages, 1, sampling) for _ in range(n)))
        return [c for group in singles for c in group]

    async def generate(
        self, messages_batch: Sequence[ChatMessages], n: int, sampling: SamplingParams
    ) -> list[list[Completion]]:
        """n completions for each prompt of the batch, in order."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        return list(await asyncio.gather(*(self._complete_n(m, n, sampling) for m in messages_batch)))
