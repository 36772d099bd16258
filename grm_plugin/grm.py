"""GRMReward: the principle-critique generative reward model with inference-time voting (SPCT, DeepSeek-GRM).

For each request: draw k presentation orders (a seeded shuffle per sample), build one judge prompt per distinct
order, ask the engine for all samples of a prompt in one request (n = how many samples share it), parse every
completion, undo its shuffle, and sum-vote the valid ones into one reward per response.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import ValidationError

from .backends import Backend, Completion, SamplingParams, ScoresConstraint, make_backend
from .cache import LRUCache
from .config import GRMConfig, format_validation_error
from .errors import ConfigError, InvalidRequestError, NoValidJudgementError, ParseError
from .parsing import parse_judgement
from .reward import RewardFunction
from .templates import SCORE_LINES, Template, build_judge_messages, get_template
from .types import Judgement, ScoreRequest, ScoreResult
from .voting import draw_orders, pick_best, scale_rewards, unshuffle, vote_sum


def coerce_requests(requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreRequest]:
    """Validate requests given as ScoreRequest objects or plain dicts; errors name the index and the field."""
    if isinstance(requests, (ScoreRequest, dict)):
        raise InvalidRequestError("expected a list of requests, got a single "
                                  f"{type(requests).__name__}; wrap it in a list")
    out = []
    for i, request in enumerate(requests):
        if isinstance(request, ScoreRequest):
            out.append(request)
            continue
        try:
            out.append(ScoreRequest.model_validate(request))
        except ValidationError as exc:
            raise InvalidRequestError(format_validation_error(exc, f"request {i}")) from None
    return out


@dataclass(frozen=True)
class EnginePrompt:
    """One engine request of a judged request: the responses shown in ``order``, ``n`` samples of ``messages``."""

    order: list[int]
    n: int
    messages: list[dict[str, str]]


@dataclass
class _Inflight:
    """A request being judged, shared by every caller that asked for it; cancelled when no caller waits."""

    task: asyncio.Future[ScoreResult]
    waiters: int = 0


@dataclass
class _LoopState:
    """What must live in one event loop: the engine client and the requests being judged right now."""

    backend: Backend
    inflight: dict[str, _Inflight] = field(default_factory=dict)


class GRMReward(RewardFunction):
    """The generative reward model: principles, critiques and 1-10 scores, voted over k samples.

    Args:
        config: a GRMConfig; when omitted it is loaded from ``config_file``, ``GRM_*`` environment variables and
            the keyword arguments (``k=8``, ``model=...``, ``base_url=...``; every GRMConfig field).
        backend: an engine object to use instead of the one the config names (anything with ``generate``).
        chat_model: a LangChain chat model (ChatOpenAI, ChatOllama, ...) as the judge's engine: the same as
            ``backend=LangChainBackend(chat_model)`` with ``engine="langchain"`` (needs ``grm-plugin[langchain]``).

    Example:
        >>> reward = GRMReward(model="BBQGOD/DeepSeek-GRM-27B", base_url="http://localhost:8000/v1", k=8)
        >>> reward.config.k
        8
    """

    def __init__(
        self,
        config: GRMConfig | None = None,
        *,
        backend: Backend | None = None,
        chat_model: Any = None,
        meta_rm: Any = None,
        config_file: str | None = None,
        **overrides: Any,
    ) -> None:
        if chat_model is not None:
            if backend is not None:
                raise ConfigError("pass either backend= or chat_model=, not both")
            overrides["engine"] = "langchain"
        if config is None:
            config = GRMConfig.load(config_file, **overrides)
        elif overrides:
            config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
        if chat_model is not None:
            from .backends.langchain import LangChainBackend

            backend = LangChainBackend.from_config(chat_model, config)
        if backend is None and chat_model is None:
            config = config.with_embedded_defaults()
        self.config = config
        self.template: Template = get_template(config.template)
        if backend is None:
            config.resolved_engine()  # fail now, naming what is missing, rather than on the first call
            if config.uses_embedded_judge:
                from .embedded import locate_embedded_gguf

                locate_embedded_gguf()  # EmbeddedModelMissingError naming the install command, not on first use
        self._backend_override = backend
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self.cache: LRUCache[ScoreResult] = LRUCache(config.cache_size)
        if meta_rm is not None and not callable(getattr(meta_rm, "arate", None)):
            raise ConfigError(f"meta_rm must be a MetaRM (an object with async arate(request, judgements)), got "
                              f"{type(meta_rm).__name__}")
        if meta_rm is not None and config.k_meta is not None and config.k_meta > config.k:
            raise ConfigError(f"k_meta: {config.k_meta} judgements cannot be kept out of k={config.k}")
        self.meta_rm = meta_rm
        self._config_key = config.judge_fingerprint() + (f"|meta:{getattr(meta_rm, 'name', repr(meta_rm))}"
                                                         if meta_rm is not None else "")
        self.__name__ = "grm_reward"

    # -- RewardFunction's batching knobs come from the config ---------------------------------------------------
    @property
    def mode(self) -> str:  # type: ignore[override]
        return self.config.mode

    @property
    def max_responses_per_call(self) -> int:  # type: ignore[override]
        return self.config.max_responses_per_call

    @property
    def reference_column(self) -> str:  # type: ignore[override]
        return self.config.reference_column

    @property
    def principles_column(self) -> str:  # type: ignore[override]
        return self.config.principles_column

    @property
    def on_engine_error(self) -> str:  # type: ignore[override]
        return self.config.on_engine_error

    @property
    def score_range(self) -> tuple[int, int]:  # type: ignore[override]
        return tuple(self.config.score_range)  # type: ignore[return-value]

    def with_settings(self, **changes: Any) -> "GRMReward":
        """A GRMReward with some settings changed (e.g. ``k``, ``shuffle``) and the same engine and meta RM."""
        return GRMReward(self.config.replace(**changes), backend=self._backend_override, meta_rm=self.meta_rm)

    # -- pickling by configuration (clients are made lazily in the process and loop that uses them) -------------
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "backend": self._backend_override, "meta_rm": self.meta_rm}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], backend=state["backend"], meta_rm=state.get("meta_rm"))  # type: ignore[misc]

    def __repr__(self) -> str:
        c = self.config
        return f"GRMReward(model={c.model!r}, base_url={c.base_url!r}, k={c.k}, mode={c.mode!r})"

    # -- engine per event loop ---------------------------------------------------------------------------------
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = _LoopState(self._backend_override or make_backend(self.config))
            self._states[loop] = state
        return state

    async def aclose(self) -> None:
        """Cancel what is still being judged in the current event loop and close its engine client."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is None:
            return
        tasks = [entry.task for entry in state.inflight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._backend_override is None:
            await state.backend.aclose()

    def close(self) -> None:
        """Close the engine client used by synchronous calls."""
        from ._sync import run_sync

        run_sync(self.aclose())

    # -- scoring -----------------------------------------------------------------------------------------------
    def _key(self, fingerprint: str) -> str:
        """The cache key: the request's content and every setting that changes what the judge returns."""
        return hashlib.blake2b(f"{self._config_key}|{fingerprint}".encode(), digest_size=16).hexdigest()

    async def ascore(self, requests: Sequence[ScoreRequest | dict[str, Any]]) -> list[ScoreResult]:
        """Judge every request (k samples each, voted); identical requests are judged once.

        Raises:
            InvalidRequestError: a request is malformed (names the index and field).
            BackendError: the engine failed after its retries.
            NoValidJudgementError: no sample parsed and ``on_no_valid='raise'``.
        """
        reqs = coerce_requests(requests)
        state = self._state()
        pending: list[_Inflight | ScoreResult] = []
        for request in reqs:
            fingerprint = request.fingerprint()
            key = self._key(fingerprint)
            cached = self.cache.get(key)
            if cached is not None:
                pending.append(cached.model_copy(update={"cached": True, "prompt_tokens": 0,
                                                         "completion_tokens": 0, "metadata": request.metadata}))
                continue
            entry = state.inflight.get(key)
            if entry is None:
                entry = _Inflight(asyncio.ensure_future(self._judge(request, fingerprint, key, state.backend)))
                state.inflight[key] = entry
                entry.task.add_done_callback(lambda _t, key=key: state.inflight.pop(key, None))
            entry.waiters += 1
            pending.append(entry)
        shared = [p for p in pending if isinstance(p, _Inflight)]
        try:
            outcomes = await asyncio.gather(*(asyncio.shield(e.task) for e in shared), return_exceptions=True)
        finally:  # a cancelled caller stops the judging nobody else is waiting for
            for entry in shared:
                entry.waiters -= 1
                if entry.waiters == 0 and not entry.task.done():
                    entry.task.cancel()
        results: list[ScoreResult] = []
        outcome_iter = iter(outcomes)
        for request, item in zip(reqs, pending):
            outcome = next(outcome_iter) if isinstance(item, _Inflight) else item
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome.metadata != request.metadata:
                outcome = outcome.model_copy(update={"metadata": request.metadata})
            results.append(outcome)
        return results

    def _sampling(self, n_responses: int) -> SamplingParams:
        c = self.config
        constraint = None
        if c.structured_output != "off":
            prefix, separator, suffix = SCORE_LINES[self.template.score_format]
            constraint = ScoresConstraint(n_responses, c.score_range[0], c.score_range[1], prefix, separator, suffix)
        return SamplingParams(temperature=c.sampling_temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                              constraint=constraint)

    def plan(self, request: ScoreRequest) -> list[EnginePrompt]:
        """The engine requests judging ``request`` costs: one judge prompt per distinct presentation order, with n =
        the number of the k samples that drew that order. Deterministic for a given ``seed`` and request."""
        return self._plan(request, self._rng(request.fingerprint()))

    def _rng(self, fingerprint: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{fingerprint}")  # same request, same shuffles, on any server

    def _plan(self, request: ScoreRequest, rng: random.Random) -> list[EnginePrompt]:
        c = self.config
        shown = Counter(tuple(order) for order in draw_orders(request.n_responses, c.k, rng, shuffle=c.shuffle))
        return [EnginePrompt(list(order), count,
                             build_judge_messages(request, order, self.template, c.score_range))
                for order, count in shown.items()]

    async def _judge(self, request: ScoreRequest, fingerprint: str, key: str, backend: Backend) -> ScoreResult:
        rng = self._rng(fingerprint)
        prompts = self._plan(request, rng)
        sampling = self._sampling(request.n_responses)
        batches = await asyncio.gather(*(backend.generate([p.messages], p.n, sampling) for p in prompts))
        judgements = [
            self._read(completion, p.order, request.n_responses)
            for p, batch in zip(prompts, batches)
            for completion in batch[0]
        ]
        used = None
        if self.meta_rm is not None:
            judgements, used = await self._meta_guided(request, judgements)
        result = self._aggregate(request, judgements, rng, used)
        if result.valid_samples:
            self.cache.put(key, result)
        return result

    def _read(self, completion: Completion, order: list[int], n_responses: int) -> Judgement:
        common = dict(text=completion.text, order=order, finish_reason=completion.finish_reason,
                      prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
        try:
            parsed = parse_judgement(completion.text, n_responses, self.config.score_range)
        except ParseError as exc:
            return Judgement(valid=False, error=str(exc), **common)
        return Judgement(valid=True, principles=parsed.principles, critique=parsed.critique,
                         scores=unshuffle(parsed.scores, order), **common)

    async def _meta_guided(self, request: ScoreRequest,
                           judgements: list[Judgement]) -> tuple[list[Judgement], list[int]]:
        """Meta RM guided voting: rate the valid judgements, keep the top k_meta (default k/2) for the vote; the meta
        scores are kept on every rated judgement."""
        from .meta_rm import keep_top

        valid = [i for i, j in enumerate(judgements) if j.valid and j.scores is not None]
        if not valid:
            return judgements, []
        rated = await self.meta_rm.arate(request, [judgements[i] for i in valid])
        if len(rated) != len(valid):
            raise ValueError(f"meta RM {getattr(self.meta_rm, 'name', self.meta_rm)!r} returned {len(rated)} scores "
                             f"for {len(valid)} judgements")
        scores = [float("-inf")] * len(judgements)
        updated = list(judgements)
        for i, score in zip(valid, rated):
            scores[i] = float(score)
            updated[i] = judgements[i].model_copy(update={"meta_score": float(score)})
        k_meta = self.config.k_meta or -(-self.config.k // 2)
        return updated, keep_top(updated, scores, k_meta)

    def _aggregate(self, request: ScoreRequest, judgements: list[Judgement], rng: random.Random,
                   used: list[int] | None = None) -> ScoreResult:
        c = self.config
        n = request.n_responses
        chosen = range(len(judgements)) if used is None else used
        valid = [judgements[i].scores for i in chosen if judgements[i].valid and judgements[i].scores is not None]
        counters = dict(
            judgements=judgements,
            samples=len(judgements),
            valid_samples=sum(1 for j in judgements if j.valid and j.scores is not None),
            prompt_tokens=sum(j.prompt_tokens for j in judgements),
            completion_tokens=sum(j.completion_tokens for j in judgements),
            metadata=request.metadata,
            meta_kept=None if used is None else list(used),
        )
        if valid:
            votes = vote_sum(valid, n)
            rewards: list[float | None] = list(scale_rewards(votes, len(valid), c.reward_scale, c.score_range))
            return ScoreResult(rewards=rewards, votes=votes, best=pick_best(votes, rng), voted_samples=len(valid),
                               **counters)
        if c.on_no_valid == "raise":
            errors = "; ".join(sorted({j.error or "" for j in judgements}))[:500]
            raise NoValidJudgementError(f"none of the {len(judgements)} sampled judgement(s) could be parsed "
                                        f"({errors}); set on_no_valid='none' or a number to get a reward instead")
        fallback = None if c.on_no_valid == "none" else float(c.on_no_valid)
        return ScoreResult(rewards=[fallback] * n, **counters)
