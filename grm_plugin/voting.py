"""Turn k sampled judgements into one reward per response: sum voting (paper Eq. 14), seeded tie-breaking, reward
scaling, and the aggregation of a request's judgements into its ScoreResult. Pure functions; the randomness is seeded
by the caller."""

from __future__ import annotations

import random
from typing import Any, Literal, Sequence

from .errors import NoValidJudgementError
from .types import Judgement, ScoreResult

RewardScale = Literal["mean", "sum", "unit"]


def vote_sum(score_lists: Sequence[Sequence[int]], n_responses: int) -> list[int]:
    """Sum each response's scores over the valid samples (paper Eq. 14; range k..10k for 1..10 scores).

    Example:
        >>> vote_sum([[8, 3], [6, 7], [9, 2]], 2)
        [23, 12]
    """
    votes = [0] * n_responses
    for scores in score_lists:
        if len(scores) != n_responses:
            raise ValueError(f"expected {n_responses} scores per sample, got {len(scores)}")
        for i, s in enumerate(scores):
            votes[i] += s
    return votes


def pick_best(votes: Sequence[float], rng: random.Random) -> int:
    """Index of the highest vote; ties are broken uniformly at random with ``rng`` (as the paper does).

    Example:
        >>> pick_best([3, 9, 9], random.Random(1)) in (1, 2)
        True
    """
    top = max(votes)
    winners = [i for i, v in enumerate(votes) if v == top]
    return winners[0] if len(winners) == 1 else rng.choice(winners)


def scale_rewards(
    votes: Sequence[int], valid_samples: int, scale: RewardScale, score_range: tuple[int, int] = (1, 10)
) -> list[float]:
    """Rewards from summed votes: ``mean`` = average valid score (in the score range), ``sum`` = the paper's raw
    votes, ``unit`` = the mean mapped linearly onto 0..1.

    Example:
        >>> scale_rewards([23, 12], 3, "mean")
        [7.666666666666667, 4.0]
        >>> scale_rewards([23, 12], 3, "unit")[1]
        0.3333333333333333
    """
    if valid_samples < 1:
        raise ValueError("scale_rewards needs at least one valid sample")
    if scale == "sum":
        return [float(v) for v in votes]
    means = [v / valid_samples for v in votes]
    if scale == "mean":
        return means
    if scale == "unit":
        return [unit_score(m, score_range, clamp=False) for m in means]
    raise ValueError(f"unknown reward scale {scale!r}; expected 'mean', 'sum' or 'unit'")


def unit_score(mean: float, score_range: tuple[int, int] = (1, 10), clamp: bool = True) -> float:
    """A score on the judge's scale mapped linearly onto 0..1 (the low end to 0, the high end to 1), clamped to
    0..1 unless ``clamp`` is off. The one mapping behind ``reward_scale='unit'``, OpenRLHF's ``scores`` and the
    LangChain evaluators' scores.

    Example:
        >>> unit_score(5.5), unit_score(10), unit_score(0.0)
        (0.5, 1.0, 0.0)
    """
    low, high = score_range
    value = (mean - low) / (high - low)
    return min(1.0, max(0.0, value)) if clamp else value


def voted_values(judgements: Sequence[Judgement], use_expected: bool = False) -> list[list[float]]:
    """What each valid judgement votes: its expected scores where read (with ``use_expected``), else its scores."""
    return [list(j.expected_scores) if use_expected and j.expected_scores is not None else list(j.scores)
            for j in judgements if j.valid and j.scores is not None]


def aggregate(judgements: list[Judgement], n_responses: int, rng: random.Random, *, reward_scale: RewardScale = "mean",
              score_range: tuple[int, int] = (1, 10), expected_scores: bool = False,
              on_no_valid: str | float = "none", used: Sequence[int] | None = None,
              metadata: dict[str, Any] | None = None) -> ScoreResult:
    """A request's ScoreResult from its sampled judgements: the valid ones (of ``used``, the meta RM's choice, when
    given) are sum-voted, scaled into rewards and the best picked (ties broken by ``rng``); with ``expected_scores``
    the expected scores decide. Without a valid judgement the rewards are None or ``on_no_valid`` (a number), or
    NoValidJudgementError is raised (``on_no_valid='raise'``)."""
    chosen = range(len(judgements)) if used is None else used
    voted = [judgements[i] for i in chosen if judgements[i].valid and judgements[i].scores is not None]
    counters: dict[str, Any] = dict(
        judgements=judgements,
        samples=len(judgements),
        valid_samples=sum(1 for j in judgements if j.valid and j.scores is not None),
        prompt_tokens=sum(j.prompt_tokens for j in judgements),
        completion_tokens=sum(j.completion_tokens for j in judgements),
        metadata=metadata or {},
        meta_kept=None if used is None else list(used),
    )
    if voted:
        votes = vote_sum([j.scores for j in voted], n_responses)  # type: ignore[misc]
        deciding: list[float] = list(votes)
        if expected_scores:
            deciding = vote_sum(voted_values(voted, True), n_responses)
            counters.update(expected_votes=deciding,
                            expected_samples=sum(1 for j in voted if j.expected_scores is not None))
        rewards: list[float | None] = list(scale_rewards(deciding, len(voted), reward_scale, score_range))
        return ScoreResult(rewards=rewards, votes=votes, best=pick_best(deciding, rng), voted_samples=len(voted),
                           **counters)
    if on_no_valid == "raise":
        errors = "; ".join(sorted({j.error or "" for j in judgements}))[:500]
        raise NoValidJudgementError(f"none of the {len(judgements)} sampled judgement(s) could be parsed "
                                    f"({errors}); set on_no_valid='none' or a number to get a reward instead")
    fallback = None if on_no_valid == "none" else float(on_no_valid)
    return ScoreResult(rewards=[fallback] * n_responses, **counters)
