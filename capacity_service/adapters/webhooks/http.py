"""The network for webhook delivery, over httpx: the host's addresses are resolved for every POST and
checked (``application/webhook_targets.py``), and the POST goes to the address that was checked (with the
URL's host in ``Host`` and, for https, in TLS's SNI and certificate check), so that a DNS answer changed
between the check and the connection (rebinding) cannot send it elsewhere. Redirects are not followed."""

from __future__ import annotations

import asyncio
import socket

import httpx

from capacity_service.adapters.webhooks.targets import (
    TargetRefused,
    check_addresses,
    checked_url,
    literal_address,
    port_of,
)


class HttpxTransport:
    def __init__(self, max_connections: int = 64) -> None:
        self._client: httpx.AsyncClient | None = None
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
        extensions = {"sni_hostname": host} if parts.scheme == "https" and literal is None else None
        response = await self._opened().post(
            pinned,
            content=body,
            headers={**headers, "Host": host_header},
            timeout=timeout_s,
            extensions=extensions,
        )
        await response.aclose()
        return response.status_code

    def _opened(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=16)
            self._client = httpx.AsyncClient(follow_redirects=False, limits=limits, trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
