"""When adaptive k stops sampling: the exact, lead and statistical stopping rules (with the Student-t helpers they
need), the sizes of the sampling rounds, and the check the conductor asks after each round. Pure functions."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, Sequence

from .voting import vote_sum


def exact_stop(votes: Sequence[float], remaining: int, score_range: tuple[int, int] = (1, 10)) -> bool:
    """The exact stopping rule of adaptive k: True when the best response can no longer change, because its lead
    over every other response is larger than ``remaining`` samples could overturn even if each gave it the lowest
    score and the other the highest (a strict lead, so no tie can appear either).

    Example:
        >>> exact_stop([40, 12], remaining=3), exact_stop([40, 12], remaining=4)
        (True, False)
    """
    if remaining <= 0 or len(votes) < 2:
        return True
    ranked = sorted(votes, reverse=True)
    return ranked[0] - ranked[1] > remaining * (score_range[1] - score_range[0])


MIN_SPREAD = 0.5  # a response's score spread is taken as at least half a point: scores are rounded integers


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal one; within 1% for df >= 2).

    Example:
        >>> round(t_quantile(0.975, 10), 3)
        2.228
    """
    z = NormalDist().inv_cdf(p)
    terms = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(term / df ** (i + 1) for i, term in enumerate(terms))


def _mean_spread(column: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (spread taken as at least ``MIN_SPREAD``) of at least 2 values."""
    m = len(column)
    mean = sum(column) / m
    return mean, max(math.sqrt(sum((x - mean) ** 2 for x in column) / (m - 1)), MIN_SPREAD)


def statistical_stop(score_lists: Sequence[Sequence[float]], tolerance: float, confidence: float) -> bool:
    """The statistical stopping rule of adaptive k: True when every response's mean score is known within
    ``tolerance`` at ``confidence`` (``score_lists``: one list of per-response scores per sample): the two-sided
    Student-t interval's half-width ``t * s / sqrt(m)`` is at most ``tolerance`` for every response, with the spread
    ``s`` taken as at least ``MIN_SPREAD`` so that a few agreeing samples do not stop the draw. Needs at least 3
    samples.

    Example:
        >>> statistical_stop([[7, 3], [8, 3], [7, 4], [8, 3], [7, 3], [8, 4]], tolerance=0.5, confidence=0.9)
        True
        >>> statistical_stop([[7, 3], [8, 9], [7, 1], [8, 3]], tolerance=0.5, confidence=0.9)
        False
    """
    m = len(score_lists)
    if m < 3:
        return False
    quantile = t_quantile(0.5 + confidence / 2, m - 1)
    return all(quantile * _mean_spread(column)[1] / math.sqrt(m) <= tolerance for column in zip(*score_lists))


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function, exact for integer ``df`` >= 1 (the finite series of Abramowitz and Stegun
    26.7.3-4).

    Example:
        >>> round(t_cdf(2.228, 10), 4), round(t_cdf(-1.0, 1), 4)
        (0.975, 0.25)
    """
    theta = math.atan(t / math.sqrt(df))
    c2, sin, cos = math.cos(theta) ** 2, math.sin(theta), math.cos(theta)
    term, total = 1.0, 1.0
    for j in range(3 if df % 2 else 2, df - 1, 2):
        term *= c2 * (j - 1) / j
        total += term
    if df % 2:  # P(|T| <= t) = 2/pi (theta + sin cos (1 + 2/3 cos^2 + ...)); for df = 1 just 2 theta / pi
        inside = 2 / math.pi * (theta + (sin * cos * total if df > 1 else 0.0))
    else:  # P(|T| <= t) = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        inside = sin * total
    return 0.5 + inside / 2


LEAD_MIN_SAMPLES = 4  # the lead rule estimates the spread of score differences: it never stops on fewer samples


def lead_flip_probability(score_lists: Sequence[Sequence[float]], remaining: int) -> float:
    """How likely the ``remaining`` samples are to change the best response: the summed probabilities (a union bound
    over the other responses) that each other response ends level with or ahead of the current leader once all
    ``m + remaining`` samples are voted. For the leader L and another response i, the per-sample differences
    ``d = s_L - s_i`` have mean ``dbar`` and spread ``s`` (at least ``MIN_SPREAD``); the remaining samples add a sum
    predicted as normal with mean ``remaining * dbar`` and variance ``remaining * s^2 * (1 + remaining / m)`` (the
    samples' own noise plus the uncertainty of ``dbar``), so i overtakes with probability
    ``P(T_{m-1} <= -t * sqrt((m + remaining) / remaining))`` where ``t = dbar * sqrt(m) / s`` is the paired
    t-statistic. 1.0 while the best is tied or fewer than 2 samples are drawn; 0.0 with nothing remaining.

    Example:
        >>> round(lead_flip_probability([[8, 3], [9, 2], [8, 4], [9, 3]], remaining=12), 4)
        0.0011
        >>> lead_flip_probability([[7, 6], [6, 7], [8, 6], [7, 7]], remaining=12) > 0.2
        True
    """
    m = len(score_lists)
    if remaining <= 0:
        return 0.0
    votes = vote_sum(score_lists, len(score_lists[0])) if m else []
    if m < 2 or votes.count(max(votes)) > 1:
        return 1.0
    leader = votes.index(max(votes))
    inflate = math.sqrt((m + remaining) / remaining)
    flip = 0.0
    for other in range(len(votes)):
        if other != leader:
            mean, spread = _mean_spread([s[leader] - s[other] for s in score_lists])
            flip += t_cdf(-mean * math.sqrt(m) / spread * inflate, m - 1)
    return min(flip, 1.0)


def lead_stop(score_lists: Sequence[Sequence[float]], remaining: int, confidence: float, looks: int = 1,
              score_range: tuple[int, int] = (1, 10)) -> bool:
    """The lead stopping rule of adaptive k (ranking-aware): True when the current leader stays the best response of
    all ``m + remaining`` samples with probability at least ``confidence``: ``exact_stop`` holds, or, from
    ``LEAD_MIN_SAMPLES`` samples on, ``lead_flip_probability`` is at most ``(1 - confidence) / sqrt(looks)``, where
    ``looks`` is how many times the rule is asked during one draw (the rounds that end before k_max). Each look's
    probability already conditions on the data, so the looks need no Bonferroni split (that measured 5-10x below
    its level); the square root keeps the worst case (two equally good responses) under ``1 - confidence``. Never
    stops on a tied best.

    Example:
        >>> lead_stop([[8, 3], [9, 2], [8, 4], [9, 3]], remaining=12, confidence=0.95, looks=6)
        True
        >>> lead_stop([[8, 3], [9, 2], [8, 4]], remaining=13, confidence=0.95)  # too few samples for a spread
        False
    """
    if not score_lists:
        return remaining <= 0
    if exact_stop(vote_sum(score_lists, len(score_lists[0])), remaining, score_range):
        return True
    if len(score_lists) < LEAD_MIN_SAMPLES:
        return False
    return lead_flip_probability(score_lists, remaining) <= (1 - confidence) / math.sqrt(max(looks, 1))


StoppingRule = Literal["lead", "exact", "statistical"]


@dataclass(frozen=True)
class AdaptiveK:
    """How many samples a request draws: ``k`` in the first round, then ``round_size`` (default ``k``) per round
    until ``k_max`` (None: one round of ``k``), stopping early when ``rule`` holds after a round.

    Example:
        >>> AdaptiveK(k=4, k_max=16).round_sizes(), AdaptiveK(k=4, k_max=16).looks()
        ([4, 4, 4, 4], 3)
    """

    k: int
    k_max: int | None = None
    round_size: int | None = None
    rule: StoppingRule = "lead"
    confidence: float = 0.95
    tolerance: float = 0.5
    score_range: tuple[int, int] = (1, 10)

    @property
    def total(self) -> int:
        """The most samples a request may draw (k_max with adaptive k, else k)."""
        return self.k_max or self.k

    def round_sizes(self) -> list[int]:
        """Samples per round: k, then round_size (default k) until k_max; one round of k without adaptive k."""
        sizes = [self.k]
        step = self.round_size or self.k
        while self.k_max is not None and sum(sizes) < self.k_max:
            sizes.append(min(step, self.k_max - sum(sizes)))
        return sizes

    def looks(self) -> int:
        """How many times the lead rule may be asked in one draw: the rounds that end before k_max with at least
        LEAD_MIN_SAMPLES samples."""
        ends = list(itertools.accumulate(self.round_sizes()))[:-1]
        return max(1, sum(1 for end in ends if end >= LEAD_MIN_SAMPLES))

    def should_stop(self, values: Sequence[Sequence[float]], remaining: int) -> bool:
        """Whether to stop after a round, given what each valid sample so far votes and the samples left."""
        if not values:
            return False
        if self.rule == "exact":
            return exact_stop(vote_sum(values, len(values[0])), remaining, self.score_range)
        if self.rule == "lead":
            return lead_stop(values, remaining, self.confidence, self.looks(), self.score_range)
        return statistical_stop(values, self.tolerance, self.confidence)
