"""Guaranteed-format decoding (ScoresLogitsProcessor): every completion of a real (randomly initialised) model ends
with a parseable scores line, whatever the format, count, range, budget, decoding mode or tokenizer."""

from __future__ import annotations

import re
import string
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
regex = pytest.importorskip("regex")

from transformers import (  # noqa: E402
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
)

from grm_plugin import ParseError, parse_judgement  # noqa: E402
from grm_plugin.backends import ScoresConstraint  # noqa: E402
from grm_plugin.backends.scores_processor import (  # noqa: E402
    ScoresLogitsProcessor,
    TailGrammar,
    number_complete,
    number_prefix_ok,
)
from grm_plugin.templates import SCORE_LINES  # noqa: E402

RANGES = [(1, 10), (0, 1)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def constraint(count: int, score_range: tuple[int, int], fmt: str) -> ScoresConstraint:
    prefix, separator, suffix = SCORE_LINES[fmt]
    return ScoresConstraint(count, score_range[0], score_range[1], prefix, separator, suffix)


ALL_CONSTRAINTS = [constraint(c, r, f) for f in SCORE_LINES for c in (1, 2, 3, 4) for r in RANGES]

# ---------------------------------------------------------------------------------------------------------------
# Character level


@pytest.mark.parametrize(
    ("digits", "low", "high", "prefix_ok", "complete"),
    [
        ("1", 1, 10, True, True),
        ("10", 1, 10, True, True),
        ("11", 1, 10, False, False),
        ("0", 1, 10, False, False),
        ("0", 0, 1, True, True),
        ("1", 0, 1, True, True),
        ("10", 0, 1, False, False),
        ("01", 0, 10, False, False),
        ("2", 10, 30, True, False),
        ("4", 10, 30, False, False),
        ("1", 5, 100, True, False),
        ("100", 5, 100, True, True),
        ("-", -5, 5, True, False),
        ("-5", -5, 5, True, True),
        ("-0", -5, 5, False, False),
        ("-", 0, 5, False, False),
        ("+1", 0, 5, False, False),
        ("x", 1, 10, False, False),
    ],
)
def test_number_prefix_validity(digits, low, high, prefix_ok, complete):
    assert number_prefix_ok(digits, low, high) is prefix_ok
    assert number_complete(digits, low, high) is complete


@pytest.mark.parametrize("fmt", list(SCORE_LINES))
def test_tail_grammar_accepts_exactly_the_rendered_scores(fmt):
    _, sep, suffix = SCORE_LINES[fmt]
    g = TailGrammar(constraint(2, (1, 10), fmt))
    full = f"10{sep}7{suffix}"
    assert g.is_complete(full)
    assert all(g.is_prefix(full[:i]) for i in range(len(full) + 1))
    assert not g.is_prefix(full + "0")
    for bad in (f"11{sep}", f"0{sep}", f"7{sep}7{sep}", f"7{suffix}", f"7{sep}10{suffix}x", f"07{sep}"):
        assert not g.is_prefix(bad), bad
    assert not g.is_complete(f"10{sep}7")


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 3), low=st.integers(0, 12), width=st.integers(0, 12),
       fmt=st.sampled_from(list(SCORE_LINES)), data=st.data())
def test_tail_grammar_agrees_with_the_constraints_regex(count, low, width, fmt, data):
    """Oracle: the engines' own regex (``ScoresConstraint.tail_regex``), matched partially by ``regex``."""
    c = constraint(count, (low, low + width), fmt)
    g = TailGrammar(c)
    alphabet = sorted(g.charset | {"x"})
    text = data.draw(st.text(alphabet=alphabet, max_size=14))
    oracle = regex.compile(c.tail_regex())
    assert g.is_prefix(text) == bool(oracle.fullmatch(c.prefix + text, partial=True)), text
    assert g.is_complete(text) == bool(oracle.fullmatch(c.prefix + text)), text


# ---------------------------------------------------------------------------------------------------------------
# Real tokenizers and a tiny random model


def _sentencepiece_style_tokenizer():
    """A small BPE over Metaspace pieces ("▁word", like Llama/Mistral): decoding drops a leading space and the
    vocabulary holds multi-digit and punctuation merges, unlike SmolLM2's byte-level BPE."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    corpus = []
    for _ in range(400):
        a, b = rng.randint(0, 10), rng.randint(0, 10)
        corpus += [f"Specific Criteria: accuracy\nAnalysis: response {a} is better than {b}.\n"
                   f"Scores: \\boxed{{{a}, {b}}}", f"Final Scores: [[{a}, {b}]]",
                   f"<scores>\\boxed{{{a}, {b}}}</scores>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    alphabet = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet,
                                                       special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def _random_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def smollm(smol_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    return tokenizer, _random_model(tokenizer)


@pytest.fixture(scope="module")
def sp_style():
    tokenizer = _sentencepiece_style_tokenizer()
    return tokenizer, _random_model(tokenizer, seed=1)


def _prompts(tokenizer, rows, seed=0):
    """Left-padded prompts of different lengths (ordinary text tokens)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [int(x) for x in torch.randint(3, 12, (rows,), generator=gen)]
    width = max(lengths)
    ids = torch.full((rows, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    special = set(tokenizer.all_special_ids)
    pool = torch.tensor([i for i in range(min(len(tokenizer), 2000)) if i not in special])
    for r, n in enumerate(lengths):
        ids[r, width - n:] = pool[torch.randint(len(pool), (n,), generator=gen)]
        mask[r, width - n:] = 1
    return ids, mask


def _generate(model, tokenizer, constraints, max_new_tokens, *, sample_seed=None, processors=(), use=True,
              num_return_sequences=1, prompt_rows=None, generate_kwargs=None, keep=None, **kwargs):
    rows = prompt_rows if prompt_rows is not None else len(constraints)
    ids, mask = _prompts(tokenizer, rows)
    extra = list(processors)
    if use:
        extra.append(ScoresLogitsProcessor(tokenizer, constraints, max_new_tokens, ids.shape[1], **kwargs))
        if keep is not None:
            keep.append(extra[-1])
    sampling = {"do_sample": False}
    if sample_seed is not None:
        torch.manual_seed(sample_seed)
        sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             logits_processor=LogitsProcessorList(extra), num_return_sequences=num_return_sequences,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling,
                             **(generate_kwargs or {}))
    return out[:, ids.shape[1]:]


def _text(tokenizer, row):
    return tokenizer.decode(row, skip_special_tokens=True)


def _check_row(tokenizer, row, c, max_new_tokens):
    """The completion parses; if the budget holds the worst-case tail it also ended with EOS, and after EOS only
    padding follows."""
    text = _text(tokenizer, row)
    assert re.fullmatch(c.regex(), text), text  # the exact tail the vLLM/SGLang engines' regex enforces
    parsed = parse_judgement(text, c.count, (c.low, c.high))
    assert all(c.low <= s <= c.high for s in parsed.scores)
    tokens = row.tolist()
    eos = tokenizer.eos_token_id
    if ScoresLogitsProcessor.tail_tokens(tokenizer, c)[1] <= max_new_tokens:
        assert eos in tokens, text
    if eos in tokens:
        assert set(tokens[tokens.index(eos) + 1:]) <= {eos, tokenizer.pad_token_id}
    return text


@pytest.mark.slow
@pytest.mark.parametrize(("max_new_tokens", "sample_seed"), [(12, None), (24, None), (64, None), (12, 0), (24, 1),
                                                             (40, 2)])
def test_every_completion_parses(smollm, max_new_tokens, sample_seed):
    tokenizer, model = smollm
    fits = [c for c in ALL_CONSTRAINTS if ScoresLogitsProcessor.tail_tokens(tokenizer, c)[0] <= max_new_tokens]
    assert fits, "the budget fits no constraint at all"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a feasible budget raises no warning
        out = _generate(model, tokenizer, fits, max_new_tokens, sample_seed=sample_seed)
    for row, c in zip(out, fits):
        _check_row(tokenizer, row, c, max_new_tokens)


@pytest.mark.slow
def test_without_the_processor_the_same_model_does_not_parse(smollm):
    tokenizer, model = smollm
    out = _generate(model, tokenizer, ALL_CONSTRAINTS, 48, use=False)
    failures = 0
    for row, c in zip(out, ALL_CONSTRAINTS):
        try:
            parse_judgement(_text(tokenizer, row), c.count, (c.low, c.high))
        except ParseError:
            failures += 1
    assert failures == len(ALL_CONSTRAINTS)


@pytest.mark.slow
def test_a_budget_too_small_for_the_scores_line_warns(smollm):
    tokenizer, _ = smollm
    big = constraint(4, (1, 10), "tagged")
    fewest, most = ScoresLogitsProcessor.tail_tokens(tokenizer, big)
    assert 12 < fewest <= most
    with pytest.warns(RuntimeWarning, match="cannot hold the scores line"):
        ScoresLogitsProcessor(tokenizer, [big], max_new_tokens=12, prompt_length=4)


@pytest.mark.slow
def test_mixed_batch_expanded_samples_and_an_unconstrained_row(smollm):
    tokenizer, model = smollm
    constraints = [constraint(2, (1, 10), "boxed"), None, constraint(4, (0, 1), "tagged"),
                   constraint(1, (1, 10), "brackets"), constraint(3, (1, 10), "tagged"), None]
    # Sampled, 2 prompts x 3 samples: rows are prompt 0's three samples, then prompt 1's.
    out = _generate(model, tokenizer, constraints, 40, sample_seed=3, num_return_sequences=3, prompt_rows=2)
    assert out.shape[0] == 6
    for row, c in zip(out, constraints):
        if c is not None:
            _check_row(tokenizer, row, c, 40)
    # Greedy, 6 prompts: the constrained rows parse, the unconstrained ones come out exactly as without the processor.
    with_processor = _generate(model, tokenizer, constraints, 40)
    without = _generate(model, tokenizer, constraints, 40, use=False)
    for r, c in enumerate(constraints):
        if c is None:
            assert with_processor[r].tolist() == without[r].tolist()
        else:
            _check_row(tokenizer, with_processor[r], c, 40)


@pytest.mark.slow
@pytest.mark.parametrize("max_new_tokens", [12, 40])
@pytest.mark.parametrize("sample_seed", [None, 0])
def test_a_sentencepiece_style_tokenizer_works_too(sp_style, max_new_tokens, sample_seed):
    tokenizer, model = sp_style
    fits = [c for c in ALL_CONSTRAINTS if ScoresLogitsProcessor.tail_tokens(tokenizer, c)[0] <= max_new_tokens]
    assert len(fits) >= 6
    out = _generate(model, tokenizer, fits, max_new_tokens, sample_seed=sample_seed)
    for row, c in zip(out, fits):
        text = _check_row(tokenizer, row, c, max_new_tokens)
        assert c.prefix in text  # written exactly, spaces included


class Script(LogitsProcessor):
    """Makes the model write ``text`` first (a stand-in for a judge that writes its own label), then lets go."""

    def __init__(self, tokenizer, text, prompt_length):
        self.ids = tokenizer.encode(text, add_special_tokens=False)
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        if step >= len(self.ids):
            return scores
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.ids[step]] = 0.0
        return forced


class PreferEos(LogitsProcessor):
    """Makes EOS the most likely token from ``after`` generated tokens on (a model that wants to stop)."""

    def __init__(self, eos, after, prompt_length):
        self.eos, self.after, self.prompt_length = eos, after, prompt_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length >= self.after:
            scores = scores.clone()
            scores[:, self.eos] = scores.max() + 100.0
        return scores


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "script", "forced"),
    [
        ("boxed", "Analysis: fine.\nScores:", " \\boxed{"),
        ("boxed", "Analysis: fine.\nScores", ": \\boxed{"),
        ("brackets", "Analysis: fine.\nFinal Scores: [[", ""),
        ("tagged", "<analysis>fine</analysis>\n<scores>", "\\boxed{"),
    ],
    ids=["label", "first-word-at-line-start", "whole-prefix", "tag"],
)
def test_a_label_the_model_starts_is_completed_and_the_completion_ends_early(smollm, fmt, script, forced):
    tokenizer, model = smollm
    c = constraint(2, (1, 10), fmt)
    width = _prompts(tokenizer, 1)[0].shape[1]
    keep = []
    out = _generate(model, tokenizer, [c], 200, processors=[Script(tokenizer, script, width)], keep=keep)
    assert keep[0].tail_reasons == ["label"]
    text = _check_row(tokenizer, out[0], c, 200)
    assert text.startswith(script + forced)
    assert text.endswith(c.suffix)
    assert out[0].tolist().index(tokenizer.eos_token_id) < 40  # stopped right after the scores, not at the budget


@pytest.mark.slow
def test_text_that_merely_mentions_scores_is_left_alone(smollm):
    tokenizer, model = smollm
    c = constraint(2, (1, 10), "boxed")
    script = "The final score: unclear.\n**Final score**: Scores matter"
    width = _prompts(tokenizer, 1)[0].shape[1]
    keep = []
    out = _generate(model, tokenizer, [c], 60, processors=[Script(tokenizer, script, width)], keep=keep)
    assert keep[0].tail_reasons == ["budget"]
    text = _check_row(tokenizer, out[0], c, 60)
    assert text.startswith(script)
    assert len(text) > len(script) + 20  # free text went on to the budget's end


@pytest.mark.slow
@pytest.mark.parametrize("tail_on_eos", [True, False])
def test_when_the_model_wants_to_stop_the_scores_line_comes_instead(smollm, tail_on_eos):
    tokenizer, model = smollm
    c = constraint(2, (1, 10), "boxed")
    width = _prompts(tokenizer, 1)[0].shape[1]
    keep = []
    out = _generate(model, tokenizer, [c], 80, processors=[PreferEos(tokenizer.eos_token_id, 5, width)],
                    tail_on_eos=tail_on_eos, keep=keep)
    assert keep[0].tail_reasons == ["eos" if tail_on_eos else "budget"]
    tokens = out[0].tolist()
    _check_row(tokenizer, out[0], c, 80)
    free = tokenizer.decode(tokens[:5])
    text = _text(tokenizer, out[0])
    if tail_on_eos:
        assert text.startswith(free + "\nScores: \\boxed{") or text.startswith(free + "Scores: \\boxed{")
        assert tokens.index(tokenizer.eos_token_id) < 25
    else:
        assert tokens.index(tokenizer.eos_token_id) > 60  # wrote on until the budget forced the tail


@pytest.mark.slow
def test_max_free_tokens_caps_the_free_text(smollm):
    tokenizer, model = smollm
    c = constraint(1, (1, 10), "boxed")
    keep = []
    out = _generate(model, tokenizer, [c], 100, max_free_tokens=7, keep=keep)
    assert keep[0].tail_reasons == ["max_free_tokens"]
    tokens = out[0].tolist()
    prefix_ids = tokenizer.encode("\n" + c.prefix, add_special_tokens=False)
    assert tokens[7:7 + len(prefix_ids)] == prefix_ids
    _check_row(tokenizer, out[0], c, 100)


@pytest.mark.slow
def test_the_format_wins_over_an_earlier_processor_that_bans_its_tokens(smollm):
    """no_repeat_ngram_size=2 bans the second "0," of "0, 0, 0" - the only way on; the format must still come out."""
    tokenizer, model = smollm
    cs = [constraint(4, (0, 1), fmt) for fmt in SCORE_LINES]
    out = _generate(model, tokenizer, cs, 40, generate_kwargs={"no_repeat_ngram_size": 2})
    for row, c in zip(out, cs):
        _check_row(tokenizer, row, c, 40)


@pytest.mark.slow
def test_the_batch_must_match_the_constraints(smollm):
    tokenizer, _ = smollm
    processor = ScoresLogitsProcessor(tokenizer, [constraint(1, (1, 10), "boxed")], 20, prompt_length=3)
    with pytest.raises(ValueError, match="batch of 2 rows but 1 constraints"):
        processor(torch.zeros((2, 3), dtype=torch.long), torch.zeros((2, len(tokenizer))))
