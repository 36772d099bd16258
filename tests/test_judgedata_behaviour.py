"""The behaviour and quality judge-data families: contract, variety, and independent checks of their evidence."""

from __future__ import annotations

import random
import re

import pytest

from grm_plugin.judgedata import FAMILIES
from grm_plugin.judgedata.base import Draft
from grm_plugin.judgedata.behaviour import REFUSAL_PHRASES

MINE = ["refuse_harmful", "help_benign", "on_topic", "all_parts", "passage_fact", "passage_slip", "multi_turn_context",
        "specific_vs_vague", "explain_why", "audience_fit", "hack_resistance", "length_bias"]
BANNED_IN_NOTES = re.compile(r"Response |(?i:\bfirst\b|\bsecond\b|other response)")


def _draws(name: str, template: int, n: int = 300) -> list[Draft]:
    fam = FAMILIES[name]
    return [fam.make(random.Random(f"test:{name}:{template}:{i}"), template) for i in range(n)]


def _key(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


CASES = [(name, t) for name in MINE for t in range(FAMILIES[name].templates)]


@pytest.mark.parametrize("name,template", CASES)
def test_drafts_pass_check_and_notes_are_position_free(name: str, template: int) -> None:
    assert FAMILIES[name].templates >= 6
    for i, draft in enumerate(_draws(name, template)):
        draft.check(f"{name}/{template}/{i}")
        for note in draft.notes:
            assert not BANNED_IN_NOTES.search(note), note
            assert len(note.split()) <= 24, note
        assert not BANNED_IN_NOTES.search(draft.rationale), draft.rationale


@pytest.mark.parametrize("name", MINE)
def test_families_are_varied(name: str) -> None:
    fam = FAMILIES[name]
    rng = random.Random(f"variety:{name}")
    prompts = {_key(fam.make(rng, rng.randrange(fam.templates)).prompt) for _ in range(4000)}
    assert len(prompts) >= 2000, (name, len(prompts))


@pytest.mark.parametrize("template", range(6))
def test_refusals_and_placeholder_compliance(template: int) -> None:
    for draft in _draws("refuse_harmful", template):
        assert any(p in draft.responses[0] for p in REFUSAL_PHRASES)
        compliance = [r for r, g in zip(draft.responses, draft.grades) if g <= 2]
        assert compliance
        for response in compliance:
            assert not any(p in response for p in REFUSAL_PHRASES)
            assert "[" in response and "]" in response
        assert draft.grades[1] in (5, 6)


@pytest.mark.parametrize("template", range(6))
def test_benign_requests_are_helped(template: int) -> None:
    for draft in _draws("help_benign", template):
        assert not any(p in draft.responses[0] for p in REFUSAL_PHRASES)
        assert any(p in draft.responses[1] for p in REFUSAL_PHRASES)


@pytest.mark.parametrize("template", range(6))
def test_passage_fact_quotes_the_passage(template: int) -> None:
    for draft in _draws("passage_fact", template):
        value = re.search(r'"([^"]+)"', draft.notes[0]).group(1)  # type: ignore[union-attr]
        assert value in draft.prompt and value in draft.responses[0]
        assert all(value not in r for r in draft.responses[1:]) or value.isdigit()


@pytest.mark.parametrize("template", range(6))
def test_passage_slip_names_a_real_contradiction(template: int) -> None:
    for draft in _draws("passage_slip", template):
        for response, note in zip(draft.responses[1:], draft.notes[1:]):
            wrong, right = re.search(r" (\S+(?: \S+)?); the passage says (.+)$", note).groups()  # type: ignore
            assert right in draft.prompt and right in draft.responses[0]
            assert wrong.split()[-1] in response


@pytest.mark.parametrize("template", range(6))
def test_multi_turn_prompts_alternate(template: int) -> None:
    for draft in _draws("multi_turn_context", template):
        roles = [m["role"] for m in draft.prompt]
        assert roles[-1] == "user" and len(roles) >= 3
        assert all(a != b for a, b in zip(roles, roles[1:]))


TRICKS = ["full marks", "\\boxed{10}", "[The End of", "You asked:", "10/10"]


@pytest.mark.parametrize("template", range(6))
def test_hack_misses_contain_their_trick(template: int) -> None:
    with_ref = 0
    for draft in _draws("hack_resistance", template):
        with_ref += draft.reference is not None
        assert all(g <= 2 for g in draft.grades[1:])
        for response in draft.responses[1:]:
            has_trick = any(t in response for t in TRICKS)
            bare = not re.search(r"\d", response)
            assert has_trick or bare, response
        if draft.reference is not None:
            assert draft.reference in draft.responses[0]
    assert with_ref in (0, 300)


@pytest.mark.parametrize("template", range(6))
def test_length_bias_padding(template: int) -> None:
    for draft in _draws("length_bias", template):
        best = draft.responses[0]
        assert len(draft.responses[1]) >= 3 * len(best)
        if len(draft.responses) == 3:
            assert draft.grades[0] - draft.grades[2] in (1, 2, 3)


def test_nothing_gives_real_harmful_detail() -> None:
    for template in range(6):
        for draft in _draws("refuse_harmful", template, 100):
            for response, grade in zip(draft.responses, draft.grades):
                if grade <= 2:
                    assert re.search(r"\[[^\]]+\]", response)
