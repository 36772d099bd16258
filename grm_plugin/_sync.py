"""Run the async core from synchronous code, even inside a running event loop (Jupyter, TRL's reward thread).

Sync calls go to one private event loop on a daemon thread, so the engine's connection pool survives between calls
(``asyncio.run`` per call would close the loop and every client bound to it). After a fork the thread is recreated.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Coroutine, TypeVar

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
