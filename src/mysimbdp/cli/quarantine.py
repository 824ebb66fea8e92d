"""``mysimbdp quarantine list|show|replay|purge|purges``: a tenant's quarantined rows and
messages, replayed after a fix or deleted for good (``services.quarantine``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

from mysimbdp.cli.context import with_platform
from mysimbdp.cli.remote import or_remote

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform
    from mysimbdp.services.quarantine import PurgeRecord, Selection
    from mysimbdp.services.quarantine_replay import ProgressFn, ReplayOutcome, ReplayProgress

RAW_EXCERPT_CHARS = 80


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _selection(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)
    f = click.option("--stream", "stream", default=None, help="Only this stream's messages.")(f)
    f = click.option("--file", "file_id", default=None, help="Only this file's rows (its id, see 'mysimbdp files').")(f)
    return click.option("--tenant", "tenant_id", required=True, help="Tenant id.")(f)


def _select(tenant_id: str, file_id: str | None, stream: str | None) -> Selection:
    from mysimbdp.services.quarantine import Selection

    if file_id is not None and stream is not None:
        raise click.UsageError("give --file or --stream, not both")
    return Selection(tenant_id, file_id, stream)


@click.group("quarantine")
def quarantine() -> None:
    """A tenant's quarantined rows (files) and messages (streams): list, show, replay
    after fixing the app or the profile, or purge for good."""


@quarantine.command("list")
@_selection
@or_remote("quarantine list")
@with_platform
def quarantine_list(platform: Platform, tenant_id: str, file_id: str | None, stream: str | None, as_json: bool) -> None:
    """How many entries each file and stream has, and why (the most frequent reasons).

    From another machine: `--api URL` (or MYSIMBDP_API_URL) with the tenant's key in MYSIMBDP_API_KEY.
    """
    from mysimbdp.cli import render
    from mysimbdp.services import quarantine as service

    summaries = service.summarize(platform, _select(tenant_id, file_id, stream))
    items = [
        {
            "tenant": s.tenant,
            "kind": s.kind,
            "source": s.source,
            "name": s.name,
            "entries": s.entries,
            "first_at": s.first_at,
            "last_at": s.last_at,
            "reasons": [{"reason": r, "count": n} for r, n in s.reasons],
        }
        for s in summaries
    ]
    if as_json:
        _emit_json(items)
    else:
        render.quarantine_sources(tenant_id, items)


@quarantine.command("show")
@_selection
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Entries per page.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Entries to skip.")
@with_platform
def quarantine_show(
    platform: Platform, tenant_id: str, file_id: str | None, stream: str | None, as_json: bool, limit: int, offset: int
) -> None:
    """The entries themselves: source, line, reason and the raw text, a page at a time."""
    from rich.table import Table

    from mysimbdp.cli import render
    from mysimbdp.services import quarantine as service

    entries, total = service.show(platform, _select(tenant_id, file_id, stream), limit=limit, offset=offset)
    if as_json:
        items = [
            {"file_id": e.file_id, "line": e.line, "reason": e.reason, "raw": e.raw, "run_id": e.run_id, "at": e.at}
            for e in entries
        ]
        _emit_json({"items": items, "total": total, "limit": limit, "offset": offset})
        return
    table = Table("source", "line", "reason", "raw (excerpt)")
    for e in entries:
        raw = e.raw if len(e.raw) <= RAW_EXCERPT_CHARS else e.raw[:RAW_EXCERPT_CHARS] + "…"
        table.add_row(e.file_id, str(e.line), e.reason, raw)
    render.out.print(table)
    shown = f"{offset + 1}-{offset + len(entries)}" if entries else "none"
    click.echo(f"entries {shown} of {total}" + (f"; next: --offset {offset + limit}" if offset + limit < total else ""))


@contextmanager
def _replay_progress(enabled: bool) -> Iterator[ProgressFn | None]:
    """A progress bar on stderr (entries handled of all), as ``ingest --wait`` draws one."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mysimbdp.cli import render

    columns = (
        TextColumn("[bold]replay[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("entries"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=render.err, transient=False) as bar:
        task = bar.add_task("", total=None)

        def update(p: ReplayProgress) -> None:
            bar.update(task, description=p.source, total=p.total, completed=p.done)

        yield update


@quarantine.command("replay")
@_selection
@with_platform
def quarantine_replay(
    platform: Platform, tenant_id: str, file_id: str | None, stream: str | None, as_json: bool
) -> None:
    """Ingest the entries again, after the app or the profile was fixed.

    A file's rows go through the tenant's batch app again, here and now, each under the key
    it would have had the first time (nothing is stored twice; a second replay is a no-op):
    a row stored leaves the quarantine, a row rejected again stays with its new reason.
    A stream's messages are republished with their original ids through the platform's
    broker (needs `mysimbdp up` or MYSIMBDP_BROKER_URL) for its stream app to store.
    Exit code 1 when a replay run failed (its entries stay).
    """
    import asyncio

    from mysimbdp.services import quarantine_replay as replay_service

    sel = _select(tenant_id, file_id, stream)
    with _replay_progress(not as_json) as on_progress:
        outcomes = asyncio.run(replay_service.replay(platform, sel, on_progress=on_progress))
    if as_json:
        _emit_json([replay_service.outcome_json(o) for o in outcomes])
    else:
        _print_outcomes(outcomes)
    if any(o.errors for o in outcomes):
        sys.exit(1)


def _print_outcomes(outcomes: list[ReplayOutcome]) -> None:
    if not outcomes:
        click.echo("nothing quarantined: nothing to replay")
    for o in outcomes:
        if o.kind == "batch":
            click.echo(
                f"{o.name} ({o.source}): {o.replayed} of {o.entries} replayed: {o.restored} stored, "
                f"{o.already_stored} already stored, {o.skipped} skipped by the app, "
                f"{o.quarantined_again} quarantined again; {o.remaining} still quarantined"
            )
        else:
            click.echo(
                f"stream {o.source}: {o.replayed} of {o.entries} messages republished ({o.records} records) "
                "for the stream app to store; one that fails again is quarantined again"
            )
        for line, why in o.not_replayable[:10]:
            click.echo(f"  not replayed: line {line}: {why}")
        if len(o.not_replayable) > 10:
            click.echo(f"  … and {len(o.not_replayable) - 10} more not replayed")
        for error in o.errors:
            click.echo(f"  error: {error}", err=True)


@quarantine.command("purge")
@_selection
@click.option("--all", "purge_all", is_flag=True, help="Every entry of the tenant (without --file or --stream).")
@click.option("--by", "purged_by", default=None, help="Who purges, as recorded. [default: the OS user]")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_platform
def quarantine_purge(
    platform: Platform,
    tenant_id: str,
    file_id: str | None,
    stream: str | None,
    as_json: bool,
    purge_all: bool,
    purged_by: str | None,
    yes: bool,
) -> None:
    """Delete entries for good (they can no longer be replayed); who and when is recorded."""
    from mysimbdp.services import quarantine as service

    sel = _select(tenant_id, file_id, stream)
    if (file_id is None and stream is None) != purge_all:
        raise click.UsageError("give --file FILE_ID, --stream NAME, or --all for every entry of the tenant")
    if not yes and not as_json:
        click.confirm(f"{sel}: delete the quarantined entries for good?", abort=True)
    record = service.purge(platform, sel, purged_by=purged_by or service.default_user(), via="cli")
    if as_json:
        _emit_json(_purge_json(record))
    else:
        click.echo(f"{sel}: {record.entries} entries purged by {record.purged_by} at {_when(record.at)} (UTC)")


def _purge_json(record: PurgeRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "selection": record.selection,
        "entries": record.entries,
        "purged_by": record.purged_by,
        "via": record.via,
        "at": record.at,
        "reasons": [{"reason": r, "count": n} for r, n in record.reasons],
    }


@quarantine.command("purges")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_platform
def quarantine_purges(platform: Platform, tenant_id: str, limit: int, as_json: bool) -> None:
    """The purges of the tenant's entries, newest first: who, when, what, how many."""
    from mysimbdp.services import quarantine as service

    records, total = service.purges(platform, tenant_id, limit=limit)
    if as_json:
        _emit_json({"items": [_purge_json(r) for r in records], "total": total})
        return
    for r in records:
        click.echo(f"{_when(r.at)} {r.selection}: {r.entries} entries purged by {r.purged_by} ({r.via})")
    if not records:
        click.echo(f"tenant {tenant_id}: no purges")
