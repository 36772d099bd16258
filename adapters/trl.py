"""TRL glue: any RewardFunction as a reward function of TRL's trainers (GRPO, RLOO, OnlineDPO, AsyncGRPO).

TRL calls a reward function with keywords only: ``prompts``, ``completions``, ``completion_ids``, every other dataset
column as a list, ``trainer_state``, and (GRPO/RLOO) ``log_extra``/``log_metric`` hooks; it logs the function under
its ``__name__`` and awaits an instance whose ``__call__`` is async on its own event loop. ``GRMReward(...)`` already
follows that contract and can be passed directly; this module adds a named wrapper, the async variant and a check:

    >>> from grm_plugin.adapters.trl import trl_reward  # doctest: +SKIP
    >>> reward = trl_reward(model="BBQGOD/DeepSeek-GRM-27B", base_url="http://judge:8000/v1", k=4)  # doctest: +SKIP
    >>> GRPOTrainer(model=..., reward_funcs=[reward], ...)  # doctest: +SKIP

Copies of a prompt (``num_generations``) are judged together in one judge prompt (group mode, chunked by
``max_responses_per_call``); OnlineDPO's two completions of a prompt likewise. A dataset column named like
``reference_column`` (default ``reference``) becomes the judge's reference answer, ``principles_column`` given
principles. Each wrapper pickles (by the reward's configuration), so AsyncGRPO's spawned scoring process can use it.
"""

from __future__ import annotations

from typing import Any, Sequence

from grm_plugin.reward import RewardFunction

__all__ = ["AsyncTRLReward", "TRLReward", "trl_reward"]


def _reward_from(reward: RewardFunction | None, grm_kwargs: dict[str, Any]) -> RewardFunction:
    if reward is None:
        from grm_plugin.grm import GRMReward

        return GRMReward(**grm_kwargs)
    if grm_kwargs:
        raise TypeError(f"pass either a reward or GRMReward keyword arguments, not both (got {sorted(grm_kwargs)})")
    if not isinstance(reward, RewardFunction):
        raise TypeError(f"reward must be a grm_plugin RewardFunction (GRMReward, ...), got {type(reward).__name__}")
    return reward


class TRLReward:
    """A RewardFunction as a synchronous TRL reward function, logged as ``name``.

    Args:
        reward: the reward (default: ``GRMReward(**grm_kwargs)``).
        name: the name TRL logs it under (``rewards/<name>/mean``) and the prefix of its completions-table columns
            (``<name>_critique``, ``<name>_votes``) and metrics (``<name>/parse_valid_rate``, ...).
        log_completions: send the critique and votes columns through ``log_extra``.
        log_metrics: send parse-valid rate, samples, judge latency and tokens through ``log_metric``.
        grm_kwargs: GRMReward settings when ``reward`` is not given (``model``, ``base_url``, ``k``, ``mode``, ...).
    """

    def __init__(self, reward: RewardFunction | None = None, *, name: str | None = None, log_completions: bool = True,
                 log_metrics: bool = True, **grm_kwargs: Any) -> None:
        self.reward = _reward_from(reward, grm_kwargs)
        self.__name__ = name or getattr(self.reward, "__name__", None) or "grm_reward"
        self.log_completions = log_completions
        self.log_metrics = log_metrics

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        if not self.log_completions:
            kwargs.pop("log_extra", None)
        if not self.log_metrics:
            kwargs.pop("log_metric", None)
        return kwargs

    async def _acall(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]) -> list:
        return await self.reward.acall(prompts, completions, reward_name=self.__name__, **self._kwargs(kwargs))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        from grm_plugin._sync import run_sync

        return run_sync(self._acall(prompts, completions, kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reward!r}, name={self.__name__!r})"


class AsyncTRLReward(TRLReward):
    """The async variant: GRPOTrainer and RLOOTrainer await it on their own event loop (``asyncio.gather`` with the
    other async reward functions), and the engine's clients are created inside that loop."""

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],  # type: ignore[override]
                       **kwargs: Any) -> list[float | None]:
        return await self._acall(prompts, completions, kwargs)


def trl_reward(reward: RewardFunction | None = None, *, asynchronous: bool = False, name: str | None = None,
               log_completions: bool = True, log_metrics: bool = True, **grm_kwargs: Any) -> TRLReward:
    """A TRL reward function from ``reward`` (default ``GRMReward(**grm_kwargs)``); ``asynchronous=True`` for the
    async variant (GRPO/RLOO; OnlineDPO calls reward functions synchronously)."""
    cls = AsyncTRLReward if asynchronous else TRLReward
    return cls(reward, name=name, log_completions=log_completions, log_metrics=log_metrics, **grm_kwargs)
