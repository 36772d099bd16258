"""Turn k sampled judgements into one reward per response: per-sample shuffles, sum voting (paper Eq. 14),
seeded tie-breaking and reward scaling. Pure functions; the randomness is seeded by the caller."""

from __future__ import annotations

import random
from typing import Literal, Sequence

RewardScale = Literal["mean", "sum", "unit"]


def draw_orders(n_responses: int, k: int, rng: random.Random, shuffle: bool = True) -> list[list[int]]:
    """One presentation order per sample: ``order[j]`` is the original index shown in slot j.

    Each sample's order is an independent uniform shuffle (the paper's remedy for position bias); with
    ``shuffle=False`` every sample sees the original order.

    Example:
        >>> draw_orders(3, 2, random.Random(0), shuffle=False)
        [[0, 1, 2], [0, 1, 2]]
    """
    orders = []
    for _ in range(k):
        order = list(range(n_responses))
        if shuffle:
            rng.shuffle(order)
        orders.append(order)
    return orders


def unshuffle(shown_scores: Sequence[int], order: Sequence[int]) -> list[int]:
    """Map scores given per shown slot back to the original response order.

    Example:
        >>> unshuffle([9, 2], [1, 0])  # slot 1 showed response 1, which got 9
        [2, 9]
    """
    scores = [0] * len(order)
    for slot, index in enumerate(order):
        scores[index] = shown_scores[slot]
    return scores


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
        lo, hi = score_range
        return [(m - lo) / (hi - lo) for m in means]
    raise ValueError(f"unknown reward scale {scale!r}; expected 'mean', 'sum' or 'unit'")
