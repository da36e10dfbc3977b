"""``capacity-service schedule apply FILE`` and ``schedule show``: the file read as its author meant it (YAML
times stay times), what is sent, the progress (a bar redrawn on a terminal, plain lines otherwise), the
summary at the end and the exit code; a file that is no template sends nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from capacity_service.entrypoints import cli

YAML = """\
# every day of December's first week
from: 2026-12-01
to: 2026-12-07
slot_starts: [08:00, 10:00, 18:30]   # unquoted: YAML 1.1 would read 10:00 as 600
slot_minutes: 120
zones:
  - zone: north
    capacity: 20
  - {zone: south, capacity: 12, slot_capacity: {18:30: 6}}
"""


def schedule(**fields: Any) -> dict[str, Any]:
    base = {
        "schedule_id": "december",
        "generation": 1,
        "status": "applying",
        "total": 42,
        "done": 0,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "refused": 0,
        "refusals": [],
        "left_out": 0,
        "left_out_sample": [],
        "accepted_at": "2026-12-01T07:00:00.000000Z",
        "finished_at": None,
        "last_error": None,
    }
    return {**base, **fields}


def answering(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> list[tuple[str, str, object]]:
    """The service, as `cli._http` meets it: ``answers`` in turn; what was sent is recorded."""
    sent: list[tuple[str, str, object]] = []

    def http(_: object, method: str, path: str, body: object = None) -> object:
        sent.append((method, path, body))
        return answers.pop(0)

    monkeypatch.setattr(cli, "_http", http)
    monkeypatch.setattr(cli, "SCHEDULE_POLL_S", 0.0)
    return sent


def test_apply_puts_the_file_s_template_follows_it_and_sums_it_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "december.yaml"
    file.write_text(YAML)
    refusal = {"pool_id": "north:2026-12-01T08", "code": "capacity_below_reserved", "message": "below the 8 taken"}
    finished = {"status": "applied", "done": 42, "finished_at": "2026-12-01T07:00:02.500000Z"}
    sent = answering(
        monkeypatch,
        [
            schedule(),
            schedule(done=21, created=21),
            schedule(**finished, created=39, unchanged=1, refused=1, refusals=[refusal], retired=1, left_out=3,
                     left_out_sample=["north:2026-11-30T08"]),
        ],
    )  # fmt: skip
    assert cli.main(["schedule", "apply", str(file)]) == 1  # a pool was refused
    body = {
        "from": "2026-12-01",
        "to": "2026-12-07",
        "slot_starts": ["08:00", "10:00", "18:30"],
        "slot_minutes": 120,
        "zones": [{"zone": "north", "capacity": 20}, {"zone": "south", "capacity": 12, "slot_capacity": {"18:30": 6}}],
    }
    assert sent[0] == ("PUT", "/v1/schedules/december", body)
    assert sent[1:] == [("GET", "/v1/schedules/december", None)] * 2
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        "schedule december applied (generation 1) in 2.5 s: 42 pools: 39 created, 0 updated, 1 unchanged, 1 refused,"
        " 1 retired (left as they are)",
        "  refused north:2026-12-01T08: capacity_below_reserved: below the 8 taken",
        "  3 pools of the template before are not in this one; they were left as they are (e.g."
        " north:2026-11-30T08): retire those you no longer sell (capacity-service pools retire ID)",
    ]
    assert "schedule december: 0/42 pools (0 created, 0 updated, 0 unchanged, 0 refused)" in printed.err


def test_apply_with_an_id_and_no_wait_puts_and_prints_the_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "t.yaml"
    file.write_text(YAML)
    sent = answering(monkeypatch, [schedule(schedule_id="vans-dec")])
    assert cli.main(["schedule", "apply", str(file), "--id", "vans-dec", "--no-wait"]) == 0
    assert [(method, path) for method, path, _ in sent] == [("PUT", "/v1/schedules/vans-dec")]
    assert '"status": "applying"' in capsys.readouterr().out
    sent = answering(monkeypatch, [schedule(status="applied")])
    assert cli.main(["schedule", "show", "vans-dec"]) == 0
    assert sent == [("GET", "/v1/schedules/vans-dec", None)]


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "No such file"), ("- just\n- a list\n", "a template is a mapping"), ("zones: [unclosed\n", "not YAML")],
)
def test_a_file_that_is_no_template_sends_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    says: str,
) -> None:
    file = tmp_path / "december.yaml"
    if content is not None:
        file.write_text(content)
    sent = answering(monkeypatch, [])
    assert cli.main(["schedule", "apply", str(file)]) == 2
    assert sent == [] and says in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_redrawn_on_a_terminal_and_plain_lines_elsewhere() -> None:
    terminal = Terminal()
    progress = cli._Progress("december", terminal)
    progress.show(schedule(done=21, created=21))
    progress.show(schedule(done=42, created=42, last_error="1 pools not configured yet"))
    progress.done()
    drawn = terminal.getvalue()
    assert drawn.count("\r") == 2 and drawn.endswith("\n")
    assert "[###############...............] 21/42 pools" in drawn
    assert "[##############################] 42/42 pools" in drawn and "  waitin" in drawn
    assert all(len(line) == 119 for line in drawn.strip("\n").split("\r")[1:])  # cut to the terminal: no wrap

    log = io.StringIO()
    clock = iter([100.0, 100.0, 100.2, 101.5, 101.5])  # asked when a line may go, and when it went
    progress = cli._Progress("december", log, clock=lambda: next(clock))
    progress.show(schedule(done=0))
    progress.show(schedule(done=20))  # 0.2 s later: not yet
    progress.show(schedule(done=40))
    progress.done()
    assert log.getvalue().splitlines() == [
        "schedule december: 0/42 pools (0 created, 0 updated, 0 unchanged, 0 refused)",
        "schedule december: 40/42 pools (0 created, 0 updated, 0 unchanged, 0 refused)",
    ]
