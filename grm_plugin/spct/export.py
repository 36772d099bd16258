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

FORMAT = "grm-lora-v1"


def export_lora_delta(base: str | Path, tuned: str | Path, out: str | Path, *, rank: int = 12,
                      card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out/adapter.safetensors`` (the rank-``rank`` SVD of every linear weight's change from ``base`` to
    ``tuned``, both model folders) and ``out/card.json`` (``card`` plus the export's own figures); returns them."""
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
    save_file(tensors, str(out / "adapter.safetensors"),
              metadata={"format": FORMAT, "alpha": str(float(rank)), "r": str(rank), "base": "SmolLM2-135M-Instruct"})
    info = {**(card or {}), "format": FORMAT, "rank": rank, "modules": len(tensors) // 2,
            "parameters": sum(t.numel() for t in tensors.values()),
            "bytes": (out / "adapter.safetensors").stat().st_size,
            "delta_energy_kept": kept / total if total else 1.0}
    (out / "card.json").write_text(json.dumps(info, indent=2))
    return info


def merge_lora_delta(model_folder: str | Path, adapter: str | Path, out: str | Path) -> str:
    """``model_folder`` with the adapter merged into its weights, saved to ``out`` (to judge with what ships)."""
    import torch
    import transformers
    from safetensors import safe_open

    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_folder), dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_folder))
    modules = dict(model.named_modules())
    with safe_open(str(Path(adapter) / "adapter.safetensors"), "pt") as handle:
        meta = handle.metadata()
        scale = float(meta["alpha"]) / int(meta["r"])
        for key in handle.keys():
            if key.endswith(".lora_A"):
                name = key[: -len(".lora_A")]
                a, b = handle.get_tensor(key).float(), handle.get_tensor(f"{name}.lora_B").float()
                weight = modules[name].weight
                weight.data += (scale * (b @ a)).to(weight.dtype)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return str(out)


__all__ = ["FORMAT", "export_lora_delta", "merge_lora_delta"]
