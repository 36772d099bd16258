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
import hashlib
import hmac
import inspect
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import parse_qs

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client import multiprocess as prometheus_multiprocess
    from prometheus_client.core import GaugeMetricFamily
    from starlette.requests import ClientDisconnect

    from .serving import METRICS_DIR_VARIABLE, on_signal, redact_access_log
    from .serving import run as run_uvicorn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"`grm serve` needs the server extra: pip install 'grm-plugin[server]' ({exc})") from exc

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .cache import LRUCache
from .errors import GRMError, InvalidRequestError, caused_by_request, format_validation_error
from .meta_rm import classify_reply
from .reward import RewardFunction, RowJudgements
from .rollouts import MicroBatcher, Rollout, openrlhf_reply, response_of, rollout_reward
from .types import Prompt, ScoreRequest, lone_surrogate, unicode_text

logger = logging.getLogger(__name__)

# Unicode category Cc (C0 controls, DEL, C1 controls) except tab, newline and carriage return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

class ServeSettings(BaseSettings):
    """Settings of `grm serve` (the judge itself is configured by GRMConfig); also read from ``GRM_SERVE_*``
    environment variables (how ``--workers`` hands them to its worker processes)."""

    model_config = SettingsConfigDict(env_prefix="GRM_SERVE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: Optional[SecretStr] = Field(None, description="Required as 'Authorization: Bearer <key>' or, for clients "
                                                           "that send no headers (OpenRLHF), as '?api_key=<key>'.")
    api_key_file: Optional[Path] = Field(None, description="A file holding the API key (read once at start).")
    batch_window_ms: float = Field(15.0, ge=0, description="How long rollouts are gathered before judging.")
    group_size: Union[int, Literal["auto"]] = Field(
        "auto", description="Rollouts per prompt (OpenRLHF's n_samples_per_prompt): a prompt's rollouts are held "
                            "until that many arrived, then judged together; 'auto' learns it from the traffic; 1 "
                            "judges every rollout alone.")
    group_wait_s: float = Field(60.0, gt=0, description="Longest a prompt's first rollout waits for the rest of its "
                                                         "group; then the group is judged with what it has (partial).")
    max_batch: int = Field(64, ge=1, description="Most rollouts judged together.")
    culprit_memory_s: float = Field(60.0, gt=0, description="How long a rollout the judge refused for its content is "
                                    "answered 422 at once when it comes again (OpenRLHF's client retries a 422 five "
                                    "times); after that it is judged again, so a transient refusal does not last.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_items: int = Field(1024, ge=1, description="Most rollouts (or ScoreRequests) in one request.")
    max_responses: int = Field(64, ge=1, description="Most responses in one ScoreRequest of /v1/score (one judge "
                                                     "prompt shows them all; the work grows with their number).")
    request_timeout_s: float = Field(170.0, gt=0, description="A request not judged by then gets a 503 (below "
                                                              "OpenRLHF's 180 s client timeout, so its client sees it).")
    max_queue_wait_s: float = Field(60.0, gt=0, description="Load shedding: while a new rollout would wait longer "
                                    "than this (rollouts pending / rollouts judged per second lately), /get_reward "
                                    "answers 503 with Retry-After at once instead of queueing it.")
    max_pending: int = Field(16384, ge=1, description="Most rollouts admitted and not answered yet (then 503).")
    header_timeout_s: float = Field(10.0, gt=0, description="A request's headers must arrive within this (408).")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="Largest request header block (431).")
    body_timeout_s: float = Field(30.0, gt=0, description="A request's body must arrive within this (408).")
    max_connections: int = Field(4096, ge=1, description="Open connections beyond this get 503 (uvicorn's "
                                                         "limit_concurrency); the open-files limit is raised for it.")
    drain_timeout_s: float = Field(30.0, gt=0, description="On SIGTERM/SIGINT/SIGHUP, how long in-flight requests "
                                                           "may finish before they are cancelled (a second signal "
                                                           "exits at once).")
    labels_as_reference: bool = Field(True, description="Non-empty OpenRLHF labels become the reference answer.")
    invalid_reward: Optional[float] = Field(
        None, description="Reward when no judgement parses; None: the bottom of the score range (score 0).")
    strip_end_tokens: bool = Field(True, description="Strip trailing end-of-turn tokens from the response.")
    workers: int = Field(1, ge=1, description="Server processes (uvicorn workers), each with its own micro-batcher.")
    tune_gc: bool = Field(True, description="Freeze the objects alive at startup (gc.freeze) and run full garbage "
                                            "collections less often while serving: shorter event-loop pauses.")

    @field_validator("group_size", mode="before")
    @classmethod
    def _group_size(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"expected a positive integer or 'auto', got {value}")
        return value

    @model_validator(mode="after")
    def _key_from_file(self) -> "ServeSettings":
        if self.group_size != 1 and self.group_wait_s >= self.request_timeout_s:  # groups of 1 never wait
            raise ValueError(f"group_wait_s: {self.group_wait_s:g} s must be below request_timeout_s "
                             f"({self.request_timeout_s:g} s), or a waiting group's requests time out unjudged")
        if self.api_key_file is not None:
            if self.api_key is not None:
                raise ValueError("api_key_file: give the key either directly or in a file, not both")
            try:
                key = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"api_key_file: cannot read {self.api_key_file} ({exc.strerror})") from None
            if not key:
                raise ValueError(f"api_key_file: {self.api_key_file} is empty")
            self.api_key = SecretStr(key)
        if self.api_key is not None and not self.api_key.get_secret_value():
            raise ValueError("api_key: empty (leave it unset to serve without a key)")
        return self


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


class RolloutItem(BaseModel):
    """One rollout of ``POST /v1/rollouts``: its prompt (text or chat messages), response and optional reference."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[Prompt, AfterValidator(unicode_text)]
    response: Annotated[str, AfterValidator(unicode_text)]
    reference: Annotated[Optional[str], AfterValidator(unicode_text)] = None


class RolloutsBody(BaseModel):
    """``POST /v1/rollouts``: rollouts judged through the cohorts like /get_reward's (for hosts whose prompts are chat
    messages, such as verl's ``grm`` manager forwarding to a shared server)."""

    model_config = ConfigDict(extra="forbid")

    rollouts: list[RolloutItem] = Field(min_length=1)


class Metrics:
    """The server's Prometheus metrics (one registry per app). Under ``--workers`` (prometheus_client's multiprocess
    mode, ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start) every worker writes its samples to that folder
    and ``render`` sums them over the workers, the ones gone included: counters never go backwards."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(METRICS_DIR_VARIABLE))
        self.registry = CollectorRegistry()
        self.requests = Counter("grm_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("grm_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180),
                                 registry=self.registry)
        self.batch_size = Histogram("grm_batch_rollouts", "Rollouts judged together (one group of a micro-batch)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.samples = Counter("grm_judge_samples", "Judgements sampled", registry=self.registry)
        self.valid_samples = Counter("grm_judge_valid_samples", "Judgements that parsed", registry=self.registry)
        self.resampled = Counter("grm_judge_resampled", "Replacement judgements drawn for ones that did not parse",
                                 registry=self.registry)
        self.truncated = Counter("grm_truncated_requests", "Judge requests shortened to fit the judge's context",
                                 registry=self.registry)
        self.too_long = Counter("grm_prompt_too_long", "Judge requests that could not fit the judge's context (not "
                                "judged; the rollouts got the invalid reward)", registry=self.registry)
        self.engine_errors = Counter("grm_engine_errors", "Micro-batches failed by the engine",
                                     registry=self.registry)
        self.inflight = Gauge("grm_inflight_requests", "Requests being served", registry=self.registry,
                              multiprocess_mode="livesum")
        self.shed = Counter("grm_shed_rollouts", "Rollouts refused with 503 + Retry-After by load shedding",
                            registry=self.registry)
        self.group_size = Histogram("grm_group_size", "Rollouts of one prompt judged together (a closed cohort)",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=self.registry)
        self.partial_groups = Counter("grm_partial_groups", "Cohorts judged before their group was complete "
                                      "(group_wait_s passed, or the server drained)", registry=self.registry)
        self.cohort_wait = Histogram("grm_cohort_wait_seconds", "From a cohort's first rollout to its closing",
                                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
                                     registry=self.registry)
        self.waiting = Gauge("grm_rollouts_waiting", "Rollouts held in open cohorts now", registry=self.registry,
                             multiprocess_mode="livesum")
        self.added = Histogram("grm_added_seconds", "Time a /get_reward request spent in the server outside the "
                               "judge engine call of its micro-batch (cohort wait, window, queueing, parsing, voting)",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 5),
                               registry=self.registry)

        self.floored = Counter("grm_floored_responses", "Responses given the lowest score unjudged "
                               "(floor_contentless)", registry=self.registry)
        # judge health of the last micro-batch that could measure each figure (health.JudgeHealth)
        self.health = {name: Gauge(f"grm_judge_{name}", help_text, registry=self.registry,
                                   multiprocess_mode="mostrecent")
                       for name, help_text in (
                           ("slot_bias", "Score points the response shown first earns over the others (last batch)"),
                           ("length_corr", "Correlation of response length and reward within a prompt (last batch)"),
                           ("ties_rate", "Share of response pairs of one prompt with equal rewards (last batch)"),
                           ("vote_spread", "Mean standard deviation of a response's scores over samples "
                                           "(last batch)"))}

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
                self.resampled.inc(result.resampled)
                self.truncated.inc(result.truncated_tokens > 0)
                self.too_long.inc(result.error is not None)
                self.floored.inc(result.floored)
        for name, value in outcome.health().measured().items():
            self.health[name].set(value)

    def closed_cohort(self, size: int, partial: bool, waited_s: float) -> None:
        """The micro-batcher's ``on_cohort``: one closed cohort."""
        self.group_size.observe(size)
        self.cohort_wait.observe(waited_s)
        if partial:
            self.partial_groups.inc()

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """This process stops serving: its live gauges leave the sum (its counters stay in it)."""
        if self.multiprocess:
            prometheus_multiprocess.mark_process_dead(os.getpid())


_ENDPOINTS = frozenset({"/get_reward", "/v1/rollouts", "/v1/score", "/health", "/metrics"})
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection before the answer": counted, not an error


class _Guard:
    """Pure ASGI middleware (no per-request task, unlike ``@app.middleware``): bearer-token check, in-flight gauge,
    request counts by endpoint and status, latency histogram; a crash in a handler is still a JSON 500 answer."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        self.key = key.encode() if key is not None else None

    def authorized(self, scope: dict) -> bool:
        """Whether the request carries ``Authorization: Bearer <key>`` (the scheme in any case) or, for clients that
        send no headers (OpenRLHF), the query parameter ``api_key=<key>``; the key compared in constant time."""
        value = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key or b""):
            return True
        query = scope.get("query_string") or b""
        if b"api_key=" not in query:
            return False
        given = parse_qs(query.decode("latin-1"), max_num_fields=16).get("api_key", [""])[-1]
        return hmac.compare_digest(given.encode("latin-1", "replace"), self.key or b"")

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
                    response = _error(401, "missing or wrong API key (Authorization: Bearer <key>, or ?api_key=<key> "
                                           "in the URL for clients that send no headers)")
                    await response(scope, receive, send_and_record)
                    return
            try:
                await self.app(scope, receive, send_and_record)
            except ClientDisconnect:  # the client went away mid-body: nothing to answer, and not our error
                logger.debug("client disconnected before sending the whole body of %s", endpoint)
                state["status"] = CLIENT_CLOSED
            except asyncio.CancelledError:  # shutdown's drain time ran out
                if not state["sent"]:
                    state["status"] = 503
                raise
            except Exception as exc:  # a bug: still an answer, never a dropped connection
                logger.exception("unhandled error on %s", endpoint)
                if not state["sent"]:
                    await _error(500, f"internal error: {type(exc).__name__}")(scope, receive, send_and_record)
        finally:
            self.metrics.inflight.dec()
            self.metrics.count(endpoint, state["status"], time.perf_counter() - started)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **extra}}, status_code=status)


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused (413) beyond ``limit`` bytes and (408) when it does not arrive within
    ``timeout_s``: a client that stalls mid-body never holds its connection."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BadRequest(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _BadRequest(413, f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise _BadRequest(408, f"body not received within {timeout_s:g} s") from None
    if not raw:
        raise _BadRequest(422, "empty body: expected a JSON object")
    return raw


def _decode_json(raw: bytes) -> Any:
    """The body as JSON, or a _BadRequest naming what is wrong with it."""
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


OFF_LOOP_BYTES = 256 * 1024  # bodies from this size are decoded and validated in a thread: /health keeps answering


async def _parsed(raw: bytes, parse: Any) -> Any:
    """``parse(raw)``, in a worker thread for a large body (JSON decoding and validation of megabytes take tens of
    milliseconds of CPU that would otherwise stall every other request)."""
    if len(raw) < OFF_LOOP_BYTES:
        return parse(raw)
    return await asyncio.to_thread(parse, raw)


MAX_INT_DIGITS = 100


def _bounded_int(digits: str) -> int:
    """A JSON integer, refused beyond ``MAX_INT_DIGITS`` digits (no field of ours needs more; huge ones cost CPU)."""
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


async def _unless_gone(request: Request, work: Any) -> Any:
    """Await ``work`` (a coroutine) unless the client disconnects first: then it is cancelled and ClientDisconnect
    raised (a rollout held in a cohort for a minute must not be judged for a caller that left)."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnect()
    return task.result()


_REPLICA_METRICS = [("requests", "Judge calls sent to the replica"),
                    ("errors", "Judge calls the replica failed (after retries)"),
                    ("ejections", "Times the replica was ejected"), ("inflight", "Judge calls in flight to the replica"),
                    ("ejected", "1 while the replica is ejected")]


class _Replicas:
    """A one-scrape Prometheus collector of per-replica figures (no metric files, so fine under --workers)."""

    def __init__(self, stats: list[dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self) -> Any:
        for name, help_text in _REPLICA_METRICS:
            family = GaugeMetricFamily(f"grm_replica_{name}", help_text, labels=["replica"])
            for replica in self.stats:
                family.add_metric([replica["replica"]], float(replica[name]))
            yield family


def _replica_metrics(stats: list[dict[str, Any]]) -> bytes:
    """Per judge replica (this process's engine client): requests, errors, ejections, in flight, ejected now."""
    if len(stats) < 2:
        return b""
    registry = CollectorRegistry()
    registry.register(_Replicas(stats))
    return generate_latest(registry)


def _validated(model: Any, payload: Any, what: str) -> Any:
    """``model`` validated from ``payload``, or a 422 _BadRequest naming the fields (``what``: where they are)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _BadRequest(422, format_validation_error(exc, what)) from None


def _digest(row: tuple[str, str, Optional[str]]) -> str:
    """A rollout's (prompt, response, label) as a short key."""
    return hashlib.sha256(json.dumps(row).encode("utf-8", "surrogatepass")).hexdigest()


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
    grouped = reward.mode == "group"  # a pointwise reward judges each rollout alone anyway
    batcher = MicroBatcher(reward, settings.batch_window_ms / 1000, settings.max_batch, on_batch=metrics.judged_batch,
                           group_size=settings.group_size if grouped else None, group_wait_s=settings.group_wait_s,
                           on_cohort=metrics.closed_cohort)
    # rollouts the judge refused for their content -> (the 422 they got, until when it is remembered)
    culprits: LRUCache[tuple[str, float]] = LRUCache(1024)

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
        redact_access_log()
        on_signal(batcher.drain)  # a stopping server judges its open cohorts at once instead of waiting group_wait_s
        try:
            yield
        finally:
            # uvicorn has drained in-flight requests by now (for at most drain_timeout_s): what the batcher still
            # holds has nobody waiting, so a hung engine gets one more second, not the engine's own timeout.
            await batcher.stop(timeout_s=1.0)
            metrics.close()
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
        wait = batcher.expected_wait_s()
        return {"status": "ok", "reward": repr(reward), "queued": batcher.queue.qsize(), "pending": batcher.pending,
                "running_batches": len(batcher.running), "expected_wait_s": None if wait is None else round(wait, 3),
                "open_cohorts": len(batcher.cohorts.open) if batcher.cohorts else 0, "rollouts_waiting":
                batcher.waiting, "group_size": (batcher.group_size.expected if batcher.group_size else 1)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.waiting.set(batcher.waiting)
        replicas = getattr(reward, "replica_stats", None)
        extra = _replica_metrics(replicas()) if replicas is not None else b""
        return Response(metrics.render() + extra, media_type=CONTENT_TYPE_LATEST)

    def parse_get_reward(raw: bytes) -> list[tuple[str, str, Optional[str]]]:
        """OpenRLHF's body -> (prompt, response, label) per rollout, or a _BadRequest naming the field."""
        payload = _decode_json(raw)
        if not isinstance(payload, dict):
            raise _BadRequest(422, f"body must be a JSON object with query, prompts and labels, got "
                                   f"{type(payload).__name__}")
        for key in ("query", "prompts", "labels"):
            value = payload.get(key)
            if isinstance(value, list) and len(value) > settings.max_items:
                raise _BadRequest(413, f"{key}: {len(value)} items exceed the limit of {settings.max_items}")
        body = _validated(GetRewardBody, payload, "get_reward body")
        n = len(body.query)
        if len(body.prompts) != n:
            raise _BadRequest(422, f"prompts: {len(body.prompts)} items, expected one per query ({n})")
        labels = body.labels if body.labels is not None else [None] * n
        if len(labels) != n:
            raise _BadRequest(422, f"labels: {len(labels)} items, expected one per query ({n}) or none")
        rows = []
        for i, (query, prompt, label) in enumerate(zip(body.query, body.prompts, labels)):
            try:
                response = response_of(query, prompt, i, settings.strip_end_tokens)
            except ValueError as exc:
                raise _BadRequest(422, str(exc)) from None
            rows.append((prompt, response, (label or None) if settings.labels_as_reference else None))
        return rows

    def overloaded(n: int) -> JSONResponse | None:
        """Load shedding: a 503 with Retry-After when ``n`` more rollouts would wait past ``max_queue_wait_s`` (or
        exceed ``max_pending``); None when they are admitted."""
        wait = batcher.expected_wait_s()
        if batcher.pending + n <= settings.max_pending and (wait is None or wait <= settings.max_queue_wait_s):
            return None
        metrics.shed.inc(n)
        retry_after = max(1, math.ceil((wait or settings.max_queue_wait_s) - settings.max_queue_wait_s))
        reason = (f"expected wait {wait:.0f} s exceeds {settings.max_queue_wait_s:g} s" if wait is not None
                  and wait > settings.max_queue_wait_s else f"{batcher.pending} rollouts pending (limit "
                                                            f"{settings.max_pending})")
        response = _error(503, f"overloaded, retry later: {reason}", retryable=True)
        response.headers["Retry-After"] = str(retry_after)
        return response

    async def judged(request: Request, rows: list[tuple[Any, str, Optional[str]]]) -> Any:
        """Judge rollouts (prompt, response, label) through the cohorts: their (judged, row, dispatched) outcomes, or
        the JSONResponse that answers the request instead (a known culprit, load shedding, a timeout, a failure)."""
        now = time.monotonic()
        known = next((m for m, until in filter(None, (culprits.get(_digest(row)) for row in rows)) if until > now),
                     None)
        if known is not None:  # refused lately: OpenRLHF's client retries a 422 five times, the judge once is enough
            return _error(422, known, retryable=False)
        shed = overloaded(len(rows))
        if shed is not None:
            return shed
        loop = asyncio.get_running_loop()
        rollouts = [Rollout(prompt, response, label, loop.create_future()) for prompt, response, label in rows]
        await batcher.submit(rollouts)
        metrics.waiting.set(batcher.waiting)
        try:
            return await _unless_gone(request, asyncio.wait_for(asyncio.gather(*(r.future for r in rollouts)),
                                                                settings.request_timeout_s))
        except ClientDisconnect:  # its caller gave up: the rollouts leave their cohorts, the others go on
            for rollout in rollouts:
                rollout.future.cancel()
            raise
        except asyncio.TimeoutError:
            for rollout in rollouts:
                if not rollout.future.done():
                    rollout.future.cancel()
            return _error(503, f"the judge did not answer within {settings.request_timeout_s:g} s", retryable=True)
        except asyncio.CancelledError:
            for rollout in rollouts:
                rollout.future.cancel()
            raise
        except Exception as exc:
            for rollout in rollouts:
                if not rollout.future.done():
                    rollout.future.cancel()
            if caused_by_request(exc):  # this rollout's own content: retrying it cannot help, and nobody else failed
                message = f"the judge could not judge this rollout: {str(exc)[:500]}"
                if len(rows) == 1:
                    culprits.put(_digest(rows[0]), (message, time.monotonic() + settings.culprit_memory_s))
                return _error(422, message, retryable=False)
            if isinstance(exc, GRMError):
                return _error(503, f"judge engine failed: {exc}", retryable=True)
            raise

    def timing_headers(outcomes: list, arrived: float) -> dict[str, str]:
        judge_seconds = max(judged.seconds for judged, _, _ in outcomes)
        waited = max(dispatched for _, _, dispatched in outcomes) - arrived
        metrics.added.observe(max(0.0, time.perf_counter() - arrived - judge_seconds))
        return {"X-GRM-Judge-Seconds": f"{judge_seconds:.6f}", "X-GRM-Wait-Seconds": f"{waited:.6f}"}

    def parse_rollouts(raw: bytes) -> list[tuple[Any, str, Optional[str]]]:
        """A /v1/rollouts body -> (prompt, response, reference) per rollout, or a _BadRequest naming the field."""
        payload = _decode_json(raw)
        items = payload.get("rollouts") if isinstance(payload, dict) else None
        if isinstance(items, list) and len(items) > settings.max_items:
            raise _BadRequest(413, f"rollouts: {len(items)} items exceed the limit of {settings.max_items}")
        body = _validated(RolloutsBody, payload, "rollouts body")
        return [(item.prompt if isinstance(item.prompt, str) else [m.model_dump(exclude_none=True) for m in item.prompt],
                 item.response, item.reference or None) for item in body.rollouts]

    def rollout_endpoint(parse: Any, reply: Any) -> Any:
        """A handler judging rollouts through the cohorts: ``parse(raw)`` -> rows, ``reply(outcomes)`` -> JSON."""

        async def handle(request: Request) -> Response:
            arrived = time.perf_counter()
            try:
                raw = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
                rows = await _parsed(raw, parse)
            except _BadRequest as bad:
                return _error(bad.status, bad.message)
            outcomes = await judged(request, rows)
            if isinstance(outcomes, Response):
                return outcomes
            return JSONResponse(reply(outcomes), headers=timing_headers(outcomes, arrived))

        return handle

    def openrlhf_answer(outcomes: list) -> dict[str, Any]:
        return openrlhf_reply([(judgements, row) for judgements, row, _ in outcomes], reward.score_range,
                              settings.invalid_reward)

    def rollouts_answer(outcomes: list) -> dict[str, Any]:
        results = []
        for judgements, row, _ in outcomes:
            value, unit, logs = rollout_reward(judgements, row, reward.score_range, settings.invalid_reward)
            results.append({"reward": value, "score": unit, "logs": logs})
        return {"results": results}

    def parse_score(raw: bytes) -> list[ScoreRequest]:
        """A /v1/score body -> ScoreRequests, or a _BadRequest naming the field."""
        payload = _decode_json(raw)
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
            requests.append(_validated(ScoreRequest, item, f"requests[{i}]"))
        return requests

    async def score(request: Request) -> JSONResponse:
        try:
            raw = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
            requests = await _parsed(raw, parse_score)
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
            payload = _decode_json(await _read_body(request, settings.max_body_bytes, settings.body_timeout_s))
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
    app.add_route("/get_reward", rollout_endpoint(parse_get_reward, openrlhf_answer), methods=["POST"])
    app.add_route("/v1/rollouts", rollout_endpoint(parse_rollouts, rollouts_answer), methods=["POST"])
    app.add_route("/v1/score", score, methods=["POST"])
    return app


def app_from_env() -> FastAPI:
    """The app a ``--workers`` process builds: the judge from GRM_* variables / GRM_CONFIG_FILE, the server from
    GRM_SERVE_* variables."""
    from .grm import GRMReward

    return create_app(GRMReward(), ServeSettings())


def serve(reward: RewardFunction, settings: ServeSettings, meta_rm: Any = None) -> None:
    """Run the server until a signal stops it (SIGINT, SIGTERM or SIGHUP drain in-flight requests for at most
    ``drain_timeout_s``; a second signal exits at once), with the connection protections of ``serving``. With
    ``workers > 1`` each uvicorn worker process rebuilds the reward from the environment (``app_from_env``), so pass
    the judge's configuration as GRM_* variables or a config file (the CLI does that for its options)."""
    if settings.workers > 1:
        run_uvicorn("grm_plugin.server:app_from_env", settings)
    else:
        run_uvicorn(create_app(reward, settings, meta_rm), settings)


__all__ = ["GetRewardBody", "RolloutItem", "RolloutsBody", "ServeSettings", "app_from_env", "create_app", "serve"]
