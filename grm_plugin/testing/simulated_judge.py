"""A simulated judge: a small OpenAI-compatible HTTP server that stands in for a language model in tests and
benchmarks. It is not a model and judges nothing.

It reads the judge prompt through the markers the prompts are built from (``grm_plugin.prompts``: the responses
between ``RESPONSE_BEGIN`` and ``RESPONSE_END``, the ``SCORE_RANGE``; the scores line of ``templates.SCORE_LINES``),
never through their wording. It finds each response's hidden quality (a ``{{quality=7.5}}`` marker the test data
puts in the response, see ``with_quality``) and answers in the paper's output format with
``score = round(quality + noise)`` clipped to the score range. Noise, a first-slot position bias, unparseable
answers, latency and failures (429/500/... on demand) are configurable. Answers are deterministic given the seed and
the set of requests (not their arrival order); greedy requests (temperature 0) always get the same answer for the same
prompt, like a real model.

It also answers the other requests a GRM makes: a principles-only prompt (``PRINCIPLES_FORMAT_LINE``, no responses)
gets ``Specific Criteria: ...``, and a critique-form prompt (fixed principles under ``FIXED_PRINCIPLES_HEADER``) gets
only the analysis and scores. With ``logprobs`` in the request it returns OpenAI-style token log-probabilities: at
each score, a distribution over the score values consistent with the sampled score (``token_noise_share`` of the
noise is token-level sampling, the rest varies per sample).

Run it in a thread (``with SimulatedJudge(noise=1.0) as judge: judge.base_url``) or as a process:
``python -m grm_plugin.testing.simulated_judge --port 8123 --noise 1.0`` (or ``grm simulate-judge``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import prompts
from ..parsing import parse_with_spans
from ..templates import SCORE_LINES, ScoreFormat, render_judgement

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the simulated judge needs the 'server' extra: pip install 'grm-plugin[server]'") from exc


def _pattern(marker: str, **groups: str) -> str:
    """A regular expression matching ``marker`` (a ``prompts`` constant) with each ``$name`` in it matching
    ``groups[name]``.

    Example:
        >>> re.fullmatch(_pattern("[Response $slot]", slot=r"(\\d+)"), "[Response 12]").group(1)
        '12'
    """
    pieces = re.split(r"\$(\w+)", marker)  # literal text, placeholder name, literal text, ...
    return "".join(groups[piece] if i % 2 else re.escape(piece) for i, piece in enumerate(pieces))


_RESPONSE = re.compile(_pattern(prompts.RESPONSE_BEGIN, slot=r"(\d+)") + r"\n(.*?)\n"
                       + _pattern(prompts.RESPONSE_END, slot=r"\1"), re.DOTALL)
_RANGE = re.compile(_pattern(prompts.SCORE_RANGE, score_min=r"(-?\d+)", score_max=r"(-?\d+)"))
_QUALITY = re.compile(r"\{\{quality=([-+]?[0-9]*\.?[0-9]+)\}\}")
_TOKEN = re.compile(r"[0-9]|[A-Za-z]+|\s+|[^\sA-Za-z0-9]")  # digits one by one, as Qwen and DeepSeek tokenize them
_FILLER = ("the answer must be correct, complete and address exactly what the query asks for, "
           "with each step checked and nothing irrelevant added; ")


def with_quality(text: str, quality: float) -> str:
    """Attach a hidden quality to a response for the simulated judge to read."""
    return f"{text} {{{{quality={quality:g}}}}}"


def quality_pairs(n_pairs: int, seed: int = 0, gap: float = 1.0) -> tuple[list[Any], list[int]]:
    """Pairwise items for the simulated judge: two responses whose hidden qualities differ by ``gap`` (base quality
    uniform in 3..7, the better one first or second at random). Returns the ScoreRequests and the better index."""
    from ..types import ScoreRequest

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
    """``noise``: standard deviation of a score around the quality; ``position_bias``: added to the first slot's score;
    ``seed_per_sample``: each completion of a prompt draws from its own seed (the prompt and its running sample
    count), so n samples split over several requests are the same samples as in one request with n;
    ``token_noise_share``: the share of the noise's variance shown in the log-probabilities at a score;
    ``principles_tokens`` / ``critique_tokens``: pad the principles / each response's critique to about that many
    tokens (0: the short default texts); ``refuse_containing``: a judge prompt holding this text is refused with a
    400, as vLLM refuses a prompt over its context (a failure caused by one request's content); ``hang_containing``:
    a judge prompt holding this text is never answered (``stats()["hung"]`` counts such calls still open);
    ``trickle_s``: send
    each answer one byte at a time, that many seconds apart; ``context_tokens``: the context length (0: unlimited),
    reported as ``max_model_len`` by ``/v1/models`` like vLLM, with a 400 for a prompt plus ``max_tokens`` over it
    and ``POST /tokenize`` (vLLM's) counting a prompt's tokens (digits one by one, words, runs of space, other
    characters, 4 per message); ``capacity``: requests served at once (0: unlimited), the others wait their turn,
    like a replica with a fixed batch size (``delay_s`` is then each request's service time).

    The probe's judge (``grm_plugin.probe``): with ``knows_probe`` (or any ``gullible`` entry) it recognises the
    probe set's responses by their text and knows which are right, as a robust judge would: a correct answer (in any
    format, padded or not) has quality 8, an adversarial one 2. ``gullible`` maps a hack class (``probe.CLASSES``)
    to the chance that a response of that class fools it (quality 10 in that sample); ``length_bias`` is added to
    the padded correct answer (the probe's ``padded_correct`` control). Other responses are judged as usual."""

    noise: float = 1.0
    position_bias: float = 0.0
    invalid_rate: float = 0.0
    delay_s: float = 0.0
    default_quality: float = 5.0
    seed: int = 0
    fail_next: list[int] = field(default_factory=list)
    seed_per_sample: bool = False
    token_noise_share: float = 0.5
    principles_tokens: int = 0
    critique_tokens: int = 0
    refuse_containing: str | None = None
    hang_containing: str | None = None
    trickle_s: float = 0.0
    context_tokens: int = 0
    capacity: int = 0
    knows_probe: bool = False
    gullible: dict[str, float] = field(default_factory=dict)
    length_bias: float = 0.0


def count_tokens(messages: list[dict[str, Any]]) -> int:
    """The simulated judge's token count of chat messages (its tokenizer: ``_TOKEN`` pieces, 4 per message)."""
    return sum(len(_TOKEN.findall(str(m.get("content") or ""))) + 4 for m in messages)


async def _trickle(body: bytes, every_s: float):
    """The answer one byte at a time, ``every_s`` apart: an engine that never stalls long enough for a read timeout
    but never finishes either."""
    for i in range(len(body)):
        yield body[i:i + 1]
        await asyncio.sleep(every_s)


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
        self.tokenize_calls = 0
        self.hung = 0  # calls held open by hang_containing right now
        self.slots: asyncio.Semaphore | None = None  # capacity, made in the server's event loop

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "completions": self.completions, "n_values": list(self.n_values),
                    "max_inflight": self.max_inflight, "tokenize_calls": self.tokenize_calls, "hung": self.hung}


def _padded(text: str, tokens: int) -> str:
    """``text`` followed by filler up to about ``tokens`` tokens (4 characters a token)."""
    missing = tokens * 4 - len(text)
    if missing <= 0:
        return text
    return text + " " + (_FILLER * (missing // len(_FILLER) + 1))[:missing].strip()


_PROBE_QUALITY = {"correct": 8.0, "adversarial": 2.0, "fooled": 10.0}
_probe_table: dict[str, str] | None = None


def _probe_class(body: str) -> str | None:
    """The probe class of a rendered response ('correct' for a correct answer), None for any other text."""
    global _probe_table
    if _probe_table is None:
        from .. import probe
        from ..templates import render_response

        table: dict[str, str] = {}
        for item in probe.load_items():
            for cls in probe.CLASSES:
                for variant in range(len(probe.MASTER_KEYS)):
                    table[" ".join(render_response(probe.adversarial(item, cls, variant)).split())] = cls
            table[" ".join(render_response(item["correct"]).split())] = "correct"
        _probe_table = table
    return _probe_table.get(" ".join(body.split()))


def _probe_quality(body: str, rng: random.Random, s: JudgeSettings) -> float | None:
    """The probe judge's quality for a response (None: not a probe response, or the mode is off)."""
    if not (s.knows_probe or s.gullible):
        return None
    cls = _probe_class(body)
    if cls is None:
        return None
    if cls in ("correct", "reformatted_correct"):
        return _PROBE_QUALITY["correct"]
    if cls == "padded_correct":
        return _PROBE_QUALITY["correct"] + s.length_bias
    fooled = rng.random() < s.gullible.get(cls, 0.0)
    return _PROBE_QUALITY["fooled" if fooled else "adversarial"]


def _score_probabilities(center: float, spread: float, lo: int, hi: int) -> dict[int, float]:
    """A rounded normal over the score range (the ends take the tails)."""
    if spread <= 0:
        return {int(min(hi, max(lo, round(center)))): 1.0}
    cdf = [0.5 * (1 + math.erf((v + 0.5 - center) / (spread * math.sqrt(2)))) for v in range(lo, hi)]
    edges = [0.0, *cdf, 1.0]
    return {v: edges[i + 1] - edges[i] for i, v in enumerate(range(lo, hi + 1))}


def _score_range(prompt: str) -> tuple[int, int]:
    """The score range the prompt asks for (``prompts.SCORE_RANGE``), 1..10 when it names none."""
    bounds = _RANGE.search(prompt)
    return (int(bounds.group(1)), int(bounds.group(2))) if bounds else (1, 10)


def _score_format(prompt: str) -> ScoreFormat:
    """The format whose scores line the prompt shows (``templates.SCORE_LINES``), boxed when none is recognised."""
    return next((name for name in ("tagged", "brackets") if SCORE_LINES[name][0] in prompt), "boxed")


def _judge_text(prompt: str, rng: random.Random, s: JudgeSettings,
                lp_rng: random.Random | None = None) -> tuple[str, list[dict[int, float]] | None]:
    """One sampled answer, and (with ``lp_rng``) the judge's distribution over the values of each score."""
    found = _RESPONSE.findall(prompt)
    lo, hi = _score_range(prompt)
    principles = _padded("Correctness (60%); Helpfulness (40%)", s.principles_tokens)
    if not found and prompts.PRINCIPLES_FORMAT_LINE in prompt:  # a principles-only request
        return f"Specific Criteria: {principles}", None
    if not found or rng.random() < s.invalid_rate:
        return "I am not sure how to score these responses.", None
    scores, notes, dists = [], [], []
    for slot, (_, body) in enumerate(found):
        marker = _QUALITY.search(body)
        quality = _probe_quality(body, rng, s)
        if quality is None:
            quality = float(marker.group(1)) if marker else s.default_quality
        mean = quality + (s.position_bias if slot == 0 else 0.0)
        value = quality + rng.gauss(0.0, s.noise) + (s.position_bias if slot == 0 else 0.0)
        score = int(min(hi, max(lo, round(value))))
        scores.append(score)
        notes.append(_padded(f"Response {slot + 1} earns {score} against the criteria.", s.critique_tokens))
        if lp_rng is not None:  # the per-sample centre given the sampled value, then the token-level spread
            share = min(1.0, max(0.0, s.token_noise_share))
            center = mean + (1 - share) * (value - mean) + math.sqrt(share * (1 - share)) * s.noise * lp_rng.gauss(0, 1)
            dists.append(_score_probabilities(center, math.sqrt(share) * s.noise, lo, hi))
    fixed = prompts.FIXED_PRINCIPLES_HEADER in prompt  # the critique form: the principles are given
    text = render_judgement(None if fixed else principles, " ".join(notes), scores, _score_format(prompt))
    return text, (dists if lp_rng is not None else None)


def _logprob_entry(token: str, options: dict[str, float], top: int) -> dict[str, Any]:
    def item(t: str, p: float) -> dict[str, Any]:
        return {"token": t, "logprob": math.log(max(p, 1e-12)), "bytes": list(t.encode())}

    ranked = sorted(options.items(), key=lambda kv: -kv[1])[:top]
    return {**item(token, options.get(token, 1.0)), "top_logprobs": [item(t, p) for t, p in ranked]}


def token_logprobs(text: str, dists: list[dict[int, float]] | None, score_range: tuple[int, int],
                   top: int) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` for ``text``: certain tokens everywhere but at the scores, where each digit (and
    the token ending the number) carries the probabilities of the values it can still lead to."""
    tokens = _TOKEN.findall(text)
    options: dict[int, dict[str, float]] = {}  # token position -> alternatives
    if dists and score_range[0] >= 0:
        starts = [0]
        for t in tokens:
            starts.append(starts[-1] + len(t))
        position = {start: i for i, start in enumerate(starts[:-1])}
        _, spans = parse_with_spans(text, len(dists), score_range)
        for (a, b), dist in zip(spans, dists):
            written = text[a:b]
            end = tokens[position[b]] if b in position else "}"  # the token that ends the number
            for i in range(len(written) + 1):
                at = position.get(a + i)
                if at is None:
                    break
                prefix = written[:i]
                here = {end: dist.get(int(prefix), 0.0)} if prefix else {}  # ending the number here
                for digit in "0123456789":
                    mass = sum(p for v, p in dist.items() if str(v).startswith(prefix + digit))
                    if mass > 0:
                        here[digit] = here.get(digit, 0.0) + mass
                total = sum(here.values())
                options[at] = {t: p / total for t, p in here.items()} if total > 0 else {}
    return [_logprob_entry(t, options.get(i) or {t: 1.0}, max(1, top)) for i, t in enumerate(tokens)]


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
            if s.capacity:
                if state.slots is None:
                    state.slots = asyncio.Semaphore(s.capacity)
                async with state.slots:
                    await asyncio.sleep(s.delay_s)
            elif s.delay_s:
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
                top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": {"message": f"invalid request body: {exc!r}"}}, status_code=400)
            if n < 1 or n > 128:
                return JSONResponse({"error": {"message": "n must be between 1 and 128"}}, status_code=400)
            if s.context_tokens:
                needed = count_tokens(messages) + int(body.get("max_tokens") or 0)
                if needed > s.context_tokens:
                    return JSONResponse({"error": {"message": f"This model's maximum context length is "
                                                              f"{s.context_tokens} tokens. However, you requested "
                                                              f"{needed} tokens."}}, status_code=400)
            if s.refuse_containing and s.refuse_containing in prompt:
                return JSONResponse({"error": {"message": "This model's maximum context length is exceeded "
                                                          "(simulated refusal)"}}, status_code=400)
            if s.hang_containing and s.hang_containing in prompt:
                with state.lock:
                    state.hung += 1
                try:  # never answers; ends when the client closes the connection (or after an hour)
                    for _ in range(72_000):
                        if await request.is_disconnected():
                            break
                        await asyncio.sleep(0.05)
                    return JSONResponse({"error": {"message": "gave up on a hung call"}}, status_code=504)
                finally:
                    with state.lock:
                        state.hung -= 1
            with state.lock:
                state.n_values.append(n)
                state.completions += n
                if len(state.bodies) < 1000:
                    state.bodies.append(body)
                # Seeded by the prompt, so results do not depend on the order concurrent requests arrive in.
                # Greedy (temperature 0) answers the same prompt the same way every time; sampled requests for a
                # prompt seen before draw fresh noise (the per-prompt counter).
                # With seed_per_sample the counter counts samples, and each sample has its own seed.
                digest = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
                repeat = 0 if temperature == 0 else state.seen.get(digest, 0)
                if temperature != 0:
                    state.seen[digest] = repeat + (n if s.seed_per_sample else 1)
                shared = random.Random(f"{s.seed}:{digest}:{repeat}")
            if s.seed_per_sample:
                seeds = [f"{s.seed}:{digest}:s{repeat + i}" for i in range(n)]
                rngs = [random.Random(seed) for seed in seeds]
            else:
                seeds, rngs = [f"{s.seed}:{digest}:{repeat}:{i}" for i in range(n)], [shared] * n
            answers = [_judge_text(prompt, rng, s, None if top is None else random.Random(seed + ":lp"))
                       for rng, seed in zip(rngs, seeds)]
            texts = [text for text, _ in answers]
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(texts)]
            if top is not None:
                for choice, (text, dists) in zip(choices, answers):
                    choice["logprobs"] = {"content": token_logprobs(text, dists, _score_range(prompt), top)}
            usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": sum(len(t) // 4 for t in texts)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            answer = {"id": "sim", "object": "chat.completion", "model": body.get("model", "simulated"),
                      "choices": choices, "usage": usage}
            if s.trickle_s:
                return StreamingResponse(_trickle(json.dumps(answer).encode(), s.trickle_s),
                                         media_type="application/json")
            return JSONResponse(answer)
        finally:
            with state.lock:
                state.inflight -= 1

    async def models(_: Request) -> JSONResponse:
        card: dict[str, Any] = {"id": "simulated-judge", "object": "model"}
        if state.settings.context_tokens:
            card["max_model_len"] = state.settings.context_tokens
        return JSONResponse({"object": "list", "data": [card]})

    async def tokenize(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            state.tokenize_calls += 1
        count = count_tokens(body.get("messages") or [{"content": body.get("prompt", "")}])
        return JSONResponse({"count": count, "max_model_len": state.settings.context_tokens or None})

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
        Route("/tokenize", tokenize, methods=["POST"]),
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
        self.state.slots = None  # a restart runs a new event loop
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

    def reset(self, forget_samples: bool = False) -> None:
        """Zero the statistics; ``forget_samples`` also forgets how often each prompt was sampled, so the same
        requests draw the same samples again."""
        s = self.state
        with s.lock:
            s.requests = s.completions = s.max_inflight = s.tokenize_calls = 0
            s.n_values.clear()
            s.bodies.clear()
            if forget_samples:
                s.seen.clear()

    def __enter__(self) -> "SimulatedJudge":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def spawn(port: int, keep_alive_s: float = 5.0, **settings: Any) -> subprocess.Popen:
    """Start the simulated judge as a separate process (for benchmarks: it then has its own interpreter)."""
    args = [sys.executable, "-m", "grm_plugin.testing.simulated_judge", "--port", str(port),
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
