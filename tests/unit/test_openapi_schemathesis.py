"""schemathesis drives the HTTP app from its own OpenAPI document (every operation, generated valid and
invalid requests, every check it has): answers must match the document, bad input must be a 4xx, valid
input must be accepted. In process, over the in-memory service (``tests/support/in_process.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from capacity_service.http.app import create_app
from tests.support.in_process import InProcessBackend

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(InProcessBackend()))


def _slot_out_of_order(body: Any) -> bool:
    """The one rule the schema cannot say (it says it in words): a pool's slot must end after it starts."""
    if not isinstance(body, dict) or not isinstance(body.get("slot_start"), str):
        return False
    try:
        start, end = (datetime.fromisoformat(str(body[k]).replace("Z", "+00:00")) for k in ("slot_start", "slot_end"))
        if start.tzinfo is None or end.tzinfo is None:
            return False
        return end <= start
    except (KeyError, ValueError, TypeError):
        return False


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_its_openapi_contract(case: schemathesis.Case) -> None:
    if case.method == "PUT" and _slot_out_of_order(case.body):
        response = case.call()
        assert response.status_code == 422, response.text  # this rule, or another of the case's faults
        return
    case.call_and_validate()
