"""Guaranteed-format decoding for local models: a ``transformers`` logits processor that makes every completion end
with a well-formed scores line (``ScoresConstraint``), so even a small judge always yields a usable vote.

Per constrained row of the ``generate`` batch the processor is a small state machine:

``free``
    The principles and analysis, unconstrained except that the end of sequence is forbidden. It leaves this mode
    when (a) the model starts the scores label itself (the text ends with ``prefix[:j]`` where ``j`` covers the
    label up to its ``:``/``>``, e.g. ``Scores:``, or the label's first word at a line start, ``\\nScores``);
    (b) the model would end: EOS is its most likely next token (``tail_on_eos``); (c) the remaining token budget
    only just holds the worst-case tail (newline + prefix + the longest number tokens + suffix + EOS); or (d) the
    free text reached ``max_free_tokens``. In (b)-(d) the whole prefix is forced, on a line of its own. Either way
    the completion ends with the exact tail ``ScoresConstraint.regex()`` describes, as with vLLM/SGLang.
``prefix``
    The rest of the prefix is forced, token by token (the tokenizer's own tokenization of the missing text, when it
    reproduces the text exactly; else a greedy longest-match over the vocabulary).
``numbers``
    Only tokens that keep the text after the prefix a prefix of ``<int>(sep<int>){count-1}suffix`` (each int in
    ``low..high``, canonical: no leading zeros, no ``-0``) are allowed; EOS is allowed once the suffix is written and
    forced when nothing else can follow. Under a tight budget only tokens from which the tail can still be
    completed in time are allowed.
``finished``
    EOS was produced; EOS is forced from then on (``generate`` replaces it by padding for finished rows anyway).

Cost: once per tokenizer, the text of every vocabulary token (decoded after an anchor token, so SentencePiece word
boundaries survive) and, once per (tokenizer, constraint), the token-level automaton of the numbers part, explored
over the few hundred vocabulary tokens made only of digits/separator/suffix characters, with the fewest and most
tokens still needed from each state. Per step and row the work is a few dictionary look-ups and ``str.endswith``
calls on the last characters of the free text, kept incrementally from the token texts; the vocabulary is never
scanned in Python.

Example:
    >>> from transformers import LogitsProcessorList
    >>> constraints = [ScoresConstraint(2, 1, 10)] * (len(prompts) * n)   # doctest: +SKIP
    >>> processor = ScoresLogitsProcessor(tokenizer, constraints, max_new_tokens=256,
    ...                                   prompt_length=input_ids.shape[1])          # doctest: +SKIP
    >>> model.generate(input_ids, attention_mask=mask, max_new_tokens=256, num_return_sequences=n,
    ...                logits_processor=LogitsProcessorList([processor]))           # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import threading
import warnings
import weakref
from typing import Any, Sequence

import torch
from transformers import LogitsProcessor

from . import ScoresConstraint

_DIGITS = frozenset("0123456789")
_TEXT_WINDOW = 96  # characters of free text kept per row for the trigger checks

__all__ = ["ScoresLogitsProcessor", "TailGrammar", "number_prefix_ok", "number_complete"]


# ---------------------------------------------------------------------------------------------------------------
# Character level: which strings are prefixes of a valid scores tail


def number_prefix_ok(digits: str, low: int, high: int) -> bool:
    """Whether ``digits`` can be continued (or already is) the canonical decimal of an integer in ``low..high``.

    Example:
        >>> [number_prefix_ok(d, 1, 10) for d in ("1", "10", "11", "0", "01", "-")]
        [True, True, False, False, False, False]
        >>> number_prefix_ok("0", 0, 1), number_prefix_ok("-", -3, 3), number_prefix_ok("-0", -3, 3)
        (True, True, False)
    """
    if not digits:
        return low <= high
    negative = digits[0] == "-"
    body = digits[1:] if negative else digits
    if negative:
        m_low, m_high = max(1, -high), -low  # magnitudes of the negative values in range
    else:
        m_low, m_high = max(0, low), high
    if m_low > m_high:
        return False
    if not body:
        return True  # a lone "-": some negative value is in range
    if any(c not in _DIGITS for c in body):
        return False
    if body[0] == "0":
        return body == "0" and not negative and m_low == 0
    value, width = int(body), len(body)
    for extra in range(len(str(m_high)) - width + 1):
        scale = 10 ** extra
        if value * scale <= m_high and (value + 1) * scale - 1 >= m_low:
            return True
    return False


def number_complete(digits: str, low: int, high: int) -> bool:
    """Whether ``digits`` is the canonical decimal of an integer in ``low..high``.

    Example:
        >>> number_complete("10", 1, 10), number_complete("1", 2, 10), number_complete("007", 0, 10)
        (True, False, False)
    """
    body = digits[1:] if digits[:1] == "-" else digits
    if not body or any(c not in _DIGITS for c in body):
        return False
    return str(int(digits)) == digits and low <= int(digits) <= high


_END = (-1, 0)  # the NFA state after the suffix


class TailGrammar:
    """The part of a ``ScoresConstraint`` after its prefix, ``<int>(sep<int>){count-1}suffix``, as a small NFA over
    characters. A *state* is a frozenset of NFA positions ``(segment, data)``: a number segment carries the digits
    written so far, a literal segment (separator or suffix) the characters matched so far.

    Example:
        >>> g = TailGrammar(ScoresConstraint(2, 1, 10))
        >>> g.is_prefix("10, 1"), g.is_prefix("11"), g.is_complete("10, 1}"), g.is_complete("10, 1")
        (True, False, True, False)
    """

    def __init__(self, constraint: ScoresConstraint) -> None:
        if constraint.count < 1:
            raise ValueError(f"ScoresConstraint.count must be at least 1, got {constraint.count}")
        if constraint.low > constraint.high:
            raise ValueError(f"ScoresConstraint has an empty range {constraint.low}..{constraint.high}")
        self.low, self.high = constraint.low, constraint.high
        segments: list[str | None] = []  # None: a number; str: a literal
        for i in range(constraint.count):
            if i:
                segments.append(constraint.separator)
            segments.append(None)
        segments.append(constraint.suffix)
        self.segments = segments
        chars = set(_DIGITS) | set(constraint.separator) | set(constraint.suffix)
        if constraint.low < 0:
            chars.add("-")
        self.charset = frozenset(chars)
        self._step_cache: dict[tuple[frozenset, str], frozenset] = {}
        self.start = self._closure([(0, self._init(0))])

    def _init(self, segment: int) -> Any:
        return "" if self.segments[segment] is None else 0

    def _closure(self, positions: Sequence[tuple[int, Any]]) -> frozenset:
        out: set[tuple[int, Any]] = set()
        todo = list(positions)
        while todo:
            pos = todo.pop()
            if pos in out:
                continue
            out.add(pos)
            segment, data = pos
            if pos == _END:
                continue
            spec = self.segments[segment]
            done = number_complete(data, self.low, self.high) if spec is None else data == len(spec)
            if done:
                nxt = segment + 1
                todo.append(_END if nxt == len(self.segments) else (nxt, self._init(nxt)))
        return frozenset(out)

    def _step(self, state: frozenset, char: str) -> frozenset:
        key = (state, char)
        cached = self._step_cache.get(key)
        if cached is not None:
            return cached
        moved = []
        for segment, data in state:
            if (segment, data) == _END:
                continue
            spec = self.segments[segment]
            if spec is None:
                if number_prefix_ok(data + char, self.low, self.high):
                    moved.append((segment, data + char))
            elif data < len(spec) and spec[data] == char:
                moved.append((segment, data + 1))
        result = self._closure(moved)
        self._step_cache[key] = result
        return result

    def advance(self, state: frozenset, text: str) -> frozenset:
        """The state after ``text``; empty when ``text`` leaves the language."""
        for char in text:
            if not state:
                break
            state = self._step(state, char)
        return state

    @staticmethod
    def accepts(state: frozenset) -> bool:
        return _END in state

    def is_prefix(self, text: str) -> bool:
        """Whether ``text`` (written after the prefix) can still be completed to a valid tail."""
        return bool(self.advance(self.start, text))

    def is_complete(self, text: str) -> bool:
        return self.accepts(self.advance(self.start, text))


# ---------------------------------------------------------------------------------------------------------------
# Token level: per-tokenizer tables and per-constraint automata


class _TokenTable:
    """What the processor needs to know about one tokenizer, computed once."""

    def __init__(self, tokenizer: Any) -> None:
        self.size = len(tokenizer)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
            if getattr(token, "special", False):
                special.update(tokenizer.convert_tokens_to_ids([token.content]))
        self.special = frozenset(i for i in special if i is not None and 0 <= i < self.size)
        self.strings = self._token_strings(tokenizer)
        self.by_string: dict[str, int] = {}
        for i, text in enumerate(self.strings):
            if text and i not in self.special and "\ufffd" not in text:
                self.by_string.setdefault(text, i)
        self.max_len = max((len(s) for s in self.by_string), default=1)
        self._candidates: dict[frozenset, tuple[list[int], list[str]]] = {}
        self._forced: dict[str, tuple[int, ...]] = {}
        self.automata: dict[tuple, _TailAutomaton] = {}
        self.lock = threading.Lock()

    def _token_strings(self, tokenizer: Any) -> list[str]:
        """The text each token adds when it follows other text (a SentencePiece word-start token keeps its space)."""
        anchor = tokenizer.encode("a", add_special_tokens=False)
        kwargs = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        if anchor:
            anchor_text = tokenizer.decode(anchor, **kwargs)
            decoded = tokenizer.batch_decode([anchor + [i] for i in range(self.size)], **kwargs)
        else:  # pragma: no cover - every real tokenizer encodes "a"
            anchor_text, decoded = "", tokenizer.batch_decode([[i] for i in range(self.size)], **kwargs)
        strings = []
        for i, text in enumerate(decoded):
            if i in self.special:
                strings.append("")
            elif text.startswith(anchor_text):
                strings.append(text[len(anchor_text):])
            else:  # pragma: no cover - a tokenizer that rewrites the anchor
                strings.append(tokenizer.decode([i], **kwargs))
        return strings

    def candidates(self, charset: frozenset) -> tuple[list[int], list[str]]:
        """Tokens whose text is non-empty and made only of ``charset`` characters (the numbers part's alphabet)."""
        found = self._candidates.get(charset)
        if found is None:
            ids = [i for i, s in enumerate(self.strings) if s and i not in self.special and set(s) <= charset]
            found = (ids, [self.strings[i] for i in ids])
            self._candidates[charset] = found
        return found

    def force_ids(self, text: str, tokenizer: Any) -> tuple[int, ...]:
        """Tokens that write exactly ``text``: the tokenizer's own tokenization when its token texts concatenate to
        ``text``, else a greedy longest match over the vocabulary's texts."""
        found = self._forced.get(text)
        if found is not None:
            return found
        natural = tuple(tokenizer.encode(text, add_special_tokens=False)) if text else ()
        if "".join(self.strings[i] for i in natural if 0 <= i < self.size) == text and all(
            0 <= i < self.size and i not in self.special for i in natural
        ):
            found = natural
        else:
            ids, at = [], 0
            while at < len(text):
                for width in range(min(self.max_len, len(text) - at), 0, -1):
                    token = self.by_string.get(text[at:at + width])
                    if token is not None:
                        ids.append(token)
                        at += width
                        break
                else:
                    raise ValueError(f"the tokenizer cannot write {text[at:at + 20]!r} (needed for the scores line)")
            found = tuple(ids)
        self._forced[text] = found
        return found

    def automaton(self, constraint: ScoresConstraint) -> "_TailAutomaton":
        key = (constraint.count, constraint.low, constraint.high, constraint.separator, constraint.suffix)
        with self.lock:
            found = self.automata.get(key)
            if found is None:
                found = _TailAutomaton(self, TailGrammar(constraint))
                self.automata[key] = found
        return found


_TABLES: "weakref.WeakKeyDictionary[Any, _TokenTable]" = weakref.WeakKeyDictionary()  # freed with the tokenizer
_TABLES_BY_ID: dict[int, tuple[Any, _TokenTable]] = {}  # for tokenizers that cannot be weakly referenced or hashed
_TABLES_LOCK = threading.Lock()


def _table_for(tokenizer: Any) -> _TokenTable:
    with _TABLES_LOCK:
        try:
            table = _TABLES.get(tokenizer)
            weak = True
        except TypeError:  # pragma: no cover - transformers' tokenizers are ordinary objects
            held = _TABLES_BY_ID.get(id(tokenizer))
            table = held[1] if held is not None and held[0] is tokenizer else None
            weak = False
        if table is None:
            table = _TokenTable(tokenizer)
            if weak:
                _TABLES[tokenizer] = table
            else:  # pragma: no cover
                _TABLES_BY_ID[id(tokenizer)] = (tokenizer, table)
        return table


class _TailAutomaton:
    """The numbers part at token level: every state reachable from the start over the candidate tokens, the edges
    ``state -> {token: next state}``, and the fewest/most tokens still needed to complete the tail."""

    def __init__(self, table: _TokenTable, grammar: TailGrammar) -> None:
        self.grammar = grammar
        cand_ids, cand_strs = table.candidates(grammar.charset)
        by_text: dict[str, list[int]] = {}
        for token, text in zip(cand_ids, cand_strs):
            by_text.setdefault(text, []).append(token)
        texts = list(by_text)
        raw: dict[frozenset, list[tuple[str, frozenset]]] = {}
        todo = [grammar.start]
        while todo:
            state = todo.pop()
            if state in raw:
                continue
            out = []
            for text in texts:
                nxt = grammar.advance(state, text)
                if nxt:
                    out.append((text, nxt))
                    if nxt not in raw:
                        todo.append(nxt)
            raw[state] = out
        # Fewest / most tokens to the end of the tail. Each token consumes at least one character and the positions
        # only move forward, so the graph is acyclic: a depth-first post-order settles every state.
        self.min_left: dict[frozenset, float] = {}
        self.max_left: dict[frozenset, int] = {}
        order: list[frozenset] = []
        seen: set[frozenset] = set()
        for root in raw:
            if root in seen:
                continue
            stack = [(root, iter(raw[root]))]
            seen.add(root)
            while stack:
                state, children = stack[-1]
                for _, child in children:
                    if child not in seen:
                        seen.add(child)
                        stack.append((child, iter(raw[child])))
                        break
                else:
                    stack.pop()
                    order.append(state)
        for state in order:
            ends = grammar.accepts(state)
            lows = [self.min_left[c] for _, c in raw[state]]
            highs = [self.max_left[c] for _, c in raw[state] if self.min_left[c] < math.inf]
            self.min_left[state] = 0 if ends else (1 + min(lows) if lows else math.inf)
            self.max_left[state] = max([0 if ends else -1] + [1 + h for h in highs])
        self.edges: dict[frozenset, dict[int, frozenset]] = {}
        for state, out in raw.items():
            self.edges[state] = {token: nxt for text, nxt in out if self.min_left[nxt] < math.inf
                                 for token in by_text[text]}
        self.start = grammar.start
        self._allowed: dict[tuple[frozenset, int | None], tuple[int, ...]] = {}

    def allowed(self, state: frozenset, remaining: int, eos: tuple[int, ...]) -> tuple[int, ...]:
        """Tokens allowed in ``state`` when ``remaining`` tokens (this one included) may still be generated."""
        tight = remaining < self.max_left[state] + 1
        key = (state, remaining if tight else None)
        found = self._allowed.get(key)
        if found is not None:
            return found
        edges = self.edges[state]
        ends = self.grammar.accepts(state)
        closing = eos if ends else ()
        if not tight:
            found = tuple(edges) + closing
        else:
            fits = tuple(t for t, nxt in edges.items() if self.min_left[nxt] + 1 <= remaining - 1)
            if fits:
                found = fits + closing
            elif ends:
                found = closing
            else:  # not even room for EOS: finish the text; failing that, get as close as possible
                fits = tuple(t for t, nxt in edges.items() if self.min_left[nxt] <= remaining - 1)
                if not fits and edges:
                    best = min(self.min_left[nxt] for nxt in edges.values())
                    fits = tuple(t for t, nxt in edges.items() if self.min_left[nxt] == best)
                found = fits
        self._allowed[key] = found
        return found


# ---------------------------------------------------------------------------------------------------------------
# The processor


class _Row:
    __slots__ = ("constraint", "automaton", "mode", "text", "free_tokens", "forced", "forced_at", "state", "started_by")

    def __init__(self, constraint: ScoresConstraint, automaton: _TailAutomaton) -> None:
        self.constraint = constraint
        self.automaton = automaton
        self.mode = "free"
        self.text = "\n"  # a virtual line start before the first generated token
        self.free_tokens = 0
        self.forced: tuple[int, ...] = ()
        self.forced_at = 0
        self.state: frozenset = automaton.start
        self.started_by: str | None = None


class ScoresLogitsProcessor(LogitsProcessor):
    """Force every constrained row of a ``generate`` batch to end with its ``ScoresConstraint`` tail.

    Args:
        tokenizer: the model's tokenizer (the per-tokenizer tables are computed once and cached).
        constraints: one per row of the *expanded* batch ``generate`` sees (prompt 0's ``num_return_sequences``
            rows, then prompt 1's, ...); ``None`` leaves a row unconstrained.
        max_new_tokens: the ``max_new_tokens`` given to ``generate``.
        prompt_length: the padded prompt length (``input_ids.shape[1]`` of the left-padded batch).
        eos_token_id: the id(s) that end a sequence (pass ``model.generation_config.eos_token_id``); the
            tokenizer's ``eos_token_id`` is always included. The first one is the one forced.
        max_free_tokens: optional cap on the free text before the tail is forced.
        tail_on_eos: when EOS is the most likely next token of the free text (the model wants to stop), start the
            scores line there instead of making the model write on (default True).

    One processor serves one ``generate`` call (it keeps per-row state; it resets itself if it sees a fresh prompt).
    Greedy and sampled decoding both work (it only sets logits to ``-inf``). Beam search is not supported.
    """

    def __init__(
        self,
        tokenizer: Any,
        constraints: Sequence[ScoresConstraint | None],
        max_new_tokens: int,
        prompt_length: int,
        *,
        eos_token_id: int | Sequence[int] | None = None,
        max_free_tokens: int | None = None,
        tail_on_eos: bool = True,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.tokenizer = tokenizer
        self.constraints = list(constraints)
        self.max_new_tokens = int(max_new_tokens)
        self.prompt_length = int(prompt_length)
        self.max_free_tokens = max_free_tokens
        self.tail_on_eos = tail_on_eos
        eos: list[int] = []
        given = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        for token in given + [getattr(tokenizer, "eos_token_id", None)]:
            if token is not None and int(token) not in eos:
                eos.append(int(token))
        if not eos:
            raise ValueError("ScoresLogitsProcessor needs an end-of-sequence token id (eos_token_id)")
        self.eos = tuple(eos)
        self._eos_set = frozenset(eos)
        self.table = _table_for(tokenizer)
        self._plans: dict[ScoresConstraint, dict[str, Any]] = {}
        for constraint in self.constraints:
            if constraint is not None and constraint not in self._plans:
                self._plans[constraint] = self._plan(constraint)
        self._reset()
        self._id_tensors: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}

    # -- planning --------------------------------------------------------------------------------------------

    def _plan(self, constraint: ScoresConstraint) -> dict[str, Any]:
        table, prefix = self.table, constraint.prefix
        automaton = table.automaton(constraint)
        if automaton.min_left[automaton.start] == math.inf:  # pragma: no cover - needs a vocabulary without digits
            raise ValueError(f"the tokenizer cannot write the scores of {constraint}")
        prefix_ids = table.force_ids(prefix, self.tokenizer)
        newline_ids = table.force_ids("\n" + prefix, self.tokenizer)
        marks = [i + 1 for i, c in enumerate(prefix) if c in ":>{["]
        label_end = max(1, marks[0] if marks else len(prefix))
        first_word = re.match(r"[A-Za-z]+", prefix)
        # Every text the processor may force, tokenized now: no tokenizer call while generate runs.
        forced = {prefix: prefix_ids, "\n" + prefix: newline_ids}
        rests = [prefix[j:] for j in range(label_end, len(prefix) + 1)]
        if first_word:
            rests.append(prefix[first_word.end():])
        for rest in rests:
            try:
                forced[rest] = table.force_ids(rest, self.tokenizer)
            except ValueError:  # pragma: no cover - a tokenizer that cannot write part of the prefix on its own
                pass
        plan = {
            "automaton": automaton,
            "label_end": label_end,
            "line_start": re.compile(r"\n[ \t*#_>-]*" + re.escape(first_word.group(0)) + r"$") if first_word else None,
            "first_word_end": first_word.end() if first_word else 0,
            "forced": forced,
            # budget at which the free text must give way: newline + prefix + longest numbers + EOS
            "threshold": len(newline_ids) + automaton.max_left[automaton.start] + 1,
        }
        needed = len(prefix_ids) + int(automaton.min_left[automaton.start])
        if needed > self.max_new_tokens:
            warnings.warn(f"max_new_tokens={self.max_new_tokens} cannot hold the scores line of {constraint} "
                          f"(at least {needed} tokens with this tokenizer); those completions will not parse",
                          RuntimeWarning, stacklevel=3)
        return plan

    @classmethod
    def tail_tokens(cls, tokenizer: Any, constraint: ScoresConstraint) -> tuple[int, int]:
        """``(fewest, most)`` tokens the scores tail takes with ``tokenizer``: fewest = prefix + shortest numbers
        and suffix (the least ``max_new_tokens`` that can parse); most = newline + prefix + longest numbers and
        suffix + EOS (the budget left when the free text is cut off)."""
        table = _table_for(tokenizer)
        automaton = table.automaton(constraint)
        fewest = len(table.force_ids(constraint.prefix, tokenizer)) + int(automaton.min_left[automaton.start])
        most = len(table.force_ids("\n" + constraint.prefix, tokenizer)) + automaton.max_left[automaton.start] + 1
        return fewest, most

    @property
    def tail_reasons(self) -> list[str | None]:
        """Per row, what started its scores line so far: ``"label"`` (the model wrote the label), ``"eos"`` (it
        wanted to stop), ``"budget"`` (the token budget ran low), ``"max_free_tokens"``; None for an unconstrained
        row or one still in free text."""
        return [None if row is None else row.started_by for row in self._rows]

    def _reset(self) -> None:
        self._rows = [None if c is None else _Row(c, self._plans[c]["automaton"]) for c in self.constraints]
        self._consumed = 0

    # -- per step --------------------------------------------------------------------------------------------

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        if batch != len(self._rows):
            raise ValueError(f"ScoresLogitsProcessor got a batch of {batch} rows but {len(self._rows)} constraints "
                             "(one per prompt x sample, in generate's order; beam search is not supported)")
        generated = length - self.prompt_length
        if generated < 0:
            raise ValueError(f"input_ids has {length} columns, fewer than prompt_length={self.prompt_length}")
        if generated < self._consumed:  # a new generate call with the same processor
            self._reset()
        if generated > self._consumed:
            new = input_ids[:, self.prompt_length + self._consumed:].tolist()
            for row, tokens in zip(self._rows, new):
                if row is not None:
                    for token in tokens:
                        self._consume(row, token)
            self._consumed = generated
        remaining = self.max_new_tokens - generated
        free_rows: list[int] = []
        for index, row in enumerate(self._rows):
            if row is not None and row.mode == "free" and not self._maybe_leave_free(row, remaining):
                free_rows.append(index)
        if free_rows and self.tail_on_eos:  # (b) the model would end here: write the scores line instead
            tops = scores[free_rows].argmax(dim=-1).tolist()
            for index, top in zip(free_rows, tops):
                if top in self._eos_set:
                    self._start_tail(self._rows[index], None, "eos")
            free_rows = [i for i in free_rows if self._rows[i].mode == "free"]
        restricted = [i for i, row in enumerate(self._rows) if row is not None and row.mode != "free"]
        if not restricted and not free_rows:
            return scores
        # One boolean mask, filled with three vectorised writes: restricted rows banned wholesale, their allowed ids
        # unbanned, EOS banned in free rows.
        vocab, device = scores.shape[-1], scores.device
        banned = torch.zeros(scores.shape, dtype=torch.bool, device=device)
        if restricted:
            allowed = [self._allowed(self._rows[i], remaining) for i in restricted]
            row_index = [i for i, ids in zip(restricted, allowed) for _ in ids]
            col_index = [t for ids in allowed for t in ids]
            restricted_rows = torch.tensor(restricted, device=device)
            banned[restricted_rows] = True
            keep = torch.tensor(col_index, dtype=torch.long, device=device)
            rows = torch.tensor(row_index, dtype=torch.long, device=device)
            inside = keep < vocab
            rows, keep = rows[inside], keep[inside]
            banned[rows, keep] = False
        if free_rows:
            eos = self._ids(self.eos, device, vocab)
            banned[torch.tensor(free_rows, device=device).unsqueeze(1), eos.unsqueeze(0)] = True
        out = scores.masked_fill(banned, -math.inf)
        if restricted:
            # An earlier processor (no_repeat_ngram_size, bad_words_ids, min_new_tokens, ...) may have banned every
            # token the format allows: the format wins, the allowed tokens become equally likely.
            dead = torch.isneginf(out[restricted_rows].amax(dim=-1))
            if bool(dead.any()):
                dead_rows = restricted_rows[dead]
                hit = torch.isin(rows, dead_rows)
                out[rows[hit], keep[hit]] = 0.0
        return out

    def _ids(self, ids: tuple[int, ...], device: torch.device, vocab: int) -> torch.Tensor:
        key = (ids, device)
        found = self._id_tensors.get(key)
        if found is None:
            found = torch.tensor([i for i in ids if i < vocab], dtype=torch.long, device=device)
            self._id_tensors[key] = found
        return found

    def _consume(self, row: _Row, token: int) -> None:
        mode = row.mode
        if mode == "finished":
            return
        if token in self._eos_set:
            row.mode = "finished"
            return
        if mode == "free":
            row.free_tokens += 1
            text = self.table.strings[token] if 0 <= token < self.table.size else ""
            row.text = (row.text + text)[-_TEXT_WINDOW:]
        elif mode == "prefix":
            if row.forced_at < len(row.forced) and token == row.forced[row.forced_at]:
                row.forced_at += 1
                if row.forced_at == len(row.forced):
                    row.mode, row.state = "numbers", row.automaton.start
            else:  # another processor overrode ours: start again from free text
                row.mode, row.text = "free", "\n"
        elif mode == "numbers":
            nxt = row.automaton.edges[row.state].get(token)
            if nxt is None:  # pragma: no cover - only if another processor overrode ours
                row.mode, row.text = "free", "\n"
            else:
                row.state = nxt

    def _maybe_leave_free(self, row: _Row, remaining: int) -> bool:
        """Start the tail if the model began the scores label, the budget only just holds the worst-case tail or the
        free text reached ``max_free_tokens``. Returns whether the row left free text."""
        plan = self._plans[row.constraint]
        prefix, text = row.constraint.prefix, row.text
        rest: str | None = None
        reason = "label"
        for j in range(len(prefix), plan["label_end"] - 1, -1):  # the label (and maybe more) was written
            if text.endswith(prefix[:j]) and prefix[j:] in plan["forced"]:
                rest = prefix[j:]
                break
        if (rest is None and plan["line_start"] is not None and plan["line_start"].search(text)
                and prefix[plan["first_word_end"]:] in plan["forced"]):
            rest = prefix[plan["first_word_end"]:]  # the label's first word at a line start
        if rest is None:
            over_budget = remaining <= plan["threshold"]
            too_long = self.max_free_tokens is not None and row.free_tokens >= self.max_free_tokens
            if not (over_budget or too_long):
                return False
            reason = "budget" if over_budget else "max_free_tokens"
        self._start_tail(row, rest, reason)
        return True

    def _start_tail(self, row: _Row, rest: str | None, reason: str) -> None:
        """Force ``rest`` (the missing end of the prefix; None: the whole prefix on a line of its own)."""
        if row.started_by is None:
            row.started_by = reason
        if rest is None:
            rest = row.constraint.prefix if row.text.endswith("\n") else "\n" + row.constraint.prefix
        row.forced = self._plans[row.constraint]["forced"][rest]
        row.forced_at = 0
        row.mode = "prefix" if row.forced else "numbers"
        row.state = row.automaton.start

    def _allowed(self, row: _Row, remaining: int) -> tuple[int, ...] | None:
        """The allowed token ids of a row, or None for free text (everything but EOS)."""
        if row.mode == "free":
            return None
        if row.mode == "prefix":
            return (row.forced[row.forced_at],)
        if row.mode == "numbers":
            return row.automaton.allowed(row.state, remaining, self.eos)
        return self.eos[:1]  # finished
