"""Which principles a request is judged by: each sample's own (joint, the paper's), the request's given ones, or
upfront ones: the specific criteria of a prompt written once, from the prompt alone, and reused for every response,
group, sample and epoch. ``Principles`` decides and writes them (once per prompt, even for concurrent requests);
``PrinciplesStore`` keeps written ones in memory and, optionally, in a folder on disk; ``principles_key`` says which
prompt and judge settings they belong to."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ._sync import PerLoop
from .backends import Backend, SamplingParams
from .cache import JSONFolder, LRUCache
from .errors import ParseError
from .parsing import parse_principles
from .templates import Template, build_principles_messages, render_context
from .types import Prompt, ScoreRequest

logger = logging.getLogger("grm_plugin.principles")

MEMORY_SIZE = 16384  # prompts whose principles are kept in memory


@dataclass(frozen=True)
class WrittenPrinciples:
    """Principles and what writing them cost the judge (0 tokens for given principles)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def principles_key(prompt: Prompt, judge: dict[str, Any]) -> str:
    """A file-name safe key of the conversation and the judge settings that shape the principles written for it.

    Example:
        >>> principles_key("2+2?", {"model": "m"}) == principles_key("2+2?", {"model": "m"})
        True
    """
    blob = json.dumps({"context": render_context(prompt), "judge": judge}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


class PrinciplesStore:
    """Written principles by key: an LRU in memory, backed by a folder of JSON files when ``folder`` is given."""

    def __init__(self, folder: str | None = None, maxsize: int = MEMORY_SIZE) -> None:
        self.memory: LRUCache[WrittenPrinciples] = LRUCache(maxsize)
        self.disk = JSONFolder(folder) if folder else None

    def get(self, key: str) -> WrittenPrinciples | None:
        found = self.memory.get(key)
        if found is None and self.disk is not None:
            data = self.disk.get(key)
            if data is not None and isinstance(data.get("text"), str) and data["text"]:
                found = WrittenPrinciples(data["text"], int(data.get("prompt_tokens", 0)),
                                          int(data.get("completion_tokens", 0)))
                self.memory.put(key, found)
        return found

    def put(self, key: str, value: WrittenPrinciples) -> None:
        self.memory.put(key, value)
        if self.disk is not None:
            self.disk.put(key, asdict(value))


@dataclass(frozen=True)
class FixedPrinciples:
    """The principles every sample of a request is judged by: their text, where they came from, what writing them
    cost this request, whether they were reused, and their length in tokens (what each sample saves)."""

    text: str
    mode: str
    tokens_spent: tuple[int, int] = (0, 0)
    reused: bool = False
    tokens_per_sample: int = 0

    def counters(self, samples: int) -> dict[str, Any]:
        """The ScoreResult counters of fixed principles, for a request that drew ``samples`` judgements."""
        return dict(principles_mode=self.mode, principles_tokens=sum(self.tokens_spent),
                    principles_reused=self.reused, principles_tokens_saved=samples * self.tokens_per_sample)


class Principles:
    """Who writes a request's principles (``mode``): 'joint' (None: every sample writes its own), 'given' (the
    request's), 'upfront' (written by the judge from the prompt alone, once per prompt and judge settings, kept in
    ``store``).

    Args:
        mode: 'joint', 'upfront' or 'given'.
        template: the judge template (its principles form writes upfront principles).
        judge: the judge settings that shape written principles (part of their key).
        max_tokens: the token budget of writing them.
        store: where written principles are kept (memory, and a folder when given).
    """

    def __init__(self, mode: Literal["joint", "upfront", "given"], template: Template, judge: dict[str, Any],
                 max_tokens: int, store: PrinciplesStore | None = None) -> None:
        self.mode = mode
        self.template = template
        self.judge = judge
        self.max_tokens = max_tokens
        self.store = store or PrinciplesStore()
        self._writing: PerLoop[dict[str, asyncio.Future[WrittenPrinciples]]] = PerLoop(dict)

    def known(self, request: ScoreRequest) -> FixedPrinciples | None:
        """The fixed principles known without asking the judge: given ones, or upfront ones already written."""
        if self.mode == "joint":
            return None
        if request.principles and request.principles.strip():
            return FixedPrinciples(request.principles, "given", tokens_per_sample=-(-len(request.principles) // 4))
        found = self.store.get(principles_key(request.prompt, self.judge))
        return None if found is None else FixedPrinciples(found.text, "upfront", reused=True,
                                                          tokens_per_sample=found.completion_tokens)

    async def fixed(self, request: ScoreRequest, backend: Backend) -> FixedPrinciples | None:
        """The principles every sample is judged by (None: each sample writes its own). Upfront principles are
        written once per prompt: later and concurrent requests for the same prompt wait for and reuse them; if they
        cannot be read the request is judged with joint principles (logged)."""
        known = self.known(request)
        if known is not None or self.mode != "upfront":
            return known
        key = principles_key(request.prompt, self.judge)
        writing = self._writing.get()
        future = writing.get(key)
        mine = future is None
        if future is None:
            future = writing[key] = asyncio.ensure_future(self._write(request, backend, key))
            future.add_done_callback(lambda _f: writing.pop(key, None))
        try:
            written = await asyncio.shield(future)
        except ParseError as exc:
            logger.warning("upfront principles could not be read (%s); this request is judged with joint principles",
                           exc)
            return None
        spent = (written.prompt_tokens, written.completion_tokens) if mine else (0, 0)
        return FixedPrinciples(written.text, "upfront", spent, not mine, written.completion_tokens)

    async def _write(self, request: ScoreRequest, backend: Backend, key: str) -> WrittenPrinciples:
        sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=self.max_tokens)
        [[completion]] = await backend.generate([build_principles_messages(request.prompt, self.template)], 1, sampling)
        written = WrittenPrinciples(parse_principles(completion.text), completion.prompt_tokens,
                                    completion.completion_tokens)
        self.store.put(key, written)
        return written
