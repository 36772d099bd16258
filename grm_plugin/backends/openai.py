"""OpenAIBackend: chat completions from any OpenAI-compatible server (vLLM, SGLang, hosted APIs).

Requests go through the engines' one HTTP transport (``backends/http.py``): a pooled aiohttp session per event loop, at
most ``max_concurrency`` requests in flight, and retries with jittered exponential backoff only where a retry is safe
(408, 409, 425, 429, 5xx, connection errors, timeouts); any other 4xx fails at once with the server's own message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
from typing import Any, Sequence

from .._sync import PerLoop
from ..errors import BackendError
from . import ChatMessages, Completion, SamplingParams, TokenLogprob
from .http import HTTPTransport, RetryPolicy
from .replicas import Replica, ReplicaPool

logger = logging.getLogger("grm_plugin.backends.openai")


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


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            or value != int(value)):
        raise BackendError(f"usage.{key} is {str(value)[:60]!r}, expected a count")
    return int(value)


def read_chat_completion(data: Any, n: int, logprobs: bool = False) -> list[Completion]:
    """The ``n`` completions of a chat-completions answer, in ``index`` order. Any other shape (not an object,
    choices that are not ``n`` objects, a message or content of the wrong type, mixed or repeated indices, usage
    that is not counts) is a BackendError naming the field: a wrong number of choices would change what a vote
    means, so it is never accepted. Token counts are split over the completions (the first carries the prompt's).

    Example:
        >>> [c.text for c in read_chat_completion({"choices": [{"message": {"content": "hi"}}]}, 1)]
        ['hi']
    """
    if not isinstance(data, dict):
        raise BackendError(f"the answer is {type(data).__name__}, expected a chat completion object")
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = f"{len(choices)} choices" if isinstance(choices, list) else f"choices of type {type(choices).__name__}"
        raise BackendError(f"the answer holds {got}, expected {n} (n={n})")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise BackendError(f"choices[{i}] is {type(choice).__name__}, expected an object")
        message = choice.get("message")
        if message is not None and not isinstance(message, dict):
            raise BackendError(f"choices[{i}].message is {type(message).__name__}, expected an object")
        content = (message or {}).get("content")
        if content is not None and not isinstance(content, str):
            raise BackendError(f"choices[{i}].message.content is {type(content).__name__}, expected a string")
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise BackendError(f"choices[{i}].finish_reason is {type(finish).__name__}, expected a string")
    indices = [choice.get("index") for choice in choices]
    if any(i is not None for i in indices):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices) or len(set(indices)) != n:
            raise BackendError(f"choices' index values {str(indices)[:80]} are not {n} distinct integers")
        choices = sorted(choices, key=lambda c: c["index"])
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        raise BackendError(f"usage is {type(usage).__name__}, expected an object")
    prompt_tokens, completion_tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    share, remainder = divmod(completion_tokens, n)
    try:
        read = [read_logprobs(choice) if logprobs else None for choice in choices]
    except (TypeError, ValueError) as exc:
        raise BackendError(f"choices' logprobs are malformed: {exc}") from None
    return [Completion(text=(choice.get("message") or {}).get("content") or "",
                       finish_reason=choice.get("finish_reason"),
                       prompt_tokens=prompt_tokens if i == 0 else 0,
                       completion_tokens=share + (remainder if i == 0 else 0),
                       logprobs=read[i])
            for i, choice in enumerate(choices)]


class OpenAIBackend:
    """Async chat completions against ``{base_url}/chat/completions``.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``; several replicas as a list or comma-separated
            (``backends.replicas``: least outstanding requests, affinity per judge prompt and group, ejection and
            re-admission).
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
        base_url: str | Sequence[str],
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
        urls = [u.strip().rstrip("/") for u in (base_url.split(",") if isinstance(base_url, str) else base_url)]
        urls = [u for u in urls if u]
        self.pool = ReplicaPool(urls, self._probe)
        self.base_url = urls[0]  # the first replica answers /models, /tokenize
        self.endpoint = f"{self.base_url}/chat/completions"
        self.model = model
        self.use_n = use_n
        self.extra_body = dict(extra_body or {})
        self.structured_output = structured_output
        self.transport = HTTPTransport(api_key=api_key, timeout=timeout, max_concurrency=max_concurrency,
                                       retry=RetryPolicy(max_retries, retry_backoff, retry_backoff_max))
        self._model_locks: PerLoop[asyncio.Lock] = PerLoop(asyncio.Lock)
        self._context: int | None = None
        self._context_checked = False
        self._tokenize: bool | None = None  # whether the server has /tokenize (None: not asked yet)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_model_locks"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._model_locks = PerLoop(asyncio.Lock)

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        await self.transport.aclose()

    async def _probe(self, url: str) -> bool:
        """Whether a replica answers ``GET /models`` (one attempt): it may take calls again."""
        return await self.transport.try_once("GET", f"{url}/models") is None

    def replica_stats(self) -> list[dict[str, Any]]:
        """Per judge replica: requests, errors, ejections, requests in flight, whether it is ejected now."""
        return self.pool.stats()

    async def resolve_model(self) -> str:
        """The model name to send: the configured one, else the only model the server lists."""
        if self.model:
            return self.model
        async with self._model_locks.get():
            if self.model:
                return self.model
            data = await self.transport.request_json("GET", f"{self.base_url}/models")
            ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
            if len(ids) != 1:
                raise BackendError(f"no model configured and {self.base_url}/models lists {len(ids)} models "
                                   f"({', '.join(ids[:5])}); set model= or GRM_MODEL", endpoint=self.base_url)
            self.model = ids[0]
            return self.model

    async def context_window(self) -> int | None:
        """The model's context length as the server reports it (vLLM and SGLang: ``max_model_len`` in
        ``/models``), asked once; None when it does not say."""
        if self._context_checked:
            return self._context
        try:
            model = await self.resolve_model()
            data = await self.transport.request_json("GET", f"{self.base_url}/models")
            cards = [m for m in (data.get("data") or []) if isinstance(m, dict)] if isinstance(data, dict) else []
            card = next((m for m in cards if m.get("id") == model), cards[0] if len(cards) == 1 else {})
            length = card.get("max_model_len") or card.get("context_length")
            self._context = int(length) if isinstance(length, (int, float)) and length > 0 else None
        except (BackendError, ValueError, TypeError) as exc:
            logger.info("the judge server did not report its context length (%s)", exc)
            self._context = None
        self._context_checked = True
        return self._context

    async def count_tokens(self, messages: ChatMessages) -> int | None:
        """The exact prompt tokens of ``messages`` from the server's tokenizer (vLLM's ``POST /tokenize``, at the
        server root); None when the server has no such endpoint (then never asked again)."""
        if self._tokenize is False:
            return None
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        try:
            data = await self.transport.request_json("POST", f"{root}/tokenize",
                                                     {"model": await self.resolve_model(), "messages": list(messages)})
            count = data.get("count") if isinstance(data, dict) else None
            if not isinstance(count, int):
                raise BackendError(f"/tokenize answered without a count: {str(data)[:100]}")
        except BackendError as exc:
            logger.info("no exact token counts from the judge server (%s); estimating", exc)
            self._tokenize = False
            return None
        self._tokenize = True
        return count

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
        key = sampling.affinity
        if key is None and len(self.pool) > 1:  # the samples and retries of one judge prompt stay together
            key = hashlib.blake2b(json.dumps(body["messages"], default=str).encode(), digest_size=12).hexdigest()

        async def send(replica: Replica) -> list[Completion]:
            endpoint = f"{replica.url}/chat/completions"
            for attempt in (1, 2):  # a malformed answer is asked again once, like a 5xx, then reported
                data = await self.transport.request_json("POST", endpoint, body)
                try:
                    completions = read_chat_completion(data, n, sampling.logprobs > 0)
                except BackendError as exc:
                    if attempt == 2:
                        raise BackendError(f"POST {endpoint}: {exc} (twice)", endpoint=endpoint) from None
                    logger.warning("POST %s: %s; asking again once", endpoint, exc)
                    continue
                if len(self.pool) > 1:
                    completions = [dataclasses.replace(c, replica=replica.url) for c in completions]
                return completions
            raise AssertionError("unreachable")  # pragma: no cover

        return await self.pool.call(key, send)

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
