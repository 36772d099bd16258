"""Context budgets: a judge prompt that would not fit the judge's context is shortened before it is sent, instead of
failing at the engine (vLLM answers 400) and taking its batch with it.

The responses are shortened first, each fairly: the longest ones are cut down to a common length (water filling)
and no response is cut below what the others keep. A text keeps its head and its tail around a visible
``[... N tokens omitted ...]`` marker. An agent trajectory (a list of messages) loses whole middle turns first,
tool results before other turns, each replaced by the marker; its first and last turns (the final answer) are kept
whole while any middle turn is left, then text is cut. The prompt comes next: middle turns of a message-list prompt,
never its system turn or its last user turn (the question), never the instructions or the scores format. When even
that cannot fit, ``fit_request`` raises JudgePromptTooLong and the request gets a result without reward, counted,
while the rest of its batch is judged.

Token counts are estimates that err on the long side (``estimate_tokens``), made exact by the engine's own tokenizer
when one is at hand and the prompt is near the budget.
"""

from __future__ import annotations

import math
import re
from typing import Any, Awaitable, Callable, Sequence

from .errors import InvalidRequestError
from .templates import render_message
from .types import Message, ScoreRequest

# Digits one by one, words, runs of space, other characters one each: what BPE tokenizers never exceed by much on
# prose and code; with at least one token per 4 characters for long words and unusual scripts.
_PIECE = re.compile(r"[0-9]|[^\W\d_]+|\s+|[^\w\s]|_")
MIN_KEEP_TOKENS = 48  # no response is cut below this: a judge cannot rate less
MESSAGE_OVERHEAD_TOKENS = 8  # role markers of a chat template, per message


class JudgePromptTooLong(InvalidRequestError):
    """A judge prompt that cannot be shortened to the judge's context without cutting the question or the
    instructions; the request is not judged (its reward is None / the invalid reward)."""


def estimate_tokens(text: str) -> int:
    """A token count that is rarely below a real tokenizer's.

    Example:
        >>> estimate_tokens("It costs 1234 dollars.")
        11
    """
    return max(len(_PIECE.findall(text)), math.ceil(len(text) / 4))


def marker(tokens: int) -> str:
    return f"[... {tokens} tokens omitted ...]"


def cut_text(text: str, keep: int) -> tuple[str, int]:
    """``text`` cut to about ``keep`` tokens: its head (2/3) and tail (1/3) around the omission marker; the text and the
    tokens omitted (0 when it already fits)."""
    total = estimate_tokens(text)
    if total <= keep:
        return text, 0
    keep_chars = max(16, int(len(text) * keep / total))
    head, tail = keep_chars * 2 // 3, keep_chars // 3
    omitted = total - keep
    return f"{text[:head].rstrip()}\n{marker(omitted)}\n{text[len(text) - tail:].lstrip()}", omitted


def _message_tokens(message: Message) -> int:
    """A turn's tokens as the judge prompt shows it (its label, text and tool calls, as the templates render it)."""
    return estimate_tokens(render_message(message)) + 1


def _runs(flags: Sequence[bool]) -> int:
    """How many runs of consecutive True there are (each becomes one marker turn)."""
    return sum(1 for i, flag in enumerate(flags) if flag and (i == 0 or not flags[i - 1]))


MARKER_TURN_TOKENS = 32  # a merged marker turn as rendered: "[Assistant]\n[... 12 turns (3456 tokens) omitted ...]"


def _merged(turns: Sequence[Message], dropped: Sequence[bool], sizes: Sequence[int]) -> list[Message]:
    """The turns with each run of dropped ones replaced by one marker turn (saying how many turns and tokens)."""
    out: list[Message] = []
    i = 0
    while i < len(turns):
        if not dropped[i]:
            out.append(turns[i])
            i += 1
            continue
        j = i
        while j < len(turns) and dropped[j]:
            j += 1
        tokens = sum(sizes[i:j])
        text = f"[... {j - i} turn{'s' if j - i > 1 else ''} ({tokens} tokens) omitted ...]"
        role = "tool" if all(t.role in ("tool", "function") for t in turns[i:j]) else "assistant"
        out.append(Message(role=role, content=text))
        i = j
    return out


def shorten_response(response: Any, keep: int) -> tuple[Any, int]:
    """One response shortened to about ``keep`` tokens (see the module docstring); the response and tokens omitted."""
    if isinstance(response, str):
        return cut_text(response, keep)
    turns = list(response)
    sizes = [_message_tokens(m) for m in turns]
    dropped = [False] * len(turns)

    def total() -> int:
        return sum(size for size, gone in zip(sizes, dropped) if not gone) + MARKER_TURN_TOKENS * _runs(dropped)

    # whole middle turns first: tool results, the largest first; then a run of the oldest middle turns, so what
    # stays is the start of the trajectory and its latest steps, and the runs merge into one marker
    for i in sorted(range(1, len(turns) - 1), key=lambda i: -sizes[i]):
        if total() <= keep:
            break
        if turns[i].role in ("tool", "function"):
            dropped[i] = True
    for i in range(1, len(turns) - 1):
        if total() <= keep:
            break
        dropped[i] = True
    omitted = sum(size for size, gone in zip(sizes, dropped) if gone)
    turns = _merged(turns, dropped, sizes)
    sizes = [_message_tokens(m) for m in turns]
    # then the text of the largest turns (each cut must shrink its turn: the marker costs tokens too)
    for _ in range(len(turns)):
        if sum(sizes) <= keep:
            break
        i = max(range(len(turns)), key=lambda i: sizes[i])
        text = turns[i].text()
        target = max(MIN_KEEP_TOKENS // 2, estimate_tokens(text) - (sum(sizes) - keep) - MARKER_TURN_TOKENS)
        cut, lost = cut_text(text, target)
        shortened = turns[i].model_copy(update={"content": cut})
        if lost == 0 or _message_tokens(shortened) >= sizes[i]:
            break
        turns[i], sizes[i] = shortened, _message_tokens(shortened)
        omitted += lost
    return turns, omitted


def _omitted_turn(message: Message, tokens: int) -> Message:
    """A prompt turn replaced by the marker (its role kept, its tool calls dropped)."""
    return Message(role=message.role, content=marker(tokens), name=message.name, tool_call_id=message.tool_call_id)


def _shorten_prompt(prompt: Any, excess: int) -> tuple[Any, int]:
    """Middle turns of a message-list prompt dropped (never its first system turn or its last user turn)."""
    if isinstance(prompt, str):
        return prompt, 0
    turns = list(prompt)
    last_user = max(i for i, m in enumerate(turns) if m.role == "user")
    protected = {last_user} | ({0} if turns[0].role in ("system", "developer") else set())
    omitted = 0
    for i in sorted((i for i in range(len(turns)) if i not in protected), key=lambda i: -_message_tokens(turns[i])):
        if omitted >= excess:
            break
        size = _message_tokens(turns[i])
        replaced = _omitted_turn(turns[i], size)
        if _message_tokens(replaced) < size:
            omitted += size - _message_tokens(replaced)
            turns[i] = replaced
    return turns, omitted


def _caps(sizes: Sequence[int], excess: int) -> int:
    """The common length the longest responses are cut to so that ``excess`` tokens go (water filling)."""
    low, high = MIN_KEEP_TOKENS, max(sizes)
    while low < high:  # the largest cap that still frees enough
        cap = (low + high + 1) // 2
        if sum(max(0, s - cap) for s in sizes) >= excess:
            low = cap
        else:
            high = cap - 1
    return low


def response_tokens(response: Any) -> int:
    if isinstance(response, str):
        return estimate_tokens(response)
    return sum(_message_tokens(m) for m in response)


Measure = Callable[[ScoreRequest], Awaitable[int]]


async def fit_request(request: ScoreRequest, budget: int, measure: Measure, attempts: int = 6
                      ) -> tuple[ScoreRequest, int]:
    """``request`` shortened until ``measure`` (the judge prompt's tokens) is at most ``budget``; the request and the
    tokens omitted (0: unchanged). Raises JudgePromptTooLong when the question and instructions alone do not fit.

    Cuts are sized in estimated tokens (``estimate_tokens``), which run long (about 1.6 estimated per real token on
    prose), while ``measure`` may count exactly: each attempt cuts the original responses afresh, and learns from what
    the last cut removed how many estimated tokens one measured token is, so the next cut is sized right instead of
    shrinking the excess by a fixed fraction. The last attempt cuts every response to ``MIN_KEEP_TOKENS`` (and the
    prompt's middle turns), so the error, when there is one, says what that configuration measured."""
    total0 = await measure(request)
    if total0 <= budget:
        return request, 0
    sizes = [response_tokens(r) for r in request.responses]
    freeable = sum(max(0, size - MIN_KEEP_TOKENS) for size in sizes)
    margin = 16 * request.n_responses  # the markers, and rounding
    ratio = 1.0  # estimated tokens per measured token, learnt from each cut
    need = 0
    total, smallest = total0, freeable + 10**9  # ``smallest``: every response at the floor, no middle prompt turn
    for _ in range(attempts):
        need = min(math.ceil((total0 - budget) * ratio) + margin, smallest)
        candidate, lost = _cut(request, sizes, need, freeable)
        if lost == 0:
            break
        total = await measure(candidate)
        if total <= budget:
            return candidate, lost
        removed = total0 - total
        if need >= smallest or removed <= 0:
            break
        ratio = min(8.0, max(0.25, 1.02 * lost / removed))
    if need < smallest:  # the loop stopped before trying the smallest configuration: measure it, for a true answer
        candidate, lost = _cut(request, sizes, smallest, freeable)
        if lost:
            total = await measure(candidate)
            if total <= budget:
                return candidate, lost
    raise JudgePromptTooLong(f"the judge prompt needs {total} tokens even with every response cut to about "
                             f"{MIN_KEEP_TOKENS} tokens and the prompt's middle turns dropped, over the budget of "
                             f"{budget} (max_prompt_tokens): the question, reference and instructions alone do not fit")


def _cut(request: ScoreRequest, sizes: Sequence[int], need: int, freeable: int) -> tuple[ScoreRequest, int]:
    """The original request with ``need`` estimated tokens cut: the longest responses down to a common cap (water
    filling), and when the responses cannot free that much, the prompt's middle turns too; and the tokens cut."""
    cap = _caps(sizes, need) if freeable >= need else MIN_KEEP_TOKENS
    responses, lost = [], 0
    for response in request.responses:
        cut, omitted = shorten_response(response, cap)
        responses.append(cut)
        lost += omitted
    prompt = request.prompt
    if freeable < need:  # the responses alone cannot free enough: the prompt's middle turns go too
        prompt, omitted = _shorten_prompt(request.prompt, need - freeable)
        lost += omitted
    if lost == 0:
        return request, 0
    return request.model_copy(update={"responses": responses, "prompt": prompt}), lost


def prompt_tokens_estimate(messages: Sequence[dict[str, Any]]) -> int:
    """The estimated tokens of chat messages."""
    return sum(estimate_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


__all__ = ["JudgePromptTooLong", "MIN_KEEP_TOKENS", "cut_text", "estimate_tokens", "fit_request",
           "prompt_tokens_estimate", "shorten_response"]

