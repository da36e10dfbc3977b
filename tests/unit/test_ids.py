import pytest
from hypothesis import given
from hypothesis import strategies as st

from capacity_service.domain import InvalidId, check_pool_id, new_reservation_id, pool_of_reservation

pool_ids = st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=128)


@given(pool_ids)
def test_reservation_id_carries_its_pool(pool_id: str) -> None:
    reservation_id = new_reservation_id(pool_id)
    assert pool_of_reservation(reservation_id) == pool_id


@given(pool_ids)
def test_reservation_ids_are_url_safe(pool_id: str) -> None:
    reservation_id = new_reservation_id(pool_id)
    assert all(c.isalnum() or c in "-_." for c in reservation_id)


def test_reservation_ids_are_unique_and_unguessable() -> None:
    ids = {new_reservation_id("pool-1") for _ in range(10_000)}
    assert len(ids) == 10_000
    tokens = {rid.rpartition(".")[2] for rid in ids}
    assert min(len(t) for t in tokens) >= 22  # 128 random bits


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "no-dot",
        ".token-only-aaaaaaaaaaaaaaaa",
        "!!!.aaaaaaaaaaaaaaaaaaaa",
        "cG9vbA.short",
        "cG9vbA.aaaa aaaaaaaaaaaaaaaaa",
    ],
)
def test_malformed_reservation_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidId):
        pool_of_reservation(bad)


def test_reservation_id_whose_pool_part_is_not_a_valid_pool_id_is_rejected() -> None:
    import base64

    encoded = base64.urlsafe_b64encode(b"bad pool/id").rstrip(b"=").decode()
    with pytest.raises(InvalidId):
        pool_of_reservation(f"{encoded}.{'a' * 22}")


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "slash/no", "ümlaut"])
def test_invalid_pool_ids(bad: str) -> None:
    with pytest.raises(InvalidId):
        check_pool_id(bad)
