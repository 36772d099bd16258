"""Test support shipped with the package: ``simulated_judge``, an OpenAI-compatible stand-in for a language model that
tests, benchmarks and examples judge against (``grm simulate-judge`` runs it). Needs the ``server`` extra."""
