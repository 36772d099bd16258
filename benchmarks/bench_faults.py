"""Faults (issue 16, reliability): what `grm serve` does with bad payloads, a faulty engine, an engine outage, and one
rollout the engine refuses among innocent ones.

    python benchmarks/bench_faults.py                 # all four parts, writes results/faults.json (about 2 minutes)
    python benchmarks/bench_faults.py --quick --out /tmp/faults_quick.json    # fewer of everything (about 1.5 minutes)
    python benchmarks/bench_faults.py --parts payloads,engine

Every server under test is the real command, ``python -m grm_plugin.cli serve`` (``grm serve``), in its own process,
its log kept in a temporary folder; the judge engines (the simulated judge, or the fault engine defined below that
wraps it) run in threads of this process, so the benchmark can stop, restart and re-program them exactly.

1. **Bad payloads** (``payloads``): ``bad_payloads()`` generates a few hundred distinct requests, systematically:
   wrong JSON types at the top level and per field of ``/get_reward`` and ``/v1/score``, mismatched and empty lists,
   control characters, lone surrogates as JSON escapes, invalid UTF-8, truncated JSON, 5,000-digit integers, deep
   nesting, oversized bodies and lists, too many responses, non-prefix queries, wrong content types and methods,
   unknown paths, bad bearer tokens, malformed HTTP. Each is sent once; after each, ``GET /health`` must answer 200.
   Target: no 5xx, no dropped connection.
2. **Engine faults** (``engine``): ``FaultEngine`` answers ``/v1/chat/completions`` per fault mode (HTTP errors,
   429 with Retry-After, reset and closed connections, a hang, a trickle, non-JSON and wrongly shaped JSON) and
   otherwise delegates to the simulated judge. Per mode, some ``/get_reward`` requests; "survived" = every request
   answered once (the server's own counters agree), with 200 or 503 only, within the request timeout, and a
   request after the engine is healthy again gets 200.
3. **Outage** (``outage``): rollouts (distinct prompts, several responses each) sent through OpenRLHF's own client
   (``SingleTurnAgentExecutor._fetch_rewards_via_http``: 5 tries, 1 s apart) while the simulated judge is stopped for
   5.5 s in the middle and restarted on the same port. Counts rewarded, lost, duplicated and wrong rewards (noise 0:
   a rollout's reward must equal its hidden quality). The server runs with `grm serve`'s default retry policy.
4. **Blast radius** (``blast``): per round, 20 innocent rollouts and one culprit whose judge prompt the engine refuses
   with a 400 (``refuse_containing``), in one micro-batch window, through OpenRLHF's client; 3 prompts of 7
   rollouts, 6 innocents sharing the culprit's prompt, so they are judged in the same group prompt. Counts failed
   innocents (target 0).

Where `grm serve` holds a prompt's rollouts until its group is complete (``--group-size``/``--group-wait``), each part
sets them explicitly (``GROUPING``): 1 for the single-rollout parts, the group size the rollouts are sent in for the
others.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import multiprocessing
import os
import platform
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import uvicorn
from _report import print_table, write_report
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from grm_plugin.testing.simulated_judge import JudgeSettings, SimulatedJudge, build_app, with_quality

PROMPT = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKER = "<<REFUSE-ME>>"
GROUP = 7  # blast radius: rollouts per prompt (the culprit and 6 innocents share one prompt, two prompts of 7 innocents)

# How each part's server holds a prompt's rollouts (`grm serve --group-size/--group-wait`, read from these variables
# by servers that have them, ignored by older ones): the payload and engine-fault requests are single rollouts judged
# alone; the outage and blast-radius rollouts come in groups of a known size, as OpenRLHF's n_samples_per_prompt.
GROUPING = {"payloads": {"GRM_SERVE_GROUP_SIZE": "1"},
            "engine": {"GRM_SERVE_GROUP_SIZE": "1", "GRM_SERVE_GROUP_WAIT_S": "1"},  # below the 3 s request timeout
            "outage": {"GRM_SERVE_GROUP_WAIT_S": "10"},  # the size is --responses-per-prompt
            "blast": {"GRM_SERVE_GROUP_SIZE": str(GROUP), "GRM_SERVE_GROUP_WAIT_S": "10"}}


# --- shared helpers ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GRMServe:
    """``python -m grm_plugin.cli serve ARGS`` (the `grm serve` command) in a subprocess on a free port, its output in
    ``log``; the judge's GRMConfig from ``GRM_*`` variables in ``env`` (every other GRM_ variable is dropped)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GRM_")}
        self._out = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "grm_plugin.cli", "serve", "--port", str(self.port),
                                         *args], env={**clean, **env}, stdout=self._out, stderr=subprocess.STDOUT)

    def __enter__(self) -> "GRMServe":
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"grm serve did not come up: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()

    def requests_total(self, headers: dict[str, str] | None = None) -> Counter:
        """``grm_requests_total`` from /metrics, by (endpoint, status)."""
        counts: Counter = Counter()
        text = httpx.get(f"{self.url}/metrics", headers=headers, timeout=10).text
        for line in text.splitlines():
            found = re.match(r'grm_requests_total\{endpoint="([^"]*)",status="(\d+)"\} (\S+)', line)
            if found:
                counts[(found.group(1), int(found.group(2)))] += float(found.group(3))
        return counts

    def mean_batch(self, headers: dict[str, str] | None = None) -> float:
        text = httpx.get(f"{self.url}/metrics", headers=headers, timeout=10).text
        values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith("grm_batch_rollouts_"))
        count = float(values.get("grm_batch_rollouts_count", 0))
        return float(values.get("grm_batch_rollouts_sum", 0)) / count if count else 0.0

    def tracebacks(self) -> list[str]:
        """Each traceback in the server's log, with the log line before it (uvicorn's or the guard's message)."""
        lines = self.log.read_text(errors="replace").splitlines()
        found = []
        for i, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                end = i + 1
                while end < len(lines) and lines[end].startswith((" ", "\t")):
                    end += 1
                found.append("\n".join(lines[max(0, i - 1):end + 1]))  # ... and the exception's own line
        return found


class ThreadServer:
    """An ASGI app under uvicorn in a thread of this process, on 127.0.0.1:``port`` (free when None)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.requested_port = port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "ThreadServer":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.requested_port or 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical", access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def openrlhf_executor(url: str) -> Any:
    from openrlhf.utils import agent
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    agent.logger.setLevel(logging.WARNING)  # its per-try INFO lines
    return SingleTurnAgentExecutor(remote_rm_url=url)


async def openrlhf_reward(executor: Any, query: str, prompt: str, label: str) -> Any:
    """One rollout as OpenRLHF 0.11 sends it (``_fetch_rewards_via_http`` with one query): its list of reward infos,
    or the exception its client raised after its 5 tries."""
    try:
        return await executor._fetch_rewards_via_http([query], [prompt], [label])
    except Exception as exc:  # noqa: BLE001 - the client's RuntimeError after 5 tries, counted as lost
        return exc


def rewards_of(outcome: Any) -> list[float] | None:
    """The rewards in an OpenRLHF client outcome (one reward info per shard), None when it failed."""
    if not isinstance(outcome, list):
        return None
    rewards = []
    for info in outcome:
        if not isinstance(info, dict) or not isinstance(info.get("rewards"), list):
            return None
        rewards.extend(info["rewards"])
    return rewards


# --- 1. bad payloads ------------------------------------------------------------------------------------------------


@dataclass
class Payload:
    """One request to send: ``raw`` (a whole HTTP request, sent on a socket) or method/path/body/headers via httpx.
    ``expect``: the status classes a correct server may give ('4xx'; '2xx': an edge case that is valid; '2xx|4xx':
    either is fine)."""

    name: str
    body: bytes | None = None
    path: str = "/get_reward"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    auth: dict[str, str] | None = field(default_factory=lambda: dict(AUTH))
    raw: bytes | None = None
    chunked: bool = False
    expect: str = "4xx"


def dumps(obj: Any, **raw: str) -> bytes:
    """JSON (non-ASCII and lone surrogates as \\u escapes, NaN as NaN); each string ``"@NAME@"`` in it replaced by the
    raw JSON text ``raw[NAME]`` (what json.dumps cannot write, e.g. a 5,000-digit integer)."""
    text = json.dumps(obj)
    for name, value in raw.items():
        text = text.replace(json.dumps(f"@{name}@"), value)
    return text.encode("utf-8")


def rollout_body(text: str = "5", prompt: str = PROMPT, label: str | None = "5") -> dict[str, Any]:
    body: dict[str, Any] = {"query": [prompt + text], "prompts": [prompt]}
    if label is not None:
        body["labels"] = [label]
    return body


GOOD = rollout_body()
GOOD_SCORE = {"prompt": "What is 2 + 3?", "responses": [with_quality("5", 9), with_quality("6", 2)], "reference": "5"}
BIG_INT = "7" * 5000


def raw_http(request_line: str, headers: dict[str, str], body: bytes = b"", extra_header_bytes: bytes = b"") -> bytes:
    head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + extra_header_bytes + b"\r\n" + body


def bad_payloads(max_items: int, max_body: int, max_responses: int, port: int) -> list[Payload]:
    """Distinct bad requests (and a few valid edge cases, ``expect='2xx'``), generated field by field."""
    out: list[Payload] = []
    host = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Authorization": f"Bearer {TOKEN}"}

    def add(name: str, body: Any, expect: str = "4xx", **kw: Any) -> None:
        out.append(Payload(name, body if isinstance(body, (bytes, type(None))) else dumps(body), expect=expect, **kw))

    # -- /get_reward: the top level and each field's JSON type
    for name, value in [("null", None), ("true", True), ("int", 0), ("negative", -1), ("float", 1.5),
                        ("string", "text"), ("empty-list", []), ("list-of-good", [GOOD]), ("list-of-list", [[]])]:
        add(f"get_reward top level is {name}", dumps(value))
    wrong_values = [("null", None), ("true", True), ("int", 0), ("float", 1.5), ("NaN", float("nan")),
                    ("Infinity", float("inf")), ("string", "text"), ("object", {}), ("object-with-key", {"a": "b"}),
                    ("[null]", [None]), ("[int]", [3]), ("[float]", [1.5]), ("[bool]", [False]), ("[object]", [{}]),
                    ("[list]", [["x"]]), ("[NaN]", [float("nan")])]
    for key in ("query", "prompts", "labels"):
        for name, value in wrong_values:
            valid = key == "labels" and name in ("null", "[null]")  # labels may be null or hold nulls
            add(f"get_reward {key} is {name}", {**GOOD, key: value}, "2xx" if valid else "4xx")
    # missing fields
    add("get_reward without query", {"prompts": [PROMPT], "labels": ["5"]})
    add("get_reward without prompts", {"query": [PROMPT + "5"], "labels": ["5"]})
    add("get_reward without labels (valid)", {"query": [PROMPT + "5"], "prompts": [PROMPT]}, "2xx")
    add("get_reward empty object", {})
    add("get_reward only unknown keys", {"queries": [PROMPT + "5"], "prompt": [PROMPT]})
    add("get_reward extra unknown key (valid)", {**GOOD, "extra": {"x": [1, 2]}}, "2xx")
    # list lengths
    two = [PROMPT + "5", PROMPT + "6"]
    add("get_reward 2 queries, 1 prompt", {"query": two, "prompts": [PROMPT]})
    add("get_reward 1 query, 2 prompts", {"query": two[:1], "prompts": [PROMPT, PROMPT]})
    add("get_reward 1 query, 2 labels", {**GOOD, "labels": ["a", "b"]})
    add("get_reward 2 queries, 1 label", {"query": two, "prompts": [PROMPT, PROMPT], "labels": ["a"]})
    add("get_reward labels empty list", {**GOOD, "labels": []})
    add("get_reward query and prompts empty", {"query": [], "prompts": [], "labels": []})
    add("get_reward query empty, prompts not", {"query": [], "prompts": [PROMPT]})
    add("get_reward prompts empty, query not", {"query": [PROMPT + "5"], "prompts": []})
    # control characters (escaped in JSON, so they reach the validation) and raw ones (invalid JSON strings)
    for char in ("\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f"):
        code = f"U+{ord(char):04X}"
        add(f"get_reward query holds {code}", rollout_body("5" + char + "x"))
        add(f"get_reward prompts holds {code}", rollout_body("5", prompt=PROMPT + char))
        add(f"get_reward labels hold {code}", rollout_body("5", label="5" + char))
    for char in ("\x00", "\x1f"):
        text = json.dumps(GOOD).replace('5"]', f'5{char}"]', 1).encode()
        add(f"get_reward raw (unescaped) U+{ord(char):04X} in a string", text)
    for char, name in (("\t", "tab"), ("\n", "newline"), ("\r", "CR")):
        add(f"get_reward query holds {name} (valid)", rollout_body("5" + char + "x"), "2xx")
    # lone surrogates, written as JSON escapes
    for escape in ("\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800"):
        shown = "".join(f"\\u{ord(c):04x}" for c in escape)
        add(f"get_reward query holds {shown}", rollout_body("x" + escape))
        add(f"get_reward prompts hold {shown}", rollout_body("x", prompt=PROMPT + escape))
        add(f"get_reward labels hold {shown}", rollout_body("x", label="5" + escape))
    add("get_reward surrogate pair \\ud83d\\ude00 (valid)", rollout_body("x\U0001F600"), "2xx")
    add("get_reward lone surrogate in a key", b'{"que\\ud800ry": ["a"], "prompts": ["a"]}')
    # invalid UTF-8
    prefix = b'{"query": ["' + json.dumps(PROMPT)[1:-1].encode() + b'5'
    rest = b'"], "prompts": [' + json.dumps(PROMPT).encode() + b'], "labels": ["5"]}'
    for name, bad in [("0xff", b"\xff"), ("0xfe", b"\xfe"), ("lone continuation 0x80", b"\x80"),
                      ("overlong 0xc0 0xaf", b"\xc0\xaf"), ("UTF-8-encoded surrogate", b"\xed\xa0\x80"),
                      ("truncated 3-byte sequence", b"\xe2\x82"), ("5-byte sequence", b"\xf8\x88\x80\x80\x80"),
                      ("above U+10FFFF", b"\xf4\x90\x80\x80"), ("latin-1 e-acute", b"caf\xe9")]:
        add(f"get_reward invalid UTF-8: {name}", prefix + bad + rest)
    add("get_reward invalid UTF-8 in a key", b'{"qu\xffery": ["a"], "prompts": ["a"]}')
    add("get_reward body with UTF-8 BOM", b"\xef\xbb\xbf" + dumps(GOOD))
    add("get_reward body in UTF-16", json.dumps(GOOD).encode("utf-16"))
    add("get_reward body in UTF-32", json.dumps(GOOD).encode("utf-32"))
    # truncated and otherwise malformed JSON
    text = json.dumps(GOOD).encode()
    for cut in (1, 2, 9, 10, 30, len(text) // 2, len(text) - 3, len(text) - 1):
        add(f"get_reward JSON truncated to {cut} of {len(text)} bytes", text[:cut])
    for name, body in [("empty body", b""), ("whitespace only", b"  \n\t "), ("literal null text", b"null"),
                       ("trailing garbage", text + b"}"), ("trailing comma", text[:-1] + b",}"),
                       ("two objects", text + text), ("single quotes", text.replace(b'"', b"'")),
                       ("comment", b"/* c */" + text), ("unquoted keys", text.replace(b'"query"', b"query")),
                       ("trailing comma in list", text.replace(b'"]', b'",]', 1)), ("bare word", b"query"),
                       ("NUL byte body", b"\x00"), ("gzip bytes", gzip.compress(text))]:
        add(f"get_reward {name}", body)
    add("get_reward duplicate keys (valid: last wins)", text[:-1] + b', "labels": ["5"]}', "2xx")
    # huge numbers
    add("get_reward 5,000-digit integer in query", dumps({**GOOD, "query": ["@BIG@"]}, BIG=BIG_INT))
    add("get_reward 5,000-digit integer as query", dumps({**GOOD, "query": "@BIG@"}, BIG=BIG_INT))
    add("get_reward 5,000-digit integer in labels", dumps({**GOOD, "labels": ["@BIG@"]}, BIG=BIG_INT))
    add("get_reward -5,000-digit integer in prompts", dumps({**GOOD, "prompts": ["@BIG@"]}, BIG="-" + BIG_INT))
    add("get_reward 5,000-digit integer in an unknown key", dumps({**GOOD, "x": "@BIG@"}, BIG=BIG_INT))
    add("get_reward 5,000-digit integer at the top level", BIG_INT.encode())
    add("get_reward 5,000-digit float in query", dumps({**GOOD, "query": ["@F@"]}, F="0." + "1" * 5000))
    add("get_reward 5,000-digit mantissa float", dumps({**GOOD, "query": ["@F@"]}, F=BIG_INT + ".5"))
    add("get_reward exponent 1e999999999", dumps({**GOOD, "query": ["@F@"]}, F="1e999999999"))
    # deep nesting
    for depth in (1000, 5000):
        add(f"get_reward {depth}-deep arrays as query", dumps({**GOOD, "query": "@D@"}, D="[" * depth + "]" * depth))
    add("get_reward 1000-deep objects as query", dumps({**GOOD, "query": "@D@"}, D='{"a":' * 1000 + "1" + "}" * 1000))
    add("get_reward 1000-deep arrays in an unknown key", dumps({**GOOD, "x": "@D@"}, D="[" * 1000 + "]" * 1000))
    add("get_reward 900-deep arrays as query", dumps({**GOOD, "query": "@D@"}, D="[" * 900 + "]" * 900))
    add("get_reward 1000-deep unclosed arrays", b'{"query": ' + b"[" * 1000)
    # oversized bodies
    padded = {**GOOD, "query": [PROMPT + "x" * max_body]}
    add(f"get_reward body over max_body_bytes ({max_body + len(PROMPT) + 60} bytes)", padded)
    add("get_reward body of max_body_bytes + 1 of whitespace", dumps(GOOD) + b" " * (max_body + 1 - len(dumps(GOOD))))
    add("get_reward body 10x max_body_bytes", {**GOOD, "query": [PROMPT + "x" * 10 * max_body]})
    out.append(Payload("get_reward chunked body over max_body_bytes (no Content-Length)",
                       dumps({**GOOD, "query": [PROMPT + "x" * 2 * max_body]}), chunked=True))
    out.append(Payload("get_reward chunked valid body (valid)", dumps(GOOD), chunked=True, expect="2xx"))
    for declared in ("1000000000000", "99999999999999999999999999999"):
        out.append(Payload(f"get_reward Content-Length {declared} with a small body", raw=raw_http(
            "POST /get_reward HTTP/1.1", {**host, "Content-Type": "application/json",
                                          "Content-Length": declared}, dumps(GOOD))))
    for declared in ("abc", "-1", "12, 12", "0x10"):
        out.append(Payload(f"get_reward Content-Length {declared!r}", raw=raw_http(
            "POST /get_reward HTTP/1.1", {**host, "Content-Type": "application/json",
                                          "Content-Length": declared}, dumps(GOOD))))
    out.append(Payload("get_reward Content-Length and Transfer-Encoding both", raw=raw_http(
        "POST /get_reward HTTP/1.1", {**host, "Content-Length": "5", "Transfer-Encoding": "chunked"},
        b"0\r\n\r\n")))
    out.append(Payload("get_reward Content-Length 0 (empty body)", raw=raw_http(
        "POST /get_reward HTTP/1.1", {**host, "Content-Length": "0"}, b"")))
    out.append(Payload("get_reward malformed chunk size", raw=raw_http(
        "POST /get_reward HTTP/1.1", {**host, "Transfer-Encoding": "chunked"}, b"zz\r\nabc\r\n0\r\n\r\n")))
    # too many items
    many = max_items + 1
    add(f"get_reward {many} rollouts (max_items {max_items})",
        {"query": [PROMPT + str(i) for i in range(many)], "prompts": [PROMPT] * many, "labels": [""] * many})
    add(f"get_reward 1 rollout, {many} labels", {**GOOD, "labels": ["5"] * many})
    add(f"get_reward 1 query, {many} prompts", {**GOOD, "prompts": [PROMPT] * many})
    add("get_reward 1000 empty-string queries", {"query": [""] * 1000, "prompts": [""] * 1000})
    # the prompt is not a prefix of the query
    add("get_reward query does not start with prompt", {**GOOD, "query": ["other text"]})
    add("get_reward prompt longer than query", {**GOOD, "query": [PROMPT[:-5]]})
    add("get_reward prompt differs in case", {**GOOD, "prompts": [PROMPT.upper()]})
    add("get_reward prompt differs in whitespace", {**GOOD, "prompts": [PROMPT.replace("\n", " ")]})
    add("get_reward second rollout not a prefix", {"query": [PROMPT + "5", "x"], "prompts": [PROMPT, PROMPT]})
    add("get_reward empty prompt (valid: whole query is the response)", {**GOOD, "prompts": [""]}, "2xx")
    add("get_reward empty response (valid)", {**GOOD, "query": [PROMPT]}, "2xx")
    add("get_reward response is only end tokens (valid)", {**GOOD, "query": [PROMPT + "<|im_end|></s>"]}, "2xx")
    # content types
    for ctype, body, expect in [("text/plain", dumps(GOOD), "2xx"), ("application/x-www-form-urlencoded",
                                b"query=a&prompts=b", "4xx"),
                                ("multipart/form-data; boundary=xyz",
                                 b'--xyz\r\nContent-Disposition: form-data; name="query"\r\n\r\na\r\n--xyz--\r\n', "4xx"),
                                ("application/xml", b"<query>a</query>", "4xx"),
                                ("application/json; charset=latin-1", dumps(GOOD), "2xx"),
                                ("", dumps(GOOD), "2xx")]:
        headers = {"content-type": ctype} if ctype else {}
        label = ctype or "no content-type"
        out.append(Payload(f"get_reward content-type {label}" + (" (valid)" if expect == "2xx" else ""), body,
                           headers=headers, expect=expect))
    out.append(Payload("get_reward gzip body with Content-Encoding: gzip", gzip.compress(dumps(GOOD)),
                       headers={"content-type": "application/json", "content-encoding": "gzip"}))
    # methods and paths
    for path in ("/get_reward", "/v1/score"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"):
            out.append(Payload(f"{method} {path}", None, path=path, method=method))
    for path in ("/health", "/metrics"):
        out.append(Payload(f"POST {path}", dumps(GOOD), path=path))
    out.append(Payload("POST /get_reward/ (trailing slash: a redirect is fine)", dumps(GOOD), path="/get_reward/",
                       expect="3xx|4xx"))
    for path in ("/", "/v1", "/get_rewards", "/v1/score/x", "/docs", "/openapi.json", "/classify",
                 "/%00", "/..%2f..%2fetc%2fpasswd", "/" + "a" * 10000, "/v1/chat/completions"):
        shown = path if len(path) < 40 else f"/{'a' * 5}... ({len(path)} characters)"
        out.append(Payload(f"POST unknown path {shown}", dumps(GOOD), path=path))
    out.append(Payload("GET unknown path /favicon.ico", None, path="/favicon.ico", method="GET"))
    out.append(Payload("POST /get_reward?x=1 (valid)", dumps(GOOD), path="/get_reward?x=1", expect="2xx"))
    # bearer token
    for name, value in [("missing", None), ("wrong", "Bearer wrong"), ("Basic scheme", "Basic czNjcmV0"),
                        ("scheme only", "Bearer"), ("empty", ""), ("token with suffix", f"Bearer {TOKEN}x"),
                        ("token prefix", f"Bearer {TOKEN[:-1]}"), ("8 KB token", "Bearer " + "x" * 8000),
                        ("token, no scheme", TOKEN), ("two schemes", f"Bearer Bearer {TOKEN}")]:
        auth = None if value is None else {"Authorization": value}
        out.append(Payload(f"get_reward bearer token {name}", dumps(GOOD), auth=auth))
        out.append(Payload(f"v1/score bearer token {name}", dumps({"requests": [GOOD_SCORE]}), path="/v1/score",
                           auth=auth))
    out.append(Payload("GET /metrics without token", None, path="/metrics", method="GET", auth=None))
    for value in ("wrong", "", TOKEN + "x"):
        out.append(Payload(f"get_reward ?api_key={value!r} in the URL, no header", dumps(GOOD),
                           path=f"/get_reward?api_key={value}", auth=None))
    out.append(Payload("get_reward lower-case scheme (valid)", dumps(GOOD), auth={"Authorization": f"bearer {TOKEN}"},
                       expect="2xx"))
    out.append(Payload("get_reward non-ASCII bytes in the token", raw=raw_http(
        "POST /get_reward HTTP/1.1", {k: v for k, v in host.items() if k != "Authorization"} |
        {"Content-Type": "application/json", "Content-Length": str(len(dumps(GOOD)))}, dumps(GOOD),
        b"Authorization: Bearer s3cr\xff\xfe\r\n")))
    # malformed HTTP
    out.append(Payload("HTTP garbage request line", raw=b"HELLO WORLD\r\n\r\n"))
    out.append(Payload("HTTP header without colon", raw=raw_http("POST /get_reward HTTP/1.1", host,
                                                                 extra_header_bytes=b"NoColonHere\r\n")))
    out.append(Payload("HTTP 64 KB header", raw=raw_http("POST /get_reward HTTP/1.1", {**host, "X-Big": "x" * 65536})))
    out.append(Payload("HTTP NUL in a header value", raw=raw_http("POST /get_reward HTTP/1.1", host,
                                                                  extra_header_bytes=b"X-Bad: a\x00b\r\n")))
    out.append(Payload("HTTP/9.9 version", raw=raw_http("POST /get_reward HTTP/9.9", host, dumps(GOOD))))

    # -- /v1/score: the top level, the requests list and each ScoreRequest field
    def score(name: str, body: Any, expect: str = "4xx") -> None:
        out.append(Payload(f"v1/score {name}", body if isinstance(body, bytes) else dumps(body), path="/v1/score",
                           expect=expect))

    for name, value in [("null", None), ("int", 1), ("string", "x"), ("true", True), ("empty object", {}),
                        ("empty list", []), ("list of null", [None]), ("list of int", [1]), ("list of string", ["x"]),
                        ("list of list", [[]]), ("requests null", {"requests": None}),
                        ("requests object", {"requests": GOOD_SCORE}), ("requests string", {"requests": "x"}),
                        ("requests empty", {"requests": []}), ("requests [null]", {"requests": [None]}),
                        ("requests [int]", {"requests": [1]}), ("get_reward body instead", GOOD)]:
        score(f"top level {name}", value)
    score("bare list of one request (valid)", [GOOD_SCORE], "2xx")
    score("extra top-level key (valid)", {"requests": [GOOD_SCORE], "x": 1}, "2xx")
    field_values = {
        "prompt": [("null", None), ("int", 1), ("float", 1.5), ("true", True), ("object", {}), ("empty list", []),
                   ("[object without role]", [{}]), ("[role bogus]", [{"role": "bogus", "content": "q"}]),
                   ("system only", [{"role": "system", "content": "q"}]),
                   ("[content int]", [{"role": "user", "content": 1}]), ("[message string]", ["q"]),
                   ("[tool_calls string]", [{"role": "user", "content": "q", "tool_calls": "x"}])],
        "responses": [("null", None), ("string", "a"), ("empty list", []), ("[null]", [None]), ("[int]", [1]),
                      ("[object]", [{}]), ("[empty messages]", [[]]),
                      ("[user message]", [[{"role": "user", "content": "x"}]]),
                      ("[content object]", [[{"role": "assistant", "content": {"a": 1}}]]),
                      ("object", {"a": 1})],
        "reference": [("int", 1), ("list", []), ("object", {}), ("true", True), ("NaN", float("nan"))],
        "principles": [("int", 1), ("list", ["a"])],
        "metadata": [("string", "x"), ("list", []), ("int", 1), ("null", None)],
    }
    for key, values in field_values.items():
        for name, value in values:
            score(f"{key} is {name}", {"requests": [{**GOOD_SCORE, key: value}]})
    score("prompt missing", {"requests": [{"responses": ["a"]}]})
    score("responses missing", {"requests": [{"prompt": "q"}]})
    score("second request bad", {"requests": [GOOD_SCORE, {"prompt": "q", "responses": []}]})
    score("empty prompt string (valid)", {"requests": [{**GOOD_SCORE, "prompt": ""}]}, "2xx")
    score("chat prompt and agent-turn response (valid)",
          {"requests": [{"prompt": [{"role": "user", "content": "2+3?"}],
                         "responses": [[{"role": "assistant", "content": "5"}], "6"]}]}, "2xx")
    for escape in ("\ud800", "\udfff"):
        shown = f"\\u{ord(escape):04x}"
        score(f"prompt holds {shown}", {"requests": [{**GOOD_SCORE, "prompt": "q" + escape}]})
        score(f"response holds {shown}", {"requests": [{**GOOD_SCORE, "responses": ["a", "b" + escape]}]})
        score(f"reference holds {shown}", {"requests": [{**GOOD_SCORE, "reference": "5" + escape}]})
        score(f"message content holds {shown}",
              {"requests": [{**GOOD_SCORE, "prompt": [{"role": "user", "content": "q" + escape}]}]})
    score("metadata value holds \\ud800", {"requests": [{**GOOD_SCORE, "metadata": {"id": "x\ud800"}}]})
    score("metadata key holds \\ud800", {"requests": [{**GOOD_SCORE, "metadata": {"i\ud800d": 1}}]}, "2xx|4xx")
    score("metadata value is NaN", {"requests": [{**GOOD_SCORE, "metadata": {"x": float("nan")}}]}, "2xx|4xx")
    score("metadata value is Infinity", {"requests": [{**GOOD_SCORE, "metadata": {"x": float("inf")}}]}, "2xx|4xx")
    score("metadata 300-deep nesting", dumps({"requests": [{**GOOD_SCORE, "metadata": {"x": "@D@"}}]},
                                             D="[" * 300 + "]" * 300))
    score("message extra key holds \\ud800",
          {"requests": [{**GOOD_SCORE, "prompt": [{"role": "user", "content": "q", "x\ud800": 1}]}]})
    score("control character U+0000 in prompt (valid: /v1/score allows it)",
          {"requests": [{**GOOD_SCORE, "prompt": "q\x00"}]}, "2xx")
    score("5,000-digit integer as reference", dumps({"requests": [{**GOOD_SCORE, "reference": "@BIG@"}]}, BIG=BIG_INT))
    score("1000-deep arrays as prompt", dumps({"requests": [{**GOOD_SCORE, "prompt": "@D@"}]},
                                             D="[" * 1000 + "]" * 1000))
    score("invalid UTF-8 in prompt", b'{"requests": [{"prompt": "q\xff", "responses": ["a"]}]}')
    score("JSON truncated", dumps({"requests": [GOOD_SCORE]})[:-5])
    score(f"{max_items + 1} requests (max_items {max_items})", {"requests": [GOOD_SCORE] * (max_items + 1)})
    score(f"{max_responses + 1} responses (max_responses {max_responses})",
          {"requests": [{"prompt": "q", "responses": ["a"] * (max_responses + 1)}]})
    score("1000 responses", {"requests": [{"prompt": "q", "responses": ["a"] * 1000}]})
    score(f"second request with {max_responses + 1} responses",
          {"requests": [GOOD_SCORE, {"prompt": "q", "responses": ["a"] * (max_responses + 1)}]})
    score("body over max_body_bytes", {"requests": [{**GOOD_SCORE, "prompt": "q" * (max_body + 1)}]})
    names = [p.name for p in out]
    duplicates = [n for n, c in Counter(names).items() if c > 1]
    assert not duplicates, duplicates
    return out


def send_raw(port: int, request: bytes, timeout: float = 10.0) -> tuple[int | None, str]:
    """A whole HTTP request on a fresh socket: (the answer's status, its first bytes), (None, why) without one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            data = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    if length and len(body) >= int(length.group(1)):
                        break
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not found:
        return None, f"no HTTP answer ({data[:80]!r})"
    return int(found.group(1)), data.partition(b"\r\n\r\n")[2][:200].decode("utf-8", "replace")


def run_payloads(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    max_items, max_body, max_responses = 10, 16384, 64
    with SimulatedJudge(noise=0.0, seed=0) as judge:
        serve = GRMServe(["--base-url", judge.base_url, "--model", "sim", "--k", "1", "--api-key", TOKEN,
                          "--max-items", str(max_items), "--max-body-bytes", str(max_body)], GROUPING["payloads"],
                         work / "payloads.log")
        with serve:
            payloads = bad_payloads(max_items, max_body, max_responses, serve.port)
            rows = []
            with httpx.Client(base_url=serve.url, timeout=15) as client:
                for p in payloads:
                    started = time.perf_counter()
                    if p.raw is not None:
                        status, text = send_raw(serve.port, p.raw)
                    else:
                        headers = {**p.headers, **(p.auth or {})}
                        content: Any = p.body
                        if p.chunked:
                            body = p.body or b""
                            content = iter([body[i:i + 4096] for i in range(0, len(body), 4096)])
                        try:
                            reply = client.request(p.method, p.path, content=content, headers=headers)
                            status, text = reply.status_code, reply.text[:200]
                        except httpx.HTTPError as exc:
                            status, text = None, f"{type(exc).__name__}: {exc}"
                    seconds = time.perf_counter() - started
                    try:
                        health = httpx.get(f"{serve.url}/health", timeout=10).status_code
                    except httpx.HTTPError as exc:
                        health = f"{type(exc).__name__}"
                    rows.append({"name": p.name, "expect": p.expect, "status": status, "answer": text,
                                 "seconds": round(seconds, 4), "health": health})
            tracebacks = serve.tracebacks()
    classes = Counter(("none" if r["status"] is None else f"{r['status'] // 100}xx") for r in rows)
    bad = [r for r in rows if r["expect"] == "4xx"]  # the others are valid edge cases
    summary = {
        "tried": len(rows), "bad_payloads": len(bad), "valid_edge_cases": len(rows) - len(bad),
        "2xx": classes["2xx"], "3xx": classes["3xx"], "4xx": classes["4xx"], "5xx": classes["5xx"],
        "no_answer": classes["none"], "health_failures": sum(1 for r in rows if r["health"] != 200),
        "statuses": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "got_5xx": [{"name": r["name"], "status": r["status"], "answer": r["answer"]} for r in rows
                    if r["status"] is not None and r["status"] >= 500],
        "no_answer_list": [{"name": r["name"], "why": r["answer"]} for r in rows if r["status"] is None],
        "unexpected_class": [{"name": r["name"], "expect": r["expect"], "status": r["status"]} for r in rows
                             if r["status"] is not None and f"{r['status'] // 100}xx" not in r["expect"].split("|")
                             and r["status"] < 500],
        "slowest_s": max(r["seconds"] for r in rows),
        "server_tracebacks": tracebacks,
        "settings": {"max_items": max_items, "max_body_bytes": max_body, "max_responses": max_responses,
                     "api_key": True},
        "rows": rows,
    }
    print(f"\n1. bad payloads: {len(rows)} tried ({len(bad)} bad, {len(rows) - len(bad)} valid edge cases)")
    print_table(["tried", "2xx", "3xx", "4xx", "5xx", "no answer", "health failures", "statuses"],
                [[len(rows), classes["2xx"], classes["3xx"], classes["4xx"], classes["5xx"], classes["none"],
                  summary["health_failures"], summary["statuses"]]])
    for r in summary["got_5xx"]:
        print(f"   5xx: {r['name']}: {r['status']} {r['answer'][:120]}")
    for r in summary["no_answer_list"]:
        print(f"   no answer: {r['name']}: {r['why'][:120]}")
    for r in summary["unexpected_class"]:
        print(f"   note: {r['name']}: expected {r['expect']}, got {r['status']}")
    return summary


# --- 2. engine faults -----------------------------------------------------------------------------------------------


def _mutate(path: Sequence[Any], value: Any) -> Callable[[dict], Any]:
    """A change of a healthy chat completion: ``data[path...] = value``."""
    def change(data: dict) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data
    return change


# fault mode -> what the engine answers; "json:" modes send the healthy answer changed by the function.
SHAPES: dict[str, Callable[[dict], Any]] = {
    "json-null": lambda d: None,
    "json-list": lambda d: [d],
    "json-string": lambda d: "ok",
    "json-number": lambda d: 42,
    "choices-missing": lambda d: {k: v for k, v in d.items() if k != "choices"},
    "choices-null": _mutate(["choices"], None),
    "choices-string": _mutate(["choices"], "oops"),
    "choices-empty": _mutate(["choices"], []),
    "choices-too-many": lambda d: {**d, "choices": d["choices"] + [{**d["choices"][0], "index": 1}]},
    "choice-is-string": _mutate(["choices", 0], "text"),
    "message-string": _mutate(["choices", 0, "message"], "text"),
    "message-null": _mutate(["choices", 0, "message"], None),
    "content-int": _mutate(["choices", 0, "message", "content"], 7),
    "content-null": _mutate(["choices", 0, "message", "content"], None),
    "content-list": _mutate(["choices", 0, "message", "content"], [{"type": "text", "text": "x"}]),
    "content-garbage": _mutate(["choices", 0, "message", "content"], "lorem ipsum, no scores here"),
    "content-200KB": _mutate(["choices", 0, "message", "content"], "Analysis: " + "blah " * 40000),
    "finish-reason-int": _mutate(["choices", 0, "finish_reason"], 1),
    "index-bool": _mutate(["choices", 0, "index"], True),
    "usage-string": _mutate(["usage"], "lots"),
    "usage-non-numeric": _mutate(["usage", "prompt_tokens"], "many"),
    "usage-negative": _mutate(["usage", "completion_tokens"], -5),
    "usage-NaN": _mutate(["usage", "completion_tokens"], float("nan")),
    "usage-Infinity": _mutate(["usage", "prompt_tokens"], float("inf")),
}
FAULT_MODES = (["healthy", "http-500", "http-502", "http-503", "http-504", "http-500-html", "http-429-retry-after-1",
                "http-429-retry-after-3600", "http-429-retry-after-garbage", "reset", "close-before-response",
                "close-mid-body", "hang", "trickle", "slow-within-deadline", "non-json-200", "html-200",
                "truncated-json-200", "empty-200", "invalid-utf8-200"] + list(SHAPES) + ["healthy"])


class FaultEngine:
    """An OpenAI-compatible engine that fails on purpose: ``POST /v1/chat/completions`` answers per ``self.mode``;
    in mode ``healthy`` (and for the answer the other modes change or trickle) the simulated judge answers (noise 0,
    so a response's score is its hidden quality). Everything else goes to the simulated judge."""

    def __init__(self, timeout_s: float) -> None:
        self.mode = "healthy"
        self.timeout_s = timeout_s  # how long "hang" and "trickle" outlast GRMReward's deadline
        self.judge = build_app(JudgeSettings(noise=0.0, seed=0))
        self.calls: Counter = Counter()
        self.thread_server: ThreadServer | None = None
        # the instance itself is the ASGI endpoint (a bound method would be wrapped as a request handler)
        self.app = Starlette(routes=[Route("/v1/chat/completions", self, methods=["POST"]), Mount("/", self.judge)])

    async def healthy(self, scope: dict, body: bytes) -> tuple[int, list, bytes]:
        """The simulated judge's answer to this request: (status, headers, body)."""
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        clean = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "root_path": "", "query_string": b"", "headers": scope["headers"], "client": scope.get("client"),
                 "server": scope.get("server")}
        await self.judge(clean, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], start.get("headers", []), b"".join(m.get("body", b"") for m in sent
                                                                  if m["type"] == "http.response.body")

    def transport_of(self, scope: dict) -> Any:
        """The asyncio transport of this request's connection (uvicorn keeps its protocols in server_state)."""
        for protocol in list(self.thread_server.server.server_state.connections):
            if getattr(protocol, "client", None) == tuple(scope["client"]):
                return protocol.transport
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        mode = self.mode
        self.calls[mode] += 1

        async def answer(status: int, payload: bytes, ctype: bytes = b"application/json",
                         headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", ctype), (b"content-length", str(len(payload)).encode()),
                                    *headers]})
            await send({"type": "http.response.body", "body": payload})

        error = json.dumps({"error": {"message": f"fault engine: {mode}"}}).encode()
        if mode == "healthy":
            status, headers, payload = await self.healthy(scope, body)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        elif mode.startswith("http-"):
            status = int(mode.split("-")[1])
            if mode == "http-500-html":
                await answer(500, b"<html><body>Internal Server Error</body></html>", b"text/html")
            elif mode.startswith("http-429-retry-after-"):
                await answer(429, error, headers=[(b"retry-after", mode.rsplit("-", 1)[1].encode())])
            else:
                await answer(status, error)
        elif mode in ("reset", "close-before-response"):
            transport = self.transport_of(scope)
            if mode == "reset":  # SO_LINGER 0: close with a TCP RST
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                              struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.close()
            await asyncio.sleep(0.05)  # the connection is gone: uvicorn sends nothing more on it
        elif mode == "close-mid-body":
            _, _, payload = await self.healthy(scope, body)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload[:len(payload) // 3], "more_body": True})
            # returning with the body unfinished: uvicorn closes the connection
        elif mode == "hang":
            deadline = time.monotonic() + 10 * self.timeout_s
            while self.mode == "hang" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await answer(504, error)
        elif mode == "trickle":  # one byte every 0.1 s: never idle long enough for a read timeout
            _, _, payload = await self.healthy(scope, body)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            for i in range(len(payload)):
                if self.mode != "trickle":
                    return
                await send({"type": "http.response.body", "body": payload[i:i + 1], "more_body": True})
                await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b""})
        elif mode == "slow-within-deadline":
            await asyncio.sleep(self.timeout_s / 2)
            status, headers, payload = await self.healthy(scope, body)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        elif mode == "non-json-200":
            await answer(200, b"this is not JSON", b"application/json")
        elif mode == "html-200":
            await answer(200, b"<html><body>Bad Gateway</body></html>", b"text/html")
        elif mode == "truncated-json-200":
            _, _, payload = await self.healthy(scope, body)
            await answer(200, payload[:len(payload) // 2])
        elif mode == "empty-200":
            await answer(200, b"")
        elif mode == "invalid-utf8-200":
            await answer(200, b'{"choices": "\xff\xfe"}')
        else:
            _, _, payload = await self.healthy(scope, body)
            await answer(200, json.dumps(SHAPES[mode](json.loads(payload))).encode())


async def send_rollouts(url: str, bodies: Sequence[dict], timeout: float) -> list[tuple[Any, float, str]]:
    """The bodies at once to /get_reward: (status or the exception's name, seconds, the answer's first bytes)."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        async def one(body: dict) -> tuple[Any, float, str]:
            started = time.perf_counter()
            try:
                reply = await client.post(url, json=body)
                return reply.status_code, time.perf_counter() - started, reply.text
            except httpx.HTTPError as exc:
                return type(exc).__name__, time.perf_counter() - started, str(exc)[:300]
        return list(await asyncio.gather(*(one(b) for b in bodies)))


def run_engine_faults(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    engine_timeout, request_timeout = 1.0, 3.0
    env = {"GRM_TIMEOUT": str(engine_timeout), "GRM_MAX_RETRIES": "2", "GRM_RETRY_BACKOFF": "0.05",
           "GRM_CACHE_SIZE": "0", **GROUPING["engine"]}
    fault = FaultEngine(engine_timeout)
    rows = []
    counter = iter(range(10**6))

    def bodies(n: int) -> list[tuple[dict, float]]:
        out = []
        for _ in range(n):
            i = next(counter)
            quality = 1 + i % 10
            prompt = f"<|im_start|>user\nQuestion {i}: what is {i} + 1?<|im_end|>\n<|im_start|>assistant\n"
            out.append(({"query": [prompt + with_quality(f"It is {i + 1}.", quality)], "prompts": [prompt],
                         "labels": [""]}, float(quality)))
        return out

    with ThreadServer(fault.app) as engine:
        fault.thread_server = engine
        serve = GRMServe(["--base-url", engine.base_url, "--model", "sim", "--k", "1",
                          "--request-timeout", str(request_timeout)], env, work / "engine.log")
        with serve:
            url = f"{serve.url}/get_reward"
            for mode in FAULT_MODES:
                fault.mode = mode
                before = serve.requests_total()
                sent = bodies(args.fault_requests)
                replies = asyncio.run(send_rollouts(url, [b for b, _ in sent], timeout=60))
                fault.mode = "healthy"
                probe_body = bodies(1)
                probe = asyncio.run(send_rollouts(url, [b for b, _ in probe_body], timeout=60))[0]
                after = serve.requests_total()
                counted = {s: int(after[("/get_reward", s)] - before[("/get_reward", s)])
                           for _, s in after if after[("/get_reward", s)] != before[("/get_reward", s)]}
                statuses = Counter(str(r[0]) for r in replies)
                slowest = max(r[1] for r in replies)
                # noise 0: a judged rollout's reward is its hidden quality; an unreadable judgement gets the bottom
                off_quality = sum(1 for (status, _, text), (_, quality) in zip(replies, sent) if status == 200
                                  and json.loads(text)["rewards"] != [quality])
                answered_once = sum(counted.values()) == len(replies) + 1
                survived = (all(r[0] in (200, 503) for r in replies) and slowest <= request_timeout + 1.0
                            and probe[0] == 200 and answered_once)
                rows.append({"mode": mode, "requests": len(replies), "statuses": dict(statuses),
                             "slowest_s": round(slowest, 3), "server_counted": counted,
                             "healthy_again": probe[0], "engine_calls": fault.calls[mode],
                             "rewards_not_equal_to_quality": off_quality, "survived": survived,
                             "first_answer": replies[0][2][:300]})
                fault.calls.clear()
            tracebacks = serve.tracebacks()
    print(f"\n2. engine faults: {len(rows)} modes, {args.fault_requests} requests each + 1 after the engine is healthy; "
          f"GRMReward timeout {engine_timeout:g} s, 2 retries, server request timeout {request_timeout:g} s")
    print_table(["fault mode", "requests", "statuses", "slowest s", "engine calls", "200s off quality",
                 "healthy again", "survived"],
                [[r["mode"], r["requests"], r["statuses"], f"{r['slowest_s']:.2f}", r["engine_calls"],
                  r["rewards_not_equal_to_quality"], r["healthy_again"], "yes" if r["survived"] else "NO"]
                 for r in rows])
    failed = [r for r in rows if not r["survived"]]
    for r in failed:
        print(f"   not survived: {r['mode']}: {r['statuses']} counted {r['server_counted']}: {r['first_answer'][:200]}")
    return {"modes": len(rows), "survived": len(rows) - len(failed), "not_survived": [r["mode"] for r in failed],
            "settings": {"engine_timeout_s": engine_timeout, "max_retries": 2, "retry_backoff_s": 0.05,
                         "request_timeout_s": request_timeout, "requests_per_mode": args.fault_requests},
            "server_tracebacks": tracebacks, "rows": rows}


# --- 3. outage --------------------------------------------------------------------------------------------------------


OUTAGE_VARIANTS = {
    "default": {},  # `grm serve`'s own retry policy: 4 retries, backoff 0.5 s doubling (jittered), so ~3.75-7.5 s
    "no-server-retries": {"GRM_MAX_RETRIES": "0"},  # only OpenRLHF's client retries (5 tries, 1 s apart)
}


def outage_run(args: argparse.Namespace, work: Path, variant: str) -> dict[str, Any]:
    """One outage run with the judge configuration ``OUTAGE_VARIANTS[variant]``."""
    per_prompt = args.responses_per_prompt
    n_prompts = args.outage_rollouts // per_prompt
    span, down_at, down_for = args.outage_span, args.outage_span * 0.3, 5.5
    port = free_port()
    judges = [SimulatedJudge(port=port, noise=0.0, seed=0).start()]
    serve = GRMServe(["--base-url", f"http://127.0.0.1:{port}/v1", "--model", "sim", "--k", "1"],
                     {**OUTAGE_VARIANTS[variant], **GROUPING["outage"], "GRM_SERVE_GROUP_SIZE": str(per_prompt)},
                     work / f"outage-{variant}.log")
    rollouts = []
    for p in range(n_prompts):
        prompt = f"<|im_start|>user\nOutage question {p}: name a prime above {p}.<|im_end|>\n<|im_start|>assistant\n"
        for r in range(per_prompt):
            quality = 1 + (p + 3 * r) % 10
            rollouts.append((p, prompt + with_quality(f"Answer {r} to {p}.", quality) + "<|im_end|>", prompt,
                             float(quality)))
    events: dict[str, float] = {}
    try:
        with serve:
            executor = openrlhf_executor(f"{serve.url}/get_reward")

            async def drive() -> list[tuple[Any, float, float]]:
                loop = asyncio.get_running_loop()
                t0 = loop.time()

                async def rollout(index: int, query: str, prompt: str) -> tuple[Any, float, float]:
                    # a prompt's responses finish generating together; prompts arrive evenly over the span
                    await asyncio.sleep(max(0.0, t0 + (index // per_prompt) * span / n_prompts - loop.time()))
                    started = loop.time()
                    outcome = await openrlhf_reward(executor, query, prompt, "")
                    return outcome, started - t0, loop.time() - started

                async def outage() -> None:
                    await asyncio.sleep(down_at)
                    events["stopped_at_s"] = loop.time() - t0
                    await asyncio.to_thread(judges[0].stop)
                    events["stop_done_s"] = loop.time() - t0
                    await asyncio.sleep(max(0.0, events["stopped_at_s"] + down_for - (loop.time() - t0)))
                    judges.append(await asyncio.to_thread(SimulatedJudge(port=port, noise=0.0, seed=0).start))
                    events["restarted_at_s"] = loop.time() - t0

                results = await asyncio.gather(outage(), *(rollout(i, q, p) for i, (_, q, p, _) in
                                                           enumerate(rollouts)))
                events["finished_s"] = loop.time() - t0
                return results[1:]

            outcomes = asyncio.run(drive())
            counted = serve.requests_total()
            tracebacks = serve.tracebacks()
    finally:
        judges[-1].stop()
    rewarded = lost = duplicated = wrong = during = 0
    lost_list = []
    for (p, _, _, quality), (outcome, sent_at, seconds) in zip(rollouts, outcomes):
        during += events["stopped_at_s"] <= sent_at < events["restarted_at_s"]
        rewards = rewards_of(outcome)
        if rewards is None:
            lost += 1
            lost_list.append({"prompt": p, "sent_at_s": round(sent_at, 2), "error": repr(outcome)[:200],
                              "seconds": round(seconds, 2)})
            continue
        rewarded += 1
        duplicated += len(rewards) > 1
        wrong += rewards[0] != quality
    status_200 = int(counted[("/get_reward", 200)])
    return {"variant": variant, "judge_env": OUTAGE_VARIANTS[variant], "rollouts": len(rollouts),
            "prompts": n_prompts, "responses_per_prompt": per_prompt, "sent_while_down": during,
            "rewarded": rewarded, "lost": lost,
            # a rollout answered twice shows as more than one reward, or as more 200s than rewarded rollouts
            "duplicated": duplicated + max(0, status_200 - rewarded), "wrong_reward": wrong,
            "server_200": status_200, "server_503": int(counted[("/get_reward", 503)]),
            "server_other": {str(s): int(v) for (e, s), v in counted.items() if e == "/get_reward"
                             and s not in (200, 503)},
            "engine_down_s": round(events["restarted_at_s"] - events["stopped_at_s"], 2),
            "events_s": {k: round(v, 2) for k, v in events.items()},
            "slowest_rollout_s": round(max(s for _, _, s in outcomes), 2), "lost_list": lost_list,
            "server_tracebacks": tracebacks}


def run_outage(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rows = [outage_run(args, work, variant) for variant in args.outage_variants.split(",")]
    first = rows[0]
    print(f"\n3. outage: {first['rollouts']} rollouts ({first['prompts']} prompts x {first['responses_per_prompt']}) "
          f"over {args.outage_span:g} s through OpenRLHF's client; the judge stopped at "
          f"{first['events_s']['stopped_at_s']:.1f} s for 5.5 s, restarted on the same port")
    print_table(["server retries", "rollouts", "sent while down", "rewarded", "lost", "duplicated", "wrong reward",
                 "server 200 / 503", "engine down s", "slowest s"],
                [[r["variant"], r["rollouts"], r["sent_while_down"], r["rewarded"], r["lost"], r["duplicated"],
                  r["wrong_reward"], f"{r['server_200']} / {r['server_503']}", r["engine_down_s"],
                  r["slowest_rollout_s"]] for r in rows])
    summary = {key: first[key] for key in ("rollouts", "rewarded", "lost", "duplicated", "wrong_reward")}
    return {**summary, "target_row": first["variant"], "rows": rows,
            "server_tracebacks": [t for r in rows for t in r["server_tracebacks"]],
            "settings": {"span_s": args.outage_span, "stopped_for_s": 5.5, "k": 1, "cache": "default (4096)",
                         "request_timeout_s": 170, "variants": OUTAGE_VARIANTS}}


# --- 4. blast radius --------------------------------------------------------------------------------------------------


class RefusalRecorder:
    """ASGI middleware in front of the simulated judge: for each judge prompt holding ``MARKER`` (the ones it refuses),
    how many innocent responses ('Reply N.') were shown with the culprit in it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused: list[int] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        text = json.loads(body)["messages"][-1]["content"] if body else ""
        if MARKER in text:
            self.refused.append(len(re.findall(r"Reply \d+\.", text)))
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed() -> dict:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)


def run_blast(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    innocents, window_ms = 20, 200
    rows = []
    recorder = RefusalRecorder(build_app(JudgeSettings(noise=0.0, seed=0, refuse_containing=MARKER)))
    with ThreadServer(recorder) as judge:
        serve = GRMServe(["--base-url", judge.base_url, "--model", "sim", "--k", "2", "--batch-window-ms",
                          str(window_ms)], {"GRM_CACHE_SIZE": "0", **GROUPING["blast"]}, work / "blast.log")
        with serve:
            executor = openrlhf_executor(f"{serve.url}/get_reward")

            async def round_(r: int) -> dict[str, Any]:
                await asyncio.sleep(r * args.round_gap)
                prompts = [f"<|im_start|>user\nRound {r}, question {g}: what is {g} + {r}?<|im_end|>\n"
                           "<|im_start|>assistant\n" for g in range(3)]
                sent = []  # GROUP - 1 innocents with the culprit's prompt (prompts[0]), GROUP on each other prompt
                for i in range(innocents):
                    prompt = prompts[(i + 1) // GROUP]
                    quality = 1 + (i + r) % 10
                    sent.append((prompt + with_quality(f"Reply {i}.", quality), prompt, float(quality)))
                culprit = (prompts[0] + MARKER + " " + with_quality("Reply X.", 9), prompts[0])
                started = time.perf_counter()
                outcomes = await asyncio.gather(*(openrlhf_reward(executor, q, p, "") for q, p, _ in sent),
                                                openrlhf_reward(executor, *culprit, ""))
                failed = sum(1 for (_, _, quality), o in zip(sent, outcomes) if rewards_of(o) != [quality])
                last = outcomes[-1]
                return {"round": r, "innocents": innocents, "innocents_failed": failed,
                        "culprit": (f"rewarded {rewards_of(last)}" if rewards_of(last) is not None
                                    else f"{type(last).__name__}: {str(last)[:120]}"),
                        "seconds": round(time.perf_counter() - started, 2)}

            async def all_rounds() -> list[dict[str, Any]]:
                return list(await asyncio.gather(*(round_(r) for r in range(args.rounds))))

            rows = asyncio.run(all_rounds())
            counted = serve.requests_total()
            mean_batch = serve.mean_batch()
            tracebacks = serve.tracebacks()
    summary = {"rounds": len(rows), "innocents": sum(r["innocents"] for r in rows),
               "innocents_failed": sum(r["innocents_failed"] for r in rows),
               "culprits_rewarded": sum(1 for r in rows if r["culprit"].startswith("rewarded")),
               "server_statuses": {str(s): int(v) for (e, s), v in counted.items() if e == "/get_reward"},
               "mean_micro_batch_rollouts": round(mean_batch, 2),
               "refused_judge_prompts": len(recorder.refused),
               "refused_judge_prompts_with_innocents": sum(1 for n in recorder.refused if n),
               "innocent_responses_in_refused_prompts": sum(recorder.refused),
               "settings": {"innocents_per_round": innocents, "batch_window_ms": window_ms, "k": 2,
                            "rollouts_per_prompt": GROUP, "innocents_sharing_the_culprits_prompt": GROUP - 1,
                            "round_gap_s": args.round_gap, "refuse_containing": MARKER},
               "server_tracebacks": tracebacks, "rows": rows}
    print(f"\n4. blast radius: {len(rows)} rounds of {innocents} innocent rollouts + 1 culprit (engine answers 400 to "
          f"its judge prompt), window {window_ms} ms, a round every {args.round_gap:g} s, OpenRLHF's client")
    print_table(["round", "innocents", "innocents failed", "culprit got", "seconds"],
                [[r["round"], r["innocents"], r["innocents_failed"], r["culprit"][:90], r["seconds"]] for r in rows])
    print(f"   server /get_reward statuses: {summary['server_statuses']}; mean micro-batch {mean_batch:.1f} rollouts; "
          f"the engine refused {len(recorder.refused)} judge prompts, {summary['refused_judge_prompts_with_innocents']} "
          f"of them group prompts showing {sum(recorder.refused)} innocent responses with the culprit")
    return summary


# --- main -------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="payloads,engine,outage,blast")
    parser.add_argument("--quick", action="store_true", help="fewer rollouts, requests and rounds")
    parser.add_argument("--fault-requests", type=int, default=None, help="requests per engine fault mode (4)")
    parser.add_argument("--outage-rollouts", type=int, default=None, help="rollouts in the outage run (400)")
    parser.add_argument("--responses-per-prompt", type=int, default=4)
    parser.add_argument("--outage-span", type=float, default=None, help="seconds the rollouts are spread over (16)")
    parser.add_argument("--outage-variants", default=None,
                        help=f"outage runs, from {', '.join(OUTAGE_VARIANTS)}; the first is the one with the target "
                             "(default: both; --quick: default only)")
    parser.add_argument("--rounds", type=int, default=None, help="blast-radius rounds (10)")
    parser.add_argument("--round-gap", type=float, default=1.5, help="seconds between blast-radius rounds")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "faults.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    args.fault_requests = args.fault_requests or (2 if quick else 4)
    args.outage_rollouts = args.outage_rollouts or (200 if quick else 400)
    args.outage_span = args.outage_span or (12.0 if quick else 16.0)
    args.rounds = args.rounds or (4 if quick else 10)
    args.outage_variants = args.outage_variants or ("default" if quick else ",".join(OUTAGE_VARIANTS))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parts = args.parts.split(",")
    runners = {"payloads": run_payloads, "engine": run_engine_faults, "outage": run_outage, "blast": run_blast}
    report: dict[str, Any] = {"settings": vars(args), "python": sys.version.split()[0],
                              "platform": platform.platform(), "cpu_count": multiprocessing.cpu_count(),
                              "grouping_env": GROUPING}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        for part in parts:
            part_started = time.perf_counter()
            report[part] = runners[part](args, Path(tmp))
            report[part]["seconds"] = round(time.perf_counter() - part_started, 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    targets = {}
    if "payloads" in report:
        targets["payloads: 0 5xx, 0 dropped, 0 health failures"] = (
            report["payloads"]["5xx"] == 0 and report["payloads"]["no_answer"] == 0
            and report["payloads"]["health_failures"] == 0)
    if "engine" in report:
        targets["engine: every fault mode survived"] = not report["engine"]["not_survived"]
    if "outage" in report:
        targets[f"outage ({report['outage']['target_row']}): 0 lost, 0 duplicated"] = (
            report["outage"]["lost"] == 0 and report["outage"]["duplicated"] == 0)
    if "blast" in report:
        targets["blast radius: 0 innocents failed"] = report["blast"]["innocents_failed"] == 0
    report["targets"] = targets
    print("\ntargets:")
    for name, met in targets.items():
        print(f"   {'met   ' if met else 'MISSED'} {name}")
    for part in parts:
        for trace in report[part].get("server_tracebacks", [])[:3]:
            print(f"\n   server traceback ({part}):\n" + "\n".join("      " + line for line in trace.splitlines()[-25:]))
    print(f"total {report['seconds']:.0f} s")
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
