"""Optional bearer-token auth: API keys for the API, admin keys (which also pass as API keys) for changing
pools. With no keys configured, auth is off."""

from __future__ import annotations

import functools
import ipaddress
import secrets

from capacity_service.entrypoints.http.errors import Forbidden, Unauthorized
from capacity_service.settings import HttpSettings

NO_KEYS_BEYOND_LOOPBACK = (
    "this service has no API keys, so it answers loopback clients only: set CAPACITY_API_KEYS and "
    "CAPACITY_ADMIN_KEYS, or http.allow_remote_without_keys (--allow-remote-without-keys) on a trusted network"
)


class ApiKeys:
    def __init__(self, settings: HttpSettings) -> None:
        self._admin_keys = [k.get_secret_value().encode() for k in settings.admin_keys]
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys] + self._admin_keys
        self._open_to_all = bool(self._keys) or settings.allow_remote_without_keys

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def require_reachable(self, client_host: str | None) -> None:
        """Without keys only loopback clients get an answer (``Forbidden`` for the rest): a service started
        on a public address by mistake is not an open door. A client that is no IP address (a Unix socket,
        an in-process test transport) is local."""
        if not self._open_to_all and client_host is not None and is_remote(client_host):
            raise Forbidden(NO_KEYS_BEYOND_LOOPBACK)

    def require_key(self, authorization: str | None) -> None:
        """``authorization`` is the request's Authorization header (None when absent)."""
        token = _bearer_token(authorization)
        if token is None or not _matches(token, self._keys):
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")

    def require_admin_key(self, authorization: str | None) -> None:
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthorized("an admin API key is required (Authorization: Bearer <key>)")
        if not _matches(token, self._admin_keys):
            raise Forbidden("this call needs an admin API key (an API key is not enough)")


@functools.lru_cache(maxsize=1024)
def is_remote(host: str) -> bool:
    """Whether ``host`` is an IP address off this machine's loopback. Peers over the network always come
    as addresses; anything else ("localhost", a Unix socket, an in-process transport) is local."""
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bearer_token(authorization: str | None) -> bytes | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: bytes, candidates: list[bytes]) -> bool:
    # Compared with every candidate, in constant time each: how far a guess matched does not leak.
    return any([secrets.compare_digest(token, candidate) for candidate in candidates])
