"""The evaluation harness (`grm eval`): accuracy arithmetic, the subsampled k curve against brute force, position
bias, report files, resuming; judged by the simulated judge (an OpenAI-compatible HTTP server standing in for a
language model, with hidden response qualities)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grm_plugin import GRMReward
from grm_plugin.errors import BackendError, InvalidRequestError
from grm_plugin.evaluation import (
    ItemSamples,
    accuracy_curve,
    collect_samples,
    expected_correct,
    position_bias,
    rewardbench_score,
    run_eval,
    subsets,
)
from grm_plugin.preferences import PreferenceItem, load_preferences
from grm_plugin.testing.simulated_judge import SimulatedJudge, quality_pairs
from grm_plugin.voting import vote_sum

SMOKE = Path(__file__).resolve().parent.parent / "examples" / "eval" / "smoke.jsonl"


def items_from_pairs(n: int, seed: int = 0, gap: float = 1.0) -> list[PreferenceItem]:
    requests, better = quality_pairs(n, seed=seed, gap=gap)
    return [PreferenceItem(str(i), r.prompt, list(r.responses), b, subset="ab"[i % 2])
            for i, (r, b) in enumerate(zip(requests, better))]


# --- arithmetic ---------------------------------------------------------------------------------------------------


def test_expected_accuracy_with_ties_and_several_responses():
    assert expected_correct([9, 2], 0, 2) == 1.0
    assert expected_correct([9, 2], 1, 2) == 0.0
    assert expected_correct([7, 7], 0, 2) == 0.5  # a tie is a coin flip
    assert expected_correct([5, 8, 8, 1], 2, 4) == 0.5
    assert expected_correct([8, 8, 8, 1], 0, 4) == pytest.approx(1 / 3)
    assert expected_correct(None, 0, 4) == 0.25  # no valid sample: a random pick


def test_curve_on_hand_made_samples_per_subset():
    samples = [
        ItemSamples("a", "x", 2, 0, [[9, 2], [3, 8], None]),  # k=3 votes 12 vs 10 -> right
        ItemSamples("b", "x", 2, 1, [[5, 5], [5, 5], [5, 5]]),  # always a tie -> 0.5
        ItemSamples("c", "y", 3, 2, [None, None, None]),  # nothing parsed -> 1/3
    ]
    [k1, k3] = accuracy_curve(samples, [1, 3], draws=100, bootstrap=50)
    # k=1 takes every single sample: item a is right in sample 0, wrong in 1, random (1/2) when unparsed
    assert k1["per_subset"]["x"] == pytest.approx(((1 + 0 + 0.5) / 3 + 0.5) / 2)
    assert k3["per_subset"] == {"x": pytest.approx(0.75), "y": pytest.approx(1 / 3)}
    assert k3["accuracy"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert k3["ci95"][0] <= k3["accuracy"] <= k3["ci95"][1]


def test_rewardbench_weighting_by_section():
    per_subset = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "refusals-dangerous": 0.8, "math-prm": 0.6,
                  "hep-python": 1.0, "hep-go": 0.0}
    counts = {"alpacaeval-easy": 3, "mt-bench-easy": 1, "refusals-dangerous": 5, "math-prm": 10, "hep-python": 1,
              "hep-go": 1}
    scores = rewardbench_score(per_subset, counts)
    assert scores["Chat"] == pytest.approx((3 * 1.0 + 1 * 0.5) / 4)
    assert scores["Safety"] == pytest.approx(0.8)
    assert scores["Reasoning"] == pytest.approx((0.6 + 0.5) / 2)  # math-prm weighs as much as all code subsets
    assert scores["overall"] == pytest.approx((scores["Chat"] + 0.8 + scores["Reasoning"]) / 3)
    assert rewardbench_score({"my-subset": 1.0}, {"my-subset": 4}) is None


def test_the_subsampled_curve_equals_brute_force_over_every_subset(sim_judge):
    items = items_from_pairs(40, seed=3, gap=1.0)
    sim_judge.state.settings.noise = 1.5
    samples = collect_samples(GRMReward(base_url=sim_judge.base_url, model="sim", k=6), items)
    curve = {row["k"]: row for row in accuracy_curve(samples, [1, 2, 3, 6], draws=1000, bootstrap=10)}
    for k in (1, 2, 3, 6):
        assert subsets(6, k, 1000, 0) == [list(c) for c in itertools.combinations(range(6), k)] or k == 6
        brute = []
        for s in samples:  # every k-subset, voting with the library's own vote_sum
            credits = []
            for chosen in itertools.combinations(range(6), k):
                valid = [s.scores[i] for i in chosen if s.scores[i] is not None]
                votes = vote_sum(valid, s.n) if valid else None
                credits.append(expected_correct(votes, s.best, s.n))
            brute.append(sum(credits) / len(credits))
        assert curve[k]["accuracy"] == pytest.approx(sum(brute) / len(brute))
    assert curve[6]["accuracy"] >= curve[1]["accuracy"]  # voting helps on this noisy judge


# --- position bias ----------------------------------------------------------------------------------------------------


def test_position_bias_of_a_judge_that_prefers_the_first_slot():
    with SimulatedJudge(noise=0.0, position_bias=3.0, seed=0) as biased:
        bias = position_bias(GRMReward(base_url=biased.base_url, model="sim"), items_from_pairs(10, gap=1.0))
    assert bias["pairs"] == 10
    assert bias["accuracy_better_first"] == 1.0 and bias["accuracy_better_second"] == 0.0
    assert bias["flip_rate"] == 1.0
    with SimulatedJudge(noise=0.0, seed=0) as fair:
        bias = position_bias(GRMReward(base_url=fair.base_url, model="sim"), items_from_pairs(10, gap=1.0))
    assert bias["accuracy_better_first"] == bias["accuracy_better_second"] == 1.0 and bias["flip_rate"] == 0.0


# --- reports, resuming, loading ---------------------------------------------------------------------------------------


def test_run_writes_report_json_markdown_and_a_real_png(sim_judge, tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    report = run_eval(GRMReward(base_url=sim_judge.base_url, model="sim"), items_from_pairs(8), [1, 2, 4], tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["k"] == [1, 2, 4] and [r["k"] for r in saved["curve"]] == [1, 2, 4]
    assert saved["parse_valid_rate"] == 1.0 and saved["judge_tokens_per_item"] > 0 and saved["position_bias"]
    assert report["curve"][2]["accuracy"] == saved["curve"][2]["accuracy"] == 1.0  # noise 0: always right
    markdown = (tmp_path / "report.md").read_text()
    assert "| 4 | 1.000 |" in markdown and "| a |" in markdown and "Position bias" in markdown
    png = (tmp_path / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib_image.imread(str(tmp_path / "scaling.png")).shape
    assert width > 300 and height > 200


def test_an_interrupted_run_resumes_without_judging_finished_items_again(tmp_path):
    items = items_from_pairs(20)
    cache = tmp_path / "samples.jsonl"
    with SimulatedJudge(noise=0.0, seed=0) as server:
        reward = GRMReward(base_url=server.base_url, model="sim", k=2, shuffle=False, max_retries=0)
        collect_samples(reward, items[:16], cache)  # a first run judged 16 items, then the engine failed
        server.state.settings.fail_next.extend([400] * 50)
        with pytest.raises(BackendError):
            collect_samples(reward, items, cache)
        assert len(cache.read_text().splitlines()) == 16
        server.state.settings.fail_next.clear()
        server.reset()
        samples = collect_samples(reward, items, cache)
        assert server.stats()["requests"] == 4  # only the 4 unfinished items (one request each, n=2)
    assert [s.id for s in samples] == [i.id for i in items] and all(len(s.scores) == 2 for s in samples)


def test_load_items_from_jsonl_parquet_and_rows_with_clear_errors(tmp_path):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "subset": "s"},
            {"prompt": "q2", "responses": ["x", "y", "z"], "best": 2}]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_preferences(str(path))
    assert [(i.responses, i.best, i.subset) for i in items] == [(["a", "b"], 0, "s"), (["x", "y", "z"], 2, "all")]
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([rows[0]]).to_parquet(str(tmp_path / "data.parquet"))
    assert load_preferences(str(tmp_path / "data.parquet"))[0].responses == ["a", "b"]
    with pytest.raises(InvalidRequestError, match="row 0 .*missing rejected"):
        load_preferences([{"prompt": "q", "chosen": "a"}])
    with pytest.raises(InvalidRequestError, match="row 0 .*best must be an index"):
        load_preferences([{"prompt": "q", "responses": ["a", "b"], "best": 5}])
    with pytest.raises(InvalidRequestError, match="expected pairwise columns"):
        load_preferences([{"question": "q"}])


def test_grm_eval_cli_on_the_shipped_smoke_set_with_the_simulated_judge(sim_judge, tmp_path):
    data = tmp_path / "quality.jsonl"
    with data.open("w") as handle:
        for item in items_from_pairs(6):
            better, worse = item.responses[item.best], item.responses[1 - item.best]
            handle.write(json.dumps({"prompt": item.prompt, "chosen": better, "rejected": worse}) + "\n")
    command = [sys.executable, "-m", "grm_plugin.cli", "eval", "--data", str(data), "--k", "1,2", "--out",
               str(tmp_path / "out"), "--base-url", sim_judge.base_url, "--model", "sim", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| 2 | 1.000 |" in result.stdout and (tmp_path / "out" / "scaling.png").is_file()
    smoke = subprocess.run(command[:5] + [str(SMOKE), "--limit", "4"] + command[6:] + ["--no-position-bias"],
                           capture_output=True, text=True, timeout=120)
    assert smoke.returncode == 0, smoke.stderr
    assert "# GRM evaluation: 4 items" in smoke.stdout
    bad = subprocess.run(command[:7] + ["0,x"] + command[8:], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--k" in bad.stderr


def test_smoke_set_has_four_subsets_of_25():
    items = load_preferences(str(SMOKE))
    counts = {}
    for item in items:
        counts[item.subset] = counts.get(item.subset, 0) + 1
    assert counts == {"chat": 25, "math": 25, "safety": 25, "instruction": 25}
    assert all(item.reference for item in items if item.subset == "math")
