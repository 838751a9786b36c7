#!/usr/bin/env bash
# CaT-RL with veRL (GRPO), the paper's setting: G=8, lr 5e-7, batch 256, reward-level KL 1e-3,
# max response 1536. The policy trains on veRL/FSDP with vLLM rollouts; the frozen anchor runs on its
# own vLLM replicas (comma-separated URLs: catrl balances them client-side with failover).
# Config keys follow veRL 0.9.1 (verl/trainer/config/_generated_ppo_trainer.yaml); check them
# against your veRL version. No labels are used: the ground truths in the parquet are ignored.
#
#   vllm serve Qwen/Qwen3-4B --port 8001 &  vllm serve Qwen/Qwen3-4B --port 8002 &   # anchor replicas (initial weights)
#   bash docs/verl/cat_grpo.sh
set -euo pipefail
POLICY=${POLICY:-Qwen/Qwen3-4B}
ANCHOR_URLS=${ANCHOR_URLS:-http://anchor-1:8001/v1,http://anchor-2:8002/v1}
REWARD_FILE=$(python -c 'import catrl.integrations.verl as m; print(m.__file__)')

python -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  algorithm.use_kl_in_reward=True algorithm.kl_ctrl.kl_coef=0.001 \
  actor_rollout_ref.actor.use_kl_loss=False \
  data.train_files=${TRAIN_FILES:-data/math/train.parquet} data.val_files=${VAL_FILES:-data/math500/test.parquet} \
  data.train_batch_size=256 data.max_prompt_length=1024 data.max_response_length=1536 \
  actor_rollout_ref.model.path=$POLICY \
  actor_rollout_ref.actor.optim.lr=5e-7 \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 \
  reward.reward_manager.name=batch \
  reward.custom_reward_function.path=$REWARD_FILE \
  reward.custom_reward_function.name=compute_score \
  +reward.custom_reward_function.reward_kwargs.anchor_base_url=$ANCHOR_URLS \
  +reward.custom_reward_function.reward_kwargs.anchor_model=$POLICY \
  +reward.custom_reward_function.reward_kwargs.group_size=8 \
  +reward.custom_reward_function.reward_kwargs.max_tokens=2048 \
  trainer.n_gpus_per_node=8 trainer.nnodes=1 trainer.total_epochs=1 \
  trainer.logger='[console]' trainer.project_name=catrl trainer.experiment_name=cat-rl-grpo
