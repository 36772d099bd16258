"""Live judge health: per judged batch, the figures that show a judge being fooled (position bias, a reward that
follows response length, ties, disagreeing samples), and a one-time warning when one crosses its threshold.
Framework-free: pure functions over ScoreRequests and their ScoreResults."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Sequence

from .types import Judgement, Response, ScoreRequest, ScoreResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeHealth:
    """How a judge behaved on one batch. Every figure is 0.0 when it is undefined (too little to measure: see the
    counts), never NaN.

    Attributes:
        slot_bias: position bias, in score points: over the valid samples of requests with at least 2 responses, the
            mean of (the score of the response shown in display slot 1 minus the mean score of the responses shown
            in the other slots of that sample). With shuffled orders each response sits in slot 1 as often as the
            others, so the responses' quality averages out and what remains is the judge favouring slot 1
            (negative: favouring the later slots).
        length_corr: the Pearson correlation (-1..1) between a response's length in characters and its reward, both
            centred within their request (minus the request's mean), over requests with at least 2 rewarded
            responses: does a longer response of the same prompt earn more?
        ties: the share (0..1) of pairs of rewarded responses of one request whose final rewards are equal, over
            requests with at least 2 rewarded responses (a judge that cannot tell responses apart gives no signal).
        parse_valid: valid first-attempt samples / samples drawn (0..1).
        vote_spread: in score points, the mean over responses of the population standard deviation of a
            response's scores across its valid samples (responses with fewer than 2 valid samples are skipped):
            how much the judge's samples disagree.
        samples / valid_samples: first-attempt samples drawn and those that parsed, over the judged requests.
        slot_samples: valid samples that entered ``slot_bias``.
        responses: responses that entered ``length_corr``.
        pairs: pairs of responses that entered ``ties``.
        spread_responses: responses (with at least 2 valid samples) that entered ``vote_spread``.
    """

    slot_bias: float = 0.0
    length_corr: float = 0.0
    ties: float = 0.0
    parse_valid: float = 0.0
    vote_spread: float = 0.0
    samples: int = 0
    valid_samples: int = 0
    slot_samples: int = 0
    responses: int = 0
    pairs: int = 0
    spread_responses: int = 0

    def as_metrics(self) -> dict[str, float]:
        """The figures a trainer logs per batch (the parse-valid rate is logged on its own elsewhere)."""
        return {"slot_bias": self.slot_bias, "length_corr": self.length_corr, "ties_rate": self.ties,
                "vote_spread": self.vote_spread}

    def measured(self) -> dict[str, float]:
        """``as_metrics`` without the figures this batch could not measure (those that are 0.0 for want of data)."""
        counts = {"slot_bias": self.slot_samples, "length_corr": self.responses, "ties_rate": self.pairs,
                  "vote_spread": self.spread_responses}
        return {name: value for name, value in self.as_metrics().items() if counts[name] > 0}


def response_length(response: Response) -> int:
    """A response's length in characters: a string's length, or the summed text (``Message.text``) of its messages
    (an agent turn: assistant turns and tool results, what the judge reads).

    Example:
        >>> from grm_plugin.types import Message
        >>> response_length("four"), response_length([Message(role="assistant", content="4"),
        ...                                           Message(role="tool", content="42")])
        (4, 3)
    """
    if isinstance(response, str):
        return len(response)
    return sum(len(message.text()) for message in response)


def _scored(judgement: Judgement, n: int) -> list[int] | None:
    """A valid sample's scores (one per response, in the original order), else None."""
    if not judgement.valid or judgement.scores is None or len(judgement.scores) != n:
        return None
    return judgement.scores


def slot_differences(request: ScoreRequest, result: ScoreResult) -> list[float]:
    """Per valid sample of a request with at least 2 responses: the score of the response shown in slot 1 minus the
    mean score of those shown in the other slots (score points). Samples without a readable order are skipped.

    Example:
        >>> from grm_plugin.types import Judgement
        >>> j = Judgement(text="", valid=True, scores=[9, 7, 7], order=[0, 2, 1])
        >>> slot_differences(ScoreRequest(prompt="q", responses=["a", "b", "c"]), ScoreResult(rewards=[0.0] * 3,
        ...                  judgements=[j]))
        [2.0]
    """
    n = request.n_responses
    if n < 2:
        return []
    out = []
    for judgement in result.judgements:
        scores = _scored(judgement, n)
        if scores is None or sorted(judgement.order) != list(range(n)):
            continue
        first = judgement.order[0]
        others = [scores[i] for i in range(n) if i != first]
        out.append(scores[first] - sum(others) / len(others))
    return out


def centred_lengths_and_rewards(request: ScoreRequest, result: ScoreResult) -> list[tuple[float, float]]:
    """``(length, reward)`` of each rewarded response, each minus its request's mean; empty with fewer than 2."""
    pairs = [(float(response_length(response)), reward)
             for response, reward in zip(request.responses, result.rewards) if reward is not None]
    if len(pairs) < 2:
        return []
    mean_length = sum(length for length, _ in pairs) / len(pairs)
    mean_reward = sum(reward for _, reward in pairs) / len(pairs)
    return [(length - mean_length, reward - mean_reward) for length, reward in pairs]


def pearson_centred(points: Sequence[tuple[float, float]]) -> float:
    """The correlation of already-centred ``(x, y)`` points: sum(xy) / sqrt(sum(x^2) sum(y^2)); 0.0 when either
    does not vary.

    Example:
        >>> pearson_centred([(-1.0, -2.0), (1.0, 2.0)]), pearson_centred([(-1.0, 0.0), (1.0, 0.0)])
        (1.0, 0.0)
    """
    sxy = sum(x * y for x, y in points)
    sxx = sum(x * x for x, _ in points)
    syy = sum(y * y for _, y in points)
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def tie_counts(result: ScoreResult) -> tuple[int, int]:
    """``(equal pairs, pairs)`` among a request's rewarded responses; (0, 0) with fewer than 2 of them."""
    rewards = [reward for reward in result.rewards if reward is not None]
    if len(rewards) < 2:
        return 0, 0
    pairs = [(a, b) for i, a in enumerate(rewards) for b in rewards[i + 1:]]
    return sum(a == b for a, b in pairs), len(pairs)


def score_spreads(request: ScoreRequest, result: ScoreResult) -> list[float]:
    """Per response with at least 2 valid samples: the population standard deviation of its scores (points)."""
    n = request.n_responses
    valid = [scores for scores in (_scored(j, n) for j in result.judgements) if scores is not None]
    if len(valid) < 2:
        return []
    spreads = []
    for i in range(n):
        values = [scores[i] for scores in valid]
        mean = sum(values) / len(values)
        spreads.append(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
    return spreads


def judge_health(requests: Sequence[ScoreRequest], results: Sequence[ScoreResult]) -> JudgeHealth:
    """The health figures of one judged batch: ``results[i]`` judged ``requests[i]``. Cached results count like the
    others; a request that failed (``result.error``) or has no judgements is skipped.

    Example:
        >>> judge_health([], [])
        JudgeHealth(slot_bias=0.0, length_corr=0.0, ties=0.0, parse_valid=0.0, vote_spread=0.0, samples=0, \
valid_samples=0, slot_samples=0, responses=0, pairs=0, spread_responses=0)
    """
    if len(requests) != len(results):
        raise ValueError(f"{len(requests)} requests but {len(results)} results")
    differences: list[float] = []
    centred: list[tuple[float, float]] = []
    spreads: list[float] = []
    ties = pairs = samples = valid_samples = 0
    for request, result in zip(requests, results):
        if result.error is not None or not result.judgements:
            continue
        samples += result.samples
        valid_samples += result.valid_samples
        differences.extend(slot_differences(request, result))
        centred.extend(centred_lengths_and_rewards(request, result))
        equal, counted = tie_counts(result)
        ties, pairs = ties + equal, pairs + counted
        spreads.extend(score_spreads(request, result))
    return JudgeHealth(
        slot_bias=sum(differences) / len(differences) if differences else 0.0,
        length_corr=pearson_centred(centred),
        ties=ties / pairs if pairs else 0.0,
        parse_valid=valid_samples / samples if samples else 0.0,
        vote_spread=sum(spreads) / len(spreads) if spreads else 0.0,
        samples=samples, valid_samples=valid_samples, slot_samples=len(differences), responses=len(centred),
        pairs=pairs, spread_responses=len(spreads),
    )


class HealthWatch:
    """Warns once per watch and figure when a batch's health shows a judge being fooled:

    - ``LENGTH_CORR_WARN = 0.5``: ``|length_corr|`` at or above it, measured over at least ``MIN_RESPONSES = 16``
      responses. Better answers are often a little longer, so a weak positive correlation is expected; at 0.5 the
      length explains a quarter of the reward's variance within a prompt, and a policy can learn to pad (or, when
      negative, to cut its answers short).
    - ``SLOT_BIAS_WARN = 1.0`` score points (a tenth of the default 1..10 range): ``|slot_bias|`` at or above it,
      over at least ``MIN_SLOT_SAMPLES = 16`` valid samples. Shuffled orders turn it into noise in the votes;
      without shuffling it is a reward for whatever is shown first.

    Warnings go to the ``grm_plugin.health`` logger at WARNING level, each naming the figure, its value, the
    threshold and what it means. Thread-safe.
    """

    LENGTH_CORR_WARN = 0.5
    MIN_RESPONSES = 16
    SLOT_BIAS_WARN = 1.0
    MIN_SLOT_SAMPLES = 16

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, health: JudgeHealth, name: str = "grm") -> None:
        """Check one batch's health; log a warning for each figure over its threshold that was not warned yet."""
        for figure, message in self._alarms(health):
            with self._lock:
                if figure in self._warned:
                    continue
                self._warned.add(figure)
            logger.warning("%s: judge health: %s (warned once)", name, message)

    def _alarms(self, health: JudgeHealth) -> list[tuple[str, str]]:
        alarms = []
        r = health.length_corr
        if health.responses >= self.MIN_RESPONSES and abs(r) >= self.LENGTH_CORR_WARN:
            meaning = ("the reward grows with response length: a policy can learn to pad" if r > 0 else
                       "the reward shrinks as responses grow longer: a policy can learn to cut its answers short")
            alarms.append(("length_corr", f"length_corr={r:.2f} over {health.responses} responses (threshold "
                                          f"|r| >= {self.LENGTH_CORR_WARN:g}): {meaning}"))
        bias = health.slot_bias
        if health.slot_samples >= self.MIN_SLOT_SAMPLES and abs(bias) >= self.SLOT_BIAS_WARN:
            favoured = "slot 1" if bias > 0 else "the later slots"
            alarms.append(("slot_bias", f"slot_bias={bias:+.2f} score points over {health.slot_samples} samples "
                                        f"(threshold |bias| >= {self.SLOT_BIAS_WARN:g}): the judge favours whatever "
                                        f"is shown in {favoured}, whatever its quality (position bias)"))
        return alarms


WATCH = HealthWatch()  # the process's watch: every judged batch's health is observed here, so warnings come once a run

__all__ = ["WATCH", "HealthWatch", "JudgeHealth", "judge_health", "pearson_centred", "response_length"]
