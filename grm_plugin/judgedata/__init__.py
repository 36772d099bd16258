"""Judge-training data: many task families of labelled items with the evidence a careful judge names.

Each family (``base.family``) writes items of one kind a judge is asked about in RL: agreement with a reference,
instruction constraints, refusing harmful and helping with benign requests, relevance, completeness, a factual slip
in a good answer, quality gaps (specific vs vague), and responses that try to fool the judge. Every item carries its
rationale (why the best response is best) and, in ``meta``, the family, the template, and per response the evidence
(``notes``) and the score a careful judge gives (``grades``): what the cold-start judgements are written from.

Splits, so that held-out figures mean something:

- ``train``: the training families (all but ``HELDOUT_FAMILIES``) in their training templates (all but the last);
- ``heldout``: fresh items of the training families, every template, the last (never trained) included;
- ``heldout_templates``: fresh items of the training families in their last template only;
- ``heldout_families``: items of ``HELDOUT_FAMILIES``, which no training split ever draws from.

Items are drawn per index from their own seeded generator, so ``judge_items(n, seed=s)`` is a prefix of
``judge_items(m, seed=s)`` for m > n. Held-out splits drop any item whose prompt a training draw of the same size
could produce (``exclude``). Nothing here comes from a benchmark: every template and word list was written for this
project.
"""

from __future__ import annotations

import random
from typing import Iterable, Literal, Sequence

from ..preferences import PreferenceItem
from . import behaviour, constraints, knowledge, quality, reference  # noqa: F401  (registers the families)
from .base import FAMILIES, GROUPS, Draft, Family, family

Split = Literal["train", "heldout", "heldout_templates", "heldout_families"]
SPLITS: tuple[str, ...] = ("train", "heldout", "heldout_templates", "heldout_families")
# Whole families no training split draws from: each needs a skill the training families teach, asked differently.
HELDOUT_FAMILIES: tuple[str, ...] = ("ref_date", "forbidden_word", "start_end_phrase", "passage_slip", "explain_why",
                                     "multi_turn_context")


def training_families() -> list[str]:
    return [name for name in FAMILIES if name not in HELDOUT_FAMILIES]


def _plan(split: str, families: Sequence[str] | None) -> list[tuple[Family, list[int]]]:
    """The (family, allowed templates) pairs a split draws from."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if split == "heldout_families":
        names = list(HELDOUT_FAMILIES)
    else:
        names = training_families()
    if families is not None:
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"families: unknown {unknown}; expected some of {sorted(FAMILIES)}")
        names = [name for name in names if name in set(families)]
        if not names:
            raise ValueError(f"families: none of {sorted(families)} is in split {split!r}")
    plan = []
    for name in names:
        fam = FAMILIES[name]
        last = fam.templates - 1
        allowed = {"train": list(range(last)), "heldout": list(range(fam.templates)),
                   "heldout_templates": [last], "heldout_families": list(range(fam.templates))}[split]
        plan.append((fam, allowed))
    return plan


def _item(fam: Family, template: int, rng: random.Random, ident: str, n_responses: tuple[int, int]
          ) -> PreferenceItem:
    draft = fam.make(rng, template)
    draft.check(f"family {fam.name} template {template}")
    low, high = n_responses
    keep = min(len(draft.responses), rng.randint(low, high))
    # the best plus the first near misses (families list the closest misses first)
    chosen = [0] + sorted(rng.sample(range(1, len(draft.responses)), keep - 1))
    order = chosen[:]
    rng.shuffle(order)
    meta = {"family": fam.name, "group": fam.group, "template": template,
            "notes": [draft.notes[i] for i in order], "grades": [draft.grades[i] for i in order],
            "criteria": [[c, w] for c, w in draft.criteria]}
    return PreferenceItem(ident, draft.prompt, [draft.responses[i] for i in order], order.index(0), fam.name,
                          draft.reference, rationale=draft.rationale, meta=meta)


def _prompt_key(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


def judge_items(n_items: int, *, seed: int = 0, split: Split = "train", n_responses: tuple[int, int] = (2, 4),
                families: Sequence[str] | None = None, exclude: Iterable[object] = (), prefix: str | None = None
                ) -> list[PreferenceItem]:
    """``n_items`` labelled items of ``split``, cycling through its families (optionally only ``families``), each
    with 2-4 responses (``n_responses``, inclusive; a family may offer fewer), shuffled, ``best`` its index,
    ``subset`` the family, ``rationale`` and ``meta`` (family, group, template, notes, grades, criteria).

    ``exclude``: prompts (strings or message lists) to skip, e.g. the training prompts when drawing held-out items.

    Example:
        >>> items = judge_items(3, seed=1)
        >>> len(items), all(item.rationale for item in items)
        (3, True)
    """
    low, high = n_responses
    if not 2 <= low <= high <= 4:
        raise ValueError(f"n_responses: expected (low, high) with 2 <= low <= high <= 4, got {n_responses}")
    plan = _plan(split, families)
    skip = {_prompt_key(p) for p in exclude}
    tag = prefix or split
    items: list[PreferenceItem] = []
    i = 0
    while len(items) < n_items:
        fam, allowed = plan[i % len(plan)]
        rng = random.Random(f"judgedata:{split}:{seed}:{i}")
        template = allowed[rng.randrange(len(allowed))]
        item = _item(fam, template, rng, f"{tag}-{seed}-{i}", n_responses)
        i += 1
        if _prompt_key(item.prompt) in skip:
            continue
        items.append(item)
        if i > 20 * n_items + 1000:
            raise RuntimeError(f"judge_items: could not draw {n_items} items of {split!r} outside `exclude`")
    return items


def heldout_items(n_items: int, *, split: Split = "heldout", seed: int = 1, train_items: int = 24_000,
                  train_seed: int = 0, **kwargs: object) -> list[PreferenceItem]:
    """Held-out items with every prompt that ``judge_items(train_items, seed=train_seed)`` holds left out."""
    if split == "train":
        raise ValueError("heldout_items: split must be a held-out split")
    train = judge_items(train_items, seed=train_seed) if split != "heldout_families" else []
    exclude = [item.prompt for item in train]
    return judge_items(n_items, seed=seed, split=split, exclude=exclude, **kwargs)  # type: ignore[arg-type]


__all__ = ["Draft", "FAMILIES", "Family", "GROUPS", "HELDOUT_FAMILIES", "SPLITS", "family", "heldout_items",
           "judge_items", "training_families"]
