"""Terminal rendering for the CLI (rich): tables, progress bars, summaries. No logic."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from mysimbdp.domain.records import FileRecord, TenantRecord
    from mysimbdp.runtime.demo import TenantSummary
    from mysimbdp.runtime.demo_stream import StreamSummary
    from mysimbdp.services.ingest import Progress as IngestProgress
    from mysimbdp.services.ingest import ProgressFn

# Off a terminal rich would assume 80 columns; tables of file reasons read better wider.
_WIDTH = shutil.get_terminal_size((120, 40)).columns
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def tenant_list(tenants: Sequence[TenantRecord]) -> None:
    table = Table("tenant", "created (UTC)", "bundle")
    for t in tenants:
        table.add_row(t.id, _when(t.created_at), t.bundle_dir)
    out.print(table)


@contextmanager
def ingest_progress(*, name: str) -> Iterator[ProgressFn | None]:
    """A progress bar on stderr (bytes, rows/s) fed by the ingest follower."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]} rows · {task.fields[rate]} rows/s · {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(name, total=None, rows=0, rate=0, status="queued")

        def update(p: IngestProgress) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = int(p.rows / elapsed) if elapsed > 0 else 0
            bar.update(
                task,
                total=p.size_bytes or None,
                completed=p.bytes_done,
                rows=p.rows,
                rate=rate,
                status=p.status,
            )

        yield update


@contextmanager
def export_progress(name: str, *, total: int | None, unit: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for an export (``unit``: documents, or bytes when the total is
    unknown), fed with each page's or chunk's size; None off a terminal."""
    if not err.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn() if unit == "bytes" else TextColumn("{task.completed:,.0f}/{task.total:,.0f} documents"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)


def file_table(records: Sequence[FileRecord]) -> None:
    table = Table("file", "tenant", "name", "status", "rows", "bad", "received (UTC)", "reason")
    for r in records:
        table.add_row(
            r.id,
            r.tenant,
            r.name,
            str(r.status),
            str(r.rows_written),
            str(r.rows_rejected),
            _when(r.received_at),
            (r.reasons[0][:80] if r.reasons else ""),
        )
    out.print(table)


def quarantine_sources(tenant: str, items: Sequence[dict[str, Any]]) -> None:
    """``quarantine list``: per file and stream, the entries and the most frequent reasons
    (``items`` as ``--json`` prints them, read from the meta store or the HTTP API)."""
    if not items:
        out.print(f"tenant {tenant}: nothing quarantined", markup=False, highlight=False)
        return
    table = Table("kind", "source", "name", "entries", "last (UTC)", "reasons (most frequent)")
    for s in items:
        reasons = "\n".join(f"{r['count']} × {r['reason']}" for r in s["reasons"])
        table.add_row(s["kind"], s["source"], s["name"], str(s["entries"]), _when(s["last_at"]), reasons)
    out.print(table)


def report(data: dict[str, Any]) -> None:
    sandbox = data["sandbox"]  # first, so that apps running unconfined are not missed
    out.print(sandbox["summary"], style="" if sandbox["enforced"] else "bold red", markup=False, soft_wrap=True)
    table = Table(
        "tenant",
        "files",
        "ingested",
        "rejected",
        "failed",
        "rows",
        "quarantined",
        "MB",
        "run s",
        "rows/s",
        "top failure rules",
        title="ingestion report",
    )
    for t in data["tenants"]:
        by = t["files_by_status"]
        rules = ", ".join(f"{r['rule']}×{r['files']}" for r in t["top_reasons"])
        table.add_row(
            t["tenant"],
            str(sum(by.values())),
            str(by.get("ingested", 0)),
            str(by.get("rejected", 0) + by.get("duplicate", 0)),
            str(by.get("failed", 0)),
            str(t["rows_written"]),
            str(t["quarantined_rows"]),
            f"{t['bytes_accepted'] / 1e6:.2f}",
            f"{t['run_seconds']:.2f}",
            f"{t['rows_per_s']:.0f}",
            rules,
        )
    p = data["platform"]
    table.add_section()
    table.add_row(
        f"ALL ({p['tenants']})",
        str(sum(p["files_by_status"].values())),
        str(p["files_by_status"].get("ingested", 0)),
        str(p["files_by_status"].get("rejected", 0) + p["files_by_status"].get("duplicate", 0)),
        str(p["files_by_status"].get("failed", 0)),
        str(p["rows_written"]),
        "",
        f"{p['bytes_accepted'] / 1e6:.2f}",
        f"{p['run_seconds']:.2f}",
        "",
        "",
    )
    out.print(table)
    quality_table(data)
    streaming = [t for t in data["tenants"] if t["stream"]["messages"]]
    if not streaming:
        return
    table = Table(
        "tenant",
        "streams",
        "messages",
        "records",
        "MB",
        "quarantined",
        "latency avg ms",
        "worst p95 ms",
        title="near-realtime ingestion (from the stream apps' reports)",
    )
    for t in streaming:
        st = t["stream"]
        table.add_row(
            t["tenant"],
            ", ".join(st["streams"]),
            str(st["messages"]),
            str(st["records"]),
            f"{st['bytes'] / 1e6:.2f}",
            str(st["errors"]),
            f"{st['latency_avg_ms']:.1f}",
            f"{st['latency_p95_worst_ms']:.1f}",
        )
    out.print(table)


def quality_table(data: dict[str, Any]) -> None:
    """Per tenant, what the profile's quality rules found in files and stream windows."""
    table = Table(
        "tenant", "kind", "checked in", "rows checked", "failed", "ratio", "top failing rules", title="data quality"
    )
    for t in data["tenants"]:
        for kind, q in t.get("quality", {}).items():
            if not q["rows_checked"]:
                continue
            where = (
                f"{q['files']} files ({q['files_rejected']} rejected)" if kind == "batch" else f"{q['windows']} windows"
            )
            rules = ", ".join(f"{r['rule']}×{r['rows']}" for r in q["top_rules"])
            table.add_row(
                t["tenant"], kind, where, str(q["rows_checked"]), str(q["rows_failed"]), f"{q['ratio']:.2%}", rules
            )
    if table.row_count:
        out.print(table)


def demo_stream_summary(summaries: Sequence[StreamSummary]) -> None:
    table = Table(
        "stream",
        "posted",
        "re-sent",
        "documents",
        "quarantined",
        "instances",
        "seconds",
        title="mysimbdp demo: near-realtime ingestion",
        caption="posted: records over HTTP (requests); re-sent: messages straight to the broker while the app was "
        "paused; documents: in the stream's dataset afterwards; instances: peak → at the end",
    )
    for s in summaries:
        table.add_row(
            f"{s.tenant}/{s.stream}",
            f"{s.posted} ({s.requests})",
            str(s.resent),
            f"{s.stored} ({s.dataset})",
            str(s.quarantined),
            f"{s.peak_instances} → {s.final_instances}",
            f"{s.seconds:.1f}",
        )
    out.print(table)
    for s in summaries:
        for d in s.decisions:
            out.print(f"{s.tenant}/{s.stream}: {d.from_instances} → {d.to_instances} instances: {d.reason}")


def demo_summary(summaries: Sequence[TenantSummary]) -> None:
    table = Table(
        "tenant",
        "accepted",
        "rejected",
        "rows written",
        "quarantined",
        "bytes",
        "seconds",
        "rows/s",
        title="mysimbdp demo: batch ingestion on the embedded default",
    )
    for s in summaries:
        table.add_row(
            s.tenant,
            str(len(s.accepted)),
            str(len(s.rejected)),
            str(s.rows_written),
            str(s.quarantined),
            str(s.bytes_ingested),
            f"{s.seconds:.2f}",
            f"{s.rows_per_s:.0f}",
        )
    out.print(table)
    for s in summaries:
        for f in s.rejected:
            out.print(f"[red]{s.tenant}/{f.name}: {f.status}[/]")
            for reason in f.reasons:
                out.print(f"  - {reason}")
