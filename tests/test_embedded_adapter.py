"""The embedded judge with a LoRA adapter merged at load (``embedded_adapter`` / ``GRM_EMBEDDED_ADAPTER``): a random
``grm-lora-v1`` adapter (q_proj and v_proj of every layer, r=4, alpha=8) changes the greedy text; ``"none"`` and
``"auto"`` without a shipped adapter give exactly the base weights; a damaged adapter fails with a ConfigError naming
the file and how to turn the adapter off. The real SmolLM2-135M-Instruct runs here: most tests load it at the engine's
loading level (``load_model``, uncached, a fraction of a second once converted), one goes through ``GRMReward``."""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from grm_plugin import ConfigError, GRMConfig, GRMReward, ScoreRequest, embedded  # noqa: E402
from grm_plugin.backends.transformers import ModelSource, load_model  # noqa: E402
from grm_plugin.config import make_backend  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PROMPT = [{"role": "user", "content": "Name one colour of the sky."}]
NEW_TOKENS = 12
R, ALPHA = 4, 8.0
LAYERS = 30  # SmolLM2-135M
TARGETS = [f"model.layers.{i}.self_attn.{name}" for i in range(LAYERS) for name in ("q_proj", "v_proj")]
OFF = "GRM_EMBEDDED_ADAPTER=none"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """The converted embedded model: test_embedded_judge.py's when it ran first (it must convert into a fresh folder
    itself, so this module never converts into that one), else one of this module's own."""
    shared = tmp_path_factory.getbasetemp() / "grm-cache"
    if embedded.is_converted(embedded.embedded_model_dir(shared)):
        return shared
    own = tmp_path_factory.getbasetemp() / "grm-cache-adapter"
    embedded.ensure_embedded_model(embedded.embedded_model_dir(own))
    return own


@pytest.fixture
def no_shipped_adapter(tmp_path, monkeypatch):
    """Point the package-data lookup at an empty folder: 'auto' finds nothing to apply."""
    monkeypatch.setattr(embedded, "SHIPPED_ADAPTER", tmp_path / "no-shipped-adapter")


def load(cache_dir: Path, adapter):
    """The embedded judge as the engine loads it (uncached), with ``adapter`` resolved as the config does."""
    judge = embedded.embedded_judge(cache_dir, adapter=adapter)
    source = ModelSource(path=judge["model"], label=judge["name"], prepare=judge["prepare"])
    return load_model(source, torch.device("cpu"), torch.float32)


def greedy(loaded) -> str:
    ids = torch.tensor([loaded.encode(PROMPT)])
    with torch.no_grad():
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                    do_sample=False, pad_token_id=loaded.pad_id)
    return loaded.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def lora_tensors(model, modules=TARGETS, r=R, scale=0.1, seed=0) -> dict:
    """Random A [r, in] and B [out, r] (B non-zero, large enough to change the text) for ``modules`` of ``model``."""
    generator = torch.Generator().manual_seed(seed)
    found = dict(model.named_modules())
    tensors = {}
    for name in modules:
        out_features, in_features = found[name].weight.shape
        tensors[f"{name}.lora_A"] = torch.randn(r, in_features, generator=generator) / math.sqrt(in_features)
        tensors[f"{name}.lora_B"] = (torch.randn(out_features, r, generator=generator) * scale).to(torch.bfloat16)
    return tensors


def write_adapter(folder: Path, tensors: dict, **metadata) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "grm-lora-v1", "alpha": str(ALPHA), "r": str(R), "base": "SmolLM2-135M-Instruct", **metadata}
    safetensors_torch.save_file(tensors, str(folder / "adapter.safetensors"), metadata=meta)
    (folder / "card.json").write_text(json.dumps({"base": meta["base"], "data": "random (test)", "seeds": [0],
                                                  "steps": 0, "figures": {}}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base(cache_dir):
    """The base model, loaded with no adapter machinery at all, and its greedy text."""
    folder = embedded.ensure_embedded_model(embedded.embedded_model_dir(cache_dir))
    loaded = load_model(ModelSource(path=str(folder)), torch.device("cpu"), torch.float32)
    return loaded, greedy(loaded)


@pytest.fixture(scope="module")
def adapter_dir(base, tmp_path_factory) -> Path:
    return write_adapter(tmp_path_factory.mktemp("adapter") / "embedded-adapter", lora_tensors(base[0].model))


@pytest.fixture(scope="module")
def adapted(cache_dir, adapter_dir):
    loaded = load(cache_dir, str(adapter_dir))
    return loaded, greedy(loaded)


def weight(loaded, name: str):
    return dict(loaded.model.named_modules())[name].weight


def test_the_adapter_is_merged_and_changes_the_greedy_text(base, adapted, adapter_dir):
    (base_model, base_text), (model, text) = base, adapted
    assert text != base_text, f"the adapter did not change {base_text!r}"
    applied = embedded.applied_adapter(model)
    assert applied is not None and applied == model.model.grm_adapter
    assert Path(applied.path) == adapter_dir / "adapter.safetensors"
    assert applied.modules == tuple(sorted(TARGETS)) and (applied.r, applied.alpha) == (R, ALPHA)
    assert applied.card["data"] == "random (test)"
    assert applied.digest == embedded.adapter_digest(adapter_dir / "adapter.safetensors")
    # W += (alpha / r) * (B @ A) in float32, on exactly the named modules
    tensors = safetensors_torch.load_file(str(adapter_dir / "adapter.safetensors"))
    name = "model.layers.3.self_attn.v_proj"
    delta = tensors[f"{name}.lora_B"].float() @ tensors[f"{name}.lora_A"].float()
    assert torch.equal(weight(model, name), weight(base_model, name) + (ALPHA / R) * delta)
    for untouched in ("model.layers.3.self_attn.k_proj", "model.layers.3.mlp.down_proj", "lm_head"):
        assert torch.equal(weight(model, untouched), weight(base_model, untouched))
    assert embedded.applied_adapter(base_model) is None


def test_none_loads_exactly_the_base_weights_and_text(cache_dir, base):
    base_model, base_text = base
    for setting in ("none", "NONE", None):
        loaded = load(cache_dir, setting)
        assert embedded.applied_adapter(loaded) is None
        for name in ("model.layers.0.self_attn.q_proj", "model.layers.29.self_attn.v_proj"):
            assert torch.equal(weight(loaded, name), weight(base_model, name))
    assert greedy(loaded) == base_text


@pytest.mark.usefixtures("no_shipped_adapter")
def test_auto_without_a_shipped_adapter_is_the_base(cache_dir, base):
    base_model, base_text = base
    assert embedded.shipped_adapter() is None and embedded.resolve_adapter("auto") is None
    judge = embedded.embedded_judge(cache_dir)  # "auto" is the default
    assert isinstance(judge["prepare"], functools.partial)  # no LoadSteps: nothing to merge
    loaded = load(cache_dir, "auto")
    assert embedded.applied_adapter(loaded) is None
    name = "model.layers.0.self_attn.q_proj"
    assert torch.equal(weight(loaded, name), weight(base_model, name))
    assert greedy(loaded) == base_text


def test_auto_applies_the_shipped_adapter(cache_dir, adapter_dir, monkeypatch):
    monkeypatch.setattr(embedded, "SHIPPED_ADAPTER", adapter_dir)
    assert embedded.resolve_adapter("auto") == adapter_dir / "adapter.safetensors"
    assert embedded.applied_adapter(load(cache_dir, "auto")).path == str(adapter_dir / "adapter.safetensors")


def test_the_adapter_shipped_in_the_package_loads(cache_dir):
    """The real shipped adapter (when there is one) fits the embedded model and says where it comes from."""
    shipped = embedded.shipped_adapter()
    if shipped is None:
        pytest.skip("no adapter is shipped in grm_plugin/data/embedded-adapter/")
    assert (shipped.parent / "card.json").is_file()
    applied = embedded.applied_adapter(load(cache_dir, "auto"))
    assert applied is not None and applied.path == str(shipped) and applied.card


def test_a_file_path_works_like_its_folder_and_the_merge_is_logged(cache_dir, adapter_dir, caplog):
    caplog.set_level(logging.INFO, logger="grm_plugin.embedded")
    file = adapter_dir / "adapter.safetensors"
    applied = embedded.applied_adapter(load(cache_dir, file))
    assert applied.path == str(file) and len(applied.modules) == len(TARGETS)
    [message] = [r.getMessage() for r in caplog.records if "applied the LoRA adapter" in r.getMessage()]
    assert str(file) in message and f"{len(TARGETS)} modules (q_proj, v_proj)" in message and f"r={R}" in message


def _corrupt(folder: Path, model) -> Path:
    folder.mkdir()
    (folder / "adapter.safetensors").write_bytes(b"this is not a safetensors file" * 10)
    return folder


def _wrong_shape(folder: Path, model) -> Path:
    tensors = lora_tensors(model, TARGETS[:4])
    tensors[f"{TARGETS[2]}.lora_A"] = torch.zeros(R, 100)
    return write_adapter(folder, tensors)


def _unknown_module(folder: Path, model) -> Path:
    tensors = lora_tensors(model, TARGETS[:2])
    tensors["model.layers.99.self_attn.q_proj.lora_A"] = torch.zeros(R, 576)
    tensors["model.layers.99.self_attn.q_proj.lora_B"] = torch.zeros(576, R)
    return write_adapter(folder, tensors)


def _not_linear(folder: Path, model) -> Path:
    return write_adapter(folder, {"model.embed_tokens.lora_A": torch.zeros(R, 576),
                                  "model.embed_tokens.lora_B": torch.zeros(576, R)})


def _tied(folder: Path, model) -> Path:
    return write_adapter(folder, lora_tensors(model, ["lm_head"]))


def _wrong_format(folder: Path, model) -> Path:
    return write_adapter(folder, lora_tensors(model, TARGETS[:2]), format="peft")


def _wrong_r(folder: Path, model) -> Path:
    return write_adapter(folder, lora_tensors(model, TARGETS[:2]), r="8")


def _half_pair(folder: Path, model) -> Path:
    tensors = lora_tensors(model, TARGETS[:2])
    del tensors[f"{TARGETS[1]}.lora_B"]
    return write_adapter(folder, tensors)


def _not_finite(folder: Path, model) -> Path:
    tensors = lora_tensors(model, TARGETS[:2])
    tensors[f"{TARGETS[1]}.lora_B"][0, 0] = float("nan")
    return write_adapter(folder, tensors)


@pytest.mark.parametrize("make, problem", [
    (_corrupt, "not a readable safetensors file"),
    (_wrong_shape, f"{TARGETS[2]}.lora_A has shape [4, 100], expected [4, 576]"),
    (_unknown_module, "has no module 'model.layers.99.self_attn.q_proj'"),
    (_not_linear, "'model.embed_tokens' is a Embedding, not a linear layer"),
    (_tied, "shares its weight with 'model.embed_tokens.weight'"),
    (_wrong_format, "'format' is 'peft', expected 'grm-lora-v1'"),
    (_wrong_r, "lora_A has shape [4, 576], expected [8, 576]"),
    (_half_pair, f"without both lora_A and lora_B: '{TARGETS[1]}'"),
    (_not_finite, "NaN or infinite"),
], ids=["corrupt", "wrong_shape", "unknown_module", "not_linear", "tied", "wrong_format", "wrong_r", "half_pair",
        "not_finite"])
def test_a_bad_adapter_raises_a_config_error_naming_the_file_and_the_way_out(cache_dir, base, tmp_path, make, problem):
    folder = make(tmp_path / "bad-adapter", base[0].model)
    with pytest.raises(ConfigError) as caught:
        load(cache_dir, str(folder))
    message = str(caught.value)
    assert str(folder / "adapter.safetensors") in message and problem in message and OFF in message
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no raw traceback


def test_a_missing_path_raises_when_the_judge_is_configured(cache_dir, tmp_path):
    missing = tmp_path / "no-such-adapter"
    for setting in (missing, missing / "adapter.safetensors"):
        with pytest.raises(ConfigError, match="no such file or folder") as caught:
            embedded.embedded_judge(cache_dir, adapter=setting)
        assert str(setting) in str(caught.value) and OFF in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="the folder has no adapter.safetensors.*GRM_EMBEDDED_ADAPTER=none"):
        embedded.embedded_judge(cache_dir, adapter=tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such file or folder"):
        GRMReward(embedded_adapter=str(missing))  # at construction (the cache key), not on the first call


def test_a_failed_adapter_leaves_the_model_untouched(cache_dir, base, tmp_path):
    loaded = load(cache_dir, "none")
    before = {name: weight(loaded, name).clone() for name in TARGETS[:3]}
    folder = _wrong_shape(tmp_path / "bad", loaded.model)  # the first two modules are fine, the third is not
    with pytest.raises(ConfigError):
        embedded.apply_adapter(loaded.model, folder / "adapter.safetensors")
    assert all(torch.equal(weight(loaded, name), before[name]) for name in before)
    assert embedded.applied_adapter(loaded) is None


def test_the_setting_comes_from_the_environment_and_keys_the_cache(adapter_dir, monkeypatch):
    monkeypatch.setenv("GRM_EMBEDDED_ADAPTER", str(adapter_dir))
    config = GRMConfig.load()
    assert config.embedded_adapter == str(adapter_dir)
    monkeypatch.setenv("GRM_EMBEDDED_ADAPTER", "none")
    assert GRMConfig.load().embedded_adapter is None
    monkeypatch.delenv("GRM_EMBEDDED_ADAPTER")
    assert GRMConfig.load().embedded_adapter == "auto"
    with pytest.raises(ConfigError, match="embedded_adapter"):
        GRMConfig.load(embedded_adapter=" ")
    digest = embedded.adapter_digest(adapter_dir / "adapter.safetensors")
    assert f'"embedded_adapter": "grm-lora-v1:{digest}"' in config.judge_fingerprint()
    assert config.judge_fingerprint() != GRMConfig(embedded_adapter="none").judge_fingerprint()
    # a judge of one's own ignores the field: the same cache key either way
    assert (GRMConfig(model="/models/judge", embedded_adapter=str(adapter_dir)).judge_fingerprint()
            == GRMConfig(model="/models/judge", embedded_adapter="none").judge_fingerprint())
    assert make_backend(GRMConfig(model="/models/judge", embedded_adapter="/no/such/adapter")).source.variant == ""


def test_grm_reward_scores_with_the_adapter_and_keeps_the_base_apart(cache_dir, adapter_dir, monkeypatch):
    monkeypatch.setenv("GRM_CACHE_DIR", str(cache_dir))
    reward = GRMReward(embedded_adapter=str(adapter_dir), max_tokens=16)
    try:
        [result] = reward.score([ScoreRequest(prompt="What is 2 + 2?", responses=["4", "5"])])
    finally:
        reward.close()
    assert result.samples == 1 and result.judgements[0].completion_tokens > 0
    backend = make_backend(reward.config)  # the process-wide model cache gives back the model that judged
    digest = embedded.adapter_digest(adapter_dir / "adapter.safetensors")
    assert backend.source.variant == f"grm-lora-v1:{digest}"
    applied = embedded.applied_adapter(backend.load())
    assert applied is not None and applied.path == str(adapter_dir / "adapter.safetensors")
    base_backend = make_backend(reward.config.replace(embedded_adapter="none"))
    assert base_backend.source.path == backend.source.path  # same converted folder, a different loaded model
    assert embedded.applied_adapter(base_backend.load()) is None


def test_grmreward_embedded_adapter_none_means_off():
    """``GRMReward(embedded_adapter=None)`` loads the base, as the issue promises (None elsewhere means "unset")."""
    from grm_plugin import GRMReward

    assert GRMReward(embedded_adapter=None).config.embedded_adapter is None
    assert GRMReward().config.embedded_adapter == "auto"
