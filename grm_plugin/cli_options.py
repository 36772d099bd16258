"""The typer options that several ``grm`` commands share (``score``, ``eval``, ``serve`` and the ``spct`` stages):
one definition of each flag that names the judge, so every command reads and documents it the same way."""

from __future__ import annotations

import typer

JUDGE_MODEL = typer.Option(None, "--model", help="Judge model: a local folder / .gguf, or the served name with "
                           "--base-url (default: the embedded SmolLM2 judge).")
JUDGE_URL = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint serving the judge (vLLM, SGLang); "
                                                  "several replicas comma-separated.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML/JSON config file (GRMConfig fields) for the judge.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
LIMIT = typer.Option(None, help="Only the first N items.")
