"""verl glue (verl 0.9): an async ``compute_score`` for verl's reward loop, and a group-aware reward manager ``grm``.

verl scores one sample at a time: its reward loop runs ``reward.num_workers`` Ray actors (``RewardLoopWorker``,
default 8), each awaiting one ``run_single`` per sample, all at once on its own event loop. Which worker gets a
sample: when verl streams rewards (its agent loop sends each finished rollout to ``random.choice`` of the workers;
the path whenever verl does not serve a colocated reward model), a prompt's ``n`` samples are spread over the
workers at random; when it scores a whole batch (``compute_rm_score``), each worker gets a contiguous chunk.

``compute_score`` (any reward manager, e.g. verl's default ``naive``) judges each response alone::

    reward.custom_reward_function.path=pkg://grm_plugin.adapters.verl
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.base_url=http://judge-host:8000/v1

The reward manager ``grm`` (``reward.reward_manager.name=grm``; registered through the ``verl.plugins`` entry point,
which ``import verl`` loads) judges the responses of one prompt together in one judge prompt (group mode). In each
worker the micro-batcher of ``grm_plugin.rollouts`` (the one behind ``grm serve``) holds a prompt's samples in a
*cohort* until ``group_size`` of them arrived or ``group_wait_s`` passed since the first, then judges them together
(samples of different prompts ready within ``batch_window_ms`` share the engine calls).

Where a prompt's samples meet, i.e. in-process cohorts or a shared server:

- **One reward worker** (``reward.num_workers=1``): every sample passes through it, so in-process cohorts see
  whole groups. ``group_size`` defaults to ``actor_rollout_ref.rollout.n`` when it is above 1 (RewardLoopWorker
  builds the manager with the trainer's whole config), else ``"auto"`` (learned from the traffic).
- **Several reward workers**: streamed samples of a prompt are split over them, so no worker sees a whole group.
  Run one shared ``grm serve`` (``--workers 1``: each server process has cohorts of its own; ``--group-size`` =
  rollout.n) and set ``serve_url``: every worker then POSTs each sample to ``{serve_url}/v1/rollouts`` instead of
  judging it, and the samples meet in the server's cohorts. ``compute_score`` forwards too when ``serve_url`` is
  set. Without ``serve_url``, an unset ``group_size`` means no cohorts here (each worker judges the samples that
  meet within ``batch_window_ms``; a cohort would only wait ``group_wait_s`` for samples that went to other
  workers), logged as a warning; verl scoring whole batches (a colocated reward model) keeps rollout.n.

``group_wait_s`` defaults to ``min(60, timeout_s / 5)``, 60 s with the default ``timeout_s`` of 300 s, and must be
below ``timeout_s``: a sample's ``timeout_s`` runs from its arrival, so a cohort's first sample waiting
``group_wait_s`` still leaves the judge 240 s for the group's judge prompt (k samples of a long critique from a
27B judge). Streamed rollouts of one prompt finish tens of seconds apart (long-tail generation); a batch scored at
once completes its groups at once and waits nothing. A group that never completes, e.g. validation with
``rollout.val_kwargs.n`` below ``rollout.n``, is judged with what it has after ``group_wait_s`` (once per step:
cohorts wait in parallel); set ``group_size`` (or ``"auto"``) when the split into groups differs from rollout.n.

Forwarding (``serve_url``, e.g. ``http://grm-host:8000``; ``serve_api_key``, sent as ``Authorization: Bearer``,
best given as ``GRM_VERL_SERVE_API_KEY`` since verl prints its config): one POST per sample over one pooled client
per event loop (no connection limit: every sample waiting in a server cohort holds a connection, so the server's
``--max-connections`` must exceed the samples in flight over all workers), retried with jittered backoff (at least
a ``Retry-After``) on 502/503/504 and connection errors while ``timeout_s`` allows, never on a 4xx (401: the key,
422: the judge refused that sample). The judge settings (``k``, ``model``, ...) are then the server's; the adapter
keeps ``timeout_s``, ``invalid_reward`` (also for a sample whose judgements all failed to parse), ``prompt_keys``,
``ground_truth_as_reference`` and ``score_range`` (for a failed sample's middle score).

Both return the same keys for every sample: ``score`` and ``EXTRA_KEYS`` (verl takes the extra-info keys from the
first sample and fails with a KeyError when another sample lacks one): the sample's request's ``grm_valid_samples``,
``grm_samples``, ``grm_mean_score``, ``grm_group_size``, ``grm_cached``, ``grm_resampled`` and
``grm_truncated_tokens`` (``grm_plugin.rollouts.rollout_reward``), its judged batch's judge-health figures
``grm_slot_bias``, ``grm_length_corr``, ``grm_ties_rate`` and ``grm_vote_spread`` (``grm_plugin.health``; a sample
judged alone has no slots or pairs to compare, so only ``grm_vote_spread`` is defined for it), and ``grm_failed``.
Neither raises: a judge or server failure, a
timeout (``timeout_s``; verl sets none), a sample without a prompt or a bad configuration gives ``invalid_reward``
(default: the middle of the score range) with ``grm_failed=1``, and the reason is logged once.

Configuration: the judge is GRMConfig (``GRM_*`` variables, ``GRM_CONFIG_FILE``), the adapter is ``VerlSettings``
(``GRM_VERL_*`` variables); both are overridden by ``+reward.custom_reward_function.reward_kwargs.<field>=...``
(which the manager reads too). When verl serves the judge itself (``reward.reward_model.enable=True``), the
``reward_router_address`` verl passes replaces ``base_url``, and the model is ``model`` if set, else the path of the
reward model verl serves (with ``serve_url`` set the server's judge is used instead).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

try:
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER, register
except ImportError as exc:  # pragma: no cover - exercised only without verl
    raise ImportError(f"grm_plugin.adapters.verl needs verl>=0.9 (pip install verl) ({exc})") from exc

import httpx2
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from grm_plugin._sync import PerLoop
from grm_plugin.backends.http import RetryPolicy, retry_after, server_message
from grm_plugin.cohorts import GroupSizeSetting
from grm_plugin.config import GRMConfig
from grm_plugin.errors import ConfigError, format_validation_error
from grm_plugin.grm import GRMReward
from grm_plugin.reward import RewardFunction, RowJudgements
from grm_plugin.rollouts import MicroBatcher, Rollout, rollout_reward

logger = logging.getLogger(__name__)

MANAGER_NAME = "grm"
# Every sample's result holds "score" and exactly these keys (means over a batch are verl's logged metrics).
# The judge-health figures (grm_plugin.health) are the sample's judged batch's, 0 when undefined or not judged.
HEALTH_KEYS = ("grm_slot_bias", "grm_length_corr", "grm_ties_rate", "grm_vote_spread")
EXTRA_KEYS = ("grm_valid_samples", "grm_samples", "grm_mean_score", "grm_group_size", "grm_cached", "grm_resampled",
              "grm_truncated_tokens", *HEALTH_KEYS, "grm_failed")
# Statuses of a shared server (or a proxy in front of it) that mean "try again": overloaded, restarting, timed out.
RETRIED_STATUSES = frozenset({502, 503, 504})


class VerlSettings(BaseSettings):
    """The adapter's own settings (the judge itself is GRMConfig); also read from ``GRM_VERL_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="GRM_VERL_", extra="forbid")

    timeout_s: float = Field(300.0, gt=0, description="A sample not judged by then gets invalid_reward.")
    invalid_reward: Optional[float] = Field(
        None, description="Score of a sample that was not judged (engine failure, timeout; verl needs a number) and "
                          "of one whose judgements all failed to parse; None: the middle of the score range for "
                          "the first, the bottom for the second (an unreadable judgement is never a prize).")
    prompt_keys: list[str] = Field(["question", "prompt", "raw_prompt"],
                                   description="extra_info keys holding the prompt (a string or chat messages), "
                                               "the first present one is used.")
    ground_truth_as_reference: bool = Field(True, description="A non-empty ground_truth becomes the reference answer.")
    batch_window_ms: float = Field(20.0, ge=0, description="Manager `grm`: how long ready samples are gathered.")
    max_batch: int = Field(256, ge=1, description="Manager `grm`: most samples judged together.")
    group_size: Optional[Union[int, Literal["auto"]]] = Field(
        None, description="Manager `grm`: samples per prompt; a prompt's samples are held until that many arrived "
                          "(or group_wait_s passed), then judged together; 'auto' learns it; 1 judges each alone. "
                          "None: verl's actor_rollout_ref.rollout.n when above 1, else 'auto'; with several "
                          "streaming reward workers none (each judges what meets within batch_window_ms).")
    group_wait_s: Optional[float] = Field(
        None, gt=0, description="Manager `grm`: longest a prompt's first sample waits for the rest of its group "
                                "(then the group is judged with what it has); below timeout_s, whose rest is the "
                                "judge's time. None: min(60, timeout_s / 5), 60 s for the default timeout_s.")
    serve_url: Optional[str] = Field(
        None, description="A shared `grm serve` (http://host:port): each sample is POSTed to its /v1/rollouts instead "
                          "of judged in this process, so the samples of a prompt that verl spreads over several "
                          "reward workers meet in the server's cohorts.")
    serve_api_key: Optional[SecretStr] = Field(
        None, description="The server's API key (sent as 'Authorization: Bearer <key>'); prefer the variable "
                          "GRM_VERL_SERVE_API_KEY to reward_kwargs, which verl prints with its config.")

    @field_validator("group_size", mode="before")
    @classmethod
    def _group_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text.isdigit():
                value = int(text)
            elif text in ("", "none", "null"):
                return None
            else:
                return text
        if isinstance(value, bool) or (isinstance(value, int) and value < 1):
            raise ValueError(f"expected a positive integer or 'auto', got {value!r}")
        return value

    @field_validator("serve_url")
    @classmethod
    def _serve_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or not value.partition("://")[2]:
            raise ValueError(f"expected the server's http:// or https:// URL, such as http://grm-host:8000, got "
                             f"{value!r}")
        return value

    @model_validator(mode="after")
    def _wait_below_timeout(self) -> "VerlSettings":
        if self.group_wait_s is not None and self.group_wait_s >= self.timeout_s:
            raise ValueError(f"group_wait_s: {self.group_wait_s:g} s must be below timeout_s ({self.timeout_s:g} s), "
                             "or a waiting group's samples time out unjudged")
        return self

    @property
    def cohort_wait_s(self) -> float:
        """``group_wait_s``, or its default: a fifth of ``timeout_s``, at most a minute."""
        return self.group_wait_s if self.group_wait_s is not None else min(60.0, self.timeout_s / 5)

    @property
    def rollouts_url(self) -> str:
        """``serve_url``'s ``/v1/rollouts`` (a URL given with ``/v1`` or the whole path is taken as it is meant)."""
        url = self.serve_url or ""
        for suffix in ("/v1/rollouts", "/v1"):
            if url.endswith(suffix):
                url = url[: -len(suffix)]
                break
        return f"{url}/v1/rollouts"


def _plain(value: Any) -> Any:
    """OmegaConf containers and numpy arrays (what verl hands over) as plain Python values."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


_logged: set[str] = set()


def _log_once(message: str, key: str | None = None, level: int = logging.ERROR) -> None:
    """Log a message once per process and ``key`` (default: the message): a failure repeats for every sample of
    every step, and a server's answers may differ per sample."""
    key = key if key is not None else message
    if key not in _logged:
        _logged.add(key)
        logger.log(level, message)


def prompt_of(extra_info: Any, keys: list[str]) -> Any:
    """The prompt in ``extra_info``: the first of ``keys`` holding a non-empty string or message list, else None."""
    if not isinstance(extra_info, Mapping):
        return None
    for key in keys:
        value = _plain(extra_info.get(key))
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value:
            return [dict(message) for message in value]
    return None


def reference_of(ground_truth: Any) -> str | None:
    """``ground_truth`` as a reference answer: strings as they are, other values as JSON; empty ones are None."""
    value = _plain(ground_truth)
    if value is None or value == "" or value == [] or value == {}:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _config_value(config: Any, path: str) -> Any:
    """``config``'s value at a dotted ``path`` (a DictConfig or a mapping), None where it has none."""
    value = config
    for part in path.split("."):
        try:
            value = value.get(part) if value is not None else None
        except Exception:  # a struct DictConfig refusing an unknown key, or not a mapping at all
            return None
    return _plain(value)


def verl_groups(config: Any) -> dict[str, Any]:
    """What verl's trainer config says about groups, as RewardLoopWorker hands it to the manager (the whole config):
    ``rollout_n`` (responses per prompt), ``num_workers`` (reward workers) and ``streaming`` (whether verl's agent
    loop sends each finished rollout to a random worker: unless verl serves a reward model without its own resource
    pool, as in verl's ray_trainer)."""
    n = _config_value(config, "actor_rollout_ref.rollout.n")
    workers = _config_value(config, "reward.num_workers")
    served = bool(_config_value(config, "reward.reward_model.enable"))
    own_pool = bool(_config_value(config, "reward.reward_model.enable_resource_pool"))
    return {"rollout_n": _count(n), "num_workers": _count(workers), "streaming": not served or own_pool}


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def cohort_size(settings: VerlSettings, reward: RewardFunction,
                groups: Mapping[str, Any]) -> tuple[GroupSizeSetting | None, str]:
    """The in-process cohorts' group size (None: no cohorts, only the batch window) and where it comes from."""
    if reward.mode != "group":
        return None, "a pointwise judge judges each response alone"
    if settings.group_size is not None:
        return settings.group_size, "group_size"
    workers = groups.get("num_workers") or 1
    if workers > 1 and groups.get("streaming", True):
        return None, f"reward.num_workers={workers} streaming workers each see part of a prompt's samples"
    n = groups.get("rollout_n")
    if n is not None and n > 1:
        return n, "actor_rollout_ref.rollout.n"
    return "auto", "learned from the traffic ('auto')"


class ForwardError(Exception):
    """A shared server did not judge a sample; ``key`` names the kind of failure (logged once per kind)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class Forwarder:
    """POSTs single samples to a shared ``grm serve``'s ``/v1/rollouts`` over one pooled client per event loop,
    retrying 502/503/504 and connection errors with jittered backoff (at least the server's ``Retry-After``) while
    ``timeout_s`` allows; a 4xx fails at once."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float, retry: RetryPolicy | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy(backoff=0.5, backoff_max=10.0)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._clients: PerLoop[httpx2.AsyncClient] = PerLoop(self._client)

    def _client(self) -> httpx2.AsyncClient:
        # No connection limit: a sample waiting in a server cohort holds its connection, and a limit below the
        # samples in flight would queue the very samples that complete the waiting groups. Idle connections are
        # dropped after 4 s, before uvicorn closes them (5 s).
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=4.0)
        timeout = httpx2.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
        return httpx2.AsyncClient(limits=limits, timeout=timeout, headers=self._headers)

    async def post(self, rollout: dict[str, Any]) -> dict[str, Any]:
        """The server's result (``reward``, ``score``, ``logs``) for one rollout; raises ForwardError."""
        body = json.dumps({"rollouts": [rollout]}, ensure_ascii=False, default=str).encode("utf-8")
        client = self._clients.get()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        attempt = 0
        while True:
            attempt += 1
            hint = None
            try:
                response = await client.post(self.url, content=body)
            except httpx2.TransportError as exc:
                failure, key = f"POST {self.url} failed: {type(exc).__name__}: {exc}", "connection"
            else:
                status = response.status_code
                if status == 200:
                    return self._result(response)
                failure, key = f"the grm server answered POST {self.url} with {status}: {server_message(response)}", \
                    f"status {status}"
                if status not in RETRIED_STATUSES:
                    raise ForwardError(failure, key)
                hint = retry_after(response.headers)
            delay = self.retry.delay(attempt)
            if hint is not None:
                delay = max(delay, hint)
            if loop.time() + delay >= deadline:
                raise ForwardError(f"{failure} (gave up after {attempt} attempts: the next one would come after "
                                   f"timeout_s={self.timeout_s:g} s)", key)
            await asyncio.sleep(delay)

    def _result(self, response: httpx2.Response) -> dict[str, Any]:
        try:
            [result] = response.json()["results"]
            float(result["reward"])
            if not isinstance(result.get("logs", {}), Mapping):
                raise TypeError("logs is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise ForwardError(f"the grm server's answer to POST {self.url} is not one result ({exc!r}): "
                               f"{response.text[:200]!r}", "answer") from None
        return result


class VerlJudge:
    """A reward (or a shared server) and the adapter settings of one configuration, scoring one verl sample at a
    time. ``group_size`` (None: no cohorts) is what the in-process micro-batcher holds a prompt's samples for."""

    def __init__(self, reward: RewardFunction | None, settings: VerlSettings, *,
                 score_range: tuple[int, int] | None = None, group_size: GroupSizeSetting | None = None,
                 group_source: str = "", forwarder: Forwarder | None = None) -> None:
        if reward is None and forwarder is None:
            raise ValueError("VerlJudge needs a reward or a forwarder")
        self.reward = reward
        self.settings = settings
        if score_range is None:
            assert reward is not None
            score_range = reward.score_range
        self.score_range = score_range
        self.group_size = group_size
        self.group_source = group_source
        self.forwarder = forwarder
        # one batcher per event loop: its queue, cohorts and worker task live in the loop that runs them
        self._batchers: PerLoop[MicroBatcher] = PerLoop(self._started_batcher)

    def _started_batcher(self) -> MicroBatcher:
        """A micro-batcher for the running event loop: the adapter's window and batch size, and cohorts of
        ``group_size``."""
        wait_s = self.settings.cohort_wait_s
        if self.group_size is not None:
            _log_once(f"grm verl reward: a prompt's samples are held until {self.group_size} arrived "
                      f"({self.group_source}) or for at most {wait_s:g} s, then judged together",
                      key="cohorts", level=logging.INFO)
        assert self.reward is not None  # a forwarding judge has no batcher
        batcher = MicroBatcher(self.reward, self.settings.batch_window_ms / 1000, self.settings.max_batch,
                               group_size=self.group_size, group_wait_s=wait_s)
        batcher.start()
        return batcher

    def failed(self, reason: str, key: str | None = None) -> dict[str, float]:
        result = failed_result(self.settings.invalid_reward, self.score_range)
        _log_once(f"grm verl reward: {reason}; such samples get score {result['score']:g} with grm_failed=1", key)
        return result

    def _result(self, judged: RowJudgements, row: int) -> dict[str, float]:
        score, _, logs = rollout_reward(judged, row, self.score_range, self.settings.invalid_reward)
        return {"score": score, **logs, "grm_failed": 0.0}

    async def score_alone(self, prompt: Any, response: str, reference: str | None) -> dict[str, float]:
        """Judge one response in its own judge prompt (verl's per-sample ``compute_score``); with ``serve_url``,
        forward it to the shared server."""
        if self.forwarder is not None:
            return await self.score_forwarded(prompt, response, reference)
        assert self.reward is not None
        columns = {self.reward.reference_column: [reference]}
        try:
            judged = await asyncio.wait_for(self.reward.ajudge_rows([prompt], [response], **columns),
                                            self.settings.timeout_s)
        except Exception as exc:
            return self.failed(_reason(exc, self.settings.timeout_s))
        return self._result(judged, 0)

    async def score_gathered(self, prompt: Any, response: str, reference: str | None) -> dict[str, float]:
        """Judge one response together with the others of its prompt that reach this event loop (its cohort, or
        those within the batch window); with ``serve_url``, forward it to the shared server's cohorts."""
        if self.forwarder is not None:
            return await self.score_forwarded(prompt, response, reference)
        batcher = self._batchers.get()
        rollout = Rollout(prompt, response, reference, asyncio.get_running_loop().create_future())
        await batcher.submit([rollout])
        try:
            judged, row, _ = await asyncio.wait_for(rollout.future, self.settings.timeout_s)
        except Exception as exc:
            return self.failed(_reason(exc, self.settings.timeout_s))
        return self._result(judged, row)

    async def score_forwarded(self, prompt: Any, response: str, reference: str | None) -> dict[str, float]:
        """The shared server's judgement of one response, with the keys of in-process judging."""
        assert self.forwarder is not None
        try:
            result = await asyncio.wait_for(
                self.forwarder.post({"prompt": prompt, "response": response, "reference": reference}),
                self.settings.timeout_s)
        except asyncio.TimeoutError:
            return self.failed(f"the grm server at {self.forwarder.url} did not answer within "
                               f"timeout_s={self.settings.timeout_s:g} s", key="forward timeout")
        except ForwardError as exc:
            return self.failed(str(exc), key=f"forward {exc.key}")
        except Exception as exc:
            return self.failed(f"forwarding to {self.forwarder.url} failed: {type(exc).__name__}: {exc}",
                               key=f"forward {type(exc).__name__}")
        logs = result.get("logs") or {}
        out = {"score": float(result["reward"])}
        for key in EXTRA_KEYS[:-1]:
            value = logs.get(key)
            missing = 0.0 if key in HEALTH_KEYS else -1.0  # a server without the health figures: undefined
            out[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else missing
        out["grm_failed"] = 0.0
        if self.settings.invalid_reward is not None and out["grm_valid_samples"] == 0:
            out["score"] = float(self.settings.invalid_reward)  # judged, but no judgement parsed
        return out


def failed_result(invalid_reward: float | None, score_range: tuple[int, int]) -> dict[str, float]:
    """What a sample without a judgement gets: ``invalid_reward`` (or the middle of the range), ``grm_failed=1``."""
    low, high = score_range
    score = invalid_reward if invalid_reward is not None else (low + high) / 2
    return {"score": float(score), "grm_valid_samples": 0.0, "grm_samples": 0.0, "grm_mean_score": -1.0,
            "grm_group_size": 0.0, "grm_cached": 0.0, "grm_resampled": 0.0, "grm_truncated_tokens": 0.0,
            **dict.fromkeys(HEALTH_KEYS, 0.0), "grm_failed": 1.0}


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"the judge did not answer within timeout_s={timeout_s:g} s"
    return f"the judge failed: {type(exc).__name__}: {exc}"


_lock = threading.Lock()
_judges: dict[str, VerlJudge] = {}


def judge_for(reward_kwargs: Mapping[str, Any], reward_router_address: str | None = None,
              reward_model_tokenizer: Any = None, groups: Mapping[str, Any] | None = None) -> VerlJudge:
    """The process's VerlJudge for this configuration (built on first use, then shared by all samples).

    ``reward_kwargs`` holds GRMConfig fields and VerlSettings fields; unknown keys are logged and ignored.
    ``groups`` is ``verl_groups(config)`` of the manager's verl config (the default group size). Raises
    ConfigError on invalid values.
    """
    kwargs = {key: _plain(value) for key, value in reward_kwargs.items()}
    served = getattr(reward_model_tokenizer, "name_or_path", None)
    groups = dict(groups or {})
    key = json.dumps([kwargs, reward_router_address, served, groups], sort_keys=True, default=str)
    with _lock:
        judge = _judges.get(key)
        if judge is None:
            judge = _judges[key] = _build(kwargs, reward_router_address, served, groups)
        return judge


def _build(kwargs: dict[str, Any], router_address: str | None, served_model: str | None,
           groups: dict[str, Any]) -> VerlJudge:
    adapter = {k: v for k, v in kwargs.items() if k in VerlSettings.model_fields}
    judge = {k: v for k, v in kwargs.items() if k in GRMConfig.model_fields}
    unknown = sorted(set(kwargs) - set(adapter) - set(judge))
    if unknown:
        _log_once(f"grm verl reward: ignoring reward_kwargs {unknown}: neither GRMConfig fields nor VerlSettings")
    try:
        settings = VerlSettings(**adapter)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "grm verl settings")) from None
    if settings.serve_url:  # a shared server judges: its judge settings, its cohorts
        ignored = sorted(set(judge) - {"score_range"}) + sorted({"group_size", "group_wait_s"} & set(adapter))
        if ignored:
            _log_once(f"grm verl reward: reward_kwargs {ignored} are the grm server's settings (serve_url is set): "
                      "ignored here", level=logging.WARNING)
        if router_address:
            _log_once("grm verl reward: serve_url is set, so the reward model verl serves (reward_router_address) "
                      "is not used", level=logging.WARNING)
        score_range = GRMConfig.load(**{k: v for k, v in judge.items() if k == "score_range"}).score_range
        api_key = settings.serve_api_key.get_secret_value() if settings.serve_api_key is not None else None
        return VerlJudge(None, settings, score_range=(int(score_range[0]), int(score_range[1])),
                         forwarder=Forwarder(settings.rollouts_url, api_key, settings.timeout_s))
    if router_address:  # verl serves the judge (reward.reward_model.enable=True)
        judge.update(base_url=f"http://{router_address}/v1", engine="openai")
        if GRMConfig.load(**judge).model is None and served_model:
            judge["model"] = served_model
    reward = GRMReward(**judge)
    group_size, source = cohort_size(settings, reward, groups)
    workers = groups.get("num_workers") or 1
    if reward.mode == "group" and workers > 1 and groups.get("streaming", True):
        _log_once(f"grm verl reward: reward.num_workers={workers}: verl sends each rollout to a random reward worker, "
                  f"so a prompt's samples are split over the workers and "
                  + (f"a cohort of group_size={group_size} waits up to {settings.cohort_wait_s:g} s for samples "
                     "that went elsewhere" if group_size is not None else "each worker judges only the ones that "
                     "meet within batch_window_ms")
                  + "; for whole groups set serve_url to one shared `grm serve` (or reward.num_workers=1)",
                  key="split groups", level=logging.WARNING)
    return VerlJudge(reward, settings, group_size=group_size, group_source=source)


async def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, *,
                        reward_router_address: str | None = None, reward_model_tokenizer: Any = None,
                        **reward_kwargs: Any) -> dict[str, float]:
    """verl's custom reward function: the GRM's reward for one response, judged alone.

    Args:
        data_source: the dataset name (unused).
        solution_str: the decoded response.
        ground_truth: ``reward_model.ground_truth`` of the sample; a non-empty one is the judge's reference answer.
        extra_info: the sample's ``extra_info``; the prompt is its ``question``, ``prompt`` or ``raw_prompt``
            (``prompt_keys``), a string or chat messages.
        reward_router_address: set by verl when it serves the judge (``reward.reward_model.enable=True``).
        reward_model_tokenizer: set by verl with it; its ``name_or_path`` is the served model name.
        reward_kwargs: ``+reward.custom_reward_function.reward_kwargs.*``: GRMConfig fields (``k``, ``model``,
            ``base_url``, ...) and VerlSettings fields (``timeout_s``, ``invalid_reward``, ...; with ``serve_url``
            the response goes to that shared ``grm serve``, through its cohorts).

    Returns:
        ``{"score": reward, **EXTRA_KEYS}``, the same keys for every sample. Never raises.

    Example:
        >>> asyncio.run(compute_score("gsm8k", "408", "408", {"question": "17 * 24?"},
        ...                           base_url="http://judge:8000/v1", k=4))  # doctest: +SKIP
        {'score': 9.25, 'grm_valid_samples': 4.0, 'grm_samples': 4.0, 'grm_mean_score': 9.25, ...}
    """
    try:
        judge = judge_for(reward_kwargs, reward_router_address, reward_model_tokenizer)
    except Exception as exc:
        _log_once(f"grm verl reward: no judge ({type(exc).__name__}: {exc}); every sample gets grm_failed=1")
        return failed_result(None, RewardFunction.score_range)
    try:
        prompt = prompt_of(extra_info, judge.settings.prompt_keys)
        if prompt is None:
            return judge.failed(f"no prompt in extra_info (looked for {judge.settings.prompt_keys})")
        reference = reference_of(ground_truth) if judge.settings.ground_truth_as_reference else None
        return await judge.score_alone(prompt, solution_str, reference)
    except Exception as exc:
        return judge.failed(f"{type(exc).__name__}: {exc}")


class GRMRewardManager(RewardManagerBase):
    """verl reward manager ``grm``: holds a worker's single-sample calls in cohorts and judges the responses of one
    prompt together (the micro-batcher of ``grm_plugin.rollouts``), or, with ``serve_url``, forwards each sample to a
    shared ``grm serve`` whose cohorts gather the samples of all workers. The group size defaults to verl's
    ``actor_rollout_ref.rollout.n`` (see the module doc). The prompt is ``extra_info``'s
    ``question``/``prompt``/``raw_prompt``, else the sample's ``raw_prompt``, else its decoded prompt tokens. A custom
    reward function set with it is not called. Configured like ``compute_score``
    (``reward.custom_reward_function.reward_kwargs``)."""

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: str | None = None,
                 reward_model_tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__(config, tokenizer, compute_score)
        self.reward_router_address = reward_router_address
        self.reward_model_tokenizer = reward_model_tokenizer
        section = (config.get("reward") or {}).get("custom_reward_function") or {}
        self.reward_kwargs = dict(_plain(section.get("reward_kwargs") or {}))
        # RewardLoopWorker passes the trainer's whole config (load_reward_manager(self.config, ...)): rollout.n is in it
        self.groups = verl_groups(config)

    async def run_single(self, data: Any) -> dict[str, Any]:
        try:
            judge = judge_for(self.reward_kwargs, self.reward_router_address, self.reward_model_tokenizer,
                              self.groups)
        except Exception as exc:
            _log_once(f"grm verl reward: no judge ({type(exc).__name__}: {exc}); every sample gets grm_failed=1")
            result = failed_result(None, RewardFunction.score_range)
        else:
            try:
                prompt, response, reference = self._sample(data[-1:][0], judge.settings)
            except Exception as exc:
                result = judge.failed(f"unreadable sample ({type(exc).__name__}: {exc})")
            else:
                result = await judge.score_gathered(prompt, response, reference)
        return {"reward_score": result["score"], "reward_extra_info": result}

    def _sample(self, item: Any, settings: VerlSettings) -> tuple[Any, str, str | None]:
        """``(prompt, response, reference)`` of one DataProtoItem."""
        batch, extra = item.batch, item.non_tensor_batch
        responses = batch["responses"]
        mask = batch["attention_mask"]
        response_ids = responses[: int(mask[-responses.shape[-1]:].sum())]
        response = self.tokenizer.decode(response_ids, skip_special_tokens=True)
        prompt = prompt_of(extra.get("extra_info"), settings.prompt_keys)
        if prompt is None:
            prompt = prompt_of(extra, ["raw_prompt"])
        if prompt is None:
            prompt_ids = batch["prompts"]
            prompt = self.tokenizer.decode(prompt_ids[mask[: prompt_ids.shape[-1]].bool()], skip_special_tokens=True)
        reward_model = extra.get("reward_model")
        ground_truth = reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else None
        reference = reference_of(ground_truth) if settings.ground_truth_as_reference else None
        return prompt, response, reference


def _register() -> None:
    """Register the manager as ``grm`` once (this file may be executed again, e.g. loaded by its path)."""
    existing = REWARD_MANAGER.get(MANAGER_NAME)
    if existing is None or existing.__qualname__ != GRMRewardManager.__qualname__:
        register(MANAGER_NAME)(GRMRewardManager)


_register()

__all__ = ["EXTRA_KEYS", "HEALTH_KEYS", "Forwarder", "ForwardError", "GRMRewardManager", "VerlJudge", "VerlSettings",
           "cohort_size", "compute_score", "failed_result", "judge_for", "prompt_of", "reference_of", "verl_groups"]
