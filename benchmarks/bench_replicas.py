"""Throughput over 1 vs 3 judge replicas, and a replica killed for 5 s of a 30 s run: lost requests and goodput.

    python benchmarks/bench_replicas.py --seconds 30 --concurrency 48      # writes results/replicas.json

Each replica is a simulated judge process-thread that models its own capacity: it serves ``--capacity`` requests at
once, each taking ``--service-s`` (others queue), so one replica does about capacity / service_s requests a second.
A closed loop of ``--concurrency`` clients sends distinct ScoreRequests (2 responses, k=1) through one GRMReward for
``--seconds``. In the kill run, replica 2 is stopped at 10 s and restarted on its port at 15 s. A request is lost
when ``ascore`` raised; every answered request is checked for the right rewards (noise 0) and counted once.
"""

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import print_table, write_report  # noqa: E402

from grm_plugin import GRMReward, ScoreRequest  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402


async def closed_loop(reward, seconds, concurrency, events=()):
    """``concurrency`` clients for ``seconds``; ``events`` are (at_s, callable) run in a thread at those times."""
    started = time.monotonic()
    answered, lost, wrong, counter = 0, 0, 0, iter(range(10**9))
    per_second = collections.Counter()
    replicas = collections.Counter()

    async def client():
        nonlocal answered, lost, wrong
        while time.monotonic() - started < seconds:
            i = next(counter)
            request = ScoreRequest(prompt=f"question {i}", responses=[with_quality("a", 7), with_quality("b", 3)])
            try:
                [result] = await reward.ascore([request])
            except Exception:
                lost += 1
                continue
            answered += 1
            wrong += result.rewards != [7.0, 3.0]
            per_second[int(time.monotonic() - started)] += 1
            replicas.update(j.replica for j in result.judgements)

    async def timeline():
        for at, action in events:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
            await asyncio.to_thread(action)

    await asyncio.gather(timeline(), *(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"answered": answered, "lost": lost, "wrong": wrong, "goodput_per_s": answered / elapsed,
            "per_second": [per_second[s] for s in range(int(elapsed) + 1)], "by_replica": dict(replicas)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--service-s", type=float, default=0.2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "replicas.json"))
    args = parser.parse_args()
    judges = [SimulatedJudge(noise=0.0, seed=0, capacity=args.capacity, delay_s=args.service_s).start()
              for _ in range(3)]
    report, rows = {"args": vars(args), "runs": {}}, []
    try:
        def reward_over(n):
            return GRMReward(base_url=[j.base_url for j in judges[:n]], model="sim", k=1, cache_size=0,
                             max_retries=1, retry_backoff=0.05, timeout=10, max_concurrency=256)

        def kill():
            judges[2].stop()

        def restart():
            judges[2].requested_port = judges[2].port
            judges[2].start()

        runs = [("1 replica", reward_over(1), ()), ("3 replicas", reward_over(3), ()),
                ("3 replicas, #3 killed 10-15 s", reward_over(3), ((10.0, kill), (15.0, restart)))]
        for name, reward, events in runs:
            figures = asyncio.run(closed_loop(reward, args.seconds, args.concurrency, events))
            report["runs"][name] = figures
            shares = [str(figures["by_replica"].get(j.base_url, figures["by_replica"].get(None, 0)) if i == 0 or
                          len(figures["by_replica"]) > 1 else 0) for i, j in enumerate(judges)]
            rows.append([name, figures["answered"], figures["lost"], figures["wrong"],
                         f"{figures['goodput_per_s']:.1f}", " / ".join(shares),
                         min(figures["per_second"][:-1] or [0])])
    finally:
        for judge in judges:
            judge.stop()
    print(f"closed loop of {args.concurrency} clients for {args.seconds:g} s; each replica serves {args.capacity} at "
          f"once, {args.service_s:g} s each (about {args.capacity / args.service_s:.0f} requests/s)")
    print_table(["run", "answered", "lost", "wrong reward", "goodput / s", "answers by replica #1 / #2 / #3", "slowest second"],
                rows)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
