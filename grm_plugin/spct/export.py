"""A trained judge as a compact delta: the difference between its linear weights and the base model's, cut to rank
r by SVD and written in the ``grm-lora-v1`` format the embedded judge merges at load (``W += (alpha/r) B @ A``).

Training can then fine-tune every weight (the SPCT recipes do) and ship a file of a few MB: for SmolLM2-135M, rank 12
on the 210 linear layers of its 30 blocks is 3.7M parameters, 7.3 MB in bfloat16. Embeddings and norms are not
exported; how much of the trained judge survives is measured by judging with the merged base + delta, which is what
ships.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..embedded import ADAPTER_CARD, ADAPTER_FILE, ADAPTER_FORMAT, EMBEDDED_NAME, apply_adapter

FORMAT = ADAPTER_FORMAT


def export_lora_delta(base: str | Path, tuned: str | Path, out: str | Path, *, rank: int = 12,
                      card: dict[str, Any] | None = None, base_name: str = EMBEDDED_NAME) -> dict[str, Any]:
    """Write ``out/adapter.safetensors`` (the rank-``rank`` SVD of every linear weight's change from ``base`` to
    ``tuned``, both model folders; ``base_name`` is the metadata's ``base``) and ``out/card.json`` (``card`` plus the
    export's own figures); returns them."""
    import torch
    import transformers
    from safetensors.torch import save_file

    base_model = transformers.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    tuned_model = transformers.AutoModelForCausalLM.from_pretrained(str(tuned), dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tuned_modules = dict(tuned_model.named_modules())
    tensors: dict[str, torch.Tensor] = {}
    kept = total = 0.0
    for name, module in base_model.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith("model.layers."):
            continue
        delta = (tuned_modules[name].weight.detach().to(device) - module.weight.detach().to(device)).float()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.numel())
        tensors[f"{name}.lora_B"] = (u[:, :r] * s[:r]).to(torch.bfloat16).cpu().contiguous()
        tensors[f"{name}.lora_A"] = vh[:r].to(torch.bfloat16).cpu().contiguous()
        kept += float((s[:r] ** 2).sum())
        total += float((s ** 2).sum())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_FILE),
              metadata={"format": FORMAT, "alpha": str(float(rank)), "r": str(rank), "base": base_name})
    info = {**(card or {}), "format": FORMAT, "rank": rank, "modules": len(tensors) // 2,
            "parameters": sum(t.numel() for t in tensors.values()), "bytes": (out / ADAPTER_FILE).stat().st_size,
            "delta_energy_kept": kept / total if total else 1.0}
    (out / ADAPTER_CARD).write_text(json.dumps(info, indent=2))
    return info


def merge_lora_delta(model_folder: str | Path, adapter: str | Path, out: str | Path, *,
                     base_name: str = EMBEDDED_NAME) -> str:
    """``model_folder`` with the adapter folder's delta merged into its weights (``embedded.apply_adapter``, the merge
    the embedded judge does at load, with its checks), saved to ``out``: to judge with what ships."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_folder), dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_folder))
    apply_adapter(model, Path(adapter) / ADAPTER_FILE, base=base_name)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return str(out)


__all__ = ["FORMAT", "export_lora_delta", "merge_lora_delta"]
