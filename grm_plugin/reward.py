"""RewardFunction: the backend-agnostic interface every adapter speaks.

Subclasses implement ``async ascore(requests)``; ``score`` (sync), ``acall``/``__call__`` (the batch-of-pairs
convention TRL made standard: ``(prompts, completions, **kwargs) -> list[float | None]``) come for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, Sequence

from ._sync import run_sync
from .batching import column, rows_to_requests
from .types import ScoreRequest, ScoreResult


class RewardFunction(ABC):
    """A reward over requests. Any RewardFunction can be handed to any adapter.

    Class attributes a subclass may override: ``mode`` ('group' or 'pointwise') and ``max_responses_per_call``
    shape how ``__call__`` batches rows; ``reference_column``/``principles_column`` name the keyword columns read.
    """

    mode: Literal["group", "pointwise"] = "pointwise"
    max_responses_per_call: int = 8
    reference_column: str = "reference"
    principles_column: str = "principles"
    __name__: str = "reward"

    @abstractmethod
    async def ascore(self, requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreResult]:
        """Judge every request; one ScoreResult per request, in order."""

    def score(self, requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreResult]:
        """Synchronous ``ascore``; safe to call inside a running event loop."""
        return run_sync(self.ascore(requests))

    async def acall(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        """Rewards for rows of (prompt, completion), one per row; extra keyword columns are ignored except the
        reference and principles columns."""
        n = len(prompts)
        requests, slots = rows_to_requests(
            prompts,
            completions,
            mode=self.mode,
            max_responses_per_call=self.max_responses_per_call,
            references=column(kwargs, self.reference_column, n),
            principles=column(kwargs, self.principles_column, n),
        )
        results = await self.ascore(requests)
        return [results[slot.request].rewards[slot.response] for slot in slots]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return run_sync(self.acall(prompts, completions, **kwargs))
