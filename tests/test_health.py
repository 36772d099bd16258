"""Judge health (grm_plugin.health): the per-batch figures on hand-made batches whose answer is known, the once-only
warning, and their wiring into RowJudgements.metrics (TRL's log_metric) and rollout_reward's logs; then a GRMReward
against the simulated judge with a position bias, end to end."""

from __future__ import annotations

import logging
import math

import pytest

from grm_plugin import GRMReward
from grm_plugin import reward as reward_module
from grm_plugin.batching import RowSlot
from grm_plugin.health import HealthWatch, JudgeHealth, judge_health, pearson_centred, response_length
from grm_plugin.reward import RowJudgements
from grm_plugin.rollouts import rollout_reward
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality
from grm_plugin.types import Judgement, Message, ScoreRequest, ScoreResult

FIGURES = ("slot_bias", "length_corr", "ties_rate", "vote_spread")


def request(*responses) -> ScoreRequest:
    return ScoreRequest(prompt="q", responses=list(responses))


def sample(scores, order, valid=True) -> Judgement:
    return Judgement(text="", valid=valid, scores=scores if valid else None, order=order,
                     error=None if valid else "unparsed")


def result(rewards, judgements=(), samples=None, valid_samples=None, **extra) -> ScoreResult:
    judgements = list(judgements)
    valid = sum(j.valid for j in judgements)
    return ScoreResult(rewards=rewards, judgements=judgements,
                       samples=len(judgements) if samples is None else samples,
                       valid_samples=valid if valid_samples is None else valid_samples, **extra)


def biased_samples(qualities, orders, bias=2):
    """One valid sample per order: each response scores its quality, plus ``bias`` when it is shown in slot 1."""
    return [sample([q + (bias if order[0] == i else 0) for i, q in enumerate(qualities)], order) for order in orders]


def a_judgement(n=2) -> list[Judgement]:
    return [sample([5] * n, list(range(n)))]


# --- slot bias ------------------------------------------------------------------------------------------------------


def test_slot_bias_is_exactly_the_points_given_to_slot_one_with_alternating_orders():
    requests, results = [], []
    for quality in (3, 5, 7, 9):  # responses of equal quality, shown in alternating orders
        requests.append(request("a", "b"))
        results.append(result([quality + 1.0] * 2, biased_samples([quality, quality], [[0, 1], [1, 0]] * 2)))
    health = judge_health(requests, results)
    assert health.slot_bias == 2.0 and health.slot_samples == 16


def test_slot_bias_averages_the_responses_quality_out_over_balanced_orders_and_mixed_group_sizes():
    rotations = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]  # each response in slot 1 once
    requests = [request("a", "b", "c"), request("a", "b")]
    results = [result([5.0, 5.0, 5.0], biased_samples([3, 5, 7], rotations)),
               result([6.0, 6.0], biased_samples([4, 8], [[0, 1], [1, 0]]))]
    health = judge_health(requests, results)
    assert health.slot_bias == 2.0 and health.slot_samples == 5
    unbiased = judge_health(requests, [result(r.rewards, biased_samples(q, o, bias=0))
                                       for r, q, o in [(results[0], [3, 5, 7], rotations),
                                                       (results[1], [4, 8], [[0, 1], [1, 0]])]])
    assert unbiased.slot_bias == 0.0


def test_slot_bias_skips_invalid_samples_single_responses_and_unreadable_orders():
    requests = [request("a", "b"), request("alone"), request("a", "b")]
    results = [result([5.0, 5.0], [sample([7, 5], [0, 1]), sample(None, [1, 0], valid=False),
                                   sample([9, 1], [])]),  # no order: which slot was first is unknown
               result([5.0], [sample([9], [0])] * 3),
               result([5.0, 5.0], [sample([1, 9], [1, 0])])]
    health = judge_health(requests, results)
    assert health.slot_samples == 2 and health.slot_bias == ((7 - 5) + (9 - 1)) / 2  # slot 1 showed 7, then 9


# --- length correlation ---------------------------------------------------------------------------------------------


def test_length_corr_is_one_when_the_reward_is_a_linear_function_of_length_within_each_request():
    requests = [request("x", "xxx", "xxxxxx"), request("yy", "yyyyyyyyyy")]
    # different offsets per request: only the within-request (centred) relation counts
    results = [result([2 + 0.5 * len(r) for r in requests[0].responses], a_judgement(3)),
               result([7 + 0.5 * len(r) for r in requests[1].responses], a_judgement(2))]
    health = judge_health(requests, results)
    assert health.length_corr == pytest.approx(1.0) and health.responses == 5
    flipped = judge_health(requests, [r.model_copy(update={"rewards": [-v for v in r.rewards]}) for r in results])
    assert flipped.length_corr == pytest.approx(-1.0)


def test_length_corr_of_unrelated_rewards_is_the_hand_computed_value():
    # request A: lengths 1, 2, 3 and rewards 2, 1, 2 -> centred (-1, 1/3), (0, -2/3), (1, 1/3): sum xy = 0
    requests = [request("a", "aa", "aaa")]
    results = [result([2.0, 1.0, 2.0], a_judgement(3))]
    assert judge_health(requests, results).length_corr == pytest.approx(0.0, abs=1e-12)
    # with request B: lengths 10, 20, rewards 4, 6 -> centred (-5, -1), (5, 1): sum xy = 10 over
    # sqrt((2 + 50) * (2/3 + 2)) = sqrt(52 * 8/3)
    requests.append(request("b" * 10, "b" * 20))
    results.append(result([4.0, 6.0], a_judgement(2)))
    health = judge_health(requests, results)
    assert health.length_corr == pytest.approx(10 / math.sqrt(52 * 8 / 3)) and health.responses == 5


def test_length_corr_skips_unrewarded_responses_and_requests_with_one_rewarded_response():
    requests = [request("a", "aaaa", "aaaaaaaa"), request("b", "bbbbbbbbbbbbbbbbbbbb")]
    results = [result([1.0, None, 3.0], a_judgement(3)), result([9.0, None], a_judgement(2))]
    health = judge_health(requests, results)
    assert health.responses == 2 and health.length_corr == pytest.approx(1.0)


def test_message_list_responses_are_measured_by_their_text():
    assert response_length("four") == 4
    turn = [Message(role="assistant", content=[{"type": "text", "text": "abc"}, {"type": "text", "text": "de"}]),
            Message(role="tool", content="12345"), Message(role="assistant", content=None,
                                                           tool_calls=[{"id": "c", "function": {"name": "f"}}])]
    assert response_length(turn) == len("abc\nde") + 5
    requests = [request([Message(role="assistant", content="short")], [Message(role="assistant", content="long "
                                                                                * 10)])]
    results = [result([3.0, 8.0], a_judgement(2))]
    health = judge_health(requests, results)
    assert health.responses == 2 and health.length_corr == pytest.approx(1.0)


# --- ties, vote spread, parse-valid ---------------------------------------------------------------------------------


def test_ties_is_the_share_of_equal_reward_pairs_within_requests():
    requests = [request("a", "b", "c"), request("a", "b"), request("a", "b"), request("alone")]
    results = [result([5.0, 5.0, 7.0], a_judgement(3)),  # 1 of 3 pairs
               result([4.0, 4.0], a_judgement(2)),  # 1 of 1
               result([3.0, None], a_judgement(2)),  # one rewarded response: no pair
               result([6.0], a_judgement(1))]
    health = judge_health(requests, results)
    assert health.ties == 2 / 4 and health.pairs == 4


def test_vote_spread_is_the_mean_population_std_of_each_responses_scores():
    requests = [request("a", "b"), request("c"), request("d", "e")]
    results = [result([7.0, 5.0], [sample([6, 5], [0, 1]), sample([8, 5], [1, 0]), sample(None, [0, 1], False)]),
               result([4.0], [sample([2], [0]), sample([6], [0])]),
               result([5.0, 5.0], [sample([5, 5], [0, 1])])]  # one valid sample: skipped
    health = judge_health(requests, results)
    assert health.vote_spread == pytest.approx((1.0 + 0.0 + 2.0) / 3)


def test_parse_valid_is_valid_first_attempt_samples_over_samples_and_cached_results_count():
    requests = [request("a", "b"), request("c", "d")]
    results = [result([5.0, 5.0], a_judgement(2), samples=4, valid_samples=3),
               result([5.0, 6.0], a_judgement(2), samples=2, valid_samples=2, cached=True)]
    health = judge_health(requests, results)
    assert (health.samples, health.valid_samples, health.parse_valid) == (6, 5, 5 / 6)
    assert health.pairs == 2 and health.responses == 4  # the cached request counts like the other


# --- undefined figures ----------------------------------------------------------------------------------------------


def test_undefined_figures_are_zero_never_nan():
    assert judge_health([], []) == JudgeHealth()
    alone = judge_health([request("a"), request("bb")], [result([5.0], a_judgement(1)), result([7.0], a_judgement(1))])
    assert (alone.slot_bias, alone.length_corr, alone.ties, alone.slot_samples, alone.responses) == (0.0, 0.0, 0.0, 0, 0)
    same_length = judge_health([request("ab", "cd")], [result([3.0, 9.0], a_judgement(2))])
    assert same_length.length_corr == 0.0 and same_length.responses == 2
    same_reward = judge_health([request("a", "abc")], [result([4.0, 4.0], a_judgement(2))])
    assert same_reward.length_corr == 0.0 and same_reward.ties == 1.0
    assert pearson_centred([]) == 0.0
    for health in (alone, same_length, same_reward):
        assert all(math.isfinite(v) for v in health.as_metrics().values())


def test_failed_requests_and_requests_without_judgements_are_skipped():
    requests = [request("a", "bbbb"), request("a", "bbbb"), request("a", "bbbb")]
    results = [result([None, None], biased_samples([5, 5], [[0, 1]]), samples=1, error="JudgePromptTooLong"),
               result([None, None], samples=0),  # not judged (the isolate placeholder)
               result([1.0, 1.0], biased_samples([5, 5], [[1, 0]]), samples=3, valid_samples=1)]
    health = judge_health(requests, results)
    assert (health.samples, health.valid_samples, health.slot_samples, health.pairs) == (3, 1, 1, 1)
    assert health.slot_bias == 2.0 and health.ties == 1.0


def test_as_metrics_names_the_four_figures():
    health = JudgeHealth(slot_bias=1.5, length_corr=0.25, ties=0.5, parse_valid=0.9, vote_spread=0.75)
    assert health.as_metrics() == {"slot_bias": 1.5, "length_corr": 0.25, "ties_rate": 0.5, "vote_spread": 0.75}


# --- the once-only warning ------------------------------------------------------------------------------------------


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "grm_plugin.health" and r.levelno == logging.WARNING]


def test_a_watch_warns_once_per_figure_naming_value_threshold_and_meaning(caplog):
    caplog.set_level(logging.WARNING, logger="grm_plugin")
    watch = HealthWatch()
    fooled = JudgeHealth(slot_bias=1.5, length_corr=0.8, slot_samples=16, responses=16)
    watch.observe(fooled, name="judge")
    watch.observe(fooled, name="judge")
    logged = warnings_of(caplog)
    assert len(logged) == 2
    [length] = [m for m in logged if "length_corr" in m]
    assert "0.80" in length and "0.5" in length and "a policy can learn to pad" in length and "judge" in length
    [slot] = [m for m in logged if "slot_bias" in m]
    assert "+1.50" in slot and "|bias| >= 1" in slot and "slot 1" in slot
    HealthWatch().observe(JudgeHealth(slot_bias=-1.0, length_corr=-0.5, slot_samples=20, responses=20))
    assert len(warnings_of(caplog)) == 4  # another watch warns again; negative figures at the threshold too
    assert any("cut its answers short" in m for m in warnings_of(caplog)[2:])


def test_no_warning_below_a_threshold_or_with_too_little_measured(caplog):
    caplog.set_level(logging.WARNING, logger="grm_plugin")
    watch = HealthWatch()
    watch.observe(JudgeHealth(slot_bias=0.9, length_corr=0.49, slot_samples=100, responses=100))
    watch.observe(JudgeHealth(slot_bias=5.0, length_corr=0.99, slot_samples=15, responses=15))
    assert warnings_of(caplog) == []
    watch.observe(JudgeHealth(length_corr=0.6, responses=16))
    assert len(warnings_of(caplog)) == 1 and "length_corr" in warnings_of(caplog)[0]


# --- wiring: RowJudgements.metrics and rollout_reward's logs ----------------------------------------------------------


class CountingWatch(HealthWatch):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[JudgeHealth] = []

    def observe(self, health: JudgeHealth, name: str = "grm") -> None:
        self.seen.append(health)
        super().observe(health, name)


def hand_judged() -> RowJudgements:
    requests = [request("a", "aaaa"), request("b")]
    results = [result([8.0, 5.0], biased_samples([5, 5], [[0, 1], [1, 0]]) + [sample([9, 3], [0, 1])]),
               result([6.0], [sample([6], [0]), sample([6], [0])], cached=True)]
    return RowJudgements(requests, results, [RowSlot(0, 0), RowSlot(0, 1), RowSlot(1, 0)], seconds=0.5)


def test_row_judgements_compute_health_once_and_log_it_with_the_metrics(monkeypatch):
    watch = CountingWatch()
    monkeypatch.setattr(reward_module, "WATCH", watch)
    judged = hand_judged()
    metrics = judged.metrics()
    health = judged.health()
    assert health is judged.health() and watch.seen == [health]  # computed and observed once per batch
    assert health == judge_health(judged.requests, judged.results)
    assert {k: metrics[k] for k in FIGURES} == health.as_metrics()
    assert health.slot_samples == 3 and health.slot_bias == pytest.approx((2 + 2 + 6) / 3)
    assert health.length_corr == pytest.approx(-1.0) and health.ties == 0.0
    assert metrics["parse_valid_rate"] == 1.0 and "parse_valid" not in metrics


def test_rollout_reward_logs_the_batch_health_for_every_row(monkeypatch):
    watch = CountingWatch()
    monkeypatch.setattr(reward_module, "WATCH", watch)
    judged = hand_judged()
    logs = [rollout_reward(judged, row, (1, 10))[2] for row in range(3)]
    expected = {f"grm_{k}": v for k, v in judged.health().as_metrics().items()}
    assert all({k: log[k] for k in expected} == expected for log in logs)  # batch-level: the same for each row
    assert all(isinstance(v, float) and math.isfinite(v) for log in logs for v in log.values())
    assert len(watch.seen) == 1


# --- end to end: a GRMReward on the simulated judge with a position bias ----------------------------------------------


def test_a_position_biased_judge_shows_in_trls_metrics_and_warns_once(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="grm_plugin")
    monkeypatch.setattr(reward_module, "WATCH", HealthWatch())
    with SimulatedJudge(noise=0.0, seed=0, position_bias=2.0) as judge:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=8, cache_size=0)
        prompts = ["What is 2 + 3?"] * 2 + ["Name the capital of France."] * 2
        completions = [with_quality("5", 5), with_quality("five", 5), with_quality("Paris", 6),
                       with_quality("It is Paris", 6)]
        for _ in range(2):
            metrics: dict[str, float] = {}
            reward(prompts, completions, reward_name="judge", log_metric=metrics.__setitem__)
            assert metrics["judge/slot_bias"] == 2.0 and metrics["judge/vote_spread"] > 0
            assert {f"judge/{k}" for k in FIGURES} <= set(metrics)
    logged = warnings_of(caplog)
    assert len(logged) == 1 and "slot_bias=+2.00" in logged[0] and "16 samples" in logged[0]



def test_measured_leaves_out_the_figures_a_batch_had_no_data_for():
    """One sample per request (k=1) over many requests: no response has two samples, so no vote spread was
    measured, though the batch has many valid samples; slot bias, length and ties were."""
    requests = [request("a", "bbbb") for _ in range(4)]
    results = [result([7.0, 3.0], [sample([7, 3], [i % 2, 1 - i % 2])]) for i in range(4)]
    health = judge_health(requests, results)
    assert health.valid_samples == 4 and health.spread_responses == 0
    assert set(health.measured()) == {"slot_bias", "length_corr", "ties_rate"}
    twice = judge_health(requests[:1], [result([7.0, 3.0], [sample([7, 3], [0, 1]), sample([6, 3], [1, 0])])])
    assert twice.spread_responses == 2 and twice.measured()["vote_spread"] == 0.25
    assert judge_health([], []).measured() == {}

def test_grm_serve_exports_the_judges_health_as_gauges():
    """The simulated judge favours the first slot by 3 points: /metrics shows it after one judged group."""
    import httpx
    from served_app import Server

    from grm_plugin import GRMReward
    from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality

    prompt = "<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n"
    with SimulatedJudge(noise=0.0, position_bias=3.0) as judge, \
            Server(GRMReward(base_url=judge.base_url, model="sim", k=8, cache_size=0), group_size=4) as server:
        body = {"query": [prompt + with_quality(f"answer {i}", 5) for i in range(4)], "prompts": [prompt] * 4}
        assert httpx.post(f"{server.url}/get_reward", json=body, timeout=30).status_code == 200
        gauges = {line.split()[0]: float(line.split()[1]) for line in httpx.get(f"{server.url}/metrics").text.splitlines()
                  if line.startswith("grm_judge_") and not line.startswith("grm_judge_samples")
                  and not line.startswith("grm_judge_valid") and not line.startswith("grm_judge_resampled")}
    assert gauges["grm_judge_slot_bias"] == 3.0
    assert set(gauges) >= {"grm_judge_length_corr", "grm_judge_ties_rate", "grm_judge_vote_spread"}
