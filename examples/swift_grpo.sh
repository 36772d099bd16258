#!/usr/bin/env bash
# ms-swift 4.6 GRPO with grm-plugin as the reward: one plugin file, one reward name.
#
#   1. a judge engine: vLLM (or SGLang) serving a GRM on GPUs of its own
#   2. ms-swift's GRPO trainer with --external_plugins "$(grm plugin-path swift)" --reward_funcs grm: the
#      num_generations completions of a prompt are judged together, k samples each, voting; a `solution` column
#      becomes the judge's reference answer
#
# The judge is configured by GRM_* variables (or GRM_CONFIG_FILE), read when ms-swift builds the reward.
# Requirements: pip install grm-plugin ms-swift==4.6.0 (with the vLLM build of your cluster).
set -euo pipefail

MODEL="${MODEL:-BBQGOD/DeepSeek-GRM-27B}"
JUDGE_PORT="${JUDGE_PORT:-8001}"

CUDA_VISIBLE_DEVICES="${JUDGE_GPUS:-4,5,6,7}" vllm serve "$MODEL" --port "$JUDGE_PORT" \
  --data-parallel-size "${DP:-4}" --enable-prefix-caching & judge_pid=$!
trap 'kill $judge_pid 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$JUDGE_PORT/v1/models" >/dev/null; do sleep 5; done

export GRM_BASE_URL="http://127.0.0.1:$JUDGE_PORT/v1" GRM_MODEL="$MODEL" GRM_K="${K:-4}"

CUDA_VISIBLE_DEVICES="${POLICY_GPUS:-0,1,2,3}" NPROC_PER_NODE=4 swift rlhf \
  --rlhf_type grpo \
  --model "${POLICY:-Qwen/Qwen2.5-3B-Instruct}" \
  --dataset "${DATASET:-AI-MO/NuminaMath-TIR#5000}" \
  --external_plugins "$(grm plugin-path swift)" \
  --reward_funcs grm \
  --num_generations 8 --per_device_train_batch_size 8 --max_completion_length 1024 \
  --use_vllm true --vllm_mode colocate \
  --learning_rate 1e-6 --num_train_epochs 1 --output_dir output/grpo-grm \
  "$@"
