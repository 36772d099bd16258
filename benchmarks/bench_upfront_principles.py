"""Judge tokens per reward with upfront principles against joint ones, for GRPO groups of 8 over 3 epochs.

The simulated judge (an OpenAI-compatible stand-in for a language model, not a model) writes principles of about
``--principles-tokens`` tokens and a critique of about ``--critique-tokens`` tokens per response (it counts 4
characters a token). Each epoch every prompt gets a fresh group of 8 completions, judged as one ScoreRequest of 8
responses (what the batch-of-pairs call, TRL's reward-function signature, builds in group mode). Joint
principles are rewritten by every sample; upfront principles are written once per prompt (first epoch) and reused.

    python benchmarks/bench_upfront_principles.py            # 32 prompts, groups of 8, 3 epochs, k = 1 and 4
"""

from __future__ import annotations

import argparse
import platform
import random
from pathlib import Path

from _report import print_table, write_report

from grm_plugin import GRMReward, ScoreRequest
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ks", default="1,4")
    parser.add_argument("--principles-tokens", type=int, default=150)
    parser.add_argument("--critique-tokens", type=int, default=60)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "upfront_principles.json"))
    args = parser.parse_args()
    rng = random.Random(0)
    epochs = [[ScoreRequest(prompt=f"prompt {p}: explain the idea", responses=[
        with_quality(f"epoch {e} rollout {i}", rng.uniform(2, 9)) for i in range(args.group)])
        for p in range(args.prompts)] for e in range(args.epochs)]
    rows = []
    with SimulatedJudge(noise=1.0, seed=0, principles_tokens=args.principles_tokens,
                        critique_tokens=args.critique_tokens) as judge:
        for k in [int(k) for k in args.ks.split(",")]:
            for mode in ("joint", "upfront"):
                reward = GRMReward(base_url=judge.base_url, model="simulated-judge", k=k, principles=mode)
                prompt_tokens = completion_tokens = principles_tokens = saved = 0
                for requests in epochs:
                    results = reward.score(requests)
                    prompt_tokens += sum(r.prompt_tokens for r in results)
                    completion_tokens += sum(r.completion_tokens for r in results)
                    principles_tokens += sum(r.principles_tokens for r in results)
                    saved += sum(r.principles_tokens_saved for r in results)
                rewards = args.prompts * args.group * args.epochs
                rows.append({"k": k, "principles": mode, "prompt_tokens_per_reward": prompt_tokens / rewards,
                             "completion_tokens_per_reward": completion_tokens / rewards,
                             "total_tokens_per_reward": (prompt_tokens + completion_tokens) / rewards,
                             "principles_writing_tokens": principles_tokens, "counted_saved_tokens": saved})
    for row in rows:
        joint = next(r for r in rows if r["k"] == row["k"] and r["principles"] == "joint")
        row["completion_saving"] = 1 - row["completion_tokens_per_reward"] / joint["completion_tokens_per_reward"]
        row["total_saving"] = 1 - row["total_tokens_per_reward"] / joint["total_tokens_per_reward"]
    print(f"simulated judge: principles ~{args.principles_tokens} tokens, critique ~{args.critique_tokens} tokens per "
          f"response; {args.prompts} prompts x groups of {args.group} x {args.epochs} epochs")
    print_table(["k", "principles", "prompt tok/reward", "completion tok/reward", "total tok/reward",
                 "completion saving", "total saving"],
                [[r["k"], r["principles"], f"{r['prompt_tokens_per_reward']:.1f}",
                  f"{r['completion_tokens_per_reward']:.1f}", f"{r['total_tokens_per_reward']:.1f}",
                  f"{r['completion_saving']:.1%}", f"{r['total_saving']:.1%}"] for r in rows])
    write_report({"benchmark": "upfront_principles", "settings": vars(args), "python": platform.python_version(),
                  "rows": rows}, args.out)


if __name__ == "__main__":
    main()
