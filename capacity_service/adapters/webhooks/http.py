"""The network for webhook delivery, over aiohttp: the host's addresses are resolved for every POST and
checked (``application/webhook_targets.py``), and the POST goes to the address that was checked (with the
URL's host in ``Host`` and, for https, in TLS's SNI and certificate check), so that a DNS answer changed
between the check and the connection (rebinding) cannot send it elsewhere. Redirects are not followed, no
cookie is kept, and at most ``MAX_ANSWER_BYTES`` of an answer's body are read.

aiohttp, not httpx: a POST cost the delivering process 0.9 ms of CPU through httpx and 0.12 ms through
aiohttp (benchmarks/webhooks.py; docs/performance.md), which decides how many events per second one
webhooks actor delivers. aiohttp comes with Ray Serve."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from capacity_service.adapters.webhooks.targets import (
    TargetRefused,
    check_addresses,
    checked_url,
    literal_address,
    port_of,
)

# A receiver's answer matters only by its status: this much of its body is read (so that the connection can
# be used again), and a longer one is cut off with its connection.
MAX_ANSWER_BYTES = 64 * 1024


class AiohttpTransport:
    def __init__(self, max_connections: int = 64) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool) -> int:
        parts = checked_url(url)
        host = parts.hostname or ""
        port = port_of(parts)
        literal = literal_address(host)
        addresses = [literal] if literal is not None else await self.resolve(host, port)
        if not allow_private:
            check_addresses(host, addresses)
        if not addresses:
            raise TargetRefused(f"{host} resolves to no address")
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
        default_port = 443 if parts.scheme == "https" else 80
        host_header = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
        if ":" in host and literal is not None:
            host_header = f"[{host}]" if parts.port in (None, default_port) else f"[{host}]:{parts.port}"
        # TLS checks the certificate against the URL's host, not the address the POST goes to.
        server_hostname = host if parts.scheme == "https" and literal is None else None
        async with self._opened().post(
            pinned,
            data=body,
            headers={**headers, "Host": host_header},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
            server_hostname=server_hostname,
        ) as response:
            read = 0
            while read <= MAX_ANSWER_BYTES and (chunk := await response.content.readany()):
                read += len(chunk)
            return response.status

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=False
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
