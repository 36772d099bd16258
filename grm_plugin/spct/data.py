"""SPCT training data: rejective fine-tuning sets, online-RL prompts and meta RM labels, from a GRM's own samples.

``build_rft_dataset`` samples N_RFT judgements per item, keeps the correct ones (Eq. 10), drops items where every
sample was correct ("too easy"), and optionally tries one hinted sample ("The best response is: Response j") on items
where none was; the hint is not kept in the stored prompt (the trained judge never sees hints). Rows are TRL
conversational prompt-completion records (``prompt``: the judge messages, ``completion``: the judgement), ready for
``SFTTrainer`` with loss on the completion only. ``build_rl_dataset`` writes judge prompts with the columns
``SPCTRuleReward`` reads; ``build_meta_dataset`` labels sampled judgements correct/incorrect for the meta RM.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import aclosing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ..meta_rm import meta_rm_prompt
from ..preferences import PreferenceItem, judged_chunks, write_jsonl
from ..templates import build_judge_messages, get_template
from ..types import Judgement, ScoreRequest
from .rules import judgement_correct

N_RFT = 3  # judgements sampled per item in rejective fine-tuning (paper)
HINT = "The best response is: Response {slot}"


def is_correct(judgement: Judgement, item: PreferenceItem) -> bool:
    """Eq. 10 for one sampled judgement of ``item`` (False when it did not parse)."""
    scores = judgement.scores if judgement.valid else None
    if item.labels is not None:
        return judgement_correct(scores, labels=item.labels)
    return judgement_correct(scores, best=item.best)


@dataclass
class RFTStats:
    """What rejective fine-tuning kept and why."""

    items: int = 0
    samples: int = 0
    valid_samples: int = 0
    correct_samples: int = 0
    rows: int = 0
    too_easy_items: int = 0
    all_wrong_items: int = 0
    hinted_attempts: int = 0
    hinted_rows: int = 0

    @property
    def accept_rate(self) -> float:
        """Correct samples among the non-hinted ones."""
        return self.correct_samples / self.samples if self.samples else 0.0

    @property
    def too_easy_rate(self) -> float:
        return self.too_easy_items / self.items if self.items else 0.0

    @property
    def hinted_share(self) -> float:
        return self.hinted_rows / self.rows if self.rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accept_rate": self.accept_rate, "too_easy_rate": self.too_easy_rate,
                "hinted_share": self.hinted_share}


def _judge_row(messages: list[dict[str, str]], judgement: Judgement, item: PreferenceItem, hinted: bool
               ) -> dict[str, Any]:
    return {"prompt": messages, "completion": [{"role": "assistant", "content": judgement.text}],
            "id": item.id, "subset": item.subset, "order": list(judgement.order), "hinted": hinted}


async def _hinted_sample(grm: Any, request: ScoreRequest, item: PreferenceItem, rng: random.Random
                         ) -> tuple[list[dict[str, str]], Judgement]:
    """One judgement sampled with the best response named in the prompt; returns the prompt WITHOUT the hint."""
    order = list(range(item_n(item)))
    if grm.config.shuffle:
        rng.shuffle(order)
    messages, [judgement] = await grm.asample(request, order, 1,
                                              instruction=HINT.format(slot=order.index(item.best) + 1))
    return messages, judgement


def item_n(item: PreferenceItem) -> int:
    return len(item.responses)


async def abuild_rft_dataset(grm: Any, items: Sequence[PreferenceItem], *, n_rft: int = N_RFT, hinted: bool = False,
                             temperature: float | None = None, batch_size: int = 32, progress: Any = None,
                             seed: int = 0) -> tuple[list[dict[str, Any]], RFTStats]:
    """Rejective fine-tuning data from ``grm``'s own samples (async; see ``build_rft_dataset``)."""
    changes: dict[str, Any] = {"k": n_rft, "cache_size": 0}
    if temperature is not None:
        changes["temperature"] = temperature
    sampler = grm.with_settings(**changes)
    rng = random.Random(f"rft:{seed}")
    stats = RFTStats()
    rows: list[dict[str, Any]] = []
    async with aclosing(judged_chunks(sampler, items, batch_size, progress, close=True)) as chunks:
        async for judged in chunks:
            retry: list[tuple[PreferenceItem, ScoreRequest]] = []
            for item, request, result in judged:
                stats.items += 1
                stats.samples += len(result.judgements)
                stats.valid_samples += result.valid_samples
                correct = [j for j in result.judgements if is_correct(j, item)]
                stats.correct_samples += len(correct)
                if correct and len(correct) == len(result.judgements):
                    stats.too_easy_items += 1
                    continue
                if not correct:
                    stats.all_wrong_items += 1
                    if hinted and item.labels is None:
                        retry.append((item, request))
                    continue
                for judgement in correct:
                    messages = build_judge_messages(request, judgement.order, sampler.template,
                                                    sampler.config.score_range)
                    rows.append(_judge_row(messages, judgement, item, hinted=False))
            if retry:
                stats.hinted_attempts += len(retry)
                drawn = await asyncio.gather(*(_hinted_sample(sampler, request, item, rng) for item, request in retry))
                for (item, _), (messages, judgement) in zip(retry, drawn):
                    if is_correct(judgement, item):
                        rows.append(_judge_row(messages, judgement, item, hinted=True))
                        stats.hinted_rows += 1
    stats.rows = len(rows)
    return rows, stats


def build_rft_dataset(grm: Any, items: Sequence[PreferenceItem], out: str | Path | None = None, *,
                      n_rft: int = N_RFT, hinted: bool = False, temperature: float | None = None,
                      batch_size: int = 32, progress: Any = None, seed: int = 0
                      ) -> tuple[list[dict[str, Any]], RFTStats]:
    """Rejective fine-tuning (paper section 3.2): sample ``n_rft`` judgements per item with ``grm`` (at its
    temperature, 0.5 by default for k > 1), keep the correct ones (Eq. 10), drop items whose samples were all correct,
    and with ``hinted=True`` give items whose samples were all wrong one hinted sample, kept if correct.

    Returns the rows (TRL conversational prompt-completion records plus ``id``, ``subset``, ``order``, ``hinted``) and
    the statistics; with ``out``, writes the rows to ``out`` (JSONL; ``grm spct rft`` writes the statistics beside it
    as ``stats.json``).
    """
    from .._sync import run_sync

    rows, stats = run_sync(abuild_rft_dataset(grm, items, n_rft=n_rft, hinted=hinted, temperature=temperature,
                                              batch_size=batch_size, progress=progress, seed=seed))
    if out is not None:
        write_jsonl(rows, out)
    return rows, stats


def build_rl_dataset(items: Sequence[PreferenceItem], *, template: Any = "deepseek-grm",
                     score_range: tuple[int, int] = (1, 10), seed: int = 0, shuffle: bool = True
                     ) -> list[dict[str, Any]]:
    """Judge prompts for rule-based online RL: one row per item, responses shown in a seeded random order, with the
    columns ``SPCTRuleReward`` reads (``best`` in original order or ``labels``, ``n_responses``, ``order``)."""
    resolved = get_template(template)
    rng = random.Random(f"rl:{seed}")
    rows = []
    for item in items:
        order = list(range(item_n(item)))
        if shuffle:
            rng.shuffle(order)
        row = {"prompt": build_judge_messages(item.request(), order, resolved, score_range), "id": item.id,
               "subset": item.subset, "best": item.best, "n_responses": item_n(item), "order": order}
        if item.labels is not None:
            row["labels"] = item.labels
        rows.append(row)
    return rows


async def abuild_meta_dataset(grm: Any, items: Sequence[PreferenceItem], *, k: int = 8, batch_size: int = 32,
                              progress: Any = None) -> list[dict[str, Any]]:
    """Meta RM training rows from ``grm``'s samples (async; see ``build_meta_dataset``)."""
    sampler = grm.with_settings(k=k, cache_size=0)
    rows: list[dict[str, Any]] = []
    async with aclosing(judged_chunks(sampler, items, batch_size, progress, close=True)) as chunks:
        async for judged in chunks:
            for item, request, result in judged:
                for sample, judgement in enumerate(result.judgements):
                    if judgement.valid:  # guided voting only rates parsed judgements
                        rows.append({"text": meta_rm_prompt(request, judgement),
                                     "label": float(is_correct(judgement, item)), "id": item.id, "sample": sample})
    return rows


def build_meta_dataset(grm: Any, items: Sequence[PreferenceItem], out: str | Path | None = None, *, k: int = 8,
                       batch_size: int = 32, progress: Any = None) -> list[dict[str, Any]]:
    """Meta RM training data: ``k`` sampled judgements per item, each valid one as a row ``{"text": the meta RM
    input (meta_rm.meta_rm_prompt), "label": 1.0 if correct by Eq. 10 else 0.0}``; written as JSONL with ``out``."""
    from .._sync import run_sync

    rows = run_sync(abuild_meta_dataset(grm, items, k=k, batch_size=batch_size, progress=progress))
    if out is not None:
        write_jsonl(rows, out)
    return rows


__all__ = ["HINT", "N_RFT", "RFTStats", "build_meta_dataset", "build_rft_dataset", "build_rl_dataset", "is_correct",
           "abuild_meta_dataset", "abuild_rft_dataset"]
