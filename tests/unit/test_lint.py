"""ruff and mypy run inside the test command, so CI fails on what they find (the package, tests,
benchmarks and devenv are all typed strictly); and what a benchmark applies to the code still applies."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_finds_nothing() -> None:
    checked = subprocess.run(
        [str(BIN / "ruff"), "check", "capacity_service", "tests", "benchmarks", "devenv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_ruff_format_leaves_the_code_as_it_is() -> None:
    checked = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", "capacity_service", "tests", "benchmarks", "devenv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_finds_nothing() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "capacity_service", "tests", "benchmarks", "devenv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_holds_benchmark_can_still_take_the_hold_machinery_out() -> None:
    """benchmarks/holds.py measures holds against this code with ``holds_off.patch`` applied: a change to
    the lines it takes out must come with a new patch, or the benchmark stops working."""
    checked = subprocess.run(
        ["git", "apply", "--check", "benchmarks/holds_off.patch"], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
