"""Generation internals of the transformers engine: one loaded model with its tokenizer (``LoadedModel``), the
batched ``generate`` of left-padded prompts with the n samples of a prompt sharing one prefill (a dynamic or a reused
static KV cache), the recording of token log-probabilities, and the one generate thread per device on which
compiled static-cache decoding records its CUDA graphs. Everything here runs in that worker thread, never in the
event loop.
"""

from __future__ import annotations

import inspect
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...errors import BackendError, ConfigError
from .. import ChatMessages, SamplingParams, ScoresConstraint, TokenLogprob

logger = logging.getLogger("grm_plugin.backends.transformers")

# extra_body keys the local engine understands, mapped to generate() arguments
_EXTRA_BODY_KEYS = {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty",
                    "min_tokens": "min_new_tokens"}
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


@dataclass
class RowOutput:
    """One generated sample row: its text, token count (up to the end of sequence), finish reason, log-probs."""

    text: str
    completion_tokens: int
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None = None


class LoadedModel:
    """A model, its tokenizer and the lock that lets one ``generate`` run on it at a time."""

    def __init__(self, model: Any, tokenizer: Any, name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "") or type(model).__name__
        self.lock = threading.Lock()  # one generate / forward at a time
        self.tokenizer_lock = threading.Lock()  # fast tokenizers must not be used from two threads at once
        generation_config = getattr(model, "generation_config", None)
        eos: list[int] = []
        for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            for token in [source] if isinstance(source, int) else list(source or []):
                if token is not None and int(token) not in eos:
                    eos.append(int(token))
        self.eos_ids = eos
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = getattr(generation_config, "pad_token_id", None)
        if pad is None:
            pad = eos[0] if eos else 0
        self.pad_id = int(pad)
        forward = inspect.signature(type(model).forward).parameters
        self.cache_kwarg = "cache" if "cache" in forward else "past_key_values"  # transformers 5 renamed it
        self.accepts_logits_to_keep = "logits_to_keep" in forward
        self.accepts_position_ids = "position_ids" in forward
        self.prefill_unsupported: str | None = None
        self._static_cache: Any = None
        self._static_shape: tuple | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The one thread that runs every ``generate`` on this model's device (compiled static-cache decoding records
        its CUDA graphs per thread and per compiled function: two threads must not share them)."""
        return generate_executor(self.device)

    def encode(self, messages: ChatMessages) -> list[int]:
        """The prompt's token ids: the chat template with the assistant turn opened."""
        tokenizer = self.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer of {self.name!r} has no chat template; use an instruction-tuned model "
                              "or set tokenizer.chat_template")
        with self.tokenizer_lock:
            text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation ---------------------------------------------------------------------------------------------
    def generate_rows(
        self,
        prompts: Sequence[Sequence[int]],
        counts: Sequence[int],
        sampling: SamplingParams,
        constraints: Sequence[ScoresConstraint | None] | None = None,
        *,
        prefill_once: bool = True,
        cache_implementation: str | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> list[list[RowOutput]]:
        """``counts[i]`` completions of ``prompts[i]`` (token ids), in one ``generate`` call.

        ``constraints`` has one entry per prompt (applied to each of its samples). Greedy prompts are generated once
        and copied. With ``prefill_once`` the prompts are run through the model once and their KV cache expanded to
        the samples; otherwise every sample row is prefilled (what ``num_return_sequences`` does).
        """
        greedy = sampling.temperature <= 0
        rows = [1 if greedy else int(c) for c in counts]
        with self.lock:
            with torch.no_grad():  # not inference_mode: its tensors cannot enter a compiled (static-cache) decode
                args = (prompts, rows, sampling, constraints, prefill_once, cache_implementation, generate_kwargs or {})
                graphs = (cache_implementation == "static" and self.device.type == "cuda"
                          and threading.current_thread() is not threading.main_thread()
                          and _GRAPH_THREADS.get(threading.get_ident(), True))
                try:
                    sequences, width, recorder = self._generate(*args)
                except Exception as exc:
                    if not graphs:
                        raise
                    # CUDA graphs recorded off the main thread rely on torch internals: if they fail, compile the
                    # decoding step without them from now on and run this batch again (generation is side-effect
                    # free; the static cache is rebuilt by the prefill).
                    _GRAPH_THREADS[threading.get_ident()] = False
                    _warn_once("graphs:" + self.name, "%s: compiled static-cache decoding with CUDA graphs failed on "
                               "the engine's thread (%r); continuing without CUDA graphs", self.name, exc)
                    self._static_cache = self._static_shape = None
                    sequences, width, recorder = self._generate(*args)
        outputs = self._read(sequences, width, recorder)
        grouped, at = [], 0
        for count, generated in zip(counts, rows):
            mine = outputs[at:at + generated]
            at += generated
            grouped.append(mine if generated == count else [mine[0]] * count)
        return grouped

    def _generate(self, prompts, rows, sampling, constraints, prefill_once, cache_implementation, extra):
        model, device = self.model, self.device
        batch, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            if prompt:
                input_ids[i, width - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
                attention_mask[i, width - len(prompt):] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        counts = torch.as_tensor(rows, device=device)
        index = torch.repeat_interleave(torch.arange(batch, device=device), counts)
        expanded = int(counts.sum())
        kwargs: dict[str, Any] = dict(max_new_tokens=sampling.max_tokens, pad_token_id=self.pad_id,
                                      eos_token_id=self.eos_ids or None)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        for key, target in _EXTRA_BODY_KEYS.items():
            if key in sampling.extra_body:
                kwargs[target] = sampling.extra_body[key]
        ignored = sorted(set(sampling.extra_body) - set(_EXTRA_BODY_KEYS))
        if ignored:
            _warn_once("extra_body:" + ",".join(ignored), "the transformers engine ignores extra_body keys %s "
                       "(it understands %s)", ignored, sorted(_EXTRA_BODY_KEYS))
        kwargs.update(extra)
        recorder = LogprobRecorder(sampling.logprobs) if sampling.logprobs > 0 else None
        if constraints is not None and any(c is not None for c in constraints):
            kwargs["logits_processor"] = self._constraint_processor(
                [constraints[i] for i in index.tolist()], sampling.max_tokens, width)
        if recorder is not None:  # first, so it records the model's own distribution, before any constraint
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([recorder, *kwargs.get("logits_processor", [])])
        shared = prefill_once and expanded > batch and width > 1
        if shared and self.prefill_unsupported is None:
            try:
                cache = self._prefill(input_ids, attention_mask, index, width + sampling.max_tokens,
                                      cache_implementation)
            except _PrefillUnsupported as exc:
                self.prefill_unsupported = str(exc)
                _warn_once("prefill:" + self.name, "%s: %s; each sample row is prefilled separately instead",
                           self.name, exc)
            else:
                kwargs[self.cache_kwarg] = cache
        if self.cache_kwarg not in kwargs and cache_implementation:
            kwargs["cache_implementation"] = cache_implementation
        if cache_implementation == "static" and "compile_config" not in kwargs:
            compile_config = off_main_thread_compile_config()
            if compile_config is not None:
                kwargs["compile_config"] = compile_config
        if expanded != batch:
            input_ids, attention_mask = input_ids[index], attention_mask[index]
        sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return sequences, width, recorder

    def _prefill(self, input_ids, attention_mask, index, max_cache_len, cache_implementation):
        """Run the prompts minus their last token once; return their KV cache expanded to one row per sample."""
        model = self.model
        if model.config.is_encoder_decoder:
            raise _PrefillUnsupported("encoder-decoder models are not supported by the shared prefill")
        call = dict(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], use_cache=True)
        if self.accepts_position_ids:  # the positions generate() derives from a left-padded mask
            positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
            call["position_ids"] = positions[:, :-1]
        if self.accepts_logits_to_keep:
            call["logits_to_keep"] = 1  # the prefix's logits are never used
        outputs = model(**call)
        cache = outputs.get("cache") if "cache" in outputs else outputs.get("past_key_values")
        if cache is None or not hasattr(cache, "batch_select_indices"):
            raise _PrefillUnsupported(f"{type(model).__name__} returned no expandable KV cache")
        if cache_implementation == "static":
            return self._to_static(cache, index, max_cache_len)
        if cache_implementation not in (None, "dynamic"):
            raise _PrefillUnsupported(f"cache_implementation={cache_implementation!r} is not supported by the "
                                      "shared prefill (only 'dynamic' and 'static')")
        cache.batch_select_indices(index)
        return cache

    def _to_static(self, cache, index, max_cache_len):
        from transformers import StaticCache

        layers = getattr(cache, "layers", None)
        if not layers or any(getattr(layer, "is_sliding", False) for layer in layers):
            raise _PrefillUnsupported("a static cache with sliding-window layers cannot take a shared prefill")
        # One StaticCache is kept and reset between calls of the same shape (length rounded up to 256), so compiled
        # decoding sees the same buffers again instead of new ones per call.
        max_cache_len = -(-max_cache_len // 256) * 256
        shape = (int(index.numel()), max_cache_len, layers[0].keys.dtype, str(layers[0].keys.device))
        if self._static_shape == shape and self._static_cache is not None:
            static = self._static_cache
            static.reset()
        else:
            self._static_cache = self._static_shape = None  # free the old buffers before allocating new ones
            static = StaticCache(config=self.model.config, max_cache_len=max_cache_len)
            self._static_cache, self._static_shape = static, shape
        for i, layer in enumerate(layers):
            static.update(layer.keys[index], layer.values[index], i)
        return static

    def _constraint_processor(self, constraints, max_new_tokens, width):
        try:
            from ..scores_processor import ScoresLogitsProcessor
        except ImportError as exc:  # pragma: no cover - the processor ships with the package
            raise BackendError(f"structured_output needs grm_plugin.backends.scores_processor, which failed to "
                               f"import: {exc}", endpoint=f"transformers:{self.name}") from exc
        from transformers import LogitsProcessorList

        processor = ScoresLogitsProcessor(self.tokenizer, constraints, max_new_tokens=max_new_tokens,
                                          prompt_length=width, eos_token_id=self.eos_ids or None)
        return LogitsProcessorList([processor])

    def _read(self, sequences: torch.Tensor, width: int, recorder: "LogprobRecorder | None" = None) -> list[RowOutput]:
        """Text, token count (up to the first end-of-sequence, padding excluded), finish reason and, when recorded,
        the token log-probabilities of each row."""
        generated = sequences[:, width:]
        steps = generated.shape[1]
        if self.eos_ids:
            is_eos = torch.isin(generated, torch.as_tensor(self.eos_ids, device=generated.device))
        else:
            is_eos = torch.zeros_like(generated, dtype=torch.bool)
        stopped = is_eos.any(dim=1)
        lengths = torch.where(stopped, is_eos.int().argmax(dim=1), torch.full_like(stopped, steps, dtype=torch.long))
        tokens = generated.cpu().tolist()
        lengths_list, stopped_list = lengths.tolist(), stopped.tolist()
        with self.tokenizer_lock:
            texts = self.tokenizer.batch_decode([row[:n] for row, n in zip(tokens, lengths_list)],
                                                skip_special_tokens=True)
        logprobs = (recorder.rows(tokens, lengths_list, self._token_texts) if recorder is not None
                    else [None] * len(texts))
        return [RowOutput(text, n, "stop" if stop else "length", row_logprobs)
                for text, n, stop, row_logprobs in zip(texts, lengths_list, stopped_list, logprobs)]

    def _token_texts(self, ids: Sequence[int]) -> dict[int, str]:
        """Each token id's own text (special tokens as empty text, as in the decoded completion)."""
        ids = sorted(set(ids))
        with self.tokenizer_lock:
            texts = self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
        return dict(zip(ids, texts))


def off_main_thread_compile_config() -> Any:
    """The compile settings for a static-cache ``generate`` on the current thread, or None for transformers' default.

    transformers compiles the decoding step of a static cache (on CUDA) in ``reduce-overhead`` mode, whose CUDA-graph
    trees keep their state in thread-local storage set up on the thread that first imported them: ``generate`` on
    another thread fails (``cudagraph_trees.get_obj: assert torch._C._is_key_in_tls``). The engine always generates
    on its worker thread, so it first gives that thread CUDA-graph-tree state of its own
    (``enable_cuda_graphs_on_this_thread``); where that is impossible the decoding step is compiled without CUDA
    graphs (inductor's default mode).
    """
    if threading.current_thread() is threading.main_thread() or enable_cuda_graphs_on_this_thread():
        return None
    try:
        from transformers import CompileConfig
    except ImportError:  # pragma: no cover - transformers < 4.47 has no compiled decoding to configure
        return None
    return CompileConfig(mode="default")


_GRAPH_THREADS: dict[int, bool] = {}
if threading.current_thread() is threading.main_thread() and torch.cuda.is_available():
    # torch sets up CUDA-graph-tree state only on the thread that imports this module: import it here, on the main
    # thread, so a user's own compiled code on the main thread keeps working after the engine thread took its own.
    try:
        import torch._inductor.cudagraph_trees  # noqa: F401
    except Exception:  # pragma: no cover - depends on the torch build
        pass
_EXECUTORS: dict[str, ThreadPoolExecutor] = {}
_EXECUTORS_LOCK = threading.Lock()


def generate_executor(device: torch.device | str) -> ThreadPoolExecutor:
    """The process-wide single worker thread that runs ``generate`` for models on ``device``."""
    key = str(device)
    with _EXECUTORS_LOCK:
        if key not in _EXECUTORS:
            _EXECUTORS[key] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"grm-generate-{key}")
        return _EXECUTORS[key]


def enable_cuda_graphs_on_this_thread() -> bool:
    """Give the current (non-main) thread its own CUDA-graph-tree state so ``reduce-overhead`` compiled code (CUDA
    graphs) runs on it; True on success.

    torch < 2.13 sets that state (``tree_manager_containers`` / ``tree_manager_locks``) up on the importing thread
    only. A thread that owns its own state records and replays its own graphs, which is what
    the engine's single generate thread needs. Uses torch-private hooks, so any failure returns False and the caller
    compiles without CUDA graphs instead.
    """
    ident = threading.get_ident()
    if ident in _GRAPH_THREADS:
        return _GRAPH_THREADS[ident]
    ok = False
    try:
        from collections import defaultdict

        from torch._inductor import cudagraph_trees

        # get_obj() looks first at the module's threading.local, whose attributes are per thread: give this thread
        # its own (torch >= 2.13 does this itself). torch's C++ TLS slot is not touched.
        local = cudagraph_trees.local
        if not hasattr(local, "tree_manager_containers"):
            local.tree_manager_containers = {}
            local.tree_manager_locks = defaultdict(threading.Lock)
        ok = callable(getattr(cudagraph_trees, "get_container", None))
    except Exception:  # pragma: no cover - depends on torch internals
        ok = False
    _GRAPH_THREADS[ident] = ok
    return ok


class LogprobRecorder:
    """A logits processor that keeps, at every generation step, the ``top`` most likely tokens of every row and their
    log-probabilities (the model's distribution, before temperature, top-p and any constraint apply). It changes
    nothing it sees."""

    def __init__(self, top: int) -> None:
        self.top = int(top)
        self.values: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        best = torch.log_softmax(scores.float(), dim=-1).topk(min(self.top, scores.shape[-1]), dim=-1)
        self.values.append(best.values)
        self.indices.append(best.indices)
        return scores

    def rows(self, tokens: list[list[int]], lengths: list[int], texts_of) -> list[tuple[TokenLogprob, ...] | None]:
        """Per row, one TokenLogprob per generated token (``tokens[r][:lengths[r]]``); ``texts_of`` maps token ids
        to their texts."""
        if not self.values:
            return [None] * len(tokens)
        values = torch.stack(self.values, dim=1).cpu().tolist()  # rows x steps x top
        indices = torch.stack(self.indices, dim=1).cpu().tolist()
        text = texts_of([t for row, n in zip(tokens, lengths) for t in row[:n]]
                        + [i for row in indices for step in row for i in step])
        out = []
        for r, (row, n) in enumerate(zip(tokens, lengths)):
            entries = []
            for t in range(min(n, len(values[r]))):
                top: dict[str, float] = {}
                for index, value in zip(indices[r][t], values[r][t]):
                    top[text[index]] = max(value, top.get(text[index], float("-inf")))
                entries.append(TokenLogprob(text[row[t]], top.get(text[row[t]]), top))
            out.append(tuple(entries))
        return out


class _PrefillUnsupported(Exception):
    """The model or cache cannot share a prefill between samples."""


__all__ = ["LoadedModel", "LogprobRecorder", "RowOutput", "enable_cuda_graphs_on_this_thread", "generate_executor",
           "off_main_thread_compile_config"]
