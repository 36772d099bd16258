"""Reusable principles: the specific criteria of a prompt written once, from the prompt alone, and reused for every
response, group, sample and epoch. ``PrinciplesStore`` keeps them in memory and, optionally, in a folder on disk;
``principles_key`` says which prompt and judge settings they belong to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from .cache import JSONFolder, LRUCache
from .templates import render_context
from .types import Prompt

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
