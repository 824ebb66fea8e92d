"""``doctor``'s ``broker replicas`` on NATS: the cluster, and each platform stream's copies.

Every host of the broker URL is asked for the ``INFO`` a NATS server sends first (its name,
its cluster, the cluster's client URLs: how many nodes are up), its monitoring port (8222,
``/jsz``: the JetStream meta leader and cluster size) when it is open, then JetStream
through the nodes that answered: ``$JS.API.INFO`` (an error here: no meta leader) and the
stream list, each platform stream's (``MYSIMBDP_<tenant>``) configured replicas, leader and
each peer's ``current``, ``offline`` and ``lag``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mysimbdp.adapters.broker.base import split_urls
from mysimbdp.adapters.broker.nats.names import stream_name
from mysimbdp.errors import BrokerError
from mysimbdp.services.doctor_net import CONNECT_TIMEOUT_S, endpoints
from mysimbdp.settings import mask_url

__all__ = ["MONITOR_PORT", "nats_replicas"]

STREAM_PREFIX = stream_name("")  # MYSIMBDP_<tenant>: the platform's JetStream streams
MONITOR_PORT = 8222  # nats-server's monitoring port (http: in its config), docs/deployment.md


def _server_info(address: tuple[str, int]) -> dict[str, Any] | str:
    """The ``INFO`` a NATS server sends first on a connection, or why there is none."""
    try:
        with socket.create_connection(address, timeout=CONNECT_TIMEOUT_S) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            line = sock.makefile("rb").readline(1 << 16)
    except OSError as exc:
        return f"does not answer ({exc.strerror or type(exc).__name__})"
    if not line.startswith(b"INFO "):
        return "answers, but not as a NATS server"
    info = json.loads(line[5:])
    return info if isinstance(info, dict) else "sent an INFO that is not an object"


def _meta_cluster(host: str) -> dict[str, Any] | None:
    """``/jsz``'s ``meta_cluster`` from the monitoring port of ``host``; None when closed."""
    url = f"http://{host}:{MONITOR_PORT}/jsz"
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as answer:
            meta = json.loads(answer.read()).get("meta_cluster")
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


async def _ask(nc: Any, subject: str, body: bytes = b"") -> dict[str, Any]:
    """JetStream's answer to ``subject``; BrokerError when there is none or it is an error."""
    import nats.errors

    try:
        answer = json.loads((await nc.request(subject, body, timeout=CONNECT_TIMEOUT_S)).data)
    except (OSError, TimeoutError, ValueError, nats.errors.Error) as exc:
        raise BrokerError(f"JetStream does not answer {subject} ({type(exc).__name__}): is it on?") from exc
    if "error" in answer:
        error = answer["error"]
        raise BrokerError(
            f"JetStream: {error.get('description')} (code {error.get('code')}): no meta leader, "
            "a majority of the cluster's nodes down?"
        )
    return dict(answer)


async def _jetstream(servers: list[str]) -> list[dict[str, Any]]:
    """Every platform stream's info (``$JS.API.STREAM.LIST``, page by page), through the
    first of ``servers`` (one URL each) that takes the connection."""
    from mysimbdp.adapters.broker.nats import natspy  # noqa: F401  # before nats: see there

    # isort: split
    import nats
    import nats.errors

    queries = [dict(parse_qsl(urlsplit(s).query)) for s in servers]  # ?inbox= may follow any node
    inbox = next((q["inbox"] for q in queries if q.get("inbox")), "_INBOX")
    servers = [urlsplit(s)._replace(query="").geturl() for s in servers]
    try:
        nc = await nats.connect(servers, inbox_prefix=inbox, connect_timeout=CONNECT_TIMEOUT_S, allow_reconnect=False)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BrokerError(f"cannot connect ({type(exc).__name__}: {exc})") from exc
    try:
        await _ask(nc, "$JS.API.INFO")
        streams: list[dict[str, Any]] = []
        while True:
            page = await _ask(nc, "$JS.API.STREAM.LIST", json.dumps({"offset": len(streams)}).encode())
            streams.extend(page.get("streams") or [])
            if not page.get("streams") or len(streams) >= int(page.get("total", 0)):
                break
    finally:
        await nc.close()
    return [s for s in streams if str(s.get("config", {}).get("name", "")).startswith(STREAM_PREFIX)]


def _stream_problems(stream: dict[str, Any], replicas: int) -> tuple[dict[str, Any], list[str]]:
    config, cluster = stream.get("config", {}), stream.get("cluster") or {}
    name, configured = str(config.get("name")), int(config.get("num_replicas") or 1)
    peers = [
        {"name": p.get("name"), "current": bool(p.get("current")), "offline": bool(p.get("offline"))}
        | {"lag": p.get("lag"), "active_s": round(int(p.get("active") or 0) / 1e9, 3)}  # since last heard of
        for p in cluster.get("replicas") or []
    ]
    found = {"name": name, "replicas": configured, "leader": cluster.get("leader", ""), "peers": peers}
    problems = []
    if configured < replicas:
        problems.append(
            f"stream {name} keeps {configured} cop{'y' if configured == 1 else 'ies'}, "
            f"MYSIMBDP_BROKER_REPLICAS={replicas} (made before the setting: `nats stream edit {name} --replicas "
            f"{replicas}`)"
        )
    if configured > 1 and not found["leader"]:
        problems.append(f"stream {name} has no leader (a majority of its {configured} copies is down)")
    for peer in peers:
        if peer["offline"]:
            problems.append(f"stream {name}: the copy on {peer['name']} is offline")
        elif not peer["current"]:
            behind = f"{peer['lag']} operations behind, " if peer["lag"] else ""
            problems.append(
                f"stream {name}: the copy on {peer['name']} is not current ({behind}last heard of "
                f"{peer['active_s']:.1f} s ago)"
            )
    return found, problems


def nats_replicas(url: str, replicas: int, where: str) -> tuple[str, list[str], dict[str, Any]]:
    """(what was found, the problems, data) of the NATS broker at ``url`` (named ``where``)."""
    addresses = endpoints(url)
    with ThreadPoolExecutor(max(1, len(addresses))) as pool:
        infos = dict(zip((f"{h}:{p}" for h, p in addresses), pool.map(_server_info, addresses), strict=True))
    answered = {at: info for at, info in infos.items() if isinstance(info, dict)}
    hosts = {at: (info["server_name"] if isinstance(info, dict) else info) for at, info in infos.items()}
    data: dict[str, Any] = {"kind": "NATS", "replicas": replicas, "hosts": hosts, "url": mask_url(url)}
    named = ", ".join(f"{at}: {what}" for at, what in hosts.items())
    if not answered:
        return f"NATS {where}", [f"no host answers ({named})"], data
    cluster = next((str(i["cluster"]) for i in answered.values() if i.get("cluster")), "")
    node_urls = sorted({u for i in answered.values() for u in i.get("connect_urls") or []})
    nodes = max(len(node_urls), len(answered)) if cluster else 1
    up = [(h, p) for h, p in addresses if f"{h}:{p}" in answered]
    meta = _meta_cluster(up[0][0]) if cluster else None  # the first node that answered
    data.update(cluster=cluster, nodes=nodes, node_urls=node_urls, meta_cluster=meta)
    found = f"NATS {where}: " + (f"cluster {cluster!r} of {nodes} node(s) up" if cluster else "1 node, not clustered")
    if meta is not None:
        found += f", meta leader {meta.get('leader') or 'NONE'} of {meta.get('cluster_size')} (:{MONITOR_PORT}/jsz)"
    found += f" ({named})"
    problems = []
    if nodes < replicas:
        problems.append(f"{nodes} node(s) < MYSIMBDP_BROKER_REPLICAS={replicas}: streams cannot keep {replicas} copies")
    if meta is not None and not meta.get("leader"):
        problems.append(f"JetStream has no meta leader ({meta.get('cluster_size')} nodes configured)")
    # only the nodes whose INFO came: one that is silent costs no connect timeout here
    nodes_up = [node for node, (h, p) in zip(split_urls(url), addresses, strict=False) if (h, p) in up]
    try:
        streams = asyncio.run(asyncio.wait_for(_jetstream(nodes_up), 3 * CONNECT_TIMEOUT_S))
    except (OSError, TimeoutError, BrokerError) as exc:
        problems.append(str(exc) if isinstance(exc, BrokerError) else f"JetStream: {type(exc).__name__}")
        return found, problems, data
    data["streams"] = []
    for stream in streams:
        facts, wrong = _stream_problems(stream, replicas)
        data["streams"].append(facts)
        problems.extend(wrong)
    return f"{found}, JetStream answers; {len(streams)} platform stream(s)", problems, data
