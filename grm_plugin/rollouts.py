"""Single rollouts -> judged groups: hosts that send one rollout at a time (OpenRLHF, verl, async trainers) get group
judging from a micro-batcher that holds rollouts for a short window and judges them together, so rollouts of one
prompt that meet in a window share a judge prompt. Also the per-rollout reading of the judged batch (reward, 0..1
score, logs) and OpenRLHF's text conventions (the response is ``query[len(prompt):]``). Framework-free: the server
and the host adapters build on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from .cohorts import ClosedCallback, Cohorts, GroupSize, GroupSizeSetting, cohort_key
from .reward import RewardFunction, RowJudgements
from .voting import unit_score

logger = logging.getLogger(__name__)

# End-of-turn tokens a policy's decoded query may carry after the response (OpenRLHF decodes with special tokens).
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end|>", "</s>", "<eos>", "<|end_of_text|>")

# Called once per judged micro-batch with its size and its RowJudgements, or the exception that failed it.
BatchCallback = Callable[[int, Union[RowJudgements, BaseException]], None]


@dataclass
class Rollout:
    """One rollout waiting in the MicroBatcher: its prompt (text or chat messages) and response text, the label (a
    reference answer or None) and the future its (RowJudgements, row, dispatched-at) outcome is set on; ``group`` is
    the cohort it is judged with (set by the batcher)."""

    prompt: Any
    response: str
    label: Optional[str]
    future: asyncio.Future = field(repr=False)
    group: Optional[int] = None


class MicroBatcher:
    """Gathers single rollouts for ``window_s`` seconds (or until ``max_batch`` of them) and judges them together,
    off the callers' tasks. Every rollout gets exactly one outcome on its future: ``(judged, row, dispatched_at)``,
    or the exception that failed its batch. ``on_batch(size, judged_or_error)`` is told about every judged batch
    before its rollouts are answered (the server feeds its metrics from it).

    With ``group_size`` (a number, or ``"auto"`` to learn it) rollouts first gather in cohorts (``cohorts.py``): the
    rollouts of one prompt and label are held until the group is complete or ``group_wait_s`` has passed since the
    first, then judged together in one judge request (chunked by the reward's ``max_responses_per_call``); cohorts
    ready at the same time share the window and the engine calls. ``on_cohort(size, partial, waited_s)`` hears of
    every closed cohort. Without ``group_size`` every rollout is ready at once, and rollouts of one prompt that meet
    in a window are judged together.

    Example:
        >>> async def judged_alone(reward):  # doctest: +SKIP
        ...     batcher = MicroBatcher(reward, window_s=0.015, max_batch=64)
        ...     batcher.start()
        ...     rollout = Rollout("2 + 3?", "5", None, asyncio.get_running_loop().create_future())
        ...     await batcher.submit([rollout])
        ...     judged, row, _ = await rollout.future
        ...     await batcher.stop()
        ...     return rollout_reward(judged, row, reward.score_range)
    """

    def __init__(self, reward: RewardFunction, window_s: float, max_batch: int,
                 on_batch: BatchCallback | None = None, group_size: GroupSizeSetting | None = None,
                 group_wait_s: float = 60.0, on_cohort: ClosedCallback | None = None) -> None:
        self.reward = reward
        self.window_s = window_s
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.group_size = GroupSize(group_size) if group_size is not None else None
        self.group_wait_s = group_wait_s
        self.on_cohort = on_cohort
        self.cohorts: Cohorts | None = None  # made in start(): its timers live in the running loop
        self.queue: asyncio.Queue[list[Rollout]] = asyncio.Queue()  # ready units: a cohort, or a lone rollout
        self.worker: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()
        self.pending = 0  # rollouts submitted and not answered yet
        self._answered: collections.deque[tuple[float, int]] = collections.deque()  # (when, how many) per batch

    def start(self) -> None:
        """Start gathering (in the running event loop; the queue, the cohorts and the worker live in it)."""
        if self.group_size is not None:
            self.cohorts = Cohorts(self.group_size, self.group_wait_s, self._ready, self.on_cohort)
        self.worker = asyncio.create_task(self._run(), name="grm-micro-batcher")

    def drain(self) -> None:
        """Judge open cohorts now with what they hold, and hold no later rollout (the server is stopping)."""
        if self.cohorts is not None:
            self.cohorts.drain()

    @property
    def waiting(self) -> int:
        """Rollouts held in open cohorts now."""
        return self.cohorts.waiting if self.cohorts is not None else 0

    def _ready(self, members: list[Rollout], group: int) -> None:
        for rollout in members:
            rollout.group = group
        self.queue.put_nowait(members)

    async def stop(self, timeout_s: float | None = None) -> None:
        """Judge what is queued, wait for running batches, then stop; with ``timeout_s``, what is not judged by then
        is cancelled (its waiters get CancelledError), so a hung engine cannot hold a shutdown."""
        self.drain()
        try:
            await asyncio.wait_for(self._finish(), timeout_s)
        except asyncio.TimeoutError:
            logger.warning("shutdown: %d rollouts not judged within %g s were cancelled", self.pending, timeout_s)
        finally:
            for task in [self.worker, *self.running]:
                if task is not None and not task.done():
                    task.cancel()
            while not self.queue.empty():
                for rollout in self.queue.get_nowait():
                    rollout.future.cancel()

    async def _finish(self) -> None:
        if self.worker is not None:
            while not self.queue.empty():
                await asyncio.sleep(0.01)
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    async def submit(self, rollouts: list[Rollout]) -> None:
        """Queue rollouts for the next window; their outcomes arrive on their futures."""
        for rollout in rollouts:
            self.pending += 1
            rollout.future.add_done_callback(self._answered_one)
            if self.cohorts is not None:
                self.cohorts.add(rollout, cohort_key(rollout.prompt, rollout.label))
            else:
                self.queue.put_nowait([rollout])

    def _answered_one(self, _: asyncio.Future) -> None:
        self.pending -= 1

    def expected_wait_s(self, horizon_s: float = 10.0) -> float | None:
        """How long a rollout submitted now should wait for its answer: the rollouts pending (not counting those
        held in cohorts for the rest of their group: they wait for rollouts, not for the judge) over the rate at which
        rollouts were answered in the last ``horizon_s`` seconds; None before two batches were answered in it (no
        rate yet, or idle)."""
        now = time.perf_counter()
        answered = self._answered
        while answered and answered[0][0] < now - horizon_s:
            answered.popleft()
        if len(answered) < 2:
            return None
        span = max(now - answered[0][0], 1e-3)
        rate = sum(count for _, count in answered) / span
        return (self.pending - self.waiting) / rate if rate > 0 else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = list(await self.queue.get())  # a cohort is never split over batches
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.extend(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.extend(self.queue.get_nowait())
            task = asyncio.create_task(self._judge(batch))  # judging overlaps with gathering the next batch
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _judge(self, batch: list[Rollout]) -> None:
        """Judge a micro-batch: each of its judge requests (a cohort, or the rollouts of one prompt) on its own, so a
        rollout is answered as soon as its own judgement is done, and a request whose every rollout is gone (timed
        out, or its caller left) is cancelled, which frees its engine slot; the engine calls still overlap."""
        batch = [r for r in batch if not r.future.done()]  # timed-out requests are not judged
        units: dict[tuple, list[Rollout]] = {}
        for rollout in batch:  # text prompts key as they are (no JSON per rollout on the hot path)
            prompt = rollout.prompt if isinstance(rollout.prompt, str) else cohort_key(rollout.prompt, None)
            key = (rollout.group, isinstance(rollout.prompt, str), prompt, rollout.label)
            units.setdefault(key, []).append(rollout)
        await asyncio.gather(*(self._judge_unit(unit) for unit in units.values()))

    async def _judge_unit(self, unit: list[Rollout]) -> None:
        dispatched = time.perf_counter()
        reward = self.reward
        columns = {reward.reference_column: [r.label for r in unit]}
        judging = asyncio.ensure_future(reward.ajudge_rows(
            [r.prompt for r in unit], [r.response for r in unit], isolate=True, cohorts=[r.group for r in unit],
            **columns))
        abandoned = False

        def one_gone(_: asyncio.Future) -> None:  # nobody waits for the judgement any more: free its engine calls
            nonlocal abandoned
            if not judging.done() and all(r.future.done() for r in unit):
                abandoned = True
                judging.cancel()

        for rollout in unit:
            rollout.future.add_done_callback(one_gone)
        try:
            await judging
        except asyncio.CancelledError:
            if abandoned and judging.cancelled():
                return
            raise  # the batcher itself is stopping (awaiting the judgement cancelled it too)
        except Exception as exc:  # the request could not be judged at all: every waiter gets it, exactly once
            self._report(len(unit), exc)
            for rollout in unit:
                if not rollout.future.done():
                    rollout.future.set_exception(exc)
            return
        judged = judging.result()
        self._report(len(unit), judged)
        self._answered.append((time.perf_counter(), len(unit)))
        for i, rollout in enumerate(unit):  # a failed request reaches only its own rollouts
            if not rollout.future.done():
                error = judged.row_error(i)
                if error is None:
                    rollout.future.set_result((judged, i, dispatched))
                else:
                    rollout.future.set_exception(error)

    def _report(self, size: int, outcome: RowJudgements | BaseException) -> None:
        """Tell ``on_batch`` about a judged batch; its failure is logged and never keeps the rollouts unanswered."""
        if self.on_batch is None:
            return
        try:
            self.on_batch(size, outcome)
        except Exception:
            logger.exception("the micro-batcher's on_batch callback failed")


def strip_end_tokens(text: str) -> str:
    """``text`` without trailing whitespace and trailing end-of-turn tokens (``END_TOKENS``, repeated ones too).

    Example:
        >>> strip_end_tokens("The answer is 5.<|im_end|>\\n</s>")
        'The answer is 5.'
    """
    stripped = text.rstrip()
    changed = True
    while changed:
        changed = False
        for token in END_TOKENS:
            if stripped.endswith(token):
                stripped = stripped[: -len(token)].rstrip()
                changed = True
    return stripped


def response_of(query: str, prompt: str, index: int, strip: bool = True, query_name: str = "query") -> str:
    """The response OpenRLHF means: ``query[len(prompt):]``, trailing end-of-turn tokens removed when ``strip``.
    Raises ValueError naming the index when the prompt is not a prefix of its query.

    Example:
        >>> response_of("Q: 2 + 3?\\nA: 5<|im_end|>", "Q: 2 + 3?\\nA:", 0)
        ' 5'
    """
    if not query.startswith(prompt):
        raise ValueError(f"prompts[{index}] is not a prefix of {query_name}[{index}]: the response is "
                         "query[len(prompt):]")
    response = query[len(prompt):]
    return strip_end_tokens(response) if strip else response


def rollout_reward(judged: RowJudgements, row: int, score_range: tuple[int, int],
                   invalid_reward: float | None = None) -> tuple[float, float, dict[str, float]]:
    """One rollout's ``(reward, score in 0..1, logs)`` from its judged batch.

    Without a valid judgement (every sample failed to parse) the reward is ``invalid_reward`` (None: the bottom of
    ``score_range``) and the score 0: an unreadable judgement is never a prize, or a response that breaks the judge
    would out-earn a poor one. (An engine failure is not this: it reaches the rollout as an error.) The logs are
    ``grm_valid_samples``, ``grm_samples``, ``grm_mean_score`` (-1 without one), ``grm_group_size`` (responses judged
    together), ``grm_cached``, ``grm_resampled`` (replacements drawn for unparseable samples) and
    ``grm_truncated_tokens`` (cut to fit the judge's context) of the rollout's request, then the judge-health
    figures of what was judged with it (its group: the micro-batcher judges each group on its own, so that a
    rollout is answered as soon as its group is), the same for each of its rollouts (``health.JudgeHealth``,
    computed once per judged group; 0 when undefined): ``grm_slot_bias``, ``grm_length_corr``, ``grm_ties_rate``
    and ``grm_vote_spread``. All are finite floats.
    """
    slot = judged.slots[row]
    result = judged.results[slot.request]
    reward = result.rewards[slot.response]
    means = result.mean_scores
    mean = means[slot.response] if means is not None else None
    score = unit_score(mean, score_range) if mean is not None else 0.0
    if reward is None or mean is None:
        reward = invalid_reward if invalid_reward is not None else score_range[0]
    logs = {"grm_valid_samples": float(result.valid_samples), "grm_samples": float(result.samples),
            "grm_mean_score": float(mean) if mean is not None else float("nan"),
            "grm_group_size": float(len(result.rewards)), "grm_cached": float(result.cached),
            "grm_resampled": float(result.resampled), "grm_truncated_tokens": float(result.truncated_tokens),
            **{f"grm_{figure}": float(value) for figure, value in judged.health().as_metrics().items()}}
    logs = {k: (v if math.isfinite(v) else -1.0) for k, v in logs.items()}  # JSON has no NaN
    return float(reward), float(score), logs


def openrlhf_reply(rows: Sequence[tuple[RowJudgements, int]], score_range: tuple[int, int],
                   invalid_reward: float | None = None) -> dict[str, Any]:
    """OpenRLHF's answer for judged rollouts: ``rewards``, ``scores`` and ``extra_logs`` averaged over them."""
    entries = [rollout_reward(judged, row, score_range, invalid_reward) for judged, row in rows]
    logs = [entry[2] for entry in entries]
    return {"rewards": [entry[0] for entry in entries], "scores": [entry[1] for entry in entries],
            "extra_logs": {key: sum(log[key] for log in logs) / len(logs) for key in logs[0]} if logs else {}}


__all__ = ["END_TOKENS", "BatchCallback", "MicroBatcher", "Rollout", "openrlhf_reply", "response_of",
           "rollout_reward", "strip_end_tokens"]
