"""Every benchmark runs after one documented setup command (`scripts/setup dev`): its docstring says so, its
``--help`` runs as a newcomer runs it, and a missing dev dependency says what to run instead of a traceback."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import DEV_ONLY_MODULES

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(path for path in (ROOT / "benchmarks").glob("*.py") if not path.name.startswith("_"))
SETUP = "Setup: `scripts/setup dev` once; then"


@pytest.fixture(scope="module")
def helps() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every benchmark's ``--help``, all started at once: each imports its own modules, Ray's among them."""
    started = {
        path.name: subprocess.Popen(
            [sys.executable, f"benchmarks/{path.name}", "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in BENCHMARKS
    }
    finished: dict[str, subprocess.CompletedProcess[str]] = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=120)
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    yield finished


def test_there_are_benchmarks() -> None:
    assert len(BENCHMARKS) >= 10, BENCHMARKS


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_the_docstring_names_the_setup_command_before_the_command(script: Path) -> None:
    docstring = ast.get_docstring(ast.parse(script.read_text())) or ""
    assert SETUP in docstring, f"{script.name}: its docstring lacks {SETUP!r}"
    assert f".venv/bin/python benchmarks/{script.name}" in docstring.split(SETUP, 1)[1]


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_help_runs(script: Path, helps: dict[str, subprocess.CompletedProcess[str]]) -> None:
    ran = helps[script.name]
    assert ran.returncode == 0, ran.stderr
    assert SETUP in ran.stdout


def test_a_missing_dev_dependency_says_what_to_run_in_one_line() -> None:
    blocked = DEV_ONLY_MODULES[0]
    # As if the module were not installed: an import of it fails and a search for it finds nothing.
    run_without_it = (
        f"import runpy, sys; sys.modules[{blocked!r}] = None; sys.argv = ['benchmarks/ramp.py', '--help']; "
        "runpy.run_path('benchmarks/ramp.py', run_name='__main__')"
    )
    ran = subprocess.run(
        [sys.executable, "-c", run_without_it], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode != 0
    assert ran.stderr.strip().count("\n") == 0, ran.stderr
    assert "scripts/setup dev" in ran.stderr and blocked in ran.stderr


def _distribution(requirement: str) -> str:
    """The normalized distribution name of a requirement (``psycopg[binary]>=3.1`` -> ``psycopg``)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _imported_top_level_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_setup_check_covers_every_dev_only_module_the_benchmarks_import() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev_only = {_distribution(r) for r in project["optional-dependencies"]["dev"]} - {
        _distribution(r) for r in project["dependencies"]
    }
    providers = importlib.metadata.packages_distributions()
    imported = {module for path in (ROOT / "benchmarks").rglob("*.py") for module in _imported_top_level_modules(path)}
    needed = {
        module for module in imported if any(_distribution(dist) in dev_only for dist in providers.get(module, []))
    }
    assert needed <= set(DEV_ONLY_MODULES), f"add {sorted(needed - set(DEV_ONLY_MODULES))} to DEV_ONLY_MODULES"
