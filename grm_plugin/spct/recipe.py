"""The SPCT recipe for the embedded judge, as resumable stages on one LoRA adapter (``spct.lora``):

1. ``sft``: the cold start (not in the paper; see ``spct.coldstart``): supervised fine-tuning on judgements written
   from ``judgedata`` items' labels and evidence, both orders of every item.
2. ``rft``: rejective fine-tuning (paper 3.2, Eq. 10): N_RFT = 3 samples per item from the cold-started judge in
   random orders, correct ones kept, items whose samples were all correct dropped, one hinted sample for items whose
   samples were all wrong; then fine-tuning on what was kept.
3. ``rl``: rule-based GRPO (Eq. 11: +1 when the best response gets strictly the highest score, else -1), group 4,
   KL to the adapter-free model; resumable every ``save_every`` steps.
4. ``meta``: the meta RM, a scoring head over the final judge's hidden states, trained with binary cross-entropy on
   the correctness of the final judge's own k samples.
5. ``eval``: held-out figures on the same machine (greedy in both orders, voting@k, meta@k) for in-family items and
   for whole families no stage trained on.

Each stage writes its result under ``work`` and is skipped when that result exists, so a run that loses its machine
continues where it stopped; every stage also stops cleanly at ``deadline`` (seconds since the epoch). Results go to
``work/results.json``.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import ParseError
from ..evaluation import expected_correct
from ..judgedata import heldout_items, judge_items
from ..orders import unshuffle
from ..parsing import parse_judgement
from ..preferences import PreferenceItem
from ..templates import build_judge_messages, get_template
from ..voting import vote_sum
from . import lora
from .coldstart import coldstart_rows
from .data import HINT, N_RFT
from .rules import judgement_correct
from .train import GRPO_GROUP

SCALES: dict[str, dict[str, Any]] = {
    # "gpu": the shipped judge's run (one H100/H200, about 20 minutes over 3 calls); "tiny": a CPU smoke run
    "gpu": dict(sft_items=24_000, sft_epochs=1.5, sft_lr=2e-4, rft_items=4_000, rft_lr=5e-5, rl_steps=200,
                rl_prompts=16, rl_lr=2e-5, rl_beta=0.02, rl_temperature=0.8, meta_items=800, eval_items=300, k=8,
                max_new_tokens=320, train_tokens=49_152, gen_tokens=600_000, gen_rows=768, rank=16, alpha=32.0,
                save_every=25, rl_static=0, rl_width=704),
    "tiny": dict(sft_items=16, sft_epochs=1.0, sft_lr=1e-3, rft_items=6, rft_lr=1e-4, rl_steps=2, rl_prompts=2,
                 rl_lr=1e-4, rl_beta=0.02, rl_temperature=0.8, meta_items=4, eval_items=4, k=4, max_new_tokens=24,
                 train_tokens=8_192, gen_tokens=40_000, gen_rows=64, rank=4, alpha=8.0, save_every=1, rl_static=0,
                 rl_width=704),
}
STAGES = ("sft", "rft", "rl", "meta", "eval")
TEMPLATE = "compact"  # half the prompt of deepseek-grm: the embedded judge's prompt (see prompts.COMPACT)
MAX_TOKENS = 320  # the embedded judge's token budget with this adapter (judgements run 180 tokens on average)
SAMPLE_TEMPERATURE = 0.5  # the GRM's default for k > 1, used for RFT, the meta RM's samples and voting


@dataclass
class Sample:
    """One sampled judgement of an item: the display order, the text, the scores in the original order (None when it
    did not parse), whether it is correct by Eq. 10, and the token ids of its prompt and of the judgement."""

    order: list[int]
    text: str
    scores: list[int] | None
    correct: bool
    ids: list[int]
    prompt: list[int]

    def example(self, tokenizer: Any) -> lora.Example:
        """The sample as a supervised example (its own prompt, which for a hinted sample holds the hint)."""
        return lora.Example(self.prompt, lora.encode_completion(tokenizer, self.text))


class Recipe:
    """The stages over one judge model held in memory (see the module docstring)."""

    def __init__(self, base: str, work: str | Path, scale: str | dict[str, Any] = "gpu", *,
                 deadline: float | None = None, log: Callable[[str], None] | None = None) -> None:
        self.scale = dict(SCALES[scale]) if isinstance(scale, str) else dict(scale)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = deadline
        self.log = log or (lambda text: print(text, flush=True))
        self.template = get_template(TEMPLATE)
        self.results_file = self.work / "results.json"
        self.results: dict[str, Any] = (json.loads(self.results_file.read_text()) if self.results_file.exists()
                                        else {"scale": self.scale})
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.tokenizer = _load(base, self.device)
        lora.add_lora(self.model, r=self.scale["rank"], alpha=self.scale["alpha"])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.eos_token_id

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def save(self) -> None:
        self.results_file.write_text(json.dumps(self.results, indent=2))

    def adapter_dir(self, stage: str) -> Path:
        return self.work / stage

    def done(self, stage: str) -> bool:
        """An adapter stage is done when its adapter, or a later stage's, is saved (a resumed run may hold only the
        latest); the others when their results are complete."""
        adapters = ("sft", "rft", "rl")
        if stage in adapters:
            return any((self.adapter_dir(later) / "card.json").exists() for later in adapters[adapters.index(stage):])
        return stage in self.results and not self.results[stage].get("partial")

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    def _deadline_monotonic(self, reserve: float = 30.0) -> float | None:
        return None if self.deadline is None else time.monotonic() + self.left() - reserve

    def load_latest(self, before: str) -> str | None:
        """Load the adapter of the last finished stage before ``before``; returns its stage name."""
        for stage in reversed(STAGES[:STAGES.index(before)]):
            folder = self.adapter_dir(stage)
            if (folder / "card.json").exists():
                lora.load_adapter_weights(self.model, folder)
                return stage
        return None

    def save_adapter(self, stage: str, card: dict[str, Any]) -> None:
        defaults = {"template": TEMPLATE, "max_tokens": MAX_TOKENS}  # what GRMReward() uses with this adapter
        lora.save_adapter(self.model, self.adapter_dir(stage), card={"stage": stage, **card,
                                                                    "judge_defaults": defaults})

    # -- judging -----------------------------------------------------------------------------------------------
    def messages(self, item: PreferenceItem, order: Sequence[int], instruction: str | None = None
                 ) -> list[dict[str, str]]:
        messages = build_judge_messages(item.request(), order, self.template, (1, 10))
        if instruction:
            messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n\n{instruction}"}
        return messages

    def sample(self, jobs: Sequence[tuple[PreferenceItem, list[int], str | None]], temperature: float,
               fixed_shape: bool = False) -> list[Sample]:
        """One judgement per (item, display order, instruction) job; ``fixed_shape``: every batch padded to
        ``rl_width`` with a static cache (GRPO's batches, with ``rl_static`` set: compiled decoding on a GPU)."""
        encoded: dict[tuple, list[int]] = {}  # a prompt sampled several times (RFT's N_RFT, a GRPO group) is encoded once
        prompts = [encoded.setdefault((id(item), tuple(order), hint), lora.encode_prompt(
            self.tokenizer, self.messages(item, order, hint))) for item, order, hint in jobs]
        static = fixed_shape and bool(self.scale.get("rl_static"))
        outputs = lora.generate(self.model, self.tokenizer, prompts, temperature=temperature,
                                max_new_tokens=self.scale["max_new_tokens"], max_tokens=self.scale["gen_tokens"],
                                max_rows=self.scale["gen_rows"], pad_to=self.scale["rl_width"] if static else None,
                                cache_implementation="static" if static else None)
        samples = []
        for (item, order, _), prompt, ids in zip(jobs, prompts, outputs):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            scores = _scores(text, order)
            samples.append(Sample(list(order), text, scores, judgement_correct(scores, best=item.best), ids, prompt))
        return samples

    def example(self, item: PreferenceItem, order: Sequence[int], text: str) -> lora.Example:
        return lora.Example(lora.encode_prompt(self.tokenizer, self.messages(item, order)),
                            lora.encode_completion(self.tokenizer, text))

    # -- stages ------------------------------------------------------------------------------------------------
    def run(self, stages: Sequence[str]) -> dict[str, Any]:
        for stage in stages:
            if stage not in STAGES:
                raise ValueError(f"stage {stage!r}: expected some of {STAGES}")
            if self.done(stage):
                self.log(f"[{stage}] already done")
                continue
            if self.left() < 60:
                self.log(f"[{stage}] not started: {self.left():.0f} s left before the deadline")
                break
            started = time.monotonic()
            self.log(f"[{stage}] start")
            getattr(self, f"stage_{stage}")()
            self.results.setdefault("seconds", {})[stage] = round(time.monotonic() - started, 1) + \
                self.results.get("seconds", {}).get(stage, 0.0) * (stage == "rl")
            self.save()
            self.log(f"[{stage}] {json.dumps(self.results.get(stage), default=str)[:600]}")
        return self.results

    def stage_sft(self) -> None:
        s = self.scale
        items = judge_items(s["sft_items"], seed=0)
        rows = coldstart_rows(items, template=self.template)
        examples = [lora.Example(lora.encode_prompt(self.tokenizer, row["prompt"]),
                                 lora.encode_completion(self.tokenizer, row["completion"][0]["content"]))
                    for row in rows]
        stats = lora.train_supervised(self.model, examples, self.pad_id, epochs=s["sft_epochs"],
                                      learning_rate=s["sft_lr"], max_tokens=s["train_tokens"], log=self.log,
                                      deadline=self._deadline_monotonic(60))
        self.results["sft"] = {"items": len(items), "distinct_prompts": len({json.dumps(i.prompt) for i in items}),
                               "families": len({i.subset for i in items}), **stats}
        self.save_adapter("sft", self.results["sft"])

    def stage_rft(self) -> None:
        s = self.scale
        self.load_latest("rft")
        items = judge_items(s["rft_items"], seed=10)
        rng = random.Random("rft-orders")
        jobs = [(item, _shuffled(len(item.responses), rng), None) for item in items for _ in range(N_RFT)]
        samples = self.sample(jobs, SAMPLE_TEMPERATURE)
        examples, per_item, hinted_jobs = [], [], []
        stats = {"items": len(items), "samples": len(samples), "valid": 0, "correct": 0, "too_easy": 0,
                 "all_wrong": 0, "hinted_attempts": 0, "hinted_rows": 0}
        for i, item in enumerate(items):
            drawn = samples[i * N_RFT:(i + 1) * N_RFT]
            right = [x for x in drawn if x.correct]
            stats["valid"] += sum(x.scores is not None for x in drawn)
            stats["correct"] += len(right)
            per_item.append(len(right))
            if len(right) == len(drawn):
                stats["too_easy"] += 1
            elif not right:
                stats["all_wrong"] += 1
                order = _shuffled(len(item.responses), rng)
                hinted_jobs.append((item, order, HINT.format(slot=order.index(item.best) + 1)))
            else:
                examples.extend(x.example(self.tokenizer) for x in right)
        if hinted_jobs:
            stats["hinted_attempts"] = len(hinted_jobs)
            for (item, order, _), x in zip(hinted_jobs, self.sample(hinted_jobs, SAMPLE_TEMPERATURE)):
                if x.correct:  # kept without the hint: the trained judge never sees one
                    examples.append(self.example(item, order, x.text))
                    stats["hinted_rows"] += 1
        stats.update(rows=len(examples), accept_rate=stats["correct"] / max(1, stats["samples"]),
                     parse_valid=stats["valid"] / max(1, stats["samples"]))
        (self.work / "rl_pool.json").write_text(json.dumps([i for i, n in enumerate(per_item) if n < N_RFT]))
        if examples:
            stats.update(lora.train_supervised(self.model, examples, self.pad_id, epochs=1.0,
                                               learning_rate=s["rft_lr"], max_tokens=s["train_tokens"],
                                               log=self.log, deadline=self._deadline_monotonic(60), seed=1))
        self.results["rft"] = stats
        self.save_adapter("rft", stats)

    def stage_rl(self) -> None:
        s = self.scale
        partial = self.work / "rl_partial"
        progress = self.results.get("rl", {"steps": 0, "log": []})
        self.load_latest("rl")
        reference = lora.adapter_factors(self.model)  # the KL term's reference: the judge RL starts from
        if (partial / "card.json").exists():
            lora.load_adapter_weights(self.model, partial)
        items = judge_items(s["rft_items"], seed=10)
        pool_file = self.work / "rl_pool.json"
        hard = json.loads(pool_file.read_text()) if pool_file.exists() else []
        fresh = judge_items(max(s["rl_steps"] * s["rl_prompts"] // 2, 8), seed=20)
        pool = [items[i] for i in hard] + fresh
        optimizer = torch.optim.AdamW(lora.lora_parameters(self.model), lr=s["rl_lr"], weight_decay=0.0)
        rng = random.Random(f"rl:{progress['steps']}")
        stop = self._deadline_monotonic(45)
        step_started = time.monotonic()
        while progress["steps"] < s["rl_steps"]:
            batch = rng.sample(pool, min(s["rl_prompts"], len(pool)))
            jobs = []
            for item in batch:
                order = _shuffled(len(item.responses), rng)  # one order per group: the group differs only by sampling
                jobs.extend([(item, order, None)] * GRPO_GROUP)
            samples = self.sample(jobs, s["rl_temperature"], fixed_shape=True)
            prompts = [x.prompt for x in samples]
            completions = [x.ids for x in samples]
            rewards = [1.0 if x.correct else -1.0 for x in samples]
            stats = lora.grpo_step(self.model, optimizer, prompts, completions, rewards, GRPO_GROUP, self.pad_id,
                                   self.tokenizer.eos_token_id, beta=s["rl_beta"], reference=reference)
            progress["steps"] += 1
            progress["log"].append({k: round(v, 4) for k, v in stats.items()})
            if progress["steps"] % 10 == 0 or progress["steps"] == s["rl_steps"]:
                recent = progress["log"][-10:]
                self.log(f"    rl step {progress['steps']}/{s['rl_steps']} reward "
                         f"{sum(r['reward'] for r in recent) / len(recent):.3f} informative "
                         f"{sum(r['informative_groups'] for r in recent) / len(recent):.2f} kl "
                         f"{sum(r['kl'] for r in recent) / len(recent):.4f} "
                         f"({(time.monotonic() - step_started) / len(recent):.1f} s/step)")
                step_started = time.monotonic()
            if progress["steps"] % s["save_every"] == 0 or (stop is not None and time.monotonic() > stop):
                lora.save_adapter(self.model, partial, card={"stage": "rl", "steps": progress["steps"]})
                progress["partial"] = True
                self.results["rl"] = progress
                self.save()
            if stop is not None and time.monotonic() > stop:
                self.log(f"    rl paused at step {progress['steps']} (deadline); run the stage again to go on")
                return
        progress["partial"] = False
        first, last = progress["log"][:20], progress["log"][-20:]
        progress["reward_first20"] = sum(r["reward"] for r in first) / len(first)
        progress["reward_last20"] = sum(r["reward"] for r in last) / len(last)
        self.results["rl"] = progress
        self.save_adapter("rl", {"steps": progress["steps"], "reward_first20": progress["reward_first20"],
                                 "reward_last20": progress["reward_last20"]})
        shutil.rmtree(partial, ignore_errors=True)

    def _voting_samples(self, items: Sequence[PreferenceItem], k: int, seed: str) -> list[list[Sample]]:
        rng = random.Random(seed)
        jobs = [(item, _shuffled(len(item.responses), rng), None) for item in items for _ in range(k)]
        flat = self.sample(jobs, SAMPLE_TEMPERATURE)
        return [flat[i * k:(i + 1) * k] for i in range(len(items))]

    def _meta_examples(self, drawn: Sequence[Sequence[Sample]]
                       ) -> tuple[list[lora.Example], list[float], list[tuple[int, int]]]:
        """Each parsed sample as a meta RM example, its correctness label, and its (item, sample) position."""
        examples, labels, where = [], [], []
        for i, samples in enumerate(drawn):
            for j, x in enumerate(samples):
                if x.scores is not None:
                    examples.append(x.example(self.tokenizer))
                    labels.append(float(x.correct))
                    where.append((i, j))
        return examples, labels, where

    def stage_meta(self) -> None:
        from safetensors.torch import save_file

        s = self.scale
        self.load_latest("meta")
        items = judge_items(s["meta_items"], seed=30)
        drawn = self._voting_samples(items, s["k"], "meta-orders")
        examples, labels, where = self._meta_examples(drawn)
        if not examples:
            self.results["meta"] = {"items": len(items), "rows": 0, "skipped": "no sampled judgement parsed"}
            return
        features = lora.judgement_features(self.model, examples, self.pad_id)
        y = torch.tensor(labels)
        cut = int(len(items) * 0.8)  # the head's own held-out check: the last fifth of the items
        fit = [r for r, (i, _) in enumerate(where) if i < cut]
        check = [r for r, (i, _) in enumerate(where) if i >= cut]
        head, fit_stats = lora.train_meta_head(features[fit], y[fit])
        with torch.no_grad():
            held = head(features[check]).tolist() if check else []
        stats = {"items": len(items), "rows": len(examples), "correct_share": float(y.mean()) if len(y) else None,
                 "heldout_rows": len(check), "heldout_auc": lora.auc(held, y[check].tolist()) if check else None,
                 **fit_stats}
        head, fit_stats = lora.train_meta_head(features, y)  # the shipped head sees every row
        folder = self.work / "meta"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "meta_head.safetensors"),
                  metadata={"format": "grm-meta-head-v1", "hidden": str(features.shape[1] // 2)})
        self.results["meta"] = stats

    def stage_eval(self) -> None:
        from safetensors.torch import load_file

        s = self.scale
        adapter = self.load_latest("eval")
        head = None
        head_file = self.work / "meta" / "meta_head.safetensors"
        if head_file.exists():
            head = lora.MetaHead(self.model.config.hidden_size)
            head.load_state_dict(load_file(str(head_file)))
        out: dict[str, Any] = {"adapter": adapter}
        for name, split in (("heldout", "heldout"), ("heldout_families", "heldout_families")):
            items = heldout_items(s["eval_items"], split=split, seed=1, train_items=s["sft_items"])
            out[name] = self.evaluate(items, head)
            self.log(f"    {name}: {json.dumps(out[name])}")
            self.results["eval"] = {**out, "partial": True}
            self.save()
        self.results["eval"] = out

    def evaluate(self, items: Sequence[PreferenceItem], head: Any = None) -> dict[str, Any]:
        """Greedy accuracy in both orders (a seeded order and its reverse), the position-flip rate, voting@k and,
        with a meta head, meta@k (top k/2 by meta score, voted)."""
        rng = random.Random("eval-orders")
        orders = [_shuffled(len(item.responses), rng) for item in items]
        jobs = [(item, order, None) for item, order in zip(items, orders)] + \
            [(item, order[::-1], None) for item, order in zip(items, orders)]
        greedy = self.sample(jobs, 0.0)
        n = len(items)
        first = [_expected(x.scores, item.best) for item, x in zip(items, greedy[:n])]
        second = [_expected(x.scores, item.best) for item, x in zip(items, greedy[n:])]
        flips = sum(_top(a.scores) != _top(b.scores) for a, b in zip(greedy[:n], greedy[n:]))
        s = self.scale["k"]
        drawn = self._voting_samples(items, s, "eval-votes")
        voting = [_expected(_vote(samples), item.best) for item, samples in zip(items, drawn)]
        result = {"items": n, "greedy": _mean(first + second), "greedy_order_a": _mean(first),
                  "greedy_order_b": _mean(second), "flip_rate": flips / n, "sample1": _mean(
                      [_expected(samples[0].scores, item.best) for item, samples in zip(items, drawn)]),
                  f"voting@{s}": _mean(voting),
                  "parse_valid": _mean([float(x.scores is not None) for x in greedy]),
                  "chance": _mean([1 / len(item.responses) for item in items])}
        if head is not None:
            examples, _, where = self._meta_examples(drawn)
            with torch.no_grad():
                rated = head(lora.judgement_features(self.model, examples, self.pad_id)).tolist() if examples else []
            score = {key: value for key, value in zip(where, rated)}
            meta = []
            for i, (item, samples) in enumerate(zip(items, drawn)):
                ranked = sorted((j for j in range(len(samples)) if (i, j) in score), key=lambda j: -score[(i, j)])
                meta.append(_expected(_vote([samples[j] for j in ranked[:max(1, s // 2)]]), item.best))
            result[f"meta@{s}"] = _mean(meta)
        families: dict[str, list[float]] = {}
        for item, a, b in zip(items, first, second):
            families.setdefault(item.subset, []).extend([a, b])
        result["greedy_by_family"] = {name: round(_mean(v), 3) for name, v in sorted(families.items())}
        return result


def _load(base: str, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..backends.transformers import load_gguf

    if base.endswith(".gguf"):
        model, tokenizer = load_gguf(base, torch.float32)
    else:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.to(device=device, dtype=dtype)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    return model, tokenizer


def _shuffled(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    return order


def _scores(text: str, order: Sequence[int]) -> list[int] | None:
    """The scores in the responses' original order, or None when the text does not parse."""
    try:
        return unshuffle(parse_judgement(text, len(order)).scores, order)
    except ParseError:
        return None


def _vote(samples: Sequence[Sample]) -> list[int] | None:
    valid = [x.scores for x in samples if x.scores is not None]
    return vote_sum(valid, len(valid[0])) if valid else None


def _expected(votes: Sequence[int] | None, best: int) -> float:
    """``evaluation.expected_correct``, except that no valid vote counts 0 (the judge failed), not chance."""
    return expected_correct(votes, best, len(votes)) if votes else 0.0


def _top(scores: Sequence[int] | None) -> int | None:
    if not scores:
        return None
    top = max(scores)
    return list(scores).index(top) if list(scores).count(top) == 1 else None


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else float("nan")


__all__ = ["Recipe", "SCALES", "STAGES"]
