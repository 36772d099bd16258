"""verl glue (verl 0.9): an async ``compute_score`` for verl's reward loop, and a group-aware reward manager ``grm``.

verl scores one sample at a time: its reward loop splits a batch over ``reward.num_workers`` Ray actors, and each
actor awaits one ``run_single`` per sample, all at once on its own event loop.

``compute_score`` (any reward manager, e.g. verl's default ``naive``) judges each response alone::

    reward.custom_reward_function.path=pkg://grm_plugin.adapters.verl
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.base_url=http://judge-host:8000/v1

The reward manager ``grm`` (``reward.reward_manager.name=grm``; registered through the ``verl.plugins`` entry point,
which ``import verl`` loads) gathers the concurrent single-sample calls of a worker for ``batch_window_ms`` with the
micro-batcher of ``grm_plugin.rollouts`` (the one behind ``grm serve``) and judges the responses of one prompt
together in one judge prompt (group mode).

Both return the same keys for every sample: ``score`` and ``EXTRA_KEYS`` (verl takes the extra-info keys from the
first sample and fails with a KeyError when another sample lacks one). Neither raises: a judge failure, a timeout
(``timeout_s``; verl sets none), a sample without a prompt or a bad configuration gives ``invalid_reward`` (default:
the middle of the score range) with ``grm_failed=1``, and the reason is logged once.

Configuration: the judge is GRMConfig (``GRM_*`` variables, ``GRM_CONFIG_FILE``), the adapter is ``VerlSettings``
(``GRM_VERL_*`` variables); both are overridden by ``+reward.custom_reward_function.reward_kwargs.<field>=...``
(which the manager reads too). When verl serves the judge itself (``reward.reward_model.enable=True``), the
``reward_router_address`` verl passes replaces ``base_url``, and the model is ``model`` if set, else the path of the
reward model verl serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Optional

try:
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER, register
except ImportError as exc:  # pragma: no cover - exercised only without verl
    raise ImportError(f"grm_plugin.adapters.verl needs verl>=0.9 (pip install verl) ({exc})") from exc

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from grm_plugin._sync import PerLoop
from grm_plugin.config import GRMConfig
from grm_plugin.errors import ConfigError, format_validation_error
from grm_plugin.grm import GRMReward
from grm_plugin.reward import RewardFunction, RowJudgements
from grm_plugin.rollouts import MicroBatcher, Rollout, rollout_reward

logger = logging.getLogger(__name__)

MANAGER_NAME = "grm"
# Every sample's result holds "score" and exactly these keys (means over a batch are verl's logged metrics).
EXTRA_KEYS = ("grm_valid_samples", "grm_samples", "grm_mean_score", "grm_group_size", "grm_cached", "grm_failed")


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
    batch_window_ms: float = Field(20.0, ge=0, description="Manager `grm`: how long samples are gathered.")
    max_batch: int = Field(256, ge=1, description="Manager `grm`: most samples judged together.")


def _plain(value: Any) -> Any:
    """OmegaConf containers and numpy arrays (what verl hands over) as plain Python values."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


_logged: set[str] = set()


def _log_once(message: str) -> None:
    """Log an error once per process (a failure repeats for every sample of every step)."""
    if message not in _logged:
        _logged.add(message)
        logger.error(message)


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


class VerlJudge:
    """A reward and the adapter settings of one configuration, scoring one verl sample at a time."""

    def __init__(self, reward: RewardFunction, settings: VerlSettings) -> None:
        self.reward = reward
        self.settings = settings
        # one batcher per event loop: its queue and worker task live in the loop that runs them
        self._batchers: PerLoop[MicroBatcher] = PerLoop(self._started_batcher)

    def _started_batcher(self) -> MicroBatcher:
        """A micro-batcher for the running event loop, gathering with the adapter's window and batch size."""
        batcher = MicroBatcher(self.reward, self.settings.batch_window_ms / 1000, self.settings.max_batch)
        batcher.start()
        return batcher

    def failed(self, reason: str) -> dict[str, float]:
        result = failed_result(self.settings.invalid_reward, self.reward.score_range)
        _log_once(f"grm verl reward: {reason}; such samples get score {result['score']:g} with grm_failed=1")
        return result

    def _result(self, judged: RowJudgements, row: int) -> dict[str, float]:
        score, _, logs = rollout_reward(judged, row, self.reward.score_range, self.settings.invalid_reward)
        return {"score": score, **logs, "grm_failed": 0.0}

    async def score_alone(self, prompt: Any, response: str, reference: str | None) -> dict[str, float]:
        """Judge one response in its own judge prompt (verl's per-sample ``compute_score``)."""
        columns = {self.reward.reference_column: [reference]}
        try:
            judged = await asyncio.wait_for(self.reward.ajudge_rows([prompt], [response], **columns),
                                            self.settings.timeout_s)
        except Exception as exc:
            return self.failed(_reason(exc, self.settings.timeout_s))
        return self._result(judged, 0)

    async def score_gathered(self, prompt: Any, response: str, reference: str | None) -> dict[str, float]:
        """Judge one response together with the others that arrive in this event loop within the batch window;
        responses of one prompt share a judge prompt."""
        batcher = self._batchers.get()
        rollout = Rollout(prompt, response, reference, asyncio.get_running_loop().create_future())
        await batcher.submit([rollout])
        try:
            judged, row, _ = await asyncio.wait_for(rollout.future, self.settings.timeout_s)
        except Exception as exc:
            return self.failed(_reason(exc, self.settings.timeout_s))
        return self._result(judged, row)


def failed_result(invalid_reward: float | None, score_range: tuple[int, int]) -> dict[str, float]:
    """What a sample without a judgement gets: ``invalid_reward`` (or the middle of the range), ``grm_failed=1``."""
    low, high = score_range
    score = invalid_reward if invalid_reward is not None else (low + high) / 2
    return {"score": float(score), "grm_valid_samples": 0.0, "grm_samples": 0.0, "grm_mean_score": -1.0,
            "grm_group_size": 0.0, "grm_cached": 0.0, "grm_failed": 1.0}


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"the judge did not answer within timeout_s={timeout_s:g} s"
    return f"the judge failed: {type(exc).__name__}: {exc}"


_lock = threading.Lock()
_judges: dict[str, VerlJudge] = {}


def judge_for(reward_kwargs: Mapping[str, Any], reward_router_address: str | None = None,
              reward_model_tokenizer: Any = None) -> VerlJudge:
    """The process's VerlJudge for this configuration (built on first use, then shared by all samples).

    ``reward_kwargs`` holds GRMConfig fields and VerlSettings fields; unknown keys are logged and ignored. Raises
    ConfigError on invalid values.
    """
    kwargs = {key: _plain(value) for key, value in reward_kwargs.items()}
    served = getattr(reward_model_tokenizer, "name_or_path", None)
    key = json.dumps([kwargs, reward_router_address, served], sort_keys=True, default=str)
    with _lock:
        judge = _judges.get(key)
        if judge is None:
            judge = _judges[key] = _build(kwargs, reward_router_address, served)
        return judge


def _build(kwargs: dict[str, Any], router_address: str | None, served_model: str | None) -> VerlJudge:
    adapter = {k: v for k, v in kwargs.items() if k in VerlSettings.model_fields}
    judge = {k: v for k, v in kwargs.items() if k in GRMConfig.model_fields}
    unknown = sorted(set(kwargs) - set(adapter) - set(judge))
    if unknown:
        _log_once(f"grm verl reward: ignoring reward_kwargs {unknown}: neither GRMConfig fields nor VerlSettings")
    try:
        settings = VerlSettings(**adapter)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "grm verl settings")) from None
    if router_address:  # verl serves the judge (reward.reward_model.enable=True)
        judge.update(base_url=f"http://{router_address}/v1", engine="openai")
        if GRMConfig.load(**judge).model is None and served_model:
            judge["model"] = served_model
    return VerlJudge(GRMReward(**judge), settings)


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
            ``base_url``, ...) and VerlSettings fields (``timeout_s``, ``invalid_reward``, ...).

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
    """verl reward manager ``grm``: gathers a worker's concurrent single-sample calls and judges the responses of one
    prompt together (the micro-batcher of ``grm_plugin.rollouts``). The prompt is ``extra_info``'s
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

    async def run_single(self, data: Any) -> dict[str, Any]:
        try:
            judge = judge_for(self.reward_kwargs, self.reward_router_address, self.reward_model_tokenizer)
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

__all__ = ["EXTRA_KEYS", "GRMRewardManager", "VerlJudge", "VerlSettings", "compute_score", "failed_result",
           "judge_for", "prompt_of", "reference_of"]
