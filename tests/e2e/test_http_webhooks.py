"""Webhooks over real HTTP, on Ray Serve on a local Ray with the SQLite journal: an admin registers one,
reserves sell a pool out and a release puts it back on sale, and a real receiver gets both, signed, in order;
the webhook's status says so; its secret is never answered. The journal's heads are queried once in ten
minutes here: what arrives comes by the pools' host telling the webhooks which streams moved."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devenv._process import free_port
from tests.e2e.test_http_service import Service, wait_until
from tests.support.webhooks import Receiver, in_order_per_stream

pytestmark = pytest.mark.usefixtures("ray_session")

SECRET = "e2e-receiver-secret-0123456789"


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix="e2e-webhooks-") as tmp:
        args = {
            "journal": {"kind": "sql", "url": f"sqlite:///{Path(tmp) / 'capacity.db'}"},
            "hosting": {"namespace": f"e2e-wh-{uuid.uuid4().hex[:8]}", "mode": "sharded", "shards": 1},
            "warehouse": {"enabled": False},
            "webhooks": {"allow_private_targets": True, "poll_interval_s": 600, "max_backoff_s": 1.0},
        }
        service = Service(args, free_port())
        service.deploy()
        try:
            yield service
        finally:
            service.undeploy()


def test_a_registered_webhook_gets_a_pool_selling_out_and_coming_back_signed_and_in_order(service: Service) -> None:
    receiver = Receiver(SECRET)
    port = receiver.start()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            pool_id = f"p-{uuid.uuid4().hex[:10]}"
            assert http.put(f"/v1/pools/{pool_id}", json={"capacity": 2, "zone": "north"}).status_code == 201
            body = {"url": f"http://127.0.0.1:{port}/hooks", "events": ["pool.sold_out", "pool.back_on_sale"]}
            registered = http.put("/v1/webhooks/shop", json={**body, "secret": SECRET})
            assert registered.status_code == 201, registered.text
            receipts = [http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 1}) for _ in range(2)]
            assert [r.status_code for r in receipts] == [201, 201]
            assert http.delete(f"/v1/reservations/{receipts[0].json()['reservation_id']}").status_code == 200
            wait_until(lambda: len(receiver.events()) == 2, 15, "both deliveries")
            events = receiver.events()
            assert [(e["type"], e["data"]["pool_id"], e["data"]["remaining"]) for e in events] == [
                ("pool.sold_out", pool_id, 0),
                ("pool.back_on_sale", pool_id, 1),
            ]
            assert in_order_per_stream(events) and receiver.bad_signatures == 0
            assert receiver.received[0].headers["x-capacity-webhook-id"] == "shop"
            shown = http.get("/v1/webhooks/shop")
            assert shown.status_code == 200 and shown.json()["status"]["delivered"] == 2
            listed = http.get("/v1/webhooks")
            for answer in (registered, shown, listed):
                assert SECRET not in answer.text
            private = http.put("/v1/webhooks/bad", json={**body, "url": "ftp://127.0.0.1/x", "secret": SECRET})
            assert private.status_code == 422
            assert http.delete("/v1/webhooks/shop").status_code == 200
            assert http.get("/v1/webhooks/shop").status_code == 404
    finally:
        receiver.stop()
