"""The transformers engine on a real (tiny, randomly initialised) Llama model with SmolLM2's real tokenizer: left-padded
batching, n samples from one prefill, batch bounds, token counts and finish reasons, dynamic batching of concurrent
calls, a responsive event loop, and errors that reach every waiter. Nothing of ours is mocked; the model is observed
through forward hooks."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grm_plugin import GRMConfig  # noqa: E402
from grm_plugin.backends import Completion, SamplingParams, ScoresConstraint  # noqa: E402
from grm_plugin.backends.transformers import TransformersBackend, clear_model_cache  # noqa: E402
from grm_plugin.config import make_backend  # noqa: E402
from grm_plugin.errors import BackendError, ConfigError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
SHORT = [{"role": "user", "content": "Hi"}]
LONG = [{"role": "system", "content": "You are a careful judge."},
        {"role": "user", "content": "Compare these two answers about the boiling point of water at sea level, "
                                    "explain which one is right and why, and give both a score."}]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    """A 2-layer, 64-wide Llama with random weights (spread wide enough that greedy outputs vary), saved to disk."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        tie_word_embeddings=True, initializer_range=0.5)
    model = transformers.LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), device="cpu")


class ForwardLog:
    """Records the (batch, width) of every forward pass of the model's decoder."""

    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, int]] = []
        self._handle = model.model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.shapes.append(tuple(ids.shape))

    def close(self) -> None:
        self._handle.remove()

    @property
    def prefills(self) -> int:
        return sum(1 for _, width in self.shapes if width > 1)


@pytest.fixture
def forward_log(backend):
    log = ForwardLog(backend.load().model)
    yield log
    log.close()


def reference_greedy(model_dir: Path, messages, max_new_tokens: int) -> list[int]:
    """What plain transformers generates for one unpadded prompt, greedily."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=2)
    return out[0, ids["input_ids"].shape[1]:].tolist()


# --- batching and padding ---------------------------------------------------------------------------------------


async def test_a_prompt_gives_the_same_greedy_output_alone_and_left_padded_beside_a_longer_one(backend, forward_log):
    [[alone]] = await backend.generate([SHORT], 1, GREEDY)
    [[padded], [long_one]] = await backend.generate([SHORT, LONG], 1, GREEDY)
    assert padded.text == alone.text and alone.text
    assert long_one.text != alone.text
    assert forward_log.prefills == 2  # one generate call for the pair


async def test_the_engine_generates_what_plain_transformers_generates(backend, tiny_model_dir):
    expected = reference_greedy(tiny_model_dir, LONG, 10)
    [[completion]] = await backend.generate([LONG], 1, SamplingParams(temperature=0.0, max_tokens=10))
    tokenizer = backend.load().tokenizer
    assert completion.text == tokenizer.decode(expected, skip_special_tokens=True)


# --- n samples from one prefill ---------------------------------------------------------------------------------


async def test_n_samples_prefill_the_prompt_once_and_sample_n_rows(backend, forward_log):
    prompt_length = len(backend.load().encode(LONG))
    [samples] = await backend.generate([LONG], 4, SamplingParams(temperature=1.0, max_tokens=6))
    assert len(samples) == 4
    first, *rest = forward_log.shapes
    assert first == (1, prompt_length - 1)  # the prompt (minus its last token) went through the model once
    assert rest and all(shape == (4, 1) for shape in rest)  # then only single tokens, one row per sample
    assert len({s.text for s in samples}) > 1


async def test_without_shared_prefill_every_sample_row_is_prefilled(tiny_model_dir):
    backend = TransformersBackend(str(tiny_model_dir), device="cpu")
    backend.prefill_once = False
    log = ForwardLog(backend.load().model)
    try:
        prompt_length = len(backend.load().encode(LONG))
        await backend.generate([LONG], 4, SamplingParams(temperature=1.0, max_tokens=4))
    finally:
        log.close()
    assert log.shapes[0] == (4, prompt_length)


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
async def test_shared_prefill_samples_equal_plain_greedy_decoding_at_near_zero_temperature(tiny_model_dir, kv_cache):
    backend = make_backend(GRMConfig(model=str(tiny_model_dir), device="cpu", kv_cache=kv_cache))
    assert backend.cache_implementation == (None if kv_cache == "dynamic" else "static")
    [[greedy], [greedy_long]] = await backend.generate([SHORT, LONG], 1, GREEDY)
    cold = SamplingParams(temperature=1e-4, max_tokens=GREEDY.max_tokens)  # sampling, but always the argmax
    for _ in range(2):  # the second call reuses the first one's (static) cache buffers
        [short_samples, long_samples] = await backend.generate([SHORT, LONG], 3, cold)
        assert [s.text for s in short_samples] == [greedy.text] * 3
        assert [s.text for s in long_samples] == [greedy_long.text] * 3


async def test_greedy_samples_are_generated_once_and_copied(backend, forward_log):
    [samples] = await backend.generate([SHORT], 5, GREEDY)
    assert len(samples) == 5 and len({s.text for s in samples}) == 1
    assert {shape[0] for shape in forward_log.shapes} == {1}


# --- bounds on a batch ------------------------------------------------------------------------------------------


async def test_a_small_token_bound_splits_batches_and_answers_every_request_in_order(tiny_model_dir):
    prompts = [user(f"question number {i} " + "word " * (i * 3)) for i in range(6)]
    roomy = TransformersBackend(str(tiny_model_dir), device="cpu")
    expected = [(await roomy.generate([p], 1, GREEDY))[0][0].text for p in prompts]

    longest = max(len(roomy.load().encode(p)) for p in prompts)
    tight = TransformersBackend(str(tiny_model_dir), device="cpu",
                                max_batch_tokens=2 * (longest + GREEDY.max_tokens))
    results = await asyncio.gather(*(tight.generate([p], 1, GREEDY) for p in prompts))
    assert [r[0][0].text for r in results] == expected
    assert tight.generate_calls >= 3

    # one request bigger than the bound still runs, its samples split over several generate calls
    calls = tight.generate_calls
    [samples] = await tight.generate([prompts[-1]], 5, SamplingParams(temperature=1.0, max_tokens=GREEDY.max_tokens))
    assert len(samples) == 5 and all(s.completion_tokens > 0 for s in samples)
    assert tight.generate_calls - calls == 3  # 2 + 2 + 1 rows


async def test_max_batch_size_bounds_the_rows_of_one_generate_call(tiny_model_dir):
    backend = TransformersBackend(str(tiny_model_dir), device="cpu", max_batch_size=4)
    log = ForwardLog(backend.load().model)
    try:
        results = await asyncio.gather(*(backend.generate([user(f"q{i}")], 3, SamplingParams(temperature=1.0,
                                                                                           max_tokens=3))
                                         for i in range(4)))
    finally:
        log.close()
    assert [len(r[0]) for r in results] == [3, 3, 3, 3]
    assert max(batch for batch, _ in log.shapes) <= 4


# --- token counts and finish reasons ----------------------------------------------------------------------------


async def test_token_counts_and_finish_reasons(tiny_model_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens = reference_greedy(tiny_model_dir, LONG, 8)
    stop_at = max(j for j in range(1, len(tokens)) if tokens[j] not in tokens[:j])

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = TransformersBackend(model, tokenizer=tokenizer)
    [samples] = await plain.generate([LONG], 3, SamplingParams(temperature=0.0, max_tokens=8))
    prompt_length = len(plain.load().encode(LONG))
    assert [(s.finish_reason, s.completion_tokens) for s in samples] == [("length", 8)] * 3
    assert [s.prompt_tokens for s in samples] == [prompt_length, 0, 0]  # the prompt is counted once

    model.generation_config.eos_token_id = [2, tokens[stop_at]]  # the model now ends where it wrote that token
    stopping = TransformersBackend(model, tokenizer=tokenizer)
    [[done]] = await stopping.generate([LONG], 1, SamplingParams(temperature=0.0, max_tokens=8))
    assert done.finish_reason == "stop"
    assert done.completion_tokens == stop_at  # the end-of-sequence token is not counted
    assert done.text == tokenizer.decode(tokens[:stop_at], skip_special_tokens=True)


# --- dynamic batching -------------------------------------------------------------------------------------------


async def test_64_concurrent_calls_share_a_few_generate_calls(backend, forward_log):
    prompts = [user(f"request {i}: " + "more " * (i % 7)) for i in range(64)]
    results = await asyncio.gather(*(backend.generate([p], 1, GREEDY) for p in prompts))
    assert all(len(r) == 1 and len(r[0]) == 1 and isinstance(r[0][0], Completion) for r in results)
    assert backend.generate_calls <= 4 and forward_log.prefills == backend.generate_calls
    for i in (0, 13, 63):  # each caller got its own prompt's answer
        [[alone]] = await backend.generate([prompts[i]], 1, GREEDY)
        assert results[i][0][0].text == alone.text


async def test_the_event_loop_keeps_running_while_the_model_generates(tiny_model_dir):
    backend = TransformersBackend(str(tiny_model_dir), device="cpu", generate_kwargs={"min_new_tokens": 150})
    backend.load()
    ticks = 0
    running = True

    async def ticker():
        nonlocal ticks
        while running:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    [samples] = await backend.generate([LONG], 4, SamplingParams(temperature=1.0, max_tokens=150))
    running = False
    await task
    assert all(s.completion_tokens == 150 for s in samples)
    assert ticks >= 5  # a blocked loop would have ticked at most once


async def test_a_failed_batch_reaches_every_waiter_in_it_and_no_other(backend):
    bad = SamplingParams(temperature=1.0, max_tokens=4, extra_body={"repetition_penalty": -1.0})
    good = SamplingParams(temperature=1.0, max_tokens=4)
    outcomes = await asyncio.gather(*(backend.generate([user(f"q{i}")], 2, bad if i % 2 else good)
                                      for i in range(8)), return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert isinstance(outcome, BackendError) and "penalty" in str(outcome) and "-1.0" in str(outcome)
            assert outcome.endpoint.startswith("transformers:")
        else:
            assert isinstance(outcome, list) and len(outcome[0]) == 2
    [[after]] = await backend.generate([SHORT], 1, GREEDY)  # the worker survived
    assert after.text


async def test_a_cancelled_caller_does_not_break_the_others(backend):
    sampling = SamplingParams(temperature=1.0, max_tokens=5)
    tasks = [asyncio.ensure_future(backend.generate([user(f"q{i}")], 2, sampling)) for i in range(6)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert all(len(o[0]) == 2 for i, o in enumerate(outcomes) if i != 2)
    [[after]] = await backend.generate([SHORT], 1, GREEDY)
    assert after.text


def test_one_model_is_shared_by_backends_of_different_event_loops(tiny_model_dir):
    clear_model_cache()
    first, second = (TransformersBackend(str(tiny_model_dir), device="cpu") for _ in range(2))
    outputs = [asyncio.run(b.generate([SHORT], 1, GREEDY)) for b in (first, second)]
    assert first.load() is second.load()
    assert outputs[0][0][0].text == outputs[1][0][0].text


def test_every_generate_of_a_device_runs_on_one_engine_thread(tiny_model_dir):
    """Compiled static-cache decoding records CUDA graphs per thread: all generate calls of a device, from any
    backend and any event loop, must run on the same thread."""
    clear_model_cache()
    first = TransformersBackend(str(tiny_model_dir), device="cpu")
    second = TransformersBackend(str(tiny_model_dir), device="cpu", cache_implementation="static")
    threads: list[str] = []
    hook = first.load().model.register_forward_pre_hook(lambda *_: threads.append(threading.current_thread().name))
    try:
        for backend in (first, second, first):
            asyncio.run(backend.generate([SHORT, LONG], 2, SamplingParams(temperature=0.7, max_tokens=4)))
    finally:
        hook.remove()
    assert len(threads) >= 6 and len(set(threads)) == 1, threads
    assert threads[0].startswith("grm-generate-cpu") and threads[0] != threading.current_thread().name


# --- structured output and errors -------------------------------------------------------------------------------


async def test_a_scores_constraint_makes_every_completion_end_with_a_scores_line(backend):
    constraint = ScoresConstraint(2, 1, 10)
    sampling = SamplingParams(temperature=1.0, max_tokens=40, constraint=constraint)
    [samples] = await backend.generate([LONG], 3, sampling)
    for sample in samples:
        assert re.fullmatch(constraint.regex(), sample.text), sample.text


async def test_logprobs_are_the_models_own_token_probabilities(backend):
    sampling = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5)
    [[completion]] = await backend.generate([LONG], 1, sampling)
    assert completion.logprobs is not None and len(completion.logprobs) == completion.completion_tokens
    for entry in completion.logprobs:  # greedy: every token is the most likely one of its top 5
        assert 1 <= len(entry.top) <= 5 and entry.logprob == pytest.approx(max(entry.top.values()))
    loaded = backend.load()
    with torch.no_grad():
        logits = loaded.model(torch.tensor([loaded.encode(LONG)])).logits[0, -1]
    first = torch.log_softmax(logits.float(), dim=-1).max().item()
    assert completion.logprobs[0].logprob == pytest.approx(first, abs=1e-4)  # what a plain forward pass gives
    [[plain]] = await backend.generate([LONG], 1, SamplingParams(temperature=0.0, max_tokens=8))
    assert plain.logprobs is None and plain.text == completion.text


async def test_a_model_that_is_not_on_disk_is_a_clear_error_and_never_downloaded():
    backend = TransformersBackend("no-such-org/no-such-judge", device="cpu")
    with pytest.raises(ConfigError, match="never downloads.*no-such-org/no-such-judge|no-such-org/no-such-judge.*"
                                          "never downloads"):
        await backend.generate([SHORT], 1, GREEDY)


def test_configuration_errors_name_the_field():
    with pytest.raises(ConfigError, match="device"):
        TransformersBackend("x", device="not-a-device")
    with pytest.raises(ConfigError, match="gguf_file"):
        TransformersBackend(None, gguf_file="/no/such/file.gguf")
