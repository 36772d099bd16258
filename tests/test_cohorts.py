"""Cohorts: the rollouts of one prompt that OpenRLHF sends one by one, at different times, are judged together in one
judge prompt. Driven by OpenRLHF's own client code (``SingleTurnAgentExecutor._fetch_rewards_via_http``) against a
real uvicorn server on loopback; the judge engine is the simulated judge (an OpenAI-compatible HTTP server standing in
for a language model), which records every judge prompt it receives."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
agent = pytest.importorskip("openrlhf.utils.agent")

from served_app import Server  # noqa: E402

from grm_plugin import GRMReward  # noqa: E402
from grm_plugin.cohorts import GroupSize  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402

PROMPT = "<|im_start|>user\nWrite a haiku about {topic}.<|im_end|>\n<|im_start|>assistant\n"
SHOWN = re.compile(r"\[The Begin of Response (\d+)\]")


@pytest.fixture
def judge():
    with SimulatedJudge(noise=0.0, seed=0) as server:
        yield server


def reward_for(judge, **settings):
    return GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0, max_responses_per_call=16, **settings)


def responses_per_judge_prompt(judge, topic=None):
    """How many responses each judge prompt received (of one topic) showed."""
    prompts = [body["messages"][-1]["content"] for body in judge.state.bodies]
    return [len(SHOWN.findall(p)) for p in prompts if topic is None or topic in p]


async def staggered(url, topic, delays, quality=lambda i: 5 + i % 4):
    """One rollout per request through OpenRLHF's client, the i-th sent after ``delays[i]`` seconds (generation
    times differ); per rollout its reward info and how long its request took."""
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=url)
    prompt = PROMPT.format(topic=topic)

    async def one(i, delay):
        await asyncio.sleep(delay)
        started = time.monotonic()
        [info] = await executor._fetch_rewards_via_http([prompt + with_quality(f"haiku {i}", quality(i))],
                                                       [prompt], [""])
        return info, time.monotonic() - started

    return await asyncio.gather(*(one(i, d) for i, d in enumerate(delays)))


DELAYS = [0.0, 0.2, 0.45, 0.6, 0.8, 1.0, 1.3, 1.5]  # 8 rollouts over 1.5 s


def test_a_prompts_eight_rollouts_sent_one_by_one_are_judged_in_one_judge_prompt(judge):
    with Server(reward_for(judge), group_size=8, group_wait_s=10) as server:
        answers = asyncio.run(staggered(f"{server.url}/get_reward", "autumn", DELAYS))
        assert responses_per_judge_prompt(judge) == [8]  # one judge prompt holding all 8 responses
        assert [info["rewards"][0] for info, _ in answers] == [5 + i % 4 for i in range(8)]
        assert all(info["extra_logs"]["grm_group_size"] == 8 for info, _ in answers)
        assert server.metric("grm_group_size_count") == 1 and server.metric("grm_group_size_sum") == 8
        assert server.metric("grm_partial_groups_total") == 0
        assert answers[-1][1] < 5  # the group closed when its 8th rollout arrived, not at the 10 s wait


def test_a_group_that_outlasts_group_wait_is_judged_with_what_it_has_and_counted_partial(judge):
    with Server(reward_for(judge), group_size=8, group_wait_s=0.5) as server:
        answers = asyncio.run(staggered(f"{server.url}/get_reward", "winter", DELAYS))
        sizes = responses_per_judge_prompt(judge)
        assert sum(sizes) == 8 and len(sizes) >= 2  # every rollout judged once, in more than one group
        assert all(info["rewards"][0] == 5 + i % 4 for i, (info, _) in enumerate(answers))
        assert server.metric("grm_partial_groups_total") >= 1
        assert server.metric("grm_cohort_wait_seconds_count") == len(sizes)


def test_rollouts_of_a_prompt_beyond_the_group_size_start_a_new_cohort(judge):
    with Server(reward_for(judge), group_size=4, group_wait_s=0.5) as server:
        asyncio.run(staggered(f"{server.url}/get_reward", "rain", [0.0] * 6))
        assert sorted(responses_per_judge_prompt(judge)) == [2, 4]
        assert server.metric("grm_partial_groups_total") == 1  # the 2 that followed waited out group_wait_s


def test_auto_learns_the_group_size_and_no_rollout_of_a_fresh_server_waits_past_group_wait(judge):
    with Server(reward_for(judge), group_size="auto", group_wait_s=0.8) as server:
        assert httpx.get(f"{server.url}/health").json()["group_size"] is None  # nothing learned yet

        async def prompts(topics, delays):
            return await asyncio.gather(*(staggered(f"{server.url}/get_reward", t, delays) for t in topics))

        within = [0.0, 0.1, 0.2, 0.3, 0.3, 0.4, 0.5, 0.5]
        first = asyncio.run(prompts(["sun", "moon", "sea"], within))
        waits = [elapsed for group in first for _, elapsed in group]
        assert max(waits) < 0.8 + 0.5  # held at most group_wait_s (plus judging), never indefinitely
        assert responses_per_judge_prompt(judge) == [8, 8, 8]  # closed at group_wait_s, each group whole
        assert httpx.get(f"{server.url}/health").json()["group_size"] == 8
        [snow] = asyncio.run(prompts(["snow"], within))
        assert responses_per_judge_prompt(judge, "snow") == [8]
        assert snow[-1][1] < 0.25  # known size: closed on its 8th rollout (at 0.5 s), not at group_wait_s (0.8 s)


def test_every_member_of_a_cohort_the_engine_fails_gets_the_error_once(judge):
    judge.state.settings.fail_next.extend([500] * 3)
    reward = reward_for(judge, max_retries=0)
    with Server(reward, group_size=4, group_wait_s=5) as server:
        async def send():
            async with httpx.AsyncClient(timeout=30) as client:
                prompt = PROMPT.format(topic="fog")
                return await asyncio.gather(*(client.post(f"{server.url}/get_reward", json={
                    "query": [prompt + f"haiku {i}"], "prompts": [prompt]}) for i in range(4)))

        answers = asyncio.run(send())
        assert [a.status_code for a in answers] == [503] * 4
        assert server.metric('grm_requests_total{endpoint="/get_reward",status="503"}') == 4
        assert responses_per_judge_prompt(judge) == []  # the failed call was the group's one call, not 4


def test_a_client_that_leaves_while_its_rollout_waits_does_not_hold_or_break_its_cohort(judge):
    with Server(reward_for(judge), group_size=3, group_wait_s=5) as server:
        prompt = PROMPT.format(topic="wind")

        async def scenario():
            async with httpx.AsyncClient(timeout=30) as client:
                leaver = asyncio.create_task(client.post(f"{server.url}/get_reward", json={
                    "query": [prompt + "gone"], "prompts": [prompt]}))
                await asyncio.sleep(0.3)
                leaver.cancel()  # the client gives up and closes its connection
                await asyncio.sleep(0.3)
                stay = [client.post(f"{server.url}/get_reward", json={"query": [prompt + f"haiku {i}"],
                                                                        "prompts": [prompt]}) for i in range(3)]
                return await asyncio.gather(*stay)

        answers = asyncio.run(scenario())
        assert [a.status_code for a in answers] == [200] * 3
        assert responses_per_judge_prompt(judge) == [3]  # the three who stayed, without the one who left
        assert server.metric('grm_requests_total{endpoint="/get_reward",status="499"}') == 1
        assert httpx.get(f"{server.url}/health").json()["rollouts_waiting"] == 0


def test_group_size_one_judges_every_rollout_alone(judge):
    with Server(reward_for(judge), group_size=1) as server:
        asyncio.run(staggered(f"{server.url}/get_reward", "dew", [0.0] * 4))
        assert responses_per_judge_prompt(judge) == [1, 1, 1, 1]


def test_the_learned_size_follows_the_traffic():
    size = GroupSize("auto")
    for _ in range(3):
        size.observe(8)
    assert size.expected == 8
    for _ in range(9):  # groups keep closing smaller (the trainer now samples 4 per prompt)
        size.observe(4)
    assert size.expected == 4
    for _ in range(12):  # a full cohort of 4 followed at once by 4 more of its prompt: groups of 8 again
        size.observe(8)
    assert size.expected == 8
    with pytest.raises(ValueError, match="group_size: expected a positive integer or 'auto'"):
        GroupSize(0)


@pytest.mark.slow
def test_a_stopping_server_judges_its_open_cohorts_at_once_and_answers_every_rollout(judge):
    import signal

    from served_app import grm_serve

    process, url = grm_serve("--base-url", judge.base_url, "--model", "sim", "--k", "1", "--group-size", "8",
                             "--group-wait", "100")
    prompt = PROMPT.format(topic="dusk")

    async def three_then_sigterm():
        async with httpx.AsyncClient(timeout=60) as client:
            sent = asyncio.gather(*(client.post(f"{url}/get_reward", json={
                "query": [prompt + with_quality(f"haiku {i}", 4 + i)], "prompts": [prompt]}) for i in range(3)))
            await asyncio.sleep(0.5)  # 3 of 8 wait in their cohort (for up to 100 s)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            return await sent, time.monotonic() - started

    answers, took = asyncio.run(three_then_sigterm())
    assert [a.status_code for a in answers] == [200] * 3
    assert [a.json()["rewards"][0] for a in answers] == [4.0, 5.0, 6.0]
    assert took < 10  # judged at the signal, not after the 100 s group wait
    assert responses_per_judge_prompt(judge) == [3]  # judged together, as the partial group they were
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_v1_rollouts_judges_chat_message_prompts_through_the_cohorts(judge):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A haiku about ice?"}]
    with Server(reward_for(judge), group_size=3, group_wait_s=10) as server:
        async def send():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(f"{server.url}/v1/rollouts", json={"rollouts": [
                    {"prompt": prompt, "response": with_quality(f"ice {i}", 3 + i)}]}) for i in range(3)))

        answers = asyncio.run(send())
        assert [a.status_code for a in answers] == [200] * 3
        assert [a.json()["results"][0]["reward"] for a in answers] == [3.0, 4.0, 5.0]
        assert all(a.json()["results"][0]["logs"]["grm_group_size"] == 3 for a in answers)
        assert responses_per_judge_prompt(judge) == [3]
        bad = httpx.post(f"{server.url}/v1/rollouts", json={"rollouts": [{"prompt": prompt}]})
        assert bad.status_code == 422 and "rollouts.0.response" in bad.json()["error"]["message"]
