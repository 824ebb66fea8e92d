"""Where the platform itself may send a tenant's webhook: never to its own machine or network.

A webhook URL is tenant input, and the notifier runs inside the platform: a URL naming
``127.0.0.1:8731``, a private address or a cloud metadata address (``169.254.169.254``)
would make the platform post to services the tenant cannot reach itself (server-side
request forgery). :func:`refusal` refuses every address that is not public unless the
operator allow-listed its network (``MYSIMBDP_WEBHOOK_ALLOW=127.0.0.1/32,10.1.0.0/16``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from mysimbdp.errors import ConfigError

__all__ = ["Network", "parse_allow_list", "refusal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_list(text: str) -> tuple[Network, ...]:
    """``MYSIMBDP_WEBHOOK_ALLOW``: comma-separated networks (``127.0.0.1/32``, ``10.0.0.0/8``)."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"MYSIMBDP_WEBHOOK_ALLOW: {item!r} is not a network such as 127.0.0.1/32: {exc}") from exc
    return tuple(networks)


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return None


def refusal(addresses: Iterable[str], allow: Sequence[Network]) -> str | None:
    """Why the platform must not connect to these resolved addresses (the first that is
    loopback, private, link-local, multicast, reserved or unspecified and not allow-listed);
    None when every one is public or allowed."""
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        kind = _kind(address)
        if kind is not None and not any(address in network for network in allow):
            return f"address {address} is {kind} (MYSIMBDP_WEBHOOK_ALLOW does not list it)"
    return None
