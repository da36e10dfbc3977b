"""The command lines we tell people to run parse as written (scripts/run is README command (a))."""

import shlex
from pathlib import Path

import pytest

from capacity_service.cli import _parser

REPO = Path(__file__).resolve().parents[2]


def test_the_command_line_of_scripts_run_parses() -> None:
    exec_line = next(line for line in (REPO / "scripts" / "run").read_text().splitlines() if line.startswith("exec "))
    argv = [word for word in shlex.split(exec_line)[2:] if word != "$@"]  # after `exec .venv/bin/capacity-service`
    args = _parser().parse_args(argv)
    assert args.command == "start" and args.data_dir == Path("data")


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "/srv/cap", "start"],
        ["start", "--data-dir", "/srv/cap"],
        ["--data-dir", "elsewhere", "start", "--data-dir", "/srv/cap"],  # after the command, it wins
        ["events", "pool-1", "--data-dir", "/srv/cap"],
        ["pools", "list", "--data-dir", "/srv/cap"],
        ["demo", "--data-dir", "/srv/cap"],
    ],
)
def test_data_dir_goes_before_or_after_the_command(argv: list[str]) -> None:
    assert _parser().parse_args(argv).data_dir == Path("/srv/cap")


def test_data_dir_defaults_to_data() -> None:
    assert _parser().parse_args(["start"]).data_dir == Path("data")
