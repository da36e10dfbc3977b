"""schemathesis drives the HTTP app from its own OpenAPI document (every operation, generated valid and
invalid requests, every check it has): answers must match the document, bad input must be a 4xx, valid
input must be accepted. In process, over the in-memory service (``tests/support/in_process.py``).

The document is taken from the app object, not fetched through it: ``from_asgi`` runs the app in a
test client at import, which left an event-loop thread in the test process from collection on, and with
it the end-to-end tests' subprocesses no longer stopped on Ctrl-C (`serve run`) in the full suite."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from capacity_service.entrypoints.http.app import create_app
from tests.support.in_process import InProcessBackend
from tests.support.openapi import check_case

app = create_app(InProcessBackend())
schema = schemathesis.openapi.from_dict(app.openapi())
schema.app = app  # cases are sent to the app in process
schema.location = "/openapi.json"


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_its_openapi_contract(case: Any) -> None:  # a schemathesis.Case
    check_case(case)
