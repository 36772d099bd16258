"""Cold-start judgements: the library's judge format written from an item's known labels and evidence.

Not a stage of the paper. SPCT's rejective fine-tuning keeps a judge's own correct samples; a judge too weak to
produce them (the embedded 135M judge is right about as often as a coin) gives it nothing but lucky guesses to keep.
So before RFT the judge is fine-tuned on judgements written from the labels: the item's specific criteria with their
weights, an analysis that names each response's evidence (``meta["notes"]`` of ``judgedata`` items) and says which
response is best and why (the item's rationale), and the scores a careful judge gives (``meta["grades"]``). Every
item is written in two orders (the shown one and its reverse), so the position of the best response carries no
signal.
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from ..preferences import PreferenceItem
from ..templates import Template, build_judge_messages, get_template, render_judgement

_QUOTE_DROP = re.compile(r"[\[\]{}<>\\#]")
_SCORES_LABEL = re.compile(r"(?i)\b(scores?)\s*:")


def quote_of(response: Any, head: int = 7, tail: int = 5) -> str:
    """A short quote of a response for the analysis to start from: the whole text when it is short, else its first
    ``head`` and last ``tail`` words around an ellipsis. Brackets, braces, backslashes and ``#`` are dropped, so a
    quote can never hold a scores block, a response wrapper or a section header of the judge prompt."""
    text = response if isinstance(response, str) else " ".join(
        str(m.get("content", "")) for m in response if isinstance(m, dict))
    words = _SCORES_LABEL.sub(r"\1", _QUOTE_DROP.sub(" ", text)).replace('"', "'").split()
    if len(words) <= head + tail + 2:
        return " ".join(words)
    return f"{' '.join(words[:head])} ... {' '.join(words[-tail:])}"


def _criteria_text(criteria: Sequence[Sequence[Any]]) -> str:
    return " ".join(f"{i}. {name} ({weight}%)." for i, (name, weight) in enumerate(criteria, 1))


def coldstart_judgement(item: PreferenceItem, order: Sequence[int], template: Template | None = None) -> str:
    """The judgement a careful judge writes for ``item`` with its responses shown in ``order`` (original indices,
    in display order): criteria, one sentence of evidence per response in display order, the best named with the
    rationale, then the scores line in ``template``'s format.

    Raises:
        ValueError: the item has no ``meta`` notes, grades and criteria (only generated items carry them).
    """
    meta = item.meta or {}
    notes, grades, criteria = meta.get("notes"), meta.get("grades"), meta.get("criteria")
    if not (notes and grades and criteria):
        raise ValueError(f"item {item.id}: a cold-start judgement needs meta notes, grades and criteria "
                         "(grm_plugin.judgedata items carry them)")
    resolved = get_template(template or "deepseek-grm")
    # Each response's sentence starts with a quote of it: copying from the response's own slot is what a small judge
    # does reliably, and the verdict that follows then reads what it just copied (without the quote, the 135M judge
    # learnt each family's sentences but wrote them in a fixed order, whatever the responses said).
    lines = [f'Response {slot} ("{quote_of(item.responses[index])}"): {notes[index].rstrip(".")}.'
             for slot, index in enumerate(order, 1)]
    best_slot = list(order).index(item.best) + 1
    reason = (item.rationale or "it meets the criteria best").rstrip(".")
    lines.append(f"Response {best_slot} is the best: {reason}.")
    return render_judgement(_criteria_text(criteria), " ".join(lines), [grades[i] for i in order],
                            resolved.score_format)


def coldstart_rows(items: Sequence[PreferenceItem], *, template: Any = "deepseek-grm",
                   score_range: tuple[int, int] = (1, 10), seed: int = 0, both_orders: bool = True
                   ) -> list[dict[str, Any]]:
    """Supervised rows (TRL conversational prompt-completion records, like ``build_rft_dataset``'s) for every item:
    the responses in a seeded random order and, with ``both_orders``, in the reverse of that order too."""
    resolved = get_template(template)
    rng = random.Random(f"coldstart:{seed}")
    rows = []
    for item in items:
        order = list(range(len(item.responses)))
        rng.shuffle(order)
        for shown in ([order, order[::-1]] if both_orders else [order]):
            messages = build_judge_messages(item.request(), shown, resolved, score_range)
            rows.append({"prompt": messages,
                         "completion": [{"role": "assistant", "content": coldstart_judgement(item, shown, resolved)}],
                         "id": item.id, "subset": item.subset, "order": shown, "hinted": False})
    return rows


__all__ = ["coldstart_judgement", "coldstart_rows", "quote_of"]
