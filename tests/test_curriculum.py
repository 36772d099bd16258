"""The synthetic curriculum kinds (rule or reference visible in the prompt), each checked by a verifier written here
from the prompt alone (counting words, characters and list lines, looking for a keyword, the reference, refusal
phrases or a language's stopwords), never from the generator's tables; and the original kinds' output for a seed,
pinned by fingerprints taken before the curriculum kinds were added."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from grm_plugin.preferences import (
    CURRICULUM_KINDS,
    DEFAULT_KINDS,
    SYNTHETIC_KINDS,
    load_preferences,
    synthetic_preferences,
)

# --- independent verifiers: (prompt, response) -> does the response follow the prompt's rule ------------------------


def words_ok(prompt: str, response: str) -> bool:
    wanted = int(re.search(r"exactly (\d+) words", prompt).group(1))
    return len(response.split()) == wanted


def characters_ok(prompt: str, response: str) -> bool:
    limit = int(re.search(r"(?:at most|no more than) (\d+) characters", prompt).group(1))
    return len(response) <= limit


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE) is not None


def reference_ok(prompt: str, response: str) -> bool:
    reference = re.search(r"^Reference answer: (.+)$", prompt, re.MULTILINE).group(1).strip()
    return _has_phrase(response, reference)


REFUSAL_MARKERS = ("i can't", "i can’t", "i cannot", "i won't", "i will not", "i'm sorry", "i am sorry",
                   "i'm not able", "i am not able", "i'm unable", "i am unable")
HARM_MARKERS = ("without", "fake", "made-up", "threaten", "steal", "cheat", "secretly", "pretending", "door lock")


def is_refusal(response: str) -> bool:
    return any(marker in response.lower() for marker in REFUSAL_MARKERS)


def is_harmful(prompt: str) -> bool:
    return any(marker in prompt.lower() for marker in HARM_MARKERS)


def refusal_ok(prompt: str, response: str) -> bool:
    """Refuse exactly the harmful requests (a refusal of a benign one is over-refusal)."""
    return is_refusal(response) == is_harmful(prompt)


def keyword_ok(prompt: str, response: str) -> bool:
    word = re.search(r"the word '([\w-]+)'", prompt).group(1)
    return _has_phrase(response, word)


STOPWORDS = {
    "English": {"the", "is", "are", "of", "and", "a", "an", "to", "there", "you", "it", "from", "when", "in", "on",
                "for", "use", "with"},
    "French": {"le", "la", "les", "est", "et", "de", "des", "du", "un", "une", "dans", "il", "y", "pour", "on",
               "quand", "au", "se", "avec", "à", "l", "d", "par", "ont", "plus"},
    "Spanish": {"el", "la", "los", "las", "es", "y", "de", "en", "un", "una", "del", "por", "para", "hay", "con",
                "se", "está", "más", "al", "no"},
    "German": {"der", "die", "das", "ist", "und", "im", "ein", "eine", "einem", "einen", "hat", "aus", "um", "zu",
               "man", "am", "bei", "den", "dem", "des", "auf", "steht", "von", "in"},
}


def language_of(text: str) -> str | None:
    """The language with the most stopwords in ``text``; None on a tie."""
    tokens = re.findall(r"\w+", text.lower())
    scores = {language: sum(token in words for token in tokens) for language, words in STOPWORDS.items()}
    top = max(scores.values())
    leaders = [language for language, score in scores.items() if score == top]
    return leaders[0] if len(leaders) == 1 and top > 0 else None


def language_ok(prompt: str, response: str) -> bool:
    wanted = re.search(r"in (French|Spanish|German)\b", prompt).group(1)
    return language_of(response) == wanted


def list_ok(prompt: str, response: str) -> bool:
    wanted = int(re.search(r"exactly (\d+) ", prompt).group(1))
    return len(re.findall(r"^\s*(?:[-*•]|\d+[.)])\s+\S", response, re.MULTILINE)) == wanted


VERIFIERS = {
    "format_words": words_ok,
    "length_limit": characters_ok,
    "matches_reference": reference_ok,
    "refusal": refusal_ok,
    "keyword": keyword_ok,
    "language": language_ok,
    "list_count": list_ok,
}


def test_every_curriculum_kind_has_a_verifier_and_is_registered_after_the_original_kinds():
    assert set(VERIFIERS) == set(CURRICULUM_KINDS)
    assert list(SYNTHETIC_KINDS) == list(DEFAULT_KINDS) + list(CURRICULUM_KINDS)


@pytest.mark.parametrize("kind", CURRICULUM_KINDS)
@pytest.mark.parametrize("seed", [0, 7])
def test_curriculum_items_pass_their_verifier_only_with_the_best_response(kind, seed):
    items = synthetic_preferences(200, seed=seed, kinds=[kind])
    assert items == synthetic_preferences(200, seed=seed, kinds=[kind])
    check = VERIFIERS[kind]
    for item in items:
        assert item.subset == kind and len(item.responses) == 2, item
        right, wrong = item.responses[item.best], item.responses[1 - item.best]
        assert right != wrong
        assert check(item.prompt, right), (item.prompt, right)
        assert not check(item.prompt, wrong), (item.prompt, wrong)
        assert 0.5 <= len(wrong) / len(right) <= 2, (item.prompt, right, wrong)  # length is no cue
    assert min([item.best for item in items].count(slot) for slot in (0, 1)) > 60  # shuffled
    assert len({(item.prompt, item.responses[item.best]) for item in items}) > 15  # varied


def test_refusal_items_mirror_harmful_and_benign_requests_and_never_comply_for_real():
    items = synthetic_preferences(200, seed=3, kinds="refusal")
    harmful = [item for item in items if is_harmful(item.prompt)]
    benign = [item for item in items if not is_harmful(item.prompt)]
    assert len(harmful) > 60 and len(benign) > 60
    for item in harmful:
        right, wrong = item.responses[item.best], item.responses[1 - item.best]
        assert is_refusal(right) and len(right) < 200  # a brief refusal
        assert not is_refusal(wrong) and "[" in wrong  # compliance with placeholders only, no instructions
    for item in benign:
        right, wrong = item.responses[item.best], item.responses[1 - item.best]
        assert not is_refusal(right) and is_refusal(wrong)  # the wrong one over-refuses


def test_language_items_contrast_the_asked_language_with_english():
    items = synthetic_preferences(120, seed=2, kinds="language")
    assert {re.search(r"in (French|Spanish|German)\b", i.prompt).group(1) for i in items} == {"French", "Spanish",
                                                                                              "German"}
    assert all(language_of(item.responses[1 - item.best]) == "English" for item in items)


def test_kinds_select_groups_single_names_and_mixes():
    assert {i.subset for i in synthetic_preferences(70, kinds="curriculum")} == set(CURRICULUM_KINDS)
    assert {i.subset for i in synthetic_preferences(110, kinds="all")} == set(SYNTHETIC_KINDS)
    assert synthetic_preferences(20, seed=4, kinds="default") == synthetic_preferences(20, seed=4)
    assert synthetic_preferences(20, seed=4, kinds=[]) == synthetic_preferences(20, seed=4)
    assert {i.subset for i in synthetic_preferences(12, kinds="keyword")} == {"keyword"}
    mixed = synthetic_preferences(16, kinds=["arithmetic", "curriculum"])
    assert [i.subset for i in mixed[:8]] == ["arithmetic", *CURRICULUM_KINDS]
    assert {i.subset for i in synthetic_preferences(200, seed=5)} == set(DEFAULT_KINDS)  # the default is unchanged
    with pytest.raises(ValueError, match=r"kinds: unknown \['poetry'\].*curriculum"):
        synthetic_preferences(1, kinds="poetry")


def test_cli_synth_writes_curriculum_items(tmp_path):
    out = tmp_path / "curriculum.jsonl"
    made = subprocess.run([sys.executable, "-m", "grm_plugin.cli", "spct", "synth", "--out", str(out), "--n", "14",
                           "--kinds", "curriculum"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    items = load_preferences(str(out))
    assert [i.subset for i in items] == list(CURRICULUM_KINDS) * 2
    assert all(VERIFIERS[i.subset](i.prompt, i.responses[i.best]) for i in items)


# --- the original kinds: same seed, same items as before the curriculum kinds were added ----------------------------


def _fingerprint(items) -> str:
    rows = [item.to_row() for item in items]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


# sha256 of the rows of synthetic_preferences(...) computed with the module as it was before the curriculum kinds
BEFORE = {
    "default": "5a5dd81f5e5f94ee83331b23428f1bfb71d4fd1915aadeebf9d62c41036e663e",
    "arithmetic": "a3480b128d1b0086d29486bd6533a39e65b45a64dcfcea81e6de5b84e86f0932",
    "unit_conversion": "989f06e437548fd4466fd76d1330fe12afa20c5371ebf6e137fb4994991e644d",
    "string_manipulation": "2eb5be224c764a49349019dab10ecae7342365328dea622625d1da2edaf8e918",
    "instruction_format": "5e713b243ce6183a35374d6a17aa4706289bea8100f8a889ec90761062112516",
}


def test_original_kinds_give_the_same_items_for_a_seed_as_before():
    assert _fingerprint(synthetic_preferences(20, seed=0)) == BEFORE["default"]
    for kind in DEFAULT_KINDS:
        assert _fingerprint(synthetic_preferences(20, seed=0, kinds=[kind])) == BEFORE[kind], kind
    # the demo's held-out set (examples/spct/README.md's figures) and a mix with other settings
    assert _fingerprint(synthetic_preferences(200, seed=1, prefix="heldout")) == (
        "77f60d08d33932a0ba358f7bcfb1104bcb3337ece05d79fd27663f4d3ecba537")
    assert _fingerprint(synthetic_preferences(20, seed=2, n_responses=(2, 2), prefix="meta",
                                              kinds=["instruction_format", "arithmetic"])) == (
        "3704a8c6c642d67113db322f340afcbb11d4d69eaf2628532f36d4fac78f0e69")
