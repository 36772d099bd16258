"""The transformers engine: a local Hugging Face ``transformers`` model as the judge's engine.

Three jobs, one module each:

- ``loading``: the torch device and dtype, where the weights are (a local folder, a Hugging Face id already in the
  local cache, never downloaded, or a ``.gguf`` file), reading GGUF files, and the process-wide model cache (keyed by
  model, GGUF file, device and dtype).
- ``generation``: ``LoadedModel``, one batched ``generate`` of left-padded prompts. The n samples of a prompt share
  one prefill: the prompts (minus their last token) go through the model once, the KV cache is expanded to n rows per
  prompt (``Cache.batch_select_indices``) and ``generate`` continues from it. With ``cache_implementation="static"``
  the expanded prefix goes into a reused StaticCache, and transformers compiles the decoding step on CUDA with CUDA
  graphs, recorded on the one generate thread per device (``enable_cuda_graphs_on_this_thread``; without CUDA graphs
  where that fails). A model that cannot share a prefill (encoder-decoder, no expandable cache, sliding-window layers
  in a static cache) gets every sample row prefilled, as ``num_return_sequences`` would do, with a warning once.
  Greedy requests generate one row and copy it. Token log-probabilities are recorded by a logits processor.
- ``backend``: ``TransformersBackend``, the Backend protocol with dynamic batching of concurrent requests.

The engine knows nothing of GRMConfig or of the embedded judge: ``grm_plugin.config.make_backend`` maps a
configuration to its keyword arguments (no model configured: the embedded judge's folder, from
``grm_plugin.embedded``).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401 - fail here, with the install hint, when it is missing
except ImportError as exc:  # pragma: no cover - exercised only without the optional dependencies
    raise ImportError(
        "the transformers engine needs torch and transformers, which are not installed: "
        f"pip install 'grm-plugin[local]' ({exc})"
    ) from exc

from .backend import TransformersBackend, plan_batches, rows_per_batch
from .generation import (
    LoadedModel,
    LogprobRecorder,
    RowOutput,
    enable_cuda_graphs_on_this_thread,
    generate_executor,
    off_main_thread_compile_config,
)
from .loading import (
    ModelSource,
    clear_model_cache,
    get_model,
    load_gguf,
    load_model,
    resolve_device,
    resolve_dtype,
    resolve_source,
)

__all__ = ["LoadedModel", "LogprobRecorder", "ModelSource", "RowOutput", "TransformersBackend", "clear_model_cache",
           "enable_cuda_graphs_on_this_thread", "generate_executor", "get_model", "load_gguf", "load_model",
           "off_main_thread_compile_config", "plan_batches", "resolve_device", "resolve_dtype", "resolve_source",
           "rows_per_batch"]
