import json
from datetime import UTC, datetime

import pytest

from capacity_service.adapters.codec import Codec, DecodingError, Upcasters
from capacity_service.domain import (
    CapacityReleased,
    CapacityReserved,
    PoolConfigured,
    PoolState,
    apply_all,
    new_reservation_id,
)

codec = Codec()


@pytest.mark.parametrize(
    "event",
    [
        PoolConfigured(5, "north", datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 1, 10, tzinfo=UTC)),
        PoolConfigured(0, "south", None, None),
        CapacityReserved(new_reservation_id("p"), 3, "req-1"),
        CapacityReleased(new_reservation_id("p"), 3),
    ],
)
def test_events_round_trip_with_type_and_version(event: object) -> None:
    encoded = codec.encode_event(event)  # type: ignore[arg-type]
    assert encoded.event_type == type(event).__name__
    assert encoded.schema_version == type(event).VERSION  # type: ignore[attr-defined]
    assert codec.decode_event(encoded.event_type, encoded.schema_version, encoded.payload) == event


def test_payload_stored_by_schema_v1_is_upcast() -> None:
    # PoolConfigured v1 (the first schema) had no slot; such payloads sit in journals written then.
    stored_v1 = json.dumps({"capacity": 7, "zone": "east"}).encode()
    event = codec.decode_event("PoolConfigured", 1, stored_v1)
    assert event == PoolConfigured(7, "east", None, None)


def test_a_chain_of_upcasters_runs_one_step_at_a_time() -> None:
    upcasters = Upcasters()
    upcasters.register("Thing", 1, lambda d: {**d, "b": d["a"] * 2})
    upcasters.register("Thing", 2, lambda d: {"c": d["a"] + d["b"]})
    assert upcasters.upcast("Thing", 1, 3, {"a": 1}) == {"c": 3}
    with pytest.raises(DecodingError):
        upcasters.upcast("Thing", 0, 3, {})


def test_unknown_newer_or_corrupt_payloads_raise_decoding_error() -> None:
    with pytest.raises(DecodingError):
        codec.decode_event("NoSuchEvent", 1, b"{}")
    with pytest.raises(DecodingError):
        codec.decode_event("CapacityReserved", 99, b"{}")
    with pytest.raises(DecodingError):
        codec.decode_event("CapacityReserved", 1, b'{"reservation_id": 1')
    with pytest.raises(DecodingError):
        codec.decode_event("CapacityReserved", 1, b'{"reservation_id": "x", "quantity": 1}')


def test_snapshot_round_trip_and_corruption_is_detected() -> None:
    rid = new_reservation_id("p")
    state = apply_all(
        PoolState("p"),
        [PoolConfigured(10, "z", None, None), CapacityReserved(rid, 4, "q"), CapacityReleased(rid, 4)],
    )
    version, payload = codec.encode_snapshot(state)
    assert codec.decode_snapshot(version, payload) == state
    tampered = json.loads(payload)
    tampered["reserved"] = 99
    with pytest.raises(DecodingError):
        codec.decode_snapshot(version, json.dumps(tampered).encode())
    with pytest.raises(DecodingError):
        codec.decode_snapshot(version, payload[: len(payload) // 2])


def test_events_encoded_as_plain_json_are_the_bytes_their_schema_writes() -> None:
    """The codec writes string-and-integer events with ``json.dumps`` (faster): the bytes must be exactly
    those of the pydantic schema, for any text (non-ASCII, quotes, backslashes, control characters)."""
    from capacity_service.adapters.codec import _EVENT_SCHEMAS
    from capacity_service.domain import CapacityReleased, CapacityReserved, HoldConfirmed

    codec = Codec()
    tricky = 'p~é"\\\u0001\u2028x'
    for event in (
        CapacityReserved(tricky, 3, "req-ü\t"),
        CapacityReleased(tricky, 2),
        HoldConfirmed(tricky),
    ):
        schema = _EVENT_SCHEMAS[event.TYPE].schema
        expected = schema.model_construct(**{n: getattr(event, n) for n in schema.model_fields}).model_dump_json()
        encoded = codec.encode_event(event)
        assert encoded.payload == expected.encode(), event
        assert codec.decode_event(encoded.event_type, encoded.schema_version, encoded.payload) == event
