"""LangChainBackend: any LangChain chat model (ChatOpenAI, ChatAnthropic, ChatOllama, ...) as the judge's engine.

Each judge prompt is one ``await chat_model.agenerate([messages])`` call (so the model's own client, rate limiter,
callbacks and LangSmith tracing apply), at most ``max_concurrency`` in flight per event loop. n samples of a prompt
come from one call when the model has an ``n`` field (ChatOpenAI and its OpenAI-compatible relatives), else from n
parallel calls. The GRM's temperature / top_p / max_tokens are set on a copy of the model (``model_copy``) through
the fields the model has; a model lacking one simply keeps its own setting. Failures are retried with the HTTP
engine's ``RetryPolicy`` (``backends/http.py``: jittered exponential backoff, Retry-After honoured) where a retry is
safe (rate limits, overload, 408/409/425/429/5xx, connection errors, timeouts); anything else raises ``BackendError``
at once, naming the model class and the attempt.

A ScoresConstraint (``structured_output``) cannot be enforced through a generic chat model: it is ignored, with a
warning the first time.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any, Sequence

try:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without langchain-core
    raise ImportError(
        "the langchain engine needs langchain-core, which is not installed: pip install 'grm-plugin[langchain]' "
        f"({exc})"
    ) from exc

from .._sync import PerLoop
from ..errors import BackendError
from . import ChatMessages, Completion, SamplingParams
from .http import RetryPolicy, retry_after

# Exception class names (anywhere in the MRO) that mean "try again later", across provider SDKs: openai, anthropic,
# httpx/httpx2, google-api-core, aiohttp, ...; matched by name so that none of them has to be installed.
RETRYABLE_ERROR_NAMES = frozenset({
    "RateLimitError", "APIConnectionError", "APITimeoutError", "InternalServerError", "ServiceUnavailableError",
    "OverloadedError", "TimeoutException", "TransportError", "ConnectError", "ConnectTimeout", "ReadTimeout",
    "ReadError", "WriteError", "RemoteProtocolError", "PoolTimeout", "ResourceExhausted", "ServiceUnavailable",
    "DeadlineExceeded", "TooManyRequests", "ClientConnectionError", "ServerDisconnectedError",
})
# Field names under which chat models keep their generation budget (ChatOpenAI / ChatAnthropic, ChatGoogleGenerativeAI,
# ChatOllama, HF-style models); the first one a model has is set.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict", "max_new_tokens")
FINISH_REASON_KEYS = ("finish_reason", "stop_reason", "done_reason")
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "STOP": "stop", "max_tokens": "length",
                  "MAX_TOKENS": "length", "tool_use": "tool_calls"}


# -- messages -----------------------------------------------------------------------------------------------------
def _content(value: Any) -> Any:
    return "" if value is None else value


def _tool_calls(calls: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI-style ``tool_calls`` as LangChain ``tool_calls`` (and ``invalid_tool_calls`` for unreadable args)."""
    valid, invalid = [], []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        name = function.get("name") or call.get("name") or ""
        call_id = call.get("id") or f"call_{i}"
        arguments = function.get("arguments", call.get("args", call.get("arguments")))
        if isinstance(arguments, dict):
            valid.append({"name": name, "args": arguments, "id": call_id, "type": "tool_call"})
            continue
        try:
            parsed = json.loads(arguments) if arguments else {}
        except (TypeError, ValueError):
            parsed = None
        if isinstance(parsed, dict):
            valid.append({"name": name, "args": parsed, "id": call_id, "type": "tool_call"})
        else:
            invalid.append({"name": name, "args": None if arguments is None else str(arguments), "id": call_id,
                            "error": "arguments are not a JSON object", "type": "invalid_tool_call"})
    return valid, invalid


def to_langchain_messages(messages: ChatMessages) -> list[BaseMessage]:
    """OpenAI-style message dicts (system, developer, user, assistant with tool calls, tool, function) as LangChain
    messages. LangChain messages pass through unchanged.

    Example:
        >>> [type(m).__name__ for m in to_langchain_messages([{"role": "system", "content": "Be fair."},
        ...                                                   {"role": "user", "content": "Judge this."}])]
        ['SystemMessage', 'HumanMessage']
    """
    out: list[BaseMessage] = []
    for i, raw in enumerate(messages):
        if isinstance(raw, BaseMessage):
            out.append(raw)
            continue
        message = raw.model_dump(exclude_none=True) if hasattr(raw, "model_dump") else dict(raw)
        role = message.get("role")
        content = _content(message.get("content"))
        name = message.get("name")
        if role == "system":
            out.append(SystemMessage(content=content, name=name))
        elif role == "developer":
            out.append(SystemMessage(content=content, name=name, additional_kwargs={"__openai_role__": "developer"}))
        elif role == "user":
            out.append(HumanMessage(content=content, name=name))
        elif role == "assistant":
            valid, invalid = _tool_calls(message.get("tool_calls") or [])
            out.append(AIMessage(content=content, name=name, tool_calls=valid, invalid_tool_calls=invalid))
        elif role == "tool":
            out.append(ToolMessage(content=content, tool_call_id=message.get("tool_call_id") or "", name=name))
        elif role == "function":
            out.append(FunctionMessage(content=content, name=name or ""))
        else:
            raise ValueError(f"message {i} has role {role!r}; expected system, developer, user, assistant, tool or "
                             "function")
    return out


# -- reading results ----------------------------------------------------------------------------------------------
def _message_text(message: BaseMessage) -> str:
    """The text of a reply: a string content as is; of a list content, the text blocks (reasoning left out)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type", "text") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def _finish_reason(generation: Any) -> str | None:
    for source in (getattr(generation.message, "response_metadata", None), generation.generation_info):
        if isinstance(source, dict):
            for key in FINISH_REASON_KEYS:
                value = source.get(key)
                if value:
                    return FINISH_REASONS.get(str(value), str(value))
    return None


def _tokens(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a usage dict in OpenAI (prompt/completion) or LangChain (input/output) terms."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if prompt is None and completion is None:
        return None
    return int(prompt or 0), int(completion or 0)


def _request_usage(llm_output: Any, messages: list[BaseMessage]) -> tuple[int, int]:
    """The token usage of one call: the provider's request total (``llm_output``) when it reports one, else the
    messages' ``usage_metadata``. Providers that attach the request's usage to each of its n messages (ChatOpenAI
    does) are counted once."""
    if isinstance(llm_output, dict):
        for key in ("token_usage", "usage"):
            found = _tokens(llm_output.get(key))
            if found is not None:
                return found
    per_message = []
    for message in messages:
        metadata = getattr(message, "response_metadata", None) or {}
        usage = (getattr(message, "usage_metadata", None) or metadata.get("token_usage")
                 or metadata.get("usage"))
        found = _tokens(usage)
        if found is not None:
            per_message.append(found)
    if not per_message:
        return 0, 0
    if len(per_message) > 1 and len(set(per_message)) == 1:
        return per_message[0]
    return sum(p for p, _ in per_message), sum(c for _, c in per_message)


def _take(completions: list[Completion], count: int) -> list[Completion]:
    """The first ``count`` completions; tokens of any dropped ones are added to the first kept (totals stay true)."""
    if len(completions) <= count:
        return completions
    kept, dropped = completions[:count], completions[count:]
    first = kept[0]
    kept[0] = Completion(first.text, first.finish_reason, first.prompt_tokens + sum(c.prompt_tokens for c in dropped),
                         first.completion_tokens + sum(c.completion_tokens for c in dropped))
    return kept


# -- failures -----------------------------------------------------------------------------------------------------
def _status(exc: BaseException) -> int | None:
    for candidate in (getattr(exc, "status_code", None), getattr(getattr(exc, "response", None), "status_code", None),
                      getattr(exc, "status", None)):
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether a chat model's exception is worth retrying: rate limits, overload, 408/409/425/429/5xx, connection
    errors and timeouts. Provider SDK exceptions are recognised by class name and HTTP status."""
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if {cls.__name__ for cls in type(exc).__mro__} & RETRYABLE_ERROR_NAMES:
        return True
    status = _status(exc)
    return status is not None and RetryPolicy.is_retryable(status)


class LangChainBackend:
    """Judge completions from a LangChain chat model.

    Args:
        chat_model: any ``langchain_core`` ``BaseChatModel`` (ChatOpenAI, ChatAnthropic, ChatOllama, a fake model).
        max_concurrency: model calls in flight at once, per event loop.
        max_retries / retry_backoff / retry_backoff_max: the retry policy for rate limits, overload, 5xx,
            connection errors and timeouts (on top of whatever retries the model's own client makes).
        timeout: seconds per model call before it counts as a (retryable) timeout; None leaves it to the model.
        use_n: ask a model that has an ``n`` field for all samples of a prompt in one call; False (or a model without
            ``n``) makes one call per sample.
        apply_sampling: set the GRM's temperature, top_p (when not 1) and max_tokens on the model's fields that
            exist; False keeps the model's own settings (for models that reject some of them).
        callbacks / tags / metadata / run_name: passed to every ``agenerate`` call (tracing, LangSmith).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> backend = LangChainBackend(FakeListChatModel(responses=["Scores: \\\\boxed{7}"]), max_concurrency=8)
        >>> backend.describe()
        'FakeListChatModel'
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        max_concurrency: int = 64,
        max_retries: int = 4,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 20.0,
        timeout: float | None = None,
        use_n: bool = True,
        apply_sampling: bool = True,
        callbacks: Any = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = "grm-judge",
    ) -> None:
        if not isinstance(chat_model, BaseChatModel):
            raise TypeError(
                "LangChainBackend needs a LangChain chat model (a langchain_core BaseChatModel such as ChatOpenAI), "
                f"got {type(chat_model).__name__}; pass the model itself, not a chain or a .bind()/.with_retry() "
                "wrapper (the backend applies the sampling settings and retries)")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self.chat_model = chat_model
        self.max_concurrency = max_concurrency
        self.retry = RetryPolicy(max_retries, retry_backoff, retry_backoff_max)
        self.timeout = timeout
        self.use_n = use_n
        self.apply_sampling = apply_sampling
        self.callbacks = callbacks
        self.tags = list(tags) if tags else None
        self.metadata = dict(metadata) if metadata else None
        self.run_name = run_name
        self._fields = frozenset(type(chat_model).model_fields)
        self._models: dict[tuple[Any, ...], BaseChatModel] = {}
        self._semaphores: PerLoop[asyncio.Semaphore] = PerLoop(self._new_semaphore)
        self._warned_constraint = False

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    @property
    def retry_backoff(self) -> float:
        return self.retry.backoff

    @property
    def retry_backoff_max(self) -> float:
        return self.retry.backoff_max

    # -- description, pickling, lifecycle -----------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        for attribute in ("model_name", "model", "model_id"):
            value = getattr(self.chat_model, attribute, None)
            if isinstance(value, str) and value:
                return value
        return None

    def describe(self) -> str:
        """The model class and, when it has one, the model name: ``ChatOpenAI(model='gpt-4o-mini')``."""
        name = self.model_name
        return type(self.chat_model).__name__ + (f"(model={name!r})" if name else "")

    @property
    def supports_n(self) -> bool:
        """Whether the model can return several samples from one call (it has an ``n`` field, as ChatOpenAI)."""
        return "n" in self._fields

    def __repr__(self) -> str:
        return f"LangChainBackend({self.describe()}, max_concurrency={self.max_concurrency})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_models"] = {}
        del state["_semaphores"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._semaphores = PerLoop(self._new_semaphore)

    async def aclose(self) -> None:
        """Nothing to close: the chat model and its clients belong to the caller."""
        self._models.clear()

    # -- the model for a sampling setting -----------------------------------------------------------------------
    def _uses_cache(self) -> bool:
        cache = getattr(self.chat_model, "cache", None)
        if cache is False:
            return False
        if cache is None or cache is True:
            from langchain_core.globals import get_llm_cache

            return get_llm_cache() is not None
        return True

    def configured_model(self, sampling: SamplingParams, n: int = 1, *, independent: bool = False) -> BaseChatModel:
        """The chat model with the sampling settings it has fields for, asking for ``n`` samples per call when it
        has an ``n`` field. ``independent``: calls must not be answered from an LLM cache (parallel samples of one
        prompt would all be the same). The model itself when nothing changes; copies are made once and reused."""
        key = (sampling.temperature, sampling.top_p, sampling.max_tokens, n, independent)
        model = self._models.get(key)
        if model is not None:
            return model
        update: dict[str, Any] = {}
        if self.apply_sampling:
            if "temperature" in self._fields:
                update["temperature"] = sampling.temperature
            if "top_p" in self._fields and sampling.top_p != 1.0:
                update["top_p"] = sampling.top_p
            for name in MAX_TOKENS_FIELDS:
                if name in self._fields:
                    update[name] = sampling.max_tokens
                    break
        if self.supports_n and (n != 1 or getattr(self.chat_model, "n", None) not in (None, 1)):
            update["n"] = n
        if independent and self._uses_cache():
            update["cache"] = False
        update = {k: v for k, v in update.items() if getattr(self.chat_model, k, object()) != v}
        model = self.chat_model.model_copy(update=update) if update else self.chat_model
        self._models[key] = model
        return model

    # -- calls --------------------------------------------------------------------------------------------------
    def _new_semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.max_concurrency)

    async def _agenerate(self, model: BaseChatModel, messages: list[BaseMessage]) -> Any:
        call = model.agenerate([messages], callbacks=self.callbacks, tags=self.tags, metadata=self.metadata,
                               run_name=self.run_name)
        if self.timeout is None:
            return await call
        return await asyncio.wait_for(call, self.timeout)

    async def _call(self, model: BaseChatModel, messages: list[BaseMessage]) -> list[Completion]:
        """One model call with the retry policy: the completions it returned, or BackendError."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._semaphores.get():
                    result = await self._agenerate(model, messages)
            except Exception as exc:
                detail = str(exc).strip()[:500] or "(no message)"
                failure = BackendError(
                    f"langchain chat model {self.describe()} failed on attempt {attempt}: {type(exc).__name__}: "
                    f"{detail}", endpoint=f"langchain:{self.describe()}", status=_status(exc), attempts=attempt,
                    retryable=is_retryable(exc))
                failure.__cause__ = exc
                hint = retry_after(getattr(getattr(exc, "response", None), "headers", None))
            else:
                return self._completions(result)
            await self.retry.wait_or_raise(failure, hint)

    def _completions(self, result: Any) -> list[Completion]:
        generations = result.generations[0] if result.generations else []
        if not generations:
            raise BackendError(f"langchain chat model {self.describe()} returned no generations",
                               endpoint=f"langchain:{self.describe()}")
        messages = [g.message for g in generations]
        prompt_tokens, completion_tokens = _request_usage(result.llm_output, messages)
        share, remainder = divmod(completion_tokens, len(generations))
        return [
            Completion(text=_message_text(g.message), finish_reason=_finish_reason(g),
                       prompt_tokens=prompt_tokens if i == 0 else 0,
                       completion_tokens=share + (remainder if i == 0 else 0))
            for i, g in enumerate(generations)
        ]

    async def _complete_n(self, messages: list[BaseMessage], n: int, sampling: SamplingParams) -> list[Completion]:
        if n > 1 and self.use_n and self.supports_n:
            completions = await self._call(self.configured_model(sampling, n), messages)
            missing = n - len(completions)
            if missing > 0:  # the model gave fewer than n (streaming, or an API that ignores n): sample the rest
                single = self.configured_model(sampling, 1, independent=True)
                extra = await asyncio.gather(*(self._call(single, messages) for _ in range(missing)))
                completions += [c for group in extra for c in _take(group, 1)]
            return _take(completions, n)
        model = self.configured_model(sampling, 1, independent=n > 1)
        groups = await asyncio.gather(*(self._call(model, messages) for _ in range(n)))
        return [c for group in groups for c in _take(group, 1)]

    def _warn_constraint(self) -> None:
        if not self._warned_constraint:
            self._warned_constraint = True
            warnings.warn(
                f"structured_output is ignored by the langchain engine ({self.describe()}): a generic chat model "
                "cannot be constrained to the scores format; unparseable judgements are marked invalid instead",
                UserWarning, stacklevel=3)

    async def generate(
        self, messages_batch: Sequence[ChatMessages], n: int, sampling: SamplingParams
    ) -> list[list[Completion]]:
        """n completions for each prompt of the batch, in order."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if sampling.constraint is not None:
            self._warn_constraint()
        converted = [to_langchain_messages(m) for m in messages_batch]
        return list(await asyncio.gather(*(self._complete_n(m, n, sampling) for m in converted)))


__all__ = ["LangChainBackend", "is_retryable", "to_langchain_messages"]
