"""Loading a local model for the transformers engine: the torch device and dtype, where the weights are (a folder,
a Hugging Face id already in the local cache, a ``.gguf`` file), reading GGUF files, and the process-wide cache that
loads each (source, device, dtype) once.

Nothing is ever downloaded. A source may carry a ``prepare`` step that makes its folder ready before the first load
(the embedded judge converts its GGUF there; the engine does not know what it does). A ``LoadSteps`` given as that
step may also edit the loaded model (the embedded judge merges a LoRA delta into its weights); its ``variant`` is part
of the cache key, so the edited and the unedited model are never confused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ...errors import ConfigError
from .generation import LoadedModel


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
class LoadSteps:
    """A ``prepare`` step that also edits the loaded model: ``before()`` runs before every uncached load (what a plain
    ``prepare`` function does), ``after(model)`` right after it, on the model in its dtype and still on the CPU, and
    edits it in place (e.g. merges a LoRA delta into the weights). ``variant`` names what ``after`` does (e.g. the
    adapter's digest): the process-wide cache keys on it, so a source with an edit never shares a loaded model with
    the same weights without it (or with another edit). Callable like a plain ``prepare`` function (it runs
    ``before``), so it goes wherever one does."""

    before: Callable[[], object] | None = None
    after: Callable[[Any], object] | None = None
    variant: str = ""

    def __call__(self) -> object:
        return self.before() if self.before is not None else None


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a folder / hub id (``path``), or a GGUF file (``gguf_path``). ``label`` names
    the model in messages (default: its path). ``prepare``, when set, runs before every uncached load from this
    source and makes ``path`` ready (e.g. converts a file into that folder once)."""

    path: str | None = None
    gguf_path: str | None = None
    label: str | None = None
    prepare: Callable[[], object] | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.label or self.gguf_path or self.path or "?"

    @property
    def variant(self) -> str:
        """What a ``LoadSteps`` prepare step changes in the loaded model ('' for none): part of the cache key."""
        return self.prepare.variant if isinstance(self.prepare, LoadSteps) else ""


def resolve_source(model: str | None, gguf_file: str | None) -> ModelSource:
    """Turn ``model`` / ``gguf_file`` into a ModelSource (no loading; GGUF files in the hub cache are looked up
    locally only)."""
    if model is None and gguf_file is None:
        raise ConfigError("the transformers engine needs a model: model= a local folder, a Hugging Face id already "
                          "downloaded, or a .gguf file (a GRMConfig without a model resolves to the embedded judge)")
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


def load_model(source: ModelSource, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load a model and tokenizer (no caching: ``get_model`` caches). Raises ConfigError when nothing is found."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.prepare is not None:
        source.prepare()  # e.g. the embedded judge converting its GGUF once, into the cache folder
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
    if isinstance(source.prepare, LoadSteps) and source.prepare.after is not None:
        source.prepare.after(model)  # e.g. the embedded judge merging its LoRA adapter into the weights
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, source.name)


_MODELS: dict[tuple[str, str, str, str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_LOADING: dict[tuple[str, str, str, str, str], threading.Lock] = {}


def get_model(source: ModelSource, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """The process-wide loaded model for (source and its variant, device, dtype), loaded on first use; thread-safe,
    loads once."""
    key = (str(source.path), str(source.gguf_path), source.variant, str(device), str(dtype))
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


__all__ = ["LoadSteps", "ModelSource", "clear_model_cache", "get_model", "load_gguf", "load_model", "resolve_device",
           "resolve_dtype", "resolve_source"]
