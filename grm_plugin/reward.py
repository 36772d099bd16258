"""RewardFunction: the backend-agnostic interface every adapter speaks.

Subclasses implement ``async ascore(requests)``; ``score`` (sync), ``acall``/``__call__`` (the batch-of-pairs
convention TRL made standard: ``(prompts, completions, **kwargs) -> list[float | None]``) come for free, including
TRL's ``log_extra`` (per-completion critique and votes columns) and ``log_metric`` (judge statistics) hooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from ._sync import run_sync
from .batching import RowSlot, column, rows_to_requests
from .errors import BackendError, caused_by_request
from .health import WATCH, JudgeHealth, judge_health
from .types import ScoreRequest, ScoreResult

logger = logging.getLogger(__name__)


@dataclass
class RowJudgements:
    """The judge's results for a host's batch of rows: ``results[slots[i].request]`` judged row ``i``."""

    requests: list[ScoreRequest]
    results: list[ScoreResult]
    slots: list[RowSlot]
    seconds: float
    errors: dict[int, BaseException] = field(default_factory=dict)  # request index -> why it has no result
    _health: JudgeHealth | None = field(default=None, init=False, repr=False, compare=False)

    def row_error(self, row: int) -> BaseException | None:
        """Why row ``row`` was not judged (its request failed), or None."""
        return self.errors.get(self.slots[row].request)

    def rewards(self) -> list[float | None]:
        return [self.results[s.request].rewards[s.response] for s in self.slots]

    def votes(self) -> list[str]:
        """Per row, its score in every valid sample and their sum, e.g. ``'7+6+8=21'`` ('' without valid samples)."""
        out = []
        for slot in self.slots:
            scores = [j.scores[slot.response] for j in self.results[slot.request].judgements
                      if j.valid and j.scores is not None]
            out.append(f"{'+'.join(map(str, scores))}={sum(scores)}" if scores else "")
        return out

    def critiques(self) -> list[str]:
        """Per row, the first valid judgement's critique, headed by the slot this row was shown in."""
        out = []
        for slot in self.slots:
            result = self.results[slot.request]
            judgement = next((j for j in result.judgements if j.valid), None)
            if slot.request in self.errors:
                out.append(f"(not judged: {str(self.errors[slot.request])[:300]})")
                continue
            if judgement is None:
                errors = [j.error for j in result.judgements if j.error]
                out.append(f"(no valid judgement{': ' + errors[0] if errors else ''})")
                continue
            shown = judgement.order.index(slot.response) + 1 if slot.response in judgement.order else slot.response + 1
            head = f"[this completion = Response {shown} of {len(judgement.order) or 1}]"
            out.append(f"{head} {judgement.critique.strip() or judgement.text.strip()}")
        return out

    def health(self) -> JudgeHealth:
        """The batch's judge-health figures (``health.judge_health``), computed once. That first computation also
        hands them to the process's ``health.WATCH``, which warns once a run when a figure shows the judge being
        fooled: every host that reads a batch's health (TRL through ``metrics``, OpenRLHF and verl through
        ``rollouts.rollout_reward``) is watched, once per batch."""
        if self._health is None:
            self._health = judge_health(self.requests, self.results)
            WATCH.observe(self._health)
        return self._health

    def metrics(self) -> dict[str, float]:
        """The batch's judge statistics: parse-valid rate, samples, latency, tokens, cache hits, and the health
        figures (``slot_bias``, ``length_corr``, ``ties_rate``, ``vote_spread``; see ``health.JudgeHealth``)."""
        results = self.results
        samples = sum(r.samples for r in results)
        fresh = [r for r in results if not r.cached]
        return {
            "parse_valid_rate": (sum(r.valid_samples for r in results) / samples) if samples else 0.0,
            "resampled": float(sum(r.resampled for r in fresh)),
            "truncated_requests": float(sum(r.truncated_tokens > 0 for r in fresh)),
            "truncated_tokens": float(sum(r.truncated_tokens for r in fresh)),
            "prompt_too_long": float(sum(r.error is not None for r in results)),
            "floored": float(sum(r.floored for r in fresh)),
            "samples": float(samples),
            "judge_requests": float(len(results)),
            "judge_latency_s": self.seconds,
            "judge_prompt_tokens": float(sum(r.prompt_tokens for r in fresh)),
            "judge_completion_tokens": float(sum(r.completion_tokens for r in fresh)),
            "cache_hit_rate": (len(results) - len(fresh)) / len(results) if results else 0.0,
            **self.health().as_metrics(),
        }


class RewardFunction(ABC):
    """A reward over requests. Any RewardFunction can be handed to any adapter.

    Class attributes a subclass may override: ``mode`` ('group' or 'pointwise') and ``max_responses_per_call``
    shape how ``__call__`` batches rows; ``reference_column``/``principles_column`` name the keyword columns read;
    ``on_engine_error`` ('raise' or 'none') says what a trainer call does when the engine fails after its retries;
    ``score_range`` is the inclusive range of one sample's score (adapters map mean scores to 0..1 with it).
    """

    mode: Literal["group", "pointwise"] = "pointwise"
    max_responses_per_call: int = 8
    reference_column: str = "reference"
    principles_column: str = "principles"
    on_engine_error: Literal["raise", "none"] = "raise"
    score_range: tuple[int, int] = (1, 10)
    __name__: str = "reward"

    @abstractmethod
    async def ascore(self, requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreResult]:
        """Judge every request; one ScoreResult per request, in order."""

    def score(self, requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreResult]:
        """Synchronous ``ascore``; safe to call inside a running event loop."""
        return run_sync(self.ascore(requests))

    async def ascore_settled(self, requests: Sequence[ScoreRequest | dict[str, Any]]
                             ) -> list[ScoreResult | BaseException]:
        """``ascore`` that never raises for one request's failure: per request its ScoreResult or the exception that
        failed it. The default judges the batch together and, if that fails, each request alone."""
        try:
            return list(await self.ascore(requests))
        except Exception as exc:
            if len(requests) <= 1:
                return [exc]
        return [outcome[0] if isinstance(outcome, list) else outcome
                for outcome in await asyncio.gather(*(self.ascore([r]) for r in requests), return_exceptions=True)]

    async def ajudge_rows(self, prompts: Sequence[Any], completions: Sequence[Any], *, isolate: bool = False,
                          cohorts: Sequence[Any] | None = None, **kwargs: Any) -> RowJudgements:
        """Judge a host's rows of (prompt, completion): group or pointwise as configured, with the reference and
        principles columns from ``kwargs``; the full results, for adapters that log more than rewards. ``cohorts``
        (one hashable per row) keeps rows of one prompt in separate judge requests when their cohorts differ.

        With ``isolate``, a request that fails does not fail the others: its rows get ``row_error``, and a group
        that failed because of one member's content (``errors.caused_by_request``) is judged again row by row, so
        only the culprit fails. Without it the first failure is raised."""
        n = len(prompts)
        requests, slots = rows_to_requests(
            prompts,
            completions,
            mode=self.mode,
            max_responses_per_call=self.max_responses_per_call,
            references=column(kwargs, self.reference_column, n),
            principles=column(kwargs, self.principles_column, n),
            cohorts=cohorts,
        )
        started = time.perf_counter()
        if not isolate:
            results = await self.ascore(requests)
            return RowJudgements(requests, results, slots, time.perf_counter() - started)
        outcomes = await self.ascore_settled(requests)
        retry_rows = [row for row, slot in enumerate(slots) if isinstance(outcomes[slot.request], BaseException)
                      and requests[slot.request].n_responses > 1 and caused_by_request(outcomes[slot.request])]
        if retry_rows:  # each member of a failed group alone: only the one that caused it fails again
            alone = [requests[slots[row].request].model_copy(
                update={"responses": [requests[slots[row].request].responses[slots[row].response]]})
                for row in retry_rows]
            for row, request, outcome in zip(retry_rows, alone, await self.ascore_settled(alone)):
                slots[row] = RowSlot(len(requests), 0)
                requests.append(request)
                outcomes.append(outcome)
        if retry_rows:  # a group judged again row by row answers no row any more: drop it from the batch
            kept = sorted({slot.request for slot in slots})
            renumber = {old: new for new, old in enumerate(kept)}
            slots = [RowSlot(renumber[slot.request], slot.response) for slot in slots]
            requests, outcomes = [requests[i] for i in kept], [outcomes[i] for i in kept]
        errors = {i: o for i, o in enumerate(outcomes) if isinstance(o, BaseException)}
        results = [ScoreResult(rewards=[None] * requests[i].n_responses, metadata={"error": str(o)[:500]})
                   if isinstance(o, BaseException) else o for i, o in enumerate(outcomes)]
        return RowJudgements(requests, results, slots, time.perf_counter() - started, errors)

    async def acall(self, prompts: Sequence[Any], completions: Sequence[Any], *, reward_name: str | None = None,
                    **kwargs: Any) -> list[float | None]:
        """Rewards for rows of (prompt, completion), one per row. Keyword columns other than the reference and
        principles columns are ignored, except TRL's hooks: a callable ``log_extra`` receives the
        ``<name>_critique`` and ``<name>_votes`` columns of the completions table, a callable ``log_metric`` the
        judge's statistics as ``<name>/<metric>`` (parse-valid rate, samples, latency, tokens, and the judge-health
        figures ``slot_bias``, ``length_corr``, ``ties_rate`` and ``vote_spread`` of ``health.JudgeHealth``; a figure
        that shows the judge being fooled is also logged once as a warning); ``name`` is ``reward_name`` or
        ``__name__``."""
        log_extra: Callable[[str, list], Any] | None = kwargs.get("log_extra")
        log_metric: Callable[[str, float], Any] | None = kwargs.get("log_metric")
        name = reward_name or getattr(self, "__name__", type(self).__name__)
        try:
            judged = await self.ajudge_rows(prompts, completions, isolate=True, **kwargs)
            engine_failure = next((e for e in judged.errors.values() if not caused_by_request(e)), None)
            if engine_failure is not None:  # the engine itself failed: the batch fails, as one error
                raise engine_failure
        except BackendError as exc:
            if self.on_engine_error != "none":
                raise
            logger.warning("%s: the judge engine failed (%s); every reward of this batch of %d is None",
                           name, exc, len(prompts))
            if callable(log_metric):
                log_metric(f"{name}/engine_errors", 1.0)
            if callable(log_extra):
                log_extra(f"{name}_critique", [f"(engine error: {exc})"] * len(prompts))
                log_extra(f"{name}_votes", [""] * len(prompts))
            return [None] * len(prompts)
        if judged.errors:  # rows whose own content the judge could not take: None for them alone
            logger.warning("%s: %d of %d judge requests failed because of their own content (first: %s); their rows "
                           "get None", name, len(judged.errors), len(judged.results), next(iter(judged.errors.values())))
        if callable(log_extra):
            log_extra(f"{name}_critique", judged.critiques())
            log_extra(f"{name}_votes", judged.votes())
        if callable(log_metric):
            for metric, value in judged.metrics().items():
                log_metric(f"{name}/{metric}", value)
            log_metric(f"{name}/engine_errors", 0.0)
            log_metric(f"{name}/request_errors", float(len(judged.errors)))
        return judged.rewards()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return run_sync(self.acall(prompts, completions, **kwargs))
