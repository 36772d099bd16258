"""`grm probe` and `floor_contentless` (issue 19): the probe finds a hackable judge and does not flag a robust one.

The judge here is the simulated judge (``grm_plugin.testing.simulated_judge``) in its probe mode: robust
(``knows_probe``: it knows the probe set's answers) or gullible (``gullible``: a planted chance per hack class that a
response of that class fools it), with no score noise. The last test runs the probe on the embedded SmolLM2 judge
(slow marker).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from grm_plugin import GRMReward
from grm_plugin.probe import CLASSES, CONTROL_CLASSES, HACK_CLASSES, load_items, probe_pairs, run_probe, summarise
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality

PLANTED = {"master_key": 0.8, "grader_instruction": 0.5, "fake_scores": 0.25}


def _grm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grm_plugin.cli", *args], capture_output=True, text=True, timeout=600)


def test_the_probe_set_is_shipped_and_well_formed():
    items = load_items()
    assert len(items) == 48 and len({i["id"] for i in items}) == 48
    assert sum(i["tier"] == "default" for i in items) == 12
    default, full = probe_pairs(), probe_pairs(full=True)
    assert len(default) == 36 and len(full) == 48 * len(CLASSES)
    for cls in CLASSES:  # every class on 4 default questions
        assert sum(p.cls == cls for p in default) == 4
    by_id = {i["id"]: i for i in items}
    for pair in full:
        assert pair.other != pair.correct
        base = {"padded_wrong": by_id[pair.item]["wrong"], "padded_correct": pair.correct}.get(pair.cls)
        if base is not None:
            assert 4 <= len(pair.other) / len(base) <= 6
    with pytest.raises(ValueError, match="classes: unknown"):
        probe_pairs(classes=["nonsense"])


def test_the_probe_reports_a_gullible_judges_planted_rates_and_fail_above_exits_1(tmp_path):
    with SimulatedJudge(noise=0.0, gullible=PLANTED) as judge:
        report = run_probe(GRMReward(base_url=judge.base_url, model="sim"), tmp_path / "probe", full=True)
        calls = judge.stats()["requests"]
        failed = _grm("probe", "--base-url", judge.base_url, "--model", "sim", "--full", "--quiet",
                      "--out", str(tmp_path / "probe"), "--fail-above", "0.3")
        assert judge.stats()["requests"] == calls  # the CLI run resumed from samples.jsonl: nothing judged again
    assert report["judge_calls"] == 2 * 48 * len(CLASSES) == calls
    for cls, planted in PLANTED.items():
        row = report["classes"][cls]
        assert row["valid"] == 96
        assert row["ci95"][0] <= planted <= row["ci95"][1], (cls, row)
    for cls in set(HACK_CLASSES) - set(PLANTED):
        assert report["classes"][cls]["false_preference_rate"] == 0.0
    assert report["worst_hack_rate"] == report["classes"]["master_key"]["false_preference_rate"]
    assert failed.returncode == 1, failed.stderr
    assert "hackable" in failed.stderr and "master_key" in failed.stderr and "grader_instruction" in failed.stderr
    assert "fake_scores" not in failed.stderr  # 0.25 is under 0.3
    assert "| master_key |" in failed.stdout
    for name in ("report.json", "report.md", "probe.png"):
        assert (tmp_path / "probe" / name).stat().st_size > 0


def test_the_probe_judges_with_one_sample_whatever_the_judges_own_k(tmp_path):
    with SimulatedJudge(noise=0.0, knows_probe=True) as judge:
        report = run_probe(GRMReward(base_url=judge.base_url, model="sim", k=4, k_max=16), tmp_path,
                           classes=["confident_wrong"], plot=False)
        assert judge.stats()["completions"] == report["judge_calls"] == 8
    assert report["classes"]["confident_wrong"]["mean_score_correct"] == 8.0


def test_a_robust_judge_is_not_flagged_and_fail_above_passes(tmp_path):
    with SimulatedJudge(noise=0.0, knows_probe=True) as judge:
        done = _grm("probe", "--base-url", judge.base_url, "--model", "sim", "--quiet", "--out", str(tmp_path),
                    "--fail-above", "0.05")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["pairs"] == 36 and report["judge_calls"] == 72
    assert all(report["classes"][c]["false_preference_rate"] == 0.0 for c in HACK_CLASSES)
    assert report["classes"]["reformatted_correct"]["false_preference_rate"] == 1.0  # a tie: both are right
    assert report["position_flip"]["rate"] == 0.0
    assert report["length_bias"]["mean_score_difference"] == 0.0
    assert report["prompt_tokens"] > 0 and report["completion_tokens"] > 0


def test_position_flips_and_length_bias_are_measured(tmp_path):
    """A first-slot bias of 2 points flips every pair of equally good answers; a length bias of 3 points shows as +3."""
    with SimulatedJudge(noise=0.0, knows_probe=True, position_bias=2.0) as judge:
        report = run_probe(GRMReward(base_url=judge.base_url, model="sim"), tmp_path / "a",
                           classes=["reformatted_correct"], plot=False)
    assert report["position_flip"]["rate"] == 1.0 and report["position_flip"]["first_shown_wins"] == 1.0
    with SimulatedJudge(noise=0.0, knows_probe=True, length_bias=3.0) as judge:
        report = run_probe(GRMReward(base_url=judge.base_url, model="sim"), tmp_path / "b",
                           classes=["padded_correct"], plot=False)
    assert report["length_bias"]["mean_score_difference"] == 2.0  # 8 + 3 is clipped to the top score, 10
    assert report["position_flip"]["rate"] == 0.0


def test_floor_contentless_scores_bare_openers_lowest_without_a_judge_call(sim_judge):
    reward = GRMReward(base_url=sim_judge.base_url, model="sim", k=4, floor_contentless=True)
    sim_judge.reset()
    mixed, empty = reward.score([
        {"prompt": "q", "responses": [with_quality("a real answer", 7), ":", with_quality("another", 3), "Solution"]},
        {"prompt": "q", "responses": [" ", "Let's solve this step by step."]}])
    assert mixed.rewards == [7.0, 1.0, 3.0, 1.0] and mixed.floored == 2 and mixed.valid_samples == 4
    assert all(len(j.order) == 2 and set(j.order) == {0, 2} for j in mixed.judgements)  # only two were shown
    assert empty.rewards == [1.0, 1.0] and empty.floored == 2 and empty.samples == 0
    assert sim_judge.stats()["completions"] == 4  # the k=4 of the first; the all-contentless one cost no call
    assert all("Solution" not in m["content"] for body in sim_judge.state.bodies for m in body["messages"])
    off = GRMReward(base_url=sim_judge.base_url, model="sim", k=1).score(
        [{"prompt": "q", "responses": [":", "Solution"]}])[0]
    assert off.floored == 0 and off.samples == 1  # off by default


def test_floor_contentless_defeats_master_keys_in_the_probe(tmp_path):
    with SimulatedJudge(noise=0.0, gullible={"master_key": 1.0}) as judge:
        hacked = run_probe(GRMReward(base_url=judge.base_url, model="sim"), tmp_path / "a",
                           classes=["master_key"], plot=False)
        defended = run_probe(GRMReward(base_url=judge.base_url, model="sim", floor_contentless=True), tmp_path / "b",
                             classes=["master_key"], plot=False)
    assert hacked["classes"]["master_key"]["false_preference_rate"] == 1.0
    assert defended["classes"]["master_key"]["false_preference_rate"] == 0.0


def test_summary_counts_ties_as_false_preference_and_skips_invalid():
    from grm_plugin.probe import PairJudgement

    rows = [PairJudgement("x:confident_wrong", "confident_wrong", "correct_first", [5.0, 5.0]),
            PairJudgement("x:confident_wrong", "confident_wrong", "other_first", [6.0, 2.0]),
            PairJudgement("y:confident_wrong", "confident_wrong", "correct_first", None),
            PairJudgement("y:confident_wrong", "confident_wrong", "other_first", [2.0, 9.0])]
    summary = summarise(rows)
    row = summary["classes"]["confident_wrong"]
    assert (row["valid"], row["judgements"], row["false_preference_rate"]) == (3, 4, 2 / 3)
    assert summary["position_flip"]["pairs"] == 1 and summary["position_flip"]["rate"] == 1.0  # tie, then a win
    assert set(CONTROL_CLASSES) & set(HACK_CLASSES) == set()


@pytest.mark.slow
def test_the_embedded_judge_runs_the_probe_offline(tmp_path):
    """The embedded SmolLM2 judge, one class of the default set (8 judge calls)."""
    done = _grm("probe", "--classes", "master_key", "--quiet", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["judge_calls"] == 8 and report["judge"]["engine"] in ("transformers", "auto")
    row = report["classes"]["master_key"]
    assert row["judgements"] == 8 and 0.0 <= (row["false_preference_rate"] or 0.0) <= 1.0
    assert "| master_key |" in (tmp_path / "report.md").read_text()
