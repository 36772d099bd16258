"""Cohorts (issue 17): does `grm serve` judge a prompt's rollouts together when OpenRLHF sends them one by one, at
different times, and what does holding them cost?

    python benchmarks/bench_cohorts.py                      # 32 x 8 and 128 x 8, writes results/cohorts.json (~4 min)
    python benchmarks/bench_cohorts.py --quick --out /tmp/cohorts_quick.json      # 16 x 8 only (about 2 minutes)
    python benchmarks/bench_cohorts.py --prompts 64 --configs 8,1 --steps 3

Traffic, as OpenRLHF 0.11 makes it: a rollout batch of P prompts x S samples (``--prompts``, ``--samples``) starts
at once; each sample is POSTed alone to ``/get_reward`` (``{"query": [prompt + response], "prompts": [prompt],
"labels": [label]}``) the moment its generation ends, after a lognormal generation time (median 2 s, sigma 0.6) from
the batch's start. Every prompt has its own text and label, every response its own text with a hidden quality
(``with_quality``). ``--steps`` rollout batches are sent one after the other to the same server (the next starts
when the last answer of the previous one is back, as a trainer's next step does), each with new prompts. The load
generator is this process: one pooled aiohttp session (no connection limit: OpenRLHF keeps every rollout's request
open), its garbage collector off while it measures.

Servers: the real command, ``python -m grm_plugin.cli serve --base-url JUDGE --model sim --k 4 --group-size G
--group-wait 30`` (``grm serve``), a fresh process per configuration and shape, ``GRM_*`` variables dropped from its
environment. Configurations (``--configs``): ``--group-size 8`` (S), ``--group-size auto`` (a fresh server learns the
size: until it knows it, a cohort closes only at group-wait), and ``--group-size 1``, the pointwise baseline (every
rollout judged alone; the server before cohorts, a 15 ms micro-batch window only, measured a mean group of 1.06 of 8
on this traffic). ``--group-wait 30``: the generation spread of one batch is a few seconds, well inside it.

Engine: the simulated judge (``grm_plugin.testing.simulated_judge``) in its own process, with a fixed delay per
request (``--judge-delay``, 0.4 s), noise 0 (so every reward must equal the hidden quality, rounded: checked), and
principles and critiques padded to realistic lengths. A thin ASGI wrapper around it counts, per chat-completions
request, the completions (``n``), the responses shown (``[The Begin of Response i]`` markers in the judge prompt)
and the usage the judge reports (``prompt_tokens``: the prompt's characters / 4, ``completion_tokens``: the
answers' characters / 4).

Measured per configuration and rollout batch (step):

- **mean group size judged**: from the server's ``grm_group_size`` histogram (sum / count: rollouts per closed
  cohort) and from the judge prompts (responses shown per judge prompt) -- target >= 7.5 of 8;
- **judge requests and judge prompt / completion tokens per rollout**;
- **added latency after a group's last rollout**: per prompt, from its last rollout being sent to the answer of the
  last of its rollouts to come back, minus that answer's judge time (its ``X-GRM-Judge-Seconds`` header): p50 and
  p99 -- target p99 <= 50 ms below saturation. Plus the plain per-request latency p50 / p99 (for a held rollout
  this includes waiting for its group's stragglers: that is generation time, not the judge's);
- **partial groups** (``grm_partial_groups_total``: cohorts closed before they held the expected size, i.e. at
  group-wait), the server's cohort wait, the learned size (``/health``), statuses and wrong rewards.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import httpx
import psutil
from _report import print_table, write_report

from grm_plugin.testing.simulated_judge import with_quality

RESPONSE_MARKER = re.compile(r"\[The Begin of Response \d+\]")
TOPICS = ["tides", "volcanoes", "prime numbers", "photosynthesis", "the Roman roads", "glaciers", "bees",
          "compilers", "the printing press", "black holes", "coral reefs", "sorting algorithms", "rainbows",
          "the immune system", "bridges", "jazz", "magnets", "deserts", "the water cycle", "chess openings"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the judge: the simulated judge in its own process, with a counting wrapper ---------------------------------------


class _Counting:
    """ASGI wrapper around the simulated judge: per ``POST /v1/chat/completions`` it counts the request, its ``n``,
    the responses its prompt shows and the usage of its answer. ``GET /bench/stats`` returns the totals."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.totals: dict[str, Any] = {"requests": 0, "completions": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                       "shown": 0, "shown_hist": {}, "status": {}}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/bench/stats":
            body = json.dumps(self.totals).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        request_chunks: list[bytes] = []
        answer_chunks: list[bytes] = []
        status = [0]

        async def recording_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                request_chunks.append(message.get("body", b""))
            return message

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer_chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, recording_receive, recording_send)
        t = self.totals
        t["requests"] += 1
        t["status"][str(status[0])] = t["status"].get(str(status[0]), 0) + 1
        try:
            body = json.loads(b"".join(request_chunks))
            answer = json.loads(b"".join(answer_chunks))
        except ValueError:
            return
        prompt = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
        shown = len(RESPONSE_MARKER.findall(prompt))
        t["completions"] += int(body.get("n", 1))
        t["shown"] += shown
        t["shown_hist"][str(shown)] = t["shown_hist"].get(str(shown), 0) + 1
        usage = answer.get("usage") or {}
        t["prompt_tokens"] += int(usage.get("prompt_tokens", 0))
        t["completion_tokens"] += int(usage.get("completion_tokens", 0))


def run_judge(port: int, settings: dict[str, Any]) -> None:
    import uvicorn

    from grm_plugin.testing.simulated_judge import JudgeSettings, build_app

    uvicorn.run(_Counting(build_app(JudgeSettings(**settings))), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, timeout_keep_alive=30)


def wait_up(url: str, timeout: float = 60, process: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# --- the server -------------------------------------------------------------------------------------------------------


class GRMServe:
    """``python -m grm_plugin.cli serve ARGS`` (`grm serve`) on a free port, its output in ``log``, without GRM_
    variables from this environment."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.args = list(args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRM_")}
        self._out = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "grm_plugin.cli", "serve", "--port", str(self.port),
                                         *args], env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def __enter__(self) -> "GRMServe":
        try:
            wait_up(f"{self.url}/health", process=self.process)
        except RuntimeError:
            self.__exit__()
            raise RuntimeError(f"grm serve did not come up: {self.log.read_text()[-2000:]}") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of /metrics, and grm_requests_total by status, as name -> value."""
        out: dict[str, float] = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            if "{" in name and not name.startswith(("grm_requests_total", "grm_group_size_bucket")):
                continue
            out[name] = float(value)
        return out

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", timeout=10).json()


# --- the traffic ------------------------------------------------------------------------------------------------------


def make_batch(step: int, prompts: int, samples: int, rng: random.Random, median_s: float,
               sigma: float) -> list[dict[str, Any]]:
    """One rollout batch: per prompt (its own text and label), ``samples`` rollouts with their own response text,
    hidden quality and generation time."""
    rollouts = []
    for p in range(prompts):
        topic = TOPICS[p % len(TOPICS)]
        prompt = (f"<|im_start|>user\nStep {step}, question {p}: explain {topic} to a curious twelve-year-old in a "
                  f"short paragraph, with one concrete example (variant {p // len(TOPICS)}).<|im_end|>\n"
                  "<|im_start|>assistant\n")
        label = f"A correct, simple explanation of {topic} (step {step}, question {p})."
        for s in range(samples):
            quality = round(rng.uniform(1.6, 9.4), 1)
            text = (f"Sample {s} for question {p} of step {step}. Here is how {topic} work: "
                    + " ".join(f"sentence {j} of sample {s} adds a detail about {topic}." for j in range(10)))
            response = with_quality(text, quality) + "<|im_end|>"
            rollouts.append({"prompt_index": p, "sample": s, "prompt": prompt, "label": label,
                             "query": prompt + response, "quality": quality,
                             "expected": min(10, max(1, round(quality))),
                             "gen_s": rng.lognormvariate(math.log(median_s), sigma)})
    return rollouts


async def send_batch(url: str, rollouts: list[dict[str, Any]]) -> float:
    """Send each rollout alone after its generation time; fill in sent/answered times, status, reward and the
    timing headers. Returns the batch's wall seconds."""
    import aiohttp

    # keepalive below uvicorn's 5 s: a pooled connection is never reused just as the server closes it as idle (a
    # ServerDisconnectedError of the client's own making; OpenRLHF opens a session per request, so never meets it)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3.0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=180)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(r: dict[str, Any]) -> None:
            delay = start + r["gen_s"] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"query": [r["query"]], "prompts": [r["prompt"]], "labels": [r["label"]]}
            r["sent"] = time.perf_counter()
            try:
                async with session.post(url, json=body) as response:
                    r["status"] = response.status
                    data = await response.json(content_type=None)
                    if response.status != 200:
                        r["error"] = f"{response.status}: {str(data)[:160]}"
                    r["answered"] = time.perf_counter()
                    if response.status == 200:
                        r["reward"] = data["rewards"][0]
                        r["group_logged"] = data["extra_logs"].get("grm_group_size")
                        r["judge_s"] = float(response.headers["X-GRM-Judge-Seconds"])
                        r["wait_s"] = float(response.headers["X-GRM-Wait-Seconds"])
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                r["status"] = -1
                r["error"] = repr(exc)
                r["answered"] = time.perf_counter()

        began = time.perf_counter()
        gc.collect()
        gc.disable()  # the load generator is not under test: keep its collector pauses out of the latencies
        try:
            await asyncio.gather(*(one(r) for r in rollouts))
        finally:
            gc.enable()
        return time.perf_counter() - began


class CPUSampler:
    """CPU seconds of the server, the judge and this process, sampled every ``every_s`` in a thread: the busiest
    second of each and of all three (in cores: 1.0 = one core busy for the whole second; the machine has
    ``os.cpu_count()``)."""

    def __init__(self, pids: dict[str, int | None], every_s: float = 0.1) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> tuple[float, dict[str, float]]:
        out = {}
        for name, process in self.processes.items():
            times = process.cpu_times()
            out[name] = times.user + times.system
            if name == "server":  # and its --workers processes
                for child in process.children(recursive=True):
                    try:
                        times = child.cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    out[name] += times.user + times.system
        machine = psutil.cpu_times()
        out["machine"] = machine.user + machine.system + machine.nice + getattr(machine, "irq", 0) + getattr(
            machine, "softirq", 0) + getattr(machine, "steal", 0)
        return time.perf_counter(), out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._read())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "CPUSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self._read())

    def summary(self) -> dict[str, Any]:
        first, last = self.samples[0], self.samples[-1]
        wall = last[0] - first[0]
        out: dict[str, Any] = {"cpu_s": {n: round(last[1][n] - first[1][n], 2) for n in self.processes}}
        machine = last[1]["machine"] - first[1]["machine"]
        # everything else on the machine (other users' processes): what the figures shared the cores with
        out["others_mean_cores"] = round(max(0.0, machine - sum(out["cpu_s"].values())) / wall, 2) if wall else None
        peaks = {n: 0.0 for n in [*self.processes, "all"]}
        j = 0
        for t, cpu in self.samples:  # every window of >= 1 s starting at a sample
            while j < len(self.samples) and self.samples[j][0] - t < 1.0:
                j += 1
            if j >= len(self.samples):
                break
            t2, cpu2 = self.samples[j]
            used = {n: (cpu2[n] - cpu[n]) / (t2 - t) for n in self.processes}
            for n, v in used.items():
                peaks[n] = max(peaks[n], v)
            peaks["all"] = max(peaks["all"], sum(used.values()))
        out["busiest_second_cores"] = {n: round(v, 2) for n, v in peaks.items()}
        out["mean_cores"] = round(sum(out["cpu_s"].values()) / wall, 2) if wall > 0 else None
        return out


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-quantile (q=0.99 of 32 values: the 32nd, i.e. the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def summarise(rollouts: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any],
              judge_before: dict[str, Any], judge_after: dict[str, Any], seconds: float) -> dict[str, Any]:
    n = len(rollouts)
    ok = [r for r in rollouts if r.get("status") == 200]
    statuses = Counter(str(r.get("status")) for r in rollouts)
    errors = Counter(r["error"] for r in rollouts if "error" in r)
    latencies = [r["answered"] - r["sent"] for r in ok]
    added, added_ok = [], True
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for r in rollouts:
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    for members in by_prompt.values():
        if any(m.get("status") != 200 for m in members):
            added_ok = False
            continue
        last_sent = max(m["sent"] for m in members)
        last_back = max(members, key=lambda m: m["answered"])
        added.append(last_back["answered"] - last_sent - last_back["judge_s"])

    def delta(name: str) -> float:
        return after["metrics"].get(name, 0.0) - before["metrics"].get(name, 0.0)

    cohorts = delta("grm_group_size_count")
    judge = {key: judge_after[key] - judge_before[key]
             for key in ("requests", "completions", "prompt_tokens", "completion_tokens", "shown")}
    shown_hist = Counter({k: v - judge_before["shown_hist"].get(k, 0) for k, v in judge_after["shown_hist"].items()})
    spans = [max(m["gen_s"] for m in group) - min(m["gen_s"] for m in group) for group in by_prompt.values()]
    return {
        "rollouts": n, "prompts": len(by_prompt), "seconds": round(seconds, 2),
        "statuses": dict(statuses), "client_errors": dict(errors), "wrong_rewards": sum(1 for r in ok if r["reward"] != r["expected"]),
        "mean_group_server": round(delta("grm_group_size_sum") / cohorts, 3) if cohorts else None,
        "cohorts": int(cohorts),
        "mean_group_judge_prompts": round(judge["shown"] / judge["requests"], 3) if judge["requests"] else None,
        "judge_prompts_by_responses_shown": {k: v for k, v in sorted(shown_hist.items(), key=lambda kv: int(kv[0]))
                                             if v},
        "mean_group_logged": round(statistics.mean(r["group_logged"] for r in ok), 3) if ok else None,
        "partial_groups": int(delta("grm_partial_groups_total")),
        "cohort_wait_mean_s": (round(delta("grm_cohort_wait_seconds_sum") / delta("grm_cohort_wait_seconds_count"), 3)
                               if delta("grm_cohort_wait_seconds_count") else None),
        "shed": int(delta("grm_shed_rollouts_total")),
        "learned_group_size": after["health"].get("group_size"),
        "open_cohorts_after": after["health"].get("open_cohorts"),
        "judge": judge,
        "judge_requests_per_rollout": round(judge["requests"] / n, 3),
        "judge_completions_per_rollout": round(judge["completions"] / n, 3),
        "judge_prompt_tokens_per_rollout": round(judge["prompt_tokens"] / n, 1),
        "judge_completion_tokens_per_rollout": round(judge["completion_tokens"] / n, 1),
        "added_after_last_p50_ms": ms(quantile(added, 0.5)), "added_after_last_p99_ms": ms(quantile(added, 0.99)),
        "added_after_last_max_ms": ms(max(added)) if added else None, "added_complete": added_ok,
        "latency_p50_ms": ms(quantile(latencies, 0.5)), "latency_p99_ms": ms(quantile(latencies, 0.99)),
        "judge_s_mean": round(statistics.mean(r["judge_s"] for r in ok), 3) if ok else None,
        "generation_spread_per_prompt_s": {"p50": round(quantile(spans, 0.5), 2), "max": round(max(spans), 2)},
        "last_rollout_sent_s": round(max(r["gen_s"] for r in rollouts), 2),
    }


def snapshot(server: GRMServe, judge_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"metrics": server.metrics(), "health": server.health()},
            httpx.get(f"{judge_url}/bench/stats", timeout=10).json())


def run_config(args: argparse.Namespace, tmp: Path, judge_url: str, judge_pid: int, prompts: int,
               group_size: str, rng: random.Random) -> list[dict[str, Any]]:
    serve_args = ["--base-url", f"{judge_url}/v1", "--model", "sim", "--k", str(args.k), "--group-size", group_size,
                  "--group-wait", str(args.group_wait), "--workers", str(args.workers)]
    rows = []
    with GRMServe(serve_args, tmp / f"serve-{prompts}-{group_size}.log") as server:
        for step in range(1, args.steps + 1):
            rollouts = make_batch(step, prompts, args.samples, rng, args.median, args.sigma)
            before, judge_before = snapshot(server, judge_url)
            with CPUSampler({"server": server.process.pid, "judge": judge_pid, "client": None}) as cpu:
                seconds = asyncio.run(send_batch(f"{server.url}/get_reward", rollouts))
            after, judge_after = snapshot(server, judge_url)
            row = {"shape": f"{prompts} x {args.samples}", "group_size": group_size, "step": step,
                   **summarise(rollouts, before, after, judge_before, judge_after, seconds), "cpu": cpu.summary()}
            rows.append(row)
            print(f"   {row['shape']:>8}  --group-size {group_size:<4}  step {step}: {row['seconds']:5.1f} s, "
                  f"mean group {row['mean_group_server']}, partial {row['partial_groups']}, added p99 "
                  f"{row['added_after_last_p99_ms']} ms, statuses {row['statuses']}, busiest second "
                  f"{row['cpu']['busiest_second_cores']['all']} cores (other processes: {row['cpu']['others_mean_cores']} "
                  "cores)", flush=True)
            for error, count in row["client_errors"].items():
                print(f"      {count} x {error}")
        errors = [line for line in server.log.read_text(errors="replace").splitlines()
                  if "Traceback" in line or " ERROR " in line or line.startswith("ERROR")]
        for row in rows:
            row["server_log_errors"] = errors[:5]
    return rows


def label(group_size: str) -> str:
    if group_size == "1":
        return "1 (pointwise baseline)"
    if group_size == "auto":
        return "auto (fresh server)"
    return group_size


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default=None, help="prompts per rollout batch, comma-separated shapes "
                                                        "(default 32,128; --quick: 16)")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt (n_samples_per_prompt)")
    parser.add_argument("--configs", default=None, help="--group-size values, comma-separated (default: "
                                                        "SAMPLES,auto,1)")
    parser.add_argument("--steps", type=int, default=2, help="rollout batches per server, one after the other")
    parser.add_argument("--group-wait", type=float, default=30.0, help="grm serve --group-wait (seconds)")
    parser.add_argument("--k", type=int, default=4, help="grm serve --k (judgements per rollout)")
    parser.add_argument("--judge-delay", type=float, default=0.4, help="seconds the simulated judge takes a request")
    parser.add_argument("--median", type=float, default=2.0, help="median generation time (seconds)")
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of the generation time")
    parser.add_argument("--workers", type=int, default=1, help="grm serve --workers (server processes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one shape of 16 prompts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cohorts.json"))
    args = parser.parse_args(argv)
    args.prompts = args.prompts or ("16" if args.quick else "32,128")
    args.configs = args.configs or f"{args.samples},auto,1"
    shapes = [int(p) for p in args.prompts.split(",")]
    configs = args.configs.split(",")
    judge_settings = {"noise": 0.0, "delay_s": args.judge_delay, "principles_tokens": 60, "critique_tokens": 60}

    context = multiprocessing.get_context("spawn")
    judge_port = free_port()
    judge = context.Process(target=run_judge, args=(judge_port, judge_settings), daemon=True)
    judge.start()
    judge_url = f"http://127.0.0.1:{judge_port}"
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        wait_up(f"{judge_url}/v1/models")
        with tempfile.TemporaryDirectory(prefix="bench-cohorts-") as tmp:
            for prompts in shapes:
                for group_size in configs:
                    rng = random.Random(f"{args.seed}:{prompts}")  # every configuration sees the same traffic
                    rows.extend(run_config(args, Path(tmp), judge_url, judge.pid, prompts, group_size, rng))
    finally:
        judge.terminate()
        judge.join(timeout=10)
    seconds = time.perf_counter() - started

    header = ["shape", "--group-size", "step", "mean group (server / judge prompts)", "partial groups",
              "judge req / rollout", "judge prompt / compl. tokens per rollout",
              "added after last rollout p50 / p99 ms", "request latency p50 / p99 ms", "batch s", "busiest 1 s CPU, cores: all (server / judge / client); other processes' mean",
              "statuses",
              "wrong rewards"]
    table = [[r["shape"], label(r["group_size"]), r["step"],
              f"{fmt(r['mean_group_server'])} / {fmt(r['mean_group_judge_prompts'])}", r["partial_groups"],
              f"{r['judge_requests_per_rollout']:.3f}",
              f"{r['judge_prompt_tokens_per_rollout']:.0f} / {r['judge_completion_tokens_per_rollout']:.0f}",
              f"{fmt(r['added_after_last_p50_ms'])} / {fmt(r['added_after_last_p99_ms'])}",
              f"{fmt(r['latency_p50_ms'])} / {fmt(r['latency_p99_ms'])}", f"{r['seconds']:.1f}",
              "{all:g} ({server:g} / {judge:g} / {client:g})".format(**r["cpu"]["busiest_second_cores"])
              + f"; {r['cpu']['others_mean_cores']:g}",
              " ".join(f"{k}x{v}" for k, v in r["statuses"].items()), r["wrong_rewards"]] for r in rows]
    print(f"\n{', '.join(f'{p} x {args.samples}' for p in shapes)} rollouts, lognormal generation (median "
          f"{args.median:g} s, sigma {args.sigma:g}), k={args.k}, --group-wait {args.group_wait:g}, judge delay "
          f"{args.judge_delay:g} s, {args.steps} rollout batches per server")
    print_table(header, table)

    targets: dict[str, bool] = {}
    grouped = [r for r in rows if r["group_size"] != "1"]
    for r in grouped:
        name = f"{r['shape']} --group-size {r['group_size']} step {r['step']}"
        targets[f"{name}: mean group >= {0.9375 * args.samples:g} of {args.samples}"] = (
            (r["mean_group_server"] or 0) >= 0.9375 * args.samples)
        targets[f"{name}: added p99 after last rollout <= 50 ms"] = (
            r["added_after_last_p99_ms"] is not None and r["added_after_last_p99_ms"] <= 50)
    targets["every rollout answered 200 with its exact reward"] = all(
        r["statuses"] == {"200": r["rollouts"]} and r["wrong_rewards"] == 0 for r in rows)
    print("\ntargets:")
    for name, met in targets.items():
        print(f"   {'met   ' if met else 'MISSED'} {name}")
    print(f"total {seconds:.0f} s")
    report = {"settings": vars(args), "judge_settings": judge_settings, "python": sys.version.split()[0],
              "platform": platform.platform(), "cpu_count": multiprocessing.cpu_count(),
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "seconds": round(seconds, 1), "targets": targets, "rows": rows}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
