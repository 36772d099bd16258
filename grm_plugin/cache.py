"""Caches: a small thread-safe LRU cache in memory (judged requests, so identical requests cost no engine calls), and
a folder of JSON files on disk (for what should outlive the process, such as upfront principles), written with
``write_atomically`` (also what ``grm score --output`` writes with)."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Keeps the ``maxsize`` most recently used entries and, with ``max_bytes``, at most that many bytes of them as
    ``weigh(value)`` estimates them (least recently used first out; an entry heavier than ``max_bytes`` alone is not
    kept). ``maxsize=0`` keeps nothing.

    Example:
        >>> cache = LRUCache(maxsize=10, max_bytes=8, weigh=len)
        >>> cache.put("a", "12345"); cache.put("b", "123"); cache.put("c", "12")
        >>> (cache.get("a"), cache.get("b"), cache.get("c"), cache.bytes)
        (None, '123', '12', 5)
    """

    def __init__(self, maxsize: int, max_bytes: int | None = None, weigh: Callable[[V], int] | None = None) -> None:
        if max_bytes is not None and weigh is None:
            raise ValueError("LRUCache: max_bytes needs weigh (the size of one value)")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.weigh = weigh
        self.bytes = 0
        self._data: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key][0]
            return None

    def put(self, key: Hashable, value: V) -> None:
        if self.maxsize <= 0:
            return
        size = self.weigh(value) if self.max_bytes is not None and self.weigh is not None else 0
        if self.max_bytes is not None and size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._data[key] = (value, size)
            self.bytes += size
            while len(self._data) > self.maxsize or (self.max_bytes is not None and self.bytes > self.max_bytes):
                self.bytes -= self._data.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0


class JSONFolder:
    """One JSON file per key in ``folder`` (created on first write). Keys must be file-name safe (e.g. hex digests).
    Writes are atomic (a temporary file renamed), so concurrent processes never read half a file."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        write_atomically(self.folder / f"{key}.json", json.dumps(value, ensure_ascii=False))


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader sees the old file or the new one, never a part: a temporary
    file in the same folder (created if missing), renamed over ``path``, and removed again if anything fails. The file
    keeps the permissions of the one it replaces, else gets what the umask allows (as ``open`` would give it).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_atomically(folder / "out" / "scores.jsonl", "{}\\n")
        >>> sorted(p.name for p in (folder / "out").iterdir())
        ['scores.jsonl']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
