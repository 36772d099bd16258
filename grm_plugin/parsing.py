"""Read a judge's text into principles, critique and one integer score per response.

Accepted scores blocks: ``\\boxed{a, b}``, ``[[a, b]]`` and ``<scores>...</scores>`` (whose inside may itself hold a
boxed or bracketed list). A block the judge labelled as its verdict (``<scores>`` tags, or a line that starts with a
``Scores:`` / ``Final Scores:`` label) wins over unlabelled ones, and among them the last; so drafts and thinking
before the final answer are ignored, and so is a response's own ``\\boxed{10}`` that a judge echoes or quotes after
its verdict (the judge prompt shows responses with any line-leading ``Scores:`` label rewritten, see
``templates.neutralise``). An unlabelled block is read only when no labelled one exists, and never from a line that
is part of a response the caller names (``quoted``). Anything unreadable raises ``ParseError`` saying what was
missing or wrong; nothing else is raised.
``parse_with_spans`` also says where each score is in the text (for reading token probabilities there), and
``parse_principles`` reads a principles-only answer.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple, Sequence

from .errors import ParseError

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_BRACKETS = re.compile(r"\[\[([^\[\]]*)\]\]")
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_SCORE_TOKEN = re.compile(r"[^\s,;]+")
_LABEL = r"^[ \t]*(?:[*#_]+[ \t]*)?{name}[ \t]*(?:[*_]+)?:(?:\*\*|__)?[ \t]*"
_PRINCIPLES_LABEL = re.compile(_LABEL.format(name=r"specific[ \t]+criteria"), re.IGNORECASE | re.MULTILINE)
_ANALYSIS_LABEL = re.compile(_LABEL.format(name=r"analysis"), re.IGNORECASE | re.MULTILINE)
_SCORE_LABELS = ("final scores", "final score", "scores", "score")
_TAG_PATTERNS: dict[str, re.Pattern[str]] = {}
_MAX_DIGITS = 6
_LABEL_WINDOW = 16
MAX_JUDGEMENT_CHARS = 1_000_000  # longer judge outputs are refused (real ones are bounded by max_tokens)


class ParsedJudgement(NamedTuple):
    principles: str
    critique: str
    scores: list[int]


class _Block(NamedTuple):
    """A scores block or tagged section found in the text: its span and the span of its inside."""

    start: int
    end: int
    inner_start: int
    inner_end: int
    kind: str


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _tag_pattern(tag: str) -> re.Pattern[str]:
    pattern = _TAG_PATTERNS.get(tag)
    if pattern is None:
        pattern = _TAG_PATTERNS[tag] = re.compile(f"<(/?){tag}>", re.IGNORECASE)
    return pattern


def _tagged_blocks(text: str, tag: str) -> list[_Block]:
    """Every ``<tag>...</tag>`` section, matched as a lazy regex would (an opener, then the nearest closer after it;
    the search goes on after that closer), in one pass over the tags: linear however many openers stay unclosed."""
    blocks, opened = [], None
    for match in _tag_pattern(tag).finditer(text):
        if not match.group(1):
            if opened is None:
                opened = match
        elif opened is not None:
            blocks.append(_Block(opened.start(), match.end(), opened.end(), match.start(), tag))
            opened = None
    return blocks


def _looks_like_scores(inner: str) -> bool:
    """Whether a block's inside is a list of integers (else it is a mention such as ``[[Response 1]]``)."""
    tokens = _SCORE_TOKEN.findall(inner)
    return bool(tokens) and all(_INTEGER.fullmatch(t) and len(t.lstrip("+-")) <= _MAX_DIGITS for t in tokens)


def _last_block(blocks: list[_Block], text: str) -> _Block | None:
    """The last block that holds a list of integers; the last block of all when none does (its error is reported)."""
    for block in reversed(blocks):
        if _looks_like_scores(text[block.inner_start:block.inner_end]):
            return block
    return blocks[-1] if blocks else None


def _regex_blocks(pattern: re.Pattern[str], text: str, kind: str) -> list[_Block]:
    return [_Block(m.start(), m.end(), m.start(1), m.end(1), kind) for m in pattern.finditer(text)]


def _read_scores(block: str, n_responses: int, score_range: tuple[int, int]) -> tuple[list[int], list[tuple[int, int]]]:
    """The scores of a block and their (start, end) offsets within it."""
    tokens = list(_SCORE_TOKEN.finditer(block))
    if not tokens:
        raise ParseError("the scores block is empty; expected "
                         f"{n_responses} integer(s) between {score_range[0]} and {score_range[1]}")
    scores = []
    for position, match in enumerate(tokens, start=1):
        token = match.group()
        if not _INTEGER.fullmatch(token) or len(token.lstrip("+-")) > _MAX_DIGITS:
            raise ParseError(f"score {position} in the scores block is {token[:40]!r}, not an integer")
        scores.append(int(token))
    if len(scores) != n_responses:
        raise ParseError(f"expected {n_responses} score(s) in the scores block, found {len(scores)}")
    lo, hi = score_range
    for position, value in enumerate(scores, start=1):
        if not lo <= value <= hi:
            raise ParseError(f"score {position} is {value}, outside the range {lo}..{hi}")
    return scores, [match.span() for match in tokens]


def _strip_scores_label(head: str) -> str:
    """Drop a ``Scores:`` / ``**Final Scores:**`` label right before the scores block (cheap: no regex scan)."""
    trimmed = head.rstrip(" \t*_:")
    tail = trimmed[-_LABEL_WINDOW:].lower()
    for label in _SCORE_LABELS:
        if tail.endswith(label):
            return trimmed[:len(trimmed) - len(label)].rstrip(" \t*_#")
    return head


def _split_sections(head: str) -> tuple[str, str]:
    """Principles and critique from the text before the scores block (labelled sections, else all critique)."""
    principles_at = _PRINCIPLES_LABEL.search(head)
    analysis_at = _ANALYSIS_LABEL.search(head, principles_at.end() if principles_at else 0)
    if principles_at and analysis_at:
        return head[principles_at.end():analysis_at.start()].strip(), head[analysis_at.end():].strip()
    if analysis_at:
        return "", head[analysis_at.end():].strip()
    if principles_at:
        return head[principles_at.end():].strip(), ""
    return "", head.strip()


def parse_judgement(text: str, n_responses: int, score_range: tuple[int, int] = (1, 10),
                    quoted: Sequence[str] = ()) -> ParsedJudgement:
    """Parse one judge output.

    Args:
        text: the judge's raw output.
        n_responses: how many scores the last scores block must hold.
        score_range: inclusive bounds every score must lie within.
        quoted: texts that came from the responses as the judge saw them (``templates.render_response``): an
            unlabelled block on a line copied from one of them is never read as the judge's scores.

    Returns:
        ParsedJudgement(principles, critique, scores), scores in the order the responses were shown.

    Raises:
        ParseError: no scores block, a non-integer, a wrong count or an out-of-range score.

    Example:
        >>> parse_judgement("Specific Criteria: Accuracy\\nAnalysis: 2 is wrong.\\nScores: \\\\boxed{9, 2}", 2)
        ParsedJudgement(principles='Accuracy', critique='2 is wrong.', scores=[9, 2])
    """
    return parse_with_spans(text, n_responses, score_range, quoted)[0]


def _labelled(text: str, block: _Block) -> bool:
    """Whether a block is the judge's labelled verdict: ``<scores>`` tags, or a line that starts with a scores label
    (``Scores:``, ``**Final Scores:**``) right before the block. Looks back at most a short window."""
    if block.kind == "scores":
        return True
    line_start = text.rfind("\n", max(0, block.start - 2 * _LABEL_WINDOW), block.start) + 1
    if line_start == 0 and block.start > 2 * _LABEL_WINDOW:
        return False  # the line starts further back than any label is long
    head = text[line_start:block.start].strip(" \t*_#").rstrip(" \t*_:").lower()
    return head in _SCORE_LABELS


def _scores_inside(text: str, block: _Block) -> tuple[str, int]:
    """The list a block holds and where it starts: its inside, or for ``<scores>`` tags the last boxed or bracketed
    list inside them when there is one."""
    inner_at, inner = block.inner_start, text[block.inner_start:block.inner_end]
    if block.kind == "scores":
        nested = [b for b in (_last_block(_regex_blocks(_BOXED, inner, "boxed"), inner),
                              _last_block(_regex_blocks(_BRACKETS, inner, "brackets"), inner)) if b]
        if nested:
            found = max(nested, key=lambda b: b.end)
            return inner[found.inner_start:found.inner_end], inner_at + found.inner_start
    return inner, inner_at


def _line_of(text: str, block: _Block, limit: int = 400) -> str:
    start = text.rfind("\n", max(0, block.start - limit), block.start) + 1
    end = text.find("\n", block.end, block.end + limit)
    return text[start:end if end >= 0 else min(len(text), block.end + limit)].strip()


def _echoed(text: str, block: _Block, quoted_lines: set[str]) -> bool:
    """Whether the block's line (up to 400 characters around it) is a line of a quoted response: one set look-up."""
    return _line_of(text, block) in quoted_lines


def parse_with_spans(text: str, n_responses: int, score_range: tuple[int, int] = (1, 10),
                     quoted: Sequence[str] | Callable[[], Sequence[str]] = ()
                     ) -> tuple[ParsedJudgement, list[tuple[int, int]]]:
    """``parse_judgement`` plus where each score is in ``text``: one (start, end) character span per score.
    ``quoted`` may be a function giving the texts: it is called only when no labelled verdict is found.

    Example:
        >>> text = "Analysis: fine\\nScores: \\\\boxed{9, 10}"
        >>> [text[a:b] for a, b in parse_with_spans(text, 2)[1]]
        ['9', '10']
    """
    if not isinstance(text, str):
        raise ParseError(f"expected the judge output as a string, got {type(text).__name__}")
    if n_responses < 1:
        raise ParseError(f"n_responses must be at least 1, got {n_responses}")
    if len(text) > MAX_JUDGEMENT_CHARS:
        raise ParseError(f"the judge output has {len(text)} characters, more than the {MAX_JUDGEMENT_CHARS} read")
    tagged = _tagged_blocks(text, "scores")
    every = {"boxed": _regex_blocks(_BOXED, text, "boxed"), "brackets": _regex_blocks(_BRACKETS, text, "brackets"),
             "scores": tagged}
    verdicts = [b for blocks in every.values() for b in blocks if _labelled(text, b)]
    if verdicts:  # the judge's own labelled verdict: the last one that holds integers, else the last one
        ordered = sorted(verdicts, key=lambda b: (b.end, -b.start))
        block = next((b for b in reversed(ordered) if _looks_like_scores(_scores_inside(text, b)[0])), ordered[-1])
    else:
        lines = {line.strip() for q in (quoted() if callable(quoted) else quoted) for line in q.splitlines()
                 if "\\boxed" in line or "[[" in line or "scores" in line.lower()}
        kept = {kind: [b for b in blocks if not (lines and _echoed(text, b, lines))] for kind, blocks in every.items()}
        candidates = [b for b in (_last_block(blocks, text) for blocks in kept.values()) if b]
        if not candidates:
            echoed = any(every.values())
            raise ParseError("no scores block found: expected \\boxed{...}, [[...]] or <scores>...</scores> "
                             f"holding {n_responses} integer(s)" + (" (the only ones are copied from a response)"
                                                                    if echoed else ""))
        # the last block wins; a mention that is not a list of integers (``See [[Response 1]]``) loses to a real one
        real = [b for b in candidates if _looks_like_scores(text[b.inner_start:b.inner_end])]
        block = max(real or candidates, key=lambda b: (b.end, -b.start))
    inner, inner_at = _scores_inside(text, block)
    scores, spans = _read_scores(inner, n_responses, score_range)
    spans = [(inner_at + a, inner_at + b) for a, b in spans]

    head = text[:block.start]
    principles_blocks = _tagged_blocks(head, "specific_criteria")
    analysis_blocks = _tagged_blocks(head, "analysis")
    if principles_blocks or analysis_blocks:
        principles = head[principles_blocks[-1].inner_start:principles_blocks[-1].inner_end].strip() \
            if principles_blocks else ""
        critique = head[analysis_blocks[-1].inner_start:analysis_blocks[-1].inner_end].strip() \
            if analysis_blocks else ""
        return ParsedJudgement(principles, critique, scores), spans
    principles, critique = _split_sections(_strip_scores_label(head))
    return ParsedJudgement(principles, critique, scores), spans


def parse_principles(text: str) -> str:
    """The principles of a principles-only answer: inside the last ``<specific_criteria>`` tags, else after the last
    ``Specific Criteria:`` label, else the whole answer.

    Raises:
        ParseError: the answer holds no principles (empty).

    Example:
        >>> parse_principles("Specific Criteria: Accuracy (70%); Brevity (30%)")
        'Accuracy (70%); Brevity (30%)'
    """
    if not isinstance(text, str):
        raise ParseError(f"expected the principles answer as a string, got {type(text).__name__}")
    tagged = _tagged_blocks(text, "specific_criteria")
    label = _last_match(_PRINCIPLES_LABEL, text)
    principles = (text[tagged[-1].inner_start:tagged[-1].inner_end] if tagged else text[label.end():] if label
                  else text).strip()
    if not principles:
        raise ParseError("the principles answer is empty; expected 'Specific Criteria: ...' with the criteria")
    return principles
