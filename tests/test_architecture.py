"""The architecture README promises (docs/DESIGN.md's boundaries): no import cycles, adapters never import the server
or each other, engines know nothing of the GRM, the core imports no host or web framework, and the code is
`ruff check` clean. The contracts live in pyproject.toml ([tool.importlinter]); this test runs them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed (it is part of the dev extra)"
    return found


def test_import_contracts_hold():
    result = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_ruff_check_is_clean():
    result = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_adapters_never_import_each_other_or_the_server():
    """The adapters import each other by their installed name (grm_plugin.adapters.x), which import-linter cannot
    map onto the folder: read their imports directly."""
    adapters = {p.stem for p in (ROOT / "adapters").glob("*.py") if p.stem != "__init__"}
    assert {"trl", "openrlhf", "langchain", "verl", "swift"} <= adapters
    for name in adapters:
        imported = _imported_modules(ROOT / "adapters" / f"{name}.py")
        others = {f"grm_plugin.adapters.{other}" for other in adapters - {name}}
        assert not imported & others, f"adapters/{name}.py imports {sorted(imported & others)}"
        assert not any(m == "grm_plugin.server" or m.startswith("grm_plugin.server.") for m in imported), name
