"""A same-node shortcut for calls to a pool actor: a Unix socket the actor serves beside Ray's RPC.

Why: on a small VM a Ray actor call costs ~2 ms round trip when idle and 8-15 ms under load (several
thread hand-overs in each process), and a reserve is one such call around a ~1.4 ms append. A Unix
socket between a Serve replica and a pool actor on the same node is one hand-over each way.

Ray still owns the actor's life and hands out the way in: the socket's address, the actor's pid and a
random secret come from a Ray call to the actor (``open_channel``), so only a process that may call the
actor through Ray can use the socket. The socket is in Linux's abstract namespace: no file, nothing on the
network, gone with the process. Both ends check who is on the other side (``SO_PEERCRED``): the server
serves only our own user, the client talks only to the actor's pid (a name freed by a dead actor could be
taken by someone else). A connection must then present the secret before anything it sends is decoded.
Frames are pickled, as Ray's own call arguments are.

No Ray here: the router and the pool actor use it, and tests run it without a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import pickle
import secrets
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from capacity_service.runtime.actor_api import Call

__all__ = ["ChannelAddress", "ChannelCallFailed", "ChannelClient", "ChannelGone", "ChannelServer", "supported"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
_MAX_FRAME_BYTES = 64 * 1024 * 1024
_SECRET_BYTES = 32
_HANDSHAKE_TIMEOUT_S = 5.0

Method = Callable[..., Awaitable[Any]]
R = TypeVar("R")


def supported() -> bool:
    """Abstract Unix sockets are Linux's; elsewhere calls keep going through Ray."""
    return sys.platform.startswith("linux")


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    node_id: str  # a caller on another node must not use it (the name would mean its own node's socket)
    path: str
    secret: bytes
    pid: int  # the serving process: the client checks it is the one on the other end


class ChannelGone(Exception):
    """The channel closed, could not connect, or a call did not answer in time: find the actor again."""


class ChannelCallFailed(Exception):
    """The method raised on the actor's side (a bug there; our errors come back as values)."""


class ChannelServer:
    """Serves ``methods`` (by name) to connections that present the secret. Calls on one connection run
    concurrently and are answered as they finish."""

    def __init__(self, methods: dict[str, Method]) -> None:
        self._methods = methods
        self._secret = secrets.token_bytes(_SECRET_BYTES)
        self._server: asyncio.Server | None = None
        self._address: ChannelAddress | None = None
        self._starting = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()
        self.calls = 0  # answered, for ``describe`` and tests

    async def start(self, node_id: str) -> ChannelAddress:
        """Listen (once) and return where to connect."""
        async with self._starting:
            if self._address is None:
                path = f"\0capacity-service/{os.getpid()}/{secrets.token_hex(8)}"
                listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    listening.bind(path)
                    self._server = await asyncio.start_unix_server(self._serve, sock=listening)
                except BaseException:
                    listening.close()
                    raise
                self._address = ChannelAddress(node_id, path, self._secret, os.getpid())
        return self._address

    async def close(self) -> None:
        """Stop listening, end every connection and the calls under way."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if _peer(writer)[1] != os.getuid():  # another user: not even the handshake
            writer.close()
            return
        self._connections.add(writer)
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                offered = await reader.readexactly(_SECRET_BYTES)
            if not hmac.compare_digest(offered, self._secret):
                log.warning("channel: a connection offered a wrong secret; closed")
                return
            while True:
                call_id, method, args = pickle.loads(await _read_frame(reader))
                task = asyncio.create_task(self._answer(writer, call_id, method, args))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, _FrameTooLarge):
            pass
        except asyncio.CancelledError:  # the process is shutting down; this connection ends with it
            pass
        except Exception:  # an undecodable frame from a caller that had the secret: a bug, not an attack
            log.exception("channel: unreadable call; connection closed")
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        ok = False
        try:
            value = await self._methods[method](*args)
            ok = True
        except Exception as exc:
            log.exception("channel: %s failed", method)
            value = f"{method}: {type(exc).__name__}: {exc}"
        self.calls += 1
        try:
            reply = pickle.dumps((call_id, ok, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # answer anyway: the caller must not wait out its timeout
            log.exception("channel: the answer of %s cannot be sent", method)
            reply = pickle.dumps((call_id, False, f"{method}: unsendable answer: {exc}"))
        if not writer.is_closing():
            writer.write(_frame(reply))


class ChannelClient:
    """One connection to a ``ChannelServer``; many calls may be in flight on it at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._call_ids = itertools.count()
        self._closed = False
        self._replies = asyncio.ensure_future(self._read_replies(reader))

    @classmethod
    async def connect(cls, address: ChannelAddress, timeout: float) -> ChannelClient:
        # Our own socket: uvloop (Serve replicas run on it) refuses an abstract address given as a path.
        connecting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connecting.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(connecting, address.path)
                reader, writer = await asyncio.open_unix_connection(sock=connecting)
        except (OSError, TimeoutError) as exc:
            connecting.close()
            raise ChannelGone(f"cannot connect: {exc}") from exc
        except BaseException:
            connecting.close()
            raise
        if _peer(writer)[0] != address.pid:  # the actor died and someone else took its socket's name
            writer.close()
            raise ChannelGone(f"{address.path[1:]!r} is no longer served by process {address.pid}")
        writer.write(address.secret)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(self, call: Call[R], timeout: float) -> R:
        return await self.submit(call, timeout)

    def submit(self, call: Call[R], timeout: float) -> asyncio.Future[R]:
        """Send a call now; the future resolves to its answer, or fails with ``ChannelGone`` (closed, or
        no answer within ``timeout``) or ``ChannelCallFailed``. No task: a caller awaiting it directly is
        woken one event-loop turn after the reply arrives (a busy replica's loop turns are the cost)."""
        if self._closed:
            raise ChannelGone("the channel is closed")
        call_id = next(self._call_ids)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[R] = loop.create_future()
        frame = _frame(pickle.dumps((call_id, call.method, call.args), protocol=pickle.HIGHEST_PROTOCOL))
        try:
            self._writer.write(frame)
        except Exception as exc:  # uvloop raises once the connection broke, before the reader notices
            self._shut()
            raise ChannelGone(f"cannot send: {exc}") from exc
        self._pending[call_id] = reply
        expiry = loop.call_later(timeout, _expire, reply, f"{call.method} did not answer within {timeout:.1f} s")

        def forget(_: asyncio.Future[R]) -> None:
            expiry.cancel()
            self._pending.pop(call_id, None)

        reply.add_done_callback(forget)
        return reply

    def close(self) -> None:
        self._replies.cancel()
        self._shut()

    async def aclose(self) -> None:
        """Close, and wait until the reply reader has stopped (before the event loop goes away)."""
        self.close()
        await asyncio.gather(self._replies, return_exceptions=True)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                call_id, ok, value = pickle.loads(await _read_frame(reader))
                reply = self._pending.get(call_id)
                if reply is not None and not reply.done():
                    if ok:
                        reply.set_result(value)
                    else:
                        reply.set_exception(ChannelCallFailed(value))
        except (asyncio.IncompleteReadError, ConnectionError, _FrameTooLarge):
            pass
        except Exception:
            log.exception("channel: unreadable reply; connection closed")
        finally:
            self._shut()

    def _shut(self) -> None:
        self._closed = True
        with contextlib.suppress(RuntimeError):  # the event loop closed first (a process shutting down)
            self._writer.close()
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ChannelGone("the channel closed"))


def _expire(reply: asyncio.Future[Any], why: str) -> None:
    if not reply.done():
        reply.set_exception(ChannelGone(why))


class _FrameTooLarge(Exception):
    """A frame's declared size is over ``_MAX_FRAME_BYTES``: the stream is not ours, or broken."""


def _peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a Unix socket."""
    sock = writer.get_extra_info("socket")
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > _MAX_FRAME_BYTES:
        raise _FrameTooLarge(size)
    return await reader.readexactly(size)
