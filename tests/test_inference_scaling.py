"""Inference-time scaling beyond the paper: adaptive k (lead, exact and statistical stopping), reusable principles
(upfront and given), balanced orderings and expected scores from token log-probabilities. Integration tests run
GRMReward against the simulated judge (an HTTP stand-in for a language model, not a model) over real HTTP."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grm_plugin import GRMReward, InvalidRequestError, ScoreRequest
from grm_plugin.backends import TokenLogprob
from grm_plugin.expected import expected_scores, score_distribution
from grm_plugin.orders import draw_orders, slot_imbalance
from grm_plugin.stopping import exact_stop, lead_flip_probability, lead_stop, statistical_stop, t_cdf, t_quantile
from grm_plugin.testing.simulated_judge import SimulatedJudge, _score_probabilities, with_quality
from grm_plugin.voting import pick_best, vote_sum

L = math.log


def reward_for(judge, **overrides):
    overrides.setdefault("retry_backoff", 0.01)
    return GRMReward(base_url=judge.base_url, model="simulated-judge", **overrides)


def group(prompt: str, qualities) -> ScoreRequest:
    return ScoreRequest(prompt=prompt, responses=[with_quality(f"answer {i}", q) for i, q in enumerate(qualities)])


def principles_requests(judge) -> list[dict]:
    return [b for b in judge.state.bodies if "[The Begin of Response" not in b["messages"][-1]["content"]]


# --- adaptive k: the exact rule ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 4), k_max=st.integers(2, 16), data=st.data())
def test_exact_rule_stops_only_when_no_continuation_can_change_the_best(n, k_max, data):
    samples = data.draw(st.lists(st.lists(st.integers(1, 10), min_size=n, max_size=n), min_size=k_max,
                                 max_size=k_max))
    full = vote_sum(samples, n)
    for drawn in range(1, k_max):
        votes = vote_sum(samples[:drawn], n)
        if exact_stop(votes, k_max - drawn):
            best = votes.index(max(votes))
            assert all(full[best] > v for i, v in enumerate(full) if i != best)  # same best, strictly


def test_exact_rule_stops_at_the_first_round_where_the_lead_exceeds_the_remaining_swing():
    assert exact_stop([40, 12], remaining=3, score_range=(1, 10))  # 28 > 3 * 9
    assert not exact_stop([40, 13], remaining=3, score_range=(1, 10))  # 27 is not > 27: a tie could still appear
    assert exact_stop([5, 5], remaining=0)


def test_adaptive_k_with_the_exact_rule_picks_the_same_best_as_all_k_max_samples():
    """Over 30 random groups: the judge draws each sample of a prompt from its own seed, so the adaptive run's samples are the
    first samples of the full run; stopping must never change the voted best response."""
    requests = []
    for seed in range(30):
        rng = random.Random(seed)
        requests.append(group(f"q{seed}", [rng.uniform(1, 10) for _ in range(rng.choice([2, 3, 4]))]))
    with SimulatedJudge(noise=1.5, position_bias=0.5, seed=0, seed_per_sample=True) as judge:
        adaptive_results = reward_for(judge, k=2, k_max=16, round_size=2, stopping="exact",
                                      ordering="balanced").score(requests)
        judge.reset(forget_samples=True)
        full_results = reward_for(judge, k=16, ordering="balanced").score(requests)
    stopped, saved = 0, 0
    for adaptive, full in zip(adaptive_results, full_results):
        assert adaptive.best == full.best, (adaptive.votes, full.votes)
        drawn = {}
        for j in full.judgements:  # the adaptive samples are the first ones of each order in the full run
            drawn.setdefault(tuple(j.order), []).append(j.scores)
        for j in adaptive.judgements:
            assert j.scores == drawn[tuple(j.order)].pop(0)
        stopped += adaptive.stopped_early
        saved += full.samples - adaptive.samples
        assert adaptive.rounds == (adaptive.samples + 1) // 2 and full.rounds == 1
    assert stopped >= 5 and saved > 0  # the rule did stop early, so the comparison was not vacuous


def test_adaptive_k_sends_one_request_per_distinct_order_per_round():
    with SimulatedJudge(noise=0.0, seed=0) as judge:
        [result] = reward_for(judge, k=4, k_max=12, ordering="balanced").score([group("q", [9, 1])])
        # pair, balanced: each round of 4 shows both orders twice -> 2 requests with n=2 per round
        assert judge.stats()["n_values"] == [2] * (2 * result.rounds)
        assert result.samples == 4 * result.rounds and result.stopped_early == (result.samples < 12)


def test_adaptive_k_cannot_combine_with_a_meta_rm_and_k_max_must_cover_k():
    from grm_plugin import ConfigError
    from grm_plugin.meta_rm import FunctionMetaRM

    with pytest.raises(ConfigError, match="k_max"):
        GRMReward(base_url="http://x/v1", model="m", k=2, k_max=8, meta_rm=FunctionMetaRM(lambda r, j: 0.0))
    with pytest.raises(ConfigError, match=r"k_max \(4\) must be at least k \(8\)"):
        GRMReward(base_url="http://x/v1", model="m", k=8, k_max=4)


# --- adaptive k: the lead rule ----------------------------------------------------------------------------------


def test_lead_rule_stops_on_a_decisive_lead_and_not_on_an_unclear_one():
    clear = [[8, 3], [9, 2], [8, 4], [9, 3]]  # differences 5, 7, 4, 6
    assert lead_stop(clear, remaining=12, confidence=0.95, looks=6)
    assert not lead_stop(clear[:3], remaining=13, confidence=0.95)  # fewer than 4 samples: no spread to trust
    unclear = [[7, 6], [6, 7], [8, 6], [7, 7]]  # leads by 2 points in 4 samples, differences 1, -1, 2, 0
    assert not lead_stop(unclear, remaining=12, confidence=0.95)
    assert not lead_stop(unclear * 2, remaining=8, confidence=0.95)  # still unclear after 8 samples
    tied = [[8, 8, 2], [9, 9, 1], [8, 8, 2], [9, 9, 1]]  # a tied best never stops, however far the third is
    assert not lead_stop(tied, remaining=12, confidence=0.5) and lead_flip_probability(tied, 12) == 1.0
    # clear over one response, unclear over the other: every other response must be beaten
    assert not lead_stop([[8, 3, 7], [9, 2, 10], [8, 4, 6], [9, 3, 8]], remaining=12, confidence=0.95)
    # a moderate lead: enough with 2 samples left, not with 12 (the remaining samples' swing is predicted)
    moderate = [[7, 6], [6, 6], [5, 7], [8, 5], [7, 6], [7, 5]]  # differences 1, 0, -2, 3, 1, 2
    assert lead_stop(moderate, remaining=2, confidence=0.95) and not lead_stop(moderate, remaining=12, confidence=0.95)
    # more looks ask for a clearer lead; the exact rule's certainty always stops; nothing left always stops
    p = lead_flip_probability(moderate, remaining=6)
    assert lead_stop(moderate, 6, confidence=1 - p * 1.01, looks=1) and not lead_stop(moderate, 6, 1 - p * 1.01, looks=4)
    assert lead_stop([[10, 1]] * 2, remaining=1, confidence=0.999) and lead_stop([], remaining=0, confidence=0.95)
    assert not lead_stop([], remaining=3, confidence=0.95)


def test_t_cdf_is_exact_and_inverts_t_quantile():
    assert t_cdf(0.0, 5) == 0.5 and t_cdf(-1.0, 1) == pytest.approx(0.25)  # Cauchy
    assert t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)))  # df 2: 1/2 + t / (2 sqrt(2 + t^2))
    for df in (3, 4, 7, 15):
        for p in (0.9, 0.95, 0.99):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=2e-3)
            assert t_cdf(-t_quantile(p, df), df) == pytest.approx(1 - p, abs=2e-3)


def _lead_vs_all(requests, judge, **settings):
    adaptive = reward_for(judge, k_max=16, ordering="balanced", cache_size=0, **settings).score(requests)
    judge.reset(forget_samples=True)
    full = reward_for(judge, k=16, ordering="balanced", cache_size=0).score(requests)
    judge.reset(forget_samples=True)
    return adaptive, full


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.sampled_from([1.0, 1.5, 2.5]))
def test_lead_rule_agrees_with_all_k_max_samples_on_the_simulated_judge(seed, noise):
    """Property over seeds: with the lead rule (the default), the best response matches drawing all k_max samples in
    at least 97% of 60 random groups (the benchmark's 300 give 99-100%; a rare close pair may flip), and it saves."""
    rng = random.Random(seed)
    requests = [group(f"q{seed}-{i}", [rng.uniform(2, 9) for _ in range(rng.choice([2, 3, 4]))]) for i in range(60)]
    with SimulatedJudge(noise=noise, position_bias=0.5, seed=seed, seed_per_sample=True) as judge:
        adaptive, full = _lead_vs_all(requests, judge, k=4, round_size=2)
    agree = sum(a.best == f.best for a, f in zip(adaptive, full))
    assert agree >= 58, [(a.votes, f.votes) for a, f in zip(adaptive, full) if a.best != f.best]
    assert sum(a.samples for a in adaptive) < 0.85 * 16 * len(requests)
    assert all(a.samples >= 4 and a.samples % 2 == 0 and a.stopped_early == (a.samples < 16) for a in adaptive)


def test_lead_rule_keeps_its_error_rate_when_two_responses_are_equally_good():
    """The worst case: equally good responses, so every stop risks a different best than all k_max samples. The
    rate of changed bests stays under 1 - stop_confidence (looks and other responses corrected for)."""
    requests = [group(f"tie{i}", [5.0, 5.0] if i % 2 else [5.0, 5.0, 5.0]) for i in range(100)]
    with SimulatedJudge(noise=1.5, position_bias=0.5, seed=3, seed_per_sample=True) as judge:
        adaptive, full = _lead_vs_all(requests, judge, k=4, round_size=2, stop_confidence=0.9)
    changed = sum(a.best != f.best for a, f in zip(adaptive, full))
    stopped = sum(a.stopped_early for a in adaptive)
    assert changed <= 10 and stopped >= 20, (changed, stopped)  # it did stop early, often on a tie's noise


def test_lead_is_the_default_rule_and_counts_its_looks():
    reward = GRMReward(base_url="http://x/v1", model="m", k=4, k_max=16, round_size=2)
    assert reward.config.stopping == "lead" and reward.adaptive.looks() == 6  # after 4, 6, ..., 14 samples
    few = GRMReward(base_url="http://x/v1", model="m", k=2, k_max=16, round_size=2)
    assert few.adaptive.looks() == 6  # 2 is too few
    assert GRMReward(base_url="http://x/v1", model="m", k=8, k_max=8).adaptive.looks() == 1


# --- adaptive k: the statistical rule ---------------------------------------------------------------------------


def test_statistical_rule_needs_agreement_and_at_least_three_samples():
    assert not statistical_stop([[7], [7]], 0.5, 0.9)
    assert statistical_stop([[7], [8]] * 4, 0.5, 0.9)
    assert not statistical_stop([[1], [10]] * 4, 0.5, 0.9)


def test_statistical_rule_knows_each_mean_score_within_tolerance_at_the_stated_rate():
    tolerance, confidence, noise = 0.5, 0.9, 1.0
    within = total = samples = 0
    with SimulatedJudge(noise=noise, seed=1) as judge:
        rng = random.Random(1)
        requests = [group(f"q{i}", [rng.uniform(2, 9), rng.uniform(2, 9)]) for i in range(100)]
        reward = reward_for(judge, k=4, k_max=64, round_size=4, stopping="statistical", stop_tolerance=tolerance,
                            stop_confidence=confidence, ordering="balanced")
        for request, result in zip(requests, reward.score(requests)):
            samples += result.samples
            for response, mean in zip(request.responses, result.mean_scores):
                quality = float(response.split("quality=")[1].rstrip("}"))
                true_mean = sum(v * p for v, p in _score_probabilities(quality, noise, 1, 10).items())
                within += abs(mean - true_mean) <= tolerance
                total += 1
    rate = within / total
    slack = 2.5 * math.sqrt(confidence * (1 - confidence) / total)
    assert rate >= confidence - slack, f"only {rate:.1%} of the means within {tolerance}"
    assert samples / len(requests) < 40  # it stopped well before k_max


# --- reusable principles ----------------------------------------------------------------------------------------


def test_upfront_principles_are_written_once_per_prompt_across_a_grpo_group_and_calls(tmp_path):
    with SimulatedJudge(noise=0.5, seed=0, principles_tokens=60) as judge:
        reward = reward_for(judge, k=4, principles="upfront", max_responses_per_call=4, cache_size=0,
                            principles_cache_dir=str(tmp_path))
        prompts = ["p1"] * 8 + ["p2"] * 8  # two GRPO groups of 8, each split into two judge calls of 4
        for epoch in range(3):
            completions = [with_quality(f"c{epoch}-{i}", 1 + (i * 7 + epoch) % 9) for i in range(16)]
            assert all(r is not None for r in reward(prompts, completions))
        written = principles_requests(judge)
        assert len(written) == 2 and {"p1", "p2"} == {b["messages"][-1]["content"].split("[User Query]\n")[1][:2]
                                                       for b in written}
        assert written[0]["temperature"] == 0.0 and "n" not in written[0]
        judged = [b for b in judge.state.bodies if b not in written]
        assert all("#### Specific Criteria ####\nCorrectness (60%)" in b["messages"][-1]["content"] for b in judged)
        judge.reset()
        [result] = GRMReward(base_url=judge.base_url, model="simulated-judge", k=2, principles="upfront",
                             principles_cache_dir=str(tmp_path)).score([group("p1", [7, 3])])
        assert principles_requests(judge) == []  # a new reward (a restart) reads them from disk
        assert result.principles_mode == "upfront" and result.principles_reused and result.principles_tokens == 0
        assert all(j.valid and "Specific Criteria:" not in j.text and j.principles.startswith("Correctness")
                   for j in result.judgements)
        stored = [json.loads(f.read_text()) for f in tmp_path.glob("*.json")]  # one file per prompt
        assert len(stored) == 2 and stored[0]["completion_tokens"] > 60
        assert result.principles_tokens_saved == 2 * stored[0]["completion_tokens"]  # 2 samples that did not write them


def test_upfront_principles_cost_fewer_completion_tokens_than_joint_ones():
    with SimulatedJudge(noise=0.5, seed=0, principles_tokens=100) as judge:
        requests = [group(f"q{i}", [6, 4, 8]) for i in range(4)]
        joint = reward_for(judge, k=4).score(requests)
        upfront = reward_for(judge, k=4, principles="upfront").score(requests)
    first = upfront[0]
    assert first.principles_tokens > 0 and not first.principles_reused and first.principles_tokens_saved > 0
    assert sum(r.completion_tokens for r in upfront) < sum(r.completion_tokens for r in joint)
    assert all(r.principles_mode == "joint" and r.principles_tokens_saved == 0 for r in joint)


def test_given_principles_come_from_the_column_and_are_required():
    with SimulatedJudge(noise=0.0, seed=0) as judge:
        reward = reward_for(judge, k=1, principles="given")
        rewards = reward(["q", "q"], [with_quality("a", 8), with_quality("b", 2)],
                         principles=["Exactness (100%)", "Exactness (100%)"])
        assert rewards == [8.0, 2.0] and principles_requests(judge) == []
        [body] = judge.state.bodies
        assert "#### Specific Criteria ####\nExactness (100%)" in body["messages"][-1]["content"]
        with pytest.raises(InvalidRequestError, match="request 0: principles: principles='given' needs"):
            reward.score([group("q", [5])])


# --- balanced orderings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_balanced_orderings_put_each_response_in_each_slot_equally_when_k_is_a_multiple_of_n(n):
    for seed in range(20):
        for k in (n, 2 * n, 3 * n):
            assert slot_imbalance(draw_orders(n, k, random.Random(seed), balanced=True), n) == 0
        for k in range(1, 3 * n):
            assert slot_imbalance(draw_orders(n, k, random.Random(seed), balanced=True), n) <= 1
    random_imbalance = [slot_imbalance(draw_orders(n, 2 * n, random.Random(s)), n) for s in range(20)]
    assert max(random_imbalance) > 0  # independent shuffles do not balance


def test_balanced_orderings_reach_the_judge_and_cancel_a_first_slot_bias():
    with SimulatedJudge(noise=0.0, position_bias=3.0, seed=0) as judge:
        requests = [group(f"q{i}", [5, 5, 5]) for i in range(10)]
        balanced = reward_for(judge, k=3, ordering="balanced").score(requests)
        shuffled = reward_for(judge, k=3).score(requests)
    assert all(r.slot_imbalance == 0 and r.rewards == [6.0, 6.0, 6.0] for r in balanced)
    assert all(len({tuple(j.order) for j in r.judgements}) == 3 for r in balanced)
    assert any(r.rewards != [6.0, 6.0, 6.0] for r in shuffled)


# --- expected scores from log-probabilities ---------------------------------------------------------------------


def table(*entries):
    """TokenLogprobs from (token, {alternative: probability}) pairs; the token's own probability from the table."""
    return [TokenLogprob(token, L(top.get(token, 1.0)), {t: L(p) for t, p in top.items()}) for token, top in entries]


def test_expected_scores_from_single_digit_tokens():
    text = "Analysis: ok\nScores: \\boxed{8, 3}"
    tokens = table(("Analysis: ok\nScores: \\boxed{", {}), ("8", {"8": 0.5, "7": 0.3, "9": 0.1, "x": 0.1}),
                   (",", {}), (" ", {}), ("3", {"3": 0.9, "2": 0.1}), ("}", {}))
    values, read = expected_scores(text, [(28, 29), (31, 32)], [8, 3], tokens, (1, 10))
    assert read == 2
    assert values[0] == pytest.approx((8 * 0.5 + 7 * 0.3 + 9 * 0.1) / 0.9)  # "x" is not a score: renormalised
    assert values[1] == pytest.approx(3 * 0.9 + 2 * 0.1)


def test_expected_scores_read_ten_over_two_tokens_and_a_leading_space():
    # "10" written as "1" then "0": P(10) = P("1") * P("0" | "1"), P(1) = P("1") * P(end | "1")
    tokens = table(("{", {}), ("1", {"1": 0.6, "9": 0.4}), ("0", {"0": 0.75, "}": 0.25}), ("}", {}))
    dist = score_distribution("{10}", (1, 3), tokens, (1, 10))
    assert dist == pytest.approx({10: 0.45, 1: 0.15, 9: 0.4})
    # a written 9 beside a "1": the continuation is unseen, so "1" counts for the nearer value, 10
    tokens = table(("{", {}), ("9", {"9": 0.7, "1": 0.3}), ("}", {}))
    assert score_distribution("{9}", (1, 2), tokens, (1, 10)) == pytest.approx({9: 0.7, 10: 0.3})
    # a token holding a space before the digit, with alternatives with and without it
    tokens = table(("A:", {}), (" 4", {" 4": 0.5, " 5": 0.25, "6": 0.25}))
    assert score_distribution("A: 4", (3, 4), tokens, (1, 10)) == pytest.approx({4: 0.5, 5: 0.25, 6: 0.25})


def test_expected_scores_fall_back_to_the_parsed_integer():
    assert expected_scores("{7}", [(1, 2)], [7], None, (1, 10)) == ([7.0], 0)  # no log-probabilities
    wrong = table(("{", {}), ("8", {"8": 1.0}), ("}", {}))  # the tokens spell another text
    assert expected_scores("{7}", [(1, 2)], [7], wrong, (1, 10)) == ([7.0], 0)
    no_alternatives = table(("{", {}), ("7", {}), ("}", {}))
    assert expected_scores("{7}", [(1, 2)], [7], no_alternatives, (1, 10)) == ([7.0], 1)


def test_the_openai_engine_asks_for_and_reads_logprobs_from_the_simulated_judge():
    noise = 1.2
    with SimulatedJudge(noise=noise, seed=0) as judge:
        rng = random.Random(0)
        requests = [group(f"q{i}", [rng.uniform(2, 9), rng.uniform(2, 9)]) for i in range(60)]
        results = reward_for(judge, k=1, expected_scores=True, top_logprobs=5).score(requests)
        body = judge.state.bodies[0]
        assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["temperature"] == 0.0
        plain = reward_for(judge, k=1).score(requests)
    assert all(r.expected_samples == r.voted_samples == 1 and r.expected_votes == r.rewards for r in results)
    assert all(r.votes == p.votes for r, p in zip(results, plain))  # the same sampled text, integer votes kept
    assert sum(x != round(x) for r in results for x in r.rewards) > 100  # continuous rewards at k=1
    errors = {"expected": [], "integer": []}
    for request, result in zip(requests, results):
        for i, response in enumerate(request.responses):
            quality = float(response.split("quality=")[1].rstrip("}"))
            true_mean = sum(v * p for v, p in _score_probabilities(quality, noise, 1, 10).items())
            errors["expected"].append((result.rewards[i] - true_mean) ** 2)
            errors["integer"].append((result.votes[i] - true_mean) ** 2)
    assert sum(errors["expected"]) < sum(errors["integer"])  # a lower-variance reward from one sample


def test_expected_scores_without_engine_logprobs_fall_back_and_count_it():
    with SimulatedJudge(noise=0.0, seed=0) as judge:
        reward = reward_for(judge, k=2, expected_scores=True, extra_body={"logprobs": False})
        [result] = reward.score([group("q", [8, 3])])
    assert result.expected_samples == 0 and result.rewards == [8.0, 3.0] and result.expected_votes == [16.0, 6.0]
    assert pick_best(result.expected_votes, random.Random(0)) == result.best == 0
