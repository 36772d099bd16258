"""verl adapter with verl 0.9.1's own reward loop on CPU: the real Hydra ``ppo_trainer`` config, a local Ray with 2
CPUs, the real ``RewardLoopManager`` and its ``RewardLoopWorker`` actors, with verl's ``naive`` manager calling our
``compute_score`` and with our entry-point manager ``grm``; the judge is the simulated judge (an OpenAI-compatible
HTTP server standing in for a language model). The worker actors are fresh processes that only ``import verl``: the
``grm`` manager reaches them through the ``verl.plugins`` entry point."""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")
pytest.importorskip("hydra")
verl = pytest.importorskip("verl")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop import RewardLoopManager  # noqa: E402

from grm_plugin.adapters.verl import EXTRA_KEYS, compute_score  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402

pytestmark = pytest.mark.slow

KEYS = {"score", *EXTRA_KEYS}
QUESTIONS = ["What is 2 + 3?", "Name the capital of France."]


@pytest.fixture(scope="module")
def judge():
    with SimulatedJudge(noise=0.0, seed=0) as server:
        yield server


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tokenizer(smol_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_tokenizer_dir)


def ppo_config(policy_dir, *overrides: str):
    """verl's real ``ppo_trainer`` config composed by Hydra, with the reward settings of a test."""
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name="ppo_trainer", overrides=[f"actor_rollout_ref.model.path={policy_dir}",
                                                             "reward.num_workers=1", *overrides])


def judge_kwargs(judge, **extra) -> list[str]:
    settings = {"base_url": judge.base_url, "model": "sim", "k": 2, "cache_size": 0, **extra}
    return [f"+reward.custom_reward_function.reward_kwargs.{key}={value}" for key, value in settings.items()]


def batch(tokenizer, rows, extra_info=True, raw_prompt=None) -> DataProto:
    """A rollout batch as verl's agent loop hands it to the reward loop: left-padded prompts, right-padded
    responses, one attention mask over both; ``rows`` are (question, response text, ground truth)."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q, _, _ in rows]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                    for _, r, _ in rows]
    plen, rlen = max(map(len, prompt_ids)), max(map(len, response_ids)) + 3
    pad = tokenizer.pad_token_id
    prompt_t = torch.tensor([[pad] * (plen - len(p)) + p for p in prompt_ids])
    response_t = torch.tensor([r + [pad] * (rlen - len(r)) for r in response_ids])
    mask = torch.tensor([[0] * (plen - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (rlen - len(r))
                         for p, r in zip(prompt_ids, response_ids)])
    non_tensors = {
        "data_source": np.array(["test"] * len(rows), dtype=object),
        "reward_model": np.array([{"ground_truth": gt, "style": "model"} for _, _, gt in rows], dtype=object),
        "extra_info": np.array([{"question": q} if extra_info else {"index": i}
                                for i, (q, _, _) in enumerate(rows)], dtype=object),
    }
    if raw_prompt is not None:  # per row: the chat messages or None (a 1-d object array, as verl's dataset makes)
        non_tensors["raw_prompt"] = np.empty(len(rows), dtype=object)
        for i, messages in enumerate(raw_prompt):
            non_tensors["raw_prompt"][i] = messages
    return DataProto.from_dict(tensors={"prompts": prompt_t, "responses": response_t,
                                        "input_ids": torch.cat([prompt_t, response_t], dim=1),
                                        "attention_mask": mask}, non_tensors=non_tensors)


def last_token_scores(data: DataProto, rm_scores: torch.Tensor) -> list[float]:
    """The score on each response's last valid token, after checking every other position is zero."""
    plen = data.batch["prompts"].shape[1]
    lengths = data.batch["attention_mask"][:, plen:].sum(dim=1)
    scores = []
    for row, length in enumerate(lengths.tolist()):
        assert torch.count_nonzero(rm_scores[row, :length - 1]) == 0
        assert torch.count_nonzero(rm_scores[row, length:]) == 0
        scores.append(float(rm_scores[row, length - 1]))
    return scores


def judge_prompts(server) -> list[str]:
    return [body["messages"][-1]["content"] for body in server.state.bodies]


class RewardLoops:
    """One live RewardLoopManager at a time: its worker actors have fixed names (reward_loop_worker_<i>), so the
    previous manager's actors are killed before another manager starts."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.manager: RewardLoopManager | None = None

    def get(self, key: str, config) -> RewardLoopManager:
        if key != self.key:
            self.close()
            self.manager, self.key = RewardLoopManager(config), key
        return self.manager

    def close(self) -> None:
        if self.manager is None:
            return
        workers, self.manager, self.key = self.manager.reward_loop_workers, None, None
        for worker in workers:
            ray.kill(worker)
        deadline = time.monotonic() + 30
        for i in range(len(workers)):
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(f"reward_loop_worker_{i}")
                except ValueError:
                    break
                time.sleep(0.1)


@pytest.fixture(scope="module")
def reward_loops(local_ray):
    loops = RewardLoops()
    yield loops
    loops.close()


ROWS = [(QUESTIONS[0], with_quality("5", 9), "the sum is five"),
        (QUESTIONS[0], with_quality("It is six.", 2), "the sum is five"),
        (QUESTIONS[1], with_quality("Paris", 8), "Paris"), (QUESTIONS[1], with_quality("Lyon, I think.", 3), "Paris")]


# --- verl's naive manager with our compute_score --------------------------------------------------------------------


@pytest.fixture
def naive_manager(reward_loops, smol_tokenizer_dir, judge):
    config = ppo_config(smol_tokenizer_dir, "reward.custom_reward_function.path=pkg://grm_plugin.adapters.verl",
                        "reward.custom_reward_function.name=compute_score", *judge_kwargs(judge))
    assert config.reward.reward_manager.name == "naive"
    return reward_loops.get("naive", config)


def test_naive_manager_with_compute_score_scores_the_last_valid_token_simulated_judge(naive_manager, tokenizer,
                                                                                       judge):
    judge.reset()
    data = batch(tokenizer, ROWS)
    out = naive_manager.compute_rm_score(data)
    assert last_token_scores(data, out.batch["rm_scores"]) == [9.0, 2.0, 8.0, 3.0]
    assert set(out.meta_info["reward_extra_keys"]) == KEYS
    assert out.non_tensor_batch["grm_valid_samples"].tolist() == [2.0] * 4  # k=2 from reward_kwargs
    assert out.non_tensor_batch["grm_mean_score"].tolist() == [9.0, 2.0, 8.0, 3.0]
    assert out.non_tensor_batch["grm_failed"].tolist() == [0.0] * 4
    prompts = judge_prompts(judge)
    assert len(prompts) == 4 and not any("[The Begin of Response 2]" in p for p in prompts)  # each judged alone
    assert sum(QUESTIONS[0] in p and "the sum is five" in p for p in prompts) == 2  # the question, ground truth


def test_a_judge_failure_on_one_sample_does_not_crash_the_step_simulated_judge(naive_manager, tokenizer, judge):
    judge.state.settings.fail_next[:] = [400]  # the next judge request fails (a 4xx is not retried)
    data = batch(tokenizer, ROWS)
    out = naive_manager.compute_rm_score(data)
    failed = out.non_tensor_batch["grm_failed"].tolist()
    assert sorted(failed) == [0.0, 0.0, 0.0, 1.0]
    scores = last_token_scores(data, out.batch["rm_scores"])
    expected = [9.0, 2.0, 8.0, 3.0]
    assert [5.5 if f else e for f, e in zip(failed, expected)] == scores  # the middle of 1..10 for the failed one
    assert set(out.meta_info["reward_extra_keys"]) == KEYS
    assert [v for v, f in zip(out.non_tensor_batch["grm_valid_samples"].tolist(), failed) if f] == [0.0]


# --- our entry-point manager `grm` ----------------------------------------------------------------------------------


def test_grm_manager_from_the_entry_point_judges_a_prompts_responses_together_simulated_judge(
        reward_loops, smol_tokenizer_dir, tokenizer, judge):
    [entry] = [ep for ep in entry_points(group="verl.plugins") if ep.name == "grm"]
    assert entry.value == "grm_plugin.adapters.verl"
    judge.reset()
    config = ppo_config(smol_tokenizer_dir, "reward.reward_manager.name=grm", *judge_kwargs(judge, batch_window_ms=200))
    assert config.reward.custom_reward_function.path is None  # verl calls the manager itself
    # The first prompt's samples carry the chat as raw_prompt only, the second's nothing: its prompt is decoded.
    chat = [{"role": "user", "content": QUESTIONS[0]}]
    data = batch(tokenizer, ROWS, extra_info=False, raw_prompt=[chat, chat, None, None])
    out = reward_loops.get("grm", config).compute_rm_score(data)  # one worker: both prompts in one window
    assert last_token_scores(data, out.batch["rm_scores"]) == [9.0, 2.0, 8.0, 3.0]
    assert set(out.meta_info["reward_extra_keys"]) == KEYS
    assert out.non_tensor_batch["grm_group_size"].tolist() == [2.0] * 4
    prompts = judge_prompts(judge)
    assert prompts and all("[The Begin of Response 2]" in p for p in prompts)  # both responses in one prompt
    assert any(QUESTIONS[0] in p for p in prompts) and any(QUESTIONS[1] in p for p in prompts)
    assert judge.stats()["completions"] == 2 * 2  # k=2 per prompt, not per sample
    # Streaming rewards (verl's agent loop sends each finished rollout to a reward worker's compute_score):
    # rollouts that reach the worker within the window are judged together as well.
    judge.reset()
    [worker] = reward_loops.manager.reward_loop_workers
    streamed = ray.get([worker.compute_score.remote(data[i:i + 1]) for i in range(len(data))])
    assert [r["reward_score"] for r in streamed] == [9.0, 2.0, 8.0, 3.0]
    assert all(set(r["reward_extra_info"]) == KEYS for r in streamed)
    assert judge.stats()["completions"] == 2 * 2


# --- compute_score called directly (what verl's naive manager does, in-process) -------------------------------------


def call(**kwargs):
    kwargs = {"data_source": "test", "solution_str": with_quality("5", 7), "ground_truth": "5",
              "extra_info": {"question": QUESTIONS[0]}, **kwargs}
    return asyncio.run(compute_score(**kwargs))


def test_compute_score_times_out_with_the_same_keys_simulated_judge(judge):
    judge.state.settings.delay_s = 2.0
    try:
        started = time.monotonic()
        result = call(base_url=judge.base_url, model="sim", cache_size=0, timeout_s=0.3, invalid_reward=0.0)
        assert time.monotonic() - started < 1.5
    finally:
        judge.state.settings.delay_s = 0.0
    assert set(result) == KEYS
    assert result["score"] == 0.0 and result["grm_failed"] == 1.0 and result["grm_valid_samples"] == 0.0
    assert result["grm_mean_score"] == -1.0


def test_compute_score_reads_the_config_file_and_env_and_reward_kwargs_win_simulated_judge(judge, tmp_path,
                                                                                          monkeypatch):
    config_file = tmp_path / "grm.yaml"
    config_file.write_text(f"base_url: {judge.base_url}\nmodel: sim\nk: 3\ncache_size: 0\n")
    monkeypatch.setenv("GRM_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("GRM_VERL_PROMPT_KEYS", '["task"]')
    from_file = call(extra_info={"task": QUESTIONS[0]})
    assert from_file["grm_samples"] == 3.0 and from_file["score"] == 7.0
    judge.reset()
    overridden = call(extra_info={"task": QUESTIONS[0]}, k=1, ground_truth="the sum is five")
    assert overridden["grm_samples"] == 1.0 and set(overridden) == KEYS
    assert "the sum is five" in judge_prompts(judge)[-1]
    call(extra_info={"task": QUESTIONS[0]}, ground_truth="the sum is five", ground_truth_as_reference=False)
    assert "the sum is five" not in judge_prompts(judge)[-1]


def test_compute_score_uses_the_reward_router_address_verl_passes_simulated_judge(judge, monkeypatch):
    judge.reset()
    monkeypatch.setenv("GRM_BASE_URL", "http://127.0.0.1:9/v1")  # replaced by the address of verl's judge
    served = SimpleNamespace(name_or_path="/models/DeepSeek-GRM-27B")  # verl's reward model tokenizer
    result = call(reward_router_address=f"127.0.0.1:{judge.port}", reward_model_tokenizer=served, cache_size=0)
    assert result["grm_failed"] == 0.0 and result["score"] == 7.0
    assert judge.state.bodies[-1]["model"] == "/models/DeepSeek-GRM-27B"


def test_compute_score_never_raises_without_prompt_or_with_a_bad_setting_and_logs_once(caplog):
    no_prompt = [call(base_url="http://127.0.0.1:9/v1", model="sim", extra_info={"index": i}) for i in range(3)]
    bad_setting = call(base_url="http://127.0.0.1:9/v1", model="sim", k=0)
    for result in (*no_prompt, bad_setting):
        assert set(result) == KEYS and result["grm_failed"] == 1.0 and result["score"] == 5.5
    logged = [r.getMessage() for r in caplog.records if r.name == "grm_plugin.adapters.verl"]
    assert sum("no prompt in extra_info" in m for m in logged) == 1 and sum("k:" in m for m in logged) == 1
