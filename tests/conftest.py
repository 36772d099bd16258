"""Shared fixtures. ``sim_judge`` is the simulated judge: an OpenAI-compatible HTTP server that stands in for a
language model (it is not a model); responses carry their hidden quality via ``with_quality``."""

from __future__ import annotations

import pytest

from grm_plugin.simulated_judge import SimulatedJudge


@pytest.fixture
def sim_judge():
    with SimulatedJudge(noise=0.0, seed=0) as judge:
        yield judge


@pytest.fixture(autouse=True)
def _no_ambient_grm_env(monkeypatch):
    """Tests start from defaults: ambient GRM_* / OPENAI_API_KEY settings of the developer's shell are removed."""
    import os

    for name in list(os.environ):
        if name.startswith("GRM_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name, raising=False)
