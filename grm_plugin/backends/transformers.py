"""TransformersBackend: a local Hugging Face ``transformers`` model as the judge's engine, with dynamic batching.

Requests that arrive at the same time from many coroutines (GRMReward judges every request concurrently) are gathered
into shared ``generate`` calls: per event loop one queue and one worker task, which waits ``batch_window_ms`` (or
until ``max_batch_size`` sequences are queued), packs the queued prompts into batches bounded by ``max_batch_size``
sequences and ``max_batch_tokens`` ((padded prompt + new tokens) x sequences), and runs each batch in a worker thread
so the event loop is never blocked. One ``generate`` runs on a model at a time; requests are never serialised one by
one. A failed batch fails every request in it (and only those); a cancelled caller's rows are dropped.

The n samples of a prompt share one prefill: the left-padded prompts (minus their last token) go through the model
once, the resulting KV cache is expanded to n rows per prompt (``Cache.batch_select_indices``), and ``generate``
continues from it (it feeds only the last prompt token of each row). With ``cache_implementation="static"`` the
expanded prefix is written into a reused StaticCache instead (transformers then compiles the decoding step on CUDA
with CUDA graphs, recorded on the one generate thread per device: ``enable_cuda_graphs_on_this_thread``; without
CUDA graphs where that fails).
A model that cannot share a prefill (encoder-decoder, no expandable cache, sliding-window layers in a static cache)
gets every sample row prefilled, as ``num_return_sequences`` would do, with a warning once. Greedy requests generate
one row and copy it.

Models load lazily, once per process (module-level cache keyed by model, GGUF file, device and dtype), from a local
folder, a Hugging Face id already in the local cache (never downloaded), a ``.gguf`` file, or, when no model is set,
the embedded SmolLM2-135M-Instruct smoke-test judge (``grm_plugin.embedded``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

try:
    import torch
    import transformers  # noqa: F401 - fail here, with the install hint, when it is missing
except ImportError as exc:  # pragma: no cover - exercised only without the optional dependencies
    raise ImportError(
        "the transformers engine needs torch and transformers, which are not installed: "
        f"pip install 'grm-plugin[local]' ({exc})"
    ) from exc

from ..errors import BackendError, ConfigError
from . import ChatMessages, Completion, SamplingParams, ScoresConstraint, TokenLogprob

logger = logging.getLogger("grm_plugin.backends.transformers")

# extra_body keys the local engine understands, mapped to generate() arguments
_EXTRA_BODY_KEYS = {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty",
                    "min_tokens": "min_new_tokens"}
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


# -------------------------------------------------------------------------------------------------------------------
# Devices, dtypes and loading


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when present, else the CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device: {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from exc


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA, float32 elsewhere; else the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ConfigError(f"dtype: expected 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}") from None


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a folder / hub id (``path``), or a GGUF file (``gguf_path``)."""

    path: str | None = None
    gguf_path: str | None = None
    embedded: bool = False

    @property
    def name(self) -> str:
        if self.embedded:
            return "embedded SmolLM2-135M-Instruct"
        return self.gguf_path or self.path or "?"


def resolve_source(model: str | None, gguf_file: str | None) -> ModelSource:
    """Turn the config's ``model`` / ``gguf_file`` into a ModelSource (no loading; GGUF files in the hub cache are
    looked up locally only). ``model=None`` and no ``gguf_file`` is the embedded judge."""
    if model is None and gguf_file is None:
        from .. import embedded

        return ModelSource(path=str(embedded.embedded_model_dir()), embedded=True)
    if model is None:
        path = Path(gguf_file).expanduser()  # type: ignore[arg-type]
        if not path.is_file():
            raise ConfigError(f"gguf_file {gguf_file!r} is not a file; give the file's path, or model= the folder or "
                              "Hugging Face id holding it")
        return ModelSource(gguf_path=str(path))
    if gguf_file is None:
        if model.lower().endswith(".gguf"):
            path = Path(model).expanduser()
            if not path.is_file():
                raise ConfigError(f"model {model!r} names a .gguf file that does not exist")
            return ModelSource(gguf_path=str(path))
        return ModelSource(path=model)
    candidate = Path(gguf_file).expanduser()
    if candidate.is_absolute() and candidate.is_file():
        return ModelSource(gguf_path=str(candidate))
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / gguf_file
        if not path.is_file():
            raise ConfigError(f"gguf_file {gguf_file!r} is not in the folder {model!r}")
        return ModelSource(gguf_path=str(path))
    from transformers.utils import cached_file

    try:
        found = cached_file(model, gguf_file, local_files_only=True)
    except OSError as exc:
        raise ConfigError(_missing_model_message(f"{model}/{gguf_file}", exc)) from None
    return ModelSource(gguf_path=str(found))


def _missing_model_message(name: str, exc: BaseException) -> str:
    detail = " ".join(str(exc).split())[:200]
    return (f"cannot load the judge model {name!r} from local files ({type(exc).__name__}: {detail}). "
            f"grm-plugin never downloads models: download it first (`hf download {name}`), or pass a local folder "
            "or .gguf file as model=; to use a served model instead, set base_url= (GRM_BASE_URL) too")


def load_gguf(gguf_path: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a GGUF file as a dequantised transformers model (in ``dtype``) and its tokenizer.

    The tensors are read with transformers' GGUF reader (``load_gguf_checkpoint``), which needs only ``gguf``;
    ``from_pretrained(gguf_file=...)`` would also require ``accelerate``. Falls back to ``from_pretrained`` if that
    reader is gone from a future transformers.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError:  # pragma: no cover - a transformers without the legacy reader
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, local_files_only=True)
        return model, tokenizer
    config = AutoConfig.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = load_gguf_checkpoint(gguf_path, return_tensors=True, model_to_load=model, torch_dtype=dtype)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(f"the GGUF file {gguf_path!r} does not match its architecture: missing "
                          f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()
    return model, tokenizer


def load_model(source: ModelSource, device: torch.device, dtype: torch.dtype) -> "LoadedModel":
    """Load a model and tokenizer (no caching: ``get_model`` caches). Raises ConfigError when nothing is found."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.embedded:
        from .. import embedded

        embedded.ensure_embedded_model(Path(source.path))  # converts the GGUF once, into the cache folder
    if source.gguf_path:
        model, tokenizer = load_gguf(source.gguf_path, dtype)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            if Path(str(source.path)).expanduser().is_dir() and not isinstance(exc, OSError):
                raise
            raise ConfigError(_missing_model_message(str(source.path), exc)) from None
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, source.name)


_MODELS: dict[tuple[str, str, str, str], "LoadedModel"] = {}
_MODELS_LOCK = threading.Lock()
_LOADING: dict[tuple[str, str, str, str], threading.Lock] = {}


def get_model(source: ModelSource, device: torch.device, dtype: torch.dtype) -> "LoadedModel":
    """The process-wide loaded model for (source, device, dtype), loaded on first use; thread-safe, loads once."""
    key = (str(source.path), str(source.gguf_path), str(device), str(dtype))
    with _MODELS_LOCK:
        found = _MODELS.get(key)
        if found is not None:
            return found
        lock = _LOADING.setdefault(key, threading.Lock())
    with lock:
        with _MODELS_LOCK:
            found = _MODELS.get(key)
        if found is None:
            found = load_model(source, device, dtype)
            with _MODELS_LOCK:
                _MODELS[key] = found
        return found


def clear_model_cache() -> None:
    """Forget the loaded models (they are freed once no backend holds them)."""
    with _MODELS_LOCK:
        _MODELS.clear()


# -------------------------------------------------------------------------------------------------------------------
# One model with its tokenizer: tokenising and batched generation (runs in a worker thread)


@dataclass
class RowOutput:
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
            from .scores_processor import ScoresLogitsProcessor
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


# -------------------------------------------------------------------------------------------------------------------
# Dynamic batching


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
            ``PreTrainedModel`` (then pass ``tokenizer`` too), or None for the embedded smoke-test judge.
        gguf_file: a GGUF file name inside ``model`` (folder or hub id), or a GGUF file path.
        tokenizer: the tokenizer of a ``model`` given as an object.
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
            self._loaded = LoadedModel(model, tokenizer)
            self.source = ModelSource(path=self._loaded.name)
            self.device = self._loaded.device
            self.dtype = next(model.parameters()).dtype
        else:
            self.source = resolve_source(None if model is None else str(model), gguf_file)
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
            if self.source.embedded:
                from .. import embedded

                embedded.warn_smoke_test_judge()
        self.name = self.source.name
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary())
        self.generate_calls = 0  # how many model.generate calls this backend made (for tests and benchmarks)

    @classmethod
    def from_config(cls, config: Any) -> "TransformersBackend":
        """The backend a GRMConfig asks for (``model`` unset: the embedded smoke-test judge)."""
        return cls(config.model, gguf_file=config.gguf_file, device=config.device, dtype=config.dtype,
                   max_batch_tokens=config.max_batch_tokens, max_batch_size=config.max_batch_size,
                   batch_window_ms=config.batch_window_ms,
                   cache_implementation=None if config.kv_cache == "dynamic" else config.kv_cache)

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

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        return state

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
        state = self._state()
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
            state = self._states.pop(asyncio.get_running_loop(), None)
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


__all__ = ["LoadedModel", "ModelSource", "TransformersBackend", "clear_model_cache", "enable_cuda_graphs_on_this_thread",
           "generate_executor", "get_model", "load_gguf", "load_model", "off_main_thread_compile_config", "resolve_device", "resolve_dtype",
           "resolve_source"]
