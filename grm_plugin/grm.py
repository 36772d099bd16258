"""GRMReward: the principle-critique generative reward model with inference-time voting (SPCT, DeepSeek-GRM).

The conductor of a request's walk, each step in its own module: draw the presentation orders (``orders``), fix the
principles if they are given or written upfront (``principles``), build one judge prompt per distinct order
(``templates``), ask the engine for all samples of a prompt in one request (n = how many samples share it), read
every completion (``parsing``, ``expected``; the shuffle undone), stop early between rounds with adaptive k
(``stopping``), keep the meta RM's top judgements (``meta_rm``) and sum-vote the valid ones into one reward per
response (``voting``). Identical requests are judged once (cache, and sharing of requests in flight).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ._sync import PerLoop
from .backends import Backend, Completion, SamplingParams, ScoresConstraint
from .budget import JudgePromptTooLong, fit_request, prompt_tokens_estimate
from .cache import LRUCache
from .config import GRMConfig, make_backend
from .errors import ConfigError, InvalidRequestError, ParseError
from .expected import expected_scores
from .meta_rm import meta_guided
from .orders import draw_orders, slot_imbalance, unshuffle
from .parsing import parse_with_spans
from .principles import FixedPrinciples, Principles, PrinciplesStore
from .reward import RewardFunction
from .stopping import AdaptiveK
from .templates import SCORE_LINES, Template, build_judge_messages, get_template, is_contentless, render_response
from .types import Judgement, ScoreRequest, ScoreResult, coerce_requests
from .voting import aggregate, scale_rewards, voted_values


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


def _result_bytes(result: ScoreResult) -> int:
    """About how many bytes a cached ScoreResult holds: its judgements' texts, plus a little per number."""
    texts = sum(len(j.text) + len(j.principles) + len(j.critique) + len(j.error or "") for j in result.judgements)
    return 512 + texts + 64 * (len(result.rewards) + sum(len(j.scores or ()) for j in result.judgements))


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
        if "embedded_adapter" in overrides and overrides["embedded_adapter"] is None:
            overrides["embedded_adapter"] = "none"  # an explicit None turns the adapter off (None elsewhere: unset)
        if config is None:
            config = GRMConfig.load(config_file, **overrides)
        elif overrides:
            config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
        if chat_model is not None:
            backend = make_backend(config, chat_model)
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
        self._states: PerLoop[_LoopState] = PerLoop(lambda: _LoopState(self._backend_override or make_backend(config)))
        self.cache: LRUCache[ScoreResult] = LRUCache(config.cache_size, config.cache_max_bytes, weigh=_result_bytes)
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
        judge = {f: getattr(config, f) for f in ("engine", "model", "base_url", "gguf_file", "template", "max_tokens",
                                                 "extra_body")}
        self.principles = Principles(config.principles, self.template, judge, config.max_tokens,
                                     PrinciplesStore(config.principles_cache_dir))
        self.adaptive = AdaptiveK(config.k, config.k_max, config.round_size, config.stopping, config.stop_confidence,
                                  config.stop_tolerance, tuple(config.score_range))  # type: ignore[arg-type]
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
    def replica_stats(self) -> list[dict[str, Any]]:
        """Per judge replica of this event loop's engine: requests, errors, ejections, in flight, ejected now (an
        engine without replicas: empty)."""
        stats = getattr(self._states.get().backend, "replica_stats", None)
        return stats() if stats is not None else []

    async def aclose(self) -> None:
        """Cancel what is still being judged in the current event loop and close its engine client."""
        state = self._states.pop()
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
            BackendError: the engine (or the meta RM) failed after its retries.
            NoValidJudgementError: no sample parsed and ``on_no_valid='raise'``.
        """
        outcomes = await self.ascore_settled(requests)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    async def ascore_settled(self, requests: Sequence[ScoreRequest | dict[str, Any]]
                             ) -> list[ScoreResult | BaseException]:
        """``ascore`` with each request's failure in its place instead of raised (the requests are judged
        independently already; a malformed request list still raises InvalidRequestError)."""
        reqs = coerce_requests(requests)
        if self.config.principles == "given":
            for i, request in enumerate(reqs):
                if not (request.principles or "").strip():
                    raise InvalidRequestError(f"request {i}: principles: principles='given' needs every request's "
                                              f"principles (ScoreRequest.principles, or the "
                                              f"{self.config.principles_column!r} column)")
        state = self._states.get()
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
        results: list[ScoreResult | BaseException] = []
        outcome_iter = iter(outcomes)
        for request, item in zip(reqs, pending):
            outcome = next(outcome_iter) if isinstance(item, _Inflight) else item
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                results.append(outcome)
                continue
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
        fixed = self.principles.known(request)
        orders = self._orders(request, self._rng(request.fingerprint()))
        return self._engine_prompts(request, orders[:self.config.k], fixed)

    def _rng(self, fingerprint: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{fingerprint}")  # same request, same shuffles, on any server

    def _orders(self, request: ScoreRequest, rng: random.Random) -> list[list[int]]:
        """Every order the request may be shown in: k of them, or k_max with adaptive k (drawn in rounds)."""
        c = self.config
        return draw_orders(request.n_responses, self.adaptive.total, rng, shuffle=c.shuffle,
                           balanced=c.ordering == "balanced")

    def _engine_prompts(self, request: ScoreRequest, orders: Sequence[list[int]],
                        fixed: FixedPrinciples | None) -> list[EnginePrompt]:
        shown = Counter(tuple(order) for order in orders)
        text = None if fixed is None else fixed.text
        return [EnginePrompt(list(order), count, build_judge_messages(request, order, self.template,
                                                                      self.config.score_range, text))
                for order, count in shown.items()]

    async def _budget(self, backend: Backend) -> int | None:
        """The judge prompt's token budget: ``max_prompt_tokens``, else the engine's context minus ``max_tokens``."""
        if self.config.max_prompt_tokens is not None:
            return self.config.max_prompt_tokens
        window = getattr(backend, "context_window", None)
        length = await window() if window is not None else None
        return None if length is None else max(64, length - self.config.max_tokens - 16)

    async def _fit(self, request: ScoreRequest, backend: Backend) -> tuple[ScoreRequest, int]:
        """``request`` shortened to the context budget (see ``budget.py``), and the tokens cut."""
        budget = await self._budget(backend)
        if budget is None:
            return request, 0
        reserve = 512 if self.config.principles == "upfront" else 0  # principles shown later in the prompt
        counter = getattr(backend, "count_tokens", None)

        async def measure(candidate: ScoreRequest) -> int:
            messages = build_judge_messages(candidate, range(candidate.n_responses), self.template,
                                            self.config.score_range)
            estimate = prompt_tokens_estimate(messages) + reserve
            if counter is not None and estimate > 0.8 * budget:  # near the budget: ask the engine's tokenizer
                exact = await counter(messages)
                if exact is not None:
                    return exact + reserve
            return estimate

        return await fit_request(request, budget, measure)

    async def _judge(self, request: ScoreRequest, fingerprint: str, key: str, backend: Backend) -> ScoreResult:
        """One request's walk: fit the context, principles, rounds of samples (until k, k_max or a stop), meta RM,
        vote."""
        c = self.config
        if c.floor_contentless:
            floored = [is_contentless(r) for r in request.responses]
            if any(floored):
                return await self._judge_floored(request, floored, key, backend)
        rng = self._rng(fingerprint)
        try:
            request, truncated = await self._fit(request, backend)
        except JudgePromptTooLong as exc:
            if c.on_no_valid == "raise":
                raise
            fallback = None if c.on_no_valid == "none" else float(c.on_no_valid)
            return ScoreResult(rewards=[fallback] * request.n_responses, error=f"JudgePromptTooLong: {exc}",
                               metadata=request.metadata)
        fixed = await self.principles.fixed(request, backend)
        orders = self._orders(request, rng)
        # one prompt's judge prompts (its group's, all their samples and retries) go to one judge replica
        affinity = hashlib.blake2b(json.dumps(request.model_dump(mode="json", include={"prompt"})).encode(),
                                   digest_size=12).hexdigest()
        sampling = dataclasses.replace(self._sampling(request.n_responses), affinity=affinity)
        judgements: list[Judgement] = []
        drawn = rounds = 0
        budget = c.max_resamples if c.max_resamples is not None else len(orders)
        for size in self.adaptive.round_sizes():
            prompts = self._engine_prompts(request, orders[drawn:drawn + size], fixed)
            batches = await asyncio.gather(*(backend.generate([p.messages], p.n, sampling) for p in prompts))
            fresh = [self._read(completion, p.order, request, fixed)
                     for p, batch in zip(prompts, batches) for completion in batch[0][:p.n]]
            if c.resample_invalid:
                fresh, budget = await self._replace_invalid(request, fresh, fixed, sampling, backend, budget)
            judgements += fresh
            drawn, rounds = drawn + size, rounds + 1
            if drawn < len(orders) and self.adaptive.should_stop(voted_values(judgements, c.expected_scores),
                                                                 len(orders) - drawn):
                break
        used = None
        if self.meta_rm is not None:
            judgements, used = await meta_guided(self.meta_rm, request, judgements, c.k_meta or -(-c.k // 2))
        result = aggregate(judgements, request.n_responses, rng, reward_scale=c.reward_scale,
                           score_range=c.score_range, expected_scores=c.expected_scores, on_no_valid=c.on_no_valid,
                           used=used, metadata=request.metadata)
        first = [j for j in judgements if not j.resampled]
        counters: dict[str, Any] = dict(rounds=rounds, stopped_early=drawn < len(orders), principles_mode="joint",
                                        slot_imbalance=slot_imbalance([j.order for j in judgements],
                                                                      request.n_responses),
                                        samples=len(first), valid_samples=sum(j.valid for j in first),
                                        resampled=len(judgements) - len(first), truncated_tokens=truncated)
        if fixed is not None:
            counters.update(fixed.counters(len(judgements)))
        result = result.model_copy(update=counters)
        if result.votes is not None:
            self.cache.put(key, result)
        return result

    async def _judge_floored(self, request: ScoreRequest, floored: list[bool], key: str,
                             backend: Backend) -> ScoreResult:
        """``floor_contentless``: the contentless responses get the lowest score in every sample, the others are
        judged without them (nothing is judged when every response is contentless)."""
        c = self.config
        lowest = c.score_range[0]
        n = request.n_responses
        kept = [i for i in range(n) if not floored[i]]
        if not kept:
            rewards = list(scale_rewards([float(lowest)] * n, 1, c.reward_scale, c.score_range))
            return ScoreResult(rewards=rewards, votes=[lowest] * n, best=0, voted_samples=1, floored=n,
                               metadata=request.metadata)
        sub = request.model_copy(update={"responses": [request.responses[i] for i in kept]})
        sub_fingerprint = sub.fingerprint()
        result = await self._judge(sub, sub_fingerprint, self._key(sub_fingerprint), backend)

        def widen(values: Sequence[Any] | None, fill: Any) -> list[Any] | None:
            if values is None:
                return None
            out = [fill] * n
            for i, value in zip(kept, values):
                out[i] = value
            return out

        judgements = [j.model_copy(update={"scores": widen(j.scores, lowest), "order": [kept[o] for o in j.order],
                                           "expected_scores": widen(j.expected_scores, float(lowest))})
                      for j in result.judgements]
        merged = aggregate(judgements, n, self._rng(request.fingerprint()), reward_scale=c.reward_scale,
                           score_range=c.score_range, expected_scores=c.expected_scores, on_no_valid=c.on_no_valid,
                           used=result.meta_kept, metadata=request.metadata)
        counters = result.model_dump(include={"samples", "valid_samples", "rounds", "stopped_early", "principles_mode",
                                              "principles_tokens", "principles_reused", "principles_tokens_saved",
                                              "resampled", "truncated_tokens", "error", "slot_imbalance",
                                              "prompt_tokens", "completion_tokens"})
        merged = merged.model_copy(update={**counters, "floored": n - len(kept)})
        if merged.votes is not None:
            self.cache.put(key, merged)
        return merged

    async def _replace_invalid(self, request: ScoreRequest, judgements: list[Judgement], fixed: FixedPrinciples | None,
                               sampling: SamplingParams, backend: Backend, budget: int
                               ) -> tuple[list[Judgement], int]:
        """``judgements`` with a replacement drawn for each invalid one (shown in the same order), again for
        replacements that fail too, while ``budget`` (replacement samples left for the request) lasts. The invalid
        ones stay (they count as drawn); the replacements carry ``resampled=True``. Returns them and the budget
        left."""
        out, invalid = list(judgements), [j for j in judgements if not j.valid]
        while invalid and budget > 0:
            invalid = invalid[:budget]
            budget -= len(invalid)
            prompts = self._engine_prompts(request, [j.order for j in invalid], fixed)
            batches = await asyncio.gather(*(backend.generate([p.messages], p.n, sampling) for p in prompts))
            again = [self._read(completion, p.order, request, fixed).model_copy(update={"resampled": True})
                     for p, batch in zip(prompts, batches) for completion in batch[0][:p.n]]
            out += again
            invalid = [j for j in again if not j.valid]
        return out, budget

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
        [completions] = await self._states.get().backend.generate([shown], n, self._sampling(request.n_responses))
        return messages, [self._read(c, order, request) for c in completions[:n]]  # an engine's extras: not drawn

    def _read(self, completion: Completion, order: list[int], request: ScoreRequest,
              fixed: FixedPrinciples | None = None) -> Judgement:
        """One completion as a Judgement: parsed, its scores (and expected scores) in the original order. A scores
        block copied from a response (a judge that echoes its prompt) is never read as the judge's verdict."""
        c = self.config
        n_responses = request.n_responses
        common = dict(text=completion.text, order=order, finish_reason=completion.finish_reason,
                      prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                      replica=completion.replica)
        try:
            parsed, spans = parse_with_spans(completion.text, n_responses, c.score_range,
                                             lambda: [render_response(r) for r in request.responses])
        except ParseError as exc:
            return Judgement(valid=False, error=str(exc), **common)
        expected = None
        if c.expected_scores and completion.logprobs:
            values, read = expected_scores(completion.text, spans, parsed.scores, completion.logprobs, c.score_range)
            expected = unshuffle(values, order) if read == n_responses else None
        return Judgement(valid=True, principles=parsed.principles or (fixed.text if fixed else "") or "",
                         critique=parsed.critique, scores=unshuffle(parsed.scores, order), expected_scores=expected,
                         **common)
