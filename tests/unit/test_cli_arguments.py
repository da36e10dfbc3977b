"""The command line: what we tell people to run parses as written, and a failed start says why."""

import shlex
import socket
from pathlib import Path

import pytest

from capacity_service.entrypoints import cli
from capacity_service.entrypoints.cli import _did_not_come_up, _parser

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


def test_a_failed_start_names_the_port_when_another_process_holds_it(capsys: pytest.CaptureFixture[str]) -> None:
    # Serve's own error names only the deployment ("Failed to update the deployments ['CapacityApi']").
    failure = RuntimeError("Deploying application capacity failed")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert _did_not_come_up(failure, ("127.0.0.1", port)) == 1
    held = capsys.readouterr().err
    assert _did_not_come_up(failure, ("127.0.0.1", port)) == 1
    free = capsys.readouterr().err

    assert "Deploying application capacity failed" in held and f"port {port} is held" in held
    assert "Deploying application capacity failed" in free and "is held" not in free


def _sent_by(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[tuple[str, str, object]]]:
    """What `capacity-service <argv>` sends to the service (the service answers {})."""
    sent: list[tuple[str, str, object]] = []

    def http(_: object, method: str, path: str, body: object = None) -> object:
        sent.append((method, path, body))
        return {}

    monkeypatch.setattr(cli, "_http", http)
    return cli.main(argv), sent


def test_reserve_names_a_pool_or_lets_the_service_choose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    status, sent = _sent_by(["reserve", "north:0800", "--quantity", "2"], monkeypatch)
    assert status == 0
    assert sent == [
        ("POST", "/v1/reservations", {"request_id": None, "hold_seconds": None, "pool_id": "north:0800", "quantity": 2})
    ]
    argv = ["reserve", "--choose-zone", "north", "--from", "2026-12-01T08:00:00Z", "--prefer", "most_remaining"]
    status, sent = _sent_by([*argv, "--quantity", "3", "--request-id", "c-1"], monkeypatch)
    assert status == 0
    choose = {"zone": "north", "from": "2026-12-01T08:00:00Z", "quantity": 3, "prefer": "most_remaining"}
    assert sent == [("POST", "/v1/reservations", {"request_id": "c-1", "hold_seconds": None, "choose": choose})]


@pytest.mark.parametrize(
    "argv",
    [
        ["reserve"],
        ["reserve", "north:0800", "--choose-zone", "north"],
        ["reserve", "north:0800", "--from", "2026-12-01T08:00:00Z"],
    ],
)
def test_reserve_wants_a_pool_or_a_zone_to_choose_from(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, sent = _sent_by(argv, monkeypatch)
    assert status == 2 and sent == []
    assert "--choose-zone" in capsys.readouterr().err


PUT_WITH_SETTINGS = [
    *("pools", "put", "p", "--capacity", "3", "--zone", "z"),
    *("--max-hold-seconds", "7200", "--waitlist-limit", "5"),
]


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (
            ["waitlist", "join", "north:0800", "--quantity", "2", "--request-id", "w-1", "--hold-seconds", "300"],
            ("POST", "/v1/pools/north:0800/waitlist", {"quantity": 2, "request_id": "w-1", "hold_seconds": 300}),
        ),
        (
            ["waitlist", "join", "north:0800", "--request-id", "w-1"],
            ("POST", "/v1/pools/north:0800/waitlist", {"quantity": 1, "request_id": "w-1"}),
        ),
        (["waitlist", "get", "north:0800", "e-1"], ("GET", "/v1/pools/north:0800/waitlist/e-1", None)),
        (["waitlist", "leave", "north:0800", "e-1"], ("DELETE", "/v1/pools/north:0800/waitlist/e-1", None)),
        (["extend", "r-1", "--hold-seconds", "900"], ("POST", "/v1/reservations/r-1/extend", {"hold_seconds": 900})),
        (
            PUT_WITH_SETTINGS,
            (
                "PUT",
                "/v1/pools/p",
                {
                    "capacity": 3,
                    "zone": "z",
                    "slot_start": None,
                    "slot_end": None,
                    "max_hold_seconds": 7200,
                    "waitlist_limit": 5,
                },
            ),
        ),
    ],
)
def test_waitlist_and_extend_commands_send_their_calls(
    argv: list[str], call: tuple[str, str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _sent_by(argv, monkeypatch) == (0, [call])


def test_start_lets_webhooks_reach_a_receiver_on_this_machine_only_when_asked() -> None:
    from capacity_service.settings import ServiceSettings, service_settings

    def settings_of(*flags: str) -> ServiceSettings:
        return service_settings(cli._service_args(_parser().parse_args(["start", *flags])), environ={})

    assert not settings_of().webhooks.allow_private_targets
    assert settings_of("--allow-private-webhook-targets").webhooks.allow_private_targets
