"""SPCT on a LoRA adapter, in plain PyTorch: cold-start SFT, rejective fine-tuning, rule-based GRPO (Eq. 11) and the
meta RM's scoring head, for a judge small enough to train in minutes (the embedded SmolLM2-135M).

Why not TRL and peft here: the adapter that ships is the ``grm-lora-v1`` file the embedded judge merges at load, so
training the LoRA factors directly makes what ships exactly what was trained and measured (no SVD of a full fine-tune,
no format conversion); and the recipe must fit short GPU slots, where sampling dominates: GRPO and RFT sample from
the adapter merged into the weights (one plain model, no per-layer adapter kernels), which TRL's trainers do not do
for a peft model. ``spct.train`` keeps the TRL stages for users who train full models.

Everything works on a CPU for tests (float32) and on a GPU in bfloat16 with float32 adapter weights.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..embedded import ADAPTER_CARD, ADAPTER_FILE, ADAPTER_FORMAT, EMBEDDED_NAME
from .train import TrainingDiverged

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * x @ A.T @ B.T``; the base weight is frozen, A and B train (float32)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.enabled = True
        self.merged: torch.Tensor | None = None  # the pristine base weight while the adapter is merged into it
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled or self.merged is not None:
            return y
        return y + ((x.to(self.lora_A.dtype) @ self.lora_A.t()) @ self.lora_B.t()).to(y.dtype) * self.scale

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale


def add_lora(model: nn.Module, r: int = 16, alpha: float = 32.0, targets: Sequence[str] = TARGETS) -> list[str]:
    """Wrap every targeted linear layer of the decoder blocks (``model.layers.*``) in ``LoRALinear``; freeze the rest.
    Returns the wrapped modules' names (as ``named_modules`` names the original linear layers)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and ".layers." in f".{name}" and name.rsplit(".", 1)[-1] in targets]
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent)
        setattr(holder, child, LoRALinear(getattr(holder, child), r, alpha))
    if not names:
        raise ValueError(f"add_lora: no linear layer named {targets} inside the model's decoder layers")
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """The wrapped layers by the name their base layer has in the plain model."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in lora_modules(model).values() for p in (m.lora_A, m.lora_B)]


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """The base model (the reference policy of GRPO's KL term)."""
    modules = list(lora_modules(model).values())
    for module in modules:
        module.enabled = False
    try:
        yield
    finally:
        for module in modules:
            module.enabled = True


def adapter_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A detached copy of every wrapped layer's (A, B): the reference policy GRPO's KL term measures against."""
    return {name: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for name, m in lora_modules(model).items()}


@contextmanager
def adapter_swapped(model: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """The model with other adapter factors (``adapter_factors``) for the duration; its own restored afterwards."""
    modules = lora_modules(model)
    own = adapter_factors(model)
    with torch.no_grad():
        for name, module in modules.items():
            module.lora_A.copy_(factors[name][0])
            module.lora_B.copy_(factors[name][1])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, module in modules.items():
                module.lora_A.copy_(own[name][0])
                module.lora_B.copy_(own[name][1])


@contextmanager
def adapter_merged(model: nn.Module) -> Iterator[None]:
    """The adapter added into the base weights (generation runs as a plain model), restored exactly afterwards."""
    modules = list(lora_modules(model).values())
    with torch.no_grad():
        for module in modules:
            weight = module.base.weight
            module.merged = weight.detach().clone()
            weight.copy_((module.merged.float() + module.delta()).to(weight.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for module in modules:
                module.base.weight.copy_(module.merged)
                module.merged = None


def save_adapter(model: nn.Module, out: str | Path, card: dict[str, Any] | None = None,
                 dtype: torch.dtype = torch.bfloat16, base: str = EMBEDDED_NAME) -> dict[str, Any]:
    """Write ``out/adapter.safetensors`` (``grm-lora-v1``: ``<module>.lora_A`` [r, in], ``<module>.lora_B`` [out, r],
    metadata format/alpha/r/base) and ``out/card.json``; returns the card."""
    import json

    from safetensors.torch import save_file

    modules = lora_modules(model)
    first = next(iter(modules.values()))
    tensors = {}
    for name, module in modules.items():
        tensors[f"{name}.lora_A"] = module.lora_A.detach().to(dtype).cpu().contiguous()
        tensors[f"{name}.lora_B"] = module.lora_B.detach().to(dtype).cpu().contiguous()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_FILE),
              metadata={"format": ADAPTER_FORMAT, "alpha": str(float(first.alpha)), "r": str(first.r), "base": base})
    info = {**(card or {}), "format": ADAPTER_FORMAT, "rank": first.r, "alpha": first.alpha, "modules": len(modules),
            "parameters": sum(t.numel() for t in tensors.values()), "bytes": (out / ADAPTER_FILE).stat().st_size}
    (out / ADAPTER_CARD).write_text(json.dumps(info, indent=2))
    return info


def load_adapter_weights(model: nn.Module, path: str | Path) -> None:
    """Load a ``grm-lora-v1`` file's factors into a model that ``add_lora`` wrapped with the same rank."""
    from safetensors.torch import load_file

    path = Path(path)
    tensors = load_file(str(path / ADAPTER_FILE if path.is_dir() else path))
    modules = lora_modules(model)
    missing = [name for name in modules if f"{name}.lora_A" not in tensors]
    if missing:
        raise ValueError(f"adapter {path}: no factors for {missing[:3]} ({len(missing)} modules)")
    with torch.no_grad():
        for name, module in modules.items():
            module.lora_A.copy_(tensors[f"{name}.lora_A"].float())
            module.lora_B.copy_(tensors[f"{name}.lora_B"].float())


# --- tokens ------------------------------------------------------------------------------------------------------


def encode_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The judge prompt's ids exactly as the transformers engine encodes it (chat template, assistant turn opened)."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_completion(tokenizer: Any, text: str) -> list[int]:
    """The judgement's ids followed by the end-of-turn token the engine stops at."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


@dataclass
class Example:
    prompt: list[int]
    completion: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.completion)


def token_batches(examples: Sequence[Example], max_tokens: int, rng: random.Random, max_rows: int = 256
                  ) -> list[list[Example]]:
    """Examples grouped by length so that rows x longest <= max_tokens, the batches in random order."""
    ordered = sorted(examples, key=lambda e: e.length)
    batches: list[list[Example]] = []
    current: list[Example] = []
    for example in ordered:
        if current and ((len(current) + 1) * example.length > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(example)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def _pad(examples: Sequence[Example], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask and the mask of positions whose next token is a completion token."""
    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    target = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        tokens = example.prompt + example.completion
        ids[row, :len(tokens)] = torch.tensor(tokens)
        attention[row, :len(tokens)] = 1
        target[row, len(example.prompt) - 1:len(tokens) - 1] = True
    return ids.to(device), attention.to(device), target.to(device)


def completion_logprobs(model: nn.Module, examples: Sequence[Example], pad_id: int) -> list[torch.Tensor]:
    """Per example, the log-probabilities of its completion tokens (with grad when enabled)."""
    device = next(model.parameters()).device
    ids, attention, target = _pad(examples, pad_id, device)
    with _autocast(device):
        hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state
        chosen = hidden[target]
        logits = model.lm_head(chosen).float()
    next_ids = ids[:, 1:][target[:, :-1]]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, next_ids[:, None])[:, 0]
    counts = target.sum(dim=1).tolist()
    return list(torch.split(logp, counts))


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# --- supervised stages ---------------------------------------------------------------------------------------------


def train_supervised(model: nn.Module, examples: Sequence[Example], pad_id: int, *, epochs: float = 1.0,
                     learning_rate: float = 2e-4, max_tokens: int = 32_768, warmup: float = 0.05, seed: int = 0,
                     log: Callable[[str], None] = print, deadline: float | None = None) -> dict[str, Any]:
    """Cross-entropy on completion tokens only, AdamW on the adapter, linear warm-up then cosine decay.
    Stops early (and says so) at ``deadline`` (a ``time.monotonic()`` value)."""
    rng = random.Random(f"sft:{seed}")
    whole = max(1, math.ceil(epochs))  # whole epochs drawn, then cut to the fraction asked for
    batches = [batch for _ in range(whole) for batch in token_batches(examples, max_tokens, rng)]
    batches = batches[:max(1, int(len(batches) * epochs / whole))]
    parameters = lora_parameters(model)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0, betas=(0.9, 0.99))
    total, warm = len(batches), max(1, int(len(batches) * warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warm, 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / total)))))
    model.train()
    losses: list[float] = []
    started = time.monotonic()
    stopped_early = False
    for step, batch in enumerate(batches):
        logps = completion_logprobs(model, batch, pad_id)
        loss = -torch.cat(logps).mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training diverged at supervised step {step}: loss = {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == total - 1:
            log(f"    sft step {step + 1}/{total} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                f"({time.monotonic() - started:.0f} s)")
        if deadline is not None and time.monotonic() > deadline:
            stopped_early = True
            log(f"    sft stopped at its deadline after {step + 1}/{total} steps")
            break
    model.eval()
    return {"steps": len(losses), "planned_steps": total, "rows": len(examples), "loss_first": losses[0],
            "loss_last": sum(losses[-20:]) / len(losses[-20:]), "seconds": round(time.monotonic() - started, 1),
            "stopped_early": stopped_early}


# --- sampling ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[list[int]], *, temperature: float,
             max_new_tokens: int, max_tokens: int = 400_000, max_rows: int = 512, pad_to: int | None = None,
             cache_implementation: str | None = None) -> list[list[int]]:
    """Completions (ids, without the end token) for each prompt, with the adapter merged into the weights.

    ``cache_implementation="static"`` with ``pad_to`` (every batch left-padded to that width, or to the next multiple
    of 64 above it) keeps one shape from call to call, so that transformers' compiled decoding (CUDA graphs on a GPU)
    is built once and replayed: for GRPO's fixed-size batches, where decoding is bound by per-token overhead."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    with adapter_merged(model):
        start = 0
        while start < len(order):
            width = len(prompts[order[start]]) + max_new_tokens
            rows = max(1, min(max_rows, max_tokens // width))
            chunk = order[start:start + rows]
            width = max(len(prompts[i]) for i in chunk)
            if pad_to is not None:
                width = max(pad_to, -(-width // 64) * 64)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                attention[row, width - len(prompts[i]):] = 1
            with _autocast(device):
                sequences = model.generate(
                    input_ids=ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                    top_p=None, top_k=None, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                    **({"cache_implementation": cache_implementation} if cache_implementation else {}))
            for row, i in enumerate(chunk):
                tokens = sequences[row, width:].tolist()
                if tokenizer.eos_token_id in tokens:
                    tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
                out[i] = [t for t in tokens if t != pad_id]
            start += len(chunk)
    model.train(was_training)
    return out


# --- rule-based GRPO (Eq. 11) ----------------------------------------------------------------------------------------


def grpo_step(model: nn.Module, optimizer: torch.optim.Optimizer, prompts: Sequence[list[int]],
              completions: Sequence[list[int]], rewards: Sequence[float], group: int, pad_id: int, eos_id: int, *,
              beta: float, reference: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
    """One on-policy GRPO update: advantages (r - mean) / std within each group of ``group`` completions of the
    same prompt, loss = -A x (mean token log-prob of the completion) + beta x KL to the reference policy (the k3
    estimator per token): the adapter factors ``reference`` (``adapter_factors`` taken when RL starts, as the paper's
    KL is to the model RL starts from), or the adapter-free model when None. Groups whose rewards are all equal carry
    no signal and are skipped."""
    rewards_t = torch.tensor(rewards, dtype=torch.float32).view(-1, group)
    std = rewards_t.std(dim=1, keepdim=True)
    advantages = ((rewards_t - rewards_t.mean(dim=1, keepdim=True)) / (std + 1e-4)).view(-1)
    keep = [i for i in range(len(rewards)) if std.view(-1)[i // group] > 0]
    stats = {"reward": float(rewards_t.mean()), "informative_groups": len(keep) / max(1, len(rewards)), "loss": 0.0,
             "kl": 0.0}
    if not keep:
        return stats
    examples = [Example(list(prompts[i]), list(completions[i]) + [eos_id]) for i in keep]
    with torch.no_grad(), (adapter_swapped(model, reference) if reference is not None else adapter_disabled(model)):
        reference_logps = completion_logprobs(model, examples, pad_id)
    model.train()
    policy = completion_logprobs(model, examples, pad_id)
    losses, kls = [], []
    for i, logp, ref in zip(keep, policy, reference_logps):
        delta = ref - logp
        kl = (torch.exp(delta) - delta - 1).mean()
        losses.append(-advantages[i] * logp.mean() + beta * kl)
        kls.append(kl.detach())
    loss = torch.stack(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lora_parameters(model), 1.0)
    optimizer.step()
    model.eval()
    stats.update(loss=float(loss.detach()), kl=float(torch.stack(kls).mean()))
    return stats


# --- the meta RM's scoring head --------------------------------------------------------------------------------------


class MetaHead(nn.Module):
    """A small scorer over the judge's hidden states: the mean over the judgement's tokens and the last token's state
    of the final layer -> one logit (is this judgement correct?)."""

    def __init__(self, hidden: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(2 * hidden), nn.Linear(2 * hidden, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


@torch.no_grad()
def judgement_features(model: nn.Module, examples: Sequence[Example], pad_id: int) -> torch.Tensor:
    """[n, 2 x hidden] float32 features of each (prompt, judgement) example, with the adapter merged."""
    device = next(model.parameters()).device
    out = []
    with adapter_merged(model):
        for start in range(0, len(examples), 64):
            chunk = examples[start:start + 64]
            ids, attention, target = _pad(chunk, pad_id, device)
            with _autocast(device):
                hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state.float()
            mask = target.float()[..., None]
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            last = hidden[torch.arange(len(chunk)), attention.sum(1) - 1]
            out.append(torch.cat([mean, last], dim=-1).cpu())
    return torch.cat(out)


def train_meta_head(features: torch.Tensor, labels: torch.Tensor, *, epochs: int = 30, learning_rate: float = 3e-3,
                    batch_size: int = 128, seed: int = 0) -> tuple[MetaHead, dict[str, float]]:
    """Binary cross-entropy on correctness labels (AdamW over shuffled mini-batches; the head is tiny)."""
    torch.manual_seed(seed)
    head = MetaHead(features.shape[1] // 2)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.01)
    loss_fn = nn.BCEWithLogitsLoss()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        order = torch.randperm(len(features))
        for start in range(0, len(features), batch_size):
            rows = order[start:start + batch_size]
            loss = loss_fn(head(features[rows]), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    return head, {"loss": float(loss.detach())}


def auc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count half); None without both classes."""
    pairs = sorted(zip(scores, labels))
    positives = sum(1 for _, y in pairs if y > 0.5)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2
        rank_sum += average_rank * sum(1 for _, y in pairs[i:j] if y > 0.5)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


__all__ = ["Example", "LoRALinear", "MetaHead", "TARGETS", "adapter_disabled", "adapter_factors", "adapter_merged",
           "adapter_swapped", "add_lora", "auc",
           "completion_logprobs", "encode_completion", "encode_prompt", "generate", "grpo_step", "judgement_features",
           "load_adapter_weights", "lora_modules", "lora_parameters", "save_adapter", "token_batches",
           "train_meta_head", "train_supervised"]
