"""SPCT on a LoRA adapter (``spct.lora``, ``spct.recipe``): what the recipe trains is exactly what the embedded judge
merges at load, the training steps move the adapter the way they should, the recipe's stages run end to end and
resume, and an adapter's card sets the embedded judge's template. Models here are a tiny random Qwen2 (a stand-in,
not a judge) with SmolLM2's tokenizer."""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grm_plugin import GRMConfig  # noqa: E402
from grm_plugin.embedded import apply_adapter  # noqa: E402
from grm_plugin.spct import lora  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(path):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _randomise(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for module in lora.lora_modules(model).values():
            module.lora_B.normal_(std=0.05)


def _ids(tokenizer, text="Score the responses, then write Scores: \\boxed{3, 9}"):
    return torch.tensor([tokenizer(text)["input_ids"]])


def test_the_saved_adapter_merged_by_the_embedded_loader_reproduces_the_trained_model(tiny_policy_dir, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_policy_dir)
    trained = _model(tiny_policy_dir)
    names = lora.add_lora(trained, r=4, alpha=8)
    assert len(names) == 7 and all(".layers.0." in name for name in names)
    _randomise(trained)
    card = lora.save_adapter(trained, tmp_path / "adapter", card={"note": "test"}, dtype=torch.float32)
    assert card["rank"] == 4 and card["modules"] == 7 and json.loads((tmp_path / "adapter" / "card.json").read_text())
    shipped = _model(tiny_policy_dir)
    applied = apply_adapter(shipped, tmp_path / "adapter" / "adapter.safetensors")
    assert applied.r == 4 and len(applied.modules) == 7
    ids = _ids(tokenizer)
    with torch.no_grad():
        expected = trained(ids).logits
        got = shipped(ids).logits
        plain = _model(tiny_policy_dir)(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapter changed the model


def test_merging_and_disabling_the_adapter_restore_the_weights_exactly(tiny_policy_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_policy_dir)
    model = _model(tiny_policy_dir)
    lora.add_lora(model, r=4, alpha=8)
    _randomise(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = _ids(tokenizer)
    with torch.no_grad():
        live = model(ids).logits
        with lora.adapter_merged(model):
            merged = model(ids).logits
        with lora.adapter_disabled(model):
            base = model(ids).logits
    assert torch.allclose(live, merged, atol=1e-4)
    assert torch.allclose(base, _model(tiny_policy_dir)(ids).logits, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_supervised_training_lowers_the_loss_on_completion_tokens_only(tiny_policy_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_policy_dir)
    model = _model(tiny_policy_dir)
    lora.add_lora(model, r=8, alpha=16)
    messages = [{"role": "user", "content": "Judge these."}]
    examples = [lora.Example(lora.encode_prompt(tokenizer, messages),
                             lora.encode_completion(tokenizer, f"Scores: \\boxed{{{i}, 9}}")) for i in range(1, 5)]
    assert examples[0].completion[-1] == tokenizer.eos_token_id
    first = -torch.cat(lora.completion_logprobs(model, examples, tokenizer.pad_token_id)).mean().item()
    stats = lora.train_supervised(model, examples * 8, tokenizer.pad_token_id, epochs=6, learning_rate=3e-2,
                                  max_tokens=300, log=lambda _: None)
    last = -torch.cat(lora.completion_logprobs(model, examples, tokenizer.pad_token_id)).mean().item()
    # a random 32-wide model with tied embeddings cannot move its logits far: a clear drop is all it can show
    assert stats["steps"] > 3 and last < first - 0.15
    counts = [len(x) for x in lora.completion_logprobs(model, examples, tokenizer.pad_token_id)]
    assert counts == [len(e.completion) for e in examples]


def test_a_grpo_step_moves_the_adapter_only_when_a_group_disagrees(tiny_policy_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_policy_dir)
    model = _model(tiny_policy_dir)
    lora.add_lora(model, r=4, alpha=8)
    _randomise(model)
    reference = lora.adapter_factors(model)
    prompt = lora.encode_prompt(tokenizer, [{"role": "user", "content": "Judge."}])
    completions = [tokenizer(f"Scores: \\boxed{{{i}, 5}}")["input_ids"] for i in (1, 2, 3, 4)]
    optimizer = torch.optim.AdamW(lora.lora_parameters(model), lr=1e-2)
    before = [p.detach().clone() for p in lora.lora_parameters(model)]
    flat = lora.grpo_step(model, optimizer, [prompt] * 4, completions, [1.0] * 4, 4, tokenizer.pad_token_id,
                          tokenizer.eos_token_id, beta=0.02, reference=reference)
    assert flat["informative_groups"] == 0 and all(torch.equal(a, b) for a, b in
                                                    zip(before, lora.lora_parameters(model)))
    example = [lora.Example(prompt, completions[0] + [tokenizer.eos_token_id])]
    liked = lora.completion_logprobs(model, example, tokenizer.pad_token_id)[0].mean().item()
    for _ in range(5):
        stats = lora.grpo_step(model, optimizer, [prompt] * 4, completions, [1.0, -1.0, -1.0, -1.0], 4,
                               tokenizer.pad_token_id, tokenizer.eos_token_id, beta=0.02, reference=reference)
    assert stats["informative_groups"] == 1.0 and stats["kl"] > 0
    after = lora.completion_logprobs(model, example, tokenizer.pad_token_id)[0].mean().item()
    assert after > liked  # the rewarded completion became more likely


def test_the_meta_head_learns_a_separable_signal_and_auc_counts_ties_half():
    torch.manual_seed(0)
    labels = (torch.rand(400) > 0.5).float()
    features = torch.randn(400, 16)
    features[:, :8] += labels[:, None] * 1.5  # not on every feature alike: the head's LayerNorm removes a common shift
    head, _ = lora.train_meta_head(features, labels, epochs=40)
    with torch.no_grad():
        scores = head(features).tolist()
    assert lora.auc(scores, labels.tolist()) > 0.9
    assert lora.auc([1, 1], [1, 0]) == 0.5 and lora.auc([0.2, 0.9], [0, 1]) == 1.0 and lora.auc([1], [1]) is None


def test_the_recipe_runs_every_stage_and_resumes_from_exported_files(tiny_policy_dir, tmp_path):
    from grm_plugin.spct.recipe import SCALES, Recipe

    scale = {**SCALES["tiny"], "sft_items": 6, "rft_items": 3, "meta_items": 2, "eval_items": 2, "max_new_tokens": 8}
    logs: list[str] = []
    recipe = Recipe(tiny_policy_dir, tmp_path / "work", scale, log=logs.append)
    results = recipe.run(["sft", "rft", "rl", "meta", "eval"])
    assert results["sft"]["rows"] == 12 and results["sft"]["distinct_prompts"] == 6
    assert results["rft"]["samples"] == 9 and results["rl"]["steps"] == scale["rl_steps"]
    assert {"heldout", "heldout_families"} <= set(results["eval"])
    card = json.loads((tmp_path / "work" / "rl" / "card.json").read_text())
    assert card["judge_defaults"] == {"template": "compact", "max_tokens": 320}

    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "spct" / "recipe.py"
    spec = importlib.util.spec_from_file_location("spct_recipe_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    example.export(tmp_path / "work", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results.json", "rl.card.json", "rl.safetensors", "rl_pool.json"]  # the meta head: none, nothing parsed
    example.restore(tmp_path / "out", tmp_path / "again")
    again = Recipe(tiny_policy_dir, tmp_path / "again", scale, log=logs.append)
    assert all(again.done(stage) for stage in ("sft", "rft", "rl", "eval"))
    assert again.load_latest("meta") == "rl"
    assert json.loads((tmp_path / "again" / "rl" / "card.json").read_text())["judge_defaults"]["template"] == "compact"


def test_a_stopped_rl_stage_continues_where_it_paused(tiny_policy_dir, tmp_path):
    from grm_plugin.spct.recipe import SCALES, Recipe

    scale = {**SCALES["tiny"], "sft_items": 2, "rft_items": 2, "rl_steps": 3, "max_new_tokens": 6}
    recipe = Recipe(tiny_policy_dir, tmp_path, scale, log=lambda _: None)
    recipe.run(["sft"])
    recipe._deadline_monotonic = lambda reserve=0.0: 0.0  # the deadline has passed: one step, then a pause
    recipe.run(["rl"])
    assert recipe.results["rl"]["steps"] == 1 and recipe.results["rl"]["partial"]
    assert (tmp_path / "rl_partial" / "card.json").exists() and not recipe.done("rl")
    resumed = Recipe(tiny_policy_dir, tmp_path, scale, log=lambda _: None)
    resumed.run(["rl"])
    assert resumed.results["rl"]["steps"] == 3 and not resumed.results["rl"]["partial"]


def test_an_adapter_card_sets_the_embedded_judges_template_unless_it_is_given(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter.safetensors").write_bytes(b"not read here")
    (folder / "card.json").write_text(json.dumps({"judge_defaults": {"template": "compact", "max_tokens": 320,
                                                                     "k": 99}}))
    config = GRMConfig(embedded_adapter=str(folder)).with_embedded_defaults()
    assert (config.template, config.max_tokens, config.k) == ("compact", 320, 1)
    explicit = GRMConfig(embedded_adapter=str(folder), template="deepseek-grm", max_tokens=100).with_embedded_defaults()
    assert (explicit.template, explicit.max_tokens) == ("deepseek-grm", 100)
    assert GRMConfig(embedded_adapter="none").with_embedded_defaults().template == "deepseek-grm"
    served = GRMConfig(embedded_adapter=str(folder), model="m", base_url="http://x").with_embedded_defaults()
    assert served.template == "deepseek-grm"


def test_token_batches_respect_the_budget():
    examples = [lora.Example([1] * n, [2] * 3) for n in random.Random(0).sample(range(5, 200), 60)]
    batches = lora.token_batches(examples, 1000, random.Random(0))
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in examples)
    assert all(len(b) * max(e.length for e in b) <= 1000 for b in batches)


def test_fixed_shape_static_cache_generation_matches_dynamic_greedy(tiny_policy_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_policy_dir)
    model = _model(tiny_policy_dir)
    lora.add_lora(model, r=4, alpha=8)
    _randomise(model)
    prompts = [lora.encode_prompt(tokenizer, [{"role": "user", "content": text}])
               for text in ("Judge the first.", "Judge this rather longer second prompt, please.")]
    dynamic = lora.generate(model, tokenizer, prompts, temperature=0.0, max_new_tokens=6)
    static = lora.generate(model, tokenizer, prompts, temperature=0.0, max_new_tokens=6, pad_to=96,
                           cache_implementation="static")
    assert dynamic == static and all(len(ids) == 6 or tokenizer.eos_token_id not in ids for ids in dynamic)
