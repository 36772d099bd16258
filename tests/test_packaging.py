"""Packaging: the top-level folder ``adapters/`` installs as ``grm_plugin.adapters`` and never as a top-level
``adapters`` module (that name belongs to AdapterHub's distribution), for ``pip install .`` and ``pip install -e .``.

Each install goes into a fresh virtual environment under tmp_path, with ``--no-deps --no-build-isolation`` (the
build requirements of pyproject.toml are installed into that environment first). The checks run from a working
directory outside the repository; grm_plugin's runtime dependencies are borrowed from the test's own environment,
searched after the fresh site-packages and without anything of grm_plugin's or named ``adapters``. The verl adapter
is also imported with the server extra's packages (fastapi, starlette, uvicorn, prometheus_client) left out of them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OWN_NAMES = ("grm_plugin", "grm-plugin", "adapters", "__editable__")

CHECK = r"""
import json, sys, sysconfig
out = {"purelib": sysconfig.get_paths()["purelib"]}
try:
    import adapters
except ModuleNotFoundError as exc:
    out["adapters_missing"] = exc.name
else:
    out["adapters_found"] = str(getattr(adapters, "__file__", None) or list(adapters.__path__))
sys.path.append(sys.argv[1])  # runtime dependencies only, searched last
import grm_plugin.adapters
out["adapters_file"] = grm_plugin.adapters.__file__
out["grm_plugin_file"] = sys.modules["grm_plugin"].__file__
print(json.dumps(out))
"""


# The server extra (and what it brings): `import grm_plugin.adapters.verl` must work without any of it.
SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "prometheus_client")

CHECK_VERL_WITHOUT_SERVER = r"""
import importlib.util, json, sys
hidden = sys.argv[2].split(",")
sys.path.append(sys.argv[1])  # runtime dependencies (verl among them) without the server extra, searched last
out = {"installed": [name for name in hidden if importlib.util.find_spec(name) is not None]}
import grm_plugin.adapters.verl
out["manager"] = grm_plugin.adapters.verl.MANAGER_NAME
out["loaded"] = sorted({name.split(".")[0] for name in sys.modules} & set(hidden))
print(json.dumps(out))
"""


def _run(command: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}")
    return result


def _venv(path: Path) -> tuple[Path, Path]:
    """A fresh venv (no pip in it: the test's own pip installs into it with --python) and its purelib."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=path.parent).stdout.strip()
    return python, Path(purelib)


def _pip(python: Path, *args: str, cwd: Path) -> None:
    _run([sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "install", *args],
         cwd=cwd, timeout=240)


def _build_requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["build-system"]["requires"])


def _dependencies_dir(where: Path, hidden: tuple[str, ...] = ()) -> Path:
    """The test environment's site-packages, less grm_plugin itself, anything named adapters and the ``hidden``
    distributions (their packages and dist-info), as symlinks in ``where/deps``."""
    deps = where / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(OWN_NAMES + hidden) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return deps


def _copy_source(dest: Path) -> Path:
    """The project's source without build outputs, so the regular install neither writes build/ into the working
    tree nor picks up a stale one."""
    ignore = shutil.ignore_patterns(".git", ".gl", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "results")
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.fixture(scope="module", params=["regular", "editable"])
def installed(request, tmp_path_factory):
    kind = request.param
    base = tmp_path_factory.mktemp(f"install-{kind}")
    assert not base.resolve().is_relative_to(ROOT)
    python, purelib = _venv(base / "venv")
    _pip(python, *_build_requirements(), cwd=base)
    if kind == "regular":
        _pip(python, "--no-deps", "--no-build-isolation", str(_copy_source(base / "src")), cwd=base)
    else:
        _pip(python, "--no-deps", "--no-build-isolation", "-e", str(ROOT), cwd=base)
    work = base / "elsewhere"
    work.mkdir()
    report = json.loads(_run([str(python), "-c", CHECK, str(_dependencies_dir(base))], cwd=work).stdout)
    assert Path(report["purelib"]) == purelib
    return kind, purelib, report, python


def _dist_info(purelib: Path) -> Path:
    [dist_info] = [p for p in purelib.iterdir() if p.name.startswith("grm_plugin-") and p.name.endswith(".dist-info")]
    return dist_info


def test_grm_plugin_adapters_imports_from_the_install_outside_the_repo(installed):
    kind, purelib, report, _ = installed
    adapters_file = Path(report["adapters_file"]).resolve()
    if kind == "regular":
        assert adapters_file == (purelib / "grm_plugin" / "adapters" / "__init__.py").resolve()
        assert Path(report["grm_plugin_file"]).resolve() == (purelib / "grm_plugin" / "__init__.py").resolve()
    else:
        assert adapters_file == (ROOT / "adapters" / "__init__.py").resolve()
        assert Path(report["grm_plugin_file"]).resolve() == (ROOT / "grm_plugin" / "__init__.py").resolve()


def test_top_level_adapters_module_is_not_importable_after_install(installed):
    _, _, report, _ = installed
    assert report.get("adapters_missing") == "adapters", f"'import adapters' found {report.get('adapters_found')}"


def test_site_packages_holds_no_top_level_adapters_entry(installed):
    _, purelib, _, _ = installed
    clashing = [p.name for p in purelib.iterdir() if p.name == "adapters" or p.name.startswith("adapters.")]
    assert clashing == []


def test_installed_dist_info_declares_no_top_level_adapters(installed):
    kind, purelib, _, _ = installed
    dist_info = _dist_info(purelib)
    top_level = dist_info / "top_level.txt"
    if top_level.exists():
        names = top_level.read_text(encoding="utf-8").split()
        assert "adapters" not in names
        assert "grm_plugin" in names
    record = [line.split(",")[0] for line in (dist_info / "RECORD").read_text(encoding="utf-8").splitlines()]
    top = {path.split("/")[0] for path in record}
    assert "adapters" not in top and "adapters.py" not in top
    if kind == "regular":
        assert "grm_plugin/adapters/__init__.py" in record
        assert "grm_plugin/backends/__init__.py" in record
        assert "grm_plugin/adapters/swift_plugin/grm_swift_plugin.py" in record  # `grm plugin-path swift`
        assert "grm_plugin/data/probe-v1.jsonl" in record  # package data travels in the wheel
        if (ROOT / "grm_plugin" / "data" / "embedded-adapter" / "adapter.safetensors").is_file():  # when shipped
            assert {"grm_plugin/data/embedded-adapter/adapter.safetensors",
                    "grm_plugin/data/embedded-adapter/card.json"} <= set(record)


def test_install_provides_the_grm_console_script(installed):
    _, purelib, _, python = installed
    assert (python.parent / ("grm.exe" if os.name == "nt" else "grm")).is_file()
    dist_info = _dist_info(purelib)
    entry_points = (dist_info / "entry_points.txt").read_text(encoding="utf-8")
    assert "grm = grm_plugin.cli:app" in entry_points
    assert "[verl.plugins]\ngrm = grm_plugin.adapters.verl" in entry_points  # loaded on `import verl`


def test_verl_adapter_imports_without_the_server_extra(installed, tmp_path):
    if importlib.util.find_spec("verl") is None:
        pytest.skip("verl is not installed in the test environment (pip install --no-deps verl==0.9.1)")
    _, purelib, _, python = installed
    deps = _dependencies_dir(tmp_path, hidden=SERVER_ONLY)
    report = json.loads(_run([str(python), "-c", CHECK_VERL_WITHOUT_SERVER, str(deps), ",".join(SERVER_ONLY)],
                             cwd=tmp_path, timeout=300).stdout.splitlines()[-1])
    assert report["installed"] == []  # the check really ran without the server extra
    assert report["manager"] == "grm"
    assert report["loaded"] == [], f"importing the verl adapter loaded {report['loaded']}"
    metadata = (_dist_info(purelib) / "METADATA").read_text(encoding="utf-8")
    assert "Provides-Extra: verl" in metadata
    verl_requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")
                     and 'extra == "verl"' in line]
    assert verl_requires == []  # the verl extra pulls in nothing (no server)
