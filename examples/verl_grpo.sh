#!/usr/bin/env bash
# verl 0.9 GRPO with grm-plugin as the reward: one configuration line selects it.
#
#   1. a judge engine: vLLM (or SGLang) serving a GRM on GPUs of its own
#   2. verl's trainer with the reward manager `grm` (registered by the `verl.plugins` entry point of grm-plugin,
#      loaded on `import verl`): each reward worker gathers its samples for a few milliseconds and judges the
#      responses of one prompt together, k samples each, voting
#
# MANAGER=naive keeps verl's default manager and calls grm_plugin.adapters.verl:compute_score per sample instead
# (each response judged alone). Judge settings are GRMConfig fields (GRM_* variables, GRM_CONFIG_FILE, or
# +reward.custom_reward_function.reward_kwargs.<field>=... as below, which reaches every Ray node); the adapter's own
# (timeout_s, invalid_reward, prompt_keys, batch_window_ms, ...) go the same way. The prompt shown to the judge is
# extra_info.question (verl's own gsm8k/math preprocessing writes it), else extra_info.prompt / raw_prompt.
#
# Requirements: pip install "grm-plugin[verl]" verl==0.9.1 (with the vLLM build of your cluster).
set -euo pipefail

MODEL="${MODEL:-BBQGOD/DeepSeek-GRM-27B}"
JUDGE_PORT="${JUDGE_PORT:-8001}"
JUDGE_HOST="${JUDGE_HOST:-127.0.0.1}"  # an address every node of the Ray cluster reaches
MANAGER="${MANAGER:-grm}"
DATA="${DATA:-$HOME/data/gsm8k}"   # python examples/data_preprocess/gsm8k.py --local_save_dir ~/data/gsm8k (verl repo)

CUDA_VISIBLE_DEVICES="${JUDGE_GPUS:-4,5,6,7}" vllm serve "$MODEL" --port "$JUDGE_PORT" \
  --data-parallel-size "${DP:-4}" --enable-prefix-caching & judge_pid=$!
trap 'kill $judge_pid 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$JUDGE_PORT/v1/models" >/dev/null; do sleep 5; done

judge=(
  "+reward.custom_reward_function.reward_kwargs.base_url=http://$JUDGE_HOST:$JUDGE_PORT/v1"
  "+reward.custom_reward_function.reward_kwargs.model=$MODEL"
  "+reward.custom_reward_function.reward_kwargs.k=${K:-4}"
  "+reward.custom_reward_function.reward_kwargs.timeout_s=600"
)
if [[ "$MANAGER" == "grm" ]]; then
  reward=(reward.reward_manager.name=grm)            # the one line: group-aware judging
else
  reward=(reward.custom_reward_function.path=pkg://grm_plugin.adapters.verl
          reward.custom_reward_function.name=compute_score)
fi
# Note: verl 0.9's main_ppo ignores the old top-level custom_reward_function.* keys; use reward.custom_reward_function.*

CUDA_VISIBLE_DEVICES="${POLICY_GPUS:-0,1,2,3}" python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
  data.train_batch_size=256 data.max_prompt_length=512 data.max_response_length=1024 \
  actor_rollout_ref.model.path="${POLICY:-Qwen/Qwen2.5-3B-Instruct}" \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
  reward.num_workers=8 "${reward[@]}" "${judge[@]}" \
  trainer.n_gpus_per_node=4 trainer.nnodes=1 trainer.total_epochs=1 trainer.logger='["console"]' \
  "$@"
