"""schemathesis against the live service, once: `capacity-service start` as a user runs it, its own
`/openapi.json` loaded over HTTP, every operation driven with generated valid and invalid requests and
every check schemathesis has. The in-process run (tests/unit/test_openapi_schemathesis.py) goes deeper;
this one proves the deployed app serves the same contract (Serve, the ingress ahead of it, real pools).
(schemathesis's pytest fixture loader fails on this pytest; the operations are driven here directly.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from devenv._process import free_port
from tests.e2e.test_start_command import start, stop, wait_ready
from tests.support.openapi import slot_out_of_order


def check_case(case: Any) -> None:  # a schemathesis.Case
    if case.method == "PUT" and slot_out_of_order(case.body):
        response = case.call()
        assert response.status_code == 422, response.text  # this rule, or another of the case's faults
        return
    case.call_and_validate()


def test_the_live_service_keeps_its_openapi_contract(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start(tmp_path, port)
    try:
        wait_ready(url, service)
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 8  # every route of the contract, probes included
        for operation in operations:
            for mode in schemathesis.GenerationMode:

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def drive(case: Any) -> None:
                    check_case(case)

                try:
                    drive()
                except Unsatisfiable:
                    # Nothing to get wrong (the probes take no input): no invalid request exists.
                    assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    finally:
        stop(service)
