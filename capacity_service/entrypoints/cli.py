"""``capacity-service``: start the service, and talk to a running one from a terminal.

capacity-service start                       # local Ray + the HTTP app on the embedded defaults
capacity-service pools put north:0800 --capacity 20 --zone north
capacity-service reserve north:0800 --quantity 2
capacity-service reserve --choose-zone north --from 2026-12-01T08:00:00Z --quantity 2   # any pool that fits
capacity-service events north:0800           # the pool's journal, decoded
capacity-service console --open              # the operator's console in a browser
capacity-service webhook put erp --url https://erp.example.com/hooks --event hold.expired   # secret from env
capacity-service schedule apply december.yaml   # the pools of a template, with a progress bar
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from capacity_service.domain.ids import is_order_stream, is_pool_stream, is_schedule_stream
from capacity_service.runtime import environment
from capacity_service.runtime.names import DEFAULT_NAMESPACE
from capacity_service.settings import SqlJournalSettings, journal_settings_from_env, service_settings

DEFAULT_URL = "http://127.0.0.1:8000"
# As in serve_config.yaml. Serve builds an access log record per request even with access logs off (a
# filter drops it later); at WARNING it is not built at all.
SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ServiceError as exc:
        print(json.dumps(exc.body, indent=2), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(
            f"cannot reach the service at {args.url}: {exc.reason} (is `capacity-service start` running?)",
            file=sys.stderr,
        )
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capacity-service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("CAPACITY_URL", DEFAULT_URL), help="of a running service")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where the SQLite journal lives")
    # Also accepted after the command (`capacity-service start --data-dir x`); given there, it wins.
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="where the SQLite journal lives")
    hosting = argparse.ArgumentParser(add_help=False)
    hosting.add_argument(
        "--shards",
        type=int,
        help="shard actors hosting the pools (default: one per CPU of the pool-host nodes; one on SQLite)",
    )
    hosting.add_argument(
        "--actor-per-pool",
        action="store_true",
        help="one actor (a process, ~80 MB) per pool instead of shards: for a few heavy pools",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_service_commands(commands, data_dir, hosting)
    _add_client_commands(commands, data_dir)
    return parser


def _add_service_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    data_dir: argparse.ArgumentParser,
    hosting: argparse.ArgumentParser,
) -> None:
    """The commands that run or stop the service."""
    start = commands.add_parser(
        "start", parents=[data_dir, hosting], help="run the service on a local Ray (Ctrl-C stops it)"
    )
    start.add_argument("--port", type=int, default=8000)
    start.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless you mean it)")
    start.add_argument(
        "--allow-remote-without-keys",
        action="store_true",
        help="answer clients beyond loopback with no API keys set (refused otherwise)",
    )
    start.add_argument(
        "--allow-private-webhook-targets",
        action="store_true",
        help="let webhooks reach loopback and private addresses (a receiver on this machine or your own "
        "network; refused otherwise: webhooks.allow_private_targets)",
    )
    start.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="collect metrics (Ray's and the service's) for Prometheus, on 127.0.0.1; on by default, "
        "--no-metrics turns them off (they cost about 2%% of the reserves per second: docs/performance.md)",
    )
    start.add_argument("--metrics-port", type=int, default=0, help="the metrics' port (default: a free one, printed)")
    start.add_argument(
        "--no-warehouse",
        action="store_true",
        help="no analytics stream (by default every event goes to DATA_DIR/warehouse)",
    )
    start.add_argument(
        "--replicas", type=int, default=1, help="Serve replicas of the HTTP API (above 1: --fast-ingress)"
    )
    start.add_argument(
        "--fast-ingress",
        action="store_true",
        help="Serve's bundled HAProxy in front of the replicas (without it the one replica answers HTTP itself); "
        "Ray 2.60 binds HAProxy's stats and metrics ports (8404, 9101) on all interfaces",
    )
    start.set_defaults(run=_start)

    cluster = commands.add_parser(
        "cluster",
        parents=[data_dir, hosting],
        help="the service on a multi-node Ray cluster on this machine: a head (no pools) and N worker nodes, "
        "all on 127.0.0.1 (Ctrl-C stops it)",
    )
    cluster.add_argument("--workers", type=int, default=2)
    cluster.add_argument("--port", type=int, default=8000)
    cluster.add_argument("--no-warehouse", action="store_true", help="no analytics stream")
    cluster.set_defaults(run=_cluster)

    stop = commands.add_parser(
        "stop",
        help="stop a service deployed with `serve run`/`serve deploy`: its Serve app and every actor of its "
        "namespace (the journal stays; pools recover from it at the next deploy)",
    )
    stop.add_argument("--address", default="auto", help="of the Ray cluster (default: the one on this machine)")
    stop.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="the service's Ray namespace (hosting.namespace)")
    stop.add_argument("--app", default="capacity", help="the Serve application's name")
    stop.set_defaults(run=_stop)


def _add_client_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], data_dir: argparse.ArgumentParser
) -> None:
    """The commands that call a running service over HTTP, or read its journal."""
    pools = commands.add_parser("pools", help="create, show and list pools").add_subparsers(dest="op", required=True)
    put = pools.add_parser("put", help="create or update a pool")
    put.add_argument("pool_id")
    put.add_argument("--capacity", type=int, required=True)
    put.add_argument("--zone", required=True)
    put.add_argument("--slot-start")
    put.add_argument("--slot-end")
    put.add_argument("--max-hold-seconds", type=int, help="how far from now a hold may be extended (kept if absent)")
    put.add_argument("--waitlist-limit", type=int, help="how many may wait on its waitlist (kept if absent)")
    put.set_defaults(run=_put_pool)
    get = pools.add_parser("get", help="show a pool")
    get.add_argument("pool_id")
    get.set_defaults(run=lambda a: _show(_http(a, "GET", f"/v1/pools/{a.pool_id}")))
    retire = pools.add_parser("retire", help="stop selling a pool's capacity for good (its history stays)")
    retire.add_argument("pool_id")
    retire.set_defaults(run=lambda a: _show(_http(a, "DELETE", f"/v1/pools/{a.pool_id}")))
    listing = pools.add_parser(
        "list", parents=[data_dir], help="every pool in the journal's registry, as the service sees it"
    )
    listing.add_argument("--state", choices=("active", "retired", "all"), default="all")
    listing.set_defaults(run=_list_pools)

    reserve = commands.add_parser(
        "reserve", help="take capacity from a pool, or from any pool of a zone that fits (--choose-zone)"
    )
    reserve.add_argument("pool_id", nargs="?", help="the pool; or leave it out and give --choose-zone")
    reserve.add_argument("--choose-zone", help="let the service choose a pool of this zone with room")
    reserve.add_argument("--from", dest="slot_from", help="with --choose-zone: the window's start")
    reserve.add_argument("--to", dest="slot_to", help="with --choose-zone: the window's end")
    reserve.add_argument(
        "--prefer", choices=("earliest", "most_remaining"), help="with --choose-zone: which pool first"
    )
    reserve.add_argument("--quantity", type=int, default=1)
    reserve.add_argument("--request-id")
    reserve.add_argument(
        "--hold-seconds", type=int, help="hold the units this long (1..86400) unless confirmed, then they go back"
    )
    reserve.set_defaults(run=_reserve)

    confirm = commands.add_parser("confirm", help="turn a hold into an active reservation")
    confirm.add_argument("reservation_id")
    confirm.set_defaults(run=lambda a: _show(_http(a, "POST", f"/v1/reservations/{a.reservation_id}/confirm")))

    extend = commands.add_parser("extend", help="make a hold end this long from now (up to the pool's max)")
    extend.add_argument("reservation_id")
    extend.add_argument("--hold-seconds", type=int, required=True)
    extend.set_defaults(
        run=lambda a: _show(
            _http(a, "POST", f"/v1/reservations/{a.reservation_id}/extend", {"hold_seconds": a.hold_seconds})
        )
    )

    show = commands.add_parser("reservation", help="show a reservation: held, active, released or expired")
    show.add_argument("reservation_id")
    show.set_defaults(run=lambda a: _show(_http(a, "GET", f"/v1/reservations/{a.reservation_id}")))

    release = commands.add_parser("release", help="give a reservation's capacity back")
    release.add_argument("reservation_id")
    release.set_defaults(run=lambda a: _show(_http(a, "DELETE", f"/v1/reservations/{a.reservation_id}")))

    order = commands.add_parser("order", help="place, show, confirm and cancel orders (all lines or none)")
    order_ops = order.add_subparsers(dest="op", required=True)
    place = order_ops.add_parser("place", help="take every line, or none: order place POOL:QUANTITY ...")
    place.add_argument("lines", nargs="+", metavar="POOL:QUANTITY", type=_order_line)
    place.add_argument("--order-id", help="the order's id (repeating it takes nothing twice); made when absent")
    place.add_argument("--hold-seconds", type=int, help="hold every line this long (1..86400) until confirmed")
    place.set_defaults(run=_place_order)
    for op, method, suffix, text in (
        ("get", "GET", "", "show an order"),
        ("confirm", "POST", "/confirm", "confirm every line of a held order"),
        ("cancel", "DELETE", "", "give every line of an order back"),
    ):
        sub = order_ops.add_parser(op, help=text)
        sub.add_argument("order_id")
        sub.set_defaults(run=lambda a, m=method, s=suffix: _show(_http(a, m, f"/v1/orders/{a.order_id}{s}")))

    _add_waitlist_commands(commands)

    watch = commands.add_parser("watch", help="print a zone's pools as they change (until Ctrl-C)")
    watch.add_argument("--zone", required=True)
    watch.set_defaults(run=_watch)

    availability = commands.add_parser("availability", help="pools of a zone with room")
    availability.add_argument("zone")
    availability.add_argument("--from", dest="slot_from")
    availability.add_argument("--to", dest="slot_to")
    availability.add_argument("--quantity", type=int, default=1)
    availability.set_defaults(run=_availability)

    events = commands.add_parser(
        "events", parents=[data_dir], help="dump a pool's events from the journal (JSON lines)"
    )
    events.add_argument("pool_id", help="a pool's id, or a stream's: order~ORDER_ID, schedule~SCHEDULE_ID")
    events.set_defaults(run=_events)

    console = commands.add_parser(
        "console", help="the operator's console of the running service: print its address (--open: in a browser)"
    )
    console.add_argument("--open", action="store_true", help="open it in this machine's web browser")
    console.set_defaults(run=_console)

    demo = commands.add_parser("demo", parents=[data_dir], help="the Python API without Ray: a pool surviving restarts")
    demo.set_defaults(run=_demo)
    _add_admin_commands(commands)
    _add_webhook_commands(commands)
    _add_schedule_commands(commands)


WEBHOOK_EVENTS = (
    "pool.sold_out",
    "pool.back_on_sale",
    "hold.expired",
    "waitlist.offered",
    "order.confirmed",
    "order.cancelled",
)


def _add_webhook_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Webhooks, over HTTP (an admin key in $CAPACITY_API_KEY when keys are configured)."""
    webhook = commands.add_parser(
        "webhook", help="register, list, show and delete webhooks (signed POSTs of the service's events)"
    ).add_subparsers(dest="op", required=True)
    put = webhook.add_parser("put", help="register a webhook or change one")
    put.add_argument("webhook_id")
    put.add_argument("--url", required=True, help="http(s) URL the events are POSTed to")
    put.add_argument(
        "--event", dest="events", action="append", required=True, choices=WEBHOOK_EVENTS, help="repeat for several"
    )
    put.add_argument(
        "--secret",
        default=os.environ.get("CAPACITY_WEBHOOK_SECRET"),
        help="signs every delivery (16+ characters; default: $CAPACITY_WEBHOOK_SECRET, which keeps it out of "
        "the shell's history and the process list)",
    )
    put.set_defaults(run=_put_webhook)
    listing = webhook.add_parser("list", help="every webhook (never their secrets)")
    listing.set_defaults(run=lambda a: _show(_http(a, "GET", "/v1/webhooks")))
    get = webhook.add_parser("get", help="a webhook and how its delivery stands (lag, attempts, last error)")
    get.add_argument("webhook_id")
    get.set_defaults(run=lambda a: _show(_http(a, "GET", f"/v1/webhooks/{a.webhook_id}")))
    delete = webhook.add_parser("delete", help="stop delivering to a webhook and forget it")
    delete.add_argument("webhook_id")
    delete.set_defaults(run=lambda a: _show(_http(a, "DELETE", f"/v1/webhooks/{a.webhook_id}")))


def _add_schedule_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Schedules, over HTTP (an admin key in $CAPACITY_API_KEY when keys are configured)."""
    schedule = commands.add_parser(
        "schedule", help="create or update the pools of a template (zones x daily slots x days), and show how it went"
    ).add_subparsers(dest="op", required=True)
    apply = schedule.add_parser(
        "apply",
        help="put FILE's template (YAML or JSON, the body of PUT /v1/schedules/ID) and follow its apply to the end",
    )
    apply.add_argument("file", type=Path)
    apply.add_argument("--id", dest="schedule_id", help="the schedule's id (default: FILE's name without its suffix)")
    apply.add_argument("--no-wait", action="store_true", help="put it and print the schedule; do not follow it")
    apply.add_argument("--json", action="store_true", help="end with the schedule as JSON instead of the summary")
    apply.set_defaults(run=_apply_schedule)
    show = schedule.add_parser("show", help="a schedule and how its latest apply stands")
    show.add_argument("schedule_id")
    show.set_defaults(run=lambda a: _show(_http(a, "GET", f"/v1/schedules/{a.schedule_id}")))


# How often `schedule apply` asks how its apply goes.
SCHEDULE_POLL_S = 0.2


def _apply_schedule(a: argparse.Namespace) -> int:
    """Exit code 0 when every pool of the template is as it says, 1 when some were refused (or a newer put
    replaced this one), 2 when FILE is not a template."""
    schedule_id = a.schedule_id or a.file.stem
    try:
        template = _schedule_file(a.file)
    except (OSError, ValueError) as exc:
        print(f"schedule apply: {a.file}: {exc}", file=sys.stderr)
        return 2
    started = _http(a, "PUT", f"/v1/schedules/{schedule_id}", template)
    if a.no_wait:
        return _show(started)
    progress = _Progress(schedule_id, sys.stderr)
    schedule = started
    try:
        while schedule["status"] == "applying" and schedule["generation"] == started["generation"]:
            progress.show(schedule)
            time.sleep(SCHEDULE_POLL_S)
            schedule = _http(a, "GET", f"/v1/schedules/{schedule_id}")
    except KeyboardInterrupt:
        progress.done()
        print(f"stopped following; the apply goes on: capacity-service schedule show {schedule_id}", file=sys.stderr)
        return 130
    progress.done()
    if schedule["generation"] != started["generation"]:
        print(
            f"schedule {schedule_id}: a newer put (generation {schedule['generation']}) replaced this one",
            file=sys.stderr,
        )
        return 1
    if a.json:
        _show(schedule)
    else:
        print(_summary(schedule))
    return 1 if schedule["refused"] else 0


def _schedule_file(path: Path) -> dict[str, Any]:
    """The template in ``path`` (YAML or JSON), as the JSON body of its PUT. YAML 1.1 reads 10:00 as the
    number 600 (base 60); here it stays the string "10:00", as it is meant."""
    import re

    import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the venv

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    int_tag = "tag:yaml.org,2002:int"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != int_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(int_tag, re.compile(r"^[-+]?(0|[1-9][0-9_]*)$"), list("-+0123456789"))
    try:
        loaded = yaml.load(path.read_text(), Loader=Loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ValueError("a template is a mapping (zones, slot_starts, slot_minutes, from, to, ...)")
    body: dict[str, Any] = json.loads(json.dumps(loaded, default=str))  # dates as "YYYY-MM-DD"
    return body


class _Progress:
    """A schedule's apply as it goes: a bar redrawn in place on a terminal, else a line each time it moved
    (at most one a second), for logs."""

    def __init__(self, schedule_id: str, out: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._schedule_id, self._out, self._clock = schedule_id, out, clock
        self._tty = out.isatty()
        self._shown: tuple[int, str | None] | None = None
        self._shown_at = 0.0

    def show(self, schedule: dict[str, Any]) -> None:
        done, total, waiting = schedule["done"], schedule["total"], schedule.get("last_error")
        counts = ", ".join(f"{schedule[k]:,} {k}" for k in ("created", "updated", "unchanged", "refused"))
        if self._tty:
            filled = 30 * done // max(1, total)
            bar = "#" * filled + "." * (30 - filled)
            line = f"schedule {self._schedule_id}: [{bar}] {done:,}/{total:,} pools ({counts})"
            if waiting:
                line += f"  waiting: {waiting}"
            width = self._width() - 1  # a line as wide as the terminal would wrap, and \r not reach its start
            self._out.write("\r" + line[:width].ljust(width))
            self._out.flush()
        elif (done, waiting) != self._shown and self._clock() - self._shown_at >= 1.0:
            line = f"schedule {self._schedule_id}: {done}/{total} pools ({counts})"
            print(line + (f"; waiting: {waiting}" if waiting else ""), file=self._out, flush=True)
            self._shown, self._shown_at = (done, waiting), self._clock()

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self._out.fileno()).columns
        except (OSError, ValueError, AttributeError):  # not a real terminal's file (a test's stand-in)
            return 120
        return columns if columns >= 40 else 120  # a terminal that does not say its size says 0

    def done(self) -> None:
        if self._tty:
            self._out.write("\n")
            self._out.flush()


def _summary(schedule: dict[str, Any]) -> str:
    """What an apply did, for a person: the counts, every pool refused with why, the pools left out."""
    took = ""
    if schedule.get("finished_at"):
        accepted = datetime.fromisoformat(schedule["accepted_at"].replace("Z", "+00:00"))
        finished = datetime.fromisoformat(schedule["finished_at"].replace("Z", "+00:00"))
        took = f" in {(finished - accepted).total_seconds():.1f} s"
    counts = ", ".join(f"{schedule[k]:,} {k}" for k in ("created", "updated", "unchanged", "refused"))
    if schedule.get("retired"):
        counts += f", {schedule['retired']:,} retired (left as they are)"
    lines = [
        f"schedule {schedule['schedule_id']} {schedule['status']} (generation {schedule['generation']}){took}: "
        f"{schedule['total']:,} pools: {counts}"
    ]
    for refusal in schedule["refusals"]:
        lines.append(f"  refused {refusal['pool_id']}: {refusal['code']}: {refusal['message']}")
    if schedule["refused"] > len(schedule["refusals"]):
        lines.append(f"  ... and {schedule['refused'] - len(schedule['refusals']):,} more refused")
    if schedule["left_out"]:
        sample = ", ".join(schedule["left_out_sample"][:5])
        lines.append(
            f"  {schedule['left_out']:,} pools of the template before are not in this one; they were left as they"
            f" are (e.g. {sample}): retire those you no longer sell (capacity-service pools retire ID)"
        )
    return "\n".join(lines)


def _put_webhook(a: argparse.Namespace) -> int:
    if not a.secret:
        print("webhook put: give --secret, or set CAPACITY_WEBHOOK_SECRET", file=sys.stderr)
        return 2
    body = {"url": a.url, "events": a.events, "secret": a.secret}
    return _show(_http(a, "PUT", f"/v1/webhooks/{a.webhook_id}", body))


def _add_waitlist_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    waitlist = commands.add_parser("waitlist", help="wait for a full pool's units: join, show, leave")
    waitlist_ops = waitlist.add_subparsers(dest="op", required=True)
    join = waitlist_ops.add_parser("join", help="wait for units; they are held for you when they come free")
    join.add_argument("pool_id")
    join.add_argument("--quantity", type=int, default=1)
    join.add_argument("--request-id", required=True, help="repeating it joins once")
    join.add_argument("--hold-seconds", type=int, help="how long the units are held once offered (default 600)")
    join.set_defaults(run=_join_waitlist)
    for op, method, text in (
        ("get", "GET", "show an entry: waiting (its place), offered (the hold to confirm) or left"),
        ("leave", "DELETE", "stop waiting"),
    ):
        sub = waitlist_ops.add_parser(op, help=text)
        sub.add_argument("pool_id")
        sub.add_argument("entry_id")
        sub.set_defaults(run=lambda a, m=method: _show(_http(a, m, f"/v1/pools/{a.pool_id}/waitlist/{a.entry_id}")))


def _add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The operator's tools, over HTTP (an admin key in $CAPACITY_API_KEY when keys are configured)."""
    admin = commands.add_parser("admin", help="operate the service: pause, resume, reset, list, check").add_subparsers(
        dest="op", required=True
    )
    pause = admin.add_parser("pause", help="stop a pool's writes (503 paused) until resumed; reads go on")
    pause.add_argument("pool_id")
    pause.add_argument("--reason", required=True)
    pause.set_defaults(
        run=lambda a: _show(_http(a, "POST", f"/v1/admin/pools/{a.pool_id}/pause", {"reason": a.reason}))
    )
    resume = admin.add_parser("resume", help="take a paused pool's writes again")
    resume.add_argument("pool_id")
    resume.set_defaults(run=lambda a: _show(_http(a, "POST", f"/v1/admin/pools/{a.pool_id}/resume")))
    pause_all = admin.add_parser("pause-all", help="the kill switch: pause every live pool")
    pause_all.add_argument("--reason", required=True)
    pause_all.set_defaults(run=lambda a: _show(_http(a, "POST", "/v1/admin/pause", {"reason": a.reason})))
    resume_all = admin.add_parser("resume-all", help="resume every live pool")
    resume_all.set_defaults(run=lambda a: _show(_http(a, "POST", "/v1/admin/resume")))
    listing = admin.add_parser("reservations", help="a pool's reservations, of one status if given")
    listing.add_argument("pool_id")
    listing.add_argument("--status", choices=("held", "active", "released", "expired"))
    listing.add_argument("--limit", type=int, default=1_000)
    listing.set_defaults(run=_list_reservations)
    reset = admin.add_parser("reset", help="set a pool back to its state after an earlier event (history stays)")
    reset.add_argument("pool_id")
    reset.add_argument("--to-seq-nr", type=int, required=True)
    reset.set_defaults(
        run=lambda a: _show(_http(a, "POST", f"/v1/admin/pools/{a.pool_id}/reset", {"to_seq_nr": a.to_seq_nr}))
    )
    check = admin.add_parser("check", help="replay a pool from its journal and compare with its live state")
    check.add_argument("pool_id")
    check.set_defaults(run=_check_pool)


class ServiceError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.body = {"status": status, **(body if isinstance(body, dict) else {"body": body})}


def _http(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps({k: v for k, v in body.items() if v is not None}).encode()
    request = urllib.request.Request(
        args.url + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    if key := os.environ.get("CAPACITY_API_KEY"):
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ServiceError(exc.code, json.loads(exc.read() or b"null")) from exc


def _show(value: Any) -> int:
    print(json.dumps(value, indent=2, default=str))
    return 0


def _put_pool(a: argparse.Namespace) -> int:
    body = {"capacity": a.capacity, "zone": a.zone, "slot_start": a.slot_start, "slot_end": a.slot_end}
    if a.max_hold_seconds is not None:
        body["max_hold_seconds"] = a.max_hold_seconds
    if a.waitlist_limit is not None:
        body["waitlist_limit"] = a.waitlist_limit
    return _show(_http(a, "PUT", f"/v1/pools/{a.pool_id}", body))


def _join_waitlist(a: argparse.Namespace) -> int:
    body = {"quantity": a.quantity, "request_id": a.request_id}
    if a.hold_seconds is not None:
        body["hold_seconds"] = a.hold_seconds
    return _show(_http(a, "POST", f"/v1/pools/{a.pool_id}/waitlist", body))


def _reserve(a: argparse.Namespace) -> int:
    choosing = a.slot_from is not None or a.slot_to is not None or a.prefer is not None
    if (a.pool_id is None) == (a.choose_zone is None) or (choosing and a.choose_zone is None):
        print("reserve: give a pool id, or --choose-zone (with --from, --to, --prefer if wanted)", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"request_id": a.request_id, "hold_seconds": a.hold_seconds}
    if a.choose_zone is None:
        body |= {"pool_id": a.pool_id, "quantity": a.quantity}
    else:
        choice = {
            "zone": a.choose_zone,
            "from": a.slot_from,
            "to": a.slot_to,
            "quantity": a.quantity,
            "prefer": a.prefer,
        }
        body["choose"] = {k: v for k, v in choice.items() if v is not None}
    return _show(_http(a, "POST", "/v1/reservations", body))


def _order_line(text: str) -> dict[str, Any]:
    """``POOL:QUANTITY``; a pool id may hold colons itself, so the quantity is after the last one."""
    pool_id, colon, quantity = text.rpartition(":")
    if not colon or not pool_id or not quantity.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give POOL:QUANTITY, e.g. north:2026-12-01T08:2")
    return {"pool_id": pool_id, "quantity": int(quantity)}


def _place_order(a: argparse.Namespace) -> int:
    body = {"order_id": a.order_id, "lines": a.lines, "hold_seconds": a.hold_seconds}
    return _show(_http(a, "POST", "/v1/orders", body))


def _watch(a: argparse.Namespace) -> int:
    """The availability stream, one JSON line per change; reconnects with the last event id it saw."""
    last_event_id: str | None = None
    while True:
        query = urllib.parse.urlencode({"zone": a.zone})
        request = urllib.request.Request(f"{a.url}/v1/availability/stream?{query}")
        if key := os.environ.get("CAPACITY_API_KEY"):
            request.add_header("authorization", f"Bearer {key}")
        if last_event_id is not None:
            request.add_header("last-event-id", last_event_id)
        try:
            with urllib.request.urlopen(request, timeout=60) as stream:
                for raw in stream:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("id: "):
                        last_event_id = line[4:]
                    elif line.startswith("data: "):
                        print(line[6:], flush=True)
        except urllib.error.HTTPError as exc:
            raise ServiceError(exc.code, json.loads(exc.read() or b"null")) from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            time.sleep(1)  # the stream ended or broke: come back where it left off


def _availability(a: argparse.Namespace) -> int:
    body = {"zone": a.zone, "slot_from": a.slot_from, "slot_to": a.slot_to, "quantity": a.quantity}
    return _show(_http(a, "POST", "/v1/availability", body))


def _journal_settings(a: argparse.Namespace) -> Any:
    if os.environ.get("CAPACITY_JOURNAL") or os.environ.get("CAPACITY_JOURNAL_URL"):
        return journal_settings_from_env()
    return SqlJournalSettings(url=f"sqlite:///{a.data_dir / 'capacity.db'}")


def _list_pools(a: argparse.Namespace) -> int:
    from capacity_service.runtime import bootstrap

    with bootstrap.journal(_journal_settings(a)) as journal:
        pool_ids = [stream_id for stream_id in journal.pool_ids() if is_pool_stream(stream_id)]
    pools = [_http(a, "GET", f"/v1/pools/{pool_id}") for pool_id in pool_ids]
    return _show([pool for pool in pools if a.state in ("all", pool["state"])])


def _list_reservations(a: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({k: v for k, v in {"status": a.status, "limit": a.limit}.items() if v is not None})
    return _show(_http(a, "GET", f"/v1/admin/pools/{a.pool_id}/reservations?{query}"))


def _check_pool(a: argparse.Namespace) -> int:
    """Exit code 1 when the replayed state differs from the live one."""
    report = _http(a, "POST", f"/v1/admin/pools/{a.pool_id}/check")
    _show(report)
    return 0 if report["matches"] else 1


def _events(a: argparse.Namespace) -> int:
    from capacity_service.adapters.codec import Codec, OrderCodec, ScheduleCodec
    from capacity_service.runtime import bootstrap

    codec: Codec | OrderCodec | ScheduleCodec = (
        OrderCodec() if is_order_stream(a.pool_id) else ScheduleCodec() if is_schedule_stream(a.pool_id) else Codec()
    )
    with bootstrap.journal(_journal_settings(a)) as journal:
        for stored in journal.read(a.pool_id):
            event = codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
            line = {
                "seq_nr": stored.seq_nr,
                "type": stored.event_type,
                "version": stored.schema_version,
                "writer_epoch": stored.writer_epoch,
                "recorded_at": stored.recorded_at,
                **asdict(event),
            }
            print(json.dumps(line, default=str))
    return 0


def _console(a: argparse.Namespace) -> int:
    """The console's address, once the service answers there; whether the page will ask for an admin key."""
    import webbrowser

    url = f"{a.url}/console/"
    with urllib.request.urlopen(url, timeout=30):
        pass  # the service serves it (an error says why not)
    print(url)
    try:
        _http(a, "GET", "/v1/admin/zones?limit=1")
    except ServiceError as exc:
        if exc.body["status"] in (401, 403):
            print("the service has API keys: the page asks for an admin key (one of CAPACITY_ADMIN_KEYS)")
    if a.open and not webbrowser.open(url):
        print("no web browser found here: open the address above in one", file=sys.stderr)
        return 1
    return 0


def _demo(a: argparse.Namespace) -> int:
    from capacity_service.entrypoints.demo import run_demo

    run_demo(SqlJournalSettings(url=f"sqlite:///{a.data_dir / 'capacity.db'}"))
    return 0


def _start_refused(a: argparse.Namespace) -> int | None:
    """The exit code when ``start`` must not go on (settings that contradict, an open door, a taken port)."""
    if a.replicas > 1 and not a.fast_ingress:
        print("--replicas above 1 needs --fast-ingress (HAProxy spreads the requests over them)", file=sys.stderr)
        return 2
    from capacity_service.entrypoints.http.auth import NO_KEYS_BEYOND_LOOPBACK, is_remote

    keys = service_settings().http
    if is_remote(a.host) and not (a.allow_remote_without_keys or keys.api_keys or keys.admin_keys):
        print(f"refusing to listen on {a.host}: {NO_KEYS_BEYOND_LOOPBACK}", file=sys.stderr)
        return 2
    try:
        _bind_check(a.host, a.port, wait_s=5.0)  # a run just stopped may still be letting go of it
    except OSError as exc:
        print(f"cannot listen on {a.host}:{a.port}: {exc.strerror}", file=sys.stderr)
        return 1
    from capacity_service.adapters.journal import JournalUnusable
    from capacity_service.adapters.journal.preflight import check_journal

    try:
        check_journal(service_settings(_service_args(a)).journal)
    except JournalUnusable as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    return None


def _start(a: argparse.Namespace) -> int:
    refused = _start_refused(a)
    if refused is not None:
        return refused
    metrics_port = _bind_check("127.0.0.1", a.metrics_port) if a.metrics else None
    environment.apply(*environment.start_environment(a.port, a.fast_ingress, metrics_port is not None))
    proxy_port = 0 if not a.fast_ingress else a.port
    if a.fast_ingress:
        print("fast ingress: HAProxy's stats and metrics ports (8404, 9101) listen on all interfaces", flush=True)
    auth_mode = _local_auth_mode()
    import ray
    from ray import serve

    from capacity_service.entrypoints.http.deployment import application
    from capacity_service.runtime.service import SettingsMismatch

    args = _service_args(a)
    # A Ray of its own ("local"), even when another runs on this machine: Ctrl-C stops all of it.
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        namespace=DEFAULT_NAMESPACE,
        _metrics_export_port=metrics_port,
    )
    stop = _stop_on_signal()
    try:
        serve.start(http_options={"host": a.host, "port": proxy_port})
        try:
            app = application(args, replicas=a.replicas)
        except SettingsMismatch as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            # One log line per request costs a large share of a 2-core machine: access logs are off.
            serve.run(app, name="capacity", route_prefix="/", logging_config=SERVE_LOGGING)
        except RuntimeError as exc:
            return _did_not_come_up(exc, None if a.fast_ingress else (a.host, a.port))
        _say_where_it_listens(a, str(args.get("journal", "from environment")), metrics_port, auth_mode)
        while not stop.wait(0.2):  # short waits: the signal handler runs between them
            pass
    finally:
        print("stopping...", flush=True)
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        with contextlib.suppress(OSError):  # Ray's worker processes exit a moment later: wait for the port
            _bind_check(a.host, a.port, wait_s=15.0)
    return 0


def _say_where_it_listens(a: argparse.Namespace, journal: str, metrics_port: int | None, auth_mode: str) -> None:
    from capacity_service.runtime import _ray

    url = f"http://{a.host}:{a.port}"
    print(f"capacity_service is listening on {url} (journal: {journal})")
    print(f"  try: curl -s {url}/readyz    docs: {url}/docs    Ctrl-C stops it")
    if metrics_port is not None:
        print(f"  metrics (Prometheus, the service's named ray_capacity_*): http://127.0.0.1:{metrics_port}/metrics")
    print(
        f"  python, with RAY_AUTH_MODE={auth_mode} in its environment: "
        f"ray.init(address={_ray.gcs_address()!r}); CapacityClient()",
        flush=True,
    )


def _local_auth_mode() -> str:
    """The auth mode of the local Ray that ``start`` starts: Ray 2.59+ turns token auth on when
    ``~/.ray/auth_token`` exists, but a process joining the cluster must be told (``RAY_AUTH_MODE=token``)."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return os.environ.get("RAY_AUTH_MODE") or ("token" if token.exists() else "disabled")


def _did_not_come_up(exc: RuntimeError, replica_address: tuple[str, int] | None = None) -> int:
    """Says why Serve could not deploy the app, in the terms of the command line; the exit code.

    ``replica_address``: where the replica itself was to listen (direct ingress), checked for another holder.
    """
    # Serve's own message names only the deployment; the usual cause at a terminal is the port.
    cause = ""
    if replica_address is not None:
        host, port = replica_address
        try:
            _bind_check(host, port)
        except OSError:
            cause = f"\n  port {port} is held by another process (Ray's own, if it is in the kernel's ephemeral range)"
    print(f"the service did not come up: {exc}{cause}", file=sys.stderr)
    print("  Ray Serve's logs say more: /tmp/ray/session_latest/logs/serve/", file=sys.stderr)
    return 1


def _bind_check(host: str, port: int, wait_s: float = 0.0) -> int:
    """Raises ``OSError`` unless ``host:port`` can be listened on within ``wait_s`` (port 0: a free one);
    returns the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
                return int(probe.getsockname()[1])
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _service_args(a: argparse.Namespace, hosting: dict[str, Any] | None = None) -> dict[str, Any]:
    """The app's settings for a run on this machine: journal and warehouse in --data-dir, unless the
    environment names them."""
    args: dict[str, Any] = {"journal": {"kind": "sql", "url": f"sqlite:///{a.data_dir.resolve() / 'capacity.db'}"}}
    if os.environ.get("CAPACITY_JOURNAL") or os.environ.get("CAPACITY_JOURNAL_URL"):
        args = {}  # service_settings() takes the journal from the environment
    hosting = dict(hosting or {})
    if a.actor_per_pool:
        hosting["mode"] = "actor_per_pool"
    if a.shards:
        hosting.update({"mode": "sharded", "shards": a.shards})
    if hosting:
        args["hosting"] = hosting
    if getattr(a, "allow_remote_without_keys", False):
        args["http"] = {"allow_remote_without_keys": True}
    if getattr(a, "allow_private_webhook_targets", False):
        args["webhooks"] = {"allow_private_targets": True}
    if a.no_warehouse:
        args["warehouse"] = {"enabled": False}
    elif not os.environ.get("CAPACITY_WAREHOUSE_URL"):
        args["warehouse"] = {"sink": {"kind": "parquet", "path": str(a.data_dir.resolve() / "warehouse")}}
    return args


def _stop(a: argparse.Namespace) -> int:
    from ray import serve

    from capacity_service.runtime import _ray, service

    _ray.ensure_initialized(a.address)
    with contextlib.suppress(Exception):  # no Serve running, or no such app: the actors still go
        serve.delete(a.app)
    stopped = service.stop(a.namespace)
    print(f"stopped the Serve app {a.app!r} and {len(stopped)} actors of namespace {a.namespace!r}")
    return 0


def _stop_on_signal() -> threading.Event:
    """Set by Ctrl-C or SIGTERM (the main thread then stops what it started, in order)."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _cluster(a: argparse.Namespace) -> int:
    # Every node on 127.0.0.1 only (see runtime/local.py); must be set before Ray is imported.
    environment.apply(environment.LOCAL_RAY)
    from ray import serve

    from capacity_service.entrypoints.http.deployment import build_app  # the deploy step of cluster.yaml
    from capacity_service.runtime.local import POOL_RESOURCES, local_cluster, raylet_pid

    args = _service_args(a, {"actor_resources": POOL_RESOURCES})  # pools on worker nodes only, not the head
    stop = _stop_on_signal()
    with local_cluster(workers=a.workers) as cluster:
        try:
            # One HTTP proxy, on the head: the nodes share this machine's ports.
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": a.port})
            try:
                serve.run(build_app(args), name="capacity", route_prefix="/", logging_config=SERVE_LOGGING)
            except RuntimeError as exc:
                return _did_not_come_up(exc)  # the port is the proxy's, bound by now
            print(f"capacity_service is listening on http://127.0.0.1:{a.port} (Ctrl-C stops it)")
            print(f"  head     {cluster.head.node_id[:12]}  raylet pid {raylet_pid(cluster.head)}  (no pools)")
            for node in cluster.workers:
                print(f"  worker   {node.node_id[:12]}  raylet pid {raylet_pid(node)}")
            print("  try a failure: kill -9 (or kill -STOP) a worker's raylet pid, and keep reserving", flush=True)
            while not stop.wait(0.2):
                pass
        finally:
            print("stopping...", flush=True)
            serve.shutdown()  # type: ignore[no-untyped-call]
    return 0
