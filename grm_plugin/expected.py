"""Expected scores from token log-probabilities: at each score of a judgement, the judge's probability of every
score value, read from the engine's ``top_logprobs``, and the expected value under it (the paper's TokenProb
baseline; a continuous score even from one sample).

A score may take several tokens ("10" as "1" then "0"). At the score's first token every alternative that spells a
valid score (or the start of one) counts; where an alternative could go on with more digits, the split between
ending and going on is read at the next token when the judge actually wrote that alternative; otherwise it counts
for the value it can spell that is nearest the written score (a "1" beside a written 9 is taken as 10, beside a
written 2 as 1). Scores whose probabilities cannot be read (no log-probabilities, a text that the tokens do
not spell, a negative score range) keep the parsed integer.
"""

from __future__ import annotations

import math
import re
from itertools import accumulate
from typing import Sequence

from .backends import TokenLogprob

_DIGITS = re.compile(r"[0-9]+")


def _alternatives(entry: TokenLogprob, prefix: str) -> dict[str, float]:
    """The alternatives at a token whose text begins with ``prefix`` before the score starts: digit string of
    each alternative that shares the prefix -> its probability (merged when spelled alike)."""
    top = dict(entry.top)
    if entry.logprob is not None:
        top.setdefault(entry.token, entry.logprob)
    found: dict[str, float] = {}
    for token, logprob in top.items():
        if token.startswith(prefix):
            rest = token[len(prefix):]
        elif not prefix.strip():
            rest = token.lstrip()
        else:
            continue
        digits = _DIGITS.match(rest)
        if digits:
            key = digits.group() + ("" if digits.end() == len(rest) else " ")  # " ": the number ends in this token
            found[key] = found.get(key, 0.0) + math.exp(logprob)
    return found


def _nearest(digits: str, near: int, high: int) -> int:
    """Of the values up to ``high`` spelled starting with ``digits``, the one nearest ``near``."""
    spelled = [v for v in range(int(digits), high + 1) if str(v).startswith(digits)] or [int(digits)]
    return min(spelled, key=lambda v: (abs(v - near), v))


def _distribution(tokens: Sequence[TokenLogprob], at: int, prefix: str, written: str, high: int,
                  mass: float, out: dict[int, float], near: int) -> bool:
    """Add to ``out`` the probability of each score value spelled from token ``at`` on (``written``: the digits the
    judge wrote from there). False when the token offers no digit alternative."""
    options = _alternatives(tokens[at], prefix)
    total = sum(options.values())
    if total <= 0:
        return False
    here = written[:max(0, len(tokens[at].token) - len(prefix))]  # the digits the judge wrote in this token
    for key, p in options.items():
        digits, ends = key.rstrip(), key.endswith(" ")
        share = mass * p / total
        can_go_on = not ends and int(digits) * 10 <= high
        if can_go_on and digits == here and at + 1 < len(tokens):
            rest = written[len(here):]
            going_on: dict[int, float] = {}
            # the next token either continues the number (a digit) or ends it (anything else)
            if _distribution(tokens, at + 1, "", rest, high, 1.0, going_on, near):
                nxt = tokens[at + 1]
                top = dict(nxt.top)
                if nxt.logprob is not None:
                    top.setdefault(nxt.token, nxt.logprob)
                p_all = sum(math.exp(v) for v in top.values())
                p_digit = sum(math.exp(v) for t, v in top.items() if _DIGITS.match(t))
                stop = 1.0 - p_digit / p_all if p_all > 0 else 1.0
                out[int(digits)] = out.get(int(digits), 0.0) + share * stop
                for value, q in going_on.items():
                    out[int(digits + str(value))] = out.get(int(digits + str(value)), 0.0) + share * (1 - stop) * q
                continue
        value = _nearest(digits, near, high) if can_go_on else int(digits)
        out[value] = out.get(value, 0.0) + share
    return True


def score_distribution(text: str, span: tuple[int, int], tokens: Sequence[TokenLogprob],
                       score_range: tuple[int, int], offsets: Sequence[int] | None = None) -> dict[int, float] | None:
    """The judge's probability of each valid score value at the score written at ``span`` of ``text`` (normalised
    over the valid values), or None when it cannot be read. ``offsets``: each token's start in the text, when known.

    Example:
        >>> tokens = [TokenLogprob("Scores: {", 0.0), TokenLogprob("8", math.log(0.6), {"8": math.log(0.6),
        ...           "7": math.log(0.3), "x": math.log(0.1)}), TokenLogprob("}", 0.0)]
        >>> {v: round(p, 3) for v, p in score_distribution("Scores: {8}", (9, 10), tokens, (1, 10)).items()}
        {8: 0.667, 7: 0.333}
    """
    low, high = score_range
    if low < 0:
        return None
    if offsets is None:
        offsets = token_offsets(text, tokens)
        if offsets is None:
            return None
    start = span[0]
    at = next((i for i, o in enumerate(offsets) if o <= start < o + len(tokens[i].token)), None)
    if at is None:
        return None
    out: dict[int, float] = {}
    written = text[start:span[1]]
    if not written.isdigit() or not _distribution(tokens, at, text[offsets[at]:start], written, high, 1.0, out,
                                                  int(written)):
        return None
    valid = {v: p for v, p in out.items() if low <= v <= high}
    total = sum(valid.values())
    return {v: p / total for v, p in valid.items()} if total > 0 else None


def token_offsets(text: str, tokens: Sequence[TokenLogprob]) -> list[int] | None:
    """Each token's start in ``text``; None when the tokens do not spell the text."""
    if "".join(t.token for t in tokens) != text:
        return None
    return [0, *accumulate(len(t.token) for t in tokens)][:-1]


def expected_scores(text: str, spans: Sequence[tuple[int, int]], scores: Sequence[int],
                    tokens: Sequence[TokenLogprob] | None, score_range: tuple[int, int]) -> tuple[list[float], int]:
    """The expected score at each span (the parsed integer where the probabilities cannot be read) and how many
    came from probabilities.

    Example:
        >>> expected_scores("7", [(0, 1)], [7], None, (1, 10))
        ([7.0], 0)
    """
    offsets = token_offsets(text, tokens) if tokens else None
    out, read = [], 0
    for span, score in zip(spans, scores):
        dist = score_distribution(text, span, tokens, score_range, offsets) if offsets is not None else None
        if dist is None:
            out.append(float(score))
        else:
            out.append(sum(v * p for v, p in dist.items()))
            read += 1
    return out, read
