"""The same-node channel to a pool actor, without Ray: real Unix sockets, a real process killed mid-call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from capacity_service.runtime.actor_api import Call
from capacity_service.runtime.channel import (
    ChannelAddress,
    ChannelCallFailed,
    ChannelClient,
    ChannelGone,
    ChannelServer,
    supported,
)

pytestmark = pytest.mark.skipif(not supported(), reason="abstract Unix sockets are Linux's")


class Calls:
    """The methods a test server offers, and what they saw."""

    def __init__(self) -> None:
        self.seen: list[object] = []
        self.never = asyncio.Event()

    async def echo(self, value: object, delay: float = 0.0) -> object:
        self.seen.append(value)
        await asyncio.sleep(delay)
        return value

    async def broken(self) -> None:
        raise ValueError("bad state")

    async def hang(self) -> None:
        await self.never.wait()


Scenario = Callable[[ChannelServer, ChannelAddress, Calls], Awaitable[None]]
Runner = Callable[[Coroutine[Any, Any, None]], None]  # asyncio.run or uvloop.run


def run_served(scenario: Scenario, run: Runner = asyncio.run) -> None:
    async def main() -> None:
        calls = Calls()
        server = ChannelServer({"echo": calls.echo, "broken": calls.broken, "hang": calls.hang})
        address = await server.start("node-a")
        try:
            await scenario(server, address, calls)
        finally:
            await server.close()

    run(main())


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])  # Serve runs on uvloop
def test_a_call_returns_the_methods_answer(run: Runner) -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        assert address.node_id == "node-a" and address.path.startswith("\0")  # abstract: no file anywhere
        client = await ChannelClient.connect(address, timeout=1)
        assert await client.call(Call("echo", ({"pool": "p-1", "n": [1, 2]},)), 5) == {"pool": "p-1", "n": [1, 2]}
        assert server.calls == 1
        client.close()

    run_served(scenario, run)


def test_concurrent_calls_each_get_their_own_answer_in_any_order() -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        client = await ChannelClient.connect(address, timeout=1)
        delays = [0.05, 0.0, 0.03, 0.01, 0.02]
        finished: list[int] = []

        async def call(i: int, delay: float) -> object:
            answer: object = await client.call(Call("echo", (i, delay)), 5)
            finished.append(i)
            return answer

        answers = await asyncio.gather(*(call(i, d) for i, d in enumerate(delays)))
        assert answers == list(range(len(delays)))
        assert finished == [1, 3, 4, 2, 0]  # as each was done, not one after another
        client.close()

    run_served(scenario)


def test_a_wrong_secret_is_refused_before_anything_is_decoded() -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        forged = ChannelAddress(address.node_id, address.path, bytes(len(address.secret)), address.pid)
        client = await ChannelClient.connect(forged, timeout=1)
        with pytest.raises(ChannelGone):
            await client.call(Call("echo", ("let me in",)), 5)
        assert calls.seen == [] and server.calls == 0
        assert client.closed

    run_served(scenario)


def test_a_method_that_raises_or_does_not_exist_fails_that_call_only() -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        client = await ChannelClient.connect(address, timeout=1)
        with pytest.raises(ChannelCallFailed, match="ValueError: bad state"):
            await client.call(Call("broken", ()), 5)
        with pytest.raises(ChannelCallFailed, match="shutdown"):
            await client.call(Call("shutdown", ()), 5)
        assert await client.call(Call("echo", ("still here",)), 5) == "still here"
        client.close()

    run_served(scenario)


def test_a_call_that_does_not_answer_in_time_is_gone() -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        client = await ChannelClient.connect(address, timeout=1)
        with pytest.raises(ChannelGone, match="did not answer"):
            await client.call(Call("hang", ()), 0.1)
        client.close()

    run_served(scenario)


def test_a_socket_served_by_another_process_than_the_address_says_is_not_trusted() -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        impostor_pid = address.pid + 1  # as if the actor died and another process took the name
        with pytest.raises(ChannelGone, match="no longer served"):
            await ChannelClient.connect(
                ChannelAddress(address.node_id, address.path, address.secret, impostor_pid), timeout=1
            )
        assert calls.seen == []

    run_served(scenario)


OTHER_USER_CLIENT = textwrap.dedent(
    """
    import pickle, socket, struct, sys
    path, secret = sys.argv[1], bytes.fromhex(sys.argv[2])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect("\\0" + path)
    try:
        frame = pickle.dumps((0, "echo", ("from another user",)))
        sock.sendall(secret + struct.pack("!I", len(frame)) + frame)
        print("answered" if sock.recv(4096) else "closed")
    except ConnectionError:
        print("closed")
    """
)


# The client runs on the system's Python: only the standard library, and readable by another user.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"needs {SYSTEM_PYTHON}")
def test_another_user_is_refused_even_with_the_secret() -> None:
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        args = [SYSTEM_PYTHON, "-c", OTHER_USER_CLIENT, address.path[1:], address.secret.hex()]
        nobody = 65534
        ran = await asyncio.to_thread(
            subprocess.run, args, user=nobody, group=nobody, extra_groups=[], capture_output=True, text=True
        )
        assert ran.stdout.strip() == "closed", ran.stderr
        assert calls.seen == [] and server.calls == 0

    run_served(scenario)


def test_nothing_listening_is_gone_at_connect() -> None:
    async def connect() -> None:
        with pytest.raises(ChannelGone, match="cannot connect"):
            nobody = ChannelAddress("node-a", "\0capacity-service/none", b"x" * 32, os.getpid())
            await ChannelClient.connect(nobody, timeout=1)

    asyncio.run(connect())


SERVER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from capacity_service.runtime.channel import ChannelServer

    async def main():
        async def hang():
            await asyncio.Event().wait()
        address = await ChannelServer({"hang": hang}).start("node-a")
        print(address.path[1:], address.secret.hex(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def dying_server_scenario() -> None:
    process = subprocess.Popen([sys.executable, "-c", SERVER_PROCESS], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        path, secret = (await asyncio.to_thread(process.stdout.readline)).split()
        address = ChannelAddress("node-a", "\0" + path, bytes.fromhex(secret), process.pid)
        client = await ChannelClient.connect(address, timeout=5)
        calls: list[asyncio.Future[object]] = [
            asyncio.ensure_future(client.call(Call("hang", ()), 60)) for _ in range(3)
        ]
        await asyncio.sleep(0.2)
        assert not any(call.done() for call in calls)
        os.kill(process.pid, signal.SIGKILL)
        async with asyncio.timeout(5):  # not the calls' 60 s
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ChannelGone) for r in results)
        assert client.closed
        with pytest.raises(ChannelGone):
            await client.call(Call("hang", ()), 1)
    finally:
        process.kill()
        process.wait()


def test_calls_in_flight_fail_at_once_when_the_serving_process_dies() -> None:
    asyncio.run(dying_server_scenario())


def test_a_send_on_a_connection_that_just_broke_is_gone() -> None:
    # uvloop (Serve's loop) refuses a write once the connection broke, which can be before the reply
    # reader has noticed: the router must see ChannelGone (and retry), not a RuntimeError.
    async def scenario(server: ChannelServer, address: ChannelAddress, calls: Calls) -> None:
        client = await ChannelClient.connect(address, timeout=1)
        client._writer.transport.abort()
        await asyncio.sleep(0.05)  # uvloop has closed the connection's handle by now
        client._closed = False  # white box: as if the reply reader had not noticed yet
        with pytest.raises(ChannelGone):
            client.submit(Call("echo", (1,)), 30)
        assert client.closed and calls.seen == []

    run_served(scenario, uvloop.run)
