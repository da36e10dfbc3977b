"""Optional bearer-token auth: API keys for the API, admin keys (which also pass as API keys) for changing
pools. With no keys configured, auth is off."""

from __future__ import annotations

import secrets

from capacity_service.http.errors import Forbidden, Unauthorized
from capacity_service.settings import HttpSettings


class ApiKeys:
    def __init__(self, settings: HttpSettings) -> None:
        self._admin_keys = [k.get_secret_value().encode() for k in settings.admin_keys]
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys] + self._admin_keys

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

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
            raise Forbidden("changing pools needs an admin API key")


def _bearer_token(authorization: str | None) -> bytes | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: bytes, candidates: list[bytes]) -> bool:
    # Compared with every candidate, in constant time each: how far a guess matched does not leak.
    return any([secrets.compare_digest(token, candidate) for candidate in candidates])
