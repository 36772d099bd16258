"""Several judge replicas behind one engine: routing by least outstanding requests with affinity, ejection of a
replica that fails and re-admission after a health probe.

- Affinity: the calls that share an affinity key (the samples and retries of one judge prompt, the judge prompts of
  one prompt's group) go to the replica that served the key first, while it is healthy: its prefix cache holds
  them. A new key goes to the healthy replica with the fewest requests outstanding.
- A replica whose call fails after the transport's retries (connection error, timeout, 5xx, 429) is ejected for a
  backoff (``eject_s``, doubling with each ejection in a row, at most ``max_eject_s``) and the call is sent to another
  replica; the failed call produced no answer, so each call is answered once. When the backoff is over, one health
  probe (``GET /models``) decides whether it is admitted again. With every replica ejected the one due back first is
  tried (a lone replica keeps being used, as without a pool).
- A refusal of the call's own content (400, 413, 422) is not the replica's fault: it is reported, no failover.

Beyond a handful of replicas, or across hosts and teams, put the judge behind a router (SGLang's router, vLLM's
production stack router, or any OpenAI-compatible gateway) and give its single URL as ``base_url``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from ..errors import BackendError, caused_by_request


@dataclass
class Replica:
    """One judge server and its counters."""

    url: str
    index: int
    inflight: int = 0
    requests: int = 0
    errors: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    strikes: int = 0  # ejections in a row (reset by a success)
    probing: bool = field(default=False, repr=False)

    def stats(self) -> dict[str, Any]:
        return {"replica": self.url, "requests": self.requests, "errors": self.errors, "ejections": self.ejections,
                "inflight": self.inflight, "ejected": self.ejected_until > time.monotonic()}


class ReplicaPool:
    """The replicas of one engine (see the module docstring). ``probe(url) -> bool`` checks a replica's health."""

    def __init__(self, urls: list[str], probe: Callable[[str], Awaitable[bool]], eject_s: float = 2.0,
                 max_eject_s: float = 30.0, affinity_size: int = 4096) -> None:
        if not urls:
            raise ValueError("base_url: expected at least one judge URL")
        self.replicas = [Replica(url, i) for i, url in enumerate(urls)]
        self.probe = probe
        self.eject_s = eject_s
        self.max_eject_s = max_eject_s
        self.affinity: OrderedDict[str, int] = OrderedDict()
        self.affinity_size = affinity_size

    def __len__(self) -> int:
        return len(self.replicas)

    async def _admitted(self, replica: Replica, now: float) -> bool:
        """Whether the replica takes calls now: not ejected, or back from its backoff and its probe answered."""
        if replica.ejected_until <= 0:
            return True
        if now < replica.ejected_until or replica.probing:
            return False
        replica.probing = True
        try:
            healthy = await self.probe(replica.url)
        finally:
            replica.probing = False
        if healthy:
            replica.ejected_until = 0.0
            return True
        self.eject(replica)  # still down: a longer backoff
        return False

    async def choose(self, key: Optional[str], exclude: set[int]) -> Replica:
        """The replica for a call with affinity ``key`` (None: no affinity), never one of ``exclude``."""
        now = time.monotonic()
        if len(self.replicas) == 1:
            return self.replicas[0]
        if key is not None and key in self.affinity:
            replica = self.replicas[self.affinity[key]]
            if replica.index not in exclude and await self._admitted(replica, now):
                self.affinity.move_to_end(key)
                return replica
        candidates = [r for r in self.replicas if r.index not in exclude]
        healthy = [r for r in candidates if await self._admitted(r, now)]
        if healthy:
            replica = min(healthy, key=lambda r: (r.inflight, r.requests))
        elif candidates:  # every one is ejected: the one due back first
            replica = min(candidates, key=lambda r: r.ejected_until)
        else:
            raise BackendError("every judge replica failed this call")
        if key is not None:
            self.affinity[key] = replica.index
            self.affinity.move_to_end(key)
            while len(self.affinity) > self.affinity_size:
                self.affinity.popitem(last=False)
        return replica

    def eject(self, replica: Replica) -> None:
        """Take the replica out for its backoff; calls that fail on it while it is out add nothing (they were sent
        before it went out), so a burst of failures is one ejection, not a backoff of its own each."""
        if replica.ejected_until > time.monotonic():
            return
        replica.strikes += 1
        replica.ejections += 1
        replica.ejected_until = time.monotonic() + min(self.max_eject_s, self.eject_s * 2 ** (replica.strikes - 1))

    async def call(self, key: Optional[str], send: Callable[[Replica], Awaitable[Any]]) -> Any:
        """``send(replica)`` on the chosen replica; on a failure of the replica (not of the call's own content) the
        replica is ejected and the call goes to the next one, until every replica was tried."""
        tried: set[int] = set()
        while True:
            replica = await self.choose(key, tried)
            replica.inflight += 1
            replica.requests += 1
            try:
                result = await send(replica)
            except BackendError as exc:
                replica.errors += 1
                if caused_by_request(exc) or len(self.replicas) == 1:
                    raise
                self.eject(replica)
                tried.add(replica.index)
                if len(tried) == len(self.replicas):
                    raise
                continue
            finally:
                replica.inflight -= 1
            replica.strikes = 0
            return result

    def stats(self) -> list[dict[str, Any]]:
        return [r.stats() for r in self.replicas]


__all__ = ["Replica", "ReplicaPool"]
