"""What ``doctor``'s checks share: the ``Check`` value, the timeout, and the hosts of a URL.

A store or broker URL may name several hosts, as each client library writes them:
``postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`` (libpq) and
``nats://h1:4222,nats://h2:4222`` (a NATS server list). :func:`endpoints` lists every
``(host, port)`` of either form and :func:`reach` asks each at once, so that a detail can
name which host answers and which does not. A leaf: it imports nothing of the package.
"""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CONNECT_TIMEOUT_S", "Check", "answers", "endpoints", "host_list", "reach"]

CONNECT_TIMEOUT_S = 2.0
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "nats": 4222, "tls": 4222, "amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | warn | fail
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host_port(text: str, default: int) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) without any ``user:password@``; "" for no host."""
    text = text.rpartition("@")[2].strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    return host, int(port) if port.isdigit() else default


def endpoints(url: str) -> list[tuple[str, int]]:
    """``(host, port)`` of every host ``url`` names, in order; a host left out (a PostgreSQL
    unix socket) is not listed, nor is anything of a scheme without a default port.

    The items between commas are whole URLs (``amqp://u:p@r1/v,amqp://u:p@r2/v``) or bare
    hosts, the last one possibly followed by the path and query (``h1:5432,h2:5432/db?...``)."""
    default = DEFAULT_PORTS.get(urlsplit(url).scheme)
    if not url or default is None:
        return []
    netlocs = []
    for item in url.split(","):
        if "://" in item:
            netlocs.append(urlsplit(item.strip()).netloc)
        else:
            netlocs.append(re.split(r"[/?]", item.strip(), maxsplit=1)[0])
    hosts = [_host_port(netloc, default) for netloc in netlocs]
    return [(host, port) for host, port in hosts if host]


def answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def reach(url: str) -> dict[str, bool]:
    """``{"host:port": answers}`` for every host of ``url``, asked at once."""
    addresses = endpoints(url)
    if not addresses:
        return {}
    with ThreadPoolExecutor(len(addresses)) as pool:
        answered = list(pool.map(answers, addresses))
    return {f"{h}:{p}": up for (h, p), up in zip(addresses, answered, strict=True)}


def host_list(reached: dict[str, bool]) -> str:
    """``h1:5432 answers, h2:5432 does not answer`` (each host of a multi-host URL, in order)."""
    return ", ".join(f"{where} {'answers' if up else 'does not answer'}" for where, up in reached.items())
