"""The records that cross the library's boundary: requests to judge, sampled judgements and results.

Data flows one way: ``ScoreRequest`` -> judge prompts -> ``Judgement`` (one per sample) -> ``ScoreResult``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidRequestError, format_validation_error

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(value: Any) -> Any:
    """``value`` if every string in it is Unicode text, else ValueError naming where (a pydantic validator)."""
    found = lone_surrogate(value)
    if found:
        raise ValueError(found)
    return value


MAX_METADATA_DEPTH = 32


def nesting_depth(value: Any) -> int:
    """How many lists/dicts deep ``value`` goes (0 for a scalar), without recursion.

    Example:
        >>> nesting_depth({"a": [1, {"b": []}]})
        4
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where a string inside ``value`` (strings, lists, dicts, messages) holds a lone surrogate, which is not
    Unicode text and cannot be encoded for the judge: a message naming the path and position, else None.

    Example:
        >>> lone_surrogate(["ok", {"content": "x\\ud800"}])
        "[1].content: lone surrogate '\\\\ud800' at 1 (not valid Unicode text)"
    """
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return None if found is None else (f"{path}: lone surrogate {found.group()!r} at {found.start()} "
                                           "(not valid Unicode text)").lstrip(": ")
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found_at = lone_surrogate(item, where)
        if found_at:
            return found_at
    return None


class Message(BaseModel):
    """One chat message in OpenAI's shape (``role``, ``content``, optional ``tool_calls``/``tool_call_id``/``name``).

    ``content`` may be a string, a list of content parts (``{"type": "text", "text": ...}``) or None (an assistant
    turn that only calls tools). Unknown keys are kept, so messages from TRL, LangChain or OpenAI round-trip.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    role: Role
    content: Union[str, list[Any], None] = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text: a string content as is, the text parts of a list content joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'content')}]")
        return "\n".join(parts)


Prompt = Union[str, list[Message]]
Response = Union[str, list[Message]]


class ScoreRequest(BaseModel):
    """One prompt and the responses to judge together.

    Args:
        prompt: the user's query as a string, or the chat so far (system, multi-turn, tool calls and tool results);
            the last user turn is the query being answered.
        responses: 1..n responses, each a string or a list of assistant/tool messages (an agent's turn).
        reference: an optional reference answer shown to the judge.
        principles: optional pre-written principles (criteria) shown to the judge.
        metadata: free data carried through to the result, never shown to the judge.

    Example:
        >>> ScoreRequest(prompt="2+2?", responses=["4", "5"]).n_responses
        2
    """

    model_config = ConfigDict(frozen=True)

    prompt: Prompt
    responses: list[Response] = Field(min_length=1)
    reference: str | None = None
    principles: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt", "responses", "reference", "principles")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        return unicode_text(value)

    @field_validator("metadata")
    @classmethod
    def _metadata_round_trips(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Metadata comes back in the result: it must be encodable text, nested no deeper than a JSON answer can
        carry."""
        depth = nesting_depth(value)
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"nested {depth} levels deep, at most {MAX_METADATA_DEPTH}")
        found = lone_surrogate(list(value.keys())) or lone_surrogate(value)
        if found:
            raise ValueError(found)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list):
            if not value:
                raise ValueError("expected a non-empty string or a non-empty list of chat messages")
            if not any(m.role == "user" for m in value):
                raise ValueError("chat messages must contain at least one message with role 'user'")
        return value

    @field_validator("responses")
    @classmethod
    def _responses_are_turns(cls, value: list[Response]) -> list[Response]:
        for i, response in enumerate(value):
            if isinstance(response, list):
                if not response:
                    raise ValueError(f"response {i} is an empty message list; expected a string or messages")
                bad = [m.role for m in response if m.role not in ("assistant", "tool", "function")]
                if bad:
                    raise ValueError(
                        f"response {i} holds a message with role {bad[0]!r}; a response is assistant/tool messages"
                    )
        return value

    @property
    def n_responses(self) -> int:
        return len(self.responses)

    def fingerprint(self) -> str:
        """A stable hash of everything the judge sees (not metadata): the cache key and the shuffle seed."""
        payload = self.model_dump(mode="json", exclude={"metadata"}, exclude_none=True)
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


class Judgement(BaseModel):
    """One sampled judge output.

    ``scores`` are in the caller's original response order (the sample's shuffle already undone); ``order`` is the
    permutation that was shown (``order[j]`` = the original index of the response shown in slot j).
    ``expected_scores`` (with ``expected_scores=True``): the expected score of each response under the judge's token
    probabilities, in the caller's order; None when some score's probabilities could not be read (the sample then
    votes its integer scores).
    """

    text: str
    principles: str = ""
    critique: str = ""
    scores: list[int] | None = None
    valid: bool = False
    error: str | None = None
    order: list[int] = Field(default_factory=list)
    meta_score: float | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    expected_scores: list[float] | None = None
    resampled: bool = False  # drawn to replace an invalid sample (resample_invalid)
    replica: str | None = None  # the judge replica that wrote it (with several base URLs)

    @model_validator(mode="after")
    def _valid_has_scores(self) -> "Judgement":
        if self.valid and self.scores is None:
            raise ValueError("a valid judgement needs scores")
        return self


class ScoreResult(BaseModel):
    """The judge's verdict on one ScoreRequest.

    Attributes:
        rewards: one float per response (scaled as configured), or None where no valid judgement exists.
        votes: summed scores over the valid samples (paper Eq. 14), one per response; None without valid samples.
        best: index of the best response (argmax of votes, ties broken by a seeded coin), None without valid samples.
        judgements: every sampled judgement, valid or not.
        samples / valid_samples: how many judgements were drawn at first and how many of those parsed (their ratio is
            the judge's parse-valid rate); ``resampled``: replacements drawn for the invalid ones (resample_invalid),
            which vote when they parse.
        truncated_tokens: tokens (estimated) cut from the responses (or the prompt's middle turns) so the judge prompt
            fits ``max_prompt_tokens``; 0 when it was sent whole.
        error: why the request was not judged (a judge prompt that cannot fit: ``JudgePromptTooLong``); rewards None.
        voted_samples: how many parsed judgements the votes sum over (all of them, or the top k_meta with a meta RM).
        meta_kept: with a meta RM, the indices (into ``judgements``) of the judgements that were voted.
        prompt_tokens / completion_tokens: judge tokens spent on this request (0 when served from the cache),
            writing upfront principles included.
        cached: whether the result came from the cache without engine calls.
        rounds / stopped_early: adaptive k: the rounds of samples drawn, and whether the stopping rule ended the draw
            before k_max (fixed k: one round, never early).
        slot_imbalance: how unevenly the responses sat in the slots over the samples drawn (largest minus smallest
            count of a (response, slot) pair; 0 = perfectly balanced).
        principles_mode: where the specific criteria came from: 'joint' (each sample wrote its own), 'upfront'
            (written once per prompt) or 'given'.
        principles_tokens: judge tokens this request spent writing upfront principles (0 when they were reused).
        principles_reused: the upfront principles came from the cache (memory or disk) or another request.
        principles_tokens_saved: judge tokens not written because the principles were fixed: samples x the
            principles' length in tokens (for given principles, estimated as 4 characters a token).
        expected_votes / expected_samples: with ``expected_scores``: the summed expected scores of the voted samples
            (``rewards`` and ``best`` then come from them) and how many voted samples had every score read from
            log-probabilities.
    """

    rewards: list[float | None]
    votes: list[int] | None = None
    best: int | None = None
    judgements: list[Judgement] = Field(default_factory=list)
    samples: int = 0
    valid_samples: int = 0
    voted_samples: int = 0
    meta_kept: list[int] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    rounds: int = 0
    stopped_early: bool = False
    slot_imbalance: int | None = None
    principles_mode: Literal["joint", "upfront", "given"] | None = None
    principles_tokens: int = 0
    principles_reused: bool = False
    principles_tokens_saved: int = 0
    expected_votes: list[float] | None = None
    expected_samples: int = 0
    resampled: int = 0
    truncated_tokens: int = 0
    floored: int = 0  # responses given the lowest score unjudged (floor_contentless)
    error: str | None = None

    @property
    def mean_scores(self) -> list[float] | None:
        """Each response's mean score over the voted samples (None without valid samples)."""
        voted = self.voted_samples or self.valid_samples
        if self.votes is None or not voted:
            return None
        return [v / voted for v in self.votes]

    @property
    def parse_valid_rate(self) -> float:
        return self.valid_samples / self.samples if self.samples else 0.0


def coerce_requests(requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreRequest]:
    """Validate requests given as ScoreRequest objects or plain dicts; errors name the index and the field.

    Example:
        >>> [r.n_responses for r in coerce_requests([{"prompt": "2+2?", "responses": ["4", "5"]}])]
        [2]
    """
    if isinstance(requests, (ScoreRequest, dict)):
        raise InvalidRequestError("expected a list of requests, got a single "
                                  f"{type(requests).__name__}; wrap it in a list")
    out = []
    for i, request in enumerate(requests):
        if isinstance(request, ScoreRequest):
            out.append(request)
            continue
        try:
            out.append(ScoreRequest.model_validate(request))
        except ValidationError as exc:
            raise InvalidRequestError(format_validation_error(exc, f"request {i}")) from None
    return out
