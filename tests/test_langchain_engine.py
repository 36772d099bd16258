"""The langchain engine: GRMReward(chat_model=...) with LangChain's own fake chat models, and ChatOpenAI against the
simulated judge (an OpenAI-compatible HTTP server that stands in for a language model; it is not a model).

No mocks of grm_plugin: the fakes are langchain_core's (GenericFakeChatModel, FakeListChatModel, ParrotFakeChatModel),
one subclassed minimally to have an ``n`` field the way ChatOpenAI does; calls are counted with LangChain callbacks
or by the fake itself.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import subprocess
import sys
import warnings
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import AsyncCallbackHandler  # noqa: E402
from langchain_core.language_models.fake_chat_models import (  # noqa: E402
    FakeListChatModel,
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from pydantic import Field  # noqa: E402

from grm_plugin import GRMReward, ScoreRequest  # noqa: E402
from grm_plugin.backends import Backend, SamplingParams, ScoresConstraint  # noqa: E402
from grm_plugin.backends.langchain import LangChainBackend, is_retryable, to_langchain_messages  # noqa: E402
from grm_plugin.errors import BackendError, ConfigError  # noqa: E402
from grm_plugin.templates import render_judgement  # noqa: E402
from grm_plugin.testing.simulated_judge import with_quality  # noqa: E402

REQUEST = ScoreRequest(prompt="What is 17 * 24?", responses=["17 * 24 = 408.", "17 * 24 = 418."])


def judgement(scores: list[int], critique: str = "Response 1 is right; Response 2 is off by ten.") -> str:
    return render_judgement("Correctness (100%)", critique, scores)


class CallCounter(AsyncCallbackHandler):
    """Counts chat model calls through LangChain's own callback mechanism."""

    def __init__(self) -> None:
        self.starts = 0
        self.inputs: list[list[Any]] = []

    async def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
        self.starts += 1
        self.inputs.extend(messages)


class FakeChatWithN(GenericFakeChatModel):
    """GenericFakeChatModel with the sampling fields ChatOpenAI has: ``n`` generations per call (as ChatOpenAI does
    with ``n``), the request's usage in ``llm_output['token_usage']`` and on every message, finish reasons in the
    generation info. ``max_n`` caps what one call returns (an API that ignores n). ``requests`` records each call."""

    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_n: int | None = None
    report_llm_output: bool = True
    requests: list[dict[str, Any]] = Field(default_factory=list)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
        count = min(self.n or 1, self.max_n or 10**6)
        self.requests.append({"n": self.n, "temperature": self.temperature, "top_p": self.top_p,
                              "max_tokens": self.max_tokens, "messages": messages})
        usage = {"prompt_tokens": 50, "completion_tokens": 10 * count, "total_tokens": 50 + 10 * count}
        generations = []
        for _ in range(count):
            item = next(self.messages)
            text = item if isinstance(item, str) else item.content
            message = AIMessage(content=text, usage_metadata={"input_tokens": 50, "output_tokens": 10 * count,
                                                              "total_tokens": 50 + 10 * count})
            generations.append(ChatGeneration(message=message, generation_info={"finish_reason": "stop"}))
        return ChatResult(generations=generations,
                          llm_output={"token_usage": usage} if self.report_llm_output else None)

    def _combine_llm_outputs(self, llm_outputs):  # noqa: ANN001 - ChatOpenAI sums the token usage of its calls
        total: dict[str, int] = {}
        for output in llm_outputs:
            for key, value in ((output or {}).get("token_usage") or {}).items():
                total[key] = total.get(key, 0) + value
        return {"token_usage": total} if total else {}


class SlowFake(GenericFakeChatModel):
    """An async fake that sleeps a little per call and records how many calls were in flight at once."""

    delay: float = 0.05
    stats: dict[str, int] = Field(default_factory=lambda: {"inflight": 0, "max_inflight": 0, "calls": 0})

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
        self.stats["calls"] += 1
        self.stats["inflight"] += 1
        self.stats["max_inflight"] = max(self.stats["max_inflight"], self.stats["inflight"])
        try:
            await asyncio.sleep(self.delay)
            return self._generate(messages)
        finally:
            self.stats["inflight"] -= 1


class FailingMessages:
    """An iterator for GenericFakeChatModel that raises ``error()`` for the first ``failures`` calls, then yields."""

    def __init__(self, error, failures: int = 10**6, then: str = "") -> None:  # noqa: ANN001
        self.error = error
        self.failures = failures
        self.then = then
        self.calls = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return self.then


class RateLimitError(Exception):
    """Shaped like a provider SDK's rate-limit error (class name and HTTP status)."""

    status_code = 429


class BadRequestError(Exception):
    status_code = 400


# --- end to end -------------------------------------------------------------------------------------------------


def test_grm_reward_with_a_fake_chat_model_scores_requests_end_to_end():
    fake = FakeListChatModel(responses=[judgement([9, 2]), judgement([7, 3])])
    reward = GRMReward(chat_model=fake, k=4, shuffle=False, max_concurrency=1)  # one at a time: responses in turn

    [result] = reward.score([REQUEST])

    assert reward.config.engine == "langchain"
    assert result.samples == result.valid_samples == 4
    assert result.votes == [9 + 7 + 9 + 7, 2 + 3 + 2 + 3]
    assert result.rewards == [8.0, 2.5]
    assert result.best == 0
    assert all(j.principles == "Correctness (100%)" and "off by ten" in j.critique for j in result.judgements)


def test_shuffled_samples_are_unshuffled_before_voting():
    reward = GRMReward(chat_model=FakeListChatModel(responses=["unused"]), k=6, seed=3)
    plan = reward.plan(REQUEST)
    assert len(plan) == 2  # both orders drawn, so slots differ between prompts
    quality = {0: 9, 1: 2}  # what each original response deserves

    class ByOrderFake(GenericFakeChatModel):
        """Answers each judge prompt by reading which response it showed first."""

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
            prompt = messages[-1].content
            first = 0 if prompt.index("408.") < prompt.index("418.") else 1
            scores = [quality[first], quality[1 - first]]
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=judgement(scores)))])

    [result] = GRMReward(chat_model=ByOrderFake(messages=iter([])), k=6, seed=3).score([REQUEST])
    assert result.valid_samples == 6
    assert result.votes == [54, 12] and result.best == 0


async def test_async_scoring_with_a_fake_chat_model():
    reward = GRMReward(chat_model=GenericFakeChatModel(messages=itertools.repeat(judgement([6, 6]))), k=2)
    results = await reward.ascore([REQUEST, {"prompt": "2+2?", "responses": ["4", "5"]}])
    assert [r.votes for r in results] == [[12, 12], [12, 12]]
    await reward.aclose()


def test_grm_reward_chat_model_equals_an_explicit_langchain_backend():
    fake = GenericFakeChatModel(messages=itertools.repeat(judgement([8, 3])))
    direct = GRMReward(chat_model=fake, k=3, shuffle=False).score([REQUEST])[0]
    explicit = GRMReward(backend=LangChainBackend(fake), engine="langchain", k=3, shuffle=False).score([REQUEST])[0]
    assert direct.votes == explicit.votes == [24, 9]


def test_chat_model_wins_over_an_openai_endpoint_in_the_environment(monkeypatch):
    monkeypatch.setenv("GRM_BASE_URL", "http://127.0.0.1:9/v1")
    reward = GRMReward(chat_model=GenericFakeChatModel(messages=itertools.repeat(judgement([5, 4]))), shuffle=False)
    assert reward.config.engine == "langchain"
    assert reward.score([REQUEST])[0].votes == [5, 4]


def test_chat_model_and_backend_together_are_refused():
    fake = FakeListChatModel(responses=["x"])
    with pytest.raises(ConfigError, match="not both"):
        GRMReward(chat_model=fake, backend=LangChainBackend(fake))


def test_grm_config_settings_reach_the_backend():
    reward = GRMReward(chat_model=FakeListChatModel(responses=["x"]), max_concurrency=3, max_retries=1,
                       retry_backoff=0.25, timeout=12.0, use_n=False)
    backend = reward._backend_override
    assert isinstance(backend, LangChainBackend) and isinstance(backend, Backend)
    assert (backend.max_concurrency, backend.max_retries, backend.retry_backoff, backend.timeout, backend.use_n) == (
        3, 1, 0.25, 12.0, False)


def test_a_chain_or_binding_instead_of_a_chat_model_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match="BaseChatModel"):
        LangChainBackend(FakeListChatModel(responses=["x"]).bind(stop=["\n"]))
    with pytest.raises(TypeError, match="BaseChatModel"):
        GRMReward(chat_model="gpt-4o")


def test_the_backend_pickles_with_its_chat_model():
    backend = LangChainBackend(FakeListChatModel(responses=[judgement([7, 1])]), max_concurrency=5)
    clone = pickle.loads(pickle.dumps(backend))
    assert clone.max_concurrency == 5
    out = asyncio.run(clone.generate([[{"role": "user", "content": "judge"}]], 1, SamplingParams()))
    assert out[0][0].text == judgement([7, 1])


# --- n samples ----------------------------------------------------------------------------------------------------


def test_a_model_without_n_gets_one_call_per_sample_in_parallel():
    counter = CallCounter()
    fake = SlowFake(messages=itertools.repeat(judgement([8, 3])), callbacks=[counter])

    [result] = GRMReward(chat_model=fake, k=5, shuffle=False).score([REQUEST])

    assert counter.starts == fake.stats["calls"] == 5
    assert fake.stats["max_inflight"] == 5  # all samples of the prompt at once
    assert result.samples == 5 and result.votes == [40, 15]


def test_max_concurrency_bounds_the_calls_in_flight():
    fake = SlowFake(messages=itertools.repeat(judgement([8, 3])))
    [result] = GRMReward(chat_model=fake, k=8, shuffle=False, max_concurrency=2).score([REQUEST])
    assert fake.stats["calls"] == 8 and fake.stats["max_inflight"] == 2
    assert result.valid_samples == 8


def test_a_model_with_an_n_field_returns_n_generations_from_one_call():
    fake = FakeChatWithN(messages=itertools.cycle([judgement([9, 2]), judgement([7, 4])]))

    [result] = GRMReward(chat_model=fake, k=4, shuffle=False).score([REQUEST])

    assert [r["n"] for r in fake.requests] == [4]
    assert result.samples == result.valid_samples == 4
    assert result.votes == [32, 12]
    assert fake.n is None  # the caller's model is never changed; a configured copy is used
    # the request's usage is counted once, not once per generation
    assert (result.prompt_tokens, result.completion_tokens) == (50, 40)
    assert sum(j.completion_tokens for j in result.judgements) == 40
    assert [j.finish_reason for j in result.judgements] == ["stop"] * 4


def test_shuffled_samples_share_a_call_per_distinct_order():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([5, 5])))
    reward = GRMReward(chat_model=fake, k=8, seed=1)
    plan = reward.plan(REQUEST)

    [result] = reward.score([REQUEST])

    assert sorted(r["n"] or 1 for r in fake.requests) == sorted(p.n for p in plan)
    assert len(fake.requests) == len(plan) and result.samples == 8


def test_use_n_false_sends_one_call_per_sample_even_to_a_model_with_n():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([5, 5])))
    [result] = GRMReward(chat_model=fake, k=3, shuffle=False, use_n=False).score([REQUEST])
    assert [r["n"] for r in fake.requests] == [None, None, None]
    assert result.samples == 3


def test_a_model_returning_fewer_than_n_generations_is_topped_up_with_single_calls():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([6, 2])), max_n=2)
    [result] = GRMReward(chat_model=fake, k=4, shuffle=False).score([REQUEST])
    assert sorted((r["n"] or 1) for r in fake.requests) == [1, 1, 4]
    assert result.samples == result.valid_samples == 4


def test_per_message_request_usage_without_llm_output_is_counted_once():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([6, 2])), report_llm_output=False)
    [result] = GRMReward(chat_model=fake, k=3, shuffle=False).score([REQUEST])
    assert (result.prompt_tokens, result.completion_tokens) == (50, 30)


def test_parallel_samples_bypass_a_global_llm_cache():
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import get_llm_cache, set_llm_cache

    previous = get_llm_cache()
    set_llm_cache(InMemoryCache())
    try:
        counter = CallCounter()
        fake = GenericFakeChatModel(messages=itertools.cycle([judgement([9, 1]), judgement([5, 5])]),
                                    callbacks=[counter])
        [result] = GRMReward(chat_model=fake, k=4, shuffle=False, max_concurrency=1).score([REQUEST])
    finally:
        set_llm_cache(previous)
    assert result.votes == [28, 12]  # four real samples, not one cached answer repeated
    assert counter.starts == 4


# --- sampling settings and the scores constraint -----------------------------------------------------------------


def test_sampling_settings_are_set_on_the_fields_the_model_has():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([5, 5])))
    GRMReward(chat_model=fake, k=2, shuffle=False, temperature=0.7, top_p=0.9, max_tokens=321).score([REQUEST])
    [request] = fake.requests
    assert (request["n"], request["temperature"], request["top_p"], request["max_tokens"]) == (2, 0.7, 0.9, 321)
    assert (fake.temperature, fake.top_p, fake.max_tokens) == (None, None, None)


def test_greedy_default_for_k_1_and_paper_temperature_for_k_above_1():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([5, 5])))
    GRMReward(chat_model=fake, k=1).score([REQUEST])
    GRMReward(chat_model=fake, k=2, shuffle=False).score([REQUEST])
    assert [r["temperature"] for r in fake.requests] == [0.0, 0.5]
    assert [r["top_p"] for r in fake.requests] == [None, None]  # top_p 1.0 is not sent


def test_apply_sampling_false_keeps_the_models_own_settings():
    fake = FakeChatWithN(messages=itertools.repeat(judgement([5, 5])), temperature=1.0, max_tokens=77)
    backend = LangChainBackend(fake, apply_sampling=False)
    asyncio.run(backend.generate([[{"role": "user", "content": "judge"}]], 2, SamplingParams(temperature=0.1)))
    assert [(r["n"], r["temperature"], r["max_tokens"]) for r in fake.requests] == [(2, 1.0, 77)]


def test_models_without_sampling_fields_are_called_as_they_are():
    fake = FakeListChatModel(responses=[judgement([4, 4])])
    backend = LangChainBackend(fake)
    assert backend.configured_model(SamplingParams(temperature=0.3, top_p=0.5, max_tokens=9), 1) is fake
    assert not backend.supports_n


def test_scores_constraint_is_ignored_with_a_warning_once():
    reward = GRMReward(chat_model=GenericFakeChatModel(messages=itertools.repeat(judgement([7, 2]))),
                       structured_output="on", cache_size=0, shuffle=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = reward.score([REQUEST])[0]
        second = reward.score([{"prompt": "another", "responses": ["a", "b"]}])[0]
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "structured_output" in messages[0] and "GenericFakeChatModel" in messages[0]
    assert first.votes == second.votes == [7, 2]


async def test_backend_generate_warns_about_a_constraint_directly():
    backend = LangChainBackend(FakeListChatModel(responses=["Scores: \\boxed{3}"]))
    with pytest.warns(UserWarning, match="cannot be constrained"):
        await backend.generate([[{"role": "user", "content": "x"}]], 1,
                               SamplingParams(constraint=ScoresConstraint(1, 1, 10)))


# --- usage and finish reasons ------------------------------------------------------------------------------------


def test_usage_metadata_and_finish_reason_are_recorded_on_judgements():
    reply = AIMessage(content=judgement([8, 3]),
                      usage_metadata={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150},
                      response_metadata={"finish_reason": "length"})
    fake = GenericFakeChatModel(messages=itertools.repeat(reply))

    [result] = GRMReward(chat_model=fake, k=2, shuffle=False).score([REQUEST])

    assert (result.prompt_tokens, result.completion_tokens) == (240, 60)  # two calls
    assert [(j.prompt_tokens, j.completion_tokens, j.finish_reason) for j in result.judgements] == [
        (120, 30, "length"), (120, 30, "length")]


@pytest.mark.parametrize("metadata, expected", [
    ({"stop_reason": "end_turn"}, "stop"),           # Anthropic
    ({"stop_reason": "max_tokens"}, "length"),
    ({"done_reason": "stop"}, "stop"),               # Ollama
    ({"finish_reason": "STOP"}, "stop"),             # Google
    ({}, None),
])
async def test_finish_reasons_of_other_providers_are_read(metadata, expected):
    fake = GenericFakeChatModel(messages=iter([AIMessage(content="text", response_metadata=metadata)]))
    [[completion]] = await LangChainBackend(fake).generate([[{"role": "user", "content": "x"}]], 1, SamplingParams())
    assert completion.finish_reason == expected
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 0)  # none reported


async def test_list_content_keeps_text_blocks_and_drops_reasoning():
    reply = AIMessage(content=[{"type": "reasoning", "reasoning": "hmm"}, {"type": "text", "text": "Scores: "},
                               "\\boxed{4}"])
    fake = GenericFakeChatModel(messages=iter([reply]))
    [[completion]] = await LangChainBackend(fake).generate([[{"role": "user", "content": "x"}]], 1, SamplingParams())
    assert completion.text == "Scores: \\boxed{4}"


# --- failures -----------------------------------------------------------------------------------------------------


def test_persistent_connection_errors_raise_backend_error_after_the_retries():
    failing = FailingMessages(lambda: ConnectionError("connection refused"))
    reward = GRMReward(chat_model=GenericFakeChatModel(messages=failing), max_retries=2, retry_backoff=0)

    with pytest.raises(BackendError) as info:
        reward.score([REQUEST])

    err = info.value
    assert failing.calls == 3
    assert err.attempts == 3 and err.retryable is True
    assert "GenericFakeChatModel" in str(err) and "attempt 3" in str(err) and "gave up after 3 attempts" in str(err)
    assert "connection refused" in str(err) and err.endpoint == "langchain:GenericFakeChatModel"
    assert isinstance(err.__cause__, ConnectionError)


def test_a_transient_rate_limit_is_retried_and_scoring_succeeds():
    failing = FailingMessages(RateLimitError, failures=2, then=judgement([8, 3]))
    reward = GRMReward(chat_model=GenericFakeChatModel(messages=failing), retry_backoff=0, shuffle=False)
    [result] = reward.score([REQUEST])
    assert failing.calls == 3
    assert result.votes == [8, 3]


@pytest.mark.parametrize("error, status", [(lambda: ValueError("malformed reply"), None),
                                           (lambda: BadRequestError("model does not exist"), 400)],
                         ids=["value-error", "status-400"])
def test_a_non_retryable_error_fails_at_once(error, status):
    failing = FailingMessages(error)
    reward = GRMReward(chat_model=GenericFakeChatModel(messages=failing), max_retries=4, retry_backoff=0)
    with pytest.raises(BackendError) as info:
        reward.score([REQUEST])
    assert failing.calls == 1
    assert info.value.attempts == 1 and info.value.retryable is False and info.value.status == status
    assert "attempt 1" in str(info.value) and "gave up" not in str(info.value)


async def test_a_call_past_the_timeout_counts_as_a_retryable_failure():
    backend = LangChainBackend(FakeListChatModel(responses=["late"], sleep=0.5), timeout=0.05, max_retries=1,
                               retry_backoff=0)
    with pytest.raises(BackendError) as info:
        await backend.generate([[{"role": "user", "content": "x"}]], 1, SamplingParams())
    assert info.value.retryable and info.value.attempts == 2 and "TimeoutError" in str(info.value)


@pytest.mark.parametrize("exc, expected", [
    (ConnectionError(), True), (TimeoutError(), True), (RateLimitError(), True), (BadRequestError(), False),
    (ValueError(), False), (type("InternalServerError", (Exception,), {})(), True),
    (type("APIStatusError", (Exception,), {"status_code": 503})(), True),
    (type("APIStatusError", (Exception,), {"status_code": 404})(), False),
])
def test_retryable_errors_are_recognised_by_type_name_and_status(exc, expected):
    assert is_retryable(exc) is expected


# --- messages -----------------------------------------------------------------------------------------------------


def test_openai_style_messages_convert_to_langchain_messages():
    converted = to_langchain_messages([
        {"role": "system", "content": "You are a travel agent."},
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Find me a train to Paris tomorrow.", "name": "ana"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "search_trains", "arguments": "{\"to\": \"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "search_trains", "content": "08:10, 09:40"},
        {"role": "tool", "name": "clock", "content": "it is 07:00"},
        {"role": "function", "name": "legacy", "content": "ok"},
        {"role": "assistant", "content": [{"type": "text", "text": "Trains at 08:10 and 09:40."}]},
    ])
    system, developer, user, call, result, orphan, function, answer = converted
    assert isinstance(system, SystemMessage) and system.content == "You are a travel agent."
    assert isinstance(developer, SystemMessage) and developer.additional_kwargs["__openai_role__"] == "developer"
    assert isinstance(user, HumanMessage) and user.name == "ana"
    assert isinstance(call, AIMessage) and call.content == ""
    assert call.tool_calls == [{"name": "search_trains", "args": {"to": "Paris"}, "id": "call_1", "type": "tool_call"}]
    assert [c["name"] for c in call.invalid_tool_calls] == ["broken"]
    assert isinstance(result, ToolMessage) and result.tool_call_id == "call_1" and result.content == "08:10, 09:40"
    assert isinstance(orphan, ToolMessage) and orphan.tool_call_id == ""
    assert isinstance(function, FunctionMessage) and function.name == "legacy"
    assert isinstance(answer, AIMessage) and answer.content == [{"type": "text", "text": "Trains at 08:10 and 09:40."}]


def test_an_unknown_role_is_refused_naming_the_message():
    with pytest.raises(ValueError, match="message 1 has role 'narrator'"):
        to_langchain_messages([{"role": "user", "content": "hi"}, {"role": "narrator", "content": "..."}])


async def test_the_model_receives_the_converted_conversation():
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                          "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "tool says hi"}]
    [[completion]] = await LangChainBackend(ParrotFakeChatModel()).generate([conversation], 1, SamplingParams())
    assert completion.text == "tool says hi"  # the parrot repeats the last message it was given


def test_the_judge_prompt_reaches_the_model_as_system_and_user_messages():
    counter = CallCounter()
    fake = GenericFakeChatModel(messages=itertools.repeat(judgement([7, 2])), callbacks=[counter])
    reward = GRMReward(chat_model=fake)
    [expected] = reward.plan(REQUEST)
    reward.score([REQUEST])
    [received] = counter.inputs
    assert [type(m).__name__ for m in received] == [
        {"system": "SystemMessage", "user": "HumanMessage"}[m["role"]] for m in expected.messages]
    assert [m.content for m in received] == [m["content"] for m in expected.messages]


def test_missing_langchain_core_names_the_extra_to_install():
    code = ("import sys; sys.modules['langchain_core'] = None\n"
            "try:\n    import grm_plugin.backends.langchain\n"
            "except ImportError as exc:\n    print(exc)\nelse:\n    print('imported')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'grm-plugin[langchain]'" in out.stdout


# --- ChatOpenAI against the simulated judge ----------------------------------------------------------------------


@pytest.fixture
async def chat_openai(sim_judge):
    """ChatOpenAI pointed at the simulated judge, with its own HTTP client (closed after the test, in its loop)."""
    langchain_openai = pytest.importorskip("langchain_openai")
    import httpx

    client = httpx.AsyncClient()

    def make(**kwargs: Any):
        return langchain_openai.ChatOpenAI(base_url=sim_judge.base_url, api_key="EMPTY", model="simulated-judge",
                                           max_retries=0, http_async_client=client, **kwargs)

    yield make
    await client.aclose()


async def test_chat_openai_against_simulated_judge_scores_with_n_in_one_request(sim_judge, chat_openai):
    reward = GRMReward(chat_model=chat_openai(), k=4, shuffle=False)
    request = ScoreRequest(prompt="q", responses=[with_quality("a", 8), with_quality("b", 3)])

    [result] = await reward.ascore([request])

    stats = sim_judge.stats()
    assert stats["requests"] == 1 and stats["n_values"] == [4]
    assert result.samples == result.valid_samples == 4
    assert result.votes == [32, 12] and result.rewards == [8.0, 3.0] and result.best == 0
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert all(j.finish_reason == "stop" for j in result.judgements)
    body = sim_judge.state.bodies[0]
    assert body["temperature"] == 0.5 and body["max_completion_tokens"] == reward.config.max_tokens
    assert [m["role"] for m in body["messages"]] == [m["role"] for m in reward.plan(request)[0].messages]


async def test_chat_openai_against_simulated_judge_better_response_wins_with_shuffles(sim_judge, chat_openai):
    reward = GRMReward(chat_model=chat_openai(), k=6)
    requests = [ScoreRequest(prompt=f"q{i}", responses=[with_quality("a", q1), with_quality("b", q2)])
                for i, (q1, q2) in enumerate([(9, 2), (3, 7), (5, 6)])]

    results = await reward.ascore(requests)

    assert [r.best for r in results] == [0, 1, 1]
    assert [r.rewards for r in results] == [[9.0, 2.0], [3.0, 7.0], [5.0, 6.0]]
    assert sum(sim_judge.stats()["n_values"]) == 18
    assert sim_judge.stats()["requests"] == sum(len(reward.plan(r)) for r in requests)


async def test_chat_openai_use_n_false_sends_one_request_per_sample(sim_judge, chat_openai):
    reward = GRMReward(chat_model=chat_openai(), k=3, shuffle=False, use_n=False)
    [result] = await reward.ascore([ScoreRequest(prompt="q", responses=[with_quality("a", 4)])])
    assert sim_judge.stats()["n_values"] == [1, 1, 1] and result.votes == [12]


async def test_chat_openai_500_from_simulated_judge_is_retried(sim_judge, chat_openai):
    sim_judge.settings.fail_next = [500]
    reward = GRMReward(chat_model=chat_openai(), retry_backoff=0)
    [result] = await reward.ascore([ScoreRequest(prompt="q", responses=[with_quality("a", 8), with_quality("b", 3)])])
    assert sim_judge.stats()["requests"] == 2 and result.rewards == [8.0, 3.0]


async def test_chat_openai_400_from_simulated_judge_fails_at_once_naming_the_model(sim_judge, chat_openai):
    sim_judge.settings.fail_next = [400]
    reward = GRMReward(chat_model=chat_openai(), retry_backoff=0)
    with pytest.raises(BackendError) as info:
        await reward.ascore([REQUEST])
    assert sim_judge.stats()["requests"] == 1
    assert info.value.status == 400 and info.value.attempts == 1
    assert "ChatOpenAI(model='simulated-judge')" in str(info.value) and "simulated failure 400" in str(info.value)


def test_the_langchain_example_runs_against_the_simulated_judge():
    pytest.importorskip("langchain_openai")
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "langchain_judge.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "best 0" in out.stdout and "valid 8/8" in out.stdout
