"""parse_judgement: the three scores formats, the last block wins, strict counts and ranges, ParseError only."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grm_plugin import ParseError, parse_judgement
from grm_plugin.templates import render_judgement


@pytest.mark.parametrize(
    "text",
    [
        "Specific Criteria: Accuracy (70%), Clarity (30%)\nAnalysis: The first is right.\nScores: \\boxed{8, 3}",
        "Specific Criteria: Accuracy (70%), Clarity (30%)\nAnalysis: The first is right.\nFinal Scores: [[8, 3]]",
        "<specific_criteria>Accuracy (70%), Clarity (30%)</specific_criteria>\n<analysis>The first is right."
        "</analysis>\n<scores>\\boxed{8, 3}</scores>",
        "<specific_criteria>Accuracy (70%), Clarity (30%)</specific_criteria><analysis>The first is right."
        "</analysis><scores>8, 3</scores>",
    ],
    ids=["boxed", "brackets", "tagged-boxed", "tagged-plain"],
)
def test_all_three_score_formats_parse_to_principles_critique_and_scores(text):
    parsed = parse_judgement(text, 2)
    assert parsed.scores == [8, 3]
    assert parsed.principles == "Accuracy (70%), Clarity (30%)"
    assert parsed.critique == "The first is right."


def test_last_scores_block_wins_over_drafts():
    text = "Draft: \\boxed{2, 9}. On reflection the first is better.\nScores: \\boxed{9, 2}"
    assert parse_judgement(text, 2).scores == [9, 2]
    mixed = "Final Scores: [[1, 1]] ... revised <scores>\\boxed{7, 4}</scores>"
    assert parse_judgement(mixed, 2).scores == [7, 4]


def test_markdown_labels_are_recognised():
    text = "**Specific Criteria:** Safety\n**Analysis:** Refuses correctly.\n**Scores:** \\boxed{9}"
    parsed = parse_judgement(text, 1)
    assert (parsed.principles, parsed.critique, parsed.scores) == ("Safety", "Refuses correctly.", [9])


def test_unlabelled_text_before_the_scores_becomes_the_critique():
    parsed = parse_judgement("Both are fine but the second is terse. \\boxed{7, 6}", 2)
    assert parsed.principles == ""
    assert parsed.critique == "Both are fine but the second is terse."


@pytest.mark.parametrize(
    "text, n, message",
    [
        ("no scores here", 2, "no scores block found"),
        ("Scores: \\boxed{}", 2, "empty"),
        ("Scores: \\boxed{8}", 2, "expected 2 score(s)"),
        ("Scores: \\boxed{8, 3, 1}", 2, "expected 2 score(s)"),
        ("Scores: \\boxed{8, 11}", 2, "score 2 is 11, outside the range 1..10"),
        ("Scores: \\boxed{0, 5}", 2, "score 1 is 0, outside the range 1..10"),
        ("Scores: \\boxed{8.5, 3}", 2, "score 1 in the scores block is '8.5', not an integer"),
        ("Scores: \\boxed{eight, 3}", 2, "not an integer"),
        ("Scores: \\boxed{" + "9" * 5000 + "}", 1, "not an integer"),
    ],
)
def test_parse_errors_say_what_was_missing_or_wrong(text, n, message):
    with pytest.raises(ParseError) as info:
        parse_judgement(text, n)
    assert message in str(info.value)


def test_custom_score_range_is_enforced():
    assert parse_judgement("\\boxed{0, 1}", 2, score_range=(0, 1)).scores == [0, 1]
    with pytest.raises(ParseError, match="outside the range 0..1"):
        parse_judgement("\\boxed{0, 2}", 2, score_range=(0, 1))


@settings(max_examples=400, deadline=None)
@given(text=st.text(), n=st.integers(min_value=1, max_value=6))
def test_arbitrary_text_raises_nothing_but_parse_error(text, n):
    try:
        parse_judgement(text, n)
    except ParseError:
        pass


_score_like = st.one_of(
    st.text(alphabet="0123456789, .-+[]{}<>/\\boxedscr", max_size=30),
    st.text(),
)


@settings(max_examples=400, deadline=None)
@given(prefix=st.text(max_size=40), block=_score_like, wrapper=st.sampled_from(["\\boxed{%s}", "[[%s]]",
                                                                                 "<scores>%s</scores>"]))
def test_near_miss_score_blocks_raise_nothing_but_parse_error(prefix, block, wrapper):
    try:
        parse_judgement(prefix + wrapper % block, 2)
    except ParseError:
        pass


_LABELS = re.compile(r"(?im)^[\s*#_]*(specific\s+criteria|analysis|(final\s+)?scores?)[\s*_]*:")
_FORBIDDEN = ("\\boxed{", "[[", "]]", "<scores>", "</scores>", "<analysis>", "</analysis>", "<specific_criteria>",
              "</specific_criteria>", "{", "}")


def _clean(text: str) -> bool:
    return not _LABELS.search(text) and not any(f in text.lower() for f in _FORBIDDEN)


section = st.text(min_size=1, max_size=200).map(str.strip).filter(lambda s: s and _clean(s))


@settings(max_examples=300, deadline=None)
@given(
    principles=section,
    critique=section,
    scores=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=8),
    score_format=st.sampled_from(["boxed", "brackets", "tagged"]),
)
def test_rendered_judgements_parse_back_exactly(principles, critique, scores, score_format):
    text = render_judgement(principles, critique, scores, score_format)
    parsed = parse_judgement(text, len(scores))
    assert parsed.scores == scores
    assert parsed.principles == principles
    assert parsed.critique == critique


def _within(seconds: float, function, *args):
    """Run ``function`` in a thread and fail if it has not returned after ``seconds``: a stall guard (a quadratic
    parser took minutes on these inputs), not a speed measurement (benchmarks/ measure speed)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(function, *args).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


@pytest.mark.parametrize("opener", ["<scores>", "<specific_criteria>", "<analysis>", "\\boxed{", "[["])
def test_many_unclosed_openers_do_not_stall_the_parser(opener):
    """A small judge degenerating into repetition: 50,000 openers, then a real answer."""
    text = opener * 50_000 + "\nScores: \\boxed{7, 3}"
    assert _within(60, parse_judgement, text, 2).scores == [7, 3]


def test_a_bracketed_mention_after_the_scores_does_not_invalidate_them():
    text = "Analysis: Response 1 is right.\nScores: \\boxed{8, 2}\nSee [[Response 1]] and <scores>above</scores>."
    assert parse_judgement(text, 2).scores == [8, 2]
    with pytest.raises(ParseError, match="not an integer"):  # with no real block, the mention's error is reported
        parse_judgement("Analysis: fine. See [[Response 1]].", 1)


def test_judge_output_beyond_the_character_cap_is_refused_by_name():
    from grm_plugin.parsing import MAX_JUDGEMENT_CHARS

    with pytest.raises(ParseError, match="more than the 1000000 read"):
        parse_judgement("x" * (MAX_JUDGEMENT_CHARS + 1) + "Scores: \\boxed{7}", 1)
