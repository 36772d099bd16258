"""Event loops: run the async core from synchronous code, even inside a running event loop (Jupyter, TRL's reward
thread), and keep what must live in one event loop (clients, queues, semaphores) per loop.

Sync calls go to one private event loop on a daemon thread, so the engine's connection pool survives between calls
(``asyncio.run`` per call would close the loop and every client bound to it). After a fork the thread is recreated.
``PerLoop`` holds one object per running loop, made lazily inside it and forgotten with it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any, Callable, Coroutine, Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="grm-plugin-loop", daemon=True)
            thread.start()
            _loop, _thread, _pid = loop, thread, os.getpid()
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the library's background loop and return its result (or raise its error)."""
    loop = _background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a synchronous grm-plugin call was made from inside grm-plugin's own event loop; "
                           "use the async method (ascore/acall) there")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


class PerLoop(Generic[T]):
    """One object per running event loop, made by ``factory`` inside that loop on first use and dropped when the
    loop is garbage collected (clients, queues and locks bound to a loop must never be used from another; hosts
    such as ms-swift run every step in a new ``asyncio.run`` loop).

    Not picklable: an owner that pickles leaves it out of its state and makes a new one.

    Example:
        >>> semaphores = PerLoop(lambda: asyncio.Semaphore(4))
        >>> asyncio.run(_same_inside_one_loop(semaphores))
        True
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        """The current loop's object (made now if this loop has none)."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self.factory()
        return value

    def pop(self) -> T | None:
        """Remove and return the current loop's object (None if it has none), e.g. to close it."""
        return self._values.pop(asyncio.get_running_loop(), None)

    def values(self) -> list[T]:
        """The objects of every loop still alive."""
        return list(self._values.values())

    def __reduce__(self) -> Any:
        raise TypeError("PerLoop holds loop-bound objects and does not pickle; leave it out of the owner's state")


async def _same_inside_one_loop(per_loop: PerLoop[Any]) -> bool:
    return per_loop.get() is per_loop.get()
