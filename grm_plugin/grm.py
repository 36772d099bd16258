"""GRMReward: the principle-critique generative reward model with inference-time voting (SPCT, DeepSeek-GRM).

For each request: draw k presentation orders (a seeded shuffle per sample, or balanced rotations), build one judge
prompt per distinct order, ask the engine for all samples of a prompt in one request (n = how many samples share it),
parse every completion, undo its shuffle, and sum-vote the valid ones into one reward per response. With adaptive k
the k_max orders are drawn in rounds (one request per distinct order per round) until a stopping rule holds; with
fixed principles (upfront or given) the judge writes only critiques; with expected scores each score is the
expectation under the judge's token probabilities.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import ValidationError

from .backends import Backend, Completion, SamplingParams, ScoresConstraint, make_backend
from .cache import LRUCache
from .config import GRMConfig
from .errors import ConfigError, format_validation_error, InvalidRequestError, NoValidJudgementError, ParseError
from .expected import expected_scores
from .parsing import parse_principles, parse_with_spans
from .principles import PrinciplesStore, WrittenPrinciples, principles_key
from .reward import RewardFunction
from .templates import SCORE_LINES, Template, build_judge_messages, build_principles_messages, get_template
from .types import Judgement, ScoreRequest, ScoreResult
from .voting import (LEAD_MIN_SAMPLES, draw_orders, exact_stop, lead_stop, pick_best, scale_rewards, slot_imbalance,
                     statistical_stop, unshuffle, vote_sum)

logger = logging.getLogger("grm_plugin.grm")


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
    principles: dict[str, asyncio.Future[WrittenPrinciples]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Fixed:
    """The principles every sample of a request is judged by: their text, where they came from, what writing them
    cost this request, whether they were reused, and their length in tokens (what each sample saves)."""

    text: str
    mode: str
    tokens_spent: tuple[int, int] = (0, 0)
    reused: bool = False
    tokens_per_sample: int = 0


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
        if meta_rm is not None and config.k_max is not None:
            raise ConfigError("k_max: adaptive k cannot be combined with a meta RM (meta-guided voting needs every "
                              "sample before it keeps the top k_meta); unset k_max or meta_rm")
        if config.principles != "joint" and self.template.critique_user is None:
            raise ConfigError(f"principles={config.principles!r} needs a template with a critique form "
                              f"('critique_user'); template {self.template.name!r} has none")
        self.meta_rm = meta_rm
        self.principles_store = PrinciplesStore(config.principles_cache_dir)
        self._principles_judge = {f: getattr(config, f) for f in ("engine", "model", "base_url", "gguf_file",
                                                                  "template", "max_tokens", "extra_body")}
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
        if self.config.principles == "given":
            for i, request in enumerate(reqs):
                if not (request.principles or "").strip():
                    raise InvalidRequestError(f"request {i}: principles: principles='given' needs every request's "
                                              f"principles (ScoreRequest.principles, or the "
                                              f"{self.config.principles_column!r} column)")
        state = self._state()
        pending: list[_Inflight | ScoreResult] = []
        for request in reqs:
            fingerprint = request.fingerprint()
            key = self._key(fingerprint)
            cached = self.cache.get(key)
            if cached is not None:
                pending.append(cached.model_copy(update={"cached": True, "prompt_tokens": 0, "completion_tokens": 0,
                                                         "principles_tokens": 0, "metadata": request.metadata}))
                continue
            entry = state.inflight.get(key)
            if entry is None:
                entry = _Inflight(asyncio.ensure_future(self._judge(request, fingerprint, key, state)))
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
                              constraint=constraint, logprobs=c.top_logprobs if c.expected_scores else 0)

    def plan(self, request: ScoreRequest) -> list[EnginePrompt]:
        """The engine requests judging ``request`` costs (with adaptive k: its first round): one judge prompt per
        distinct presentation order, with n = the number of samples that drew that order. Deterministic for a given
        ``seed`` and request; with principles='upfront' the principles are shown only once they are written."""
        return self._plan(request, self._rng(request.fingerprint()))

    def _rng(self, fingerprint: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{fingerprint}")  # same request, same shuffles, on any server

    def _plan(self, request: ScoreRequest, rng: random.Random) -> list[EnginePrompt]:
        fixed = self._known_principles(request)
        return self._engine_prompts(request, self._orders(request, rng)[:self.config.k],
                                    None if fixed is None else fixed.text)

    def _orders(self, request: ScoreRequest, rng: random.Random) -> list[list[int]]:
        """Every order the request may be shown in: k of them, or k_max with adaptive k (drawn in rounds)."""
        c = self.config
        return draw_orders(request.n_responses, c.k_max or c.k, rng, shuffle=c.shuffle,
                           balanced=c.ordering == "balanced")

    def _round_sizes(self) -> list[int]:
        """Samples per round: k, then round_size (default k) until k_max; one round of k without adaptive k."""
        c = self.config
        sizes = [c.k]
        step = c.round_size or c.k
        while c.k_max is not None and sum(sizes) < c.k_max:
            sizes.append(min(step, c.k_max - sum(sizes)))
        return sizes

    def _engine_prompts(self, request: ScoreRequest, orders: Sequence[list[int]],
                        fixed_principles: str | None) -> list[EnginePrompt]:
        c = self.config
        shown = Counter(tuple(order) for order in orders)
        return [EnginePrompt(list(order), count, build_judge_messages(request, order, self.template, c.score_range,
                                                                      fixed_principles))
                for order, count in shown.items()]

    async def _judge(self, request: ScoreRequest, fingerprint: str, key: str, state: _LoopState) -> ScoreResult:
        rng = self._rng(fingerprint)
        fixed = await self._fixed_principles(request, state)
        text = None if fixed is None else fixed.text
        orders = self._orders(request, rng)
        sampling = self._sampling(request.n_responses)
        judgements: list[Judgement] = []
        drawn = rounds = 0
        for size in self._round_sizes():
            prompts = self._engine_prompts(request, orders[drawn:drawn + size], text)
            batches = await asyncio.gather(*(state.backend.generate([p.messages], p.n, sampling) for p in prompts))
            judgements += [self._read(completion, p.order, request.n_responses, text)
                           for p, batch in zip(prompts, batches) for completion in batch[0]]
            drawn, rounds = drawn + size, rounds + 1
            if drawn < len(orders) and self._should_stop(judgements, len(orders) - drawn):
                break
        used = None
        if self.meta_rm is not None:
            judgements, used = await self._meta_guided(request, judgements)
        result = self._aggregate(request, judgements, rng, used)
        result = result.model_copy(update=self._scaling_counters(judgements, rounds, drawn < len(orders), fixed,
                                                                 request.n_responses))
        if result.valid_samples:
            self.cache.put(key, result)
        return result

    def _values(self, judgements: Sequence[Judgement]) -> list[list[float]]:
        """What each valid judgement votes: its expected scores where read (with expected_scores), else its scores."""
        use_expected = self.config.expected_scores
        return [list(j.expected_scores) if use_expected and j.expected_scores is not None else list(j.scores)
                for j in judgements if j.valid and j.scores is not None]

    def _should_stop(self, judgements: Sequence[Judgement], remaining: int) -> bool:
        c = self.config
        values = self._values(judgements)
        if not values:
            return False
        if c.stopping == "exact":
            return exact_stop(vote_sum(values, len(values[0])), remaining, c.score_range)
        if c.stopping == "lead":
            return lead_stop(values, remaining, c.stop_confidence, self._looks(), c.score_range)
        return statistical_stop(values, c.stop_tolerance, c.stop_confidence)

    def _looks(self) -> int:
        """How many times the lead rule may be asked in one draw: the rounds that end before k_max with at least
        LEAD_MIN_SAMPLES samples."""
        ends = list(itertools.accumulate(self._round_sizes()))[:-1]
        return max(1, sum(1 for end in ends if end >= LEAD_MIN_SAMPLES))

    def _scaling_counters(self, judgements: Sequence[Judgement], rounds: int, early: bool, fixed: _Fixed | None,
                          n_responses: int) -> dict[str, Any]:
        """The ScoreResult counters of adaptive k, orderings and fixed principles."""
        counters: dict[str, Any] = dict(rounds=rounds, stopped_early=early,
                                        slot_imbalance=slot_imbalance([j.order for j in judgements], n_responses),
                                        principles_mode="joint")
        if fixed is not None:
            counters.update(principles_mode=fixed.mode, principles_tokens=sum(fixed.tokens_spent),
                            principles_reused=fixed.reused,
                            principles_tokens_saved=len(judgements) * fixed.tokens_per_sample)
        return counters

    def _known_principles(self, request: ScoreRequest) -> _Fixed | None:
        """The fixed principles known without asking the judge: given ones, or upfront ones already written."""
        mode = self.config.principles
        if mode == "joint":
            return None
        if request.principles and request.principles.strip():
            return _Fixed(request.principles, "given", tokens_per_sample=-(-len(request.principles) // 4))
        found = self.principles_store.get(principles_key(request.prompt, self._principles_judge))
        return None if found is None else _Fixed(found.text, "upfront", reused=True,
                                                 tokens_per_sample=found.completion_tokens)

    async def _fixed_principles(self, request: ScoreRequest, state: _LoopState) -> _Fixed | None:
        """The principles every sample is judged by (None: each sample writes its own). Upfront principles are
        written once per prompt: later and concurrent requests for the same prompt wait for and reuse them."""
        known = self._known_principles(request)
        if known is not None or self.config.principles != "upfront":
            return known
        key = principles_key(request.prompt, self._principles_judge)
        future = state.principles.get(key)
        mine = future is None
        if future is None:
            future = asyncio.ensure_future(self._write_principles(request, state.backend, key))
            state.principles[key] = future
            future.add_done_callback(lambda _f: state.principles.pop(key, None))
        try:
            written = await asyncio.shield(future)
        except ParseError as exc:
            logger.warning("upfront principles could not be read (%s); this request is judged with joint principles",
                           exc)
            return None
        spent = (written.prompt_tokens, written.completion_tokens) if mine else (0, 0)
        return _Fixed(written.text, "upfront", spent, not mine, written.completion_tokens)

    async def _write_principles(self, request: ScoreRequest, backend: Backend, key: str) -> WrittenPrinciples:
        sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=self.config.max_tokens)
        [[completion]] = await backend.generate([build_principles_messages(request.prompt, self.template)], 1, sampling)
        written = WrittenPrinciples(parse_principles(completion.text), completion.prompt_tokens,
                                    completion.completion_tokens)
        self.principles_store.put(key, written)
        return written

    async def asample(self, request: ScoreRequest, order: Sequence[int], n: int = 1, *,
                      instruction: str | None = None) -> tuple[list[dict[str, str]], list[Judgement]]:
        """``n`` judgements of ``request`` with its responses shown in ``order``, outside voting and the cache.

        ``instruction`` is appended to the judge prompt's last message (e.g. the SPCT hint "The best response is:
        Response j"); the returned messages are the prompt WITHOUT it, with the judgements parsed as usual
        (scores in the original order). Used by the SPCT recipes to sample and keep single judgements.
        """
        order = list(order)
        if sorted(order) != list(range(request.n_responses)):
            raise InvalidRequestError(f"order: expected a permutation of 0..{request.n_responses - 1}, got {order}")
        messages = build_judge_messages(request, order, self.template, self.config.score_range)
        shown = [dict(m) for m in messages]
        if instruction:
            shown[-1]["content"] = f"{shown[-1]['content']}\n\n{instruction}"
        [completions] = await self._state().backend.generate([shown], n, self._sampling(request.n_responses))
        return messages, [self._read(c, order, request.n_responses) for c in completions]

    def _read(self, completion: Completion, order: list[int], n_responses: int,
              fixed_principles: str | None = None) -> Judgement:
        c = self.config
        common = dict(text=completion.text, order=order, finish_reason=completion.finish_reason,
                      prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
        try:
            parsed, spans = parse_with_spans(completion.text, n_responses, c.score_range)
        except ParseError as exc:
            return Judgement(valid=False, error=str(exc), **common)
        expected = None
        if c.expected_scores and completion.logprobs:
            values, read = expected_scores(completion.text, spans, parsed.scores, completion.logprobs, c.score_range)
            expected = unshuffle(values, order) if read == n_responses else None
        return Judgement(valid=True, principles=parsed.principles or fixed_principles or "", critique=parsed.critique,
                         scores=unshuffle(parsed.scores, order), expected_scores=expected, **common)

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
        voted = [judgements[i] for i in chosen if judgements[i].valid and judgements[i].scores is not None]
        valid = [j.scores for j in voted]
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
            deciding: list[float] = list(votes)
            if c.expected_scores:
                deciding = vote_sum(self._values(voted), n)
                counters.update(expected_votes=deciding,
                                expected_samples=sum(1 for j in voted if j.expected_scores is not None))
            rewards: list[float | None] = list(scale_rewards(deciding, len(valid), c.reward_scale, c.score_range))
            return ScoreResult(rewards=rewards, votes=votes, best=pick_best(deciding, rng), voted_samples=len(valid),
                               **counters)
        if c.on_no_valid == "raise":
            errors = "; ".join(sorted({j.error or "" for j in judgements}))[:500]
            raise NoValidJudgementError(f"none of the {len(judgements)} sampled judgement(s) could be parsed "
                                        f"({errors}); set on_no_valid='none' or a number to get a reward instead")
        fallback = None if c.on_no_valid == "none" else float(c.on_no_valid)
        return ScoreResult(rewards=[fallback] * n, **counters)
