"""``mysimbdp doctor``: the environment checks (``services.doctor``)."""

from __future__ import annotations

import sys

import click
import orjson

from mysimbdp.platform import Platform

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_obj
def doctor(platform: Platform, as_json: bool) -> None:
    """Check this machine and these settings: the tenant-app sandbox (Landlock ABI, or why
    apps cannot run), the meta store, coredms, the broker, the API address, Python, disk.

    Reads MYSIMBDP_SANDBOX (on|off), MYSIMBDP_META_URL, MYSIMBDP_COREDMS_URL,
    MYSIMBDP_BROKER_URL (empty: the embedded NATS server), MYSIMBDP_API_HOST and
    MYSIMBDP_API_PORT. Exit code 1 when a check failed; warnings (the sandbox off, little
    disk space) do not fail."""
    from mysimbdp.services.doctor import run_checks

    checks = run_checks(platform)
    failed = any(c.state == "fail" for c in checks)
    if as_json:
        click.echo(orjson.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}).decode())
    else:
        for c in checks:
            click.echo(f"[{MARKS[c.state]}] {c.name}: {c.detail}")
    if failed:
        sys.exit(1)
