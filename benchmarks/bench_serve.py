"""Loopback load test of `grm serve` the way OpenRLHF drives it: single-rollout POST /get_reward requests at a fixed
concurrency, against the simulated judge as engine (k=1, no delay), compared with a server built the way OpenRLHF's
reference ``serve_rm`` is (the judge called inside each async handler, no cross-request batching).

    python benchmarks/bench_serve.py --requests 20000 --concurrency 256     # writes results/serve_load.json

Servers run in their own processes (uvicorn); the load generator is this process (httpx2, one pooled client).
"Added latency" is the server's latency minus the judge engine's own (measured by a direct call at the same
concurrency is not separable here, so the table reports end-to-end latency percentiles and the judge request count).
"""


import argparse
import asyncio
import multiprocessing
import platform
import socket
import statistics
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


def run_judge(port: int) -> None:
    from grm_plugin.simulated_judge import main

    main(["--port", str(port), "--noise", "1.0"])


def run_server(port: int, judge_port: int, kind: str, window_ms: float, max_batch: int) -> None:
    import logging

    import uvicorn
    from fastapi import FastAPI, Request

    from grm_plugin import GRMReward
    from grm_plugin.server import ServeSettings, create_app

    logging.disable(logging.WARNING)
    reward = GRMReward(base_url=f"http://127.0.0.1:{judge_port}/v1", model="sim", k=1, cache_size=0,
                       max_concurrency=256)
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


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    answered: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=180) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"query": [f"{PROMPT}Sample {i} of the sea."], "prompts": [PROMPT], "labels": [""]}
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                    statuses[response.status_code] += 1
                    if response.status_code == 200 and len(response.json()["rewards"]) == 1:
                        answered[i] += 1
                except httpx2.HTTPError:
                    statuses[-1] += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"requests": requests, "concurrency": concurrency, "seconds": elapsed, "requests_per_s": requests / elapsed,
            "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[int(len(ordered) * 0.99) - 1],
            "mean_ms": 1000 * statistics.mean(ordered), "statuses": {str(k): v for k, v in statuses.items()},
            "answered_once": sum(1 for v in answered.values() if v == 1), "lost": requests - len(answered)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--window-ms", type=float, default=15.0)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--kinds", default="grm-serve,serve_rm-style")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load.json"))
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    judge_port = free_port()
    judge = context.Process(target=run_judge, args=(judge_port,), daemon=True)
    judge.start()
    wait_up(f"http://127.0.0.1:{judge_port}/v1/models")
    rows = []
    try:
        for kind in args.kinds.split(","):
            port = free_port()
            server = context.Process(target=run_server, args=(port, judge_port, kind, args.window_ms, args.max_batch),
                                     daemon=True)
            server.start()
            try:
                wait_up(f"http://127.0.0.1:{port}/health" if kind == "grm-serve" else f"http://127.0.0.1:{port}/docs")
                before = httpx2.get(f"http://127.0.0.1:{judge_port}/stats").json()
                result = asyncio.run(load(f"http://127.0.0.1:{port}/get_reward", args.requests, args.concurrency))
                after = httpx2.get(f"http://127.0.0.1:{judge_port}/stats").json()
                result["judge_requests"] = after["requests"] - before["requests"]
                if kind == "grm-serve":
                    text = httpx2.get(f"http://127.0.0.1:{port}/metrics").text
                    count = sum(float(x.split()[1]) for x in text.splitlines() if x.startswith("grm_batch_rollouts_count"))
                    total = sum(float(x.split()[1]) for x in text.splitlines() if x.startswith("grm_batch_rollouts_sum"))
                    result["mean_batch_rollouts"] = total / count if count else 0.0
                rows.append({"server": kind, **result})
            finally:
                server.terminate()
                server.join(timeout=10)
    finally:
        judge.terminate()
    header = ["server", "requests", "conc.", "req/s", "p50 ms", "p99 ms", "judge requests", "mean batch", "lost",
              "statuses"]
    table = [[r["server"], r["requests"], r["concurrency"], f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}",
              f"{r['p99_ms']:.1f}", r["judge_requests"], f"{r.get('mean_batch_rollouts', 1.0):.1f}", r["lost"],
              r["statuses"]] for r in rows]
    print_table(header, table)
    report = {"settings": vars(args), "python": sys.version.split()[0], "platform": platform.platform(),
              "cpu_count": multiprocessing.cpu_count(), "rows": rows}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
