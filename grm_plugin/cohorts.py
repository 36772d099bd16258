"""Cohorts: the rollouts of one prompt that a host sends one by one, at different times, held until their group is
complete so that the judge sees them together (group mode). Framework-free; the micro-batcher of ``rollouts.py``
builds on it.

A rollout joins the open cohort of its key (its prompt and label). A cohort closes when it holds the expected group
size, or ``wait_s`` after its first rollout arrived (a *partial* group, judged with what it has), or at once when the
server drains. Rollouts of a prompt beyond the group size start a new cohort. A rollout whose caller gave up leaves
its cohort without holding the others. The expected size is fixed (``GroupSize(8)``) or learned (``GroupSize("auto")``):
until it is known a cohort closes at ``wait_s``; then the most frequent size of the recent groups is expected, and
re-learned when the traffic changes (groups that keep timing out smaller, or a prompt whose full cohort is followed at
once by more of its rollouts, which counts as one larger group).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Union

logger = logging.getLogger(__name__)

GroupSizeSetting = Union[int, Literal["auto"]]


class GroupSize:
    """The expected number of rollouts per prompt: fixed, or with ``"auto"`` learned from the last ``memory`` groups
    seen (known once ``min_groups`` of them were; ties go to the larger size).

    Example:
        >>> size = GroupSize("auto")
        >>> size.expected is None
        True
        >>> for seen in (8, 8, 7):
        ...     size.observe(seen)
        >>> size.expected
        8
    """

    def __init__(self, setting: GroupSizeSetting, memory: int = 16, min_groups: int = 3) -> None:
        if setting != "auto" and (not isinstance(setting, int) or isinstance(setting, bool) or setting < 1):
            raise ValueError(f"group_size: expected a positive integer or 'auto', got {setting!r}")
        self.setting = setting
        self.min_groups = min_groups
        self.seen: collections.deque[int] = collections.deque(maxlen=memory)

    @property
    def learned(self) -> bool:
        return self.setting == "auto"

    @property
    def expected(self) -> int | None:
        if not self.learned:
            return int(self.setting)
        if len(self.seen) < self.min_groups:
            return None
        counts = collections.Counter(self.seen)
        return max(counts, key=lambda size: (counts[size], size))

    def observe(self, size: int) -> None:
        """One group of ``size`` rollouts was seen (only a learned size listens)."""
        if self.learned and size > 0:
            self.seen.append(size)


def cohort_key(prompt: Any, label: Optional[str]) -> str:
    """Rollouts with the same key belong to one group: the same prompt (text or messages) and label."""
    return json.dumps([prompt, label], sort_keys=True, default=str)


@dataclass
class Cohort:
    """An open group: its id (the group the judge sees), key, opening time and members so far."""

    id: int
    key: str
    opened: float
    members: list[Any] = field(default_factory=list)
    carried: int = 0  # rollouts of the same prompt closed in a full cohort just before (one larger group)
    timer: Optional[asyncio.TimerHandle] = None


# ready(members, group_id): a closed cohort's rollouts, to be judged together.
ReadyCallback = Callable[[list, int], None]
# closed(size, partial, waited_s): what the metrics hear about each closed cohort.
ClosedCallback = Callable[[int, bool, float], None]


class Cohorts:
    """The open cohorts of one event loop. ``add(rollout, key)`` places a rollout (an object with a ``future``);
    ``ready`` receives each closed cohort's live members with its group id; ``closed`` hears of every closed cohort.
    """

    def __init__(self, size: GroupSize, wait_s: float, ready: ReadyCallback,
                 closed: ClosedCallback | None = None) -> None:
        if wait_s <= 0:
            raise ValueError(f"group_wait_s: expected a positive number of seconds, got {wait_s!r}")
        self.size = size
        self.wait_s = wait_s
        self.ready = ready
        self.closed = closed
        self.open: dict[str, Cohort] = {}
        self.draining = False
        self._ids = itertools.count()
        self._full: dict[str, tuple[float, int]] = {}  # key -> (when its last full cohort closed, group so far)

    @property
    def waiting(self) -> int:
        """Rollouts held in open cohorts now."""
        return sum(len(c.members) for c in self.open.values())

    def add(self, rollout: Any, key: str) -> None:
        loop = asyncio.get_running_loop()
        cohort = self.open.get(key)
        if cohort is None:
            cohort = self.open[key] = Cohort(next(self._ids), key, loop.time())
            previous = self._full.pop(key, None)
            if previous is not None and loop.time() - previous[0] < self.wait_s:
                cohort.carried = previous[1]
            if not self.draining:
                cohort.timer = loop.call_later(self.wait_s, self._close, cohort, "timeout")
        cohort.members.append(rollout)
        rollout.future.add_done_callback(lambda _, c=cohort, r=rollout: self._left(c, r))
        expected = self.size.expected
        if self.draining or (expected is not None and len(cohort.members) >= expected):
            self._close(cohort, "full" if not self.draining else "drain")

    def drain(self) -> None:
        """Close every open cohort now (judged with what it has) and hold no later rollout: the server stops."""
        self.draining = True
        for cohort in list(self.open.values()):
            self._close(cohort, "drain")

    def _left(self, cohort: Cohort, rollout: Any) -> None:
        """A member's future finished while its cohort was open (its caller gave up): it leaves the cohort."""
        if self.open.get(cohort.key) is cohort and rollout in cohort.members:
            cohort.members.remove(rollout)
            if not cohort.members:
                self._close(cohort, "empty")

    def _close(self, cohort: Cohort, why: str) -> None:
        if self.open.get(cohort.key) is not cohort:
            return
        del self.open[cohort.key]
        if cohort.timer is not None:
            cohort.timer.cancel()
        members = [r for r in cohort.members if not r.future.done()]
        if not members:
            return
        loop = asyncio.get_running_loop()
        group = cohort.carried + len(members)
        if why == "full":
            self._full[cohort.key] = (loop.time(), group)
            if len(self._full) > 4096:  # bounded memory: forget the oldest
                self._full.pop(next(iter(self._full)))
        if why in ("full", "timeout"):
            self.size.observe(group)
        if self.closed is not None:
            try:
                self.closed(len(members), why != "full", loop.time() - cohort.opened)
            except Exception:
                logger.exception("the cohorts' closed callback failed")
        self.ready(members, cohort.id)


__all__ = ["Cohort", "Cohorts", "GroupSize", "GroupSizeSetting", "cohort_key"]
