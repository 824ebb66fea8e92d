"""``doctor``'s checks of a node in a multi-machine deployment: the broker's copies of each
stream against ``MYSIMBDP_BROKER_REPLICAS``, and the store's replication on PostgreSQL.

``broker replicas``: on NATS, every host of the URL is asked for its ``INFO`` (server name,
cluster, the cluster's client URLs: its node count), then JetStream for each platform stream
(``MYSIMBDP_<tenant>``): configured replicas, leader and each peer's ``current`` / ``offline``.
On RabbitMQ, the management API's running nodes and each platform queue's (``mysimbdp.*``)
type, members and online members. ``warn`` at replicas 1 on a broker of its own (one copy: a
node loss loses what it holds); ``fail`` when the broker has fewer nodes than replicas, or a
stream or queue keeps fewer copies, lacks a leader, or has a lagging or offline copy.

``store replication``: on PostgreSQL (the meta store and coredms, once per set of hosts):
each host's role (``pg_is_in_recovery()``), ``synchronous_standby_names`` and
``pg_stat_replication``. ``ok`` with a synchronous streaming standby; ``warn`` with none or
only asynchronous ones; ``fail`` when the URL leads to a standby, or standbys are required
(``synchronous_standby_names``) and none is connected in sync: every commit waits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mysimbdp.adapters.broker.base import split_urls
from mysimbdp.adapters.broker.nats.names import stream_name
from mysimbdp.adapters.broker.rabbitmq.management import default_admin_url
from mysimbdp.errors import BrokerError, ConfigError
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor_net import CONNECT_TIMEOUT_S, Check, endpoints
from mysimbdp.settings import mask_url

__all__ = ["broker_replicas"]

STREAM_PREFIX = stream_name("")  # MYSIMBDP_<tenant>: the platform's JetStream streams
QUEUE_PREFIX = "mysimbdp."  # the platform's RabbitMQ queues (a tenant's streams and dead letters)
SHOWN = 5  # problems named in a detail; all of them are in data


def _one_copy(kind: str) -> str:
    return (
        f"MYSIMBDP_BROKER_REPLICAS=1: one copy of each stream on {kind}: losing the node that holds it loses "
        "its unconsumed messages; on a 3-node cluster set MYSIMBDP_BROKER_REPLICAS=3 (docs/deployment.md)"
    )


def _verdict(name: str, replicas: int, found: str, problems: list[str], data: dict[str, Any]) -> Check:
    data["problems"] = problems
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        return Check(name, "fail", f"{found}: {'; '.join(problems[:SHOWN])}{more}", data)
    if replicas == 1:
        return Check(name, "warn", f"{found}; {_one_copy(data['kind'])}", data)
    return Check(name, "ok", f"{found}: every copy current", data)


# -- NATS --------------------------------------------------------------------------------------
def _server_info(address: tuple[str, int]) -> dict[str, Any] | str:
    """The ``INFO`` a NATS server sends first on a connection, or why there is none."""
    import socket

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


async def _jetstream(servers: list[str]) -> list[dict[str, Any]]:
    """Every platform stream's info (``$JS.API.STREAM.LIST``, page by page), through the
    first of ``servers`` (one URL each) that takes the connection."""
    import nats
    import nats.errors

    inbox = dict(parse_qsl(urlsplit(servers[0]).query)).get("inbox", "_INBOX")
    servers = [urlsplit(s)._replace(query="").geturl() for s in servers]
    try:
        nc = await nats.connect(
            servers,
            inbox_prefix=inbox,
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BrokerError(f"cannot connect ({type(exc).__name__}: {exc})") from exc
    try:
        await nc.request("$JS.API.INFO", b"", timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        await nc.close()
        raise BrokerError(
            f"JetStream does not answer ({type(exc).__name__}): JetStream off, or no meta leader"
        ) from exc
    try:
        streams: list[dict[str, Any]] = []
        while True:
            answer = await nc.request(
                "$JS.API.STREAM.LIST", json.dumps({"offset": len(streams)}).encode(), timeout=CONNECT_TIMEOUT_S
            )
            page = json.loads(answer.data)
            if "error" in page:
                raise BrokerError(f"JetStream refused the stream list: {page['error'].get('description', page)}")
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
        {
            "name": p.get("name"),
            "current": bool(p.get("current")),
            "offline": bool(p.get("offline")),
            "lag": p.get("lag"),
        }
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
        if peer["offline"] or not peer["current"]:
            how = "offline" if peer["offline"] else f"lagging ({peer['lag'] or 0} operations behind)"
            problems.append(f"stream {name}: the copy on {peer['name']} is {how}")
    return found, problems


def _nats(url: str, replicas: int, where: str) -> Check:
    addresses = endpoints(url)
    with ThreadPoolExecutor(max(1, len(addresses))) as pool:
        infos = dict(zip((f"{h}:{p}" for h, p in addresses), pool.map(_server_info, addresses), strict=True))
    answered = {where_: info for where_, info in infos.items() if isinstance(info, dict)}
    hosts = {w: (i["server_name"] if isinstance(i, dict) else i) for w, i in infos.items()}
    data: dict[str, Any] = {"kind": "NATS", "replicas": replicas, "hosts": hosts, "url": mask_url(url)}
    if not answered:
        return Check("broker replicas", "fail", f"NATS {where}: no host answers ({_named(hosts)})", data)
    cluster = next((str(i["cluster"]) for i in answered.values() if i.get("cluster")), "")
    node_urls = sorted({u for i in answered.values() for u in i.get("connect_urls") or []})
    nodes = max(len(node_urls), len(answered)) if cluster else 1
    data.update(cluster=cluster, nodes=nodes, node_urls=node_urls)
    named = f"cluster {cluster!r} of {nodes} node(s)" if cluster else "1 node, not clustered"
    found = f"NATS {where}: {named} ({_named(hosts)})"
    problems = []
    if nodes < replicas:
        problems.append(f"{nodes} node(s) < MYSIMBDP_BROKER_REPLICAS={replicas}: streams cannot keep {replicas} copies")
    # only the nodes whose INFO came: one that is silent costs no connect timeout here
    nodes_up = [node for node, (h, p) in zip(split_urls(url), addresses, strict=False) if f"{h}:{p}" in answered]
    try:
        streams = asyncio.run(asyncio.wait_for(_jetstream(nodes_up), 3 * CONNECT_TIMEOUT_S))
    except (OSError, TimeoutError, BrokerError) as exc:
        problems.append(str(exc) if isinstance(exc, BrokerError) else f"JetStream: {type(exc).__name__}")
        return _verdict("broker replicas", replicas, found, problems, data)
    data["streams"] = []
    for stream in streams:
        facts, wrong = _stream_problems(stream, replicas)
        data["streams"].append(facts)
        problems.extend(wrong)
    found += f", JetStream answers; {len(streams)} platform stream(s)"
    return _verdict("broker replicas", replicas, found, problems, data)


def _named(hosts: dict[str, str]) -> str:
    return ", ".join(f"{where}: {what}" for where, what in hosts.items())


# -- RabbitMQ ----------------------------------------------------------------------------------
def _get(node: str, path: str) -> Any:
    parts = urlsplit(node)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"MYSIMBDP_BROKER_ADMIN_URL: {mask_url(node)}: use http://user:password@host:15672")
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    request = urllib.request.Request(  # noqa: S310 (http(s), checked above)
        f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{path}",
        headers={"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as answer:  # noqa: S310 (as above)
        return json.loads(answer.read())


def _management(admin_url: str, path: str) -> Any:
    """``GET path`` of the management API, from the first node of ``admin_url`` that answers."""
    unreachable = []
    for node in split_urls(admin_url):
        try:
            return _get(node, path)
        except urllib.error.HTTPError as exc:
            raise BrokerError(f"RabbitMQ management API {mask_url(node)}: GET {path}: HTTP {exc.code}") from exc
        except (OSError, TimeoutError) as exc:
            unreachable.append(f"{mask_url(node)} ({exc})")
    raise BrokerError(
        f"RabbitMQ management API unreachable: {', '.join(unreachable)}; enable rabbitmq_management "
        "or set MYSIMBDP_BROKER_ADMIN_URL"
    )


def _queue_problems(queue: dict[str, Any], replicas: int) -> list[str]:
    name, members, online = queue.get("name"), queue.get("members") or [], set(queue.get("online") or [])
    if queue.get("type") != "quorum":
        return [f"queue {name} is {queue.get('type')}, not quorum: it has no copies"]
    problems = []
    if len(members) < replicas:
        problems.append(f"queue {name} has {len(members)} member(s), MYSIMBDP_BROKER_REPLICAS={replicas}")
    if not queue.get("leader"):
        problems.append(f"queue {name} has no leader")
    problems.extend(f"queue {name}: its member {m} is offline" for m in members if m not in online)
    return problems


def _rabbitmq(url: str, admin_url: str, replicas: int) -> Check:
    admin_url = admin_url or default_admin_url(url)
    vhost = unquote(urlsplit(split_urls(url)[0]).path.removeprefix("/")) or "/"
    data: dict[str, Any] = {"kind": "RabbitMQ", "replicas": replicas, "url": mask_url(url), "vhost": vhost}
    try:
        nodes = _management(admin_url, "/api/nodes?columns=name,running")
        queues = _management(admin_url, f"/api/queues/{quote(vhost, safe='')}?columns=name,type,members,online,leader")
    except (BrokerError, ConfigError) as exc:
        return Check("broker replicas", "fail", f"RabbitMQ {mask_url(url)}: {exc}", data)
    running = sorted(str(n["name"]) for n in nodes if n.get("running"))
    stopped = sorted(str(n["name"]) for n in nodes if not n.get("running"))
    ours = [q for q in queues if str(q.get("name", "")).startswith(QUEUE_PREFIX)]
    data.update(nodes=len(running), running=running, stopped=stopped, queues=ours)
    down = f", {len(stopped)} down ({', '.join(stopped)})" if stopped else ""
    found = f"RabbitMQ {mask_url(url)}: {len(running)} node(s) running ({', '.join(running)}){down}"
    problems = []
    if len(running) < replicas:
        problems.append(f"{len(running)} node(s) < MYSIMBDP_BROKER_REPLICAS={replicas}")
    for queue in ours:
        problems.extend(_queue_problems(queue, replicas))
    return _verdict("broker replicas", replicas, f"{found}; {len(ours)} platform queue(s) in {vhost!r}", problems, data)


def broker_replicas(platform: Platform) -> Check:
    """The broker's copies of each platform stream against ``MYSIMBDP_BROKER_REPLICAS``."""
    settings = platform.settings
    replicas, url = settings.broker_replicas, settings.broker_url
    if url and urlsplit(url).scheme in ("amqp", "amqps"):
        return _rabbitmq(url, settings.broker_admin_url, replicas)
    if url:
        return _nats(url, replicas, mask_url(url))
    data: dict[str, Any] = {"kind": "embedded", "replicas": replicas}
    if replicas > 1:
        detail = (
            f"MYSIMBDP_BROKER_REPLICAS={replicas}, but the embedded NATS is one node on this machine: run a "
            f"{replicas}-node NATS cluster and name it in MYSIMBDP_BROKER_URL (docs/deployment.md)"
        )
        return Check("broker replicas", "fail", detail, data)
    plain = "embedded NATS: single machine, one copy of each stream (a copy elsewhere needs a cluster)"
    try:
        running = platform.running_broker_url()
    except ConfigError:
        return Check("broker replicas", "ok", plain, data)
    check = _nats(running, 1, "the running platform's broker")
    if check.state == "fail":
        return check
    return Check("broker replicas", "ok", f"{plain}; {check.detail.partition('; MYSIMBDP_BROKER_REPLICAS=1')[0]}", data)
