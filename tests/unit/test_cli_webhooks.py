"""``capacity-service webhook put/list/get/delete``: what each sends, and the secret from the environment."""

from __future__ import annotations

import pytest

from tests.unit.test_cli_arguments import _sent_by


def test_webhook_commands_send_the_webhook_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPACITY_WEBHOOK_SECRET", "from-the-environment")
    argv = ["webhook", "put", "erp", "--url", "https://erp.example.com/h", "--event", "hold.expired"]
    status, sent = _sent_by([*argv, "--event", "order.confirmed"], monkeypatch)
    body = {
        "url": "https://erp.example.com/h",
        "events": ["hold.expired", "order.confirmed"],
        "secret": "from-the-environment",
    }
    assert status == 0 and sent == [("PUT", "/v1/webhooks/erp", body)]
    assert _sent_by(["webhook", "list"], monkeypatch)[1] == [("GET", "/v1/webhooks", None)]
    assert _sent_by(["webhook", "get", "erp"], monkeypatch)[1] == [("GET", "/v1/webhooks/erp", None)]
    assert _sent_by(["webhook", "delete", "erp"], monkeypatch)[1] == [("DELETE", "/v1/webhooks/erp", None)]


def test_webhook_put_wants_a_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CAPACITY_WEBHOOK_SECRET", raising=False)
    status, sent = _sent_by(
        ["webhook", "put", "erp", "--url", "https://e.example/h", "--event", "hold.expired"], monkeypatch
    )
    assert status == 2 and sent == [] and "CAPACITY_WEBHOOK_SECRET" in capsys.readouterr().err
