"""Several judge replicas behind one GRMReward: least-outstanding routing with affinity, ejection of a replica that
dies and re-admission after a health probe, every request answered once. The replicas are simulated judges (OpenAI-
compatible HTTP servers standing in for a language model), one of them stopped mid-run and restarted on its port."""

from __future__ import annotations

import asyncio
import collections

import pytest

from grm_plugin import GRMReward, ScoreRequest
from grm_plugin.config import GRMConfig, make_backend
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality


def requests(n: int, tag: str = "") -> list[ScoreRequest]:
    return [ScoreRequest(prompt=f"question {tag}{i}", responses=[with_quality("a", 7), with_quality("b", 3)])
            for i in range(n)]


@pytest.fixture
def replicas():
    judges = [SimulatedJudge(noise=0.0, seed=0, delay_s=0.02).start() for _ in range(3)]
    yield judges
    for judge in judges:
        judge.stop()


def test_base_url_takes_a_list_or_comma_separated_urls():
    assert GRMConfig(base_url=["http://a:1/v1", "http://b:2/v1"]).base_url == "http://a:1/v1,http://b:2/v1"
    backend = make_backend(GRMConfig(base_url="http://a:1/v1, http://b:2/v1", model="m"))
    assert [r["replica"] for r in backend.replica_stats()] == ["http://a:1/v1", "http://b:2/v1"]


def test_load_spreads_over_replicas_and_each_prompts_samples_stay_on_one(replicas):
    reward = GRMReward(base_url=[j.base_url for j in replicas], model="sim", k=4, cache_size=0)
    results = reward.score(requests(30))
    assert all(r.rewards == [7.0, 3.0] for r in results)
    served = [j.stats()["requests"] for j in replicas]
    assert sum(served) > 0 and all(count > 0 for count in served)  # every replica took a share
    for result in results:  # affinity: all samples of a request came from one replica
        assert len({j.replica for j in result.judgements}) == 1


def test_a_replica_killed_mid_run_is_ejected_its_calls_go_elsewhere_and_it_is_readmitted(replicas):
    reward = GRMReward(base_url=[j.base_url for j in replicas], model="sim", k=2, cache_size=0, max_retries=1,
                       retry_backoff=0.01, timeout=5)

    async def run():
        backend = reward._states.get().backend
        first = await reward.ascore(requests(12, "a"))
        replicas[1].stop()  # dies between calls and during the next ones
        during = await reward.ascore(requests(24, "b"))
        stats = backend.replica_stats()
        replicas[1].requested_port = replicas[1].port
        replicas[1].start()  # back on its port
        backend.pool.replicas[1].ejected_until = 0.001  # its backoff is over: the next choice probes it
        after = await reward.ascore(requests(24, "c"))
        return first, during, after, stats, backend.replica_stats()

    first, during, after, stats_down, stats_after = asyncio.run(run())
    for batch in (first, during, after):  # every request answered, once, with the right rewards
        assert len(batch) in (12, 24) and all(r.rewards == [7.0, 3.0] for r in batch)
    assert stats_down[1]["ejected"] and stats_down[1]["ejections"] >= 1
    by_replica = collections.Counter(j.replica for r in during for j in r.judgements)
    assert replicas[1].base_url not in by_replica  # nothing was answered by the dead replica
    readmitted = collections.Counter(j.replica for r in after for j in r.judgements)
    assert readmitted[replicas[1].base_url] > 0  # probed healthy and taking calls again
    assert not stats_after[1]["ejected"]


def test_a_refusal_of_the_requests_content_is_not_a_failover(replicas):
    for judge in replicas:
        judge.state.settings.refuse_containing = "TOO-LONG"
    reward = GRMReward(base_url=[j.base_url for j in replicas], model="sim", k=1, cache_size=0, max_retries=0)
    bad = ScoreRequest(prompt="TOO-LONG question", responses=["a"])

    async def run():
        outcomes = await reward.ascore_settled([bad, *requests(3)])
        return outcomes, reward._states.get().backend.replica_stats()

    outcomes, stats = asyncio.run(run())
    assert isinstance(outcomes[0], Exception) and all(r.rewards == [7.0, 3.0] for r in outcomes[1:])
    assert sum(j.stats()["requests"] for j in replicas) == 4  # the refused call was not sent to the others
    assert not any(r["ejected"] for r in stats)


def test_grm_serve_reports_each_replica_in_its_metrics(replicas):
    import httpx
    from served_app import Server

    reward = GRMReward(base_url=[j.base_url for j in replicas], model="sim", k=1, cache_size=0)
    with Server(reward, group_size=1) as server:
        for i in range(6):
            assert httpx.post(f"{server.url}/v1/score", json=[{"prompt": f"q{i}", "responses": ["a"]}]).status_code == 200
        text = httpx.get(f"{server.url}/metrics").text
        for judge in replicas:
            assert f'grm_replica_requests{{replica="{judge.base_url}"}}' in text
        assert server.metric("grm_replica_requests") == 6 and server.metric("grm_replica_ejected") == 0


def test_a_burst_of_failures_on_one_replica_is_one_ejection():
    from grm_plugin.backends.replicas import ReplicaPool

    async def never(_):
        return False

    pool = ReplicaPool(["http://a", "http://b"], never, eject_s=2.0)
    for _ in range(48):  # 48 calls in flight to it fail at once
        pool.eject(pool.replicas[0])
    assert pool.replicas[0].ejections == 1 and pool.replicas[0].strikes == 1
