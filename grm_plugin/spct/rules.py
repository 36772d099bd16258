"""The SPCT rules: when a sampled judgement is correct (paper Eq. 10) and the online-RL reward built on it (Eq. 11).

Eq. 10: with n >= 2 responses a judgement is correct when the labelled best response gets strictly the highest
score; with one response, when its score equals the label. Eq. 11: +1 for a correct judgement, -1 otherwise (an
unparseable one included). ``SPCTRuleReward`` applies Eq. 11 to the judge model's own generations, as a TRL
``GRPOTrainer`` reward that trains the judge itself.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ..errors import InvalidRequestError, ParseError
from ..orders import unshuffle
from ..parsing import parse_judgement
from ..reward import RewardFunction
from ..types import Judgement, Message, ScoreRequest, ScoreResult


def judgement_correct(scores: Optional[Sequence[int]], best: Optional[int] = None,
                      labels: Optional[Sequence[int]] = None) -> bool:
    """Eq. 10. ``scores`` are in the responses' original order (None: the judgement did not parse); ``best`` is the
    labelled best index, or ``labels`` the per-response labels (n = 1: the correct score; n >= 2: best = the strictly
    highest label).

    Example:
        >>> judgement_correct([7, 3], best=0), judgement_correct([7, 7], best=0), judgement_correct([6], labels=[6])
        (True, False, True)
    """
    if scores is None:
        return False
    n = len(scores)
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"labels: expected {n} (one per response), got {len(labels)}")
        if n == 1:
            return int(scores[0]) == int(labels[0])
        top = max(labels)
        if list(labels).count(top) > 1:
            raise ValueError(f"labels {list(labels)} have no single best response")
        label_best = list(labels).index(top)
        if best is not None and best != label_best:
            raise ValueError(f"best={best} disagrees with labels {list(labels)}")
        best = label_best
    if best is None:
        raise ValueError("judgement_correct needs best= or labels=")
    if not 0 <= best < n:
        raise ValueError(f"best: expected an index in 0..{n - 1}, got {best}")
    if n == 1:
        raise ValueError("a single response needs labels=[its correct score], not best=")
    return all(scores[best] > s for i, s in enumerate(scores) if i != best)


def rule_reward(scores: Optional[Sequence[int]], best: Optional[int] = None,
                labels: Optional[Sequence[int]] = None) -> float:
    """Eq. 11: +1.0 if the judgement is correct by Eq. 10, else -1.0 (also when it did not parse)."""
    return 1.0 if judgement_correct(scores, best, labels) else -1.0


def _completion_text(completion: Any) -> str:
    """A TRL completion as text: a string, or the content of its (last) assistant message."""
    if isinstance(completion, str):
        return completion
    texts = [(m if isinstance(m, Message) else Message.model_validate(m)).text() for m in completion]
    return texts[-1] if texts else ""


class SPCTRuleReward(RewardFunction):
    """Eq. 11 on the judge's own generations: a GRPO reward that trains a GRM with the paper's rule-based online RL.

    Each row's completion is a judgement written by the policy (the judge being trained) for the judge prompt in
    ``prompts``. The dataset columns say what is correct: ``best`` (the labelled best response, in original order)
    or ``labels`` (per-response labels; one response: its correct score), ``n_responses``, and ``order`` (the
    order the prompt showed the responses in, ``order[slot]`` = original index; omitted = shown in original order).
    ``spct.build_rl_dataset`` writes exactly these columns.

    Example:
        >>> reward = SPCTRuleReward()
        >>> reward(prompts=["..."], completions=["Analysis: ok\\nScores: \\\\boxed{3, 8}"], best=[0], n_responses=[2],
        ...        order=[[1, 0]])
        [1.0]
    """

    mode = "pointwise"

    def __init__(self, score_range: tuple[int, int] = (1, 10), *, best_column: str = "best",
                 labels_column: str = "labels", n_column: str = "n_responses", order_column: str = "order",
                 name: str = "spct_rule") -> None:
        self.score_range = tuple(score_range)  # type: ignore[assignment]
        self.best_column, self.labels_column = best_column, labels_column
        self.n_column, self.order_column = n_column, order_column
        self.__name__ = name

    def judge_text(self, text: str, n: int, *, best: Optional[int] = None, labels: Optional[Sequence[int]] = None,
                   order: Optional[Sequence[int]] = None) -> tuple[float, Judgement]:
        """The Eq. 11 reward of one generation, and the generation parsed (scores in original order)."""
        order = list(order) if order is not None else list(range(n))
        try:
            parsed = parse_judgement(text, n, self.score_range)
        except ParseError as exc:
            return -1.0, Judgement(text=text, valid=False, error=str(exc), order=order)
        scores = unshuffle(parsed.scores, order)
        judgement = Judgement(text=text, principles=parsed.principles, critique=parsed.critique, scores=scores,
                              valid=True, order=order)
        return rule_reward(scores, best, labels), judgement

    def _row(self, kwargs: dict[str, Any], column: str, i: int) -> Any:
        values = kwargs.get(column)
        return None if values is None else values[i]

    async def acall(self, prompts: Sequence[Any], completions: Sequence[Any], *, reward_name: str | None = None,
                    **kwargs: Any) -> list[float | None]:
        if kwargs.get(self.best_column) is None and kwargs.get(self.labels_column) is None:
            raise InvalidRequestError(f"{type(self).__name__} needs a '{self.best_column}' or '{self.labels_column}' "
                                      "dataset column (spct.build_rl_dataset writes them)")
        rewards: list[float | None] = []
        valid = 0
        for i, completion in enumerate(completions):
            labels = self._row(kwargs, self.labels_column, i)
            best = self._row(kwargs, self.best_column, i)
            order = self._row(kwargs, self.order_column, i)
            n = self._row(kwargs, self.n_column, i) or (len(labels) if labels else len(order) if order else None)
            if not n:
                raise InvalidRequestError(f"row {i}: the number of responses is unknown: give a "
                                          f"'{self.n_column}' column (or '{self.order_column}'/'{self.labels_column}')")
            reward, judgement = self.judge_text(_completion_text(completion), int(n), best=best, labels=labels,
                                                order=order)
            valid += judgement.valid
            rewards.append(reward)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and rewards:
            name = reward_name or self.__name__
            log_metric(f"{name}/accuracy", sum(r > 0 for r in rewards if r is not None) / len(rewards))
            log_metric(f"{name}/parse_valid_rate", valid / len(rewards))
        return rewards

    async def ascore(self, requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreResult]:
        """Each request's ``responses`` are judge generations for its ``prompt``; its ``metadata`` holds ``best`` or
        ``labels``, ``n_responses`` and optionally ``order``. Rewards are +1/-1 per generation."""
        from ..types import coerce_requests

        results = []
        for request in coerce_requests(requests):
            meta = request.metadata
            n = meta.get("n_responses") or len(meta.get("labels") or meta.get("order") or [])
            if not n or (meta.get("best") is None and meta.get("labels") is None):
                raise InvalidRequestError("SPCTRuleReward requests need metadata with 'n_responses' and 'best' or "
                                          "'labels'")
            judged = [self.judge_text(_completion_text(r), int(n), best=meta.get("best"), labels=meta.get("labels"),
                                      order=meta.get("order")) for r in request.responses]
            results.append(ScoreResult(rewards=[r for r, _ in judged], judgements=[j for _, j in judged],
                                       samples=len(judged), valid_samples=sum(j.valid for _, j in judged),
                                       metadata=meta))
        return results


__all__ = ["SPCTRuleReward", "judgement_correct", "rule_reward"]
