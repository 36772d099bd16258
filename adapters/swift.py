"""ms-swift glue (GRPO reward plugins, ms-swift 4.x and 3.x): ``GRMORM``, registered as ``orms["grm"]`` on import.

ms-swift loads plugin files by path (``--external_plugins``) and builds each ``--reward_funcs`` name from ``orms``
as ``cls(args=training_args)``. ``grm plugin-path swift`` prints a plugin file that imports this module, so one
line turns the judge on (configured by ``GRM_*`` variables or ``GRM_CONFIG_FILE``)::

    swift rlhf --rlhf_type grpo ... --external_plugins "$(grm plugin-path swift)" --reward_funcs grm

ms-swift calls ``await orm(completions, messages=..., prompt_id=..., solution=..., trainer_state=..., ...)`` once per
step, each step in a new event loop (``asyncio.run``): the judge's clients are created inside that loop and closed
before the call returns, so none outlives its loop. Rows of one ``prompt_id`` (its ``num_generations`` completions)
are judged together in one judge prompt; a ``reference`` column (GRMConfig ``reference_column``), else ``solution``,
becomes the reference answer. A completion without a valid judgement gets None, which ms-swift ignores.
"""

from __future__ import annotations

from typing import Any, Sequence

try:
    from swift.rewards import AsyncORM, orms
except ImportError:  # ms-swift 3.x
    try:
        from swift.plugin import AsyncORM, orms
    except ImportError as exc:  # pragma: no cover - exercised only without ms-swift
        raise ImportError(f"grm_plugin.adapters.swift needs ms-swift (pip install ms-swift) ({exc})") from exc

from grm_plugin._sync import PerLoop
from grm_plugin.reward import RewardFunction

ORM_NAME = "grm"
_ROLES = {"tool_response": "tool", "tool_call": "assistant"}  # ms-swift's agent roles in OpenAI's terms


def split_messages(messages: Sequence[dict[str, Any]], completion: Any) -> tuple[list[dict[str, Any]], Any]:
    """A rollout's ``(prompt, response)``: the prompt is the chat up to its last user message, the response what
    follows (the completion string when that is one assistant message, else the assistant/tool messages).

    Example:
        >>> split_messages([{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"}], "5")
        ([{'role': 'user', 'content': '2+3?'}], '5')
    """
    chat = [{**m, "role": _ROLES.get(m.get("role"), m.get("role"))} for m in messages]
    last_user = max((i for i, m in enumerate(chat) if m["role"] == "user"), default=None)
    if last_user is None:
        raise ValueError("messages hold no user message: the prompt cannot be found")
    prompt, turn = chat[: last_user + 1], chat[last_user + 1:]
    if len(turn) <= 1:
        return prompt, completion
    return prompt, turn


class GRMORM(AsyncORM):
    """The GRM as an ms-swift async reward function (``orms["grm"]``).

    Args:
        args: ms-swift's training arguments (unused: the judge is configured by GRMConfig).
        reward: the reward (default: ``GRMReward(**grm_kwargs)``, which reads ``GRM_*`` / ``GRM_CONFIG_FILE``).
        grm_kwargs: GRMReward settings when ``reward`` is not given.
    """

    def __init__(self, args: Any = None, reward: RewardFunction | None = None, **grm_kwargs: Any) -> None:
        super().__init__(args)
        if reward is None:
            from grm_plugin.grm import GRMReward

            reward = GRMReward(**grm_kwargs)
        self.reward = reward
        self.__name__ = ORM_NAME
        self._calls: PerLoop[dict[str, int]] = PerLoop(lambda: {"running": 0})  # calls in flight, per event loop

    async def __call__(self, completions: Sequence[Any], messages: Sequence[Any] | None = None,
                       **kwargs: Any) -> list[float | None]:
        if messages is None or len(messages) != len(completions):
            raise ValueError(f"{ORM_NAME}: ms-swift passes `messages`, one per completion; got "
                             f"{'none' if messages is None else len(messages)} for {len(completions)} completions")
        rows = [split_messages(m, c) for m, c in zip(messages, completions)]
        prompts = [prompt for prompt, _ in rows]
        group_prompt: dict[Any, Any] = {}
        for i, prompt_id in enumerate(kwargs.get("prompt_id") or []):
            if prompt_id not in (None, ""):  # the rollouts of one prompt_id share the first one's prompt
                prompts[i] = group_prompt.setdefault(prompt_id, prompts[i])
        reward = self.reward
        references = kwargs.get(reward.reference_column)
        if references is None:
            references = kwargs.get("solution")
        columns = {reward.reference_column: _texts(references),
                   reward.principles_column: _texts(kwargs.get(reward.principles_column))}
        calls = self._calls.get()
        calls["running"] += 1
        try:
            return await reward.acall(prompts, [response for _, response in rows], reward_name=ORM_NAME, **columns)
        finally:
            calls["running"] -= 1
            if not calls["running"]:  # the last call in this loop: close its clients before the loop closes
                self._calls.pop()
                aclose = getattr(reward, "aclose", None)
                if aclose is not None:
                    await aclose()


def _texts(values: Sequence[Any] | None) -> list[str | None] | None:
    if values is None:
        return None
    return [None if v is None else v if isinstance(v, str) else str(v) for v in values]


orms[ORM_NAME] = GRMORM

__all__ = ["GRMORM", "ORM_NAME", "split_messages"]
