"""The webhook signature: HMAC-SHA256 over ``<timestamp>.<body>``, and the receiver's check of it, as
docs/http-api.md writes it (its Python snippet is run here, against a delivery's real headers)."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from capacity_service.application.webhook_signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    signed_headers,
    verify,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() -> None:
    body = b'{"id":"p/1/0"}'
    expected = hmac.new(b"s3cret-s3cret-s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret-s3cret-s3cret", 1700000000, body) == f"v1={expected}"


def test_signed_headers_verify_and_any_change_fails() -> None:
    secret, body = "a-secret-of-16-chars", b'{"type":"hold.expired"}'
    headers = signed_headers(secret, "erp", "p/3/0", "hold.expired", body, now=1_700_000_000)
    timestamp, sent = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(secret, timestamp, sent, body, now=1_700_000_010)
    assert not verify(secret, timestamp, sent, body + b" ", now=1_700_000_010)  # another body
    assert not verify("another-secret-16ch", timestamp, sent, body, now=1_700_000_010)  # another key
    assert not verify(secret, str(int(timestamp) + 1), sent, body, now=1_700_000_010)  # another time
    assert not verify(secret, timestamp, sent, body, now=1_700_000_000 + 301)  # too old: a replay
    assert not verify(secret, "not-a-number", sent, body, now=1_700_000_000)


def test_the_verification_snippet_in_the_docs_accepts_a_delivery_and_refuses_a_forgery() -> None:
    text = DOCS.read_text()
    found = re.search(r"<!-- webhook-verification -->\n```python\n(.*?)```", text, re.DOTALL)
    assert found, "docs/http-api.md has the webhook verification snippet"
    namespace: dict[str, object] = {}
    exec(found.group(1), namespace)
    is_genuine = namespace["is_genuine"]
    assert callable(is_genuine)
    secret, body = "the-receivers-secret", b'{"id":"north/7/0","type":"pool.sold_out"}'
    headers = signed_headers(secret, "shop", "north/7/0", "pool.sold_out", body)
    assert is_genuine(secret, headers, body)
    assert not is_genuine(secret, headers, body.replace(b"sold_out", b"back_on_sale"))
    assert not is_genuine("someone-elses-secret", headers, body)
