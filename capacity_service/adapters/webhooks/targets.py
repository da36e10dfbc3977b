"""Where a webhook may point: ``http``/``https`` URLs of public addresses only, unless the operator allows
private ones (``webhooks.allow_private_targets``: a receiver on the operator's own network, or in tests).
A webhook must not become a way into the operator's network: loopback, link-local (the cloud metadata
service), private, shared, multicast, reserved and unspecified addresses are refused, at registration and
again at every delivery, against the addresses the host resolves to then (DNS rebinding)."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from capacity_service.errors import InvalidRequest

MAX_URL_LENGTH = 2048


class TargetRefused(Exception):
    """A delivery's host resolved to an address webhooks may not reach."""


def checked_url(url: str) -> SplitResult:
    """The URL, parsed, if a webhook may have it (else ``InvalidRequest``): http or https, a host, no
    user or password in it (they would be sent in the clear and logged), at most ``MAX_URL_LENGTH``."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url: at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"url: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("url: only http and https URLs")
    if not parts.hostname:
        raise InvalidRequest("url: a host is needed")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("url: no user or password in the URL (the secret signs every delivery)")
    if port == 0:
        raise InvalidRequest("url: port 0")
    return parts


def port_of(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def refusal(address: str) -> str | None:
    """Why a webhook may not reach ``address`` (an IP address), or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, is_it in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if is_it:
            return f"{address} is a {kind} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def literal_address(host: str) -> str | None:
    """The host as an IP address if it is one (``[::1]`` without brackets), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def is_local_name(host: str) -> bool:
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


def check_addresses(host: str, addresses: list[str]) -> None:
    """``TargetRefused`` unless every address ``host`` resolves to may be reached."""
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address")
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise TargetRefused(f"{host}: {why}")
