"""Knowledge judge-training families (no reference given): contract, the best response checked against the fact
table or recomputed independently, the misses never holding the right answer, exclusions, variety."""

from __future__ import annotations

import calendar
import random
import re
from fractions import Fraction

import pytest

from grm_plugin.judgedata import FAMILIES, GROUPS
from grm_plugin.judgedata.knowledge import world_fact_table

KNOWLEDGE = ["world_facts", "calendar_units"]
DRAWS = 300
# kept for evaluation: none may appear in any prompt or response (case-insensitive)
EXCLUDED_SUBSTRINGS = ["australia", "canada", "canberra", "sydney", "ottawa", "toronto", "gold", "strawberr",
                       "benevolent", "monday + 10 days", "10 days after a monday", "10 days after monday",
                       "2.5 metres", "2.5 meters", "250 centimetres", "17 + 25", "12 x 12", "12 × 12", "17 x 24",
                       "17 × 24", "boil", "sea level", "bloop", "razzie", "lazzie", "len('abc')", "print(len"]
EXCLUDED_WORDS = [r"\bau\b", r"\bag\b", r"\bsilver\b"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = list(calendar.month_name)[1:]
FACTORS = {("metres", "centimetres"): 100, ("kilometres", "metres"): 1000, ("kilograms", "grams"): 1000,
           ("hours", "minutes"): 60, ("minutes", "seconds"): 60, ("days", "hours"): 24, ("weeks", "days"): 7,
           ("centimetres", "millimetres"): 10}
SLOT_WORDS = re.compile(r"Response |\b[Ff]irst\b|\b[Ss]econd\b|\b[Oo]ther response|\b[Ll]atter\b|\b[Ff]ormer\b")


def _text(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)  # type: ignore[union-attr]


def _user(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]  # type: ignore[index]


def _contains(text: str, answer: str, case: bool = False) -> bool:
    """``answer`` occurs in ``text`` as a whole token (not inside a longer word or number)."""
    pattern = rf"(?<![\w.]){re.escape(answer)}(?![\w]|\.\d)"
    return re.search(pattern, text, 0 if case else re.I) is not None


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.I) is not None


TABLE = world_fact_table()
SYMBOLS = {answer for keys, answer, _ in TABLE if "symbol" in keys}


def _world_answer(prompt: str) -> tuple[str, list[str]]:
    found = [(answer, wrong) for keys, answer, wrong in TABLE if all(_has_word(prompt, k) for k in keys)]
    assert len(found) == 1, (prompt, found)
    return found[0]


def _calendar_answer(prompt: str) -> str:
    """Recompute the answer from the prompt alone."""
    m = re.search(r"(\d+) days (before|after) a (\w+day)", prompt)
    if m:
        days, start = int(m.group(1)), WEEKDAYS.index(m.group(3))
        return WEEKDAYS[(start + (days if m.group(2) == "after" else -days)) % 7]
    m = re.search(r"If today is (\w+day), what day (?:will it be|was it) (\d+) days (from now|ago)", prompt)
    if m:
        start, days = WEEKDAYS.index(m.group(1)), int(m.group(2))
        return WEEKDAYS[(start + (days if m.group(3) == "from now" else -days)) % 7]
    m = re.search(r"(\d+) months after (\w+)", prompt)
    if m:
        return MONTHS[(MONTHS.index(m.group(2)) + int(m.group(1))) % 12]
    m = re.search(r"days (?:are there in|does|in) (\w+) (\d{4})", prompt)
    if m:
        return str(calendar.monthrange(int(m.group(2)), MONTHS.index(m.group(1)) + 1)[1])
    m = re.search(r"letters (?:are )?in (?:the word )?'(\w+)'", prompt)
    if m:
        return str(len(m.group(1)))
    m = re.search(r"(\d+(?:\.\d+)?) (\w+)(?: to (\w+)| expressed in (\w+)|\?)", prompt)
    assert m, prompt
    value, frm = Fraction(m.group(1)), m.group(2)
    to = m.group(3) or m.group(4) or re.search(r"How many (\w+) are in", prompt).group(1)  # type: ignore[union-attr]
    result = value * FACTORS[(frm, to)] if (frm, to) in FACTORS else value / FACTORS[(to, frm)]
    if result.denominator == 1:
        return str(result.numerator)
    return f"{float(result):.4f}".rstrip("0").rstrip(".")


def test_knowledge_is_a_group_with_both_families() -> None:
    assert "knowledge" in GROUPS
    assert all(FAMILIES[name].group == "knowledge" and FAMILIES[name].templates == 6 for name in KNOWLEDGE)


@pytest.mark.parametrize("name", KNOWLEDGE)
def test_every_template_passes_check_and_the_best_holds_the_right_answer(name: str) -> None:
    fam = FAMILIES[name]
    for template in range(fam.templates):
        for i in range(DRAWS):
            draft = fam.make(random.Random(i), template)
            draft.check(f"{name}/{template}/{i}")
            assert draft.reference is None
            assert 8 <= draft.grades[0] <= 10 and all(1 <= g <= 3 for g in draft.grades[1:])
            prompt = _user(draft.prompt)
            if name == "world_facts":
                answer, wrong = _world_answer(prompt)
                case = answer in SYMBOLS
                for miss in draft.responses[1:]:
                    assert any(_contains(miss, w, case) for w in wrong), (miss, wrong)
            else:
                answer, case = _calendar_answer(prompt), False
            best, misses = draft.responses[0], draft.responses[1:]
            assert _contains(best, answer, case), (prompt, best, answer)
            assert not any(_contains(m, answer, case) for m in misses), (prompt, misses, answer)


def test_world_facts_table_is_consistent() -> None:
    for keys, answer, wrong in TABLE:
        assert keys and answer and wrong and answer not in wrong, (keys, answer, wrong)
    capitals = {keys[0]: answer for keys, answer, _ in TABLE if keys[-1] == "capital"}
    assert len(capitals) >= 40
    assert capitals["France"] == "Paris" and capitals["Japan"] == "Tokyo" and capitals["Turkey"] == "Ankara"


@pytest.mark.parametrize("name", KNOWLEDGE)
def test_nothing_kept_for_evaluation_appears(name: str) -> None:
    fam = FAMILIES[name]
    for i in range(4000):
        draft = fam.make(random.Random(i), i % fam.templates)
        text = "\n".join([_text(draft.prompt), *draft.responses, *draft.notes, draft.rationale,
                          *(c for c, _ in draft.criteria)]).lower()
        for bad in EXCLUDED_SUBSTRINGS:
            assert bad not in text, (bad, text)
        for bad in EXCLUDED_WORDS:
            assert not re.search(bad, text), (bad, text)


@pytest.mark.parametrize("name", KNOWLEDGE)
def test_notes_name_evidence_without_slot_words(name: str) -> None:
    fam = FAMILIES[name]
    for i in range(600):
        draft = fam.make(random.Random(i), i % fam.templates)
        for note in draft.notes:
            assert not SLOT_WORDS.search(note), note
            assert re.match(r"[a-z]+s\b", note), note  # starts with a lowercase verb
            assert len(note.split()) <= 20, note
        assert 1 <= len(draft.criteria) <= 3 and sum(w for _, w in draft.criteria) == 100
        assert not re.search(r"[.!?] [A-Z]", draft.rationale) and not SLOT_WORDS.search(draft.rationale)


@pytest.mark.parametrize("name", KNOWLEDGE)
def test_families_are_varied_and_deterministic(name: str) -> None:
    fam = FAMILIES[name]
    prompts = {repr(fam.make(random.Random(i), i % fam.templates).prompt) for i in range(4000)}
    assert len(prompts) >= 1500, len(prompts)
    assert fam.make(random.Random(11), 2) == fam.make(random.Random(11), 2)


@pytest.mark.parametrize("name", KNOWLEDGE)
def test_templates_differ_and_some_make_the_wrong_answer_longer(name: str) -> None:
    fam = FAMILIES[name]
    for i in range(20):
        assert len({repr(fam.make(random.Random(i), t).prompt) for t in range(fam.templates)}) == fam.templates
    longer_wrong = {t for t in range(fam.templates) for i in range(50)
                    if all(len(m) > len(d.responses[0]) for d in [fam.make(random.Random(i), t)]
                           for m in d.responses[1:])}
    assert len(longer_wrong) >= 2, longer_wrong
