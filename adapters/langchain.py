"""LangChain / LangSmith glue: the GRM as an evaluator.

- ``create_grm_evaluator`` / ``create_async_grm_evaluator``: plain functions in the openevals / ``langsmith.evaluate``
  convention, ``(*, inputs=None, outputs, reference_outputs=None, **kwargs) -> {"key", "score", "comment",
  "metadata"}``, with ``score`` in 0..1 (the mean valid 1-10 score mapped to 0..1), the principles and critique as
  the comment, and votes, k and samples in the metadata.
- ``create_pairwise_grm_evaluator`` (and its async twin): two outputs to one input, judged together in one prompt
  (shuffled per sample): which is better, by how much, with the critique. Also usable as a LangSmith comparative
  evaluator ``(runs, example)``.
- ``GRMRunEvaluator``: a ``langsmith.evaluation.RunEvaluator`` (sync and async) for LangSmith's evaluate machinery and
  langchain-core's evaluator callback handler.
- ``GRMStringEvaluator`` / ``GRMPairwiseStringEvaluator`` (extra ``classic``: ``langchain-classic``): the classic
  ``StringEvaluator`` and ``PairwiseStringEvaluator`` interfaces.

Inputs and outputs may be strings, OpenAI-style message dicts or lists of them, LangChain ``BaseMessage`` objects
(or lists), or dicts with the usual keys (``input``, ``question``, ``prompt``, ``query``, ``output``, ``answer``,
``response``, ``messages``, ...); anything else is a ``TypeError`` naming what was received.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

from grm_plugin._sync import run_sync
from grm_plugin.grm import GRMReward
from grm_plugin.reward import RewardFunction
from grm_plugin.types import ScoreRequest, ScoreResult
from grm_plugin.voting import unit_score

__all__ = ["GRMPairwiseStringEvaluator", "GRMRunEvaluator", "GRMStringEvaluator", "create_async_grm_evaluator",
           "create_async_pairwise_grm_evaluator", "create_grm_evaluator", "create_pairwise_grm_evaluator",
           "to_prompt", "to_response"]

INPUT_KEYS = ("messages", "input", "inputs", "question", "prompt", "query", "text")
OUTPUT_KEYS = ("messages", "output", "outputs", "answer", "response", "generation", "text", "content", "result")
REFERENCE_KEYS = ("reference", "answer", "output", "expected", "ground_truth", "label", "outputs", "text")
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function",
          "developer": "developer", "user": "user", "assistant": "assistant", "chat": "user"}


# --- normalising LangChain / LangSmith values ------------------------------------------------------------------------


def _message(value: Any, what: str) -> dict[str, Any] | None:
    """An OpenAI-style message dict from a dict or a LangChain BaseMessage; None when ``value`` is neither."""
    if isinstance(value, dict) and "role" in value and ("content" in value or "tool_calls" in value):
        return dict(value)
    if isinstance(value, dict) and "type" in value and "content" in value and value["type"] in _ROLES:
        return {"role": _ROLES[value["type"]], "content": value["content"]}
    try:
        from langchain_core.messages import BaseMessage, convert_to_openai_messages
    except ImportError:  # pragma: no cover - langchain-core is in the langchain extra
        return None
    if isinstance(value, BaseMessage):
        return convert_to_openai_messages(value)
    return None


def _messages(value: Any, what: str) -> list[dict[str, Any]] | None:
    if isinstance(value, (list, tuple)) and value:
        converted = [_message(item, what) for item in value]
        if all(m is not None for m in converted):
            return converted  # type: ignore[return-value]
    single = _message(value, what)
    return [single] if single is not None else None


def _unwrap(value: Any, keys: Sequence[str], what: str) -> Any:
    """The text or messages inside ``value``: strings and messages as they are, dicts by their usual keys."""
    if isinstance(value, str):
        return value
    messages = _messages(value, what)
    if messages is not None:
        return messages
    if isinstance(value, dict):
        for key in keys:
            if key in value and value[key] not in (None, ""):
                return _unwrap(value[key], keys, what)
        if len(value) == 1:
            return _unwrap(next(iter(value.values())), keys, what)
        raise TypeError(f"{what}: a dict without any of the keys {list(keys)} (got keys {sorted(value)}); pass a "
                        "string, chat messages, or a dict with one of those keys")
    raise TypeError(f"{what}: expected a string, chat messages (dicts or LangChain messages) or a dict with one of "
                    f"the keys {list(keys)}, got {type(value).__name__}")


def to_prompt(inputs: Any) -> Any:
    """The judge's prompt (a string or chat messages) from an evaluator's ``inputs``."""
    value = _unwrap(inputs, INPUT_KEYS, "inputs")
    if isinstance(value, list) and not any(m.get("role") == "user" for m in value):
        raise TypeError("inputs: chat messages without a user message")
    return value


def to_response(outputs: Any, what: str = "outputs") -> Any:
    """The judged response (a string or assistant/tool messages) from an evaluator's ``outputs``: for a full
    conversation, the messages after its last user turn."""
    value = _unwrap(outputs, OUTPUT_KEYS, what)
    if isinstance(value, list):
        last_user = max((i for i, m in enumerate(value) if m.get("role") in ("user", "system", "developer")),
                        default=-1)
        value = value[last_user + 1:]
        if not value:
            raise TypeError(f"{what}: chat messages with no assistant message after the last user message")
    return value


def to_reference(reference_outputs: Any) -> Optional[str]:
    if reference_outputs in (None, "", {}):
        return None
    value = _unwrap(reference_outputs, REFERENCE_KEYS, "reference_outputs")
    if isinstance(value, list):
        return "\n".join(str(m.get("content") or "") for m in value)
    return str(value)


# --- scoring ---------------------------------------------------------------------------------------------------------


def _reward(reward: RewardFunction | None, grm_kwargs: dict[str, Any]) -> RewardFunction:
    if reward is None:
        return GRMReward(**grm_kwargs)
    if grm_kwargs:
        raise TypeError(f"pass either a reward or GRMReward keyword arguments, not both (got {sorted(grm_kwargs)})")
    return reward


def _comment(result: ScoreResult, labels: Sequence[str] | None = None) -> str:
    judgement = next((j for j in result.judgements if j.valid), None)
    if judgement is None:
        errors = [j.error for j in result.judgements if j.error]
        return "No valid judgement" + (f": {errors[0]}" if errors else "")
    shown = ""
    if labels and judgement.order:
        shown = "Shown as: " + ", ".join(f"Response {i + 1} = {labels[j]}" for i, j in enumerate(judgement.order))
        shown += "\n\n"
    return f"{shown}Principles:\n{judgement.principles.strip()}\n\nCritique:\n{judgement.critique.strip()}"


def _metadata(result: ScoreResult, reward: RewardFunction) -> dict[str, Any]:
    return {"votes": result.votes, "rewards": result.rewards, "mean_scores": result.mean_scores,
            "k": getattr(getattr(reward, "config", None), "k", None), "samples": result.samples,
            "valid_samples": result.valid_samples, "scores_per_sample": [j.scores for j in result.judgements
                                                                          if j.valid],
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "cached": result.cached}


def _single(result: ScoreResult, reward: RewardFunction, key: str) -> dict[str, Any]:
    means = result.mean_scores
    score = None if means is None else unit_score(means[0], reward.score_range)
    return {"key": key, "score": score, "comment": _comment(result), "metadata": _metadata(result, reward)}


def _pair(result: ScoreResult, reward: RewardFunction, key: str) -> dict[str, Any]:
    means = result.mean_scores
    if means is None:
        preferred, score, margin = None, None, None
    else:
        margin = (unit_score(means[0], reward.score_range, clamp=False)
                  - unit_score(means[1], reward.score_range, clamp=False))
        preferred = "A" if margin > 0 else "B" if margin < 0 else None
        score = 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5
    metadata = _metadata(result, reward) | {"preferred": preferred, "margin": margin}
    return {"key": key, "score": score, "value": preferred, "comment": _comment(result, ["A", "B"]),
            "metadata": metadata}


def _request(inputs: Any, responses: list[Any], reference_outputs: Any) -> ScoreRequest:
    if inputs in (None, "", {}):
        raise TypeError("inputs: the GRM judges a response to an input; got none")
    return ScoreRequest(prompt=to_prompt(inputs), responses=responses, reference=to_reference(reference_outputs))


def _named(function: Callable[..., Any], key: str, judge: RewardFunction) -> Callable[..., Any]:
    function.__name__ = key  # LangSmith and openevals name the feedback after the function
    function.reward = judge  # type: ignore[attr-defined]
    return function


def create_async_grm_evaluator(reward: RewardFunction | None = None, *, key: str = "grm_score",
                               **grm_kwargs: Any) -> Callable[..., Any]:
    """The async twin of ``create_grm_evaluator`` (for ``langsmith.aevaluate``)."""
    judge = _reward(reward, grm_kwargs)

    async def evaluator(*, inputs: Any = None, outputs: Any, reference_outputs: Any = None, **kwargs: Any) -> dict:
        request = _request(inputs, [to_response(outputs)], reference_outputs)
        [result] = await judge.ascore([request])
        return _single(result, judge, key)

    return _named(evaluator, key, judge)


def create_grm_evaluator(reward: RewardFunction | None = None, *, key: str = "grm_score",
                         **grm_kwargs: Any) -> Callable[..., dict[str, Any]]:
    """An openevals/LangSmith evaluator function judging ``outputs`` as an answer to ``inputs`` (``reward`` or
    ``GRMReward(**grm_kwargs)``; the default is the embedded smoke-test judge)."""
    aevaluator = create_async_grm_evaluator(reward, key=key, **grm_kwargs)

    def evaluator(*, inputs: Any = None, outputs: Any, reference_outputs: Any = None, **kwargs: Any) -> dict:
        return run_sync(aevaluator(inputs=inputs, outputs=outputs, reference_outputs=reference_outputs))

    return _named(evaluator, key, aevaluator.reward)


def _pair_outputs(outputs: Any, outputs_b: Any) -> list[Any]:
    if outputs_b is not None:
        return [to_response(outputs, "outputs"), to_response(outputs_b, "outputs_b")]
    if isinstance(outputs, (list, tuple)) and len(outputs) == 2 and _messages(outputs, "outputs") is None:
        return [to_response(outputs[0], "outputs[0]"), to_response(outputs[1], "outputs[1]")]
    raise TypeError("outputs: a pairwise evaluator needs two outputs: outputs=[a, b], or outputs=a and outputs_b=b")


def create_async_pairwise_grm_evaluator(reward: RewardFunction | None = None, *, key: str = "grm_preference",
                                        **grm_kwargs: Any) -> Callable[..., Any]:
    """The async twin of ``create_pairwise_grm_evaluator`` (keyword form)."""
    judge = _reward(reward, grm_kwargs)

    async def evaluator(*, inputs: Any = None, outputs: Any = None, outputs_b: Any = None,
                        reference_outputs: Any = None, **kwargs: Any) -> dict:
        request = _request(inputs, _pair_outputs(outputs, outputs_b), reference_outputs)
        [result] = await judge.ascore([request])
        return _pair(result, judge, key)

    return _named(evaluator, key, judge)


def create_pairwise_grm_evaluator(reward: RewardFunction | None = None, *, key: str = "grm_preference",
                                  **grm_kwargs: Any) -> Callable[..., dict[str, Any]]:
    """A pairwise evaluator: ``(*, inputs, outputs=[a, b] (or outputs=a, outputs_b=b), reference_outputs=None)`` ->
    ``{"key", "score": 1 (A better) | 0 (B better) | 0.5 (tie), "value": "A"|"B"|None, "comment", "metadata":
    {"margin": (mean A - mean B) / score span, ...}}``. Called as ``(runs, example)`` it is a LangSmith comparative
    evaluator returning ``{"key", "scores": {run_id: 1|0|0.5}}``."""
    aevaluator = create_async_pairwise_grm_evaluator(reward, key=key, **grm_kwargs)

    def evaluator(runs: Any = None, example: Any = None, *, inputs: Any = None, outputs: Any = None,
                  outputs_b: Any = None, reference_outputs: Any = None, **kwargs: Any) -> dict:
        if runs is None:
            return run_sync(aevaluator(inputs=inputs, outputs=outputs, outputs_b=outputs_b,
                                       reference_outputs=reference_outputs))
        if len(runs) != 2:  # langsmith.evaluate_comparative
            raise TypeError(f"runs: a pairwise evaluator compares two runs, got {len(runs)}")
        verdict = run_sync(aevaluator(inputs=example.inputs if example is not None else runs[0].inputs,
                                      outputs=runs[0].outputs, outputs_b=runs[1].outputs,
                                      reference_outputs=example.outputs if example is not None else None))
        a, b = verdict["score"], None if verdict["score"] is None else 1.0 - verdict["score"]
        return {"key": key, "scores": {str(runs[0].id): a, str(runs[1].id): b}, "comment": verdict["comment"]}

    return _named(evaluator, key, aevaluator.reward)


# --- LangSmith RunEvaluator -----------------------------------------------------------------------------------------

try:
    from langsmith.evaluation import EvaluationResult, RunEvaluator
except ImportError:  # pragma: no cover - langsmith is in the langchain extra
    RunEvaluator = object  # type: ignore[assignment,misc]
    EvaluationResult = None  # type: ignore[assignment]


class GRMRunEvaluator(RunEvaluator):  # type: ignore[misc,valid-type]
    """A LangSmith ``RunEvaluator``: judges ``run.outputs`` as an answer to ``run.inputs`` (or the example's inputs),
    with ``example.outputs`` as the reference answer.

    Args:
        reward: the judge (default ``GRMReward(**grm_kwargs)``).
        key: the feedback key.
    """

    def __init__(self, reward: RewardFunction | None = None, *, key: str = "grm_score", **grm_kwargs: Any) -> None:
        if EvaluationResult is None:  # pragma: no cover
            raise ImportError("GRMRunEvaluator needs langsmith: pip install 'grm-plugin[langchain]'")
        self.reward = _reward(reward, grm_kwargs)
        self.key = key

    def _request(self, run: Any, example: Any) -> ScoreRequest:
        inputs = example.inputs if example is not None and example.inputs else run.inputs
        if run.outputs is None:
            raise TypeError(f"run {run.id}: has no outputs to judge (error: {run.error!r})")
        return _request(inputs, [to_response(run.outputs, "run.outputs")],
                        example.outputs if example is not None else None)

    def _result(self, result: ScoreResult, run: Any) -> Any:
        verdict = _single(result, self.reward, self.key)
        return EvaluationResult(key=self.key, score=verdict["score"], comment=verdict["comment"],
                                metadata=verdict["metadata"], source_run_id=None, target_run_id=run.id)

    def evaluate_run(self, run: Any, example: Any = None, evaluator_run_id: Any = None) -> Any:
        [result] = run_sync(self.reward.ascore([self._request(run, example)]))
        return self._result(result, run)

    async def aevaluate_run(self, run: Any, example: Any = None, evaluator_run_id: Any = None) -> Any:
        [result] = await self.reward.ascore([self._request(run, example)])
        return self._result(result, run)


# --- langchain-classic string evaluators (extra "classic") -----------------------------------------------------------


def _classic() -> Any:
    try:
        from langchain_classic.evaluation import schema
    except ImportError as exc:
        raise ImportError("GRMStringEvaluator and GRMPairwiseStringEvaluator need langchain-classic: "
                          f"pip install 'grm-plugin[classic]' ({exc})") from exc
    return schema


@functools.lru_cache(maxsize=None)
def _classic_classes() -> tuple[type, type]:
    schema = _classic()

    class _Common:
        """What both classic evaluators share: the reward, the key (``evaluation_name``), input required."""

        requires_input = True
        requires_reference = False
        default_key = "grm_score"

        def __init__(self, reward: RewardFunction | None = None, *, key: str | None = None, **grm_kwargs: Any):
            self.reward = _reward(reward, grm_kwargs)
            self.key = key or self.default_key

        @property
        def evaluation_name(self) -> str:
            return self.key

    class _StringEvaluator(_Common, schema.StringEvaluator):
        """langchain-classic ``StringEvaluator``: ``evaluate_strings(prediction=, input=, reference=)`` ->
        ``{"score": 0..1, "value": mean 1-10 score, "reasoning": principles and critique}``."""

        def _verdict(self, result: ScoreResult) -> dict:
            verdict = _single(result, self.reward, self.key)
            means = verdict["metadata"]["mean_scores"]
            return {"score": verdict["score"], "value": None if means is None else means[0],
                    "reasoning": verdict["comment"], "metadata": verdict["metadata"]}

        def _evaluate_strings(self, *, prediction: Any, reference: Any = None, input: Any = None,
                              **kwargs: Any) -> dict:
            return run_sync(self._aevaluate_strings(prediction=prediction, reference=reference, input=input))

        async def _aevaluate_strings(self, *, prediction: Any, reference: Any = None, input: Any = None,
                                     **kwargs: Any) -> dict:
            [result] = await self.reward.ascore([_request(input, [to_response(prediction, "prediction")],
                                                          reference)])
            return self._verdict(result)

    class _PairwiseStringEvaluator(_Common, schema.PairwiseStringEvaluator):
        """langchain-classic ``PairwiseStringEvaluator``: ``evaluate_string_pairs(prediction=, prediction_b=,
        input=, reference=)`` -> ``{"value": "A"|"B"|None, "score": 1|0|0.5, "reasoning"}``."""

        default_key = "grm_preference"

        def _verdict(self, result: ScoreResult) -> dict:
            verdict = _pair(result, self.reward, self.key)
            return {"value": verdict["value"], "score": verdict["score"], "reasoning": verdict["comment"],
                    "metadata": verdict["metadata"]}

        def _evaluate_string_pairs(self, *, prediction: str, prediction_b: str, reference: Optional[str] = None,
                                   input: Optional[str] = None, **kwargs: Any) -> dict:
            return run_sync(self._aevaluate_string_pairs(prediction=prediction, prediction_b=prediction_b,
                                                         reference=reference, input=input))

        async def _aevaluate_string_pairs(self, *, prediction: str, prediction_b: str,
                                          reference: Optional[str] = None, input: Optional[str] = None,
                                          **kwargs: Any) -> dict:
            request = _request(input, [to_response(prediction, "prediction"),
                                       to_response(prediction_b, "prediction_b")], reference)
            [result] = await self.reward.ascore([request])
            return self._verdict(result)

    _StringEvaluator.__name__ = _StringEvaluator.__qualname__ = "GRMStringEvaluator"
    _PairwiseStringEvaluator.__name__ = _PairwiseStringEvaluator.__qualname__ = "GRMPairwiseStringEvaluator"
    return _StringEvaluator, _PairwiseStringEvaluator


def GRMStringEvaluator(reward: RewardFunction | None = None, **kwargs: Any) -> Any:  # noqa: N802 - a class to users
    """A langchain-classic ``StringEvaluator`` backed by the GRM (extra ``classic``)."""
    return _classic_classes()[0](reward, **kwargs)


def GRMPairwiseStringEvaluator(reward: RewardFunction | None = None, **kwargs: Any) -> Any:  # noqa: N802
    """A langchain-classic ``PairwiseStringEvaluator`` backed by the GRM (extra ``classic``)."""
    return _classic_classes()[1](reward, **kwargs)
