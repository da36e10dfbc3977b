"""The webhooks' calls over HTTP, in process: register (201) or change (200), list and show without the
secret, the delivery status, delete, and the errors (422 for a bad URL or event type, 404, admin only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend

SECRET = "whsec-0123456789abcdef"
BODY = {"url": "https://hooks.example.com/capacity", "events": ["pool.sold_out", "order.confirmed"], "secret": SECRET}


@pytest.fixture
def http() -> Iterator[TestClient]:
    with TestClient(create_app(InProcessBackend(), HttpSettings())) as client:
        yield client


def test_a_webhook_is_registered_changed_listed_shown_and_deleted_and_its_secret_never_answered(
    http: TestClient,
) -> None:
    created = http.put("/v1/webhooks/erp", json=BODY)
    assert created.status_code == 201, created.text
    assert created.json()["events"] == ["pool.sold_out", "order.confirmed"]
    changed = http.put("/v1/webhooks/erp", json={**BODY, "events": ["hold.expired"]})
    assert changed.status_code == 200 and changed.json()["events"] == ["hold.expired"]
    listed = http.get("/v1/webhooks")
    assert [w["webhook_id"] for w in listed.json()["webhooks"]] == ["erp"]
    shown = http.get("/v1/webhooks/erp")
    assert shown.status_code == 200
    status = shown.json()["status"]
    assert {"delivered", "attempts", "retries", "last_error", "events_behind", "seconds_behind"} <= set(status)
    for answer in (created, changed, listed, shown):
        assert SECRET not in answer.text and "secret" not in answer.text
    assert http.delete("/v1/webhooks/erp").status_code == 200
    gone = http.get("/v1/webhooks/erp")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_not_found"
    assert http.delete("/v1/webhooks/erp").status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"url": "ftp://hooks.example.com/x"},
        {"url": "https://user:password@hooks.example.com/x"},
        {"events": ["pool.exploded"]},
        {"events": []},
        {"secret": "short"},
        {"extra": 1},
    ],
)
def test_what_a_webhook_may_not_be_is_a_422_that_registers_nothing(http: TestClient, change: dict[str, object]) -> None:
    answer = http.put("/v1/webhooks/erp", json={**BODY, **change})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"
    assert SECRET not in answer.text
    assert http.get("/v1/webhooks").json() == {"webhooks": []}


def test_webhooks_need_an_admin_key_when_keys_are_configured() -> None:
    settings = HttpSettings(api_keys=[SecretStr("user-key")], admin_keys=[SecretStr("admin-key")])
    with TestClient(create_app(InProcessBackend(), settings)) as http:
        user = {"authorization": "Bearer user-key"}
        admin = {"authorization": "Bearer admin-key"}
        assert http.put("/v1/webhooks/erp", json=BODY, headers=user).status_code == 403
        assert http.get("/v1/webhooks", headers=user).status_code == 403
        assert http.get("/v1/webhooks").status_code == 401
        assert http.put("/v1/webhooks/erp", json=BODY, headers=admin).status_code == 201
        assert http.delete("/v1/webhooks/erp", headers=admin).status_code == 200


def test_the_webhook_routes_are_in_the_openapi_document(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/webhooks/{webhook_id}"]) == {"put", "get", "delete"}
    assert set(paths["/v1/webhooks"]) == {"get"}
