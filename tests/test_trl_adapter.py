"""TRL adapter with the real trainers on CPU: GRPOTrainer, RLOOTrainer and OnlineDPOTrainer steps with a tiny random
policy, AsyncGRPO's scoring code in a spawned process; the judge is the simulated judge (an OpenAI-compatible HTTP
server standing in for a language model) or, where named, the embedded SmolLM2 judge."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import re
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from grm_plugin import GRMReward  # noqa: E402
from grm_plugin.adapters.trl import AsyncTRLReward, TRLReward, trl_reward  # noqa: E402
from grm_plugin.errors import BackendError  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
QUESTIONS = [("What is 2 + 3?", "5"), ("Name the capital of France.", "Paris"), ("What is 10 / 2?", "5"),
             ("Spell 'cat' backwards.", "tac")]


@pytest.fixture(scope="module")
def judge():
    with SimulatedJudge(noise=1.5, seed=0) as server:
        yield server


@pytest.fixture(scope="module")
def policy_dir(tiny_policy_dir):
    return tiny_policy_dir


def conversational_dataset():
    return datasets.Dataset.from_list([
        {"prompt": [SYSTEM, {"role": "user", "content": q}], "reference": a} for q, a in QUESTIONS])


def standard_dataset():
    return datasets.Dataset.from_list([{"prompt": q, "reference": a} for q, a in QUESTIONS])


def common_args(tmp_path, **extra):
    return {**dict(output_dir=str(tmp_path), max_steps=2, logging_steps=1, report_to="none", use_cpu=True,
                   save_strategy="no", learning_rate=1e-4, per_device_train_batch_size=4, seed=0), **extra}


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def judge_prompts(server) -> list[str]:
    return [body["messages"][-1]["content"] for body in server.state.bodies]


# --- GRPO ---------------------------------------------------------------------------------------------------------


def test_grpo_two_steps_conversational_with_reference_on_the_simulated_judge(tmp_path, policy_dir, judge):
    judge.reset()
    reward = GRMReward(base_url=judge.base_url, model="sim", k=2, cache_size=0)  # passed directly, as users do
    args = trl.GRPOConfig(**common_args(tmp_path, num_generations=4, max_completion_length=8, log_completions=True,
                                        num_completions_to_print=0))
    trainer = trl.GRPOTrainer(model=policy_dir, reward_funcs=[reward], args=args,
                              train_dataset=conversational_dataset())
    trainer.train()

    means = logged(trainer, "rewards/grm_reward/mean")
    assert len(means) == 2 and all(1.0 <= m <= 10.0 for m in means)
    assert logged(trainer, "grm_reward/parse_valid_rate") == [1.0, 1.0]
    assert all(v > 0 for v in logged(trainer, "grm_reward/judge_completion_tokens"))
    critiques = list(trainer._logs["extra"]["grm_reward_critique"])
    votes = list(trainer._logs["extra"]["grm_reward_votes"])
    assert len(critiques) == len(votes) == len(trainer._logs["prompt"]) > 0
    assert all(c.startswith("[this completion = Response ") for c in critiques)
    assert all("=" in v and len(v.split("=")[0].split("+")) == 2 for v in votes)  # k=2 votes each
    # group judging: the 4 completions of a prompt share one judge prompt (2 samples -> 2 prompts, shuffled),
    # and the dataset's reference column reached the judge
    prompts = judge_prompts(judge)
    assert prompts and all("[The Begin of Response 4]" in p and "[The Begin of Response 5]" not in p
                           for p in prompts)
    assert any("Paris" in p for p in prompts)


def test_grpo_with_the_async_variant_and_standard_prompts(tmp_path, policy_dir, judge):
    reward = trl_reward(base_url=judge.base_url, model="sim", k=1, asynchronous=True, name="judge")
    assert trl.trainer.utils.is_async_callable(reward)
    args = trl.GRPOConfig(**common_args(tmp_path, num_generations=2, max_completion_length=6, max_steps=1))
    trainer = trl.GRPOTrainer(model=policy_dir, reward_funcs=[reward], args=args, train_dataset=standard_dataset())
    trainer.train()
    assert len(logged(trainer, "rewards/judge/mean")) == 1
    assert logged(trainer, "judge/engine_errors") == [0.0]


# --- RLOO and OnlineDPO -------------------------------------------------------------------------------------------


def test_rloo_one_step_on_the_simulated_judge(tmp_path, policy_dir, judge):
    reward = TRLReward(GRMReward(base_url=judge.base_url, model="sim", k=1), name="grm")
    args = trl.RLOOConfig(**common_args(tmp_path, num_generations=2, max_completion_length=6, max_steps=1))
    trainer = trl.RLOOTrainer(model=policy_dir, reward_funcs=[reward], args=args,
                              train_dataset=conversational_dataset())
    trainer.train()
    [mean] = logged(trainer, "rewards/grm/mean")
    assert 1.0 <= mean <= 10.0


def test_online_dpo_one_step_judges_the_two_completions_of_a_prompt_together(tmp_path, policy_dir, judge):
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    judge.reset()
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(policy_dir)
    args = OnlineDPOConfig(**common_args(tmp_path, max_new_tokens=6, max_steps=1, per_device_train_batch_size=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = OnlineDPOTrainer(model=policy_dir, reward_funcs=[reward], args=args, processing_class=tokenizer,
                                   train_dataset=conversational_dataset())
        trainer.train()
    assert any("loss" in entry for entry in trainer.state.log_history)
    prompts = judge_prompts(judge)
    # OnlineDPO passes prompts as [p1, p2, p1, p2]: the two completions of each prompt still share a judge prompt
    assert len(prompts) == 2 and all("[The Begin of Response 2]" in p for p in prompts)


# --- AsyncGRPO: TRL's own scoring code in a spawned process ---------------------------------------------------------


def _score_in_spawned_child(blob: bytes, queue) -> None:
    """What AsyncGRPO's rollout worker does with reward functions in its spawned child: unpickle them and score a
    group through ``_AsyncRolloutLoop._score_group`` (TRL's code)."""
    try:
        import types

        from accelerate import PartialState
        from trl.experimental.async_grpo.async_rollout_worker import RolloutGroup, TrainingSequence, _AsyncRolloutLoop
        from trl.trainer.utils import get_callable_name

        PartialState(cpu=True)  # the rollout worker's logger needs accelerate's state, as in TRL's own child
        funcs = pickle.loads(blob)
        loop_self = types.SimpleNamespace(reward_funcs=funcs, reward_func_names=[get_callable_name(f) for f in funcs],
                                          _env_reward_types=[], _provides_rollout_reward=False)
        prompt = [{"role": "user", "content": "What is 2 + 3?"}]
        completions = [[{"role": "assistant", "content": text}] for text in ("5", "It is 5.", "6", "2 + 3 = 5")]
        group = RolloutGroup(
            prompts=[prompt] * 4, reward_kwargs={"reference": ["5"] * 4}, completions=completions,
            completions_ids=[[1, 2]] * 4,
            completions_sequences=[[TrainingSequence([1, 2, 3], [0, 1, 1], [0.0, -0.1, -0.2], None)]
                                   for _ in range(4)],
            tool_call_counts=[0] * 4, tool_failure_counts=[0] * 4, model_version=0, group_id=0,
            env_rewards=[None] * 4, rollout_rewards=[None] * 4)
        samples = asyncio.run(_AsyncRolloutLoop._score_group(loop_self, group))
        queue.put(("ok", [s.metrics for s in samples]))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        import traceback

        queue.put(("error", "".join(traceback.format_exception(exc))))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_async_grpo_scoring_pickles_and_runs_in_a_spawned_process(judge, asynchronous):
    judge.reset()
    reward = trl_reward(base_url=judge.base_url, model="sim", k=2, asynchronous=asynchronous, name="grm")
    blob = pickle.dumps([reward])
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_score_in_spawned_child, args=(blob, queue))
    child.start()
    status, payload = queue.get(timeout=240)
    child.join(timeout=30)
    assert status == "ok", payload
    assert len(payload) == 4
    assert all(1.0 <= metrics["rewards/grm"] <= 10.0 for metrics in payload)
    # AsyncGRPO scores a whole group per call: every judge prompt showed the group's 4 completions together
    shown = [len(re.findall(r"\[The Begin of Response \d+\]", body["messages"][-1]["content"]))
             for body in judge.state.bodies]
    assert shown and all(n == 4 for n in shown), shown


# --- formats, logging and failure policy ----------------------------------------------------------------------------


def test_tool_call_rollouts_reach_the_judge_with_calls_and_results(judge):
    judge.reset()
    prompt = [SYSTEM, {"role": "user", "content": "What's the weather in Oslo?"}]
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    completions = [
        [{"role": "assistant", "content": None, "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "4 C, light rain"},
         {"role": "assistant", "content": "It is 4 C with light rain in Oslo."}],
        [{"role": "assistant", "content": "I don't know."}],
    ]
    extra, metrics = {}, {}
    reward = TRLReward(base_url=judge.base_url, model="sim", k=1, name="grm")
    rewards = reward(prompts=[prompt, prompt], completions=completions, completion_ids=[[1], [2]],
                     trainer_state=None, log_extra=extra.__setitem__, log_metric=metrics.__setitem__)
    assert len(rewards) == 2 and all(r is not None for r in rewards)
    [text] = judge_prompts(judge)
    assert "get_weather" in text and "4 C, light rain" in text and "Oslo" in text
    assert set(extra) == {"grm_critique", "grm_votes"} and len(extra["grm_critique"]) == 2
    assert metrics["grm/parse_valid_rate"] == 1.0 and metrics["grm/samples"] == 1.0
    assert {"grm/slot_bias", "grm/length_corr", "grm/ties_rate", "grm/vote_spread"} <= set(metrics)


def test_a_completion_without_a_valid_judgement_gets_none():
    with SimulatedJudge(invalid_rate=1.0, seed=0) as server:
        reward = TRLReward(base_url=server.base_url, model="sim", k=2)
        extra = {}
        rewards = reward(prompts=["q", "q"], completions=["a", "b"], log_extra=extra.__setitem__)
    assert rewards == [None, None]
    assert all(c.startswith("(no valid judgement") for c in extra["grm_reward_critique"])


def test_an_unreachable_engine_raises_by_default_and_gives_none_when_configured():
    kwargs = dict(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, retry_backoff=0.01, timeout=2)
    with pytest.raises(BackendError, match="127.0.0.1:9"):
        TRLReward(**kwargs)(prompts=["q"], completions=["a"])
    metrics = {}
    rewards = TRLReward(on_engine_error="none", **kwargs)(prompts=["q", "q"], completions=["a", "b"],
                                                           log_metric=metrics.__setitem__)
    assert rewards == [None, None] and metrics["grm_reward/engine_errors"] == 1.0


def test_wrappers_pickle_keep_their_name_and_check_their_reward(judge):
    reward = AsyncTRLReward(base_url=judge.base_url, model="sim", k=3, name="helpfulness")
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "helpfulness" and trl.trainer.utils.get_callable_name(clone) == "helpfulness"
    assert clone.reward.config.k == 3
    assert trl.trainer.utils.get_callable_name(GRMReward(base_url=judge.base_url, model="sim")) == "grm_reward"
    with pytest.raises(TypeError, match="RewardFunction"):
        TRLReward(lambda **kw: [1.0])
    with pytest.raises(TypeError, match="not both"):
        TRLReward(GRMReward(base_url=judge.base_url, model="sim"), k=2)


def test_the_grpo_example_runs_end_to_end_with_the_embedded_judge(tmp_path):
    """examples/trl_grpo.py as the README runs it: SmolLM2 policy, embedded SmolLM2 judge, one GRPO step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "trl_grpo.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRM_")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, str(example), "--max-steps", "1", "--output-dir", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [x for x in result.stdout.splitlines() if x.startswith("step 1: reward mean")]
    assert "parse-valid rate 1.00" in line  # guaranteed-format decoding: the embedded judge always votes


def test_a_completion_the_engine_refuses_gets_none_alone_and_the_batch_is_scored():
    """One completion's judge prompt is refused with a 400 (over the judge's context): it gets None, the other
    prompts' completions are judged, and the trainer hooks say so. An engine that is down still fails the batch."""
    with SimulatedJudge(noise=0.0, refuse_containing="TOO-LONG") as judge:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0, max_retries=0)
        metrics, extra = {}, {}
        rewards = reward(prompts=["q1", "q1", "q2", "q2"],
                         completions=[with_quality("a", 8), with_quality("b", 3), "TOO-LONG", with_quality("d", 6)],
                         log_metric=metrics.__setitem__, log_extra=extra.__setitem__)
        assert rewards[:2] == [8.0, 3.0] and rewards[2] is None and rewards[3] == 6.0
        assert metrics["grm_reward/request_errors"] == 1.0 and metrics["grm_reward/engine_errors"] == 0.0
        assert metrics["grm_reward/judge_requests"] == 3.0  # q1's group, then q2's two completions alone
        assert "not judged" in extra["grm_reward_critique"][2]
    with pytest.raises(BackendError):  # the judge is gone now: an engine failure, not a None
        reward(prompts=["q3"], completions=["x"])
