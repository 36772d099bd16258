"""GRMReward over real HTTP against the simulated judge (an OpenAI-compatible server standing in for a language
model: scores = hidden quality + noise). Covers n=k use, concurrency, retries, timeouts, fail-fast 4xx, caching,
invalid samples, batching of rows, sync use inside a running loop, pickling into a spawned process, and the
promise that voting over k samples beats one sample."""

from __future__ import annotations

import asyncio
import multiprocessing
import re

import pytest

from grm_plugin import BackendError, GRMReward, InvalidRequestError, NoValidJudgementError, ScoreRequest
from grm_plugin.testing.simulated_judge import SimulatedJudge, quality_pairs, with_quality


def pair(prompt="Which is better?", good=8, bad=3):
    return ScoreRequest(prompt=prompt, responses=[with_quality("answer A", good), with_quality("answer B", bad)])


def reward_for(judge, **overrides):
    overrides.setdefault("retry_backoff", 0.01)
    return GRMReward(base_url=judge.base_url, model="simulated-judge", **overrides)


def test_better_response_gets_higher_reward_from_simulated_judge(sim_judge):
    [result] = reward_for(sim_judge, k=4).score([pair(good=9, bad=2)])
    assert result.rewards == [9.0, 2.0] and result.votes == [36, 8] and result.best == 0
    assert result.samples == result.valid_samples == 4
    assert all(j.valid and j.principles and j.critique for j in result.judgements)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0


def test_shuffles_are_undone_so_scores_follow_the_callers_order(sim_judge):
    request = ScoreRequest(prompt="q", responses=[with_quality(f"r{i}", q) for i, q in enumerate([2, 9, 5, 7])])
    [result] = reward_for(sim_judge, k=6).score([request])
    assert len({tuple(j.order) for j in result.judgements}) > 1  # the samples really saw different orders
    assert all(j.scores == [2, 9, 5, 7] for j in result.judgements)


def test_k_samples_of_one_prompt_go_to_the_engine_as_one_request_with_n_equal_k(sim_judge):
    reward_for(sim_judge, k=8, shuffle=False).score([pair()])
    assert sim_judge.stats()["n_values"] == [8]
    sim_judge.reset()
    reward_for(sim_judge, k=8).score([ScoreRequest(prompt="q", responses=["only one"])])
    assert sim_judge.stats()["n_values"] == [8]


def test_shuffled_samples_share_one_request_per_distinct_order(sim_judge):
    [result] = reward_for(sim_judge, k=8).score([pair()])
    stats = sim_judge.stats()
    assert sum(stats["n_values"]) == 8 and stats["requests"] == len({tuple(j.order) for j in result.judgements})


def test_use_n_off_sends_one_request_per_sample(sim_judge):
    reward_for(sim_judge, k=5, shuffle=False, use_n=False).score([pair()])
    assert sim_judge.stats()["n_values"] == [1] * 5


def test_concurrency_is_bounded(sim_judge):
    sim_judge.settings.delay_s = 0.1
    requests = [pair(prompt=f"q{i}") for i in range(24)]
    reward_for(sim_judge, k=1, max_concurrency=4).score(requests)
    assert sim_judge.stats()["max_inflight"] == 4


def test_retries_on_429_and_500_then_succeeds(sim_judge):
    sim_judge.settings.fail_next = [429, 500, 502]
    [result] = reward_for(sim_judge, k=2, shuffle=False).score([pair()])
    assert result.valid_samples == 2 and sim_judge.stats()["requests"] == 4


def test_gives_up_after_max_retries_naming_endpoint_status_and_attempts(sim_judge):
    sim_judge.settings.fail_next = [503] * 10
    with pytest.raises(BackendError) as info:
        reward_for(sim_judge, k=1, max_retries=2).score([pair()])
    error = info.value
    assert (error.status, error.attempts, error.retryable) == (503, 3, True)
    assert error.endpoint == f"{sim_judge.base_url}/chat/completions"
    assert "503" in str(error) and "gave up after 3 attempts" in str(error) and "simulated failure" in str(error)


def test_other_4xx_fail_fast_with_the_servers_message(sim_judge):
    sim_judge.settings.fail_next = [400]
    with pytest.raises(BackendError, match="status 400 on attempt 1: simulated failure 400") as info:
        reward_for(sim_judge, k=1, max_retries=5).score([pair()])
    assert info.value.attempts == 1 and sim_judge.stats()["requests"] == 1


def test_timeouts_are_retried_then_reported(sim_judge):
    sim_judge.settings.delay_s = 1.0
    with pytest.raises(BackendError, match="timed out") as info:
        reward_for(sim_judge, k=1, timeout=0.2, max_retries=1).score([pair()])
    assert info.value.attempts == 2 and info.value.status is None


def test_unreachable_engine_is_a_backend_error_after_retries():
    reward = GRMReward(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, retry_backoff=0.01)
    with pytest.raises(BackendError, match="connection failed") as info:
        reward.score([pair()])
    assert info.value.attempts == 2


def test_identical_requests_are_served_from_the_cache_without_engine_calls(sim_judge):
    reward = reward_for(sim_judge, k=4)
    first = reward.score([pair()])[0]
    calls = sim_judge.stats()["requests"]
    second = reward.score([pair()])[0]
    assert sim_judge.stats()["requests"] == calls
    assert second.cached and not first.cached and second.rewards == first.rewards and second.prompt_tokens == 0
    reward_for(sim_judge, k=4, cache_size=0).score([pair()])
    assert sim_judge.stats()["requests"] > calls


def test_the_cache_is_bounded_in_bytes_as_well_as_entries(sim_judge):
    reward = reward_for(sim_judge, k=2, cache_max_bytes=12_000)
    requests = [ScoreRequest(prompt=f"question {i}", responses=[with_quality("x" * 1500, 7), with_quality("y", 3)])
                for i in range(20)]
    for request in requests:  # one at a time, so the cache's age order is the list's (a batch finishes in any order)
        reward.score([request])
    assert reward.cache.bytes <= 12_000 and 0 < len(reward.cache) < 20  # the oldest went, the newest stay
    calls = sim_judge.stats()["requests"]
    assert reward.score(requests[-1:])[0].cached and sim_judge.stats()["requests"] == calls
    assert not reward.score(requests[:1])[0].cached


def test_duplicates_within_a_batch_are_judged_once(sim_judge):
    results = reward_for(sim_judge, k=2, shuffle=False, cache_size=0).score([pair(), pair(), pair()])
    assert sim_judge.stats()["requests"] == 1 and len({tuple(r.rewards) for r in results}) == 1


def test_invalid_samples_are_excluded_and_counted(sim_judge):
    sim_judge.settings.invalid_rate = 0.5
    [result] = reward_for(sim_judge, k=16, shuffle=False, resample_invalid=False).score([pair(good=9, bad=2)])
    assert 0 < result.valid_samples < result.samples == 16 and result.resampled == 0
    assert result.votes == [9 * result.valid_samples, 2 * result.valid_samples] and result.rewards == [9.0, 2.0]
    assert all(j.error and "no scores block" in j.error for j in result.judgements if not j.valid)


def test_invalid_samples_are_replaced_so_k_valid_samples_vote(sim_judge):
    sim_judge.settings.invalid_rate = 1 / 3
    requests = [pair(good=9, bad=2, prompt=f"question {i}") for i in range(6)]
    results = reward_for(sim_judge, k=8, cache_size=0).score(requests)
    assert all(r.voted_samples == 8 and r.samples == 8 for r in results)  # every vote has k valid samples
    assert all(r.resampled >= 8 - r.valid_samples for r in results)  # a replacement per invalid first attempt
    first = sum(r.valid_samples for r in results) / sum(r.samples for r in results)
    assert 0.4 < first < 0.9  # the parse-valid rate stays the rate of first attempts (about 2/3)
    assert all(r.votes == [9 * 8, 2 * 8] for r in results)
    replacements = [j for r in results for j in r.judgements if j.resampled]
    assert len(replacements) == sum(r.resampled for r in results)
    assert sim_judge.stats()["completions"] == sum(r.samples + r.resampled for r in results)


def test_resampling_is_bounded_when_the_judge_never_parses(sim_judge):
    sim_judge.settings.invalid_rate = 1.0
    [result] = reward_for(sim_judge, k=4).score([pair()])
    assert result.rewards == [None, None] and result.resampled == 4 and result.samples == 4
    assert sim_judge.stats()["completions"] == 8  # k first attempts + at most max_resamples (default k)
    [bounded] = reward_for(sim_judge, k=4, max_resamples=1, cache_size=0).score([pair()])
    assert bounded.resampled == 1


def test_no_valid_sample_gives_none_or_raises_or_a_fixed_value(sim_judge):
    sim_judge.settings.invalid_rate = 1.0
    [result] = reward_for(sim_judge, k=2).score([pair()])
    assert result.rewards == [None, None] and result.votes is None and result.best is None
    assert reward_for(sim_judge, k=2, on_no_valid=-1.0).score([pair()])[0].rewards == [-1.0, -1.0]
    with pytest.raises(NoValidJudgementError, match="none of the 4 sampled judgement"):  # 2, then 2 replacements
        reward_for(sim_judge, k=2, on_no_valid="raise").score([pair()])


def test_reward_scale_sum_returns_the_papers_raw_votes(sim_judge):
    [result] = reward_for(sim_judge, k=3, reward_scale="sum").score([pair(good=7, bad=4)])
    assert result.rewards == [21.0, 12.0]
    [unit] = reward_for(sim_judge, k=3, reward_scale="unit").score([pair(good=10, bad=1)])
    assert unit.rewards == [1.0, 0.0]


def test_rows_sharing_a_prompt_are_judged_together_in_group_mode(sim_judge):
    reward = reward_for(sim_judge, k=1)
    prompts = ["p1"] * 3 + ["p2"] * 2
    completions = [with_quality(f"c{i}", q) for i, q in enumerate([3, 9, 6, 8, 2])]
    assert reward(prompts, completions) == [3.0, 9.0, 6.0, 8.0, 2.0]
    assert sim_judge.stats()["requests"] == 2
    sim_judge.reset()
    assert reward_for(sim_judge, k=1, mode="pointwise")(prompts, completions) == [3.0, 9.0, 6.0, 8.0, 2.0]
    assert sim_judge.stats()["requests"] == 5


def test_large_groups_are_split_into_balanced_chunks(sim_judge):
    reward = reward_for(sim_judge, k=1, max_responses_per_call=4)
    reward(["p"] * 10, [with_quality(f"c{i}", 5) for i in range(10)])
    bodies = sim_judge.state.bodies
    sizes = sorted(b["messages"][-1]["content"].count("[The Begin of Response") for b in bodies)
    assert sizes == [3, 3, 4]


def test_conversational_rows_and_reference_column_reach_the_judge(sim_judge):
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]] * 2
    completions = [[{"role": "assistant", "content": with_quality("4", 9)}],
                   [{"role": "assistant", "content": with_quality("5", 1)}]]
    rewards = reward_for(sim_judge, k=1)(prompts, completions, reference=["4", "4"], completion_ids=[[1], [2]])
    assert rewards == [9.0, 1.0]
    [body] = sim_judge.state.bodies
    text = body["messages"][-1]["content"]
    assert "[System]\nBe brief." in text and "#### Reference Answer ####\n" in text


def test_structured_output_sends_a_scores_regex(sim_judge):
    reward_for(sim_judge, k=1, structured_output="on").score([pair()])
    [body] = sim_judge.state.bodies
    regex = body["structured_outputs"]["regex"]
    assert re.fullmatch(regex, body and "Analysis: fine\nScores: \\boxed{10, 2}")
    assert not re.fullmatch(regex, "Analysis: fine\nScores: \\boxed{10}")
    sim_judge.reset()
    reward_for(sim_judge, k=1, structured_output="vllm-legacy", cache_size=0).score([pair()])
    assert "guided_regex" in sim_judge.state.bodies[0]
    sim_judge.reset()
    reward_for(sim_judge, k=1, structured_output="sglang", cache_size=0).score([pair()])
    assert "regex" in sim_judge.state.bodies[0]


def test_model_name_is_discovered_from_the_server_when_not_configured(sim_judge):
    [result] = GRMReward(base_url=sim_judge.base_url, k=1).score([pair()])
    assert result.valid_samples == 1 and sim_judge.state.bodies[0]["model"] == "simulated-judge"


def test_metadata_is_carried_to_the_result_and_not_shown_to_the_judge(sim_judge):
    request = ScoreRequest(prompt="q", responses=["a"], metadata={"row": 7, "secret": "do-not-show"})
    [result] = reward_for(sim_judge).score([request])
    assert result.metadata == {"row": 7, "secret": "do-not-show"}
    assert "do-not-show" not in sim_judge.state.bodies[0]["messages"][-1]["content"]


def test_malformed_requests_name_the_index_and_field(sim_judge):
    with pytest.raises(InvalidRequestError, match=r"request 1: responses: List should have at least 1 item"):
        reward_for(sim_judge).score([{"prompt": "q", "responses": ["a"]}, {"prompt": "q", "responses": []}])
    with pytest.raises(InvalidRequestError, match="responses: Value error, response 0 holds a message with role .user."):
        reward_for(sim_judge).score([{"prompt": "q", "responses": [[{"role": "user", "content": "x"}]]}])
    assert sim_judge.stats()["requests"] == 0


async def test_sync_call_works_inside_a_running_event_loop(sim_judge):
    reward = reward_for(sim_judge, k=2)
    assert reward(["q", "q"], [with_quality("a", 8), with_quality("b", 2)]) == [8.0, 2.0]
    assert await reward.acall(["q"], [with_quality("c", 5)]) == [5.0]


def _score_in_child(reward, base_url, queue):
    queue.put(reward(["q", "q"], [with_quality("a", 7), with_quality("b", 4)]))


@pytest.mark.slow
def test_reward_pickles_into_a_spawned_process_and_works_there(sim_judge):
    reward = reward_for(sim_judge, k=2)
    reward(["warm"], ["up"])  # a live client in this process must not stop pickling
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_score_in_child, args=(reward, sim_judge.base_url, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5) == [7.0, 4.0]


def voting_accuracy(base_url: str, k: int, n_pairs: int = 200, seed: int = 0) -> float:
    """Share of pairs where the voted best response is the one with the higher hidden quality."""
    requests, better = quality_pairs(n_pairs, seed=seed)
    results = GRMReward(base_url=base_url, model="simulated-judge", k=k, seed=seed).score(requests)
    return sum(r.best == b for r, b in zip(results, better)) / n_pairs


def test_voting_over_8_samples_beats_one_sample_on_the_simulated_judge():
    with SimulatedJudge(noise=1.8, seed=0) as judge:
        one = voting_accuracy(judge.base_url, k=1)
        eight = voting_accuracy(judge.base_url, k=8)
    assert 0.55 <= one <= 0.75, f"simulated judge not calibrated to ~65% at k=1: {one}"
    assert eight >= 0.80, f"k=8 voting picked the better response only {eight:.0%} of the time"


async def test_cancelling_a_score_call_cancels_its_engine_requests(sim_judge, caplog):
    sim_judge.settings.delay_s = 0.5
    reward = reward_for(sim_judge, k=1)
    task = asyncio.ensure_future(reward.ascore([pair(prompt=f"q{i}") for i in range(3)]))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await reward.aclose()
    await asyncio.sleep(0.8)
    assert "retrying" not in caplog.text
    assert sim_judge.stats()["requests"] == 3


def test_bad_rows_name_the_row_and_field(sim_judge):
    reward = reward_for(sim_judge)
    with pytest.raises(InvalidRequestError, match="got 2 prompts but 1 completions"):
        reward(["a", "b"], ["x"])
    with pytest.raises(InvalidRequestError, match="keyword 'reference' must be a list with one entry per prompt"):
        reward(["a"], ["x"], reference=["r1", "r2"])
    with pytest.raises(InvalidRequestError, match="^invalid row 1: prompt"):
        reward(["a", []], ["x", "y"])
    assert sim_judge.stats()["requests"] == 0


def test_the_engine_timeout_is_a_deadline_for_the_whole_call():
    """An engine trickling a byte every 0.05 s once held a GRMReward(timeout=3) call for 81 s: every read was quick."""
    import time

    with SimulatedJudge(trickle_s=0.05) as judge:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=1, timeout=1.0, max_retries=1, retry_backoff=0.01)
        started = time.perf_counter()
        with pytest.raises(BackendError, match=r"timed out \(deadline 1 s\).*gave up after 2 attempts"):
            reward.score([ScoreRequest(prompt="q", responses=["a"])])
        assert time.perf_counter() - started < 30  # two 1 s deadlines, not the minute the trickle takes
