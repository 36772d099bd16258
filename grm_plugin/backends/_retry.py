"""The retry delay shared by the network engines (OpenAI-compatible HTTP and LangChain chat models)."""

from __future__ import annotations

import random


def retry_delay(attempt: int, base: float, cap: float, hint: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): exponential from ``base``, capped at ``cap``, jittered
    over its upper half so many callers spread apart; a server's ``Retry-After`` ``hint`` raises it (up to ``cap``)."""
    delay = min(cap, base * 2 ** (attempt - 1))
    delay = random.uniform(0.5 * delay, delay)
    if hint is not None:
        delay = min(cap, max(delay, hint))
    return delay
