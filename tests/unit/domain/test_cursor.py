"""Read-API cursors: a cursor round-trips its position in its scope, and a forged, altered,
truncated or foreign one (another tenant, dataset, sort or filter) is refused clearly."""

from __future__ import annotations

import base64

import orjson
import pytest

from mysimbdp.domain.cursor import MAX_CURSOR_CHARS, CursorCodec, CursorScope, cursor_key
from mysimbdp.errors import FilterError

KEY = cursor_key("platform secret")
SCOPE = CursorScope(tenant="acme", dataset="orders", sort="-ts", filter_digest="abc123")
codec = CursorCodec([KEY])


def refused(token: str, scope: CursorScope = SCOPE, using: CursorCodec = codec) -> FilterError:
    with pytest.raises(FilterError) as info:
        using.decode(token, scope)
    assert info.value.rule == "cursor"
    return info.value


def test_round_trip_of_every_kind_of_position() -> None:
    """(sort value, key) of each JSON scalar type comes back exactly, floats included."""
    for position in [("k1",), (None, "k2"), (0.1, "k"), (2**63 - 1, "k"), ("é😀", "k"), (True, "k")]:
        token = codec.encode(SCOPE, position)
        assert codec.decode(token, SCOPE) == position
        assert token.startswith("1.") and "=" not in token


def test_another_tenant_cannot_use_it_and_learns_nothing() -> None:
    """A cursor of tenant acme under tenant evil: the signature fails; the tenant is not in it."""
    token = codec.encode(SCOPE, ("x", "k1"))
    error = refused(token, CursorScope("evil", "orders", "-ts", "abc123"))
    assert "altered, forged, or issued for another tenant" in str(error)
    assert b"acme" not in base64.urlsafe_b64decode(token.split(".")[1] + "==")


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (
            CursorScope("acme", "invoices", "-ts", "abc123"),
            "issued for dataset 'orders', not 'invoices'",
        ),
        (CursorScope("acme", "orders", "key", "abc123"), "issued for sort '-ts', not 'key': send the same sort"),
        (CursorScope("acme", "orders", "-ts", "zzz"), "issued for another filter than this request's: send"),
    ],
)
def test_another_dataset_sort_or_filter_is_named(scope: CursorScope, message: str) -> None:
    """A genuine cursor sent with another dataset, sort or filter: refused, naming the binding."""
    error = refused(codec.encode(SCOPE, ("x", "k1")), scope)
    assert message in str(error)


def test_altered_forged_and_malformed_cursors_are_refused() -> None:
    """A changed payload, a payload signed with another key, garbage, a wrong version: refused."""
    token = codec.encode(SCOPE, ("x", "k1"))
    version, payload, mac = token.split(".")
    body = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    body["p"] = ["y", "k0"]
    altered = base64.urlsafe_b64encode(orjson.dumps(body)).rstrip(b"=").decode()
    assert "altered, forged" in str(refused(f"{version}.{altered}.{mac}"))
    other = CursorCodec([cursor_key("another platform")]).encode(SCOPE, ("x", "k1"))
    assert "altered, forged" in str(refused(other))
    assert "altered, forged" in str(refused(f"1.{payload}.{mac[:-2]}"))
    assert "altered, forged" in str(refused("1.@@@.!!!"))
    assert "expected '1.<payload>.<signature>'" in str(refused("2." + token[2:]))
    assert "expected" in str(refused("garbage"))
    assert f"longer than {MAX_CURSOR_CHARS}" in str(refused("1." + "a" * MAX_CURSOR_CHARS))


def test_rotated_keys_keep_cursors_in_flight() -> None:
    """After a key rotation (new key first, old kept) an old cursor still verifies."""
    new = CursorCodec([cursor_key("new secret"), KEY])
    assert new.decode(codec.encode(SCOPE, ("k",)), SCOPE) == ("k",)
    assert "altered" in str(refused(new.encode(SCOPE, ("k",))))  # the old codec alone cannot verify the new key


def test_positions_must_be_scalars_and_fit() -> None:
    """A position of objects, an empty one, or one too long for a URL: refused when encoding."""
    with pytest.raises(FilterError, match="JSON scalars only"):
        codec.encode(SCOPE, ({"a": 1}, "k"))
    with pytest.raises(FilterError, match="JSON scalars only"):
        codec.encode(SCOPE, ())
    with pytest.raises(FilterError, match=rf"limit {MAX_CURSOR_CHARS}\); sort by key or a shorter field"):
        codec.encode(SCOPE, ("x" * MAX_CURSOR_CHARS, "k"))
    with pytest.raises(ValueError, match="16 bytes"):
        CursorCodec([b"short"])
