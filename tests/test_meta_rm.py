"""Meta RM guided voting: the top k_meta judgements by meta score are voted, meta scores are kept on the
judgements; a sequence-classification meta RM (tiny random model built from a config) rates the paper's input
format. Judge: the simulated judge (an OpenAI-compatible HTTP server standing in for a language model)."""

from __future__ import annotations

import json
import pickle

import pytest

from grm_plugin import GRMReward, ScoreRequest
from grm_plugin.errors import BackendError, ConfigError
from grm_plugin.meta_rm import FunctionMetaRM, keep_top, meta_rm_prompt
from grm_plugin.testing.simulated_judge import with_quality
from grm_plugin.types import Judgement

REQUEST = ScoreRequest(prompt="What is 2 + 3?", responses=[with_quality("5", 7), with_quality("6", 4)])


def prefers_second(request, judgement) -> float:
    """A rule meta RM that trusts judgements in proportion to how much they favour response 2."""
    return float(judgement.scores[1] - judgement.scores[0])


def test_guided_voting_keeps_the_top_half_by_meta_score(sim_judge):
    sim_judge.state.settings.noise = 3.0
    guided = GRMReward(base_url=sim_judge.base_url, model="sim", k=8, cache_size=0,
                       meta_rm=FunctionMetaRM(prefers_second))
    [result] = guided.score([REQUEST])
    assert result.samples == 8 and result.voted_samples == 4  # k_meta defaults to k/2
    kept = result.meta_kept
    assert len(kept) == 4
    rated = [j.meta_score for j in result.judgements]
    assert all(score is not None for score in rated)  # every valid judgement carries its meta score
    assert min(rated[i] for i in kept) >= max(rated[i] for i in range(8) if i not in kept)
    assert result.votes == [sum(result.judgements[i].scores[r] for i in kept) for r in range(2)]
    all_margin = sum(j.scores[1] - j.scores[0] for j in result.judgements) / 8
    assert result.mean_scores[1] - result.mean_scores[0] >= all_margin  # the vote leans the way the meta RM trusts


def test_k_meta_setting_and_validation(sim_judge):
    reward = GRMReward(base_url=sim_judge.base_url, model="sim", k=6, k_meta=2, cache_size=0,
                       meta_rm=FunctionMetaRM(prefers_second))
    [result] = reward.score([REQUEST])
    assert result.voted_samples == 2 and len(result.meta_kept) == 2
    with pytest.raises(ConfigError, match="k_meta"):
        GRMReward(base_url=sim_judge.base_url, model="sim", k=2, k_meta=3, meta_rm=FunctionMetaRM(prefers_second))
    with pytest.raises(ConfigError, match="meta_rm must be a MetaRM"):
        GRMReward(base_url=sim_judge.base_url, model="sim", meta_rm=lambda r, j: 1.0)


def test_keep_top_ignores_invalid_judgements_and_breaks_ties_by_sample_order():
    valid = Judgement(text="x", valid=True, scores=[1, 2])
    invalid = Judgement(text="x", valid=False, error="no scores")
    judgements = [valid, invalid, valid, valid]
    assert keep_top(judgements, [0.5, 9.0, 0.5, 0.7], 2) == [0, 3]
    assert keep_top(judgements, [0.1, 9.0, 0.5, 0.5], 2) == [2, 3]
    nan = float("nan")  # a diverged classifier: non-finite scores rank below every finite one
    assert keep_top(judgements, [nan, 9.0, 0.1, 0.2], 2) == [2, 3]
    assert keep_top(judgements, [0.3, 9.0, nan, float("inf")], 2) == [0, 2]


def test_async_meta_rm_and_pickling(sim_judge):
    async def rate(request, judgement):
        return float(judgement.scores[0])

    reward = GRMReward(base_url=sim_judge.base_url, model="sim", k=4, meta_rm=FunctionMetaRM(rate, name="first"))
    [result] = reward.score([REQUEST])
    assert result.voted_samples == 2
    named = GRMReward(base_url=sim_judge.base_url, model="sim", k=4, meta_rm=FunctionMetaRM(prefers_second))
    clone = pickle.loads(pickle.dumps(named))
    assert clone.meta_rm.name == "prefers_second" and clone.config.k == 4


def test_meta_rm_prompt_follows_the_paper_layout():
    judgement = Judgement(text="...", valid=True, principles="Correctness (100%)", critique="Response 1 is right.",
                          scores=[9, 2], order=[1, 0])
    text = meta_rm_prompt(REQUEST, judgement)
    assert text.startswith("Please score the responses.\n\n#### Conversation Context ####\nWhat is 2 + 3?")
    assert "#### Responses to be Scored ####" in text and "Response 1 is right." in text
    # responses in the order the judgement saw them, and its scores per shown slot
    assert text.index("[Response 1]\n" + with_quality("6", 4)) < text.index("[Response 2]\n" + with_quality("5", 7))
    assert text.rstrip().endswith("Scores: 2, 9")


@pytest.fixture(scope="module")
def tiny_meta_rm_dir(tmp_path_factory, smol_tokenizer_dir):
    """A tiny random LlamaForSequenceClassification (one label) with SmolLM2's tokenizer, saved to disk."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    tokenizer = transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      num_labels=1, pad_token_id=tokenizer.pad_token_id or 0)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-meta-rm")
    transformers.LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_transformers_meta_rm_on_a_tiny_sequence_classifier(sim_judge, tiny_meta_rm_dir):
    from grm_plugin.meta_rm import TransformersMetaRM

    meta = TransformersMetaRM(str(tiny_meta_rm_dir), device="cpu", batch_size=3)
    reward = GRMReward(base_url=sim_judge.base_url, model="sim", k=4, cache_size=0, meta_rm=meta)
    [result] = reward.score([REQUEST])
    scores = [j.meta_score for j in result.judgements]
    assert all(isinstance(s, float) for s in scores) and result.voted_samples == 2
    texts = [meta_rm_prompt(REQUEST, j) for j in result.judgements]
    assert meta.rate_texts(texts) == pytest.approx(scores, abs=1e-4)  # batched (3) == as rated
    assert meta.rate_texts(texts[:1]) == pytest.approx(scores[:1], abs=1e-4)  # one at a time, padding-free


def test_grm_eval_reports_meta_guided_curves_from_the_same_samples(sim_judge, tmp_path):
    """An oracle meta RM (it reads the simulated judge's hidden qualities) must make meta@k at least voting@k."""
    import re

    from grm_plugin.evaluation import run_eval, subsets
    from grm_plugin.preferences import PreferenceItem
    from grm_plugin.testing.simulated_judge import quality_pairs

    def oracle(request, judgement) -> float:
        qualities = [float(re.search(r"quality=([0-9.]+)", r).group(1)) for r in request.responses]
        better = max(range(len(qualities)), key=qualities.__getitem__)
        return float(judgement.scores[better] - max(s for i, s in enumerate(judgement.scores) if i != better))

    sim_judge.state.settings.noise = 2.0
    requests, better = quality_pairs(30, seed=1, gap=1.0)
    items = [PreferenceItem(str(i), r.prompt, list(r.responses), b) for i, (r, b) in enumerate(zip(requests, better))]
    reward = GRMReward(base_url=sim_judge.base_url, model="sim", meta_rm=FunctionMetaRM(oracle))
    report = run_eval(reward, items, [2, 4], tmp_path, with_position_bias=False)
    for row in report["curve"]:
        assert row["meta_accuracy"] >= row["accuracy"]
    assert "meta@k" in (tmp_path / "report.md").read_text()
    # meta@4 by hand: the top 2 of the 4 samples by meta score, voted
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    by_hand = []
    for record in samples:
        top = sorted(range(4), key=lambda i: (-record["meta"][i], i))[:2]
        votes = [sum(record["scores"][i][r] for i in top) for r in range(2)]
        best = record["best"]
        by_hand.append(1.0 if votes[best] > votes[1 - best] else 0.5 if votes[0] == votes[1] else 0.0)
    assert report["curve"][1]["meta_accuracy"] == pytest.approx(sum(by_hand) / len(by_hand))
    assert subsets(4, 4, 10, 0) == [[0, 1, 2, 3]]


def test_grm_eval_cli_with_a_meta_rm_folder(sim_judge, tiny_meta_rm_dir, tmp_path):
    import subprocess
    import sys

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": with_quality("a", 8), "rejected":
                                        with_quality("b", 3)}) + "\n" for i in range(3)))
    command = [sys.executable, "-m", "grm_plugin.cli", "eval", "--data", str(data), "--k", "1,2", "--out",
               str(tmp_path / "out"), "--base-url", sim_judge.base_url, "--model", "sim", "-q", "--no-position-bias"]
    result = subprocess.run(command + ["--meta-rm", str(tiny_meta_rm_dir)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "meta@k" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all("meta_accuracy" in row for row in report["curve"])
    missing = subprocess.run(command + ["--meta-rm", str(tmp_path / "nope")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "--meta-rm" in missing.stderr


def test_http_meta_rm_against_grm_serve_classify_matches_the_local_meta_rm(sim_judge, tiny_meta_rm_dir):
    """The remote meta RM speaks vLLM's classification API; `grm serve --meta-rm` serves it (here create_app with
    the tiny classifier under uvicorn): same ranking as the local model, so guided voting keeps the same samples."""
    import math

    import httpx

    pytest.importorskip("uvicorn")
    from served_app import Server

    from grm_plugin.meta_rm import HTTPMetaRM, TransformersMetaRM

    local = TransformersMetaRM(str(tiny_meta_rm_dir), device="cpu")
    judge = GRMReward(base_url=sim_judge.base_url, model="sim", k=6, cache_size=0)
    with Server(judge, meta_rm=local) as server:
        remote = HTTPMetaRM(f"{server.url}/classify", model="tiny")
        [with_local] = GRMReward(judge.config, meta_rm=local).score([REQUEST])
        [with_remote] = GRMReward(judge.config, meta_rm=remote).score([REQUEST])
        assert with_remote.meta_kept == with_local.meta_kept and with_remote.votes == with_local.votes
        expected = [1 / (1 + math.exp(-j.meta_score)) for j in with_local.judgements]
        assert [j.meta_score for j in with_remote.judgements] == pytest.approx(expected, abs=1e-4)
        for body, status in [({"input": []}, 422), ({"input": [3]}, 422), ({"text": "x"}, 422)]:
            reply = httpx.post(f"{server.url}/v1/classify", json=body)
            assert reply.status_code == status and "input" in reply.json()["error"]["message"]
        assert httpx.post(f"{server.url}/classify", json={"input": "one text"}).json()["data"][0]["num_classes"] == 1
    down = HTTPMetaRM(f"{server.url}/classify", max_retries=0, timeout=2)
    with pytest.raises(BackendError, match="connection failed"):
        GRMReward(judge.config, meta_rm=down).score([REQUEST])
    with pytest.raises(ValueError, match="url: expected an http"):
        HTTPMetaRM("localhost:8000")


class _ShortMetaRM:
    """A broken meta RM: one score however many judgements it is asked to rate."""

    name = "short"

    async def arate(self, request, judgements):
        return [1.0]


def test_a_meta_rm_that_miscounts_fails_as_an_engine_and_grm_serve_answers_503(sim_judge):
    from starlette.testclient import TestClient

    from grm_plugin.server import create_app

    reward = GRMReward(base_url=sim_judge.base_url, model="sim", k=4, cache_size=0, meta_rm=_ShortMetaRM())
    with pytest.raises(BackendError, match="meta RM 'short' returned 1 scores for 4 judgements"):
        reward.score([REQUEST])
    with TestClient(create_app(reward)) as client:
        reply = client.post("/v1/score", json=[REQUEST.model_dump(mode="json")])
        assert reply.status_code == 503 and "returned 1 scores" in reply.json()["error"]["message"]
        assert client.get("/health").status_code == 200
