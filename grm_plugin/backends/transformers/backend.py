"""TransformersBackend: a local transformers model as the judge's engine, with dynamic batching.

Requests that arrive at the same time from many coroutines (GRMReward judges every request concurrently) are gathered
into shared ``generate`` calls: per event loop one queue and one worker task, which waits ``batch_window_ms`` (or
until ``max_batch_size`` sequences are queued), packs the queued prompts into batches bounded by ``max_batch_size``
sequences and ``max_batch_tokens`` ((padded prompt + new tokens) x sequences), and runs each batch on the model's
generate thread so the event loop is never blocked. One ``generate`` runs on a model at a time; requests are never
serialised one by one. A failed batch fails every request in it (and only those); a cancelled caller's rows are
dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..._sync import PerLoop
from ...errors import BackendError, ConfigError
from .. import ChatMessages, Completion, SamplingParams
from .generation import LoadedModel, RowOutput
from .loading import ModelSource, get_model, resolve_device, resolve_dtype, resolve_source


@dataclass(eq=False)
class _Request:
    """One ``generate`` call: its prompts' token ids, n, sampling, and the future its caller waits on."""

    prompts: list[list[int]]
    n: int
    sampling: SamplingParams
    future: asyncio.Future
    parts: list[dict[int, list[RowOutput]]] = field(default_factory=list)  # per prompt: sample offset -> rows
    missing: int = 0  # rows still to come

    @property
    def done(self) -> bool:
        return self.future.done()


@dataclass(frozen=True, eq=False)
class _Job:
    """``count`` samples (starting at ``offset``) of prompt ``prompt`` of ``request``."""

    request: _Request
    prompt: int
    offset: int
    count: int

    @property
    def length(self) -> int:
        return len(self.request.prompts[self.prompt])


@dataclass(eq=False)
class _LoopState:
    """Per event loop: the queue of waiting requests and the worker task that drains it."""

    queue: list[_Request] = field(default_factory=list)
    queued_rows: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task | None = None
    loading: asyncio.Task | None = None


def _sampling_key(sampling: SamplingParams) -> tuple:
    extra = tuple(sorted((k, repr(v)) for k, v in sampling.extra_body.items()))
    temperature = sampling.temperature if sampling.temperature > 0 else 0.0
    top_p = sampling.top_p if temperature > 0 else 1.0
    return temperature, top_p, sampling.max_tokens, extra, sampling.logprobs


def plan_batches(jobs: Sequence[_Job], max_new_tokens: int, max_batch_tokens: int, max_batch_size: int,
                 rows_of=lambda job: job.count) -> list[list[_Job]]:
    """Pack jobs (longest prompt first, so batches pad little) into batches of at most ``max_batch_size`` rows and
    ``max_batch_tokens`` (padded prompt + new tokens) x rows; a job that alone exceeds the bound gets a batch of its
    own. Jobs are split beforehand so that each fits alone where it can (``rows_per_batch``)."""
    batches: list[list[_Job]] = []
    current: list[_Job] = []
    width = rows = 0
    for job in sorted(jobs, key=lambda j: -j.length):
        job_rows = rows_of(job)
        new_width = max(width, job.length)
        if current and (rows + job_rows > max_batch_size
                        or (new_width + max_new_tokens) * (rows + job_rows) > max_batch_tokens):
            batches.append(current)
            current, width, rows = [], 0, 0
            new_width = job.length
        current.append(job)
        width, rows = new_width, rows + job_rows
    if current:
        batches.append(current)
    return batches


def rows_per_batch(prompt_length: int, max_new_tokens: int, max_batch_tokens: int, max_batch_size: int) -> int:
    """The most sample rows of one prompt that fit a batch (at least 1: an oversized request still runs)."""
    return max(1, min(max_batch_size, max_batch_tokens // max(1, prompt_length + max_new_tokens)))


class TransformersBackend:
    """A local transformers model as the judge's engine.

    Args:
        model: a local folder, a Hugging Face id already downloaded (never fetched), a ``.gguf`` file, a loaded
            ``PreTrainedModel`` (then pass ``tokenizer`` too).
        gguf_file: a GGUF file name inside ``model`` (folder or hub id), or a GGUF file path (then ``model`` may
            be None).
        tokenizer: the tokenizer of a ``model`` given as an object.
        name: how the model is named in messages and errors (default: its path).
        prepare: a function that makes the model's folder ready (e.g. converts a file into it), run in the loading
            thread before the model is loaded (once per process: loaded models are cached).
        device: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ...
        dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'bfloat16', 'float16'.
        max_batch_tokens: bound on (padded prompt + new tokens) x sequences of one generate call.
        max_batch_size: most sequences (prompts x samples) of one generate call.
        batch_window_ms: how long the worker waits for more requests before starting a batch.
        prefill_once: share one prefill between the n samples of a prompt (KV cache expanded); False prefills every
            sample row (like ``num_return_sequences``).
        cache_implementation: None / 'dynamic', or 'static' (a StaticCache; on CUDA transformers then compiles the
            decoding step).
        generate_kwargs: extra arguments for every ``model.generate`` call (e.g. ``{"min_new_tokens": 256}``).

    Example:
        >>> backend = TransformersBackend("/models/SmolLM2-360M-Instruct", device="cpu")  # doctest: +SKIP
        >>> [samples] = asyncio.run(backend.generate([[{"role": "user", "content": "Hi"}]], 2,
        ...                                          SamplingParams(temperature=0.7, max_tokens=32)))  # doctest: +SKIP
        >>> [(c.finish_reason, c.completion_tokens) for c in samples]  # doctest: +SKIP
        [('stop', 9), ('stop', 12)]
    """

    def __init__(
        self,
        model: Any = None,
        *,
        gguf_file: str | None = None,
        tokenizer: Any = None,
        name: str | None = None,
        prepare: Callable[[], object] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_tokens: int = 32768,
        max_batch_size: int = 64,
        batch_window_ms: float = 5.0,
        prefill_once: bool = True,
        cache_implementation: str | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1 or batch_window_ms < 0:
            raise ConfigError("max_batch_tokens and max_batch_size must be at least 1 and batch_window_ms at least 0")
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch_size = int(max_batch_size)
        self.batch_window = float(batch_window_ms) / 1000.0
        self.prefill_once = prefill_once
        self.cache_implementation = cache_implementation
        self.generate_kwargs = dict(generate_kwargs or {})
        self._loaded: LoadedModel | None = None
        if model is not None and not isinstance(model, (str, os.PathLike)):
            if tokenizer is None:
                raise ConfigError("a model object needs its tokenizer: TransformersBackend(model, tokenizer=...)")
            self._loaded = LoadedModel(model, tokenizer, name or "")
            self.source = ModelSource(path=self._loaded.name)
            self.device = self._loaded.device
            self.dtype = next(model.parameters()).dtype
        else:
            source = resolve_source(None if model is None else str(model), gguf_file)
            self.source = dataclasses.replace(source, label=name, prepare=prepare)
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
        self.name = self.source.name
        self._states: PerLoop[_LoopState] = PerLoop(_LoopState)
        self.generate_calls = 0  # how many model.generate calls this backend made (for tests and benchmarks)

    def __repr__(self) -> str:
        return f"TransformersBackend({self.name!r}, device={str(self.device)!r}, dtype={self.dtype})"

    # -- the model ----------------------------------------------------------------------------------------------
    def load(self) -> LoadedModel:
        """The loaded model (loading it on first use; blocking)."""
        if self._loaded is None:
            self._loaded = get_model(self.source, self.device, self.dtype)
        return self._loaded

    async def _model(self, state: _LoopState) -> LoadedModel:
        if self._loaded is not None:
            return self._loaded
        if state.loading is None or (state.loading.done() and state.loading.exception() is not None):
            state.loading = asyncio.ensure_future(asyncio.to_thread(self.load))
        return await asyncio.shield(state.loading)

    # -- the context budget -------------------------------------------------------------------------------------
    async def context_window(self) -> int | None:
        """The model's context length (its config's ``max_position_embeddings``, else the tokenizer's
        ``model_max_length`` when that is a real limit)."""
        loaded = await self._model(self._states.get())
        length = getattr(loaded.model.config, "max_position_embeddings", None)
        if not isinstance(length, int) or length <= 0:
            length = getattr(loaded.tokenizer, "model_max_length", None)
        return length if isinstance(length, int) and 0 < length < 10_000_000 else None

    async def count_tokens(self, messages: ChatMessages) -> int | None:
        """The exact prompt tokens of ``messages`` (the chat template with the assistant turn opened)."""
        loaded = await self._model(self._states.get())
        try:
            return len(await asyncio.to_thread(loaded.encode, messages))
        except ConfigError:  # no chat template: generate() reports it; the budget falls back to estimates
            return None

    # -- the Backend protocol -----------------------------------------------------------------------------------
    async def generate(
        self, messages_batch: Sequence[ChatMessages], n: int, sampling: SamplingParams
    ) -> list[list[Completion]]:
        """n completions for each prompt of the batch, in order; gathered with concurrent calls into shared
        generate batches."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if sampling.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {sampling.max_tokens}")
        if not messages_batch:
            return []
        state = self._states.get()
        try:
            loaded = await self._model(state)
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, ConfigError)):
                raise
            raise BackendError(f"transformers engine ({self.name}): loading the model failed: {exc!r}",
                               endpoint=f"transformers:{self.name}") from exc
        try:
            prompts = [loaded.encode(messages) for messages in messages_batch]
        except ConfigError:
            raise
        except Exception as exc:
            raise BackendError(f"transformers engine ({self.name}): the chat template failed on this request: "
                               f"{exc!r}", endpoint=f"transformers:{self.name}") from exc
        request = _Request(prompts, n, sampling, asyncio.get_running_loop().create_future())
        request.parts = [{} for _ in prompts]
        request.missing = len(prompts) * n
        state.queue.append(request)
        state.queued_rows += len(prompts) * n
        if state.queued_rows >= self.max_batch_size:
            state.full.set()
        if state.worker is None or state.worker.done():
            state.worker = asyncio.ensure_future(self._work(state, loaded))
        rows = await request.future  # a cancelled caller cancels its future; the worker then skips its rows
        return [[self._completion(row, len(prompt) if i == 0 else 0) for i, row in enumerate(prompt_rows)]
                for prompt, prompt_rows in zip(prompts, rows)]

    @staticmethod
    def _completion(row: RowOutput, prompt_tokens: int) -> Completion:
        return Completion(text=row.text, finish_reason=row.finish_reason, prompt_tokens=prompt_tokens,
                          completion_tokens=row.completion_tokens, logprobs=row.logprobs)

    async def aclose(self) -> None:
        """Stop this event loop's worker; requests still waiting in it are cancelled. The model stays loaded."""
        try:
            state = self._states.pop()
        except RuntimeError:  # pragma: no cover - no running loop
            return
        if state is None:
            return
        if state.worker is not None and not state.worker.done():
            state.worker.cancel()
            await asyncio.gather(state.worker, return_exceptions=True)
        for request in state.queue:
            request.future.cancel()

    # -- the worker ---------------------------------------------------------------------------------------------
    async def _work(self, state: _LoopState, loaded: LoadedModel) -> None:
        """Drain the queue: gather a window's requests, plan batches, run them one by one in a thread."""
        taken: list[_Request] = []
        try:
            while state.queue:
                if self.batch_window > 0 and state.queued_rows < self.max_batch_size:
                    try:
                        await asyncio.wait_for(state.full.wait(), self.batch_window)
                    except asyncio.TimeoutError:
                        pass
                taken, state.queue, state.queued_rows = state.queue, [], 0
                state.full.clear()
                try:
                    await self._run(taken, loaded)
                except Exception as exc:  # a bug of ours, not of a batch: still answer every request, once
                    error = BackendError(f"transformers engine ({self.name}): batching failed: {exc!r}",
                                         endpoint=f"transformers:{self.name}")
                    error.__cause__ = exc
                    for request in taken:
                        if not request.done:
                            request.future.set_exception(error)
                taken = []
        finally:  # cancelled (aclose, loop shutdown): nobody will answer these requests any more
            for request in taken:
                if not request.done:
                    request.future.cancel()

    def _jobs(self, requests: Sequence[_Request]) -> dict[tuple, list[_Job]]:
        groups: dict[tuple, list[_Job]] = {}
        for request in requests:
            if request.done:
                continue
            greedy = request.sampling.temperature <= 0
            for p, prompt in enumerate(request.prompts):
                cap = request.n if greedy else rows_per_batch(len(prompt), request.sampling.max_tokens,
                                                              self.max_batch_tokens, self.max_batch_size)
                for offset in range(0, request.n, cap):
                    job = _Job(request, p, offset, min(cap, request.n - offset))
                    groups.setdefault(_sampling_key(request.sampling), []).append(job)
        return groups

    async def _run(self, requests: Sequence[_Request], loaded: LoadedModel) -> None:
        for jobs in self._jobs(requests).values():
            sampling = jobs[0].request.sampling
            greedy = sampling.temperature <= 0
            batches = plan_batches(jobs, sampling.max_tokens, self.max_batch_tokens, self.max_batch_size,
                                   rows_of=(lambda job: 1) if greedy else (lambda job: job.count))
            for batch in batches:
                batch = [job for job in batch if not job.request.done]
                if not batch:
                    continue
                prompts = [job.request.prompts[job.prompt] for job in batch]
                counts = [job.count for job in batch]
                constraints = [job.request.sampling.constraint for job in batch]
                self.generate_calls += 1
                try:
                    outputs = await asyncio.get_running_loop().run_in_executor(loaded.executor, functools.partial(
                        loaded.generate_rows, prompts, counts, sampling, constraints,
                        prefill_once=self.prefill_once, cache_implementation=self.cache_implementation,
                        generate_kwargs=self.generate_kwargs))
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    error = exc if isinstance(exc, BackendError) else BackendError(
                        f"transformers engine ({self.name}): generate failed on a batch of {len(batch)} prompt(s), "
                        f"{sum(counts)} sequence(s): {exc!r}", endpoint=f"transformers:{self.name}")
                    if error is not exc:
                        error.__cause__ = exc
                    for job in batch:
                        if not job.request.done:
                            job.request.future.set_exception(error)
                    continue
                for job, rows in zip(batch, outputs):
                    self._deliver(job, rows)

    @staticmethod
    def _deliver(job: _Job, rows: list[RowOutput]) -> None:
        request = job.request
        if request.done:
            return
        request.parts[job.prompt][job.offset] = rows
        request.missing -= len(rows)
        if request.missing == 0:
            request.future.set_result([[row for offset in sorted(parts) for row in parts[offset]]
                                       for parts in request.parts])


__all__ = ["TransformersBackend", "plan_batches", "rows_per_batch"]
