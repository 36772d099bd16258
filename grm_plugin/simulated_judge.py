"""A simulated judge: a small OpenAI-compatible HTTP server that stands in for a language model in tests and
benchmarks. It is not a model and judges nothing.

It reads the responses out of the judge prompt (``[The Begin of Response i]`` ... ``[The End of Response i]``),
finds each one's hidden quality (a ``{{quality=7.5}}`` marker the test data puts in the response, see
``with_quality``), and answers in the paper's output format with ``score = round(quality + noise)`` clipped to the
score range. Noise, a first-slot position bias, unparseable answers, latency and failures (429/500/... on demand)
are configurable. Answers are deterministic given the seed and the set of requests (not their arrival order);
greedy requests (temperature 0) always get the same answer for the same prompt, like a real model.

Run it in a thread (``with SimulatedJudge(noise=1.0) as judge: judge.base_url``) or as a process:
``python -m grm_plugin.simulated_judge --port 8123 --noise 1.0``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .templates import render_judgement

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the simulated judge needs the 'server' extra: pip install 'grm-plugin[server]'") from exc

_RESPONSE = re.compile(r"\[The Begin of Response (\d+)\]\n(.*?)\n\[The End of Response \1\]", re.DOTALL)
_QUALITY = re.compile(r"\{\{quality=([-+]?[0-9]*\.?[0-9]+)\}\}")
_RANGE = re.compile(r"integer from (-?\d+) \(worst\) to (-?\d+) \(best\)")


def with_quality(text: str, quality: float) -> str:
    """Attach a hidden quality to a response for the simulated judge to read."""
    return f"{text} {{{{quality={quality:g}}}}}"


def quality_pairs(n_pairs: int, seed: int = 0, gap: float = 1.0) -> tuple[list[Any], list[int]]:
    """Pairwise items for the simulated judge: two responses whose hidden qualities differ by ``gap`` (base quality
    uniform in 3..7, the better one first or second at random). Returns the ScoreRequests and the better index."""
    from .types import ScoreRequest

    rng = random.Random(seed)
    requests, better = [], []
    for i in range(n_pairs):
        base = rng.uniform(3, 7)
        first = rng.random() < 0.5
        qualities = [base + gap, base] if first else [base, base + gap]
        requests.append(ScoreRequest(prompt=f"pair {i}",
                                     responses=[with_quality(f"answer {j}", q) for j, q in enumerate(qualities)]))
        better.append(0 if first else 1)
    return requests, better


@dataclass
class JudgeSettings:
    noise: float = 1.0
    position_bias: float = 0.0
    invalid_rate: float = 0.0
    delay_s: float = 0.0
    default_quality: float = 5.0
    seed: int = 0
    fail_next: list[int] = field(default_factory=list)


class _State:
    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self.seen: dict[int, int] = {}
        self.lock = threading.Lock()
        self.requests = 0
        self.completions = 0
        self.n_values: list[int] = []
        self.bodies: list[dict[str, Any]] = []
        self.inflight = 0
        self.max_inflight = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "completions": self.completions, "n_values": list(self.n_values),
                    "max_inflight": self.max_inflight}


def _judge_text(prompt: str, rng: random.Random, s: JudgeSettings) -> str:
    found = _RESPONSE.findall(prompt)
    lo, hi = (1, 10)
    bounds = _RANGE.search(prompt)
    if bounds:
        lo, hi = int(bounds.group(1)), int(bounds.group(2))
    if not found or rng.random() < s.invalid_rate:
        return "I am not sure how to score these responses."
    scores, notes = [], []
    for slot, (_, body) in enumerate(found):
        marker = _QUALITY.search(body)
        quality = float(marker.group(1)) if marker else s.default_quality
        value = quality + rng.gauss(0.0, s.noise) + (s.position_bias if slot == 0 else 0.0)
        score = int(min(hi, max(lo, round(value))))
        scores.append(score)
        notes.append(f"Response {slot + 1} earns {score} against the criteria.")
    score_format = "tagged" if "<scores>" in prompt else "brackets" if "Final Scores: [[" in prompt else "boxed"
    return render_judgement("Correctness (60%); Helpfulness (40%)", " ".join(notes), scores, score_format)


def build_app(settings: JudgeSettings | None = None) -> Starlette:
    state = _State(settings or JudgeSettings())

    async def chat(request: Request) -> JSONResponse:
        s = state.settings
        with state.lock:
            state.requests += 1
            state.inflight += 1
            state.max_inflight = max(state.max_inflight, state.inflight)
            failure = s.fail_next.pop(0) if s.fail_next else None
        try:
            if s.delay_s:
                await asyncio.sleep(s.delay_s)
            if failure is not None:
                return JSONResponse({"error": {"message": f"simulated failure {failure}", "code": failure}},
                                    status_code=failure)
            try:
                body = await request.json()
                messages = body["messages"]
                prompt = "\n".join(str(m.get("content") or "") for m in messages)
                n = int(body.get("n", 1))
                temperature = float(body.get("temperature", 1.0))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": {"message": f"invalid request body: {exc!r}"}}, status_code=400)
            if n < 1 or n > 128:
                return JSONResponse({"error": {"message": "n must be between 1 and 128"}}, status_code=400)
            with state.lock:
                state.n_values.append(n)
                state.completions += n
                if len(state.bodies) < 1000:
                    state.bodies.append(body)
                # Seeded by the prompt, so results do not depend on the order concurrent requests arrive in.
                # Greedy (temperature 0) answers the same prompt the same way every time; sampled requests for a
                # prompt seen before draw fresh noise (the per-prompt counter).
                digest = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
                repeat = 0 if temperature == 0 else state.seen.get(digest, 0)
                if temperature != 0:
                    state.seen[digest] = repeat + 1
                rng = random.Random(f"{s.seed}:{digest}:{repeat}")
            texts = [_judge_text(prompt, rng, s) for _ in range(n)]
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(texts)]
            usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": sum(len(t) // 4 for t in texts)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return JSONResponse({"id": "sim", "object": "chat.completion", "model": body.get("model", "simulated"),
                                 "choices": choices, "usage": usage})
        finally:
            with state.lock:
                state.inflight -= 1

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "simulated-judge", "object": "model"}]})

    async def control(request: Request) -> JSONResponse:
        update = await request.json()
        with state.lock:
            for key, value in update.items():
                if key == "reset_stats":
                    state.requests = state.completions = state.max_inflight = 0
                    state.n_values.clear()
                    state.bodies.clear()
                elif hasattr(state.settings, key):
                    setattr(state.settings, key, value)
                else:
                    return JSONResponse({"error": {"message": f"unknown setting {key!r}"}}, status_code=422)
        return JSONResponse({"ok": True})

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(state.stats())

    app = Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/control", control, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
    ])
    app.state.judge = state
    return app


def _free_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class SimulatedJudge:
    """Start the simulated judge on 127.0.0.1 (a free port) in a background thread.

    Example:
        >>> with SimulatedJudge(noise=0.0) as judge:          # doctest: +SKIP
        ...     GRMReward(base_url=judge.base_url, model="sim").score([...])
    """

    def __init__(self, port: int | None = None, **settings: Any) -> None:
        self.requested_port = port  # None: a free port
        self.settings = JudgeSettings(**settings)
        self.app = build_app(self.settings)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def state(self) -> _State:
        return self.app.state.judge

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "SimulatedJudge":
        sock = _free_socket(self.requested_port or 0)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
                                        name="simulated-judge", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the simulated judge did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset(self) -> None:
        s = self.state
        with s.lock:
            s.requests = s.completions = s.max_inflight = 0
            s.n_values.clear()
            s.bodies.clear()

    def __enter__(self) -> "SimulatedJudge":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def spawn(port: int, keep_alive_s: float = 5.0, **settings: Any) -> subprocess.Popen:
    """Start the simulated judge as a separate process (for benchmarks: it then has its own interpreter)."""
    args = [sys.executable, "-m", "grm_plugin.simulated_judge", "--port", str(port),
            "--keep-alive", str(keep_alive_s), "--settings", json.dumps(settings)]
    return subprocess.Popen(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--keep-alive", type=float, default=5.0, help="seconds an idle connection is kept open")
    parser.add_argument("--settings", default="{}", help="JSON of further JudgeSettings fields")
    args = parser.parse_args(argv)
    settings = {"noise": args.noise, **json.loads(args.settings)}
    uvicorn.run(build_app(JudgeSettings(**settings)), host=args.host, port=args.port, log_level="warning",
                access_log=False, timeout_keep_alive=args.keep_alive)


if __name__ == "__main__":
    main()
