"""schemathesis against the live service, once: `capacity-service start` as a user runs it, its own
`/openapi.json` loaded over HTTP, every operation driven with generated valid and invalid requests and
every check schemathesis has. The in-process run (tests/unit/test_openapi_schemathesis.py) goes deeper;
this one proves the deployed app serves the same contract (Serve, the ingress ahead of it, real pools)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from devenv._process import free_port
from tests.e2e.test_start_command import start, stop, wait_ready
from tests.support.openapi import slot_out_of_order


@pytest.fixture(scope="module")
def live_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    data_dir: Path = tmp_path_factory.mktemp("openapi-live")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start(data_dir, port)
    try:
        wait_ready(url, service)
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    finally:
        stop(service)


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_live_service_keeps_its_openapi_contract(case: Any) -> None:  # a schemathesis.Case
    if case.method == "PUT" and slot_out_of_order(case.body):
        response = case.call()
        assert response.status_code == 422, response.text  # this rule, or another of the case's faults
        return
    case.call_and_validate()
