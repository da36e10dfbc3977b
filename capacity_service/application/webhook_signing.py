"""How a webhook delivery is signed, and how a receiver checks it (docs/http-api.md, "Webhooks").

The signature is HMAC-SHA256, keyed with the webhook's secret, over ``<timestamp>.<body>``: the
``X-Capacity-Timestamp`` header (Unix seconds, as decimal digits), a full stop, and the request body's
exact bytes. It is sent hex-encoded as ``X-Capacity-Signature: v1=<hex>``. Signing the timestamp with the
body lets a receiver refuse an old request replayed later (``verify``'s ``tolerance_s``).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Capacity-Signature"
TIMESTAMP_HEADER = "X-Capacity-Timestamp"
EVENT_ID_HEADER = "X-Capacity-Event-Id"
EVENT_TYPE_HEADER = "X-Capacity-Event-Type"
WEBHOOK_ID_HEADER = "X-Capacity-Webhook-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Capacity-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(
    secret: str, webhook_id: str, event_id: str, event_type: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
        WEBHOOK_ID_HEADER: webhook_id,
        "User-Agent": "capacity-service-webhooks/1",
    }


def verify(
    secret: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (within ``tolerance_s``)."""
    if not timestamp.isdigit():
        return False
    sent = int(timestamp)
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, sent, body), signature_header)
