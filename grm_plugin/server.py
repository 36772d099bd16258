"""`grm serve`: the GRM as an HTTP reward model (OpenRLHF's remote reward protocol and our own API).

``POST /get_reward`` speaks OpenRLHF 0.11's protocol (``query``/``prompts``/``labels`` in; ``rewards``, ``scores``
in 0..1 and ``extra_logs`` out). OpenRLHF sends one rollout per request, many at once, so requests are gathered for
``batch_window_ms`` (or until ``max_batch`` rollouts) by the micro-batcher of ``rollouts.py`` and judged together:
rollouts of one prompt that meet in a window share a judge prompt in group mode; this module is the HTTP face over
it. ``POST /v1/score`` takes ScoreRequests and returns ScoreResults; ``GET /health``; ``GET /metrics`` (Prometheus
text); with a meta RM, ``POST /classify`` (vLLM's classification API) rates meta RM inputs. Every input is validated
(422 naming the field, 413 for oversize bodies or lists, 401 without the bearer token when one is set); an engine
failure after retries is a 503 with the reason, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import inspect
import json
import logging
import math
import re
import time
from typing import Any, Optional

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"`grm serve` needs the server extra: pip install 'grm-plugin[server]' ({exc})") from exc

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import GRMError, InvalidRequestError, caused_by_request, format_validation_error
from .meta_rm import classify_reply
from .reward import RewardFunction, RowJudgements
from .rollouts import MicroBatcher, Rollout, openrlhf_reply, response_of
from .types import ScoreRequest, lone_surrogate

logger = logging.getLogger(__name__)

# Unicode category Cc (C0 controls, DEL, C1 controls) except tab, newline and carriage return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

class ServeSettings(BaseSettings):
    """Settings of `grm serve` (the judge itself is configured by GRMConfig); also read from ``GRM_SERVE_*``
    environment variables (how ``--workers`` hands them to its worker processes)."""

    model_config = SettingsConfigDict(env_prefix="GRM_SERVE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: Optional[SecretStr] = None
    batch_window_ms: float = Field(15.0, ge=0, description="How long rollouts are gathered before judging.")
    max_batch: int = Field(64, ge=1, description="Most rollouts judged together.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_items: int = Field(1024, ge=1, description="Most rollouts (or ScoreRequests) in one request.")
    max_responses: int = Field(64, ge=1, description="Most responses in one ScoreRequest of /v1/score (one judge "
                                                     "prompt shows them all; the work grows with their number).")
    request_timeout_s: float = Field(170.0, gt=0, description="A request not judged by then gets a 503 (below "
                                                              "OpenRLHF's 180 s client timeout, so its client sees it).")
    labels_as_reference: bool = Field(True, description="Non-empty OpenRLHF labels become the reference answer.")
    invalid_reward: Optional[float] = Field(
        None, description="Reward when no judgement parses; None: the bottom of the score range (score 0).")
    strip_end_tokens: bool = Field(True, description="Strip trailing end-of-turn tokens from the response.")
    workers: int = Field(1, ge=1, description="Server processes (uvicorn workers), each with its own micro-batcher.")
    tune_gc: bool = Field(True, description="Freeze the objects alive at startup (gc.freeze) and run full garbage "
                                            "collections less often while serving: shorter event-loop pauses.")


class GetRewardBody(BaseModel):
    """OpenRLHF's request body."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1)
    prompts: list[str] = Field(min_length=1)
    labels: Optional[list[Optional[str]]] = None

    @field_validator("query", "prompts", "labels")
    @classmethod
    def _no_control_characters(cls, values: Optional[list[Optional[str]]]) -> Optional[list[Optional[str]]]:
        for i, value in enumerate(values or []):
            found = _CONTROL.search(value) if value else None
            if found:
                raise ValueError(f"item {i} contains control character {found.group()!r} at {found.start()} "
                                 "(only tab, newline and CR are allowed)")
            surrogate = lone_surrogate(value) if value else None
            if surrogate:
                raise ValueError(f"item {i} holds a {surrogate}")
        return values


class Metrics:
    """The server's Prometheus metrics (one registry per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("grm_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("grm_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180),
                                 registry=self.registry)
        self.batch_size = Histogram("grm_batch_rollouts", "Rollouts judged together per micro-batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.samples = Counter("grm_judge_samples", "Judgements sampled", registry=self.registry)
        self.valid_samples = Counter("grm_judge_valid_samples", "Judgements that parsed", registry=self.registry)
        self.engine_errors = Counter("grm_engine_errors", "Micro-batches failed by the engine",
                                     registry=self.registry)
        self.inflight = Gauge("grm_inflight_requests", "Requests being served", registry=self.registry)
        self.added = Histogram("grm_added_seconds", "Time a /get_reward request spent in the server outside the "
                               "judge engine call of its micro-batch (window, queueing, parsing, voting)",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 5),
                               registry=self.registry)

        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def count(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request (label children cached: the hot path does no label lookups)."""
        children = self._children.get((endpoint, status))
        if children is None:
            children = self._children[(endpoint, status)] = (self.requests.labels(endpoint, str(status)),
                                                              self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def judged_batch(self, size: int, outcome: RowJudgements | BaseException) -> None:
        """The micro-batcher's ``on_batch``: one judged batch (its size, then its samples or its engine error)."""
        self.batch_size.observe(size)
        if isinstance(outcome, BaseException):
            self.engine_errors.inc()
            return
        if any(not caused_by_request(error) for error in outcome.errors.values()):
            self.engine_errors.inc()  # a rollout's own fault (its 422) is not the engine failing
        for result in outcome.results:
            if not result.cached:
                self.samples.inc(result.samples)
                self.valid_samples.inc(result.valid_samples)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_ENDPOINTS = frozenset({"/get_reward", "/v1/score", "/health", "/metrics"})


class _Guard:
    """Pure ASGI middleware (no per-request task, unlike ``@app.middleware``): bearer-token check, in-flight gauge,
    request counts by endpoint and status, latency histogram; a crash in a handler is still a JSON 500 answer."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        self.key = key.encode() if key is not None else None

    def authorized(self, scope: dict) -> bool:
        """Whether the request carries ``Authorization: Bearer <key>`` (the scheme in any case; the key compared in
        constant time)."""
        value = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = value.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key or b"")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"  # bounded metric labels
        started = time.perf_counter()
        state = {"status": 500, "sent": False}

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["sent"] = message["status"], True
            await send(message)

        self.metrics.inflight.inc()
        try:
            if self.key is not None:
                authorized = self.authorized(scope)
                scope.setdefault("state", {})["authorized"] = authorized  # /health says more to the key's holder
                if not authorized and endpoint != "/health":
                    response = _error(401, "missing or wrong bearer token (Authorization: Bearer <api key>)")
                    await response(scope, receive, send_and_record)
                    return
            try:
                await self.app(scope, receive, send_and_record)
            except Exception as exc:  # a bug: still an answer, never a dropped connection
                logger.exception("unhandled error on %s", endpoint)
                if not state["sent"]:
                    await _error(500, f"internal error: {type(exc).__name__}")(scope, receive, send_and_record)
        finally:
            self.metrics.inflight.dec()
            self.metrics.count(endpoint, state["status"], time.perf_counter() - started)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **extra}}, status_code=status)


async def _read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, or an InvalidRequestError-like tuple (status, message)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BadRequest(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BadRequest(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise _BadRequest(422, "empty body: expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRequest(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise _BadRequest(422, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _BadRequest(422, "body is nested too deeply (JSON arrays/objects inside each other)") from None
    except ValueError as exc:
        raise _BadRequest(422, f"body is not acceptable JSON: {exc}") from None


MAX_INT_DIGITS = 100


def _bounded_int(digits: str) -> int:
    """A JSON integer, refused beyond ``MAX_INT_DIGITS`` digits (no field of ours needs more; huge ones cost CPU)."""
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(reward: RewardFunction, settings: ServeSettings | None = None, meta_rm: Any = None) -> FastAPI:
    """The FastAPI app serving ``reward``; with a ``meta_rm`` that rates raw texts (``TransformersMetaRM``), also the
    classification API of vLLM/SGLang at ``POST /classify`` and ``/v1/classify``, for ``HTTPMetaRM`` clients."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    batcher = MicroBatcher(reward, settings.batch_window_ms / 1000, settings.max_batch, on_batch=metrics.judged_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threshold = gc.get_threshold()
        if settings.tune_gc:
            # Everything imported and built so far lives for the whole process: move it out of the collector's
            # reach. Otherwise every full (generation 2) collection walks those objects and pauses the event loop
            # for ~100 ms under load (measured), which is where the p99 latency went. Full collections of what is
            # alive under load still take ~40 ms, so they run 10x less often (young generations as usual).
            gc.collect()
            gc.freeze()
            gc.set_threshold(threshold[0], threshold[1], 100)
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()  # uvicorn has drained in-flight requests by now; finish what is queued
            if settings.tune_gc:
                gc.set_threshold(*threshold)
                gc.unfreeze()

    app = FastAPI(title="grm-plugin reward server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.settings = settings

    app.add_middleware(_Guard, settings=settings, metrics=metrics)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        if settings.api_key is not None and not getattr(request.state, "authorized", False):
            return {"status": "ok"}  # without the key: up or not, nothing about the judge
        return {"status": "ok", "reward": repr(reward), "queued": batcher.queue.qsize(),
                "running_batches": len(batcher.running)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def get_reward(request: Request) -> JSONResponse:
        arrived = time.perf_counter()
        try:
            payload = await _read_json(request, settings.max_body_bytes)
            if not isinstance(payload, dict):
                raise _BadRequest(422, f"body must be a JSON object with query, prompts and labels, got "
                                       f"{type(payload).__name__}")
            for key in ("query", "prompts", "labels"):
                value = payload.get(key)
                if isinstance(value, list) and len(value) > settings.max_items:
                    raise _BadRequest(413, f"{key}: {len(value)} items exceed the limit of {settings.max_items}")
            try:
                body = GetRewardBody.model_validate(payload)
            except ValidationError as exc:
                raise _BadRequest(422, format_validation_error(exc, "get_reward body")) from None
            n = len(body.query)
            if len(body.prompts) != n:
                raise _BadRequest(422, f"prompts: {len(body.prompts)} items, expected one per query ({n})")
            labels = body.labels if body.labels is not None else [None] * n
            if len(labels) != n:
                raise _BadRequest(422, f"labels: {len(labels)} items, expected one per query ({n}) or none")
            rollouts = []
            loop = asyncio.get_running_loop()
            for i, (query, prompt, label) in enumerate(zip(body.query, body.prompts, labels)):
                try:
                    response = response_of(query, prompt, i, settings.strip_end_tokens)
                except ValueError as exc:
                    raise _BadRequest(422, str(exc)) from None
                rollouts.append(Rollout(prompt, response, (label or None) if settings.labels_as_reference
                                         else None, loop.create_future()))
        except _BadRequest as bad:
            return _error(bad.status, bad.message)
        await batcher.submit(rollouts)
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*(r.future for r in rollouts)),
                                              settings.request_timeout_s)
        except asyncio.TimeoutError:
            for rollout in rollouts:
                if not rollout.future.done():
                    rollout.future.cancel()
            return _error(503, f"the judge did not answer within {settings.request_timeout_s:g} s", retryable=True)
        except Exception as exc:
            for rollout in rollouts:
                if not rollout.future.done():
                    rollout.future.cancel()
            if caused_by_request(exc):  # this rollout's own content: retrying it cannot help, and nobody else failed
                return _error(422, f"the judge could not judge this rollout: {str(exc)[:500]}", retryable=False)
            if isinstance(exc, GRMError):
                return _error(503, f"judge engine failed: {exc}", retryable=True)
            raise
        reply = openrlhf_reply([(judged, row) for judged, row, _ in outcomes], reward.score_range,
                               settings.invalid_reward)
        judge_seconds = max(judged.seconds for judged, _, _ in outcomes)
        waited = max(dispatched for _, _, dispatched in outcomes) - arrived
        metrics.added.observe(max(0.0, time.perf_counter() - arrived - judge_seconds))
        return JSONResponse(reply, headers={"X-GRM-Judge-Seconds": f"{judge_seconds:.6f}",
                                            "X-GRM-Wait-Seconds": f"{waited:.6f}"})

    async def score(request: Request) -> JSONResponse:
        try:
            payload = await _read_json(request, settings.max_body_bytes)
            items = payload.get("requests") if isinstance(payload, dict) else payload
            if not isinstance(items, list) or not items:
                raise _BadRequest(422, "body must be a non-empty list of ScoreRequests (or {\"requests\": [...]})")
            if len(items) > settings.max_items:
                raise _BadRequest(413, f"requests: {len(items)} items exceed the limit of {settings.max_items}")
            requests = []
            for i, item in enumerate(items):
                responses = item.get("responses") if isinstance(item, dict) else None
                if isinstance(responses, list) and len(responses) > settings.max_responses:
                    raise _BadRequest(413, f"requests[{i}].responses: {len(responses)} responses exceed the limit of "
                                           f"{settings.max_responses} per request (GRM_SERVE_MAX_RESPONSES)")
                try:
                    requests.append(ScoreRequest.model_validate(item))
                except ValidationError as exc:
                    raise _BadRequest(422, format_validation_error(exc, f"requests[{i}]")) from None
        except _BadRequest as bad:
            return _error(bad.status, bad.message)
        try:
            results = await asyncio.wait_for(reward.ascore(requests), settings.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(503, f"the judge did not answer within {settings.request_timeout_s:g} s", retryable=True)
        except InvalidRequestError as exc:
            return _error(422, str(exc))
        except GRMError as exc:
            metrics.engine_errors.inc()
            return _error(503, f"judge engine failed: {exc}", retryable=True)
        return JSONResponse({"results": [r.model_dump(mode="json") for r in results]})

    async def classify(request: Request) -> JSONResponse:
        try:
            payload = await _read_json(request, settings.max_body_bytes)
            texts = payload.get("input") if isinstance(payload, dict) else None
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
                raise _BadRequest(422, "input: expected a non-empty string or list of non-empty strings")
            if len(texts) > settings.max_items:
                raise _BadRequest(413, f"input: {len(texts)} items exceed the limit of {settings.max_items}")
        except _BadRequest as bad:
            return _error(bad.status, bad.message)
        rate = meta_rm.rate_texts
        scores = await rate(texts) if inspect.iscoroutinefunction(rate) else await asyncio.to_thread(rate, texts)
        return JSONResponse(classify_reply(scores, getattr(meta_rm, "name", "meta-rm")))

    if meta_rm is not None:
        app.add_route("/classify", classify, methods=["POST"])
        app.add_route("/v1/classify", classify, methods=["POST"])

    # Plain Starlette routes: both handlers read and validate their bodies themselves (clear 4xx messages), so
    # FastAPI's per-request dependency solving would only cost CPU on the hot path.
    app.add_route("/get_reward", get_reward, methods=["POST"])
    app.add_route("/v1/score", score, methods=["POST"])
    return app


def app_from_env() -> FastAPI:
    """The app a ``--workers`` process builds: the judge from GRM_* variables / GRM_CONFIG_FILE, the server from
    GRM_SERVE_* variables."""
    from .grm import GRMReward

    return create_app(GRMReward(), ServeSettings())


def serve(reward: RewardFunction, settings: ServeSettings, meta_rm: Any = None) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM drain in-flight requests first). With ``workers > 1`` each
    uvicorn worker process rebuilds the reward from the environment (``app_from_env``), so pass the judge's
    configuration as GRM_* variables or a config file (the CLI does that for its options)."""
    import uvicorn

    kwargs = dict(host=settings.host, port=settings.port, log_level="info",
                  timeout_graceful_shutdown=int(math.ceil(settings.request_timeout_s)))
    if settings.workers > 1:
        uvicorn.run("grm_plugin.server:app_from_env", factory=True, workers=settings.workers, **kwargs)
    else:
        uvicorn.run(create_app(reward, settings, meta_rm), **kwargs)


__all__ = ["GetRewardBody", "ServeSettings", "app_from_env", "create_app", "serve"]
