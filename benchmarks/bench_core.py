"""Benchmark of GRMReward's own overhead: network path against a bare OpenAI client, and CPU per request.

Two measurements:

1. **Network path.** The simulated judge (``grm_plugin.testing.simulated_judge``) runs as a *separate process*, so it does
   not share the client's interpreter (see ``start_judge`` for why it is started with a long keep-alive). N ScoreRequests (a short prompt, 2 responses with hidden quality) are scored
   with ``GRMReward(k=8, max_concurrency=64, cache_size=0).ascore(requests)``. The *same HTTP requests* are then
   sent by a bare ``openai.AsyncOpenAI`` loop at the same concurrency (``asyncio.Semaphore``): for every
   ScoreRequest the engine requests come from ``GRMReward.plan`` (the seeded per-sample orders, grouped, one request
   with ``n=count`` per distinct order, prompts from ``build_judge_messages``), all precomputed outside the timed
   region.
   The bare loop only sends and collects the choices' text. A third side (``--httpx-baseline``, on by default)
   sends the same bodies with a bare ``httpx2.AsyncClient`` configured like GRMReward's engine, so GRMReward's own
   code can be told apart from its HTTP stack. Rounds alternate (GRM, bare, httpx, then the reverse, ...); medians,
   the ratio GRM/bare (target <= 1.05) and the client's CPU per HTTP request are reported. The judge's ``/stats``
   request counts are checked to be equal on every side and equal to the plan, and a small untimed pass against
   an in-thread judge checks that every side sends the same request bodies (compared as canonical JSON).

2. **CPU per request, no network** (``time.process_time``), three nested scopes:
   ``core``  - what GRMReward does per request besides the network: draw orders and group them,
               ``build_judge_messages`` per distinct order, ``parse_judgement`` of k realistic judge outputs
               (written with ``render_judgement``), ``unshuffle``, ``vote_sum``, ``pick_best``, ``scale_rewards``
               (target <= 0.5 ms/request);
   ``core + validation + fingerprint`` - the same plus ``ScoreRequest.model_validate`` of a plain dict and the
               cache key (``fingerprint()`` + blake2b);
   ``full ascore, stub engine`` - ``GRMReward.ascore`` end to end with an in-process engine that returns
               precomputed completions: everything above plus tasks, Judgement/ScoreResult models and bookkeeping.

Run from the repository root::

    .venv/bin/python benchmarks/bench_core.py                 # defaults: 2000 requests, k=8, concurrency 64
    .venv/bin/python benchmarks/bench_core.py --requests 500 --rounds 3 --no-shuffle

Results are printed as a table and written as JSON (default ``benchmarks/results/core.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import httpx2
import openai

from grm_plugin.backends import Completion, SamplingParams
from grm_plugin.grm import GRMReward
from grm_plugin.orders import unshuffle
from grm_plugin.parsing import parse_judgement
from grm_plugin.templates import build_judge_messages, render_judgement
from grm_plugin.testing import simulated_judge
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality
from grm_plugin.types import ScoreRequest
from grm_plugin.voting import pick_best, scale_rewards, vote_sum

MODEL = "simulated-judge"
N_RESPONSES = 2
TARGET_RATIO = 1.05
TARGET_CPU_MS = 0.5
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "core.json"


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="ScoreRequests per measurement (default 2000)")
    parser.add_argument("--k", type=int, default=8, help="judgements sampled per request (default 8)")
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP requests in flight (default 64)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed runs of each side, alternating GRM/bare (default 5)")
    parser.add_argument("--cpu-repeats", type=int, default=5, help="repeats of each CPU measurement (default 5)")
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                        help="shuffle responses per sample (default on); off sends one request with n=k each")
    parser.add_argument("--httpx-baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a bare httpx2 loop, GRMReward's own transport (default on)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def raw_requests(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n distinct requests as plain dicts: a short prompt and 2 responses with a hidden quality each."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(["binary search", "photosynthesis", "TCP handshakes", "compound interest", "recursion"])
        rows.append({
            "prompt": f"Question {i}: explain {topic} in two sentences.",
            "responses": [
                with_quality(f"Answer A to question {i}: {topic} works step by step, as follows.",
                             round(rng.uniform(1, 10), 1)),
                with_quality(f"Answer B to question {i}: {topic} is simple; here is the gist.",
                             round(rng.uniform(1, 10), 1)),
            ],
        })
    return rows


def make_reward(base_url: str, args: argparse.Namespace, **extra: Any) -> GRMReward:
    return GRMReward(base_url=base_url, model=MODEL, k=args.k, max_concurrency=args.concurrency, cache_size=0,
                     shuffle=args.shuffle, **extra)


# ---------------------------------------------------------------------------------------------------------------
# The engine calls GRMReward makes, reproduced outside it


@dataclass(frozen=True)
class EngineCall:
    """One HTTP request GRMReward sends: the judge prompt of one distinct order and how many samples share it."""

    messages: list[dict[str, str]]
    n: int
    order: tuple[int, ...]


def planned_orders(reward: GRMReward, request: ScoreRequest) -> Counter[tuple[int, ...]]:
    """The orders GRMReward draws for ``request`` (its own ``plan``), grouped: order -> samples."""
    return Counter({tuple(p.order): p.n for p in reward.plan(request)})


def plan_calls(reward: GRMReward, requests: Sequence[ScoreRequest]) -> list[EngineCall]:
    """Every engine request GRMReward makes for ``requests``, in GRMReward's own order (``GRMReward.plan``)."""
    return [EngineCall(p.messages, p.n, tuple(p.order)) for request in requests for p in reward.plan(request)]


def check_plan_matches(reward: GRMReward, requests: Sequence[ScoreRequest], results: Sequence[Any]) -> None:
    """The orders GRMReward actually showed (kept on each Judgement) must be the ones the plan reproduces."""
    for i, (request, result) in enumerate(zip(requests, results)):
        shown = planned_orders(reward, request)
        actual = Counter(tuple(j.order) for j in result.judgements)
        if actual != shown:
            raise SystemExit(f"request {i}: GRMReward showed orders {dict(actual)}, the plan has {dict(shown)}")


def sampling_kwargs(sampling: SamplingParams, n: int) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create`` giving GRMReward's body (n is sent only when != 1)."""
    kwargs: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                              "max_tokens": sampling.max_tokens}
    if n != 1:
        kwargs["n"] = n
    if sampling.extra_body:
        kwargs["extra_body"] = sampling.extra_body
    return kwargs


# ---------------------------------------------------------------------------------------------------------------
# The simulated judge in its own process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_judge(port: int, timeout_s: float = 30.0) -> subprocess.Popen:
    """Spawn the simulated judge and wait until ``GET /v1/models`` answers.

    Its server-side keep-alive is long (3600 s) so that no client's idle connection is closed by the server at the
    moment the client reuses it (uvicorn's default of 5 s equals httpx2's own idle expiry)."""
    proc = simulated_judge.spawn(port, keep_alive_s=3600, noise=1.0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the simulated judge exited with status {proc.returncode}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/v1/models", timeout=1.0).status_code == 200:
                return proc
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit(f"the simulated judge did not answer within {timeout_s:.0f} s")


def stop_judge(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def judge_stats(admin: httpx2.AsyncClient, reset: bool = False) -> dict[str, Any]:
    """The judge's counters (``/stats``); with ``reset`` they are zeroed first."""
    if reset:
        (await admin.post("/control", json={"reset_stats": True})).raise_for_status()
    response = await admin.get("/stats")
    response.raise_for_status()
    return response.json()


# ---------------------------------------------------------------------------------------------------------------
# The two clients


async def run_grm(reward: GRMReward, requests: Sequence[ScoreRequest]) -> list[Any]:
    """GRMReward's path: one ``ascore`` call over all requests."""
    return await reward.ascore(requests)


async def run_bare(client: openai.AsyncOpenAI, calls: Sequence[EngineCall], sampling: SamplingParams,
                   concurrency: int) -> list[list[str]]:
    """The same engine requests with a bare OpenAI client; collects the choices' text, parses nothing."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(call: EngineCall) -> list[str]:
        async with semaphore:
            completion = await client.chat.completions.create(model=MODEL, messages=call.messages,
                                                              **sampling_kwargs(sampling, call.n))
        return [choice.message.content or "" for choice in completion.choices]

    return await asyncio.gather(*(one(call) for call in calls))


def request_body(call: EngineCall, sampling: SamplingParams) -> dict[str, Any]:
    """The JSON body GRMReward's OpenAIBackend sends for ``call``."""
    body: dict[str, Any] = {"model": MODEL, "messages": call.messages, "temperature": sampling.temperature,
                            "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
    if call.n != 1:
        body["n"] = call.n
    body.update(sampling.extra_body)
    return body


def make_httpx_client(base_url: str, concurrency: int) -> httpx2.AsyncClient:
    """An httpx2 client configured like OpenAIBackend's (same pool limits, same header)."""
    return httpx2.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer EMPTY"},
                             limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
                             timeout=httpx2.Timeout(300.0, connect=10.0))


async def run_bare_httpx(client: httpx2.AsyncClient, bodies: Sequence[dict[str, Any]],
                         concurrency: int) -> list[list[str]]:
    """The same engine requests over plain httpx2, GRMReward's own transport; separates GRMReward's own code from
    the difference between the openai client's HTTP stack and httpx2. Collects the choices' text."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> list[str]:
        async with semaphore:
            response = await client.post("/chat/completions", json=body)
        response.raise_for_status()
        return [choice["message"]["content"] or "" for choice in response.json()["choices"]]

    return await asyncio.gather(*(one(body) for body in bodies))



@dataclass
class Run:
    side: str
    wall_s: float
    client_cpu_s: float
    http_requests: int
    completions: int
    max_inflight: int


async def timed(side: str, admin: httpx2.AsyncClient, body: Callable[[], Awaitable[Any]]) -> Run:
    """Run ``body`` once with fresh judge counters; wall and client CPU time around it only."""
    await judge_stats(admin, reset=True)
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await body()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stats = await judge_stats(admin)
    return Run(side, wall, cpu, stats["requests"], stats["completions"], stats["max_inflight"])


def side_runners(reward: GRMReward, openai_client: openai.AsyncOpenAI, httpx_client: httpx2.AsyncClient | None,
                 requests: list[ScoreRequest], args: argparse.Namespace) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One zero-argument coroutine function per side; everything the bare sides send is precomputed here."""
    sampling = reward._sampling(N_RESPONSES)
    calls = plan_calls(reward, requests)
    sides: dict[str, Callable[[], Awaitable[Any]]] = {
        "grm": lambda: run_grm(reward, requests),
        "bare": lambda: run_bare(openai_client, calls, sampling, args.concurrency),
    }
    if httpx_client is not None:
        bodies = [request_body(call, sampling) for call in calls]
        sides["httpx"] = lambda: run_bare_httpx(httpx_client, bodies, args.concurrency)
    return sides


async def network_benchmark(base_url: str, args: argparse.Namespace, requests: list[ScoreRequest]) -> dict[str, Any]:
    """Alternating timed rounds of GRMReward and the bare client(s) against the judge process at ``base_url``."""
    reward = make_reward(base_url, args)
    calls = plan_calls(reward, requests)
    planned = (len(calls), sum(call.n for call in calls))
    openai_client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    httpx_client = make_httpx_client(base_url, args.concurrency) if args.httpx_baseline else None
    admin = httpx2.AsyncClient(base_url=base_url.removesuffix("/v1"))
    try:
        # Warm-up (untimed): open connections, import lazily loaded modules; check the plan on GRMReward's output.
        warm = requests[: min(len(requests), 256)]
        check_plan_matches(reward, warm, await run_grm(reward, warm))
        for name, run in side_runners(reward, openai_client, httpx_client, warm, args).items():
            if name != "grm":
                await run()

        sides = side_runners(reward, openai_client, httpx_client, requests, args)
        names = list(sides)
        runs: list[Run] = []
        for r in range(args.rounds):  # alternate: grm, bare[, httpx], then the reverse, ...
            for side in (names if r % 2 == 0 else names[::-1]):
                run = await timed(side, admin, sides[side])
                runs.append(run)
                print(f"  round {r + 1}/{args.rounds} {side:<5} {run.wall_s:7.3f} s  "
                      f"{run.http_requests} HTTP requests", flush=True)
    finally:
        await reward.aclose()
        await openai_client.close()
        if httpx_client is not None:
            await httpx_client.aclose()
        await admin.aclose()
    return summarize_runs(runs, planned, len(requests))


def summarize_runs(runs: list[Run], planned: tuple[int, int], n_requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {"planned_http_requests": planned[0], "planned_completions": planned[1]}
    sides = list(dict.fromkeys(r.side for r in runs))
    for side in sides:
        mine = [r for r in runs if r.side == side]
        wall = statistics.median(r.wall_s for r in mine)
        out[side] = {
            "wall_s": [round(r.wall_s, 4) for r in mine],
            "median_wall_s": round(wall, 4),
            "score_requests_per_s": round(n_requests / wall, 1),
            "http_requests_per_s": round(planned[0] / wall, 1),
            "client_cpu_ms_per_http_request": round(1000 * statistics.median(r.client_cpu_s for r in mine)
                                                    / planned[0], 4),
            "http_requests": sorted({r.http_requests for r in mine}),
            "completions": sorted({r.completions for r in mine}),
            "max_inflight": max(r.max_inflight for r in mine),
        }
    out["ratio_grm_over_bare"] = round(out["grm"]["median_wall_s"] / out["bare"]["median_wall_s"], 4)
    if "httpx" in out:
        out["ratio_grm_over_httpx"] = round(out["grm"]["median_wall_s"] / out["httpx"]["median_wall_s"], 4)
    out["request_counts_match"] = all(out[side]["http_requests"] == [planned[0]]
                                      and out[side]["completions"] == [planned[1]] for side in sides)
    return out


async def same_bodies_check(args: argparse.Namespace, requests: list[ScoreRequest]) -> dict[str, Any]:
    """Untimed: every side against an in-thread judge that records bodies; the multisets must all be equal."""
    def canonical(bodies: list[dict[str, Any]]) -> Counter[str]:
        return Counter(json.dumps(b, sort_keys=True) for b in bodies)

    with SimulatedJudge(noise=1.0) as judge:
        reward = make_reward(judge.base_url, args)
        openai_client = openai.AsyncOpenAI(base_url=judge.base_url, api_key="EMPTY", max_retries=0)
        httpx_client = make_httpx_client(judge.base_url, args.concurrency) if args.httpx_baseline else None
        seen: dict[str, Counter[str]] = {}
        try:
            for name, run in side_runners(reward, openai_client, httpx_client, requests, args).items():
                judge.reset()
                await run()
                seen[name] = canonical(judge.state.bodies)
        finally:
            await reward.aclose()
            await openai_client.close()
            if httpx_client is not None:
                await httpx_client.aclose()
    reference = seen["grm"]
    return {"checked_bodies": sum(reference.values()), "sides": list(seen),
            "identical": all(bodies == reference for bodies in seen.values())}


# ---------------------------------------------------------------------------------------------------------------
# CPU per request, no network


PRINCIPLES = ("1. Factual Accuracy (40%): every statement about the topic must be correct.\n"
              "2. Completeness (30%): the explanation covers the mechanism, not just a definition.\n"
              "3. Concision (20%): two sentences, as asked, with no filler.\n"
              "4. Clarity (10%): a reader new to the topic can follow it.")


def realistic_judgement(shown_scores: Sequence[int], score_format: str) -> str:
    """A judge output of typical shape and length (~1 KB): weighted criteria, a per-response analysis, scores."""
    notes = []
    for slot, score in enumerate(shown_scores, start=1):
        notes.append(f"Response {slot} addresses the question directly. Checking its claims step by step, the core "
                     f"explanation holds, though the second sentence is vaguer than it should be and one detail is "
                     f"left implicit. Against the weighted criteria it earns {score} out of 10.")
    return render_judgement(PRINCIPLES, "\n".join(notes), list(shown_scores), score_format)  # type: ignore[arg-type]


@dataclass
class CpuFixture:
    """Per request, precomputed: its raw dict, key, and k judge outputs for every order it shows."""

    raw: dict[str, Any]
    request: ScoreRequest
    texts: dict[tuple[int, ...], list[str]]


def cpu_fixtures(reward: GRMReward, raws: list[dict[str, Any]], requests: list[ScoreRequest]) -> list[CpuFixture]:
    rng = random.Random(1)
    fixtures = []
    for raw, request in zip(raws, requests):
        shown = planned_orders(reward, request)
        texts = {order: [realistic_judgement([rng.randint(1, 10) for _ in order], reward.template.score_format)
                         for _ in range(reward.config.k)]
                 for order in shown}
        fixtures.append(CpuFixture(raw, request, texts))
    return fixtures


def core_pipeline(reward: GRMReward, request: ScoreRequest, texts: dict[tuple[int, ...], list[str]]) -> list[float]:
    """GRMReward's per-request work besides the network: ``plan`` (shuffles + templating), parsing, voting."""
    c = reward.config
    n = request.n_responses
    rng = random.Random(f"{c.seed}:{request.fingerprint()}")
    valid = []
    for p in reward._plan(request, rng):
        for text in texts[tuple(p.order)][:p.n]:
            valid.append(unshuffle(parse_judgement(text, n, c.score_range).scores, p.order))
    votes = vote_sum(valid, n)
    rewards = scale_rewards(votes, len(valid), c.reward_scale, c.score_range)
    pick_best(votes, rng)
    return rewards


def cpu_core(reward: GRMReward, fixtures: list[CpuFixture]) -> float:
    t0 = time.process_time()
    for f in fixtures:
        core_pipeline(reward, f.request, f.texts)
    return time.process_time() - t0


def cpu_core_validated(reward: GRMReward, fixtures: list[CpuFixture]) -> float:
    t0 = time.process_time()
    for f in fixtures:
        request = ScoreRequest.model_validate(f.raw)
        core_pipeline(reward, request, f.texts)
    return time.process_time() - t0


class StubEngine:
    """An in-process engine returning precomputed completions, looked up by the prompt text (no HTTP, no JSON)."""

    def __init__(self, reward: GRMReward, fixtures: list[CpuFixture]) -> None:
        c = reward.config
        self.table: dict[str, list[Completion]] = {}
        for f in fixtures:
            for order, texts in f.texts.items():
                prompt = build_judge_messages(f.request, order, reward.template, c.score_range)[-1]["content"]
                self.table[prompt] = [Completion(t, "stop", 0, len(t) // 4) for t in texts]

    async def generate(self, messages_batch: Sequence[Any], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        return [self.table[messages[-1]["content"]][:n] for messages in messages_batch]

    async def aclose(self) -> None:
        pass


def cpu_full_ascore(reward: GRMReward, fixtures: list[CpuFixture]) -> float:
    requests = [f.request for f in fixtures]

    async def go() -> float:
        t0 = time.process_time()
        await reward.ascore(requests)
        return time.process_time() - t0

    return asyncio.run(go())


def cpu_benchmark(args: argparse.Namespace, raws: list[dict[str, Any]],
                  requests: list[ScoreRequest]) -> dict[str, Any]:
    """CPU milliseconds per request of the three scopes (median of ``--cpu-repeats`` runs over all requests)."""
    reward = make_reward("http://127.0.0.1:9/v1", args)  # never contacted
    fixtures = cpu_fixtures(reward, raws, requests)
    stubbed = make_reward("http://127.0.0.1:9/v1", args, backend=StubEngine(reward, fixtures))
    scopes: dict[str, Callable[[], float]] = {
        "core": lambda: cpu_core(reward, fixtures),
        "core_validation_fingerprint": lambda: cpu_core_validated(reward, fixtures),
        "full_ascore_stub_engine": lambda: cpu_full_ascore(stubbed, fixtures),
    }
    out: dict[str, Any] = {"parsed_outputs_per_request": args.k,
                           "judge_output_chars": len(next(iter(fixtures[0].texts.values()))[0])}
    for name, measure in scopes.items():
        measure()  # warm-up
        gc.collect()
        samples = [1000 * measure() / len(fixtures) for _ in range(args.cpu_repeats)]
        out[name] = {"ms_per_request": round(statistics.median(samples), 4),
                     "min_ms_per_request": round(min(samples), 4),
                     "samples_ms_per_request": [round(s, 4) for s in samples]}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Report


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": _dt.date.today().isoformat(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "openai": openai.__version__,
        "httpx2": httpx2.__version__,
        "settings": {"requests": args.requests, "k": args.k, "concurrency": args.concurrency, "rounds": args.rounds,
                     "cpu_repeats": args.cpu_repeats, "shuffle": args.shuffle,
                     "httpx_baseline": args.httpx_baseline, "responses_per_request": N_RESPONSES,
                     "model": MODEL, "judge_noise": 1.0, "cache_size": 0, "max_retries_bare": 0},
    }


SIDE_LABELS = {"grm": "GRMReward.ascore", "bare": "bare AsyncOpenAI", "httpx": "bare httpx2 (GRM's transport)"}


def print_report(report: dict[str, Any]) -> None:
    net, cpu, env = report["network"], report["cpu"], report["environment"]
    s = env["settings"]
    sides = [side for side in SIDE_LABELS if side in net]

    def ok(good: bool) -> str:
        return "ok" if good else "ABOVE TARGET"

    rows = [(f"{SIDE_LABELS[side]}, median wall", f"{net[side]['median_wall_s']:.3f} s",
             f"{net[side]['score_requests_per_s']:.0f} ScoreRequests/s, "
             f"{net[side]['http_requests_per_s']:.0f} HTTP req/s") for side in sides]
    rows.append(("ratio GRM / bare AsyncOpenAI", f"{net['ratio_grm_over_bare']:.3f}",
                 f"target <= {TARGET_RATIO} ({ok(net['ratio_grm_over_bare'] <= TARGET_RATIO)})"))
    if "ratio_grm_over_httpx" in net:
        rows.append(("ratio GRM / bare httpx2", f"{net['ratio_grm_over_httpx']:.3f}", "(same transport)"))
    rows += [(f"client CPU per HTTP request, {side}", f"{net[side]['client_cpu_ms_per_http_request']:.3f} ms", "")
             for side in sides]
    rows += [
        ("HTTP requests per run (" + " / ".join(sides) + " / plan)",
         " / ".join(str(net[side]["http_requests"]) for side in sides) + f" / {net['planned_http_requests']}",
         "match" if net["request_counts_match"] else "MISMATCH"),
        ("request bodies identical", str(report["bodies"]["identical"]),
         f"{report['bodies']['checked_bodies']} bodies per side checked"),
        ("CPU: templating+parsing+voting", f"{cpu['core']['ms_per_request']:.3f} ms/req",
         f"target <= {TARGET_CPU_MS} ({ok(cpu['core']['ms_per_request'] <= TARGET_CPU_MS)})"),
        ("CPU: + validation + fingerprint", f"{cpu['core_validation_fingerprint']['ms_per_request']:.3f} ms/req", ""),
        ("CPU: full ascore, stub engine", f"{cpu['full_ascore_stub_engine']['ms_per_request']:.3f} ms/req", ""),
    ]
    width = max(len(r[0]) for r in rows)
    rule = "-" * (width + 70)
    print(f"\nbench_core: {s['requests']} requests x {s['responses_per_request']} responses, k={s['k']}, "
          f"concurrency {s['concurrency']}, {s['rounds']} rounds, shuffle {'on' if s['shuffle'] else 'off'}; "
          f"{env['cpu_count']} CPUs, Python {env['python']}, openai {env['openai']}, httpx2 {env['httpx2']}")
    print(rule)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<26} {note}")
    print(rule)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    raws = raw_requests(args.requests)
    requests = [ScoreRequest.model_validate(raw) for raw in raws]

    print("checking that both clients send the same request bodies ...", flush=True)
    bodies = asyncio.run(same_bodies_check(args, requests[:100]))

    print(f"load average before the network benchmark: {os.getloadavg()[0]:.2f} "
          "(other processes on this machine distort the timings)", flush=True)
    port = free_port()
    print(f"starting the simulated judge process on port {port} ...", flush=True)
    judge = start_judge(port)
    try:
        network = asyncio.run(network_benchmark(f"http://127.0.0.1:{port}/v1", args, requests))
    finally:
        stop_judge(judge)

    print("measuring CPU per request (no network) ...", flush=True)
    cpu = cpu_benchmark(args, raws, requests)

    report = {"environment": environment(args), "network": network, "bodies": bodies, "cpu": cpu,
              "targets": {"ratio_grm_over_bare": TARGET_RATIO, "cpu_ms_per_request": TARGET_CPU_MS}}
    print_report(report)
    write_json(report, args.out)
    if not (network["request_counts_match"] and bodies["identical"]):
        raise SystemExit("GRMReward and the bare client did not send the same requests; see above")
    return report


if __name__ == "__main__":
    main()
