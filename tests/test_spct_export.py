"""The trained judge as a compact delta (``grm_plugin.spct.export``): on a tiny random Llama (no download), a
change of rank 2 exported at rank 4 merges back to the trained weights, and a lower rank keeps less of it."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors")

from grm_plugin.spct.export import FORMAT, export_lora_delta, merge_lora_delta  # noqa: E402


def _tiny(folder):
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return model


def test_a_low_rank_change_round_trips_through_the_delta(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    base = _tiny(tmp_path / "base")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")))
    tokenizer.save_pretrained(tmp_path / "base")
    generator = torch.Generator().manual_seed(1)
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            module.weight.data += (torch.randn(module.out_features, 2, generator=generator)
                                   @ torch.randn(2, module.in_features, generator=generator)) * 0.1
    base.save_pretrained(tmp_path / "tuned")

    info = export_lora_delta(tmp_path / "base", tmp_path / "tuned", tmp_path / "adapter", rank=4, card={"seed": 1})
    assert info["modules"] == 14 and info["delta_energy_kept"] > 0.999  # 7 linear layers a block, 2 blocks
    assert json.loads((tmp_path / "adapter" / "card.json").read_text())["seed"] == 1
    with safetensors.safe_open(str(tmp_path / "adapter" / "adapter.safetensors"), "pt") as handle:
        assert handle.metadata()["format"] == FORMAT and handle.metadata()["r"] == "4"
        assert handle.get_tensor("model.layers.0.self_attn.q_proj.lora_A").shape == (4, 32)

    merge_lora_delta(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    tuned = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "tuned")
    merged = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "merged")
    for (name, a), (_, b) in zip(tuned.named_parameters(), merged.named_parameters()):
        assert torch.allclose(a, b, atol=2e-2), name  # bfloat16 factors

    low = export_lora_delta(tmp_path / "base", tmp_path / "tuned", tmp_path / "low", rank=1)
    assert low["delta_energy_kept"] < 0.99 and low["bytes"] < info["bytes"]
