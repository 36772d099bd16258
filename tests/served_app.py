"""A test helper: ``create_app(...)`` under uvicorn in a thread, on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import uvicorn

from grm_plugin.server import ServeSettings, create_app
from grm_plugin.serving import uvicorn_config


class Server:
    """create_app(...) under uvicorn in a thread, on a free loopback port. Cohorts wait ``group_wait_s=0.3`` unless
    told otherwise (the default 60 s would hold every first group of a test a minute)."""

    def __init__(self, reward, meta_rm=None, **settings) -> None:
        settings.setdefault("group_wait_s", min(0.3, settings.get("request_timeout_s", 170.0) / 2))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.settings = ServeSettings(port=self.port, **settings)
        self.app = create_app(reward, self.settings, meta_rm)
        self.server = uvicorn.Server(uvicorn_config(self.app, self.settings, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def metric(self, name: str) -> float:
        total = 0.0
        key = self.settings.api_key.get_secret_value() if self.settings.api_key is not None else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for line in httpx.get(f"{self.url}/metrics", headers=headers).text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def grm_serve(*args: str) -> tuple[subprocess.Popen, str]:
    """`grm serve ARGS` in its own process on a free port (no GRM_* or PROMETHEUS_* variables of ours leak into it),
    once its /health answers: the process (stdout and stderr together) and its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRM_", "PROMETHEUS_"))}
    process = subprocess.Popen([sys.executable, "-m", "grm_plugin.cli", "serve", "--port", str(port), *args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "grm serve did not come up"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
