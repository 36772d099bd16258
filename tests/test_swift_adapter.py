"""ms-swift adapter with ms-swift 4.6.0's own code on CPU: the plugin file ``grm plugin-path swift`` prints, loaded
with ``import_external_file`` as ``--external_plugins`` does; the reward built as the GRPO trainer builds it
(``orms[name](args=...)``) and called by the real ``compute_rewards_per_func``, which runs async rewards in a new
``asyncio.run`` loop every step. The judge is the simulated judge (an OpenAI-compatible HTTP server standing in for
a language model)."""

from __future__ import annotations

import importlib.machinery
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("swift.rewards")

from swift.rewards import orms  # noqa: E402
from swift.rl_core.data import GRPOSample  # noqa: E402
from swift.rl_core.grpo_algorithm import compute_rewards_per_func  # noqa: E402
from swift.utils import import_external_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from grm_plugin.adapters.swift import GRMORM, split_messages  # noqa: E402
from grm_plugin.cli import app  # noqa: E402
from grm_plugin.testing.simulated_judge import with_quality  # noqa: E402

pytestmark = pytest.mark.slow

QUESTION = "What is 2 + 3?"
SOLUTION = "the sum is five"


@pytest.fixture
def plugin_file() -> Path:
    result = CliRunner().invoke(app, ["plugin-path", "swift"])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path.is_file() and path.suffix == ".py"
    return path


@pytest.fixture
def judge_env(sim_judge, monkeypatch):
    monkeypatch.setenv("GRM_BASE_URL", sim_judge.base_url)
    monkeypatch.setenv("GRM_MODEL", "sim")
    monkeypatch.setenv("GRM_K", "2")
    return sim_judge


def rollouts(qualities: list[float], prompt_id: str = "p0") -> list[GRPOSample]:
    """A GRPO group as ms-swift holds it: the chat with the completion as its last message, the dataset's
    ``solution`` column in ``extra``."""
    return [GRPOSample(messages=[{"role": "system", "content": "Answer briefly."},
                                 {"role": "user", "content": QUESTION},
                                 {"role": "assistant", "content": with_quality(f"answer {i}", q)}],
                       prompt_id=prompt_id, request_id=f"{prompt_id}-{i}", extra={"solution": SOLUTION})
            for i, q in enumerate(qualities)]


def judge_prompts(server) -> list[str]:
    return [body["messages"][-1]["content"] for body in server.state.bodies]


def test_plugin_file_registers_grm_and_two_grpo_steps_score_in_their_own_loops_simulated_judge(plugin_file,
                                                                                               judge_env):
    import_external_file(str(plugin_file))  # what --external_plugins does
    assert orms["grm"] is GRMORM
    reward = orms["grm"](args=None)  # what the GRPO trainer does for --reward_funcs grm
    steps = [[9, 2, 6, 4], [3, 8, 7, 1]]  # different completions each step: real judge calls, not the cache
    for qualities in steps:
        judge_env.reset()
        rewards = compute_rewards_per_func(rollouts(qualities), [reward], [None], device=torch.device("cpu"))
        assert rewards.shape == (4, 1)
        assert rewards[:, 0].tolist() == [float(q) for q in qualities]
        prompts = judge_prompts(judge_env)
        assert prompts and all("[The Begin of Response 4]" in p for p in prompts)  # the group in one prompt
        assert all(QUESTION in p and SOLUTION in p for p in prompts)  # the solution column as reference
        assert judge_env.stats()["completions"] == 2  # k=2 for the one group


def test_plugin_folder_shadows_no_package(plugin_file):
    import_external_file(str(plugin_file))  # puts the plugin's folder first on sys.path
    folder = str(plugin_file.parent)
    for name in ("swift", "trl", "verl", "openrlhf", "langchain", "grm_plugin", "adapters"):
        assert importlib.machinery.PathFinder.find_spec(name, [folder]) is None, name


def test_a_completion_without_a_valid_judgement_is_nan_for_swift_simulated_judge(judge_env):
    judge_env.state.settings.invalid_rate = 1.0  # every judgement unparseable
    try:
        rewards = compute_rewards_per_func(rollouts([9, 2]), [GRMORM(args=None)], [None], device=torch.device("cpu"))
    finally:
        judge_env.state.settings.invalid_rate = 0.0
    assert all(math.isnan(r) for r in rewards[:, 0].tolist())


def test_rollouts_of_one_prompt_id_are_judged_together_and_agent_turns_after_the_last_user_message(judge_env):
    group = rollouts([8, 3], prompt_id="p7")
    group[1].messages = [{"role": "user", "content": QUESTION}, *group[1].messages[1:]]  # no system message here
    agent = group[0].messages[:2] + [
        {"role": "tool_call", "content": '{"name": "add", "arguments": {"a": 2, "b": 3}}'},
        {"role": "tool_response", "content": "5"},
        {"role": "assistant", "content": with_quality("It is 5.", 8)}]
    prompt, response = split_messages(agent, "It is 5.")
    assert prompt == agent[:2] and [m["role"] for m in response] == ["assistant", "tool", "assistant"]
    group[0].messages = agent
    for sample in group:
        sample.extra["principles"] = "Check the arithmetic exactly."
    judge_env.reset()
    rewards = compute_rewards_per_func(group, [GRMORM(args=None)], [None], device=torch.device("cpu"))
    assert rewards[:, 0].tolist() == [8.0, 3.0]
    prompts = judge_prompts(judge_env)  # the prompt_id's two rollouts judged together (k=2 samples in all)
    assert judge_env.stats()["completions"] == 2 and all("[The Begin of Response 2]" in p for p in prompts)
    assert all('"name": "add"' in p and "Answer briefly." in p for p in prompts)  # the agent turn; the first prompt
    assert all("Check the arithmetic exactly." in p for p in prompts)  # the principles column


def test_an_engine_failure_raises_unless_on_engine_error_is_none_simulated_judge(judge_env, monkeypatch):
    from grm_plugin.errors import BackendError

    # the engine itself failing (a 503 with no retries left); a 4xx for one prompt's content fails only that prompt
    monkeypatch.setenv("GRM_MAX_RETRIES", "0")
    judge_env.state.settings.fail_next[:] = [503]
    with pytest.raises(BackendError):
        compute_rewards_per_func(rollouts([9, 2]), [GRMORM(args=None)], [None], device=torch.device("cpu"))
    monkeypatch.setenv("GRM_ON_ENGINE_ERROR", "none")
    judge_env.state.settings.fail_next[:] = [503]
    rewards = compute_rewards_per_func(rollouts([9, 2]), [GRMORM(args=None)], [None], device=torch.device("cpu"))
    assert all(math.isnan(r) for r in rewards[:, 0].tolist())


def test_plugin_path_names_the_frameworks_it_knows():
    result = CliRunner().invoke(app, ["plugin-path", "axolotl"])
    assert result.exit_code == 2 and "choose from: swift" in result.output
