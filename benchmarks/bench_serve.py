"""Loopback load test of `grm serve` the way OpenRLHF drives it: single-rollout POST /get_reward requests at a fixed
concurrency, against the simulated judge as engine (k=1, no delay), compared with a server built the way OpenRLHF's
reference ``serve_rm`` is (the judge called inside each async handler, no cross-request batching).

    python benchmarks/bench_serve.py --requests 20000 --concurrency 256     # writes results/serve_load.json

Servers run in their own processes (uvicorn); the load generator is this process (aiohttp, one pooled session).
"Added latency" is a request's client-side latency minus the judge engine time of its micro-batch (the server's
``X-GRM-Judge-Seconds`` header): the window, queueing, HTTP, parsing and voting that the server adds.
"""


import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import httpx2
from _report import print_table, write_report

PROMPT = "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_judge(port: int, delay_s: float) -> None:
    from grm_plugin.testing.simulated_judge import main

    main(["--port", str(port), "--noise", "1.0", "--settings", json.dumps({"delay_s": delay_s})])


def run_server(port: int, judge_port: int, kind: str, window_ms: float, max_batch: int) -> None:
    import logging

    import uvicorn
    from fastapi import FastAPI, Request

    from grm_plugin import GRMReward
    from grm_plugin.server import ServeSettings, create_app

    logging.disable(logging.WARNING)
    reward = GRMReward(base_url=f"http://127.0.0.1:{judge_port}/v1", model="sim", k=1, cache_size=0)
    if kind == "grm-serve":
        app = create_app(reward, ServeSettings(port=port, batch_window_ms=window_ms, max_batch=max_batch))
    else:  # OpenRLHF's reference serve_rm shape: score inside the handler, one request at a time per call
        app = FastAPI()

        @app.post("/get_reward")
        async def get_reward(request: Request) -> dict:
            data = await request.json()
            responses = [q[len(p):] for q, p in zip(data["query"], data["prompts"])]
            rewards = await reward.acall(data["prompts"], responses)
            return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (None: this process) and its live child processes."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *(process.children(recursive=True) if pid is not None else [])]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def histogram_quantiles(text: str, name: str, quantiles: Sequence[float]) -> list[float | None]:
    """Upper bucket bounds (ms) holding the given quantiles of a Prometheus histogram in exposition ``text``."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    out: list[float | None] = []
    for q in quantiles:
        out.append(next((1000 * bound for bound, seen in buckets if total and seen >= q * total), None))
    return out


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, requests: int, concurrency: int, rate: float | None = None) -> dict[str, Any]:
    """``requests`` single-rollout requests over one pooled aiohttp session (the client library OpenRLHF uses; it
    is lighter than httpx on this CPU budget). Closed loop (``rate`` None): ``concurrency`` workers, each sending
    its next request as soon as the last one is answered. Open loop: requests arrive as a Poisson process of
    ``rate`` per second (rollouts finishing generation at independent times), at most ``concurrency`` in flight."""
    import aiohttp

    latencies: list[float] = []
    added: list[float] = []
    waits: list[float] = []
    statuses: Counter[int] = Counter()
    answered: Counter[int] = Counter()
    next_id = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=180)) as session:
        async def one(i: int) -> None:
            body = {"query": [f"{PROMPT}Sample {i} of the sea."], "prompts": [PROMPT], "labels": [""]}
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as response:
                    statuses[response.status] += 1
                    data = await response.json()
                    if response.status == 200 and len(data["rewards"]) == 1:
                        answered[i] += 1
                        judge_s = response.headers.get("X-GRM-Judge-Seconds")
                        if judge_s is not None:
                            added.append(time.perf_counter() - started - float(judge_s))
                            waits.append(float(response.headers["X-GRM-Wait-Seconds"]))
            except aiohttp.ClientError:
                statuses[-1] += 1
            latencies.append(time.perf_counter() - started)

        async def worker() -> None:
            for i in next_id:
                await one(i)

        async def open_loop() -> None:
            gate = asyncio.Semaphore(concurrency)
            arrivals = random.Random(0)
            tasks = []

            async def gated(i: int) -> None:
                async with gate:
                    await one(i)

            loop = asyncio.get_running_loop()
            due = loop.time()
            for i in range(requests):  # an absolute schedule, so sleeping late does not lower the rate
                due += arrivals.expovariate(rate)
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                tasks.append(asyncio.create_task(gated(i)))
            await asyncio.gather(*tasks)

        started = time.perf_counter()
        gc.collect()
        gc.disable()  # the load generator is not under test: keep its collector pauses out of the latencies
        try:
            if rate is None:
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            else:
                await open_loop()
        finally:
            gc.enable()
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    added.sort()
    return {"requests": requests, "concurrency": concurrency, "seconds": elapsed, "requests_per_s": requests / elapsed,
            "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[int(len(ordered) * 0.99) - 1],
            "mean_ms": 1000 * statistics.mean(ordered),
            "added_p50_ms": 1000 * added[len(added) // 2] if added else None,
            "added_p99_ms": 1000 * added[int(len(added) * 0.99) - 1] if added else None,
            "wait_p50_ms": 1000 * sorted(waits)[len(waits) // 2] if waits else None,
            "wait_p99_ms": 1000 * sorted(waits)[int(len(waits) * 0.99) - 1] if waits else None,
            "statuses": {str(k): v for k, v in statuses.items()},
            "answered_once": sum(1 for v in answered.values() if v == 1), "lost": requests - len(answered)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--window-ms", type=float, default=15.0)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--kinds", default="grm-serve,serve_rm-style")
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: Poisson arrivals per second (default: closed loop at --concurrency)")
    parser.add_argument("--judge-delay", type=float, default=0.0,
                        help="seconds the simulated judge takes per request (0: measure the server's own ceiling)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load.json"))
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    judge_port = free_port()
    judge = context.Process(target=run_judge, args=(judge_port, args.judge_delay), daemon=True)
    judge.start()
    wait_up(f"http://127.0.0.1:{judge_port}/v1/models")
    rows = []
    try:
        for kind in args.kinds.split(","):
            port = free_port()
            if kind.startswith("grm-serve-workers-"):  # the CLI with uvicorn worker processes
                env = {k: v for k, v in os.environ.items() if not k.startswith("GRM_")} | {"GRM_CACHE_SIZE": "0"}
                server = subprocess.Popen(
                    [sys.executable, "-m", "grm_plugin.cli", "serve", "--port", str(port), "--workers",
                     kind.rsplit("-", 1)[1], "--base-url", f"http://127.0.0.1:{judge_port}/v1", "--model", "sim",
                     "--k", "1", "--batch-window-ms", str(args.window_ms), "--max-batch", str(args.max_batch)],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                server = context.Process(target=run_server,
                                         args=(port, judge_port, kind, args.window_ms, args.max_batch), daemon=True)
                server.start()
            try:
                wait_up(f"http://127.0.0.1:{port}/health" if kind.startswith("grm-serve")
                        else f"http://127.0.0.1:{port}/docs")
                before = httpx2.get(f"http://127.0.0.1:{judge_port}/stats").json()
                cpu_before = {name: cpu_seconds(pid) for name, pid in
                              (("server", server.pid), ("judge", judge.pid), ("client", None))}
                result = asyncio.run(load(f"http://127.0.0.1:{port}/get_reward", args.requests, args.concurrency,
                                          args.rate))
                result["cpu_ms_per_request"] = {
                    name: 1000 * (cpu_seconds(pid) - cpu_before[name]) / args.requests
                    for name, pid in (("server", server.pid), ("judge", judge.pid), ("client", None))}
                after = httpx2.get(f"http://127.0.0.1:{judge_port}/stats").json()
                result["judge_requests"] = after["requests"] - before["requests"]
                if kind == "grm-serve":
                    text = httpx2.get(f"http://127.0.0.1:{port}/metrics").text
                    lines = text.splitlines()
                    count = sum(float(x.split()[1]) for x in lines if x.startswith("grm_batch_rollouts_count"))
                    total = sum(float(x.split()[1]) for x in lines if x.startswith("grm_batch_rollouts_sum"))
                    result["mean_batch_rollouts"] = total / count if count else 0.0
                    result["server_added_p50_ms"], result["server_added_p99_ms"] = histogram_quantiles(
                        text, "grm_added_seconds", (0.5, 0.99))
                rows.append({"server": kind, **result})
            finally:
                server.terminate()
                server.wait(timeout=30) if isinstance(server, subprocess.Popen) else server.join(timeout=10)
    finally:
        judge.terminate()
    header = ["server", "requests", "conc.", "req/s", "p50 ms", "p99 ms", "added p50/p99 ms (client)",
              "server-side added p50/p99 <= ms", "judge requests",
              "mean batch", "lost", "CPU ms/req server/judge/client", "statuses"]
    table = [[r["server"], r["requests"], r["concurrency"], f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}",
              f"{r['p99_ms']:.1f}", (f"{r['added_p50_ms']:.1f}/{r['added_p99_ms']:.1f}" if r["added_p50_ms"] is not None
                                     else "n/a"),
              (f"{r['server_added_p50_ms']:g}/{r['server_added_p99_ms']:g}" if r.get("server_added_p99_ms") else "n/a"),
              r["judge_requests"], f"{r.get('mean_batch_rollouts', 1.0):.1f}", r["lost"],
              "/".join(f"{v:.2f}" for v in r["cpu_ms_per_request"].values()),
              r["statuses"]] for r in rows]
    print_table(header, table)
    report = {"settings": vars(args), "python": sys.version.split()[0], "platform": platform.platform(),
              "cpu_count": multiprocessing.cpu_count(), "rows": rows}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
