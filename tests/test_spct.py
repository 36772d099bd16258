"""SPCT: Eq. 10/11 on hand-made cases, preference loaders and the synthetic verifiable generator, rejective fine-tuning
data (filtering, hinted sampling) and meta RM labels sampled from the simulated judge (an OpenAI-compatible HTTP server
standing in for a language model), and a 2-step run of each training stage (SFT, GRPO with the rule reward, the meta
RM) with a tiny random model on the CPU."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest

from grm_plugin import GRMReward, ScoreRequest
from grm_plugin.errors import InvalidRequestError
from grm_plugin.parsing import parse_judgement
from grm_plugin.preferences import PreferenceItem, load_preferences, synthetic_preferences, write_preferences
from grm_plugin.spct import (
    HINT,
    SPCTRuleReward,
    build_meta_dataset,
    build_rft_dataset,
    build_rl_dataset,
    judgement_correct,
    rule_reward,
)
from grm_plugin.templates import render_judgement
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality

# --- Eq. 10 and Eq. 11 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scores, best, labels, correct", [
    ([6], None, [6], True),            # n = 1: the score equals the label
    ([7], None, [6], False),
    ([1], None, [1], True),
    ([8, 3], 0, None, True),           # n = 2: strictly highest
    ([3, 8], 0, None, False),
    ([5, 5], 0, None, False),          # a tie is not correct
    ([5, 5], 1, None, False),
    ([2, 9, 4, 8], 1, None, True),     # n = 4
    ([2, 9, 4, 9], 1, None, False),    # the best ties with another at the top
    ([9, 9, 9, 9], 3, None, False),
    ([1, 2, 3, 4], 3, None, True),
    ([4, 6, 9, 1], None, [2, 5, 9, 0], True),   # per-response labels: best = the strictly highest label
    ([9, 6, 4, 1], None, [2, 5, 9, 0], False),
    (None, 0, None, False),            # invalid output (did not parse)
    (None, None, [5], False),
])
def test_eq10_correctness_and_eq11_reward_on_hand_made_cases(scores, best, labels, correct):
    assert judgement_correct(scores, best=best, labels=labels) is correct
    assert rule_reward(scores, best=best, labels=labels) == (1.0 if correct else -1.0)


def test_eq10_rejects_inconsistent_labels():
    with pytest.raises(ValueError, match="no single best"):
        judgement_correct([5, 4], labels=[3, 3])
    with pytest.raises(ValueError, match="labels: expected 2"):
        judgement_correct([5, 4], labels=[3])
    with pytest.raises(ValueError, match="best=1 disagrees"):
        judgement_correct([5, 4], best=1, labels=[9, 3])
    with pytest.raises(ValueError, match="single response needs labels"):
        judgement_correct([5], best=0)
    with pytest.raises(ValueError, match="best: expected an index"):
        judgement_correct([5, 4], best=2)


def test_rule_reward_parses_the_judges_own_generations_and_undoes_the_shown_order():
    reward = SPCTRuleReward()
    right = render_judgement("Accuracy (100%)", "Response 2 is right.", [3, 8])  # shown order [1, 0]
    wrong = render_judgement("Accuracy (100%)", "Response 1 is right.", [8, 3])
    tie = render_judgement("Accuracy", "Both fine.", [6, 6])
    metrics: dict[str, float] = {}
    rewards = reward(prompts=["p"] * 4,
                     completions=[[{"role": "assistant", "content": right}], wrong, tie, "no scores here"],
                     best=[0, 0, 0, 0], n_responses=[2, 2, 2, 2], order=[[1, 0]] * 4,
                     log_metric=lambda name, value: metrics.__setitem__(name, value))
    assert rewards == [1.0, -1.0, -1.0, -1.0]
    assert metrics == {"spct_rule/accuracy": 0.25, "spct_rule/parse_valid_rate": 0.75}
    single = reward(prompts=["p", "p"], completions=["Analysis: ok\nScores: \\boxed{1}", "Scores: \\boxed{0}"],
                    labels=[[1], [1]])
    assert single == [1.0, -1.0]


def test_rule_reward_names_the_missing_columns():
    reward = SPCTRuleReward()
    with pytest.raises(InvalidRequestError, match="'best' or 'labels'"):
        reward(prompts=["p"], completions=["x"])
    with pytest.raises(InvalidRequestError, match="n_responses"):
        reward(prompts=["p"], completions=["x"], best=[0])
    result = reward.score([{"prompt": "judge prompt", "responses": [render_judgement("a", "b", [2, 7]), "junk"],
                            "metadata": {"best": 1, "n_responses": 2}}])[0]
    assert result.rewards == [1.0, -1.0] and result.valid_samples == 1


# --- preference data ------------------------------------------------------------------------------------------------


def test_load_preferences_pairwise_multi_and_labels_from_jsonl_and_parquet(tmp_path):
    rows = [{"prompt": "q1", "chosen": "a", "rejected": "b", "subset": "chat"},
            {"prompt": "q2", "responses": ["x", "y", "z"], "best": 2},
            {"prompt": "q3", "responses": ["x", "y", "z"], "labels": [1, 7, 3]},
            {"prompt": "q4", "responses": ["only"], "label": 1}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_preferences(str(path))
    assert [(i.responses, i.best, i.labels) for i in items] == [
        (["a", "b"], 0, None), (["x", "y", "z"], 2, None), (["x", "y", "z"], 1, [1, 7, 3]), (["only"], 0, [1])]
    assert items[0].subset == "chat"
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([rows[2]]).to_parquet(str(tmp_path / "p.parquet"))
    assert [(i.best, i.labels) for i in load_preferences(str(tmp_path / "p.parquet"))] == [(1, [1, 7, 3])]
    datasets.Dataset.from_list([rows[0]]).save_to_disk(str(tmp_path / "saved"))
    assert load_preferences(str(tmp_path / "saved"))[0].responses == ["a", "b"]
    for bad, message in [({"prompt": "q", "responses": ["x", "y"], "labels": [3, 3]}, "no single best"),
                         ({"prompt": "q", "responses": ["x", "y"], "labels": [3]}, "labels must be a list of 2"),
                         ({"prompt": "q", "responses": ["x"]}, "single response needs its label"),
                         ({"prompt": "q", "responses": ["x", "y"], "best": 1, "labels": [5, 1]}, "disagrees"),
                         ({"responses": ["x", "y"], "best": 0}, "missing prompt")]:
        with pytest.raises(InvalidRequestError, match=f"row 0 .*{message}"):
            load_preferences([bad])


def _check(item: PreferenceItem) -> str:
    """Recompute the right answer from the prompt (a verifier independent of the generator)."""
    prompt = item.prompt
    if item.subset == "arithmetic":
        a, op, b = re.match(r"What is (\d+) (.) (\d+)\?", prompt).groups()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
        return f"= {value}."
    if item.subset == "unit_conversion":
        amount, source, target = re.match(r"Convert ([\d.]+) (\w+) to (\w+)\.", prompt).groups()
        factor = {("kilometers", "meters"): 1000, ("meters", "centimeters"): 100, ("hours", "minutes"): 60,
                  ("kilograms", "grams"): 1000, ("minutes", "seconds"): 60, ("liters", "milliliters"): 1000,
                  ("days", "hours"): 24, ("feet", "inches"): 12}[(source, target)]
        return f"is {float(amount) * factor:g} {target}."
    word = re.search(r"'(\w+)'", prompt).group(1) if "'" in prompt else ""
    if prompt.startswith("Reverse the string"):
        return "'" + word[::-1] + "'."
    if prompt.startswith("How many vowels"):
        return f"has {sum(c in 'aeiou' for c in word)} vowels."
    if prompt.startswith("Sort the letters"):
        return "Sorted: " + "".join(sorted(word))
    if prompt.startswith("Write the word"):
        return word.upper()
    if prompt.startswith("List exactly"):
        count = int(re.search(r"exactly (\d+)", prompt).group(1))
        return f"json:{count}"
    if prompt.startswith("Write the letter"):
        letter, count = re.search(r"letter (\w) exactly (\d+)", prompt).groups()
        return ", ".join([letter] * int(count))
    return word


def _passes(response: str, expected: str) -> bool:
    if expected.startswith("json:"):
        try:
            value = json.loads(response)
        except json.JSONDecodeError:
            return False
        return isinstance(value, list) and len(value) == int(expected[5:]) and all(isinstance(v, str) for v in value)
    if expected.endswith(".") or expected.startswith("'"):
        return response.endswith(expected)
    return response == expected


def test_synthetic_items_are_verifiable_deterministic_and_balanced(tmp_path):
    items = synthetic_preferences(200, seed=5)
    assert items == synthetic_preferences(200, seed=5)
    assert [i.prompt for i in items] != [i.prompt for i in synthetic_preferences(200, seed=6)]
    assert {i.subset for i in items} == {"arithmetic", "unit_conversion", "string_manipulation", "instruction_format"}
    assert {len(i.responses) for i in items} == {2, 3, 4}
    positions = [i.best for i in items]
    assert all(positions.count(slot) > 15 for slot in range(2))  # the right answer is not always first
    for item in items:
        expected = _check(item)
        passing = [j for j, response in enumerate(item.responses) if _passes(response, expected)]
        assert passing == [item.best], (item.prompt, item.responses, item.best)
    write_preferences(items[:5], tmp_path / "syn.jsonl")
    assert load_preferences(str(tmp_path / "syn.jsonl")) == items[:5]
    with pytest.raises(ValueError, match="kinds: unknown"):
        synthetic_preferences(1, kinds=["poetry"])


# --- rejective fine-tuning data from the simulated judge -------------------------------------------------------------


def quality_items(n: int, gap: float = 1.0) -> list[PreferenceItem]:
    """Items whose best response is better by ``gap`` hidden quality points (read by the simulated judge)."""
    items = []
    for i in range(n):
        best = i % 3
        responses = [with_quality(f"answer {i}.{j}", 5.0 + (gap if j == best else 0.0)) for j in range(3)]
        items.append(PreferenceItem(f"q{i}", f"question {i}", responses, best))
    return items


@pytest.fixture()
def noisy_judge():
    with SimulatedJudge(noise=1.2, seed=3) as server:
        yield server


def test_rft_keeps_only_correct_judgements_and_drops_too_easy_items_with_the_simulated_judge(noisy_judge):
    items = quality_items(30)
    grm = GRMReward(base_url=noisy_judge.base_url, model="sim")
    rows, stats = build_rft_dataset(grm, items, n_rft=3)
    bodies = noisy_judge.state.bodies
    assert sum(body.get("n", 1) for body in bodies) == 90  # N_RFT = 3 samples per item
    assert stats.items == 30 and stats.samples == 90 and stats.valid_samples == 90
    assert stats.too_easy_items + stats.all_wrong_items < 30  # some items are kept
    assert 0 < stats.too_easy_items and 0 < stats.all_wrong_items  # the noise makes both kinds
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["id"], []).append(row)
    assert stats.rows == len(rows) == stats.correct_samples - 3 * stats.too_easy_items
    for item in items:
        kept = by_item.get(item.id, [])
        assert len(kept) <= 2  # an item whose 3 samples were all correct is too easy and dropped
        for row in kept:
            text = row["completion"][0]["content"]
            shown = parse_judgement(text, 3).scores
            scores = [0] * 3
            for slot, index in enumerate(row["order"]):
                scores[index] = shown[slot]
            assert judgement_correct(scores, best=item.best)
            assert row["completion"][0]["role"] == "assistant" and not row["hinted"]
            # the stored prompt is the judge prompt that produced the judgement (same order of responses)
            user = row["prompt"][-1]["content"]
            positions = [user.index(item.responses[index]) for index in row["order"]]
            assert positions == sorted(positions)
    assert stats.accept_rate == stats.correct_samples / 90


def test_hinted_sampling_names_the_best_slot_and_keeps_no_hint_in_the_stored_prompt(noisy_judge):
    items = quality_items(30, gap=0.5)
    grm = GRMReward(base_url=noisy_judge.base_url, model="sim")
    rows, stats = build_rft_dataset(grm, items, n_rft=3, hinted=True)
    hinted_bodies = [b for b in noisy_judge.state.bodies if "The best response is: Response" in
                     b["messages"][-1]["content"]]
    assert stats.hinted_attempts == stats.all_wrong_items == len(hinted_bodies) > 0
    for body in hinted_bodies:  # the hint names the slot where the item's best response is shown
        content = body["messages"][-1]["content"]
        slot = int(re.search(r"The best response is: Response (\d+)$", content).group(1))
        shown = re.findall(r"\[The Begin of Response \d+\]\n(answer (\d+)\.(\d+))", content)
        item = items[int(shown[0][1])]
        assert int(shown[slot - 1][2]) == item.best
        assert HINT.format(slot=slot) in content
    with pytest.raises(InvalidRequestError, match="order: expected a permutation of 0..2"):
        asyncio.run(grm.asample(ScoreRequest(prompt="q", responses=items[0].responses), [0, 0, 1]))
    hinted_rows = [row for row in rows if row["hinted"]]
    assert len(hinted_rows) == stats.hinted_rows and stats.hinted_share == len(hinted_rows) / len(rows)
    for row in hinted_rows:
        assert "The best response is" not in row["prompt"][-1]["content"]


def test_rl_rows_and_meta_labels_agree_with_eq10(noisy_judge):
    items = quality_items(6)
    rows = build_rl_dataset(items, seed=0)
    assert [r["best"] for r in rows] == [i.best for i in items] and all(r["n_responses"] == 3 for r in rows)
    for row, item in zip(rows, items):  # the prompt shows the responses in the row's order
        user = row["prompt"][-1]["content"]
        assert [user.index(item.responses[index]) for index in row["order"]] == sorted(
            user.index(r) for r in item.responses)
    grm = GRMReward(base_url=noisy_judge.base_url, model="sim")
    meta_rows = build_meta_dataset(grm, items, k=4)
    assert len(meta_rows) == 24 and {r["label"] for r in meta_rows} == {0.0, 1.0}
    assert all(r["text"].startswith("Please score the responses.") for r in meta_rows)


# --- the training stages, 2 steps each with a tiny model on the CPU ---------------------------------------------------

trl = pytest.importorskip("trl")


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_sft_grpo_and_meta_rm_stages_two_steps_each_with_a_tiny_model(noisy_judge, tiny_policy_dir, tmp_path):
    from grm_plugin.meta_rm import TransformersMetaRM
    from grm_plugin.spct import train_meta_rm, train_rl, train_sft

    items = quality_items(12)
    grm = GRMReward(base_url=noisy_judge.base_url, model="sim")
    rows, _ = build_rft_dataset(grm, items)
    sft = train_sft(tiny_policy_dir, rows, tmp_path / "sft", max_steps=2, batch_size=2, learning_rate=1e-3,
                    max_length=1024, logging_steps=1, gradient_checkpointing=False)
    assert (tmp_path / "sft" / "config.json").exists() and (tmp_path / "sft" / "tokenizer.json").exists()

    rl = train_rl(sft, build_rl_dataset(items), tmp_path / "rl", max_steps=2, batch_size=4, num_generations=4,
                  max_completion_length=8, learning_rate=1e-4, logging_steps=1, gradient_checkpointing=False)
    assert (tmp_path / "rl" / "config.json").exists()

    meta_rows = build_meta_dataset(grm, items, k=2)
    meta = train_meta_rm(rl, meta_rows, tmp_path / "meta", max_steps=2, batch_size=4, max_length=512,
                         logging_steps=1)
    import transformers

    # GRPO saves a left-padding tokenizer; the meta RM trains and rates right-padded (no fully masked rows)
    assert transformers.AutoTokenizer.from_pretrained(rl).padding_side == "left"
    assert transformers.AutoTokenizer.from_pretrained(meta).padding_side == "right"
    rater = TransformersMetaRM(meta, device="cpu")
    assert rater.model.config.num_labels == 1
    guided = GRMReward(base_url=noisy_judge.base_url, model="sim", k=4, meta_rm=rater, cache_size=0)
    result = guided.score([{"prompt": "q", "responses": items[0].responses}])[0]
    assert result.voted_samples == 2 and len(result.meta_kept) == 2
    assert all(j.meta_score is not None for j in result.judgements)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_grpo_logs_the_rule_reward_through_the_real_trainer(tiny_policy_dir, tmp_path):
    items = quality_items(4)
    args = trl.GRPOConfig(output_dir=str(tmp_path), max_steps=2, logging_steps=1, report_to="none", use_cpu=True,
                          save_strategy="no", per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=6, seed=0, gradient_checkpointing=False)
    import datasets

    trainer = trl.GRPOTrainer(model=tiny_policy_dir, reward_funcs=[SPCTRuleReward()], args=args,
                              train_dataset=datasets.Dataset.from_list(build_rl_dataset(items)))
    trainer.train()
    means = [e["rewards/spct_rule/mean"] for e in trainer.state.log_history if "rewards/spct_rule/mean" in e]
    assert len(means) == 2 and all(m == -1.0 for m in means)  # 6 random tokens never hold a valid verdict
    assert [e["spct_rule/parse_valid_rate"] for e in trainer.state.log_history
            if "spct_rule/parse_valid_rate" in e] == [0.0, 0.0]


# --- the CLI ---------------------------------------------------------------------------------------------------------


def test_grm_spct_cli_synth_then_rft_and_meta_data_with_the_simulated_judge(noisy_judge, tmp_path):
    grm = [sys.executable, "-m", "grm_plugin.cli", "spct"]
    made = subprocess.run(grm + ["synth", "--out", str(tmp_path / "syn.jsonl"), "--n", "12", "--seed", "4"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert len(load_preferences(str(tmp_path / "syn.jsonl"))) == 12
    rft = subprocess.run(grm + ["rft", "--data", str(tmp_path / "syn.jsonl"), "--out", str(tmp_path / "rft"),
                                "--no-train", "--base-url", noisy_judge.base_url, "--model", "sim", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert rft.returncode == 0, rft.stderr
    stats = json.loads((tmp_path / "rft" / "stats.json").read_text())
    assert stats["items"] == 12 and stats["samples"] == 36
    assert len((tmp_path / "rft" / "rft.jsonl").read_text().splitlines()) == stats["rows"]
    bad = subprocess.run(grm + ["rft", "--data", str(tmp_path / "missing.jsonl"), "--base-url",
                                noisy_judge.base_url, "--model", "sim"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--data" in bad.stderr
    served = subprocess.run(grm + ["rft", "--data", str(tmp_path / "syn.jsonl"), "--out", str(tmp_path / "x"),
                                   "--base-url", noisy_judge.base_url, "--model", "sim"],
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 2 and "--policy" in served.stderr


@pytest.mark.usefixtures("one_torch_thread")
def test_a_diverging_meta_rm_run_stops_with_a_clear_error_instead_of_saving_a_nan_model(tiny_policy_dir, tmp_path):
    from grm_plugin.spct import train_meta_rm
    from grm_plugin.spct.train import TrainingDiverged

    rows = [{"text": f"Please score the responses. sample {i} " + "word " * i, "label": float(i % 2)}
            for i in range(8)]
    with pytest.raises(TrainingDiverged, match="training diverged at step .*grad_norm"):
        train_meta_rm(tiny_policy_dir, rows, tmp_path / "meta", max_steps=6, batch_size=4, learning_rate=1e30,
                      logging_steps=1)
    assert not (tmp_path / "meta" / "config.json").exists()
