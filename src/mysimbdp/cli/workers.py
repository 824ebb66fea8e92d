"""``mysimbdp worker token create|list|revoke``: the tokens of remote chunk workers.

A worker token lets ``mysimbdp worker --api URL`` claim and run chunks through the platform API
and nothing else (no tenant's data through any other route). It is shown once when created;
only its sha256 is kept in the meta store. A revoked token is refused at its next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mysimbdp.cli.context import emit_json, with_platform

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform

__all__ = ["worker_token"]


@click.group("token")
def worker_token() -> None:
    """Tokens of remote chunk workers (`mysimbdp worker --api URL`)."""


@worker_token.command("create")
@click.option("--name", default="", help="What the token is for (e.g. the machine), shown by `list`.")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, token} as JSON.")
@with_platform
def create(platform: Platform, name: str, as_json: bool) -> None:
    """Issue a worker token: printed once, give it to the worker as MYSIMBDP_WORKER_TOKEN."""
    from mysimbdp.services.remotework import issue_token

    token, secret = issue_token(platform, name)
    if as_json:
        emit_json({"id": token.id, "name": token.name, "token": secret, "created_at": token.created_at})
        return
    click.echo(f"worker token {token.id} created; set on the worker (shown once):")
    click.echo(f"MYSIMBDP_WORKER_TOKEN={secret}")


@worker_token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as JSON.")
@with_platform
def list_tokens(platform: Platform, as_json: bool) -> None:
    """The worker tokens issued (never their secrets), revoked ones included."""
    tokens = platform.meta.worker_tokens.all()
    if as_json:
        emit_json(
            [{"id": t.id, "name": t.name, "created_at": t.created_at, "revoked_at": t.revoked_at} for t in tokens]
        )
        return
    for t in tokens:
        click.echo(f"{t.id}  {'revoked' if t.revoked else 'active '}  {t.name}")


@worker_token.command("revoke")
@click.argument("token_id")
@with_platform
def revoke(platform: Platform, token_id: str) -> None:
    """Revoke worker token TOKEN_ID: its next request is refused (401)."""
    from mysimbdp.services.remotework import revoke_token

    revoke_token(platform, token_id)
    click.echo(f"worker token {token_id} revoked")
