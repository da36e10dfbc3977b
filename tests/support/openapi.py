"""What the schemathesis tests share: the one rule of the contract that JSON Schema cannot express, and
the check of one generated case with it."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def slot_out_of_order(body: Any) -> bool:
    """A pool's slot must end after it starts (``PutPoolRequest`` says so in words; 422 otherwise):
    generated data that breaks only this rule is schema-valid, and rightly refused."""
    if not isinstance(body, dict) or not isinstance(body.get("slot_start"), str):
        return False
    try:
        start, end = (datetime.fromisoformat(str(body[k]).replace("Z", "+00:00")) for k in ("slot_start", "slot_end"))
    except (KeyError, ValueError, TypeError):
        return False
    if start.tzinfo is None or end.tzinfo is None:
        return False
    return end <= start


def pool_named_twice(body: Any) -> bool:
    """An order names each pool in one line at most (``PlaceOrderRequest``; 422 otherwise): JSON Schema's
    uniqueItems cannot say it of one field of the items."""
    if not isinstance(body, dict) or not isinstance(body.get("lines"), list):
        return False
    pools = [
        line["pool_id"] for line in body["lines"] if isinstance(line, dict) and isinstance(line.get("pool_id"), str)
    ]
    return len(set(pools)) < len(pools)


def webhook_url_refused(case: Any) -> bool:
    """A webhook's URL that its pattern lets through but the service refuses (a port out of range, a host
    that is not one): the rules of URLs are more than a pattern says (422)."""
    from capacity_service.adapters.webhooks.targets import checked_url
    from capacity_service.errors import InvalidRequest

    body = case.body
    if case.method != "PUT" or not isinstance(body, dict) or not isinstance(body.get("url"), str):
        return False
    try:
        checked_url(body["url"])
    except InvalidRequest:
        return True
    return False


def schedule_refused(case: Any) -> bool:
    """A schedule's template that its schema lets through but that describes no valid set of pools (``to``
    before ``from``, a zone named twice, an unknown time zone, no pool, too many: ``PutScheduleRequest``
    says so in words): refused (422)."""
    import json

    from pydantic import ValidationError

    from capacity_service.domain.schedule import InvalidTemplate, check_template
    from capacity_service.entrypoints.http.schemas import PutScheduleRequest

    if case.method != "PUT" or not case.path.startswith("/v1/schedules/") or not isinstance(case.body, dict):
        return False
    try:
        check_template(PutScheduleRequest.model_validate_json(json.dumps(case.body)).template().template())
    except (ValidationError, InvalidTemplate):
        return True
    return False


def over_the_body_limit(case: Any) -> bool | None:
    """Whether the case's body is over ``http.max_body_bytes`` (16 KiB by default), which the schema cannot
    say (a schedule's template of 200 zones with long names fits its schema, not a request): refused with
    413 before the app. None: it depends on how it is written (compact, or with spaces)."""
    import json

    from capacity_service.settings import HttpSettings

    if not isinstance(case.body, dict | list):
        return False
    limit = HttpSettings().max_body_bytes
    compact, spaced = (len(json.dumps(case.body, separators=s).encode()) for s in ((",", ":"), (", ", ": ")))
    return True if compact > limit else None if spaced > limit else False


def check_case(case: Any) -> None:  # a schemathesis.Case
    """Every schemathesis check on the case's answer; a case that breaks only a rule JSON Schema cannot
        express (a slot out of order, a pool named twice in an order) must be refused (422), which is all the
        schema-valid-yet-refused check would object to; so is a 410 of a pool an earlier case retired, and a 422
        of a hold longer than the pool's ``max_hold_seconds``, and a 422 of a webhook URL whose host is private or
    does not resolve, and a schedule's template that describes no valid set of pools; a body over the body
        limit must be a 413. The
        availability stream is left out: its answer never
        ends, which no schemathesis call waits out (tests/unit/test_http_stream.py and the e2e tests cover it)."""
    if case.path == "/v1/availability/stream":
        return
    too_large = over_the_body_limit(case)
    if too_large:
        response = case.call()
        assert response.status_code == 413, response.text
        return
    refused = (case.method == "PUT" and slot_out_of_order(case.body)) or pool_named_twice(case.body)
    if refused or webhook_url_refused(case) or schedule_refused(case):
        response = case.call()
        expected = {422, 413} if too_large is None else {422}  # 413: written with spaces, over the limit
        assert response.status_code in expected, response.text  # this rule, or another of the case's faults
        return
    response = case.call()
    if response.status_code == 413 and too_large is None:
        return  # written with spaces, it is over the limit
    if response.status_code == 410:  # a pool an earlier case retired: the state's answer, not the input's
        assert response.json()["error"]["code"] == "pool_retired", response.text
        return
    if response.status_code == 422 and "max_hold_seconds" in response.json()["error"]["message"]:
        return  # a hold longer than its pool allows (a setting of the pool, which no schema can know)
    if response.status_code == 422 and case.path.startswith("/v1/webhooks/") and _about_the_url(response):
        return  # where the URL's host points (a private address, no address), resolved now: no schema can know
    case.validate_response(response)


def _about_the_url(response: Any) -> bool:
    error = response.json().get("error", {})
    return error.get("code") == "invalid_request" and str(error.get("message", "")).startswith("url: ")
