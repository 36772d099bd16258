"""Engines: turn chat messages into completions. They know nothing about GRMs.

A backend implements ``async generate(messages_batch, n, sampling) -> list[list[Completion]]`` (n completions per
prompt, in order) and ``async aclose()``. Engines take plain keyword arguments; ``grm_plugin.config.make_backend``
builds the one a GRMConfig asks for. This module holds what every engine shares: the protocol and its records.

The engines: ``openai`` (any OpenAI-compatible server, over the one HTTP transport of ``http``), ``transformers``
(a local model: loading, generation, dynamic batching), ``langchain`` (any LangChain chat model);
``scores_processor`` enforces a ScoresConstraint on local generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

ChatMessages = Sequence[dict[str, Any]]


def _escape(text: str) -> str:
    """Escape regex metacharacters only (spaces stay plain: vLLM's and SGLang's regex dialects differ on ``\\ ``)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)


@dataclass(frozen=True)
class ScoresConstraint:
    """Guaranteed format for the end of a completion: after free text, ``prefix`` then exactly ``count`` integers
    in ``low..high`` joined by ``separator``, then ``suffix``, then the end. Engines enforce it their own way (a
    regex for vLLM/SGLang, a logits processor for local models); they need not know what the numbers mean.

    Example:
        >>> print(ScoresConstraint(2, 1, 3).tail_regex())
        Scores: \\\\boxed\\{(3|2|1), (3|2|1)\\}
    """

    count: int
    low: int
    high: int
    prefix: str = "Scores: \\boxed{"
    separator: str = ", "
    suffix: str = "}"

    def tail_regex(self) -> str:
        number = "(" + "|".join(str(v) for v in range(self.high, self.low - 1, -1)) + ")"  # longest first
        return _escape(self.prefix) + _escape(self.separator).join([number] * self.count) + _escape(self.suffix)

    def regex(self) -> str:
        """A regex for the whole completion: any text, then the constrained tail."""
        return "[\\s\\S]*" + self.tail_regex()


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``logprobs`` > 0 asks for each generated token's log-probability and that many most likely
    alternatives (``top_logprobs``); engines that cannot give them return completions without."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 2048
    extra_body: dict[str, Any] = field(default_factory=dict)
    constraint: ScoresConstraint | None = None
    logprobs: int = 0
    affinity: str | None = None  # calls with the same key go to the same judge replica while it is healthy


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log-probability (None when unknown) and the most likely alternatives at
    its position (token text -> log-probability), as OpenAI's ``logprobs.content`` entries carry them."""

    token: str
    logprob: float | None = None
    top: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """One sampled completion. Token counts of a request with n>1 are split over its completions so that they
    sum to the request's usage; ``prompt_tokens`` is carried by the first completion only. ``logprobs`` holds one
    entry per generated token when they were asked for and the engine returned them, else None."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    replica: str | None = None  # the judge server that answered (several replicas)


@runtime_checkable
class Backend(Protocol):
    async def generate(
        self, messages_batch: Sequence[ChatMessages], n: int, sampling: SamplingParams
    ) -> list[list[Completion]]: ...

    async def aclose(self) -> None: ...


__all__ = ["Backend", "ChatMessages", "Completion", "SamplingParams", "ScoresConstraint", "TokenLogprob"]
