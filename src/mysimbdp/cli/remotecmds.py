"""The remote twins of ``ingest``, ``query``, ``files`` and ``quarantine list`` (``--api URL``):
the same arguments, output and exit codes as the local commands, read from the platform's
HTTP API instead of its home and meta store (:mod:`mysimbdp.cli.remote` picks one).

A file's summary is made by the local commands' own :func:`~mysimbdp.cli.summary.summary_of`,
fed from ``GET /v1/files/{id}``; the tables by the same :mod:`mysimbdp.cli.render` functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from mysimbdp.adapters.apiclient import ApiClient
from mysimbdp.cli.context import EXIT_FAILED, EXIT_REJECTED, Api, binary_output, emit_json
from mysimbdp.cli.summary import QUARANTINE_SAMPLE_ROWS, print_file_summary, summary_of
from mysimbdp.domain.records import FileRecord
from mysimbdp.domain.states import FINAL_FILE_STATES, FileStatus
from mysimbdp.errors import ApiError

if TYPE_CHECKING:
    from mysimbdp.services.ingest import ProgressFn

__all__ = ["COMMANDS", "file_record", "remote_summary"]

EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
POLL_S = 0.2  # how often a waiting remote ingest asks for its file's status
DOCUMENTS_PAGE = 1000  # the API's largest page of documents
FINAL = {str(s) for s in FINAL_FILE_STATES}
_RECORD_FIELDS = {f.name for f in dataclasses.fields(FileRecord)}


def _client(api: Api, tenant: str | None) -> ApiClient:
    return ApiClient(api.url, api.key, tenant or "", ca_cert=api.ca_cert)


def file_record(out: dict[str, Any]) -> FileRecord:
    """A file's record from the API's ``FileOut``."""
    values = {k: v for k, v in out.items() if k in _RECORD_FIELDS}
    values.update(status=FileStatus(out["status"]), reasons=tuple(out.get("reasons", ())))
    return FileRecord(**values)


def remote_summary(client: ApiClient, detail: dict[str, Any]) -> dict[str, Any]:
    """:func:`~mysimbdp.cli.summary.summary_of` of ``GET /v1/files/{id}``'s answer."""
    from mysimbdp.adapters.metastore.chunks import ChunkRecord, ChunkStatus, chunks_summary

    record = file_record(detail["file"])
    samples: list[dict[str, Any]] = []
    if detail.get("quarantined_rows"):
        page = client.get("/v1/quarantine/entries", file_id=record.id, limit=QUARANTINE_SAMPLE_ROWS)
        samples = [{"line": e["line"], "reason": e["reason"]} for e in page["items"]]
    chunks = [
        ChunkRecord(
            record.id,
            c["index"],
            record.tenant,
            c["start_byte"],
            c["end_byte"],
            c["first_line"],
            ChunkStatus(c["status"]),
            attempts=c["attempts"],
            worker=c["worker"],
            rows_written=c["rows_written"],
            rows_rejected=c["rows_rejected"],
            rows_skipped=c["rows_skipped"],
            started_at=c["started_at"],
            ended_at=c["ended_at"],
            error=c["error"],
        )
        for c in detail.get("chunks", [])
    ]
    events = [(e["at"], e["status"], e["detail"]) for e in detail.get("events", [])]
    return summary_of(record, events, samples, detail.get("quality"), chunks_summary(chunks))


# -- ingest ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _progress(name: str, show: bool) -> Iterator[Callable[[str, int, int, int], None]]:
    """``report(status, rows, bytes_done, size_bytes)`` drawing ``ingest``'s progress bar on a terminal."""
    if not show:
        yield lambda status, rows, done, size: None
        return
    from mysimbdp.cli import render
    from mysimbdp.services.ingest import Progress

    bar: contextlib.AbstractContextManager[ProgressFn | None] = render.ingest_progress(name=name)
    with bar as update:
        yield lambda status, rows, done, size: update(Progress(status, rows, done, size)) if update else None


def _follow(client: ApiClient, file_id: str, report: Callable[[str, int, int, int], None]) -> dict[str, Any]:
    """``GET /v1/files/{id}`` until the file is in a final state (a file answered 202 is
    ``checking`` until its checks decide)."""
    while True:
        detail: dict[str, Any] = client.get(f"/v1/files/{quote(file_id)}")
        f = detail["file"]
        final = f["status"] in FINAL
        rows = f["rows_written"] + f["rows_rejected"] + f["rows_skipped"] if final else 0
        report(f["status"], rows, f["size_bytes"] if final else 0, f["size_bytes"])
        if final:
            return detail
        time.sleep(POLL_S)


def _send(
    api: Api,
    client: ApiClient,
    file: Path,
    report: Callable[[str, int, int, int], None],
    resumable_over: int,
    chunk_bytes: int,
    limit_rate: int | None,
    respond_async: bool = False,
) -> tuple[str, str]:
    """Upload ``file``: the id and status of its record (for content accepted before: this
    upload's own record, ``duplicate``, as a local ingest has it). ``respond_async``: a POST
    answered before the checks (the caller follows the record anyway)."""
    size = file.stat().st_size

    def sent(done: int) -> None:
        report("uploading", 0, done, size)

    if size > resumable_over:
        from mysimbdp.adapters.resumable import UploadState, send_resumable

        def resuming(offset: int, total: int) -> None:
            click.echo(f"{file.name}: resuming the upload at byte {offset} of {total}", err=True)

        resumed = send_resumable(
            client,
            file,
            file.name,
            UploadState(api.state),
            chunk_bytes=chunk_bytes,
            rate_per_s=limit_rate,
            on_bytes=sent,
            on_resume=resuming,
        )
        if resumed.duplicate_file_id:
            return resumed.duplicate_file_id, str(FileStatus.DUPLICATE)
        return resumed.file_id, resumed.status
    key = f"mysimbdp-cli-{uuid.uuid4().hex}"  # one per run: its own retries are answered once
    answer = client.post_file(
        file, file.name, idempotency_key=key, on_bytes=sent, rate_per_s=limit_rate, respond_async=respond_async
    )
    if answer.get("duplicate_file_id"):
        return str(answer["duplicate_file_id"]), str(FileStatus.DUPLICATE)
    return str(answer["file_id"]), str(answer["status"])


def ingest(
    api: Api,
    *,
    file: Path,
    tenant_id: str,
    wait: bool,
    as_json: bool,
    resumable_over: int,
    chunk_bytes: int,
    limit_rate: int | None,
) -> None:
    wait = wait or as_json
    with _client(api, tenant_id) as client:
        client.check_tenant()
        with _progress(file.name, not as_json and sys.stderr.isatty()) as report:
            try:
                # following the record anyway: the POST need not wait for the checks (202)
                file_id, status = _send(api, client, file, report, resumable_over, chunk_bytes, limit_rate, wait)
            except KeyboardInterrupt:
                after = (
                    "the platform keeps what it received; run the same command again to resume"
                    if file.stat().st_size > resumable_over
                    else "nothing was kept; run the same command again"
                )
                click.echo(f"{file.name}: upload to {api.url} interrupted: {after}", err=True)
                sys.exit(EXIT_INTERRUPTED)
            if not wait and status not in FINAL:
                click.echo(
                    f"{file.name}: {status} at {api.url} (file {file_id}, tenant {tenant_id}); use --wait to follow it"
                )
                return
            try:
                detail = _follow(client, file_id, report)
            except KeyboardInterrupt:
                click.echo(
                    f"{file.name}: stopped following file {file_id}; the platform goes on with it "
                    "(see `mysimbdp files --api`)",
                    err=True,
                )
                sys.exit(EXIT_INTERRUPTED)
        summary = remote_summary(client, detail)
    if as_json:
        emit_json(summary)
    else:
        print_file_summary(summary)
    final = FileStatus(summary["status"])
    if final in (FileStatus.REJECTED, FileStatus.DUPLICATE):
        sys.exit(EXIT_REJECTED)
    if final is not FileStatus.INGESTED:
        sys.exit(EXIT_FAILED)


# -- reads ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _with_rule() -> Iterator[None]:
    """An API refusal of a read with its rule (the API's ``rule`` field) added to the message."""
    try:
        yield
    except ApiError as exc:
        rule = exc.body.get("rule")
        if not rule:
            raise
        raise ApiError(f"{exc} (rule {rule})", exc.status, exc.body) from exc


def query(
    api: Api,
    *,
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
    """The count, or an export streamed by the API (``Accept``: the format's media type);
    ``--offset`` pages JSON (JSON Lines only), as the API pages offsets."""
    import orjson

    from mysimbdp.cli import render
    from mysimbdp.services.reads import MEDIA_TYPES, ExportFormat

    path = f"/v1/datasets/{quote(dataset, safe='')}"
    params = {"filter": where, "fields": fields, "sort": sort}
    export = ExportFormat(fmt)
    if offset and export is not ExportFormat.NDJSON:
        raise click.UsageError("--offset with --api pages JSON: use --format ndjson, or no --offset")
    with _client(api, tenant_id) as client, _with_rule():
        client.check_tenant()
        if count:
            click.echo(client.get(f"{path}/count", filter=where)["count"])
            return
        with binary_output(out, binary_format=export is ExportFormat.PARQUET) as sink:
            if offset:
                left, at = limit, offset
                while left is None or left > 0:
                    size = DOCUMENTS_PAGE if left is None else min(left, DOCUMENTS_PAGE)
                    docs = client.get(f"{path}/documents", limit=size, offset=at, **params)
                    sink.write(b"".join(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE) for doc in docs))
                    if len(docs) < size:
                        break
                    left, at = None if left is None else left - len(docs), at + len(docs)
                return
            with render.export_progress(f"{tenant_id}/{dataset}", total=None, unit="bytes") as progress:
                for chunk in client.download(f"{path}/documents", MEDIA_TYPES[export], limit=limit, **params):
                    sink.write(chunk)
                    if progress is not None:
                        progress(len(chunk))


def files(api: Api, *, tenant_id: str | None, limit: int, as_json: bool) -> None:
    from mysimbdp.cli import render

    with _client(api, tenant_id) as client:
        newest = client.pages("/v1/files", max(limit, 0), tenant=tenant_id)
        newest.reverse()  # oldest first, as the local command lists them
        if as_json:
            emit_json([remote_summary(client, client.get(f"/v1/files/{quote(f['id'])}")) for f in newest])
        else:
            render.file_table([file_record(f) for f in newest])


def quarantine_list(api: Api, *, tenant_id: str, file_id: str | None, stream: str | None, as_json: bool) -> None:
    import orjson

    from mysimbdp.cli import render

    if file_id is not None and stream is not None:
        raise click.UsageError("give --file or --stream, not both")
    with _client(api, tenant_id) as client:
        items = client.get("/v1/quarantine/summary", tenant=tenant_id, file_id=file_id, stream=stream)
    if as_json:
        click.echo(orjson.dumps(items, option=orjson.OPT_INDENT_2).decode())
    else:
        render.quarantine_sources(tenant_id, items)


COMMANDS: dict[str, Callable[..., None]] = {
    "ingest": ingest,
    "query": query,
    "files": files,
    "quarantine list": quarantine_list,
}
