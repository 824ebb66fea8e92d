"""``mysimbdp ingest|query|report|files``: a tenant's data in, back out, and what happened to it."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mysimbdp.cli.context import EXIT_FAILED, EXIT_REJECTED, binary_output, emit_json, with_platform
from mysimbdp.cli.remote import or_remote

if TYPE_CHECKING:
    from mysimbdp.runtime.platform import Platform


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_id", required=True, help="The tenant the file belongs to.")
@click.option("--wait", is_flag=True, help="Follow the file to its final state with a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON (implies --wait).")
@or_remote("ingest", uploads=True)
@with_platform
def ingest(platform: Platform, file: Path, tenant_id: str, wait: bool, as_json: bool) -> None:
    """Put FILE into the tenant's inbox and ingest it.

    With a running platform (`mysimbdp up`) the file is handed over to it; without one,
    this command fetches, validates, stages and runs it itself. Exit code 0 when the file
    was ingested (fully, or partly with quarantined rows the profile tolerates), 3 when it
    was rejected, 4 when its ingestion failed.

    From another machine, with `--api URL` (or MYSIMBDP_API_URL) and the tenant's key in
    MYSIMBDP_API_KEY, the file is uploaded to the platform's HTTP API (a file over
    --resumable-over bytes resumably: run the command again after an interruption and it
    continues where the server's copy ends); --wait, --json and the exit codes are the same.
    """
    import asyncio

    from mysimbdp.cli.summary import file_summary, print_file_summary
    from mysimbdp.domain.states import FileStatus
    from mysimbdp.services.ingest import ProgressFn, ingest_one

    wait = wait or as_json
    progress: contextlib.AbstractContextManager[ProgressFn | None]
    if wait and not as_json and sys.stderr.isatty():
        from mysimbdp.cli import render  # rich: only for the progress bar on a terminal

        progress = render.ingest_progress(name=file.name)
    else:
        progress = contextlib.nullcontext(None)
    with progress as on_progress:
        record = asyncio.run(ingest_one(platform, tenant_id, file, wait=wait, on_progress=on_progress))
    if record is None:
        click.echo(f"{file.name}: handed to the running platform (use --wait to follow it)")
        return
    summary = file_summary(platform, record)
    if as_json:
        emit_json(summary)
    else:
        print_file_summary(summary)
    if record.status in (FileStatus.REJECTED, FileStatus.DUPLICATE):
        sys.exit(EXIT_REJECTED)
    if record.status is not FileStatus.INGESTED:
        sys.exit(EXIT_FAILED)


FORMATS = ("ndjson", "csv", "parquet")


@click.command()
@click.option("--tenant", "tenant_id", required=True)
@click.option("--dataset", required=True, help="Dataset name (default profile: the file's stem).")
@click.option("--count", is_flag=True, help="Print the number of (matching) documents only.")
@click.option("--where", default=None, metavar="JSON", help='A filter, e.g. \'{"city": "Oslo", "t": {"$gt": 3}}\'.')
@click.option("--fields", default=None, metavar="A,B.C", help="Only these fields (nested: a.b).")
@click.option(
    "--sort", default=None, metavar="F", help="key (default), ingested_at or an indexed field; -F descending."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="ndjson", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here, not stdout.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most N documents (default: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@or_remote("query")
@with_platform
def query(
    platform: Platform,
    tenant_id: str,
    dataset: str,
    count: bool,
    where: str | None,
    fields: str | None,
    sort: str | None,
    fmt: str,
    out: Path | None,
    limit: int | None,
    offset: int,
) -> None:
    """Read a tenant's dataset back: the count, or the documents as JSON Lines, CSV or Parquet
    (filtered, projected, sorted; a progress bar on a terminal).

    From another machine: `--api URL` (or MYSIMBDP_API_URL) with the tenant's key in MYSIMBDP_API_KEY.
    """
    from mysimbdp.cli import render
    from mysimbdp.errors import FilterError
    from mysimbdp.services.reads import ExportFormat, export_query, read_query

    record, profile = platform.tenant(tenant_id)
    try:
        q = read_query(tenant_id, dataset, profile, filter_text=where, fields=fields, sort=sort)
    except FilterError as exc:
        raise click.UsageError(f"tenant {tenant_id!r}, dataset {dataset!r}: {exc} (rule {exc.rule})") from exc
    store = platform.tenant_store(record)
    try:
        if count:
            click.echo(store.count(dataset, q.where))
            return
        export = ExportFormat(fmt)
        with binary_output(out, binary_format=export is ExportFormat.PARQUET) as sink:
            total = store.count(dataset, q.where) if render.err.is_terminal else None
            total = None if total is None else max(0, min(total - offset, limit if limit is not None else total))
            with render.export_progress(f"{tenant_id}/{dataset}", total=total, unit="documents") as progress:
                for chunk in export_query(export, store, q, limit=limit, offset=offset, progress=progress):
                    sink.write(chunk)
    finally:
        store.close()


@click.command()
@click.option("--tenant", "tenant_id", default=None, help="One tenant only.")
@click.option("--since", default=None, help="Only what came in this long ago or later, e.g. 90s, 15m, 1h, 2d.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG of throughput and latency over time (per tenant).",
)
@with_platform
def report(platform: Platform, tenant_id: str | None, since: str | None, as_json: bool, plot: Path | None) -> None:
    """Per-tenant and platform-wide ingestion statistics: files by outcome, rows, bytes,
    failures with their rules, run time and rows/s; stream records, messages, errors and
    latency from the stream apps' reports."""
    import time

    from mysimbdp.cli import render
    from mysimbdp.services.report import platform_report
    from mysimbdp.services.timeseries import first_activity, parse_duration, tenant_series

    if tenant_id:
        platform.meta.get_tenant(tenant_id)
    now = time.time()
    start = now - parse_duration(since) if since else 0.0
    data = platform_report(platform, tenant_id, start)
    if as_json:
        emit_json(data)
    else:
        render.report(data)
    if plot is not None:
        ids = [tenant_id] if tenant_id else [t.id for t in platform.meta.list_tenants()]
        first = first_activity(platform, ids, start) or now - 60  # the chart starts where activity does
        from mysimbdp.services.plots import plot_series  # matplotlib: only for a plot

        series = [tenant_series(platform, t, since=first, until=now) for t in ids]
        plot_series(series, plot, title=f"mysimbdp ingestion, {'tenant ' + tenant_id if tenant_id else 'all tenants'}")
        click.echo(f"plot written to {plot}", err=True)


@click.command()
@click.option("--tenant", "tenant_id", default=None, help="One tenant only.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@or_remote("files")
@with_platform
def files(platform: Platform, tenant_id: str | None, limit: int, as_json: bool) -> None:
    """The ingestion history: files with status, rows and reasons (newest last).

    From another machine: `--api URL` (or MYSIMBDP_API_URL) with the tenant's key in MYSIMBDP_API_KEY.
    """
    from mysimbdp.cli import render
    from mysimbdp.cli.summary import file_summary

    records = platform.meta.list_files(tenant=tenant_id, limit=1_000_000)[-limit:]
    if as_json:
        emit_json([file_summary(platform, r) for r in records])
    else:
        render.file_table(records)
