"""SPCT (Self-Principled Critique Tuning): the paper's training recipes for a generalist GRM.

- ``rules``: when a judgement is correct (Eq. 10) and the rule reward (Eq. 11), ``SPCTRuleReward`` for GRPO.
- ``data``: rejective fine-tuning sets (N_RFT samples, hinted sampling), RL prompts, meta RM labels.
- ``train``: the stages on TRL/transformers (``train_sft``, ``train_rl``, ``train_meta_rm``).
Preference items come from ``grm_plugin.preferences`` (loaders and a synthetic verifiable generator).
"""

from .data import HINT, N_RFT, RFTStats, build_meta_dataset, build_rft_dataset, build_rl_dataset, is_correct
from .rules import SPCTRuleReward, judgement_correct, rule_reward
from .train import GRPO_GROUP, KL_BETA, train_meta_rm, train_rl, train_sft

__all__ = ["GRPO_GROUP", "HINT", "KL_BETA", "N_RFT", "RFTStats", "SPCTRuleReward", "build_meta_dataset",
           "build_rft_dataset", "build_rl_dataset", "is_correct", "judgement_correct", "rule_reward", "train_meta_rm",
           "train_rl", "train_sft"]
