"""`grm serve` and the OpenRLHF adapter, driven by OpenRLHF's own client code (openrlhf/utils/agent.py,
``SingleTurnAgentExecutor``) against a real uvicorn server on loopback; the judge engine is the simulated judge (an
OpenAI-compatible HTTP server standing in for a language model)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
agent = pytest.importorskip("openrlhf.utils.agent")

from served_app import Server, grm_serve  # noqa: E402

from grm_plugin import GRMReward  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402

PROMPT = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def judge():
    with SimulatedJudge(noise=0.0, seed=0) as server:
        yield server


@pytest.fixture
def server(judge):
    judge.state.settings.fail_next.clear()
    reward = GRMReward(base_url=judge.base_url, model="sim", k=2, cache_size=0, max_retries=2, retry_backoff=0.01)
    with Server(reward, batch_window_ms=30) as running:
        yield running


def fetch(urls, queries, prompts, labels):
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=urls)
    return asyncio.run(executor._fetch_rewards_via_http(queries, prompts, labels))


# --- OpenRLHF's client ----------------------------------------------------------------------------------------------


def test_openrlhf_client_gets_rewards_scores_and_logs_micro_batched_and_grouped(server, judge):
    judge.reset()
    good, bad = with_quality("5", 9), with_quality("6", 2)
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{server.url}/get_reward")

    async def rollouts():  # what OpenRLHF does: one rollout per request, many concurrently
        calls = [executor._fetch_rewards_via_http([PROMPT + text + "<|im_end|>"], [PROMPT], ["5"])
                 for text in [good, bad] * 8]
        return await asyncio.gather(*calls)

    answers = asyncio.run(rollouts())
    assert len(answers) == 16 and all(len(a) == 1 for a in answers)
    infos = [a[0] for a in answers]
    assert all(len(i["rewards"]) == len(i["scores"]) == 1 for i in infos)
    assert [i["rewards"][0] for i in infos] == [9.0, 2.0] * 8
    assert [round(i["scores"][0], 3) for i in infos] == [round(8 / 9, 3), round(1 / 9, 3)] * 8
    assert all(i["extra_logs"]["grm_valid_samples"] == 2.0 for i in infos)
    health = ("grm_slot_bias", "grm_length_corr", "grm_ties_rate", "grm_vote_spread")  # the judged batch's figures
    assert all(isinstance(i["extra_logs"][key], float) for i in infos for key in health)
    assert all(i["extra_logs"]["grm_length_corr"] == i["extra_logs"]["grm_vote_spread"] == 0.0
               for i in infos)  # the good and the bad response are equally long; the judge has no noise
    # 16 requests were gathered into micro-batches, and the rollouts of the one prompt were judged together
    assert server.metric("grm_batch_rollouts_count") < 16
    assert judge.stats()["requests"] < 16 * 2
    assert "[The Begin of Response 2]" in judge.state.bodies[0]["messages"][-1]["content"]
    assert "5" in judge.state.bodies[0]["messages"][-1]["content"]  # the label as reference
    assert server.metric('grm_requests_total{endpoint="/get_reward",status="200"}') == 16  # answered exactly once


def test_openrlhf_python_file_mode_loads_this_adapter_by_path(judge, monkeypatch):
    import grm_plugin.adapters.openrlhf as module

    monkeypatch.setenv("GRM_BASE_URL", judge.base_url)
    monkeypatch.setenv("GRM_MODEL", "sim")
    monkeypatch.setenv("GRM_K", "2")
    monkeypatch.setattr(module, "_reward", None)
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=module.__file__)
    assert executor.reward_func is not None

    async def rollouts():
        return await executor._fetch_rewards_via_func([PROMPT + with_quality("5", 8), PROMPT + with_quality("x", 3)],
                                                        [PROMPT, PROMPT], ["5", ""])

    [first, second] = asyncio.run(rollouts())
    assert first["rewards"] == [8.0] and second["rewards"] == [3.0]
    assert 0 <= first["scores"][0] <= 1 and first["extra_logs"]["grm_samples"] == 2.0


def test_replicas_behind_comma_separated_urls_share_the_load(judge):
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0)
    with Server(reward) as first, Server(reward) as second:
        urls = [f"{first.url}/get_reward", f"{second.url}/get_reward"]  # OpenRLHF splits the comma-separated flag
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=urls)

        async def rollouts():
            return await asyncio.gather(*(executor._fetch_rewards_via_http([PROMPT + str(i)], [PROMPT], [""])
                                          for i in range(8)))

        assert len(asyncio.run(rollouts())) == 8
        assert first.metric('grm_requests_total{endpoint="/get_reward"') == 4
        assert second.metric('grm_requests_total{endpoint="/get_reward"') == 4


# --- bad input: 4xx, the server stays up -----------------------------------------------------------------------------

GOOD = {"query": [PROMPT + "5"], "prompts": [PROMPT], "labels": ["5"]}
BAD = [
    ("malformed-json", b'{"query": [', 422, "not valid JSON"),
    ("not-an-object", b"[1, 2]", 422, "JSON object"),
    ("wrong-type", {"query": "text", "prompts": [PROMPT]}, 422, "query"),
    ("item-not-string", {"query": [3], "prompts": [PROMPT]}, 422, "query"),
    ("missing-prompts", {"query": [PROMPT + "5"]}, 422, "prompts"),
    ("length-mismatch", {"query": [PROMPT + "5", PROMPT + "6"], "prompts": [PROMPT]}, 422, "prompts"),
    ("labels-mismatch", {"query": [PROMPT + "5"], "prompts": [PROMPT], "labels": ["a", "b"]}, 422, "labels"),
    ("empty-lists", {"query": [], "prompts": []}, 422, "query"),
    ("oversize-list", {"query": ["q"] * 11, "prompts": ["q"] * 11}, 413, "limit of 10"),
    ("oversize-body", {"query": ["x" * 5000], "prompts": ["x"]}, 413, "limit"),
    ("invalid-utf8", b'{"query": ["\xff"], "prompts": ["a"]}', 400, "UTF-8"),
    ("control-character", {"query": [PROMPT + "a\x00b"], "prompts": [PROMPT]}, 422, "control character"),
    ("not-a-prefix", {"query": ["other text"], "prompts": [PROMPT]}, 422, "prompts[0] is not a prefix of query[0]"),
    ("empty-body", b"", 422, "empty body"),
    ("huge-integer", b'{"query": [' + b"7" * 2000 + b'], "prompts": ["a"]}', 422, "an integer of 2000 digits"),
    ("deep-nesting", b'{"query": ' + b"[" * 1500 + b"]" * 1500 + b', "prompts": ["a"]}', 422, "nested too deeply"),
    ("lone-surrogate", b'{"query": ["<p>x\\ud800"], "prompts": ["<p>"], "labels": [""]}', 422,
     "query: Value error, item 0 holds a lone surrogate"),
]


@pytest.mark.parametrize("name,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_naming_the_problem_and_the_server_stays_up(judge, name, body, status, message):
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1)
    with Server(reward, max_items=10, max_body_bytes=4096) as server:
        url = f"{server.url}/get_reward"
        kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
            else {"json": body}
        response = httpx.post(url, **kwargs)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
        assert httpx.post(url, json=GOOD).status_code == 200  # still serving


def test_bearer_token_is_required_when_set(judge):
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1)
    with Server(reward, api_key="s3cret") as server:
        assert httpx.post(f"{server.url}/get_reward", json=GOOD).status_code == 401
        assert httpx.post(f"{server.url}/get_reward", json=GOOD,
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{server.url}/get_reward", json=GOOD,
                          headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{server.url}/health").status_code == 200  # health checks need no token


def test_auth_takes_any_case_of_the_scheme_and_health_tells_strangers_only_that_it_is_up(judge):
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1)
    with Server(reward, api_key="s3cret") as server:
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert httpx.post(f"{server.url}/get_reward", json=GOOD,
                              headers={"Authorization": f"{scheme} s3cret"}).status_code == 200
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}  # no judge URL or model
        inside = httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer s3cret"}).json()
        assert judge.base_url in inside["reward"]
        assert httpx.get(f"{server.url}/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 404


# --- faults --------------------------------------------------------------------------------------------------------


def test_engine_500_and_429_are_retried_and_answered(server, judge):
    judge.state.settings.fail_next.extend([500, 429])
    response = httpx.post(f"{server.url}/get_reward", json=GOOD)
    assert response.status_code == 200 and len(response.json()["rewards"]) == 1


def test_engine_down_is_a_503_then_the_server_recovers_when_it_is_back():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    reward = GRMReward(base_url=f"http://127.0.0.1:{port}/v1", model="sim", k=1, max_retries=1, retry_backoff=0.01,
                       cache_size=0)
    with Server(reward) as server:
        down = httpx.post(f"{server.url}/get_reward", json=GOOD)
        assert down.status_code == 503 and "judge engine failed" in down.json()["error"]["message"]
        with SimulatedJudge(port=port, noise=0.0, seed=0):  # the engine comes back on the same port
            up = httpx.post(f"{server.url}/get_reward", json=GOOD)
            assert up.status_code == 200 and len(up.json()["rewards"]) == 1
        assert server.metric('grm_requests_total{endpoint="/get_reward",status="503"}') == 1
        assert server.metric('grm_requests_total{endpoint="/get_reward",status="200"}') == 1


def test_an_engine_slower_than_the_request_timeout_is_a_503(judge):
    with SimulatedJudge(noise=0.0, seed=0, delay_s=2.0) as slow:
        reward = GRMReward(base_url=slow.base_url, model="sim", k=1)
        with Server(reward, request_timeout_s=0.3) as server:
            response = httpx.post(f"{server.url}/get_reward", json=GOOD, timeout=10)
            assert response.status_code == 503 and "did not answer within" in response.json()["error"]["message"]
            assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


# --- our own API -----------------------------------------------------------------------------------------------------


def test_v1_score_returns_score_results_with_critiques(server):
    body = {"requests": [{"prompt": "What is 2 + 3?", "responses": [with_quality("5", 9), with_quality("6", 2)],
                          "reference": "5"}]}
    response = httpx.post(f"{server.url}/v1/score", json=body)
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["rewards"] == [9.0, 2.0] and result["best"] == 0
    assert result["judgements"][0]["critique"]
    bad = httpx.post(f"{server.url}/v1/score", json={"requests": [{"prompt": "q", "responses": []}]})
    assert bad.status_code == 422 and "requests[0]" in bad.json()["error"]["message"]


def test_metrics_are_prometheus_text(server):
    httpx.post(f"{server.url}/get_reward", json=GOOD)
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("grm_requests_total", "grm_request_seconds_bucket", "grm_batch_rollouts_bucket",
                 "grm_judge_samples_total", "grm_judge_valid_samples_total", "grm_engine_errors_total"):
        assert name in text


# --- the `grm serve` command: workers and graceful shutdown -----------------------------------------------------------


def test_grm_serve_workers_answer_requests_and_report_the_judge_time(judge):
    process, url = grm_serve("--base-url", judge.base_url, "--model", "sim", "--k", "2", "--workers", "2", "--group-size", "1")
    try:
        responses = [httpx.post(f"{url}/get_reward", json=GOOD, timeout=30) for _ in range(6)]
        assert all(r.status_code == 200 and len(r.json()["rewards"]) == 1 for r in responses)
        assert all(float(r.headers["x-grm-judge-seconds"]) > 0 for r in responses)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_sigterm_drains_in_flight_requests_before_exiting():
    import signal

    with SimulatedJudge(noise=0.0, seed=0, delay_s=1.0) as slow:
        process, url = grm_serve("--base-url", slow.base_url, "--model", "sim", "--k", "1")

        async def in_flight():
            async with httpx.AsyncClient(timeout=30) as client:
                calls = [client.post(f"{url}/get_reward", json={"query": [PROMPT + str(i)], "prompts": [PROMPT]})
                         for i in range(8)]
                sent = asyncio.gather(*calls)
                await asyncio.sleep(0.4)  # the requests are in the server, waiting for the slow judge
                process.send_signal(signal.SIGTERM)
                return await sent

        responses = asyncio.run(in_flight())
        assert [r.status_code for r in responses] == [200] * 8
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining


def test_the_openrlhf_example_script_serves_and_answers_openrlhfs_client(tmp_path):
    """examples/openrlhf_remote_rm.sh with JUDGE=simulated: simulated judge, `grm serve`, one rollout sent by
    OpenRLHF's client."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("curl") is None:
        pytest.skip("the example script polls /health with curl")
    ports = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRM_")}
    env.update(JUDGE="simulated", GRM_PORT=str(ports[0]), JUDGE_PORT=str(ports[1]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    script = Path(__file__).resolve().parent.parent / "examples" / "openrlhf_remote_rm.sh"
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "'rewards': [" in result.stdout and "'scores': [" in result.stdout


def test_an_unencodable_rollout_is_refused_alone_and_its_batch_is_judged(judge):
    """A lone surrogate once passed validation and gave every rollout of its micro-batch a 500."""
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0)
    bad = b'{"query": ["<p>x\\ud800"], "prompts": ["<p>"], "labels": [""]}'

    async def send(url):
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.post(url, json={"query": [PROMPT + with_quality(str(i), 5)], "prompts": [PROMPT]})
                     for i in range(20)]
            calls.append(client.post(url, content=bad, headers={"content-type": "application/json"}))
            calls.append(client.post(url.replace("/get_reward", "/v1/score"),
                                     content=b'[{"prompt": "q", "responses": ["a", "b\\udfff"]}]',
                                     headers={"content-type": "application/json"}))
            return await asyncio.gather(*calls)

    with Server(reward, batch_window_ms=200) as server:
        replies = asyncio.run(send(f"{server.url}/get_reward"))
    assert [r.status_code for r in replies[:20]] == [200] * 20
    assert replies[20].status_code == 422 and "lone surrogate" in replies[20].json()["error"]["message"]
    assert replies[21].status_code == 422 and "requests[0]: responses: Value error, [1]: lone surrogate" in \
        replies[21].json()["error"]["message"]


def test_a_rollout_the_engine_refuses_fails_alone_through_openrlhfs_client(judge):
    """The engine answers 400 for one rollout's judge prompt (over its context) while 20 others share its window:
    once all 21 got a 503, and OpenRLHF's client retried the innocents into the same batch until they failed."""
    judge.state.settings.refuse_containing = "TOO-LONG"
    try:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=2, cache_size=0, max_retries=1,
                           retry_backoff=0.01)
        with Server(reward, batch_window_ms=300) as server:
            url = f"{server.url}/get_reward"

            async def send():
                async with httpx.AsyncClient(timeout=30) as client:
                    good = [client.post(url, json={"query": [PROMPT + with_quality(str(i), 6)], "prompts": [PROMPT]})
                            for i in range(20)]
                    bad = client.post(url, json={"query": [PROMPT + "TOO-LONG " + with_quality("x", 9)],
                                                 "prompts": [PROMPT]})
                    return await asyncio.gather(*good, bad)

            replies = asyncio.run(send())
            assert [r.status_code for r in replies[:20]] == [200] * 20  # the innocents were judged
            assert all(r.json()["extra_logs"]["grm_valid_samples"] == 2 for r in replies[:20])
            assert replies[20].status_code == 422 and "maximum context length" in replies[20].text
            # OpenRLHF's own client, one rollout per call as 0.11 sends them: only the refused one ends without reward
            queries = [PROMPT + with_quality(str(i), 6) for i in range(15)] + [PROMPT + "TOO-LONG"]

            async def via_client():
                executor = agent.SingleTurnAgentExecutor(remote_rm_url=url)
                return await asyncio.gather(*(executor._fetch_rewards_via_http([q], [PROMPT], [""]) for q in queries),
                                            return_exceptions=True)

            outcomes = asyncio.run(via_client())
            assert all(isinstance(o, list) and o[0]["rewards"] == [6.0] for o in outcomes[:15]), outcomes[:15]
            assert isinstance(outcomes[15], RuntimeError)
            # the refusal is remembered: the client's retries of the culprit are answered 422 without judging it again
            seen = judge.stats()["requests"]
            again = httpx.post(url, json={"query": [PROMPT + "TOO-LONG"], "prompts": [PROMPT]}, timeout=30)
            assert again.status_code == 422 and "maximum context length" in again.text
            assert judge.stats()["requests"] == seen
    finally:
        judge.state.settings.refuse_containing = None


def test_a_rollout_whose_judgements_all_fail_to_parse_gets_the_bottom_not_a_prize(judge):
    """Once such a rollout got the middle of the range (5.5), above an honest poor answer's 1.0."""
    judge.state.settings.invalid_rate = 1.0
    try:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=2, cache_size=0)
        with Server(reward) as server:
            reply = httpx.post(f"{server.url}/get_reward", json={"query": [PROMPT + "x"], "prompts": [PROMPT]}).json()
        assert reply["rewards"] == [1.0] and reply["scores"] == [0.0]
        assert reply["extra_logs"]["grm_valid_samples"] == 0
    finally:
        judge.state.settings.invalid_rate = 0.0


def test_v1_score_refuses_a_request_with_more_responses_than_the_limit(judge):
    """20,000 one-character responses in one request once held the event loop for 45 s and took 6 GB."""
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1)
    with Server(reward) as server:
        reply = httpx.post(f"{server.url}/v1/score", json=[{"prompt": "q", "responses": ["a"] * 20_000}], timeout=30)
        assert reply.status_code == 413
        assert "requests[0].responses: 20000 responses exceed the limit of 64" in reply.json()["error"]["message"]
        assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("metadata, message", [
    (b'{"id": "x\\ud800"}', "metadata: Value error, id: lone surrogate"),
    (b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}", "metadata: Value error, nested 301 levels deep, at most 32"),
])
def test_v1_score_refuses_metadata_it_could_not_send_back(judge, metadata, message):
    """Metadata is copied into the result: a lone surrogate or deep nesting in it once failed the answer with a 500."""
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1)
    with Server(reward) as server:
        body = b'[{"prompt": "q", "responses": ["a", "b"], "metadata": ' + metadata + b"}]"
        reply = httpx.post(f"{server.url}/v1/score", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 422 and message in reply.json()["error"]["message"], reply.text


def test_a_huge_bad_field_is_not_echoed_back_whole(judge):
    """A 5 MB bad field was once echoed in a 5 MB 422."""
    reward = GRMReward(base_url=judge.base_url, model="sim", k=1)
    with Server(reward) as server:
        reply = httpx.post(f"{server.url}/get_reward", json={"query": "y" * 2_000_000, "prompts": ["a"]})
        assert reply.status_code == 422 and len(reply.content) < 2000 and "query" in reply.json()["error"]["message"]


def test_a_refusal_is_remembered_for_a_while_not_for_good(judge):
    """Issue 26, defect 8: one transient 400 from the engine made a rollout a culprit for good (every later delivery
    answered 422 without the judge being asked). Now its repeats get the 422 at once only for culprit_memory_s."""
    judge.state.settings.refuse_containing = "FLAKY"
    try:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0, max_retries=1, retry_backoff=0.01)
        with Server(reward, culprit_memory_s=1.0) as server:
            body = {"query": [PROMPT + "FLAKY " + with_quality("x", 7)], "prompts": [PROMPT]}
            first = httpx.post(f"{server.url}/get_reward", json=body, timeout=30)
            assert first.status_code == 422
            judge.state.settings.refuse_containing = None  # the engine's trouble passes
            seen = judge.stats()["requests"]
            repeat = httpx.post(f"{server.url}/get_reward", json=body, timeout=30)
            assert repeat.status_code == 422 and judge.stats()["requests"] == seen  # a retry burst: not judged again
            time.sleep(1.1)
            later = httpx.post(f"{server.url}/get_reward", json=body, timeout=30)
            assert later.status_code == 200 and later.json()["rewards"] == [7.0]
    finally:
        judge.state.settings.refuse_containing = None


def test_a_hung_judge_call_reaches_only_its_own_rollout(judge):
    """Issue 26, defect 2: one prompt the judge never answers made the 20 innocent rollouts batched with it fail with
    503 at the request timeout, although the judge had answered their own calls at once."""
    judge.state.settings.hang_containing = "HANG-ME"
    try:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0, timeout=120)
        with Server(reward, batch_window_ms=300, request_timeout_s=3.0, group_size=1) as server:
            url = f"{server.url}/get_reward"

            async def timed(client, prompt, body):
                started = time.monotonic()
                reply = await client.post(url, json={"query": [prompt + body], "prompts": [prompt]})
                return reply, time.monotonic() - started

            async def send():
                async with httpx.AsyncClient(timeout=30) as client:
                    innocents = [timed(client, f"Q{i}: say something.\n", with_quality(str(i), 6)) for i in range(20)]
                    return await asyncio.gather(*innocents, timed(client, "Q-hung: say it.\n", "HANG-ME"))

            replies = asyncio.run(send())
        assert [r.status_code for r, _ in replies[:20]] == [200] * 20
        assert max(seconds for _, seconds in replies[:20]) < 2.0  # answered as soon as their own judgements were done
        assert replies[20][0].status_code == 503 and replies[20][1] >= 3.0
    finally:
        judge.state.settings.hang_containing = None


def test_a_hung_judge_call_whose_rollout_timed_out_is_cancelled_and_frees_its_slot(judge):
    """Issue 26, defect 3: the engine call of a rollout that timed out kept its concurrency slot for the engine's
    whole timeout, so as many hung prompts as slots stopped all judging."""
    judge.state.settings.hang_containing = "HANG-ME"
    try:
        reward = GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0, timeout=120, max_concurrency=2)
        with Server(reward, batch_window_ms=50, request_timeout_s=1.5, group_size=1) as server:
            url = f"{server.url}/get_reward"

            async def post(client, prompt, body):
                return await client.post(url, json={"query": [prompt + body], "prompts": [prompt]})

            async def hung_then_innocents():
                async with httpx.AsyncClient(timeout=30) as client:
                    hung = await asyncio.gather(*(post(client, f"H{i}: go.\n", "HANG-ME") for i in range(2)))
                    innocents = await asyncio.gather(*(post(client, f"I{i}: go.\n", with_quality("x", 7))
                                                       for i in range(5)))
                    return hung, innocents

            hung, innocents = asyncio.run(hung_then_innocents())
            assert [r.status_code for r in hung] == [503, 503]
            assert [r.status_code for r in innocents] == [200] * 5  # the two slots were freed by the cancellation
            deadline = time.monotonic() + 5
            while judge.stats()["hung"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert judge.stats()["hung"] == 0  # the hung calls were closed, not left running
    finally:
        judge.state.settings.hang_containing = None
