"""The HTTP face of `grm serve` against hostile clients, overload and shutdown: header and body deadlines, header size,
connection limits, load shedding with Retry-After, client disconnects, the API key for OpenRLHF's header-less client,
bounded shutdown and signals, and counters that add up over --workers. A real uvicorn server on loopback (in a
thread, with the same uvicorn settings as `grm serve`, or `grm serve` itself in a process); the judge engine is the
simulated judge (an OpenAI-compatible HTTP server standing in for a language model)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
agent = pytest.importorskip("openrlhf.utils.agent")

from served_app import Server, grm_serve  # noqa: E402

from grm_plugin import GRMReward  # noqa: E402
from grm_plugin.server import ServeSettings  # noqa: E402
from grm_plugin.serving import RedactKeys  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge  # noqa: E402

PROMPT = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
GOOD = {"query": [PROMPT + "5"], "prompts": [PROMPT], "labels": [""]}


@pytest.fixture(scope="module")
def judge():
    with SimulatedJudge(noise=0.0, seed=0) as server:
        yield server


def reward_for(judge, **settings):
    return GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0, max_retries=0, **settings)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# --- slow and oversized clients -------------------------------------------------------------------------------------


def test_headers_that_never_finish_get_408_and_the_connection_is_closed(judge):
    with Server(reward_for(judge), header_timeout_s=0.5) as server:
        stalled = connect(server.port)
        stalled.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        silent = connect(server.port)  # opens and sends nothing at all
        started = time.monotonic()
        answer, silence = read_all(stalled), read_all(silent)
        assert answer.startswith(b"HTTP/1.1 408") and b"headers not received within 0.5 s" in answer
        assert silence.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 8  # cut off by the header deadline, not by the socket timeout of 10 s
        assert httpx.post(f"{server.url}/get_reward", json=GOOD, timeout=30).status_code == 200


def test_an_oversized_header_is_431_and_the_server_keeps_serving(judge):
    with Server(reward_for(judge), max_header_bytes=16 * 1024) as server:
        sock = connect(server.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 431") and b"exceed 16384 bytes" in answer
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_a_body_that_stalls_midway_is_408(judge):
    with Server(reward_for(judge), body_timeout_s=0.5) as server:
        sock = connect(server.port)
        sock.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"query\": [")
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"body not received within 0.5 s" in answer
        assert server.metric('grm_requests_total{endpoint="/get_reward",status="408"}') == 1


def test_connections_beyond_the_limit_get_503_not_a_reset_and_slow_ones_are_cut_off(judge):
    with Server(reward_for(judge), max_connections=8, header_timeout_s=1.0) as server:
        idle = [connect(server.port) for _ in range(10)]  # slow clients holding connections
        time.sleep(0.2)
        busy = httpx.post(f"{server.url}/get_reward", json=GOOD, timeout=30)
        assert busy.status_code == 503  # an answer, not a reset connection
        for sock in idle:
            assert read_all(sock).startswith(b"HTTP/1.1 408")
        assert httpx.post(f"{server.url}/get_reward", json=GOOD, timeout=30).status_code == 200


def test_a_client_that_disconnects_mid_body_is_counted_as_499_not_as_a_server_error(judge, caplog):
    with Server(reward_for(judge)) as server:
        sock = connect(server.port)
        sock.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"query\"")
        time.sleep(0.3)
        sock.close()
        deadline = time.monotonic() + 10
        while server.metric('grm_requests_total{endpoint="/get_reward",status="499"}') < 1:
            assert time.monotonic() < deadline, "the disconnect was not counted"
            time.sleep(0.05)
        assert server.metric('grm_requests_total{endpoint="/get_reward",status="500"}') == 0
        assert "unhandled error" not in caplog.text


# --- load shedding --------------------------------------------------------------------------------------------------


def test_offered_load_above_capacity_is_shed_with_503_and_retry_after_while_admitted_rollouts_are_judged():
    with SimulatedJudge(noise=0.0, seed=0, delay_s=0.25) as slow:
        reward = GRMReward(base_url=slow.base_url, model="sim", k=1, cache_size=0, max_concurrency=1)
        with Server(reward, batch_window_ms=5, max_batch=2, max_queue_wait_s=1.0, group_size=1) as server:
            for i in range(3):  # the server learns how fast the judge answers: about 8 rollouts a second
                assert httpx.post(f"{server.url}/get_reward", timeout=30, json={
                    "query": [PROMPT + f"warm {i}"], "prompts": [PROMPT]}).status_code == 200

            async def burst():
                async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
                    return await asyncio.gather(*(client.post(f"{server.url}/get_reward", json={
                        "query": [PROMPT + f"rollout {i}"], "prompts": [PROMPT]}) for i in range(60)))

            answers = asyncio.run(burst())
            statuses = [a.status_code for a in answers]
            shed = [a for a in answers if a.status_code == 503]
            assert set(statuses) == {200, 503}
            assert statuses.count(200) >= 4  # what fits in the queue bound is admitted and judged
            assert all(int(a.headers["retry-after"]) >= 1 and "overloaded" in a.json()["error"]["message"]
                       for a in shed)
            assert server.metric("grm_shed_rollouts_total") == len(shed)
            time.sleep(1.5)
            assert httpx.post(f"{server.url}/get_reward", json=GOOD, timeout=30).status_code == 200


# --- the API key ----------------------------------------------------------------------------------------------------


def test_openrlhfs_client_reaches_a_keyed_server_with_the_key_in_the_url(judge):
    with Server(reward_for(judge), api_key="s3cret") as server:
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{server.url}/get_reward?api_key=s3cret")
        answers = asyncio.run(executor._fetch_rewards_via_http([PROMPT + "5"], [PROMPT], [""]))
        assert len(answers) == 1 and len(answers[0]["rewards"]) == 1
        metrics = httpx.get(f"{server.url}/metrics?api_key=s3cret").text
        assert 'grm_requests_total{endpoint="/get_reward",status="200"} 1.0' in metrics
        assert httpx.post(f"{server.url}/get_reward?api_key=wrong", json=GOOD).status_code == 401
        assert httpx.post(f"{server.url}/get_reward", json=GOOD).status_code == 401


def test_the_url_key_is_masked_in_the_access_log():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', (
        "127.0.0.1:5000", "POST", "/get_reward?api_key=s3cret&x=1", "1.1", 200), None)
    assert RedactKeys().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /get_reward?api_key=***&x=1 HTTP/1.1" 200'


def test_the_key_can_come_from_a_file_and_not_both_ways(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert ServeSettings(api_key_file=key_file).api_key.get_secret_value() == "from-file"
    with pytest.raises(ValueError, match="api_key_file: give the key either directly or in a file"):
        ServeSettings(api_key="x", api_key_file=key_file)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="api_key_file: .*empty"):
        ServeSettings(api_key_file=tmp_path / "empty")
    with pytest.raises(ValueError, match="api_key_file: cannot read"):
        ServeSettings(api_key_file=tmp_path / "missing")


def test_a_key_on_the_command_line_is_warned_about():
    run = subprocess.run([sys.executable, "-m", "grm_plugin.cli", "serve", "--api-key", "x", "--api-key-file",
                          "/nonexistent/key", "--port", "1"], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("GRM_")})
    assert run.returncode == 2
    assert "--api-key on the command line is visible to every user" in run.stderr
    assert "api_key_file" in run.stderr


# --- shutdown and signals (grm serve in its own process) ------------------------------------------------------------


async def _signal_while_in_flight(process, url, signals, n=4):
    """Send ``n`` requests, then the signals 0.3 s apart once they are in the server; their answers (or errors)."""
    async with httpx.AsyncClient(timeout=60) as client:
        calls = [client.post(f"{url}/get_reward", json={"query": [PROMPT + str(i)], "prompts": [PROMPT]})
                 for i in range(n)]
        sent = asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0.5)
        for sig in signals:
            process.send_signal(sig)
            await asyncio.sleep(0.3)
        return await sent


@pytest.mark.slow
def test_sighup_drains_in_flight_requests_like_sigterm():
    with SimulatedJudge(noise=0.0, seed=0, delay_s=1.0) as slow:
        process, url = grm_serve("--base-url", slow.base_url, "--model", "sim", "--k", "1")
        answers = asyncio.run(_signal_while_in_flight(process, url, [signal.SIGHUP]))
        assert [getattr(a, "status_code", a) for a in answers] == [200] * 4
        assert process.wait(timeout=30) in (0, -signal.SIGHUP)


@pytest.mark.slow
def test_shutdown_with_a_hung_engine_is_bounded_by_the_drain_timeout_and_a_second_signal_exits_at_once():
    with SimulatedJudge(noise=0.0, seed=0, delay_s=120.0) as hung:
        args = ("--base-url", hung.base_url, "--model", "sim", "--k", "1", "--drain-timeout", "2")
        process, url = grm_serve(*args)
        started = time.monotonic()
        asyncio.run(_signal_while_in_flight(process, url, [signal.SIGTERM]))
        process.wait(timeout=30)
        bounded = time.monotonic() - started
        assert bounded < 10, process.stdout.read()  # drain 2 s + the batcher's 1 s, not the engine's 120 s

        process, url = grm_serve(*args[:-1], "60")
        started = time.monotonic()
        asyncio.run(_signal_while_in_flight(process, url, [signal.SIGTERM, signal.SIGTERM]))
        process.wait(timeout=30)
        assert time.monotonic() - started < 10, process.stdout.read()  # the second signal, not the 60 s drain
        assert "second signal" in process.stdout.read()


@pytest.mark.slow
def test_workers_share_their_counters_so_scrapes_add_up_and_never_go_backwards(judge):
    process, url = grm_serve("--base-url", judge.base_url, "--model", "sim", "--k", "1", "--workers", "2", "--group-size", "1")
    try:
        seen = []
        with httpx.Client(timeout=30) as client:
            for i in range(12):
                with httpx.Client(timeout=30) as fresh:  # new connections spread over the workers
                    assert fresh.post(f"{url}/get_reward", json={
                        "query": [PROMPT + f"w{i}"], "prompts": [PROMPT]}).status_code == 200
                text = client.get(f"{url}/metrics").text
                seen.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                if line.startswith('grm_requests_total{endpoint="/get_reward",status="200"}')))
        assert seen == [float(i + 1) for i in range(12)]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_group_wait_longer_than_the_request_timeout_is_refused_only_where_groups_wait():
    """Issue 26, defect 8: with --group-size 1 no rollout waits for others, so the check must not stop the server."""
    with pytest.raises(ValueError, match="group_wait_s: 200 s must be below request_timeout_s"):
        ServeSettings(group_wait_s=200, request_timeout_s=170)
    with pytest.raises(ValueError, match="group_wait_s"):
        ServeSettings(group_size="auto", group_wait_s=200, request_timeout_s=170)
    assert ServeSettings(group_size=1, group_wait_s=200, request_timeout_s=170).group_size == 1
