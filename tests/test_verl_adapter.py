"""verl adapter with verl 0.9.1's own reward loop on CPU: the real Hydra ``ppo_trainer`` config, a local Ray with 2
CPUs, the real ``RewardLoopManager`` and its ``RewardLoopWorker`` actors, with verl's ``naive`` manager calling our
``compute_score`` and with our entry-point manager ``grm``; the judge is the simulated judge (an OpenAI-compatible
HTTP server standing in for a language model). The worker actors are fresh processes that only ``import verl``: the
``grm`` manager reaches them through the ``verl.plugins`` entry point. Group judging: the ``grm`` manager's in-process
cohorts with one worker, and with two workers forwarding to one shared ``grm serve`` (``tests/served_app.py``, in
this process; the workers reach it on loopback), counting the responses in each judge prompt the simulated judge
receives."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")
pytest.importorskip("hydra")
verl = pytest.importorskip("verl")
pytest.importorskip("fastapi")  # the shared `grm serve` of the group tests
pytest.importorskip("uvicorn")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from served_app import Server  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop import RewardLoopManager  # noqa: E402

from grm_plugin import GRMReward  # noqa: E402
from grm_plugin.adapters.verl import (  # noqa: E402
    EXTRA_KEYS,
    HEALTH_KEYS,
    VerlSettings,
    cohort_size,
    compute_score,
    verl_groups,
)
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


SHOWN = re.compile(r"\[The Begin of Response (\d+)\]")


def responses_per_question(server) -> dict[str, list[int]]:
    """Per question: how many responses each judge prompt about it showed."""
    shown: dict[str, list[int]] = {}
    for prompt in judge_prompts(server):
        [question] = [q for q in GROUP_QUESTIONS if q in prompt]
        shown.setdefault(question, []).append(len(SHOWN.findall(prompt)))
    return shown


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            # the workers are up (tokenizer loaded, manager built) before a test sends or times anything
            ray.get([worker.__ray_ready__.remote() for worker in self.manager.reward_loop_workers])
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
    for key in HEALTH_KEYS:  # every sample carries the judge-health figures, the failed one too (0: undefined)
        values = out.non_tensor_batch[key].tolist()
        assert len(values) == 4 and all(isinstance(v, float) for v in values)
        assert values == [0.0] * 4  # each judged alone (no slots or pairs to compare), noise 0 (no spread)


# --- our entry-point manager `grm` ----------------------------------------------------------------------------------


def test_grm_manager_from_the_entry_point_judges_a_prompts_responses_together_simulated_judge(
        reward_loops, smol_tokenizer_dir, tokenizer, judge):
    [entry] = [ep for ep in entry_points(group="verl.plugins") if ep.name == "grm"]
    assert entry.value == "grm_plugin.adapters.verl"
    judge.reset()
    # rollout.n=2: the two responses per prompt of ROWS (the size of the in-process cohorts)
    config = ppo_config(smol_tokenizer_dir, "reward.reward_manager.name=grm", "actor_rollout_ref.rollout.n=2",
                        *judge_kwargs(judge, batch_window_ms=200))
    assert config.reward.custom_reward_function.path is None  # verl calls the manager itself
    # The first prompt's samples carry the chat as raw_prompt only, the second's nothing: its prompt is decoded.
    chat = [{"role": "user", "content": QUESTIONS[0]}]
    data = batch(tokenizer, ROWS, extra_info=False, raw_prompt=[chat, chat, None, None])
    out = reward_loops.get("grm", config).compute_rm_score(data)  # one worker: both prompts' groups together
    assert last_token_scores(data, out.batch["rm_scores"]) == [9.0, 2.0, 8.0, 3.0]
    assert set(out.meta_info["reward_extra_keys"]) == KEYS
    assert out.non_tensor_batch["grm_group_size"].tolist() == [2.0] * 4
    # judged in groups: the longer response of each prompt is the worse one, the noiseless judge never ties
    assert all(v < -0.9 for v in out.non_tensor_batch["grm_length_corr"].tolist())
    for key in ("grm_ties_rate", "grm_vote_spread"):
        assert out.non_tensor_batch[key].tolist() == [0.0] * 4
    prompts = judge_prompts(judge)
    assert prompts and all("[The Begin of Response 2]" in p for p in prompts)  # both responses in one prompt
    assert any(QUESTIONS[0] in p for p in prompts) and any(QUESTIONS[1] in p for p in prompts)
    assert judge.stats()["completions"] == 2 * 2  # k=2 per prompt, not per sample
    # Streaming rewards (verl's agent loop sends each finished rollout to a reward worker's compute_score):
    # a prompt's rollouts that reach the worker one by one are judged together as well.
    judge.reset()
    [worker] = reward_loops.manager.reward_loop_workers
    streamed = ray.get([worker.compute_score.remote(data[i:i + 1]) for i in range(len(data))])
    assert [r["reward_score"] for r in streamed] == [9.0, 2.0, 8.0, 3.0]
    assert all(set(r["reward_extra_info"]) == KEYS for r in streamed)
    assert judge.stats()["completions"] == 2 * 2


# --- group judging: in-process cohorts (one worker) or a shared `grm serve` (several) --------------------------------

N = 4  # responses per prompt (actor_rollout_ref.rollout.n)
GROUP_QUESTIONS = [*QUESTIONS, "Why is the sky blue?"]
GROUND_TRUTH = ["five", "Paris", "Rayleigh scattering"]


def quality(question: int, sample: int) -> int:
    return 1 + 3 * question + sample  # the judge's score of that response: 1..10, nearly all different


def group_rows(order: list[tuple[int, int]]):
    """Rows (question, response, ground truth) for (question, sample) pairs in ``order``; and their expected scores."""
    rows = [(GROUP_QUESTIONS[q], with_quality(f"answer {s} to question {q}", quality(q, s)), GROUND_TRUTH[q])
            for q, s in order]
    return rows, [float(quality(q, s)) for q, s in order]


# Each half of the batch holds two samples of every prompt: verl's compute_rm_score gives each of two workers a
# contiguous half, so every prompt's samples are split over both workers.
SPLIT = [(q, s) for half in ((0, 1), (2, 3)) for s in half for q in range(3)]


def grm_config(smol_tokenizer_dir, *overrides: str):
    config = ppo_config(smol_tokenizer_dir, "reward.reward_manager.name=grm", f"actor_rollout_ref.rollout.n={N}",
                        *overrides)
    assert config.actor_rollout_ref.rollout.n == N
    return config


def test_grm_manager_holds_a_prompts_samples_arriving_apart_until_rollout_n_arrived_simulated_judge(
        reward_loops, smol_tokenizer_dir, tokenizer, judge):
    # One worker sees every sample: in-process cohorts, the group size read from verl's rollout.n (no group_size set).
    config = grm_config(smol_tokenizer_dir, *judge_kwargs(judge, k=1, group_wait_s=30))
    manager = reward_loops.get("grm-cohorts", config)
    [worker] = manager.reward_loop_workers
    order = [(q, s) for s in range(N) for q in range(3)]  # streamed one by one, a prompt's samples 0.6 s apart
    rows, expected = group_rows(order)
    data = batch(tokenizer, rows)
    judge.reset()
    started = time.monotonic()
    refs = []
    for i in range(len(data)):  # far beyond batch_window_ms (20 ms): only the cohorts bring them together
        refs.append(worker.compute_score.remote(data[i:i + 1]))
        time.sleep(0.2)
    results = ray.get(refs)
    elapsed = time.monotonic() - started
    assert [r["reward_score"] for r in results] == expected
    assert all(set(r["reward_extra_info"]) == KEYS for r in results)
    assert [r["reward_extra_info"]["grm_group_size"] for r in results] == [float(N)] * len(rows)
    assert responses_per_question(judge) == {q: [N] for q in GROUP_QUESTIONS}  # one judge prompt per prompt
    # Each group closed on its 4th sample: the size was known (rollout.n), not learned ('auto' would first wait
    # out group_wait_s=30 s), and nothing waited for the partial-group timeout.
    assert elapsed < 15


def test_grm_managers_on_two_workers_meet_in_a_shared_server_one_judge_prompt_per_prompt_simulated_judge(
        reward_loops, smol_tokenizer_dir, tokenizer, judge):
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0)
    with Server(reward, group_size=N, group_wait_s=20) as server:
        config = grm_config(smol_tokenizer_dir, "reward.num_workers=2",
                            f"+reward.custom_reward_function.reward_kwargs.serve_url={server.url}")
        manager = reward_loops.get(f"grm-forward-{server.port}", config)
        assert len(manager.reward_loop_workers) == 2
        rows, expected = group_rows(SPLIT)
        data = batch(tokenizer, rows)
        judge.reset()
        out = manager.compute_rm_score(data)  # a whole batch: each worker gets half of every prompt's samples
        assert last_token_scores(data, out.batch["rm_scores"]) == expected
        assert set(out.meta_info["reward_extra_keys"]) == KEYS
        assert out.non_tensor_batch["grm_group_size"].tolist() == [float(N)] * len(rows)
        assert out.non_tensor_batch["grm_failed"].tolist() == [0.0] * len(rows)
        assert out.non_tensor_batch["grm_samples"].tolist() == [1.0] * len(rows)  # the server's k=1
        assert responses_per_question(judge) == {q: [N] for q in GROUP_QUESTIONS}
        # Streamed rewards (verl's agent loop sends each rollout to a random worker): alternating workers here.
        judge.reset()
        workers = manager.reward_loop_workers
        streamed = ray.get([workers[i % 2].compute_score.remote(data[i:i + 1]) for i in range(len(data))])
        assert [r["reward_score"] for r in streamed] == expected
        assert all(set(r["reward_extra_info"]) == KEYS for r in streamed)
        assert responses_per_question(judge) == {q: [N] for q in GROUP_QUESTIONS}
        assert server.metric("grm_group_size_count") == 2 * 3 and server.metric("grm_partial_groups_total") == 0
        assert server.metric('grm_requests_total{endpoint="/v1/rollouts",status="200"}') == 2 * len(rows)
    reward_loops.close()  # its server is gone


def test_grm_manager_forwarding_to_a_server_that_is_down_fails_every_sample_and_never_raises(
        reward_loops, smol_tokenizer_dir, tokenizer):
    config = grm_config(smol_tokenizer_dir, "reward.num_workers=2",
                        f"+reward.custom_reward_function.reward_kwargs.serve_url=http://127.0.0.1:{free_port()}",
                        "+reward.custom_reward_function.reward_kwargs.timeout_s=2")
    manager = reward_loops.get("grm-forward-down", config)
    rows, _ = group_rows(SPLIT)
    data = batch(tokenizer, rows)
    started = time.monotonic()
    out = manager.compute_rm_score(data)
    assert time.monotonic() - started < 6  # connection errors retried for timeout_s=2, then given up
    assert out.non_tensor_batch["grm_failed"].tolist() == [1.0] * len(rows)
    assert last_token_scores(data, out.batch["rm_scores"]) == [5.5] * len(rows)  # the middle of 1..10
    assert set(out.meta_info["reward_extra_keys"]) == KEYS
    reward_loops.close()


def test_the_group_size_comes_from_group_size_else_verls_rollout_n_unless_workers_split_the_groups(
        smol_tokenizer_dir, monkeypatch):
    group = GRMReward(base_url="http://127.0.0.1:9/v1", model="sim")
    pointwise = GRMReward(base_url="http://127.0.0.1:9/v1", model="sim", mode="pointwise")

    composed: dict[tuple, dict] = {}  # verl's config as RewardLoopWorker hands it to the manager, per overrides

    def size(*overrides, reward=group, **settings):
        if overrides not in composed:
            composed[overrides] = verl_groups(ppo_config(smol_tokenizer_dir, *overrides))
        return cohort_size(VerlSettings(**settings), reward, composed[overrides])[0]

    assert size("actor_rollout_ref.rollout.n=8") == 8
    assert composed[("actor_rollout_ref.rollout.n=8",)] == {"rollout_n": 8, "num_workers": 1, "streaming": True}
    assert size() == "auto"  # rollout.n=1 (verl's default): learned
    assert size("actor_rollout_ref.rollout.n=8", group_size=3) == 3 and size(group_size="auto") == "auto"
    monkeypatch.setenv("GRM_VERL_GROUP_SIZE", "6")
    assert size("actor_rollout_ref.rollout.n=8") == 6
    monkeypatch.delenv("GRM_VERL_GROUP_SIZE")
    # Several workers that verl streams rollouts to at random each see part of a group: no cohorts to wait in ...
    assert size("actor_rollout_ref.rollout.n=8", "reward.num_workers=8") is None
    # ... unless verl scores whole batches (a colocated reward model it serves: contiguous chunks per worker).
    assert size("actor_rollout_ref.rollout.n=8", "reward.num_workers=8", "reward.reward_model.enable=True") == 8
    assert size("actor_rollout_ref.rollout.n=8", reward=pointwise) is None
    assert VerlSettings().cohort_wait_s == 60.0 and VerlSettings(timeout_s=20).cohort_wait_s == 4.0
    with pytest.raises(ValueError, match="group_wait_s: 300 s must be below timeout_s"):
        VerlSettings(group_wait_s=300)


# --- forwarding to a shared server, called directly (compute_score forwards too) -------------------------------------


class ScriptedServer:
    """A stand-in for `grm serve` answering scripted (status, headers, body) replies in turn, recording requests."""

    def __init__(self, replies: list[tuple[int, dict, dict]]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[float, str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                status, headers, reply = outer.replies.pop(0)
                data = json.dumps(reply).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json",
                                    "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ScriptedServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


LOGS = {"grm_valid_samples": 2, "grm_samples": 2, "grm_mean_score": 7.5, "grm_group_size": 4, "grm_cached": 0,
        "grm_resampled": 0, "grm_truncated_tokens": 0, "grm_slot_bias": 0.5, "grm_length_corr": -0.25,
        "grm_ties_rate": 0.0, "grm_vote_spread": 1.5}


def test_forwarding_retries_a_503_after_its_retry_after_and_never_a_4xx(monkeypatch):
    monkeypatch.setenv("GRM_VERL_SERVE_API_KEY", "s3cret")
    replies = [(503, {"Retry-After": "1"}, {"error": {"message": "overloaded, retry later"}}),
               (200, {}, {"results": [{"reward": 7.5, "score": 0.72, "logs": LOGS}]}),
               (422, {}, {"error": {"message": "the judge could not judge this rollout"}}),
               (200, {}, {"results": [{"reward": 1.0, "score": 0.0, "logs": {**LOGS, "grm_valid_samples": 0}}]})]
    with ScriptedServer(replies) as server:
        result = call(serve_url=server.url + "/v1", ground_truth="5")  # a URL given with /v1 works too
        assert result == {"score": 7.5, **{k: float(v) for k, v in LOGS.items()}, "grm_failed": 0.0}
        (first, path, headers, body), (second, _, _, again) = server.requests
        assert path == "/v1/rollouts" and headers["Authorization"] == "Bearer s3cret"
        assert body == again == {"rollouts": [{"prompt": QUESTIONS[0], "response": with_quality("5", 7),
                                               "reference": "5"}]}
        assert second - first >= 1.0  # waited for Retry-After
        refused = call(serve_url=server.url)
        assert refused["grm_failed"] == 1.0 and set(refused) == KEYS and len(server.requests) == 3  # not retried
        unparsed = call(serve_url=server.url, invalid_reward=-1.0)  # judged, no judgement parsed: invalid_reward
        assert unparsed["score"] == -1.0 and unparsed["grm_failed"] == 0.0


def test_forwarding_to_a_server_without_the_health_figures_gives_them_as_undefined():
    old_logs = {k: v for k, v in LOGS.items() if k not in HEALTH_KEYS}
    with ScriptedServer([(200, {}, {"results": [{"reward": 7.5, "score": 0.72, "logs": old_logs}]})]) as server:
        result = call(serve_url=server.url)
    assert set(result) == KEYS and result["grm_failed"] == 0.0 and result["grm_mean_score"] == 7.5
    assert [result[k] for k in HEALTH_KEYS] == [0.0] * len(HEALTH_KEYS)


def test_forwarding_to_a_real_server_sends_the_key_and_a_wrong_key_fails_once_without_retry(judge, caplog):
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0)
    with Server(reward, group_size=1, api_key="right-key") as server:
        ok = call(serve_url=server.url, serve_api_key="right-key")
        assert ok["score"] == 7.0 and ok["grm_failed"] == 0.0 and set(ok) == KEYS
        wrong = [call(serve_url=server.url, serve_api_key="wrong-key") for _ in range(3)]
        assert all(r["grm_failed"] == 1.0 and r["score"] == 5.5 for r in wrong)
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer right-key"}).text
        assert 'grm_requests_total{endpoint="/v1/rollouts",status="401"} 3.0' in metrics  # one request each
    logged = [r.getMessage() for r in caplog.records if r.name == "grm_plugin.adapters.verl"]
    assert sum("401" in m for m in logged) == 1 and not any("wrong-key" in m for m in logged)


def test_forwarding_to_a_server_that_is_down_gives_up_within_timeout_s():
    started = time.monotonic()
    result = call(serve_url=f"http://127.0.0.1:{free_port()}", timeout_s=1.5)
    assert 0.5 < time.monotonic() - started < 3  # retried, then given up within timeout_s
    assert result["grm_failed"] == 1.0 and result["score"] == 5.5 and set(result) == KEYS


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
