"""The SPCT training stages on TRL and transformers: rejective fine-tuning (SFT), rule-based online RL (GRPO with
Eq. 11) and the meta RM (a sequence classifier trained with binary cross-entropy).

Each stage takes a model folder (or ``"embedded"``: the converted SmolLM2 judge), rows or a JSONL file from
``spct.data``, and writes a folder that the next stage, ``GRMReward(model=folder)`` or
``GRMReward(meta_rm=TransformersMetaRM(folder))`` loads. Needs ``grm-plugin[trl]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..preferences import read_rows

# GRPO settings the paper gives for the rule-based RL stage.
GRPO_GROUP = 4
KL_BETA = 0.08  # 27B; the paper uses 0.002 for the 16B model


def resolve_model(model: str | Path) -> str:
    """A model folder for training: ``"embedded"`` is the embedded judge (converted from its GGUF once)."""
    if str(model) == "embedded":
        from ..embedded import ensure_embedded_model

        return str(ensure_embedded_model())
    return str(model)


def _dataset(data: Any) -> Any:
    import datasets

    if isinstance(data, datasets.Dataset):
        return data
    rows = read_rows(str(data)) if isinstance(data, (str, Path)) else list(data)
    if not rows:
        raise ValueError("the training data is empty")
    return datasets.Dataset.from_list(rows)


def _common(output_dir: str | Path, max_steps: int, epochs: float, learning_rate: float, batch_size: int,
            overrides: dict[str, Any]) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    args = dict(output_dir=str(output_dir), max_steps=max_steps, num_train_epochs=epochs, learning_rate=learning_rate,
                per_device_train_batch_size=batch_size, logging_steps=10, save_strategy="no", report_to="none",
                bf16=cuda, use_cpu=not cuda, seed=0)
    args.update(overrides)
    return args


def _trl() -> Any:
    try:
        import trl
    except ImportError as exc:
        raise ImportError("the SPCT training stages need TRL: pip install 'grm-plugin[trl]'") from exc
    return trl


class TrainingDiverged(RuntimeError):
    """A training stage produced a non-finite loss or gradient norm (the model is not saved)."""


def _divergence_guard() -> Any:
    """A callback that stops a run whose logged gradient norm or loss is NaN/inf. transformers' Trainer logs a NaN
    loss as 0 (``logging_nan_inf_filter``) and keeps stepping, which would silently save a broken model."""
    from transformers import TrainerCallback

    class _Guard(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
            for key in ("grad_norm", "loss"):
                value = (logs or {}).get(key)
                if isinstance(value, (int, float)) and not math.isfinite(value):
                    raise TrainingDiverged(f"training diverged at step {state.global_step}: {key} = {value}; "
                                           "lower the learning rate or train in float32 (bf16=False)")

    return _Guard()


def _finish(trainer: Any, output_dir: str | Path) -> str:
    trainer.add_callback(_divergence_guard())
    trainer.train()
    trainer.save_model(str(output_dir))
    processing = getattr(trainer, "processing_class", None)
    if processing is not None:
        processing.save_pretrained(str(output_dir))
    return str(output_dir)


def train_sft(model: str | Path, data: Any, output_dir: str | Path, *, max_steps: int = -1, epochs: float = 1.0,
              learning_rate: float = 1e-5, batch_size: int = 8, max_length: int = 4096, **overrides: Any) -> str:
    """Rejective fine-tuning: supervised fine-tuning on ``build_rft_dataset`` rows (loss on the judgement only).
    ``overrides`` go to ``trl.SFTConfig``. Returns the output folder."""
    trl = _trl()
    args = trl.SFTConfig(**_common(output_dir, max_steps, epochs, learning_rate, batch_size,
                                   {"max_length": max_length, **overrides}))
    dataset = _dataset(data).select_columns(["prompt", "completion"])
    trainer = trl.SFTTrainer(model=resolve_model(model), args=args, train_dataset=dataset)
    return _finish(trainer, output_dir)


def train_rl(model: str | Path, data: Any, output_dir: str | Path, *, reward: Any = None,
             num_generations: int = GRPO_GROUP, beta: float = KL_BETA, max_steps: int = -1, epochs: float = 1.0,
             learning_rate: float = 1e-6, batch_size: int = 8, max_completion_length: int = 1024,
             temperature: float = 1.0, **overrides: Any) -> str:
    """Rule-based online RL: GRPO on ``build_rl_dataset`` prompts with ``SPCTRuleReward`` (Eq. 11; no format
    reward), group size 4 and KL coefficient 0.08 as the paper. ``overrides`` go to ``trl.GRPOConfig``."""
    from .rules import SPCTRuleReward

    trl = _trl()
    if batch_size % num_generations:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of num_generations ({num_generations})")
    args = trl.GRPOConfig(**_common(output_dir, max_steps, epochs, learning_rate, batch_size, {
        "num_generations": num_generations, "beta": beta, "max_completion_length": max_completion_length,
        "temperature": temperature, **overrides}))
    trainer = trl.GRPOTrainer(model=resolve_model(model), reward_funcs=[reward or SPCTRuleReward()], args=args,
                              train_dataset=_dataset(data))
    return _finish(trainer, output_dir)


def train_meta_rm(model: str | Path, data: Any, output_dir: str | Path, *, max_steps: int = -1, epochs: float = 1.0,
                  learning_rate: float = 2e-5, batch_size: int = 8, max_length: int = 2048,
                  **overrides: Any) -> str:
    """The meta RM: a one-logit sequence classifier on ``build_meta_dataset`` rows (``text``, ``label`` 0/1),
    trained with binary cross-entropy; the folder loads with ``TransformersMetaRM(folder)``. ``overrides`` go to
    ``transformers.TrainingArguments``."""
    import transformers

    path = resolve_model(model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"  # the verdict at the end is what the meta RM must see
    # Right padding: the classifier reads the last non-pad token either way, and left padding (what a tokenizer saved
    # by GRPO carries) leaves padded query rows fully masked, whose NaN the CUDA attention kernels spread into the
    # gradients in bf16.
    tokenizer.padding_side = "right"
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, problem_type="multi_label_classification")  # one logit + BCEWithLogitsLoss
    classifier.config.pad_token_id = tokenizer.pad_token_id
    dataset = _dataset(data)
    missing = {"text", "label"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"meta RM data: missing column(s) {sorted(missing)}; build_meta_dataset writes text, label")

    def encode(batch: dict[str, Sequence[Any]]) -> dict[str, Any]:
        encoded = tokenizer(list(batch["text"]), truncation=True, max_length=max_length)
        encoded["labels"] = [[float(x)] for x in batch["label"]]
        return encoded

    encoded = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    args = transformers.TrainingArguments(**_common(output_dir, max_steps, epochs, learning_rate, batch_size,
                                                    overrides))
    trainer = transformers.Trainer(model=classifier, args=args, train_dataset=encoded,
                                   data_collator=transformers.DataCollatorWithPadding(tokenizer),
                                   processing_class=tokenizer)
    return _finish(trainer, output_dir)


__all__ = ["GRPO_GROUP", "KL_BETA", "TrainingDiverged", "resolve_model", "train_meta_rm", "train_rl", "train_sft"]
