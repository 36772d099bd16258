"""The shape of a judge-training family: a ``Draft`` (one item with its evidence) and the ``family`` registry.

A family is a function ``make(rng, template) -> Draft`` registered with ``@family(name, group, templates=N)``.
``template`` (0..N-1) picks the surface form (the wording of the prompt and the shape of the responses), so that
whole templates can be held out; everything else (names, numbers, topics) comes from ``rng``. A draft lists its
responses best first, each with the evidence a judge should name (``notes``) and the score a careful judge gives it
(``grades``, 1-10, the first strictly highest); ``judgedata.items`` shuffles them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

Prompt = Union[str, list[dict[str, str]]]


@dataclass
class Draft:
    """One generated item before shuffling: responses[0] is the best.

    - ``prompt``: the user's text, or chat messages (a system message holding a constraint, earlier turns).
    - ``responses``: 2-4 responses, the best first, the others near misses (same length and style where possible).
    - ``notes``: one clause per response naming the evidence, written about that response alone (it must make sense
      whatever position the response is shown in): "gives 408, which matches the reference 408", "has 14 words,
      far more than the 3 asked for". No "Response 1", no "the first/other response".
    - ``grades``: the score a careful judge gives each response (1-10); ``grades[0]`` strictly highest.
    - ``criteria``: 1-3 (criterion, weight) pairs specific to this prompt, weights summing to 100.
    - ``rationale``: why the best response is best, one sentence without slot numbers ("it is the only one that
      gives the reference value").
    - ``reference``: a reference answer passed to the judge as ``ScoreRequest.reference`` (None when the prompt
      itself holds what is needed).
    """

    prompt: Prompt
    responses: list[str]
    notes: list[str]
    grades: list[int]
    criteria: list[tuple[str, int]]
    rationale: str
    reference: Optional[str] = None

    def check(self, where: str) -> None:
        """Raise ValueError when the draft breaks the contract above."""
        n = len(self.responses)
        if not 2 <= n <= 4:
            raise ValueError(f"{where}: {n} responses, expected 2-4")
        if len(self.notes) != n or len(self.grades) != n:
            raise ValueError(f"{where}: {n} responses but {len(self.notes)} notes and {len(self.grades)} grades")
        if len(set(self.responses)) != n:
            raise ValueError(f"{where}: duplicate responses {self.responses}")
        if any(not 1 <= g <= 10 for g in self.grades) or max(self.grades[1:]) >= self.grades[0]:
            raise ValueError(f"{where}: grades {self.grades}: each 1-10 and the first strictly highest")
        if not 1 <= len(self.criteria) <= 3 or sum(w for _, w in self.criteria) != 100:
            raise ValueError(f"{where}: criteria {self.criteria}: 1-3 pairs whose weights sum to 100")
        if not self.rationale or not all(self.notes) or not all(r.strip() for r in self.responses):
            raise ValueError(f"{where}: empty rationale, note or response")


@dataclass(frozen=True)
class Family:
    """A registered family: its name, its skill group, how many templates it has, its maker."""

    name: str
    group: str
    templates: int
    make: Callable[[random.Random, int], Draft] = field(compare=False)


FAMILIES: dict[str, Family] = {}
# Skill groups (what a judge is asked in RL); every family belongs to one.
GROUPS = ("reference", "constraint", "safety", "relevance", "completeness", "factual_slip", "quality", "robustness",
          "knowledge")


def family(name: str, group: str, templates: int) -> Callable[[Callable[[random.Random, int], Draft]],
                                                               Callable[[random.Random, int], Draft]]:
    """Register ``make(rng, template) -> Draft`` as family ``name`` of skill ``group`` with ``templates`` forms."""
    if group not in GROUPS:
        raise ValueError(f"family {name}: group {group!r} is not one of {GROUPS}")
    if templates < 4:
        raise ValueError(f"family {name}: {templates} templates; at least 4, so that some can be held out")

    def register(make: Callable[[random.Random, int], Draft]) -> Callable[[random.Random, int], Draft]:
        if name in FAMILIES:
            raise ValueError(f"family {name} is registered twice")
        FAMILIES[name] = Family(name, group, templates, make)
        return make

    return register


__all__ = ["Draft", "FAMILIES", "Family", "GROUPS", "Prompt", "family"]
