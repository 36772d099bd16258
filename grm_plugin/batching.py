"""Turn a host's batch of (prompt, completion) rows into ScoreRequests and map the rewards back to rows.

In group mode, rows that share a prompt (and reference and principles) are judged together, split into balanced
chunks of at most ``max_responses_per_call``; in pointwise mode every row is its own request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import ValidationError

from .errors import InvalidRequestError, format_validation_error
from .types import ScoreRequest


@dataclass(frozen=True)
class RowSlot:
    """Where a row's reward lives: ``request`` index and ``response`` index within that request."""

    request: int
    response: int


def balanced_chunks(items: Sequence[int], max_size: int) -> list[list[int]]:
    """Split into the fewest chunks of at most ``max_size``, sizes differing by at most one.

    Example:
        >>> balanced_chunks(list(range(10)), 8)
        [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    """
    if not items:
        return []
    n_chunks = -(-len(items) // max_size)
    size, extra = divmod(len(items), n_chunks)
    chunks, start = [], 0
    for c in range(n_chunks):
        end = start + size + (1 if c < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


def _as_response(completion: Any) -> Any:
    if isinstance(completion, dict):  # a single message
        return [completion]
    return completion


def column(kwargs: dict[str, Any], name: str, n: int) -> list[Any] | None:
    """A per-row keyword column (None when absent), checked to hold one entry per row; empty entries become None."""
    values = kwargs.get(name)
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != n:
        raise InvalidRequestError(f"keyword {name!r} must be a list with one entry per prompt ({n}), got "
                         f"{type(values).__name__}" + (f" of length {len(values)}" if hasattr(values, '__len__') else ""))
    return [v if v not in ("", None) else None for v in values]


def rows_to_requests(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    mode: Literal["group", "pointwise"] = "group",
    max_responses_per_call: int = 8,
    references: Sequence[Any] | None = None,
    principles: Sequence[Any] | None = None,
    cohorts: Sequence[Any] | None = None,
) -> tuple[list[ScoreRequest], list[RowSlot]]:
    """Build ScoreRequests from rows; returns the requests and, per row, where its reward will be. In group mode rows
    are judged together when they share prompt, reference, principles and (if given) ``cohorts`` entry (one hashable per row).

    Example:
        >>> reqs, slots = rows_to_requests(["q", "q", "r"], ["a", "b", "c"])
        >>> [len(r.responses) for r in reqs], slots[1]
        ([2, 1], RowSlot(request=0, response=1))
    """
    if len(prompts) != len(completions):
        raise InvalidRequestError(f"got {len(prompts)} prompts but {len(completions)} completions; expected one completion "
                         "per prompt")
    n = len(prompts)
    references = list(references) if references is not None else [None] * n
    principles = list(principles) if principles is not None else [None] * n
    groups: dict[str, list[int]] = {}
    for row in range(n):
        if mode == "pointwise":
            groups[str(row)] = [row]
        else:
            cohort = cohorts[row] if cohorts is not None else None
            key = json.dumps([prompts[row], references[row], principles[row], cohort], sort_keys=True, default=str)
            groups.setdefault(key, []).append(row)
    requests: list[ScoreRequest] = []
    slots: list[RowSlot | None] = [None] * n
    for rows in groups.values():
        for chunk in balanced_chunks(rows, max_responses_per_call):
            first = chunk[0]
            try:
                request = ScoreRequest(
                    prompt=prompts[first],
                    responses=[_as_response(completions[r]) for r in chunk],
                    reference=references[first],
                    principles=principles[first],
                )
            except ValidationError as exc:
                raise InvalidRequestError(format_validation_error(exc, f"row {first}")) from None
            for position, row in enumerate(chunk):
                slots[row] = RowSlot(len(requests), position)
            requests.append(request)
    return requests, [s for s in slots if s is not None]

