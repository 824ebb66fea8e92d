"""Which addresses a tenant's webhook may make the platform post to."""

from __future__ import annotations

import pytest

from mysimbdp.domain.egress import parse_allow_list, refusal
from mysimbdp.errors import ConfigError


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4-mapped address is judged as the IPv4 one
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(address: str, kind: str) -> None:
    assert (
        refusal([address], ())
        == f"address {address.removeprefix('::ffff:')} is {kind} (MYSIMBDP_WEBHOOK_ALLOW does not list it)"
    )


def test_public_addresses_pass_and_the_allow_list_opens_a_network() -> None:
    assert refusal(["93.184.216.34", "2606:2800:220:1::1"], ()) is None
    allow = parse_allow_list("127.0.0.1/32, 10.0.0.0/8")
    assert refusal(["127.0.0.1", "10.9.9.9"], allow) is None
    assert refusal(["127.0.0.2"], allow) is not None
    assert refusal(["93.184.216.34", "10.0.0.1", "192.168.1.1"], allow) is not None  # any refused address refuses


def test_a_bad_allow_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MYSIMBDP_WEBHOOK_ALLOW: 'localhost'"):
        parse_allow_list("127.0.0.1/32,localhost")
