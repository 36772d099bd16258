"""CPU cost per judge request of the maintained async HTTP clients, side by side on the same loopback traffic.

    python benchmarks/bench_http_clients.py                     # writes results/http_clients.json
    python benchmarks/bench_http_clients.py --client-python /path/to/venv/bin/python   # clients not in this venv

No language model is involved: the server is the simulated judge (``python -m grm_plugin.testing.simulated_judge
--port P --noise 0``, critiques padded with ``critique_tokens``), a real OpenAI-compatible HTTP server in its own
process that answers every chat completion at once with a ~1.2 KB JSON body. The traffic is what ``grm serve`` sends
a judge: POST /v1/chat/completions with a ~3.2 KB JSON body (the GRM's own judge prompt for a pair of responses,
captured from the library, every request a different prompt), closed loop at ``--concurrency`` (64,
``HTTPTransport``'s default) over one pooled client.

Each client runs in a fresh child process (``--client-python``, default this interpreter), after a warm-up that opens
the pool's connections; that process's CPU time (``time.process_time()``: user + system of all its threads, which
counts the Rust/C clients' own I/O threads too) over the measured requests, divided by their number, is "CPU ms per
request". The server's CPU is not counted. Every raw client row does what ``HTTPTransport._attempt`` does around the
client: the same pool settings where the client has them (64 connections kept alive, 4 s idle expiry, total
deadline), a semaphore, ``asyncio.wait_for(..., timeout)`` as the total deadline, the body sent as JSON and the
answer parsed with ``json``; so rows differ only by the client. The ``HTTPTransport`` row is the library's transport
itself (``request_json``, retries included) as ``grm_plugin/backends/http.py`` is now.

``--e2e`` measures ``grm serve`` end to end instead (``bench_serve.py``'s servers and judge, noise 1, no delay):
single-rollout POST /get_reward requests where every rollout has its own prompt, so each is its own judge request
(``bench_serve.py`` sends one prompt for all rollouts, which the server groups into few judge requests), reporting
rollouts/s and CPU ms per rollout of the server process, once per ``--transport`` (``label=path`` of a
``grm_plugin/backends/http.py`` to load in the server in place of the installed one, e.g. the previous version from
version control; ``label=current`` for the one in the tree):

    python benchmarks/bench_http_clients.py --e2e --transport before=/tmp/http_old.py --transport after=current \
        --out benchmarks/results/http_clients_e2e.json

Friendlier than a real judge: loopback, no TLS, a server that answers at once with a small body, every connection
kept busy (no idle expiry, no reconnects). A real judge takes seconds per answer and sends longer ones (hosted ones
over TLS), so the client does other work per request too; what is measured here is the client's own fixed cost per
request, at its most visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 300.0  # HTTPTransport's default total deadline
MARK = "@@I@@"

# label -> (the module to import, a note); the order is the table's
CLIENTS = {
    "HTTPTransport": ("grm_plugin.backends.http", "the library's transport as it is now (request_json)"),
    "httpx2": ("httpx2", "as HTTPTransport._new_pool configured it before (Limits 64/64, keepalive 4 s)"),
    "httpx": ("httpx", "same settings as httpx2"),
    "aiohttp": ("aiohttp", "TCPConnector(limit=64, keepalive_timeout=4), ClientTimeout(total, connect=10)"),
    "niquests": ("niquests", "AsyncSession(pool_maxsize=64), HTTP/1.1"),
    "curl_cffi": ("curl_cffi", "requests.AsyncSession(max_clients=64) over libcurl"),
    "aiosonic": ("aiosonic", "TCPConnector(PoolConfig(size=64))"),
    "pyreqwest": ("pyreqwest", "Rust reqwest; ClientBuilder().max_connections(64)"),
    "pyqwest": ("pyqwest", "Rust hyper; HTTPTransport(pool_max_idle_per_host=64)"),
    "rnet": ("rnet", "Rust; Client(pool_max_idle_per_host=64)"),
}


# ---------------------------------------------------------------------------------------------------------- child


async def make_client(name: str, concurrency: int, headers: dict[str, str]) -> tuple[Callable[[str, dict], Awaitable[Any]],
                                                                                      Callable[[], Awaitable[None]]]:
    """(post(url, body) -> the parsed JSON answer, close()) for client ``name``, set up like HTTPTransport."""
    semaphore = asyncio.Semaphore(concurrency)

    def bounded(call: Callable[[str, dict], Awaitable[Any]]) -> Callable[[str, dict], Awaitable[Any]]:
        async def post(url: str, body: dict) -> Any:
            async with semaphore:
                return await asyncio.wait_for(call(url, body), TIMEOUT)
        return post

    if name == "HTTPTransport":
        from grm_plugin.backends.http import HTTPTransport

        transport = HTTPTransport(api_key=headers["Authorization"].split()[1], timeout=TIMEOUT,
                                  max_concurrency=concurrency)

        async def post(url: str, body: dict) -> Any:
            return await transport.request_json("POST", url, body)
        return post, transport.aclose
    if name in ("httpx2", "httpx"):
        httpx = __import__(name)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=4.0)
        client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(TIMEOUT, connect=10.0), headers=headers)

        async def call(url: str, body: dict) -> Any:
            response = await client.request("POST", url, json=body)
            return response.json()
        return bounded(call), client.aclose
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=4.0),
                                        timeout=aiohttp.ClientTimeout(total=TIMEOUT, connect=10.0), headers=headers)

        async def call(url: str, body: dict) -> Any:
            async with session.request("POST", url, json=body) as response:
                return json.loads(await response.read())
        return bounded(call), session.close
    if name == "niquests":
        import niquests

        session = niquests.AsyncSession(pool_connections=4, pool_maxsize=concurrency, timeout=TIMEOUT,
                                        headers=headers, disable_http2=True, disable_http3=True)

        async def call(url: str, body: dict) -> Any:
            response = await session.post(url, json=body)
            return json.loads(response.content)
        return bounded(call), session.close
    if name == "curl_cffi":
        from curl_cffi.requests import AsyncSession

        session = AsyncSession(max_clients=concurrency, timeout=TIMEOUT, headers=headers)

        async def call(url: str, body: dict) -> Any:
            response = await session.post(url, json=body)
            return json.loads(response.content)
        return bounded(call), session.close
    if name == "aiosonic":
        import aiosonic
        from aiosonic.pools import PoolConfig

        client = aiosonic.HTTPClient(aiosonic.TCPConnector(pool_configs={":default": PoolConfig(size=concurrency)}))

        async def call(url: str, body: dict) -> Any:
            response = await client.post(url, json=body, headers=headers)
            return json.loads(await response.content())

        async def close() -> None:
            await client.connector.cleanup()
        return bounded(call), close
    if name == "pyreqwest":
        from datetime import timedelta

        from pyreqwest.client import ClientBuilder

        client = (ClientBuilder().max_connections(concurrency).pool_max_idle_per_host(concurrency)
                  .pool_idle_timeout(timedelta(seconds=4)).timeout(timedelta(seconds=TIMEOUT))
                  .connect_timeout(timedelta(seconds=10)).default_headers(headers).build())

        async def call(url: str, body: dict) -> Any:
            response = await client.post(url).body_bytes(json.dumps(body).encode()).header(
                "content-type", "application/json").build().send()
            return json.loads(bytes(await response.bytes()))
        return bounded(call), client.close
    if name == "pyqwest":
        import pyqwest

        transport = pyqwest.HTTPTransport(timeout=TIMEOUT, connect_timeout=10.0, pool_idle_timeout=4.0,
                                          pool_max_idle_per_host=concurrency, enable_otel=False)
        client = pyqwest.Client(transport)
        send_headers = {**headers, "content-type": "application/json"}

        async def call(url: str, body: dict) -> Any:
            response = await client.post(url, send_headers, json.dumps(body).encode())
            return json.loads(response.content)

        async def close() -> None:
            closer = getattr(transport, "aclose", None) or getattr(transport, "close", None)
            if closer is not None:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
        return bounded(call), close
    if name == "rnet":
        import rnet

        client = rnet.Client(timeout=int(TIMEOUT), connect_timeout=10, pool_idle_timeout=4,
                             pool_max_idle_per_host=concurrency, default_headers=headers)

        async def call(url: str, body: dict) -> Any:
            response = await client.post(url, json=body)
            return json.loads(await response.bytes())

        async def close() -> None:
            pass
        return bounded(call), close
    raise SystemExit(f"unknown client {name}")


async def child_load(name: str, url: str, bodies: list[dict], concurrency: int, warmup: int) -> dict[str, Any]:
    post, close = await make_client(name, concurrency, {"Authorization": "Bearer EMPTY"})
    errors: list[str] = []
    latencies: list[float] = []

    async def run(items: Sequence[dict]) -> None:
        queue = iter(items)

        async def worker() -> None:
            for body in queue:
                started = time.perf_counter()
                try:
                    data = await post(url, body)
                    latencies.append(time.perf_counter() - started)
                    if not isinstance(data["choices"][0]["message"]["content"], str):
                        errors.append("no content")
                except Exception as exc:  # counted, not fatal: the table shows them
                    errors.append(repr(exc)[:200])
        await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        await run(bodies[:warmup])  # opens the pool's connections
        errors.clear()
        latencies.clear()
        measured = bodies[warmup:]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await run(measured)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    n = len(measured)
    latencies.sort()
    return {"p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
            "client": name, "requests": n, "cpu_s": cpu, "wall_s": wall, "cpu_ms_per_request": 1000 * cpu / n,
            "requests_per_s": n / wall, "errors": len(errors), "first_error": errors[0] if errors else None,
            "version": _version(name)}


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"HTTPTransport": "grm-plugin", "curl_cffi": "curl_cffi"}.get(name, name)
    try:
        text = version(dist)
    except PackageNotFoundError:
        text = "?"
    if name == "HTTPTransport":
        from grm_plugin.backends import http

        text += " over " + next(m for m in ("aiohttp", "httpx2", "httpx") if hasattr(http, m))
    return text


def child_main(args: argparse.Namespace) -> None:
    template = json.loads(Path(args.bodies).read_text())
    text = template["messages"][0]["content"]
    bodies = [{**template, "messages": [{"role": "user", "content": text.replace(MARK, str(i))}]}
              for i in range(args.warmup + args.requests)]
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    result = asyncio.run(child_load(args.child, args.url, bodies, args.concurrency, args.warmup))
    result["loop"] = args.loop
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------- parent


def judge_body() -> dict[str, Any]:
    """The body the GRM sends its judge for one prompt and two responses, captured from the library itself (an
    in-thread simulated judge records it); ``MARK`` in a response is replaced per request so every prompt differs."""
    sys.path.insert(0, str(REPO))
    from grm_plugin import GRMReward
    from grm_plugin.testing.simulated_judge import SimulatedJudge

    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nExplain, in a short "
              "paragraph, why the sky looks blue during the day but red at sunset, for a curious ten-year-old."
              "<|im_end|>\n<|im_start|>assistant\n")
    responses = [f"Sample {MARK}. Sunlight is made of every colour. Air molecules scatter short blue waves much more "
                 "than long red ones (Rayleigh scattering), so blue light reaches your eyes from every direction "
                 "of the sky. At sunset the light crosses far more air; most blue is scattered away before it "
                 "arrives, and the reds and oranges that are left colour the sky. {{quality=8}}",
                 f"Variant {MARK}. The sky is blue because it reflects the ocean, and at sunset the sun is cooler, so "
                 "it glows red like embers in a fire. This happens every day everywhere. {{quality=3}}"]
    with SimulatedJudge(noise=0.0) as judge:
        GRMReward(base_url=judge.base_url, model="sim", k=1, cache_size=0).score(
            [{"prompt": prompt, "responses": responses}])
        return judge.state.bodies[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def run_child(python: str, name: str, loop: str, url: str, bodies: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [python, str(Path(__file__).resolve()), "--child", name, "--loop", loop, "--url", url, "--bodies", bodies,
           "--requests", str(args.requests), "--concurrency", str(args.concurrency), "--warmup", str(args.warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"client": name, "loop": loop, "skipped": tail[0][:300]}


# ---------------------------------------------------------------------------------------------------------- e2e


def run_e2e_server(port: int, judge_port: int, transport_file: str | None, window_ms: float, max_batch: int) -> None:
    """bench_serve's ``grm serve`` process, with ``transport_file`` loaded as grm_plugin.backends.http first."""
    sys.path[:0] = [str(REPO), str(Path(__file__).parent)]
    if transport_file:
        import importlib.util

        import grm_plugin.backends  # noqa: F401  (the package, so the module below is its submodule)

        spec = importlib.util.spec_from_file_location("grm_plugin.backends.http", transport_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules["grm_plugin.backends.http"] = module
        spec.loader.exec_module(module)
    from bench_serve import run_server

    run_server(port, judge_port, "grm-serve", window_ms, max_batch)


async def e2e_load(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    """Closed loop of single-rollout /get_reward requests, every rollout a prompt of its own (aiohttp client)."""
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_id = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def worker() -> None:
            for i in next_id:
                prompt = (f"<|im_start|>user\nWrite one sentence about the sea, variation {i}.<|im_end|>\n"
                          "<|im_start|>assistant\n")
                body = {"query": [f"{prompt}The sea number {i} is grey."], "prompts": [prompt], "labels": [""]}
                started = time.perf_counter()
                try:
                    async with session.post(url, json=body) as response:
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                        await response.read()
                except aiohttp.ClientError:
                    statuses[-1] = statuses.get(-1, 0) + 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rollouts": requests, "seconds": elapsed, "rollouts_per_s": requests / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * .99) - 1],
            "statuses": {str(k): v for k, v in statuses.items()}}


def e2e_main(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing

    sys.path.insert(0, str(Path(__file__).parent))
    from _report import print_table, write_report
    from bench_serve import cpu_seconds, run_judge

    def get_json(url: str) -> Any:
        import urllib.request

        return json.loads(urllib.request.urlopen(url, timeout=10).read())

    context = multiprocessing.get_context("spawn")
    transports = args.transport or ["current=current"]
    rows = []
    for repeat in range(args.repeats):
        for item in transports:
            label, _, path = item.partition("=")
            judge_port, port = free_port(), free_port()
            judge = context.Process(target=run_judge, args=(judge_port, 0.0), daemon=True)
            judge.start()
            server = context.Process(target=run_e2e_server, daemon=True, args=(
                port, judge_port, None if path in ("", "current") else str(Path(path).resolve()), 15.0, 256))
            server.start()
            try:
                wait_up(f"http://127.0.0.1:{judge_port}/v1/models")
                wait_up(f"http://127.0.0.1:{port}/health")
                asyncio.run(e2e_load(f"http://127.0.0.1:{port}/get_reward", 256, args.concurrency))  # warm-up
                before = get_json(f"http://127.0.0.1:{judge_port}/stats")["requests"]
                cpu = {name: cpu_seconds(pid) for name, pid in (("server", server.pid), ("judge", judge.pid))}
                result = asyncio.run(e2e_load(f"http://127.0.0.1:{port}/get_reward", args.requests,
                                              args.concurrency))
                result["cpu_ms_per_rollout"] = {name: 1000 * (cpu_seconds(pid) - cpu[name]) / args.requests
                                                for name, pid in (("server", server.pid), ("judge", judge.pid))}
                result["judge_requests"] = get_json(f"http://127.0.0.1:{judge_port}/stats")["requests"] - before
            finally:
                server.terminate()
                judge.terminate()
                server.join(timeout=10)
                judge.join(timeout=10)
            row = {"transport": label, "file": path, "repeat": repeat, "concurrency": args.concurrency, **result}
            rows.append(row)
            print(f"[{repeat}] {label}: {result['rollouts_per_s']:.0f} rollouts/s, server CPU "
                  f"{result['cpu_ms_per_rollout']['server']:.2f} ms/rollout, judge requests {result['judge_requests']}",
                  flush=True)
    summary = []
    for item in transports:
        label = item.partition("=")[0]
        done = [r for r in rows if r["transport"] == label]
        summary.append({"transport": label,
                        "rollouts_per_s": statistics.median(r["rollouts_per_s"] for r in done),
                        "server_cpu_ms_per_rollout": statistics.median(r["cpu_ms_per_rollout"]["server"] for r in done),
                        "p50_ms": statistics.median(r["p50_ms"] for r in done),
                        "p99_ms": statistics.median(r["p99_ms"] for r in done),
                        "judge_requests_per_rollout": statistics.median(r["judge_requests"] / r["rollouts"]
                                                                        for r in done),
                        "non_200": sum(v for r in done for k, v in r["statuses"].items() if k != "200")})
    print()
    print_table(["transport", "rollouts/s", "server CPU ms/rollout", "p50/p99 ms", "judge req/rollout", "non-200"],
                [[r["transport"], f"{r['rollouts_per_s']:.0f}", f"{r['server_cpu_ms_per_rollout']:.2f}",
                  f"{r['p50_ms']:.0f}/{r['p99_ms']:.0f}", f"{r['judge_requests_per_rollout']:.2f}", r["non_200"]]
                 for r in summary])
    report = {"settings": {"requests": args.requests, "concurrency": args.concurrency, "repeats": args.repeats,
                           "transports": transports, "window_ms": 15.0, "max_batch": 256, "judge_delay_s": 0.0},
              "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "summary": summary, "runs": rows}
    write_report(report, args.out)
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per run")
    parser.add_argument("--warmup", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs per client (interleaved); the median is shown")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--loops", default="asyncio,uvloop", help="event loops (grm serve runs on uvloop)")
    parser.add_argument("--critique-tokens", type=int, default=120,
                        help="the simulated judge pads each critique to about this many tokens (answers of ~1.3 KB)")
    parser.add_argument("--client-python", default=sys.executable,
                        help="interpreter of the client processes (a venv with the candidate clients installed)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "http_clients.json"))
    parser.add_argument("--e2e", action="store_true", help="measure grm serve end to end (distinct prompts)")
    parser.add_argument("--transport", action="append",
                        help="with --e2e: label=path of an http.py for the server (label=current: the tree's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return {}
    if args.e2e:
        return e2e_main(args)
    from _report import print_table, write_report

    body = judge_body()
    port = free_port()
    judge = subprocess.Popen([sys.executable, "-m", "grm_plugin.testing.simulated_judge", "--port", str(port),
                              "--noise", "0", "--settings", json.dumps({"critique_tokens": args.critique_tokens})],
                             cwd=REPO)
    runs: list[dict[str, Any]] = []
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_up(f"http://127.0.0.1:{port}/v1/models")
        with tempfile.TemporaryDirectory() as tmp:
            bodies = str(Path(tmp) / "body.json")
            Path(bodies).write_text(json.dumps(body))
            sample = json.loads(subprocess.run(
                ["curl", "-s", "-X", "POST", "-H", "content-type: application/json", "--data-binary", f"@{bodies}",
                 url], capture_output=True, text=True).stdout or "{}")
            for repeat in range(args.repeats):
                for loop in args.loops.split(","):
                    for name in args.clients.split(","):
                        result = run_child(args.client_python, name, loop, url, bodies, args)
                        result["repeat"] = repeat
                        runs.append(result)
                        shown = (f"{result['cpu_ms_per_request']:.3f} ms CPU/req, {result['requests_per_s']:.0f} "
                                 f"req/s, {result['errors']} errors" if "skipped" not in result
                                 else f"skipped: {result['skipped']}")
                        print(f"[{repeat}] {loop:8s} {name:14s} {shown}", flush=True)
    finally:
        judge.terminate()
        judge.wait(timeout=30)
    rows = []
    for loop in args.loops.split(","):
        for name in args.clients.split(","):
            done = [r for r in runs if r["client"] == name and r["loop"] == loop and "skipped" not in r]
            if not done:
                skipped = next((r["skipped"] for r in runs if r["client"] == name and r["loop"] == loop), "")
                rows.append({"client": name, "loop": loop, "skipped": skipped})
                continue
            rows.append({"client": name, "loop": loop, "version": done[0]["version"], "note": CLIENTS[name][1],
                         "cpu_ms_per_request": statistics.median(r["cpu_ms_per_request"] for r in done),
                         "cpu_ms_per_request_runs": [round(r["cpu_ms_per_request"], 4) for r in done],
                         "requests_per_s": statistics.median(r["requests_per_s"] for r in done),
                         "p50_ms": statistics.median(r["p50_ms"] for r in done),
                         "p99_ms": statistics.median(r["p99_ms"] for r in done),
                         "errors": sum(r["errors"] for r in done),
                         "first_error": next((r["first_error"] for r in done if r["first_error"]), None)})
    for loop in args.loops.split(","):
        base = next((r for r in rows if r["client"] == "httpx2" and r["loop"] == loop and "skipped" not in r), None)
        for r in rows:
            if r["loop"] == loop and base is not None and "skipped" not in r:
                r["cpu_vs_httpx2"] = r["cpu_ms_per_request"] / base["cpu_ms_per_request"]
    header = ["client", "version", "loop", "CPU ms/req", "vs httpx2", "req/s", "p50/p99 ms", "errors"]
    table = [[r["client"], r.get("version", "-"), r["loop"],
              f"{r['cpu_ms_per_request']:.3f}" if "skipped" not in r else "skipped",
              f"{r['cpu_vs_httpx2']:.2f}x" if "cpu_vs_httpx2" in r else "-",
              f"{r['requests_per_s']:.0f}" if "skipped" not in r else "-",
              f"{r['p50_ms']:.0f}/{r['p99_ms']:.0f}" if "skipped" not in r else "-", r.get("errors", "-")] for r in rows]
    print()
    print_table(header, table)
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "loop", "url", "bodies")},
              "request_body_bytes": len(json.dumps(body)), "answer_body_bytes": len(json.dumps(sample)),
              "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "rows": rows, "runs": runs}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
