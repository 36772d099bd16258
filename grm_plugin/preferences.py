"""Preference data: labelled items for evaluating and training judges, and a generator of verifiable ones.

``load_preferences`` reads pairwise rows in RewardBench's columns (``prompt``, ``chosen``, ``rejected``, ``subset``)
and multi-response rows (``prompt``, ``responses`` and ``best`` or per-response ``labels``; a single response with
its ``label``) from JSONL/JSON, parquet, a saved ``datasets`` folder or a hub id (hub ids need a network; nothing
here downloads on its own). ``synthetic_preferences`` writes items whose best response is checkable by rule
(arithmetic, unit conversion, string manipulation, instruction-format checks), so every SPCT recipe runs offline.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Sequence

from .errors import InvalidRequestError
from .types import ScoreRequest, ScoreResult


@dataclass
class PreferenceItem:
    """One labelled item: a prompt, its responses, the index of the best one and its subset.

    ``labels`` are per-response labels when the data has them (for a single response, its correct score: the
    paper's Eq. 10 for n = 1); ``best`` is then the index of the strictly highest label.
    """

    id: str
    prompt: Any
    responses: list[Any]
    best: int
    subset: str = "all"
    reference: Optional[str] = None
    labels: Optional[list[int]] = None

    def request(self) -> ScoreRequest:
        """The item as a ScoreRequest for the judge (its id in the metadata)."""
        return ScoreRequest(prompt=self.prompt, responses=self.responses, reference=self.reference,
                            metadata={"id": self.id})

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "responses": self.responses, "best": self.best,
                               "subset": self.subset}
        if self.reference:
            row["reference"] = self.reference
        if self.labels is not None:
            row["labels"] = self.labels
        return row


# --- loading -------------------------------------------------------------------------------------------------------


def read_rows(source: str) -> list[dict[str, Any]]:
    """Rows of a JSONL/JSON/parquet file, a saved ``datasets`` folder or a hub id (``name`` or ``name:split``)."""
    path = Path(source)
    if path.suffix in (".jsonl", ".json") and path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else data.get("data") or data.get("rows") or []
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidRequestError(f"{source} line {number}: not valid JSON ({exc.msg})") from None
        return rows
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(f"reading {source!r} needs the datasets package: pip install 'grm-plugin[eval]'") from exc
    if path.suffix == ".parquet" and path.is_file():
        return list(datasets.Dataset.from_parquet(str(path)))
    if path.exists():
        loaded = datasets.load_from_disk(str(path))
    else:  # a hub id: only for users with a network
        name, _, split = source.partition(":")
        loaded = datasets.load_dataset(name, split=split or "train")
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[next(iter(loaded))]
    return list(loaded)


def _labels_best(labels: Any, n: int, where: str) -> tuple[list[int], int]:
    if not isinstance(labels, list) or len(labels) != n or not all(isinstance(x, (int, float)) for x in labels):
        raise InvalidRequestError(f"{where}: labels must be a list of {n} numbers (one per response), got {labels!r}")
    values = [int(x) for x in labels]
    if n == 1:
        return values, 0
    top = max(values)
    if values.count(top) > 1:
        raise InvalidRequestError(f"{where}: labels {values} have no single best response (Eq. 10 needs a strictly "
                                  "highest label when there are 2 or more responses)")
    return values, values.index(top)


def preference_item(row: dict[str, Any], i: int = 0) -> PreferenceItem:
    """One row as a PreferenceItem; InvalidRequestError names the row and the field at fault."""
    ident = str(row.get("id", i))
    where = f"row {i} (id {ident})"
    subset = str(row.get("subset") or "all")
    reference = row.get("reference") or None
    # a column that is None in this row counts as absent (parquet and datasets give every row every column)
    pairwise = any(row.get(key) not in (None, "") for key in ("chosen", "rejected")) or (
        row.get("responses") is None and ("chosen" in row or "rejected" in row))
    if not pairwise and row.get("responses") is None:
        raise InvalidRequestError(f"{where}: expected pairwise columns (prompt, chosen, rejected) or multi-response "
                                  f"columns (prompt, responses, best or labels); got {sorted(row)}")
    if row.get("prompt") in (None, ""):
        raise InvalidRequestError(f"{where}: missing prompt")
    if pairwise:
        missing = [key for key in ("chosen", "rejected") if row.get(key) in (None, "")]
        if missing:
            raise InvalidRequestError(f"{where}: missing {', '.join(missing)} (pairwise rows need prompt, chosen, "
                                      "rejected)")
        return PreferenceItem(ident, row["prompt"], [row["chosen"], row["rejected"]], 0, subset, reference)
    responses = row["responses"]
    if not isinstance(responses, list) or not responses:
        raise InvalidRequestError(f"{where}: responses must be a non-empty list")
    n = len(responses)
    labels = row.get("labels")
    if labels is None and "label" in row:
        labels = [row["label"]]
    if labels is not None:
        values, best = _labels_best(labels, n, where)
        if row.get("best") is not None and row["best"] != best:
            raise InvalidRequestError(f"{where}: best={row['best']!r} disagrees with labels {values}")
        return PreferenceItem(ident, row["prompt"], list(responses), best, subset, reference, values)
    if n < 2:
        raise InvalidRequestError(f"{where}: a single response needs its label (column 'label' or 'labels')")
    best = row.get("best")
    if not isinstance(best, int) or isinstance(best, bool) or not 0 <= best < n:
        raise InvalidRequestError(f"{where}: best must be an index into responses (0..{n - 1}), got {best!r}")
    return PreferenceItem(ident, row["prompt"], list(responses), best, subset, reference)


def load_preferences(source: str | Sequence[dict[str, Any]], limit: int | None = None) -> list[PreferenceItem]:
    """Preference items from a file, a ``datasets`` dataset (saved folder or hub id) or a list of rows.

    Example:
        >>> items = load_preferences([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
        >>> items[0].responses, items[0].best
        (['4', '5'], 0)
    """
    rows = read_rows(source) if isinstance(source, str) else list(source)
    return [preference_item(row, i) for i, row in enumerate(rows[:limit] if limit else rows)]


async def judged_chunks(reward: Any, items: Sequence[PreferenceItem], batch_size: int, progress: Any = None, *,
                        close: bool = False) -> AsyncIterator[list[tuple[PreferenceItem, ScoreRequest, ScoreResult]]]:
    """Judge ``items`` with ``reward`` (any RewardFunction) in chunks of ``batch_size``, yielding each chunk's
    (item, request, result) triples; the progress bar advances once the caller has handled a chunk, and with
    ``close`` the reward's clients are closed at the end. Use it with ``contextlib.aclosing`` so that stopping early
    still closes them."""
    try:
        for start in range(0, len(items), batch_size):
            chunk = list(items[start:start + batch_size])
            requests = [item.request() for item in chunk]
            yield list(zip(chunk, requests, await reward.ascore(requests)))
            if progress is not None:
                progress.update(len(chunk))
    finally:
        if close:
            await reward.aclose()


def write_jsonl(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_preferences(items: Sequence[PreferenceItem], path: str | Path) -> Path:
    """Write items as JSONL (the multi-response columns ``load_preferences`` reads back)."""
    return write_jsonl([item.to_row() for item in items], path)


# --- synthetic verifiable preferences ---------------------------------------------------------------------------------

# A generator returns (prompt, the correct response, distinct wrong responses).
Generator = Callable[[random.Random], tuple[str, str, list[str]]]
_WORDS = ["planet", "garden", "silver", "market", "window", "rocket", "pencil", "candle", "harbor", "meadow",
          "forest", "bridge", "castle", "lantern", "thunder", "orange", "violet", "summer", "winter", "coffee"]
_FRUITS = ["apple", "pear", "plum", "cherry", "mango", "banana", "grape", "lemon", "peach", "kiwi"]


def _near(value: int, rng: random.Random) -> list[int]:
    """Plausible wrong answers: off by a little, off by a carry, digits swapped."""
    out = {value + rng.choice([-1, 1]) * rng.randint(1, 9), value + rng.choice([-10, 10, -100, 100])}
    digits = str(abs(value))
    if len(digits) >= 2:
        i = rng.randrange(len(digits) - 1)
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        out.add(int(swapped) * (1 if value >= 0 else -1))
    out.discard(value)
    return sorted(out)


def _arithmetic(rng: random.Random) -> tuple[str, str, list[str]]:
    a, b = rng.randint(12, 99), rng.randint(12, 99)
    op = rng.choice(["+", "-", "*"])
    value = a + b if op == "+" else a - b if op == "-" else a * b
    shown = {"+": "+", "-": "-", "*": "×"}[op]
    prompt = f"What is {a} {shown} {b}? Answer with the result."
    return prompt, f"{a} {shown} {b} = {value}.", [f"{a} {shown} {b} = {w}." for w in _near(value, rng)]


_UNITS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("hours", "minutes", 60),
          ("kilograms", "grams", 1000), ("minutes", "seconds", 60), ("liters", "milliliters", 1000),
          ("days", "hours", 24), ("feet", "inches", 12)]


def _unit_conversion(rng: random.Random) -> tuple[str, str, list[str]]:
    source, target, factor = rng.choice(_UNITS)
    amount = rng.randint(2, 40) if rng.random() < 0.6 else rng.randint(2, 40) + 0.5
    value = amount * factor
    fmt = lambda x: f"{x:g}"  # noqa: E731
    wrong = sorted({value / 10, value * 10, amount * (factor + rng.choice([-4, 4, 40]))} - {value})
    prompt = f"Convert {fmt(amount)} {source} to {target}."
    return (prompt, f"{fmt(amount)} {source} is {fmt(value)} {target}.",
            [f"{fmt(amount)} {source} is {fmt(w)} {target}." for w in wrong])


def _string_manipulation(rng: random.Random) -> tuple[str, str, list[str]]:
    word = rng.choice(_WORDS)
    task = rng.choice(["reverse", "vowels", "upper", "sort"])
    if task == "reverse":
        right = word[::-1]
        i = rng.randrange(len(word) - 1)
        swapped = right[:i] + right[i + 1] + right[i] + right[i + 2:]
        wrong = [w for w in {swapped, word, right[1:] + right[0]} if w != right]
        return f"Reverse the string '{word}'.", f"'{word}' reversed is '{right}'.", [
            f"'{word}' reversed is '{w}'." for w in sorted(wrong)]
    if task == "vowels":
        count = sum(ch in "aeiou" for ch in word)
        wrong = sorted({count + 1, count - 1, count + 2} - {count, -1})
        return (f"How many vowels (a, e, i, o, u) are in the word '{word}'?",
                f"The word '{word}' has {count} vowels.", [f"The word '{word}' has {w} vowels." for w in wrong])
    if task == "upper":
        right = word.upper()
        wrong = [word.capitalize(), right[:-1] + right[-1].lower(), word]
        return (f"Write the word '{word}' in capital letters.", right, [w for w in wrong if w != right])
    right = "".join(sorted(word))
    wrong = {"".join(sorted(word, reverse=True)), word, right[1:] + right[0]} - {right}
    return (f"Sort the letters of '{word}' alphabetically.", f"Sorted: {right}", [f"Sorted: {w}" for w in sorted(wrong)])


def _instruction_format(rng: random.Random) -> tuple[str, str, list[str]]:
    task = rng.choice(["json", "count", "repeat"])
    if task == "json":
        count = rng.randint(2, 5)
        fruits = rng.sample(_FRUITS, count + 1)
        right = json.dumps(fruits[:count])
        return (f"List exactly {count} fruits as a JSON array of strings, and nothing else.", right,
                ["\n".join(f"- {f}" for f in fruits[:count]), json.dumps(fruits[:count + 1]),
                 f"Here are {count} fruits: {', '.join(fruits[:count])}."])
    if task == "count":
        count = rng.randint(3, 6)
        letter = rng.choice(string.ascii_uppercase[:20])
        right = ", ".join([letter] * count)
        return (f"Write the letter {letter} exactly {count} times, separated by commas.", right,
                [", ".join([letter] * (count + 1)), ", ".join([letter] * (count - 1)), " ".join([letter] * count)])
    word = rng.choice(_WORDS)
    return (f"Reply with only the word '{word}' in lowercase, with no punctuation.", word,
            [f"{word}.", word.capitalize(), f"Sure! {word}"])


SYNTHETIC_KINDS: dict[str, Generator] = {
    "arithmetic": _arithmetic,
    "unit_conversion": _unit_conversion,
    "string_manipulation": _string_manipulation,
    "instruction_format": _instruction_format,
}


def synthetic_preferences(n_items: int, *, seed: int = 0, n_responses: tuple[int, int] = (2, 4),
                          kinds: Sequence[str] | None = None, prefix: str = "syn") -> list[PreferenceItem]:
    """``n_items`` verifiable preference items: one correct response among 1-3 wrong ones (the number of responses
    drawn from ``n_responses``, inclusive), shuffled, ``best`` = the correct one, ``subset`` = the kind. The same
    seed gives the same items; use different seeds for training and held-out sets.

    Example:
        >>> item = synthetic_preferences(1, seed=3, kinds=["arithmetic"])[0]
        >>> item.subset, len(item.responses) >= 2
        ('arithmetic', True)
    """
    names = list(kinds or SYNTHETIC_KINDS)
    unknown = sorted(set(names) - set(SYNTHETIC_KINDS))
    if unknown:
        raise ValueError(f"kinds: unknown {unknown}; expected some of {sorted(SYNTHETIC_KINDS)}")
    low, high = n_responses
    if not 2 <= low <= high:
        raise ValueError(f"n_responses: expected (low, high) with 2 <= low <= high, got {n_responses}")
    rng = random.Random(f"synthetic:{seed}")
    items = []
    for i in range(n_items):
        kind = names[i % len(names)]
        prompt, right, wrong = SYNTHETIC_KINDS[kind](rng)
        wrong = list(dict.fromkeys(w for w in wrong if w != right))
        count = min(rng.randint(low, high) - 1, len(wrong))
        responses = [right] + rng.sample(wrong, count)
        rng.shuffle(responses)
        items.append(PreferenceItem(f"{prefix}-{seed}-{i}", prompt, responses, responses.index(right), kind))
    return items


__all__ = ["PreferenceItem", "SYNTHETIC_KINDS", "load_preferences", "preference_item", "read_rows",
           "synthetic_preferences", "write_jsonl", "write_preferences"]
