"""schemathesis drives the HTTP app from its own OpenAPI document (every operation, generated valid and
invalid requests, every check it has): answers must match the document, bad input must be a 4xx, valid
input must be accepted. In process, over the in-memory service (``tests/support/in_process.py``)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from capacity_service.http.app import create_app
from tests.support.in_process import InProcessBackend
from tests.support.openapi import slot_out_of_order

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(InProcessBackend()))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_its_openapi_contract(case: Any) -> None:  # a schemathesis.Case
    if case.method == "PUT" and slot_out_of_order(case.body):
        response = case.call()
        assert response.status_code == 422, response.text  # this rule, or another of the case's faults
        return
    case.call_and_validate()
