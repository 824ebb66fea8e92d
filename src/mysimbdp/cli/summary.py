"""One file's summary: the ``--json`` document of ``ingest`` and ``files``, and its text.

Plain click output (no rich): ``ingest --wait`` prints it on every run, and rich's import
would be a good part of a small file's whole ingest (rich draws only the progress bar, on a
terminal: :func:`mysimbdp.cli.render.ingest_progress`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from mysimbdp.adapters.metastore.chunks import chunks_summary

if TYPE_CHECKING:
    from mysimbdp.domain.records import FileRecord
    from mysimbdp.runtime.platform import Platform

__all__ = ["QUARANTINE_SAMPLE_ROWS", "file_summary", "print_file_summary", "summary_of"]

QUARANTINE_SAMPLE_ROWS = 5  # quarantined rows shown with a file, oldest first


def out(line: str) -> None:
    click.echo(line)


def file_summary(platform: Platform, record: FileRecord) -> dict[str, Any]:
    """The summary of a file of this machine's platform (its meta store)."""
    samples = platform.meta.list_quarantine(record.tenant, limit=QUARANTINE_SAMPLE_ROWS, file_id=record.id)
    quality = platform.meta.quality.file(record.id)  # None for a file fetched before it was kept
    return summary_of(
        record,
        platform.meta.file_events(record.id),
        [{"line": q.line, "reason": q.reason} for q in samples],
        quality.to_json() if quality is not None else None,
        chunks_summary(platform.meta.chunks.of_file(record.id)),
    )


def summary_of(
    record: FileRecord,
    events: Sequence[tuple[float, str, Any]],
    samples: list[dict[str, Any]],
    quality: dict[str, Any] | None,
    chunks: dict[str, object] | None,
) -> dict[str, Any]:
    """One file's summary from its record, its status events (oldest first), up to
    :data:`QUARANTINE_SAMPLE_ROWS` quarantined rows, its quality and its chunks, wherever
    they were read: the meta store (:func:`file_summary`) or the HTTP API (``--api``)."""
    first = record.received_at  # when fetchdata took the file, before its scan
    running = next((at for at, status, _ in events if status == "running"), None)
    last = events[-1][0] if events else record.updated_at
    return {
        "file_id": record.id,
        "tenant": record.tenant,
        "name": record.name,
        "status": str(record.status),
        "dataset": record.dataset,
        "app": record.app,
        "rows_total": record.rows_total,
        "rows_written": record.rows_written,
        "rows_rejected": record.rows_rejected,
        "rows_skipped": record.rows_skipped,
        "bytes": record.size_bytes,
        "sha256": record.sha256,
        "attempts": record.attempts,
        "reasons": list(record.reasons),
        "quarantine_sample": samples,
        "quality": quality,
        "chunks": chunks,
        "path": record.path,
        "durations_s": {
            "fetch": round((running or last) - first, 3) if running else None,
            "run": round(last - running, 3) if running else None,
            "total": round(last - first, 3),
        },
    }


def print_file_summary(s: dict[str, Any]) -> None:
    color = {"ingested": "green", "rejected": "red", "duplicate": "yellow", "failed": "red"}.get(s["status"])
    out(f"{click.style(s['name'] + ': ' + s['status'], fg=color)} (file {s['file_id']}, tenant {s['tenant']})")
    if chunks := s.get("chunks"):
        states = ", ".join(f"{chunks[k]} {k}" for k in ("done", "running", "queued", "retry", "failed") if chunks[k])
        out(f"  ingested in {chunks['total']} chunks in parallel: {states}")
    if s["status"] == "ingested":
        total = s["durations_s"]["total"] or 0
        out(
            f"  dataset {s['dataset']}: {s['rows_written']} rows written, {s['rows_rejected']} quarantined, "
            f"{s['rows_skipped']} skipped; {s['bytes']} bytes in {total:.2f} s"
        )
        for q in s["quarantine_sample"]:
            out(f"  quarantined line {q['line']}: {q['reason']}")
    if (quality := s.get("quality")) and quality["rows_failed"]:
        rules = ", ".join(f"{rule}={rows}" for rule, rows in quality["failed_by_rule"].items())
        out(
            f"  quality: {quality['rows_failed']} of {quality['rows_checked']} rows failed "
            f"(ratio {quality['ratio']:.3f}, limit {quality['max_bad_row_ratio']:.3f}): {rules}"
        )
    for reason in s["reasons"]:
        out(f"  - {reason}")
