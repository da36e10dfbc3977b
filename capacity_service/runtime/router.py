"""Routes a pool id to the actor hosting it, creating the actor on demand and finding it again after
it died. A release is routed by the pool id inside the reservation id: no roster, no broadcast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import Journal, JournalError
from capacity_service.application import tracing
from capacity_service.application.hosting import HostFenced, HostFencedAfterWriting
from capacity_service.application.order_writer import OrderOutcome
from capacity_service.application.pool_history import JournalHistory, PoolGlance, read_history
from capacity_service.application.pool_host import AddressedCommand
from capacity_service.application.pool_writer import CommandOutcome, answer_of_absent_pool, view_of_absent_pool
from capacity_service.application.schedule_writer import ScheduleOutcome
from capacity_service.domain import ConfigurePool, PoolCommand, PoolView, Reservation, ReservationStatus, WaitlistPlace
from capacity_service.domain.ids import order_of_stream, order_stream_id, schedule_of_stream, schedule_stream_id
from capacity_service.domain.order import (
    OrderCommand,
    OrderState,
    OrderView,
    PlaceOrder,
    UnknownOrder,
    view_of_order,
)
from capacity_service.domain.schedule import (
    ApplySchedule,
    ScheduleCommand,
    ScheduleState,
    ScheduleView,
    UnknownSchedule,
    view_of_schedule,
)
from capacity_service.errors import CapacityError, OutcomeUnknown, Overloaded, PoolNotFound, Unavailable
from capacity_service.runtime._ray import ActorCalls, ActorGone, Handle
from capacity_service.runtime.actor_api import SAME_NODE_METHODS, Call, PoolApi, call
from capacity_service.runtime.channel import ChannelClient, ChannelGone
from capacity_service.runtime.names import pool_actor_name, shard_name, shard_of
from capacity_service.runtime.pool_actor import PoolActor
from capacity_service.settings import CassandraJournalSettings, ServiceSettings

log = logging.getLogger(__name__)
R = TypeVar("R")

# A call slower than _SLOW_CALL_S (a pool recovering, a big snapshot being encoded) stops counting as in
# flight, so that it does not hold back the commands for the actor's other pools.
_SLOW_CALL_S = 0.05
# Slow calls beyond the batches in flight: while an actor is down every call is slow (it retries until the
# call timeout), and this bounds how many retry at once.
_MAX_SLOW_CALLS_PER_ACTOR = 3
_MAX_COMMANDS_PER_CALL = 512
_MAX_PARALLEL_PULLS = 16
_EXECUTE_MANY = PoolApi.execute_many.__name__
_CHANNEL_CONNECT_TIMEOUT_S = 1.0
# After a failed connect (the actor restarting meanwhile, a busy moment), calls go through Ray, and the
# channel is tried again after this long.
_CHANNEL_RETRY_S = 10.0
# How much longer than its sender a caller waits for a command's answer before answering by itself.
_BACKSTOP_S = 1.0


def _answer_by(settings: ServiceSettings, commands: list[AddressedCommand]) -> float:
    """The monotonic time until which a batch's answer is waited for: its latest deadline (wall clock)
    and the grace for an append under way."""
    latest = max(deadline for _, _, deadline, _ in commands if deadline is not None)
    return time.monotonic() + (latest - time.time()) + settings.hosting.answer_grace_s


def _absent_order(stream_id: str, command: Any) -> OrderOutcome:
    order_id = order_of_stream(stream_id)
    return OrderOutcome(UnknownOrder(order_id), view_of_order(OrderState(order_id), 0))


def _absent_schedule(stream_id: str, command: Any) -> ScheduleOutcome:
    schedule_id = schedule_of_stream(stream_id)
    return ScheduleOutcome(UnknownSchedule(schedule_id), view_of_schedule(ScheduleState(schedule_id), 0))


def actor_name(settings: ServiceSettings, pool_id: str) -> str:
    hosting = settings.hosting
    if hosting.mode == "sharded":
        return shard_name(shard_of(pool_id, _shard_count(settings)))
    return pool_actor_name(pool_id)


def shard_names(settings: ServiceSettings) -> list[str]:
    """The names of every shard actor (none in ``actor_per_pool`` hosting)."""
    if settings.hosting.mode != "sharded":
        return []
    return [shard_name(k) for k in range(_shard_count(settings))]


def batches_in_flight(settings: ServiceSettings) -> int:
    """Calls to one actor under way at once. On a SQL journal one: what waits meanwhile goes in the next
    call, so batches grow with the load and the pool writes them in one transaction. On Cassandra, where
    each pool's append is its own Paxos round, several: a command then does not wait for the round of
    another pool's batch before it is even sent."""
    explicit = settings.hosting.batches_in_flight_per_actor
    if explicit is not None:
        return explicit
    return 8 if isinstance(settings.journal, CassandraJournalSettings) else 1


def _shard_count(settings: ServiceSettings) -> int:
    shards = settings.hosting.shards
    if shards is None:
        raise ValueError("the shard count is counted when the service is deployed (runtime/service.py)")
    return shards


@dataclass
class _Outbox:
    """Commands waiting to be sent to one actor, and how many batches to it are in flight."""

    waiting: list[tuple[str, PoolCommand, float, str | None, asyncio.Future[Any]]] = field(default_factory=list)
    in_flight: int = 0  # senders holding the slot
    calls: int = 0  # calls not answered yet, slow ones included


class PoolRouter:
    """Commands to one actor are batched on the way: while a call to it is under way, new commands wait
    and go together in the next call. One call then carries many commands, which is what lets a hot pool
    take thousands of reserves a second on two cores (the pool's own group commit then writes them in one
    append). The call goes over the actor's same-node channel when it runs on this node (``channel.py``),
    else through Ray; every other method always goes through Ray."""

    def __init__(
        self,
        settings: ServiceSettings,
        pool_exists: Callable[[str], bool] | None = None,
        calls: ActorCalls | None = None,
        journals: Callable[[], Journal] | None = None,
    ) -> None:
        self._settings = settings
        self._journals = journals
        self._ray = calls or ActorCalls()
        self._pool_exists = pool_exists or self._pool_has_events
        self._journal: Journal | None = None
        self._handles: dict[str, Handle] = {}
        # Per actor: its same-node channel, or None when calls to it go through Ray (another node, off).
        self._channels: dict[str, ChannelClient | None] = {}
        self._channels_opening: dict[str, asyncio.Future[ChannelClient | None]] = {}
        self._channel_retry_at: dict[str, float] = {}
        self._node_id: str | None = None
        self._outboxes: dict[str, _Outbox] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self._commands_in_flight = 0
        self._batches_in_flight = batches_in_flight(settings)
        self._replays = asyncio.Semaphore(1)  # pools' histories replayed up to a past moment (``history``)

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        """Send ``command`` to its pool, to be decided before ``deadline`` (wall clock; default: the call
        timeout from now), and wait for the answer until ``answer_grace_s`` after it. No answer by then:
        ``Unavailable`` if the command never left this process, else ``OutcomeUnknown`` (the pool may have
        decided it just in time); the pool refuses to decide it any later, so a 503 took nothing."""
        absent = answer_of_absent_pool
        answer: CommandOutcome | CapacityError = await self._send_command(
            pool_id, command, deadline, isinstance(command, ConfigurePool), absent
        )
        return answer

    async def execute_order(
        self, order_id: str, command: OrderCommand, deadline: float | None = None
    ) -> OrderOutcome | CapacityError:
        """``execute`` for an order: to the shard actor that hosts the order's stream, batched with the
        pools' commands to it. Orders need sharded hosting (an actor per order would be a process each)."""
        if self._settings.hosting.mode != "sharded":
            return Unavailable("orders need sharded hosting (hosting.mode: sharded, the default)")
        answer: OrderOutcome | CapacityError = await self._send_command(
            order_stream_id(order_id), command, deadline, isinstance(command, PlaceOrder), _absent_order
        )
        return answer

    async def order_view(self, order_id: str) -> OrderView | CapacityError:
        if self._settings.hosting.mode != "sharded":
            return Unavailable("orders need sharded hosting (hosting.mode: sharded, the default)")
        stream_id = order_stream_id(order_id)
        return await self._ask_pool(
            stream_id, call(PoolApi.order_view, order_id), lambda _: view_of_order(OrderState(order_id), 0)
        )

    async def execute_schedule(
        self, schedule_id: str, command: ScheduleCommand, deadline: float | None = None
    ) -> ScheduleOutcome | CapacityError:
        """``execute`` for a schedule: to the shard actor that hosts its stream (as an order's)."""
        if self._settings.hosting.mode != "sharded":
            return Unavailable("schedules need sharded hosting (hosting.mode: sharded, the default)")
        answer: ScheduleOutcome | CapacityError = await self._send_command(
            schedule_stream_id(schedule_id),
            command,
            deadline,
            isinstance(command, ApplySchedule),
            _absent_schedule,
        )
        return answer

    async def schedule_view(self, schedule_id: str) -> ScheduleView | CapacityError:
        if self._settings.hosting.mode != "sharded":
            return Unavailable("schedules need sharded hosting (hosting.mode: sharded, the default)")
        return await self._ask_pool(
            schedule_stream_id(schedule_id),
            call(PoolApi.schedule_view, schedule_id),
            lambda _: view_of_schedule(ScheduleState(schedule_id), 0),
        )

    async def _send_command(
        self, pool_id: str, command: Any, deadline: float | None, creates: bool, absent: Callable[[str, Any], Any]
    ) -> Any:
        hosting = self._settings.hosting
        if self._commands_in_flight >= hosting.max_commands_in_flight:
            return Overloaded(f"{self._commands_in_flight} commands are waiting for pools; nothing was taken")
        if deadline is None:
            deadline = time.time() + hosting.call_timeout_s
        self._commands_in_flight += 1
        try:
            name = actor_name(self._settings, pool_id)
            if not creates and not await self._hosted_or_exists(name, pool_id):
                return absent(pool_id, command)
            outbox = self._outboxes.setdefault(name, _Outbox())
            reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            entry = (pool_id, command, deadline, tracing.current.get(), reply)
            outbox.waiting.append(entry)
            self._start_sender(name, outbox)
            # The sender answers first (it knows whether the batch went out); this is the backstop.
            wait = deadline + hosting.answer_grace_s + _BACKSTOP_S - time.time()
            try:
                async with asyncio.timeout(max(0.0, wait)):  # one timer: no task, no shield per command
                    result = await reply
            except TimeoutError:
                if entry in outbox.waiting:
                    outbox.waiting.remove(entry)
                    return Unavailable(f"{name} could not be reached before the deadline; nothing was taken")
                return OutcomeUnknown(f"{name} did not answer in time; repeat with the same request_id")
            except CapacityError:
                raise
            except Exception as exc:  # the batch went out and its call failed oddly: it may have been decided
                log.warning("%s: a call failed unexpectedly: %r", name, exc)
                return OutcomeUnknown(
                    f"{name}: the call failed ({type(exc).__name__}); repeat with the same request_id"
                )
            return result
        finally:
            self._commands_in_flight -= 1

    def _start_sender(self, name: str, outbox: _Outbox) -> None:
        batches = self._batches_in_flight
        if outbox.waiting and outbox.in_flight < batches and outbox.calls < batches + _MAX_SLOW_CALLS_PER_ACTOR:
            outbox.in_flight += 1
            task = asyncio.ensure_future(self._send(name, outbox))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, name: str, outbox: _Outbox) -> None:
        in_flight = True
        try:
            while outbox.waiting and in_flight:
                batch = outbox.waiting[:_MAX_COMMANDS_PER_CALL]
                del outbox.waiting[: len(batch)]
                commands: list[AddressedCommand] = [(p, c, d, t) for p, c, d, t, _ in batch]
                outbox.calls += 1
                try:
                    pending, channel_deadline = self._start_call(name, commands, _answer_by(self._settings, commands))
                    done, _ = await asyncio.wait({pending}, timeout=_SLOW_CALL_S)
                    if done and channel_deadline is not None and not self._answered(name, pending):
                        # The channel failed at once (the actor died, or was fenced): the retry is an
                        # ordinary call, and may be slow like one.
                        retry = self._call_actor(
                            name,
                            call(PoolApi.execute_many, commands),
                            deadline=channel_deadline,
                            sent=_may_have_decided(pending),
                        )
                        pending, channel_deadline = asyncio.ensure_future(retry), None
                        done, _ = await asyncio.wait({pending}, timeout=_SLOW_CALL_S)
                    if not done:  # slow: let the next batch go meanwhile; this sender ends with this call
                        in_flight = False
                        outbox.in_flight -= 1
                        self._start_sender(name, outbox)
                    results = await self._finish_call(name, commands, pending, channel_deadline)
                except BaseException as exc:  # every caller gets an answer, whatever happened
                    for *_, reply in batch:
                        if not reply.done():
                            reply.set_exception(exc if isinstance(exc, Exception) else Unavailable("shutting down"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    outbox.calls -= 1
                for (*_, reply), result in zip(batch, results, strict=True):
                    if not reply.done():
                        reply.set_result(result)
        finally:
            if in_flight:
                outbox.in_flight -= 1
            else:  # commands may have waited for this call to end (the calls cap)
                self._start_sender(name, outbox)

    def _answered(self, name: str, pending: asyncio.Future[Any]) -> bool:
        """Whether a finished channel call brought the actor's answer (or its error). When the channel
        failed or the answer is "fenced", the actor is forgotten and the batch must go again."""
        error = pending.exception()
        if isinstance(error, ChannelGone):
            self._forget(name, fenced=False)
            return False
        if error is None and _fenced(pending.result()):
            self._forget(name, fenced=True)
            return False
        return True

    def _start_call(
        self, name: str, commands: list[AddressedCommand], answer_by: float
    ) -> tuple[asyncio.Future[Any], float | None]:
        """The batch goes out at once over the actor's open channel (the common case: one event-loop turn
        from its answer to the next batch, against three through a task), with the deadline of the call;
        else through ``_call_actor`` (deadline None), which finds the actor, opens the channel, or calls
        through Ray. ``answer_by``: monotonic time after which no answer is waited for."""
        channel = self._channels.get(name)
        if channel is not None and not channel.closed and name in self._handles:
            timeout = max(0.0, answer_by - time.monotonic())
            with contextlib.suppress(ChannelGone):
                return channel.submit(call(PoolApi.execute_many, commands), timeout), answer_by
        batch = call(PoolApi.execute_many, commands)
        return asyncio.ensure_future(self._call_actor(name, batch, deadline=answer_by)), None

    async def _finish_call(
        self, name: str, commands: list[AddressedCommand], pending: asyncio.Future[Any], deadline: float | None
    ) -> Any:
        if deadline is not None:  # a channel call: finished, failed or fenced?
            await asyncio.wait({pending})
            if not self._answered(name, pending):
                # The actor died, timed out or was fenced: the same commands (same request ids) again,
                # retrying within what is left of the call's time.
                return await self._call_actor(
                    name, call(PoolApi.execute_many, commands), deadline=deadline, sent=_may_have_decided(pending)
                )
        return await pending

    async def aclose(self) -> None:
        """Close the channels to the actors (the actors themselves live on)."""
        openings = list(self._channels_opening.values())
        for opening in openings:
            opening.cancel()
        await asyncio.gather(*openings, return_exceptions=True)
        channels = [c for c in self._channels.values() if c is not None]
        self._channels.clear()
        await asyncio.gather(*(c.aclose() for c in channels))
        if self._journal is not None:
            journal, self._journal = self._journal, None
            await asyncio.to_thread(journal.close)

    async def views(self, pool_ids: list[str], held: Callable[[str], int] | None = None) -> tuple[list[PoolView], int]:
        """The current view of each pool whose actor is running and answers (one call per hosting actor,
        a few at a time), and how many pools answered. With ``held`` (the version the caller holds of a
        pool, -1 for none) each actor first reports its pools' versions, and only the views the caller is
        behind on travel: a pool it is current on counts as answered. An idle anti-entropy round then
        moves a number per pool instead of a view. It never creates an actor: reviving pools is the
        watchdog's job, at its own bounded pace; a cache pulling views must not start a storm of actor
        processes."""
        by_actor: dict[str, list[str]] = {}
        for pool_id in pool_ids:
            by_actor.setdefault(actor_name(self._settings, pool_id), []).append(pool_id)
        gate = asyncio.Semaphore(_MAX_PARALLEL_PULLS)
        timeout = self._settings.hosting.call_timeout_s

        async def pull(name: str, pools: list[str]) -> tuple[list[PoolView], int]:
            async with gate:
                handle = self._handles.get(name) or await asyncio.to_thread(
                    self._ray.lookup_actor, name, self._settings.hosting.namespace
                )
                if handle is None:
                    return [], 0
                current = 0
                try:
                    if held is not None and any(held(p) >= 0 for p in pools):  # else all are pulled anyway
                        versions = await self._ray.ask(handle, call(PoolApi.versions, pools), timeout)
                        behind = [p for p, v in zip(pools, versions, strict=True) if v is None or held(p) < v]
                        current, pools = len(pools) - len(behind), behind
                    answers = await self._ray.ask(handle, call(PoolApi.views, pools), timeout) if pools else []
                except ActorGone:
                    self._handles.pop(name, None)
                    return [], 0
                self._handles[name] = handle
                views = [a for a in answers if isinstance(a, PoolView) and a.exists]
                return views, current + len(views)

        pulled = await asyncio.gather(*(pull(name, pools) for name, pools in by_actor.items()))
        return [view for views, _ in pulled for view in views], sum(answered for _, answered in pulled)

    async def view(self, pool_id: str) -> PoolView | CapacityError:
        """The pool's view; an empty one for a pool that was never configured."""
        return await self._ask_pool(pool_id, call(PoolApi.view, pool_id), view_of_absent_pool)

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        return await self._ask_pool(pool_id, call(PoolApi.reservation, pool_id, reservation_id), lambda _: None)

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | CapacityError | None:
        return await self._ask_pool(pool_id, call(PoolApi.reservation_of_request, pool_id, request_id), lambda _: None)

    async def waitlist_place(self, pool_id: str, entry_id: str) -> WaitlistPlace | CapacityError | None:
        return await self._ask_pool(pool_id, call(PoolApi.waitlist_place, pool_id, entry_id), lambda _: None)

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None, limit: int
    ) -> list[Reservation] | CapacityError:
        return await self._ask_pool(pool_id, call(PoolApi.reservations, pool_id, status, limit), lambda _: [])

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome | CapacityError:
        return await self._ask_pool(pool_id, call(PoolApi.reset, pool_id, to_seq_nr), PoolNotFound)

    async def check(self, pool_id: str) -> tuple[int, list[str]] | CapacityError:
        return await self._ask_pool(pool_id, call(PoolApi.check, pool_id), PoolNotFound)

    async def glance(self, pool_id: str, limit: int) -> PoolGlance | CapacityError | None:
        return await self._ask_pool(pool_id, call(PoolApi.glance, pool_id, limit), lambda _: None)

    async def history(
        self, pool_id: str, at: datetime | None, before: int | None, limit: int
    ) -> JournalHistory | CapacityError | None:
        """Read from the journal here, on a worker thread: it needs nothing of the pool's writer (a retired
        pool no longer hosted is read as well), and the pool's host goes on writing meanwhile. A past moment
        replays the stream from its first event: one replay at a time in this process bounds what the
        console's time slider costs it."""
        try:
            journal = self._opened_journal()
            if at is None:
                return await asyncio.to_thread(read_history, journal, Codec(), pool_id, at, before, limit)
            async with self._replays:
                return await asyncio.to_thread(read_history, journal, Codec(), pool_id, at, before, limit)
        except JournalError as exc:
            return Unavailable(f"journal unavailable: {exc}")

    async def ensure_started(self, pool_ids: list[str]) -> list[int | CapacityError]:
        """The watchdog's ping of ``pool_ids``, which one actor hosts: recovers those not running."""
        hosts = {actor_name(self._settings, pool_id) for pool_id in pool_ids}
        if len(hosts) != 1:
            raise ValueError(f"pools of {len(hosts)} hosts in one call")
        return await self._call_actor(hosts.pop(), call(PoolApi.ensure_started_many, pool_ids))

    async def _ask_pool(self, pool_id: str, request: Call[R], if_absent: Callable[[str], R]) -> R:
        """``request`` to the actor hosting ``pool_id``; for a pool that was never configured, the answer
        is ``if_absent(pool_id)``, and no actor is started for it."""
        name = actor_name(self._settings, pool_id)
        if not await self._hosted_or_exists(name, pool_id):
            return if_absent(pool_id)
        return await self._call_actor(name, request)

    async def _hosted_or_exists(self, name: str, pool_id: str) -> bool:
        """Whether the pool's actor runs, or else the pool has events: only then may a request start its
        actor. Requests for unknown pools (a typo, a forged reservation id, a flood of them) start no
        process and write nothing; the actor's host makes the same check for pools it does not run yet."""
        if name in self._handles:
            return True
        if await asyncio.to_thread(self._ray.lookup_actor, name, self._settings.hosting.namespace) is not None:
            return True
        try:
            return await asyncio.to_thread(self._pool_exists, pool_id)
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc

    def _pool_has_events(self, pool_id: str) -> bool:
        return self._opened_journal().highest_seq_nr(pool_id) > 0

    async def live_pool_ids(self) -> list[str]:
        """The pools the service keeps hosted: registered, not dormant (an operator's pause of them all)."""
        try:
            return await asyncio.to_thread(lambda: self._opened_journal().live_pool_ids())
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc

    def _opened_journal(self) -> Journal:
        if self._journal is None:
            if self._journals is None:
                raise RuntimeError("this router was made without a journal (runtime/bootstrap.py makes routers)")
            self._journal = self._journals()
        return self._journal

    def host_of(self, pool_id: str) -> str:
        """The name of the actor hosting ``pool_id``."""
        return actor_name(self._settings, pool_id)

    async def _call_actor(self, name: str, request: Call[R], deadline: float | None = None, sent: bool = False) -> R:
        """While the actor is dead, restarting, or a fenced old incarnation, retry with a fresh handle
        until ``deadline`` (monotonic; default: ``call_timeout_s`` from now); then ``Unavailable``, or for
        commands that were ``sent`` at least once, ``OutcomeUnknown``. Every command carries a request id,
        so a command sent again is never applied twice."""
        if deadline is None:
            deadline = time.monotonic() + self._settings.hosting.call_timeout_s
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if sent and request.method == _EXECUTE_MANY:
                    raise OutcomeUnknown(f"{name} did not answer in time; repeat with the same request_id")
                raise Unavailable(f"{name} did not answer within the call timeout")
            fenced = False
            try:
                handle = await self._handle(name)
                channel = None
                if request.method in SAME_NODE_METHODS:
                    async with asyncio.timeout(remaining):  # the opening is shared: wait only our time
                        channel = await self._channel(name, handle)
                may_have_been_sent, sent = sent, True
                if channel is not None:
                    result = await channel.call(request, remaining)
                else:
                    result = await self._ray.ask(handle, request, remaining)
                fenced = _fenced(result)
                if not fenced:
                    return result
                # a fenced incarnation decided none of them, unless its append found it fenced
                sent = may_have_been_sent or _fenced(result, HostFencedAfterWriting)
            except (ActorGone, ChannelGone, TimeoutError):
                pass
            self._forget(name, fenced)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)

    def _forget(self, name: str, fenced: bool) -> None:
        """The actor died, moved, did not answer or was fenced: look it up again on the next call. Its
        channel is dropped when fenced (it leads to a zombie) or closed (the actor died), not when a call
        timed out: other callers' commands are under way on it. Calling through Ray is decided anew (the
        actor may come back on this node)."""
        self._handles.pop(name, None)
        if name not in self._channels:
            return
        channel = self._channels[name]
        if channel is None or fenced or channel.closed:
            del self._channels[name]
            if channel is not None:
                channel.close()

    async def _channel(self, name: str, handle: Handle) -> ChannelClient | None:
        if name in self._channels:
            channel = self._channels[name]
            if channel is not None and not channel.closed:
                return channel
            if channel is None and time.monotonic() < self._channel_retry_at.get(name, math.inf):
                return None  # through Ray: other node, channel off, or a failed connect not due again yet
            del self._channels[name]
        opening = self._channels_opening.get(name)
        if opening is None:  # one connection per actor, however many calls wait for it
            opening = self._channels_opening[name] = asyncio.ensure_future(self._open_channel(name, handle))
            opening.add_done_callback(_consume)  # its waiters may all have given up before it ended
        return await asyncio.shield(opening)

    async def _open_channel(self, name: str, handle: Handle) -> ChannelClient | None:
        try:
            return await self._connect_channel(name, handle)
        finally:
            if self._channels_opening.get(name) is asyncio.current_task():
                del self._channels_opening[name]

    async def _connect_channel(self, name: str, handle: Handle) -> ChannelClient | None:
        channel: ChannelClient | None = None
        if self._settings.hosting.same_node_channel:
            address = await self._ray.ask(handle, call(PoolApi.open_channel), self._settings.hosting.call_timeout_s)
            if self._node_id is None:
                self._node_id = await asyncio.to_thread(self._ray.current_node_id)
            if address is not None and address.node_id == self._node_id:
                try:
                    channel = await ChannelClient.connect(address, timeout=_CHANNEL_CONNECT_TIMEOUT_S)
                    self._channel_retry_at.pop(name, None)
                except ChannelGone as exc:  # e.g. the actor restarted meanwhile: Ray for now, retry later
                    self._channel_retry_at[name] = time.monotonic() + _CHANNEL_RETRY_S
                    log.warning("%s: same-node channel unusable (%s); calling through Ray", name, exc)
            log.info("%s: commands go %s", name, "over the same-node channel" if channel else "through Ray")
        # Kept even if the actor was forgotten meanwhile (concurrent first calls each look it up, so the
        # handle we were given may be superseded at once): a channel to a dead incarnation is closed and
        # gets reopened; one to a fenced incarnation answers "fenced", which makes the caller forget it.
        self._channels[name] = channel
        return channel

    async def _handle(self, name: str) -> Handle:
        handle = self._handles.get(name)
        if handle is None:
            hosting = self._settings.hosting
            handle = await asyncio.to_thread(
                self._ray.ensure_actor, PoolActor, name, hosting.namespace, (self._settings,), hosting.actor_resources
            )
            self._handles[name] = handle
        return handle


def _consume(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _may_have_decided(call: asyncio.Future[Any]) -> bool:
    """Whether a channel call that brought no usable answer may have had its commands decided: unless the
    answer was "fenced" before writing (a fenced incarnation decides nothing), the actor may have got them."""
    if call.exception() is not None:
        return True
    return not _fenced(call.result()) or _fenced(call.result(), HostFencedAfterWriting)


def _fenced(result: Any, kind: type[HostFenced] = HostFenced) -> bool:
    """Whether the answer (or one of a batch's) is ``kind`` of "fenced"."""
    if isinstance(result, list):
        return any(isinstance(r, kind) for r in result)
    return isinstance(result, kind)
