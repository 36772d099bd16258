#!/usr/bin/env bash
# OpenRLHF PPO/GRPO with grm-plugin as the remote reward model.
#
#   1. a judge engine: vLLM (or SGLang) serving a GRM, data-parallel over the GPUs you give it
#   2. `grm serve` in front of it: holds OpenRLHF's single-rollout requests until a prompt's N_SAMPLES rollouts
#      have arrived (or --group-wait seconds passed) and judges them together, k samples each, voting
#   3. OpenRLHF pointed at it with --reward.remote_url
#
# Offline smoke run on one machine without GPUs: JUDGE=simulated runs the simulated judge (an OpenAI-compatible
# stand-in for a language model) instead of vLLM and sends one rollout the way OpenRLHF does.
set -euo pipefail

JUDGE="${JUDGE:-vllm}"
GRM_PORT="${GRM_PORT:-8000}"
JUDGE_PORT="${JUDGE_PORT:-8001}"
# Rollouts per prompt: OpenRLHF's --rollout.n_samples_per_prompt and grm's --group-size (the smoke run sends one).
if [[ "$JUDGE" == "simulated" ]]; then N_SAMPLES="${N_SAMPLES:-1}"; else N_SAMPLES="${N_SAMPLES:-8}"; fi

if [[ "$JUDGE" == "simulated" ]]; then
  grm simulate-judge --port "$JUDGE_PORT" & judge_pid=$!
  MODEL=sim
else
  MODEL="${MODEL:-BBQGOD/DeepSeek-GRM-27B}"
  vllm serve "$MODEL" --port "$JUDGE_PORT" --data-parallel-size "${DP:-4}" --enable-prefix-caching & judge_pid=$!
fi
trap 'kill $judge_pid ${grm_pid:-} 2>/dev/null || true' EXIT

# Several replicas scale out: start one per judge deployment and list them all in --reward.remote_url.
grm serve --base-url "http://127.0.0.1:$JUDGE_PORT/v1" --model "$MODEL" --k "${K:-4}" --port "$GRM_PORT" \
  --group-size "$N_SAMPLES" --group-wait 60 --batch-window-ms 15 --max-batch 64 & grm_pid=$!
until curl -sf "http://127.0.0.1:$GRM_PORT/health" >/dev/null; do sleep 1; done

if [[ "$JUDGE" == "simulated" ]]; then
  prompt=$'<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n'
  python - "$GRM_PORT" "$prompt" <<'PY'
import asyncio, sys
from openrlhf.utils.agent import SingleTurnAgentExecutor   # pip install --no-deps openrlhf==0.11.2 sympy pylatexenc
port, prompt = sys.argv[1], sys.argv[2]
executor = SingleTurnAgentExecutor(remote_rm_url=f"http://127.0.0.1:{port}/get_reward")
print(asyncio.run(executor._fetch_rewards_via_http([prompt + "2 + 3 = 5."], [prompt], ["5"])))
PY
  exit 0
fi

# OpenRLHF 0.11 (the policy on its own GPUs); the rest of your usual flags go here.
python -m openrlhf.cli.train_ppo_ray \
  --pretrain Qwen/Qwen2.5-7B-Instruct \
  --reward.remote_url "http://127.0.0.1:$GRM_PORT/get_reward" --rollout.n_samples_per_prompt "$N_SAMPLES" \
  --prompt_data your/prompt-dataset --input_key prompt --label_key answer --apply_chat_template \
  "$@"
