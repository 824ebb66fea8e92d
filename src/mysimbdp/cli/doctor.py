"""``mysimbdp doctor``: the environment checks (``services.doctor``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from mysimbdp.cli.context import with_platform

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help='Print {"checks": [{name, state, detail, data}], "ok"}.')
@click.option(
    "--api",
    "api_url",
    envvar="MYSIMBDP_API_URL",
    show_envvar=True,
    default="",
    metavar="URL",
    help="A worker node's platform API (http://HOST:8731): check that its /healthz answers.",
)
@with_platform(start=False)
def doctor(platform: Platform, as_json: bool, api_url: str) -> None:
    """Check this machine and these settings before `up` or `worker`: the tenant-app sandbox
    (Landlock ABI, or why apps cannot run), the meta store, coredms, the broker (each host of
    a multi-host URL), the broker's copies of each stream, the store's replication, the API
    address (and the platform's API from a worker node), Python and free disk in the home.
    Each check says ok, WARN or FAIL with what it found and what to do; none waits more than
    about 2 s (a cluster's stream list a few).

    \b
    Reads:
      MYSIMBDP_HOME                      the platform home (disk, HOME/broker/url)
      MYSIMBDP_SANDBOX=on|off            off: apps run unconfined (a warning)
      MYSIMBDP_META_URL                  the meta store, opened
      MYSIMBDP_COREDMS_URL               coredms: SQLite directory writable, or PostgreSQL
                                         reached with this admin URL (can create roles)
      MYSIMBDP_BROKER_URL                reached by TCP, each host of nats://h1:4222,nats://h2:4222;
                                         empty: the embedded nats-server binary, and a
                                         running platform's broker
      MYSIMBDP_BROKER_REPLICAS           against the broker: NATS cluster nodes and each platform
                                         stream's replicas and peers; RabbitMQ running nodes and
                                         each platform quorum queue's members (management API,
                                         MYSIMBDP_BROKER_ADMIN_URL). 1: a warning (one copy)
      (store replication)                PostgreSQL: the primary, synchronous_standby_names and
                                         pg_stat_replication (ok with a synchronous standby,
                                         WARN with none, FAIL when one is required and absent);
                                         SQLite: one machine, no replication
      MYSIMBDP_API_HOST, MYSIMBDP_API_PORT
                                         free to bind, or a running platform's /healthz
      MYSIMBDP_API_URL (--api)           a worker node's platform: its /healthz answers
      MYSIMBDP_SECRET_KEY, MYSIMBDP_SECRET_KEY_FILE
                                         the key sealing secrets at rest: it seals and opens

    Exit code 0 when no check failed (warnings do not fail), 1 when one did."""
    import orjson

    from mysimbdp.services.doctor import run_checks  # its imports only when the command runs

    try:
        checks = run_checks(platform, api_url)
    finally:
        platform.close()
    failed = [c.name for c in checks if c.state == "fail"]
    if as_json:
        click.echo(orjson.dumps({"checks": [c.as_dict() for c in checks], "ok": not failed}).decode())
    else:
        for c in checks:
            click.echo(f"[{MARKS[c.state]}] {c.name}: {c.detail}")
        warned = [c.name for c in checks if c.state == "warn"]
        verdict = f"failed: {', '.join(failed)}" if failed else "ready"
        click.echo(verdict + (f"; warnings: {', '.join(warned)}" if warned else ""))
    if failed:
        sys.exit(1)
