"""OpenRLHF glue, Python-file mode: this file defines OpenRLHF's ``reward_func(queries, prompts, labels)``.

OpenRLHF loads a ``--reward.remote_url`` ending in ``.py`` as a file and calls its ``reward_func`` in worker threads,
one rollout at a time. Point it at this very file (it only uses absolute imports, so it loads by path):

    --reward.remote_url "$(python -c 'import grm_plugin.adapters.openrlhf as m; print(m.__file__)')"

The judge is configured from the environment and an optional config file (``GRM_BASE_URL``, ``GRM_MODEL``, ``GRM_K``,
``GRM_CONFIG_FILE``, ...: GRMConfig), created once per process and shared by all threads; every call runs on the
library's background event loop, so one engine client (one connection pool) serves all of them. For many rollouts at
once prefer ``grm serve``, which gathers them into micro-batches and judges the rollouts of one prompt together.
"""

from __future__ import annotations

import threading
from typing import Any

from grm_plugin._sync import run_sync
from grm_plugin.grm import GRMReward
from grm_plugin.rollouts import openrlhf_reply, response_of

_lock = threading.Lock()
_reward: GRMReward | None = None


def get_reward() -> GRMReward:
    """The process's GRMReward, built from GRM_* environment variables / GRM_CONFIG_FILE on first use."""
    global _reward
    with _lock:
        if _reward is None:
            _reward = GRMReward()
        return _reward


def reward_func(queries: list[str], prompts: list[str], labels: list[Any] | None = None, **kwargs: Any) -> dict:
    """OpenRLHF's reward function: ``{"rewards": [...], "scores": [0..1 ...], "extra_logs": {...}}``.

    The response is ``query[len(prompt):]`` (trailing end-of-turn tokens removed); a non-empty label is shown to the
    judge as the reference answer. Raises ValueError when a prompt is not a prefix of its query or lengths differ.
    """
    if len(prompts) != len(queries):
        raise ValueError(f"prompts: {len(prompts)} items, expected one per query ({len(queries)})")
    labels = list(labels) if labels is not None else [None] * len(queries)
    if len(labels) != len(queries):
        raise ValueError(f"labels: {len(labels)} items, expected one per query ({len(queries)})")
    responses = [response_of(query, prompt, i, query_name="queries")
                 for i, (query, prompt) in enumerate(zip(queries, prompts))]
    reward = get_reward()
    columns = {reward.reference_column: [label or None for label in labels]}
    judged = run_sync(reward.ajudge_rows(list(prompts), responses, **columns))
    return openrlhf_reply([(judged, row) for row in range(len(queries))], reward.score_range)


__all__ = ["get_reward", "reward_func"]
