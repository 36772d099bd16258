"""GRPO with a generative reward model as the reward: TRL's GRPOTrainer + GRMReward.

Runs end to end on a CPU, offline: the policy is SmolLM2-135M-Instruct and so is the judge (the embedded smoke-test
judge; its rewards are not meaningful, it only proves the pipeline). A few steps take a few minutes:

    python examples/trl_grpo.py --max-steps 2

Production setup: serve a real judge with vLLM and point the reward at it, then train as usual.

    vllm serve BBQGOD/DeepSeek-GRM-27B --port 8000 --enable-prefix-caching       # the judge, on its own GPUs
    python examples/trl_grpo.py --judge-url http://judge-host:8000/v1 --judge-model BBQGOD/DeepSeek-GRM-27B \\
        --k 4 --policy Qwen/Qwen2.5-1.5B-Instruct --max-steps 500

There, each GRPO group of ``num_generations`` completions of a prompt is judged in one judge prompt (group mode), k
judgements are sampled with the responses shuffled per sample and their scores summed (voting), the dataset's
``reference`` column is shown to the judge, and the critique and votes of every completion appear in TRL's
completions table (``log_completions=True``) as ``grm_critique`` / ``grm_votes``.
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from grm_plugin import embedded
from grm_plugin.adapters.trl import trl_reward

ROWS = [
    {"prompt": [{"role": "user", "content": "What is 12 * 12?"}], "reference": "144"},
    {"prompt": [{"role": "user", "content": "Name a primary colour."}], "reference": "red, blue or yellow"},
    {"prompt": [{"role": "user", "content": "Give one tip for sleeping better."}], "reference": None},
    {"prompt": [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What is the capital of Italy?"}], "reference": "Rome"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description="GRPO with GRMReward (TRL).")
    parser.add_argument("--policy", default=None, help="policy model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible judge server (default: embedded judge)")
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--k", type=int, default=1, help="judgements sampled per group (voting)")
    parser.add_argument("--judge-max-tokens", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--output-dir", default="grpo-grm-output")
    parser.add_argument("--async-reward", action="store_true", help="use the async reward (awaited in TRL's loop)")
    args = parser.parse_args()

    judge = {"base_url": args.judge_url, "model": args.judge_model} if args.judge_url else {}
    if args.judge_max_tokens or not args.judge_url:
        judge["max_tokens"] = args.judge_max_tokens or 160  # keeps the CPU smoke run short
    reward = trl_reward(name="grm", k=args.k, mode="group", asynchronous=args.async_reward, **judge)

    policy = args.policy or str(embedded.ensure_embedded_model())
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.num_generations,
        num_generations=args.num_generations, max_completion_length=32, logging_steps=1, learning_rate=1e-6,
        log_completions=True, num_completions_to_print=4, report_to="none", save_strategy="no",
        use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(ROWS))
    trainer.train()
    for entry in trainer.state.log_history:
        if "rewards/grm/mean" in entry:
            print(f"step {entry.get('step')}: reward mean {entry['rewards/grm/mean']:.2f}, "
                  f"parse-valid rate {entry.get('grm/parse_valid_rate', float('nan')):.2f}, "
                  f"judge latency {entry.get('grm/judge_latency_s', float('nan')):.1f}s")


if __name__ == "__main__":
    main()
