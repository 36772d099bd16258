"""Running `grm serve` under uvicorn with the protections a reward endpoint on a shared network needs, which uvicorn
leaves to the deployment: a deadline for request headers and a cap on their size (a slow or endless header never
holds a connection), more file descriptors, a bounded and signal-aware shutdown, and Prometheus counters that add up
over ``--workers`` processes.

- Headers: each connection must deliver a request's headers within ``header_timeout_s`` of opening (or of the
  first byte of its next request), else it gets 408 and is closed; headers over ``max_header_bytes`` get 431.
  Idle keep-alive connections are closed by uvicorn after ``timeout_keep_alive`` (5 s).
- Connections: beyond ``max_connections`` open connections uvicorn answers 503 (``limit_concurrency``); the soft
  limit of open files is raised to what that needs.
- Shutdown: SIGINT, SIGTERM and SIGHUP stop accepting and drain in-flight requests for at most ``drain_timeout_s``;
  a second signal exits at once. With ``--workers`` the supervisor stops its workers the same way (a second signal
  kills them) and, as uvicorn does, SIGHUP restarts them one by one instead.
- Metrics: with ``--workers`` each worker writes its samples to a shared folder (prometheus_client's multiprocess
  mode) and ``/metrics`` reports their sum, so counters never go backwards between scrapes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

import uvicorn
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("grm_plugin.server")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode reads it at import

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without its [standard] extra: h11 bounds header size on its own
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


if HttpToolsProtocol is not None:

    class GuardedHttpProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol with a deadline for a request's headers and a cap on their size (read from
        the uvicorn Config attributes ``grm_header_timeout_s`` and ``grm_max_header_bytes``)."""

        def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.header_timeout_s: float = getattr(config, "grm_header_timeout_s", 10.0)
            self.max_header_bytes: int = getattr(config, "grm_max_header_bytes", 64 * 1024)
            self._in_headers = False
            self._header_bytes = 0
            self._header_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_timer()  # a connection that never sends a byte is cut off as well

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_headers and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > self.max_header_bytes:
                    self._refuse(431, f"request headers exceed {self.max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._header_bytes = True, 0
            self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._stop_header_timer()
            super().on_headers_complete()

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self._refuse(408, f"request headers not received within {self.header_timeout_s:g} s")

        def _refuse(self, status: int, message: str) -> None:
            self._stop_header_timer()
            client = "%s:%d" % self.client if self.client else "a client"
            logger.info("closed the connection of %s: %s (%d)", client, message, status)
            body = message.encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d"
                                 b"\r\nconnection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body))
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server where SIGHUP drains like SIGTERM and any second signal exits at once (uvicorn forces only on
    a second SIGINT)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.should_exit:
            logger.warning("second signal (%s): exiting without waiting for in-flight requests",
                           signal.Signals(sig).name)
            self.force_exit = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            hangup = getattr(signal, "SIGHUP", None)
            if hangup is None or threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = signal.signal(hangup, self.handle_exit)
            try:
                yield
            finally:  # restored before uvicorn raises the captured signals again
                signal.signal(hangup, previous)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, where a signal that arrives while the workers drain kills them."""

    def join_all(self) -> None:
        self.signal_queue.clear()
        while any(p.process.is_alive() for p in self.processes):
            if self.signal_queue:
                logger.warning("second signal: killing the workers without waiting for in-flight requests")
                for process in self.processes:
                    process.kill()
                self.signal_queue.clear()
            time.sleep(0.05)
        super().join_all()


def on_signal(callback: Any) -> None:
    """Run ``callback()`` in the running event loop as soon as a stop signal (SIGINT, SIGTERM, SIGHUP) arrives, before
    uvicorn's own handling of it (which then drains); call it from the app's startup. Only the main thread hears
    signals: elsewhere (a server in a thread) nothing is installed."""
    import asyncio

    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        previous = signal.getsignal(sig) if sig is not None else None
        if not callable(previous):  # nobody (uvicorn) handles it here: leave the default alone
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(callback)
            previous(signum, frame)

        signal.signal(sig, handler)


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft limit of open files towards ``wanted`` (within the hard limit); the limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


class RedactKeys(logging.Filter):
    """Masks an ``api_key=...`` query parameter in uvicorn's access log lines (the URL token OpenRLHF sends)."""

    pattern = re.compile(r"(api_key=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log() -> None:
    """Install RedactKeys on uvicorn's access logger once (in every process that serves)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeys) for f in access.filters):
        access.addFilter(RedactKeys())


def uvicorn_config(app: Any, settings: Any, **options: Any) -> uvicorn.Config:
    """The uvicorn Config that serves ``app`` under ``settings`` (a ServeSettings) with the protections above;
    ``options`` go to uvicorn.Config as they are (``workers``, ``log_level``...)."""
    headroom = 64  # the listening socket, engine connections, files
    limit = raise_open_files_limit(settings.max_connections + headroom)
    connections = settings.max_connections
    if limit < connections + headroom:
        connections = max(1, limit - headroom)
        logger.warning("only %d open files allowed (ulimit -n): serving at most %d connections", limit, connections)
    options = dict(host=settings.host, port=settings.port, log_level="info",
                   timeout_graceful_shutdown=max(1, int(round(settings.drain_timeout_s))),
                   limit_concurrency=connections, h11_max_incomplete_event_size=settings.max_header_bytes) | options
    if HttpToolsProtocol is not None:
        options.setdefault("http", GuardedHttpProtocol)
    config = uvicorn.Config(app, **options)
    # Read by GuardedHttpProtocol; plain attributes, so they travel with the Config to --workers processes.
    config.grm_header_timeout_s = settings.header_timeout_s  # type: ignore[attr-defined]
    config.grm_max_header_bytes = settings.max_header_bytes  # type: ignore[attr-defined]
    return config


def run(app: Any, settings: Any) -> None:
    """Serve ``app`` (an ASGI app, or with ``settings.workers > 1`` the import string of an app factory) with the
    protections above, until a signal stops it."""
    redact_access_log()
    if settings.workers <= 1:
        server = DrainingServer(uvicorn_config(app, settings))
        server.run()
        if not server.started:
            sys.exit(3)  # uvicorn's startup-failure exit status
        return
    metrics_dir = os.environ.get(METRICS_DIR_VARIABLE)
    own_dir = metrics_dir is None
    if own_dir:
        metrics_dir = os.environ[METRICS_DIR_VARIABLE] = tempfile.mkdtemp(prefix="grm-serve-metrics-")
    try:
        config = uvicorn_config(app, settings, factory=True, workers=settings.workers)
        Supervisor(config, sockets=[config.bind_socket()]).run()
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


__all__ = ["DrainingServer", "METRICS_DIR_VARIABLE", "RedactKeys", "Supervisor", "on_signal", "raise_open_files_limit",
           "run", "uvicorn_config"]
