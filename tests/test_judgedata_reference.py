"""Reference and constraint judge-training families: contract, independent checks of the best response, variety."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re

import pytest

from grm_plugin.judgedata import FAMILIES

REFERENCE = ["ref_number", "compute_arith", "ref_name", "ref_date", "ref_unit", "ref_code_output", "ref_choice",
             "ref_list"]
CONSTRAINT = ["word_count", "sentence_count", "list_items", "keyword_include", "forbidden_word", "letter_case",
              "punctuation", "json_format", "language", "start_end_phrase"]
ALL = REFERENCE + CONSTRAINT
DRAWS = 300
# words only a correct sentence in that language holds (frames: favourite colour, market day, pets)
MARKERS = {"French": r"\b(?:au marché|couleur préférée|a (?:deux|trois|quatre|cinq))\b",
           "Spanish": r"\b(?:al mercado|color favorito|tiene)\b", "German": r"\b(?:Markt|Lieblingsfarbe|hat)\b",
           "Italian": r"\b(?:al mercato|colore preferito|ha)\b", "Portuguese": r"\b(?:ao mercado|cor favorita|tem)\b"}


def _cases(name: str) -> list[int]:
    return list(range(FAMILIES[name].templates))


def _user_text(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)  # type: ignore[union-attr]


def _contains(text: str, ref: str) -> bool:
    """``ref`` occurs in ``text`` as a whole token (not inside a longer word or number)."""
    return re.search(rf"(?<![\w.]){re.escape(ref)}(?![\w]|\.\d)", text) is not None


def _check_reference(name: str, draft: object, prompt: str) -> None:
    best, misses, ref = draft.responses[0], draft.responses[1:], draft.reference  # type: ignore[attr-defined]
    if name == "compute_arith":
        a, op, b = re.search(r"(\d+) ?(?:([+\-x])|(plus|minus|times)) ?(\d+)", prompt).group(1, 2, 4)
        op = op or {"plus": "+", "minus": "-", "times": "x"}[re.search(r"plus|minus|times", prompt).group(0)]
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
        assert re.findall(r"\d+", best)[-1] == str(value)
        assert all(re.findall(r"\d+", m)[-1] != str(value) for m in misses)
        return
    if name == "ref_code_output":
        code = re.sub(r"```\w*", "", prompt.split("\n", 1)[1]).replace("Reply with the output only.", "")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {})  # noqa: S102 (code written by the family itself)
        assert out.getvalue().strip() == ref
        assert ref in best
        return
    if name == "ref_list":
        items = ref.split(", ")

        def order(text: str) -> list[str]:
            text = re.sub(r"^\d+\. ", "", text, flags=re.M)
            return [t for t in re.findall(r"[A-Za-z]+|\d+", text) if t in items]

        assert order(best) == items
        assert all(order(m) != items for m in misses)
        return
    assert _contains(best, ref), (best, ref)
    assert not any(_contains(m, ref) for m in misses), (misses, ref)


def _words_of(text: str) -> int:
    return len(text.split())


def _check_constraint(name: str, template: int, draft: object, prompt: str) -> None:
    best, misses = draft.responses[0], draft.responses[1:]  # type: ignore[attr-defined]
    if name == "word_count":
        n = int(re.search(r"(\d+) words", prompt).group(1)) if re.search(r"(\d+) words", prompt) else \
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"].index(
                re.search(r"exactly (\w+) words", prompt).group(1))
        exact = "at most" not in prompt and "or fewer" not in prompt and "no more than" not in prompt
        assert _words_of(best) == n if exact else _words_of(best) <= n
    elif name == "sentence_count":
        n = int(re.search(r"(\d) sentences", prompt).group(1)) if re.search(r"(\d) sentences", prompt) else \
            ["two", "three", "four"].index(re.search(r"Use (\w+) sentences", prompt).group(1)) + 2
        assert len(re.findall(r"[.!?](?:\s|$)", best)) == n
        assert all(len(re.findall(r"[.!?](?:\s|$)", m)) != n for m in misses[:2])
    elif name == "list_items":
        m = re.search(r"(\d) (?:facts|points|items|bullet)", prompt) or re.search(r"\((\d) items\)", prompt)
        n = int(m.group(1)) if m else ["three", "four", "five"].index(re.search(r"want (\w+)", prompt).group(1)) + 3
        assert len(re.findall(r"^(?:\d+[.)]|[-*•]) ", best, re.M)) == n
    elif name in ("keyword_include", "forbidden_word"):
        found = re.search(r"['\"]([a-z]+)['\"]", prompt) or re.search(r"(?:keyword|saying) ([a-z]+)", prompt)
        word = found.group(1)
        has = re.search(rf"\b{word}\b", best, re.I) is not None
        assert has == (name == "keyword_include"), (word, best)
        if name == "forbidden_word":
            assert all(re.search(rf"\b{word}\b", m, re.I) for m in misses[:2])
        else:
            assert not any(re.search(rf"\b{word}\b", m, re.I) for m in misses[:2])
    elif name == "letter_case":
        assert best == (best.lower() if template % 2 == 0 else best.upper())
        notes = draft.notes[1:]  # type: ignore[attr-defined]
        assert all(m != (m.lower() if template % 2 == 0 else m.upper())
                   for m, note in zip(misses, notes) if "but about" not in note)
    elif name == "punctuation":
        rule = template % 3
        assert ("," not in best) if rule == 0 else best.endswith("!" if rule == 1 else "?")
    elif name == "json_format":
        keys = re.findall(r"'(\w+)'", prompt) or re.search(r"keys: ([\w, ]+)\)", prompt).group(1).split(", ")
        assert sorted(json.loads(best)) == sorted(keys)
        for miss in misses:
            try:
                assert sorted(json.loads(miss)) != sorted(keys)
            except json.JSONDecodeError:
                pass
    elif name == "language":
        target = re.search(r"French|Spanish|German|Italian|Portuguese", prompt).group(0)
        assert re.search(MARKERS[target], best), (target, best)
        assert not any(re.search(MARKERS[target], m) for m in misses[:2] if target not in draft.notes[
            draft.responses.index(m)])  # type: ignore[attr-defined]
    elif name == "start_end_phrase":
        phrase = re.search(r"[\"']((?:[A-Z][^\"']*?[,:.!]))[\"']", prompt).group(1)
        assert best.startswith(phrase) if template % 2 == 0 else best.endswith(phrase)


@pytest.mark.parametrize("name", ALL)
def test_every_template_passes_check_and_independent_checker(name: str) -> None:
    fam = FAMILIES[name]
    assert fam.templates >= 6 and fam.group == ("reference" if name in REFERENCE else "constraint")
    for template in _cases(name):
        for i in range(DRAWS):
            draft = fam.make(random.Random(i), template)
            draft.check(f"{name}/{template}/{i}")
            prompt = _user_text(draft.prompt)
            if name in REFERENCE:
                if name != "compute_arith":
                    assert draft.reference
                _check_reference(name, draft, prompt)
            else:
                _check_constraint(name, template, draft, prompt)


@pytest.mark.parametrize("name", ALL)
def test_notes_never_name_positions(name: str) -> None:
    fam = FAMILIES[name]
    bad = re.compile(r"Response |\b[Ff]irst\b|\b[Ss]econd\b|\b[Oo]ther response")
    for i in range(400):
        draft = fam.make(random.Random(i), i % fam.templates)
        for note in draft.notes:
            assert not bad.search(note), note
            assert len(note.split()) <= 24, note


@pytest.mark.parametrize("name", ALL)
def test_families_are_varied_and_deterministic(name: str) -> None:
    fam = FAMILIES[name]
    prompts = {repr(fam.make(random.Random(i), i % fam.templates).prompt) for i in range(4000)}
    assert len(prompts) >= 2000, len(prompts)
    a, b = fam.make(random.Random(11), 0), fam.make(random.Random(11), 0)
    assert a == b
