"""``doctor``'s ``broker replicas`` check: the broker's copies of each platform stream
against ``MYSIMBDP_BROKER_REPLICAS`` (NATS in ``doctor_nats``; RabbitMQ here), and the
embedded broker said plainly.

On RabbitMQ, the management API's running nodes and each platform queue's (``mysimbdp.*``)
type, members and online members. ``warn`` at replicas 1 on a broker of its own (one copy: a
node loss loses what it holds); ``fail`` when the broker has fewer nodes than replicas, or a
stream or queue keeps fewer copies, lacks a leader, or has a lagging or offline copy. The
store's replication is ``doctor_postgres``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from mysimbdp.adapters.broker.base import split_urls
from mysimbdp.adapters.broker.rabbitmq.management import default_admin_url
from mysimbdp.errors import BrokerError, ConfigError
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor_nats import nats_replicas
from mysimbdp.services.doctor_net import CONNECT_TIMEOUT_S, Check
from mysimbdp.settings import mask_url

__all__ = ["broker_replicas"]

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
        return _verdict("broker replicas", replicas, *nats_replicas(url, replicas, mask_url(url)))
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
    found, problems, facts = nats_replicas(running, 1, "the running platform's broker")
    if problems:
        return _verdict("broker replicas", 1, found, problems, facts)
    return Check("broker replicas", "ok", f"{plain}; {found}", {**facts, "kind": "embedded"})
