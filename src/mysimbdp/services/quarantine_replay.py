"""Quarantine replay: ingest a tenant's quarantined rows and messages again after a fix.

**Where a replay runs.** In the calling process, synchronously: the CLI (as ``mysimbdp
ingest`` does without a running platform) or the API's event loop inside ``mysimbdp up``.
A replay is small (the bad rows of a file) and its caller wants to know what happened, so
it is not queued; it uses the same runner, contract and app as the batch manager.

**Batch: exactly once.** The tenant's batch app (a black box) runs on a replay input: the
original CSV header and the quarantined rows' raw text (``domain.replay.plan_batch``),
with ``$MYSIMBDP_LINE_MAP`` mapping each of its lines to the row's line in the original
file, and ``$MYSIMBDP_INPUT_SHA256`` / ``$MYSIMBDP_FILE_ID`` those of the original file.
So each row is keyed ``<sha256>:<original line>`` (or by the profile's key fields, the same
fields of the same row) and the store's insert-if-absent makes a repeated replay, or a
row stored meanwhile, a no-op. After a run that exited 0 and read every row it was given,
the rows the app rejected again keep their entry with the new reason and run; the others
(stored, already stored, or skipped on purpose) leave the quarantine. A failed run
changes nothing: its entries stay, and the next replay tries them again.

**Stream: republished.** A quarantined message is published again to the tenant's stream,
as a batch holding its envelope(s) with the original ids, through the platform's broker;
its entry is removed once the broker confirmed it. The tenant's running stream app then
handles it exactly as it handles any message: its (fixed) transform, its key fields, the
store's insert-if-absent on the envelope id, its quarantine if it fails again (a new
entry, with the new reason). Writing through the stream app path, not around it, keeps
one way to store a stream record; the price is that the outcome shows up asynchronously,
within the stream's usual latency, rather than in the replay's report.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from mysimbdp import contract
from mysimbdp.adapters.broker import Broker
from mysimbdp.adapters.process.runner import Outcome
from mysimbdp.domain.formats import FileFormat
from mysimbdp.domain.ids import new_id
from mysimbdp.domain.profile import Profile
from mysimbdp.domain.records import FileRecord, QuarantinedRow, RunRecord, TenantRecord
from mysimbdp.domain.replay import BatchPlan, StreamMessage, plan_batch, plan_stream, released, stream_of
from mysimbdp.domain.states import EXIT_TEMPFAIL, FINAL_FILE_STATES, RunStatus
from mysimbdp.errors import BrokerError, StoreError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.app_run import app_env, read_rejects, record_run, run_app
from mysimbdp.services.quarantine import Selection, check

__all__ = ["ProgressFn", "ReplayOutcome", "ReplayProgress", "outcome_json", "replay"]

log = get_logger("quarantine")

ROWS_PER_RUN = 10_000  # quarantined rows given to one replay run of the batch app
MESSAGES_PER_PUBLISH = 500  # republished stream entries confirmed at once
PROGRESS_POLL_S = 0.2  # how often a running replay's progress file is read


@dataclass
class ReplayOutcome:
    """What a replay did to one source. Batch: ``replayed`` rows were given to the app;
    ``restored`` were stored now, ``already_stored`` were there, ``skipped`` the app filtered
    out on purpose, ``quarantined_again`` it rejected again (their entries hold the new
    reason). Stream: ``replayed`` entries were republished, holding ``records`` records."""

    tenant: str
    kind: str
    source: str
    name: str
    entries: int = 0  # in the quarantine when the replay started
    replayed: int = 0
    restored: int = 0
    already_stored: int = 0
    skipped: int = 0
    quarantined_again: int = 0
    records: int = 0
    not_replayable: list[tuple[int, str]] = field(default_factory=list)  # (line, why)
    runs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        """Entries still quarantined after the replay (of those it started with)."""
        return self.entries - self.replayed + self.quarantined_again


@dataclass(frozen=True)
class ReplayProgress:
    source: str
    done: int  # entries handled so far (replayed, or found not replayable)
    total: int  # entries of the replay, over every source


ProgressFn = Callable[[ReplayProgress], None]


class _Progress:
    def __init__(self, total: int, on_progress: ProgressFn | None) -> None:
        self.total, self.done, self._fn = total, 0, on_progress

    def add(self, source: str, entries: int) -> None:
        self.done += entries
        self.peek(source, 0)

    def peek(self, source: str, running: int) -> None:
        """Show ``running`` more entries done (a run's rows so far), not yet counted."""
        if self._fn is not None:
            self._fn(ReplayProgress(source, min(self.total, self.done + running), self.total))

    async def follow(self, source: str, path: Path) -> None:
        """Show a running app's progress file (``$MYSIMBDP_PROGRESS``) until cancelled."""
        while True:
            await asyncio.sleep(PROGRESS_POLL_S)
            with contextlib.suppress(OSError, ValueError, TypeError):
                self.peek(source, int(orjson.loads(path.read_bytes()).get("rows", 0)))


async def replay(
    platform: Platform, sel: Selection, *, broker: Broker | None = None, on_progress: ProgressFn | None = None
) -> list[ReplayOutcome]:
    """Replay the selection's entries, each source in turn; see the module's docstring.
    ``broker``: the platform's, for stream entries (None: connect to it here)."""
    check(platform, sel)
    sources = platform.meta.quarantine.sources(sel.tenant, file_id=sel.file_id, stream=sel.stream)
    files = [s for s in sources if stream_of(s.file_id) is None]
    streams = sorted({stream for s in sources if (stream := stream_of(s.file_id)) is not None})
    progress = _Progress(sum(s.entries for s in sources), on_progress)
    progress.add(sel.file_id or sel.stream or sel.tenant, 0)  # the total, before the first run
    outcomes = [await _replay_file(platform, sel.tenant, s.file_id, s.entries, progress) for s in files]
    if streams:
        async with _platform_broker(platform, broker) as connected:
            for stream in streams:
                outcomes.append(await _replay_stream(platform, sel.tenant, stream, sel.file_id, connected, progress))
    for o in outcomes:
        log.info(
            "quarantine_replayed",
            tenant=o.tenant,
            kind=o.kind,
            source=o.source,
            replayed=o.replayed,
            restored=o.restored,
            already_stored=o.already_stored,
            quarantined_again=o.quarantined_again,
            not_replayable=len(o.not_replayable),
            errors=o.errors,
        )
    return outcomes


def _csv_header(record: FileRecord) -> str | None:
    """The original file's header as a CSV line, None when the file is gone."""
    try:
        with open(record.path, encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh):
                if row:
                    out = io.StringIO()
                    csv.writer(out, lineterminator="").writerow(row)
                    return out.getvalue()
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


async def _replay_file(
    platform: Platform, tenant_id: str, file_id: str, entries: int, progress: _Progress
) -> ReplayOutcome:
    platform.require_sandbox()  # the replay runs the tenant's app here, confined like any run
    record = platform.meta.get_file(file_id)
    outcome = ReplayOutcome(tenant_id, "batch", file_id, record.name if record else file_id, entries)
    if record is None:
        outcome.errors.append(f"tenant {tenant_id!r}: file {file_id!r}: no record of the file; purge its entries")
        progress.add(file_id, entries)
        return outcome
    if record.status not in FINAL_FILE_STATES:
        outcome.errors.append(
            f"tenant {tenant_id!r}: file {record.name!r} is {record.status.value}: "
            "replay it once it is ingested or failed"
        )
        progress.add(file_id, entries)
        return outcome
    tenant, profile = platform.tenant(tenant_id)
    app = profile.batch_app(record.app)
    if app is None:
        outcome.errors.append(
            f"tenant {tenant_id!r}: file {record.name!r}: its app {record.app!r} is no longer in the profile"
        )
        progress.add(file_id, entries)
        return outcome
    fmt = FileFormat(record.format)
    header = _csv_header(record) if fmt is FileFormat.CSV else None
    ledger = platform.meta.quarantine
    position: tuple[str, int] | None = None
    handled = 0
    while page := ledger.after(tenant_id, file_id=file_id, position=position, limit=ROWS_PER_RUN):
        position = (file_id, page[-1].line)
        plan = plan_batch(fmt, header, ((e.line, e.raw) for e in page))
        outcome.not_replayable.extend(plan.skipped)
        ran = not plan.line_map or await _run_plan(platform, tenant, profile, record, plan, outcome, progress)
        handled += len(page)
        progress.add(file_id, len(page))
        if not ran:
            break
    progress.add(file_id, max(0, entries - handled))  # those a failed run left untried
    return outcome


async def _run_plan(
    platform: Platform,
    tenant: TenantRecord,
    profile: Profile,
    record: FileRecord,
    plan: BatchPlan,
    outcome: ReplayOutcome,
    progress: _Progress,
) -> bool:
    """One replay run of the batch app on ``plan``; settle its entries. False when it failed."""
    app = profile.batch_app(record.app)
    assert app is not None  # _replay_file checked it
    run_id = new_id("r")
    run_dir = platform.home.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    replay_input = run_dir / f"replay.{plan.input_format.value}"
    replay_input.write_text(plan.text, encoding="utf-8")
    line_map = run_dir / "line-map.json"
    line_map.write_bytes(plan.line_map_json())
    as_replayed = replace(record, path=str(replay_input), format=plan.input_format.value)
    env = app_env(platform, tenant, profile, as_replayed, run_id, run_dir, replay=True)
    env.update({contract.LINE_MAP: str(line_map), contract.PARALLELISM: "1"})
    attempt = 1 + len(platform.meta.history.file_runs(record.id))
    platform.meta.start_run(RunRecord(run_id, record.id, tenant.id, app.name, attempt, time.time()))
    outcome.runs.append(run_id)
    follower = asyncio.create_task(progress.follow(record.id, run_dir / "progress.json"))
    try:
        ran = await run_app(platform, tenant, app, as_replayed, run_id, env)
    finally:
        follower.cancel()
    lines = plan.lines
    read = ran.result.get("rows_total")
    error = ran.error
    if ran.outcome.ok and read is not None and int(read) != len(lines):
        error = f"the app read {read} rows of the {len(lines)} it was given; no entry was changed"
    status = _run_status(ran.outcome, error)
    written = int(ran.result.get("rows_written", 0))  # new rows only: the others were stored already
    record_run(platform, record, run_id, app.name, attempt, ran, status, rows_written=written, error=error)
    where = f"tenant {tenant.id!r}: file {record.name!r}: replay run {run_id} of app {app.name!r}"
    if status is not RunStatus.SUCCEEDED:
        why = "the store is unavailable; replay again later" if status is RunStatus.TRANSIENT else error
        outcome.errors.append(f"{where}: {why} (the {len(lines)} entries stay quarantined)")
        return False
    wanted = set(lines)
    again = [row for row in read_rejects(run_dir / "rejects.jsonl", record, run_id) if row.line in wanted]
    done = released(lines, (row.line for row in again))
    platform.meta.quarantine.settle(tenant.id, record.id, done, again)
    _count(platform, record, outcome, ran.result, replayed=len(lines), again=len(again))
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _run_status(outcome: Outcome, error: str) -> RunStatus:
    if outcome.ok and not error:
        return RunStatus.SUCCEEDED
    return RunStatus.TRANSIENT if outcome.exit_code == EXIT_TEMPFAIL else RunStatus.FAILED


def _count(
    platform: Platform, record: FileRecord, outcome: ReplayOutcome, result: dict[str, Any], *, replayed: int, again: int
) -> None:
    """Add a run's figures to ``outcome`` and to the file's record (with a history event)."""
    written = int(result.get("rows_written", 0))
    stored = int(result.get("rows_stored", written))
    skipped = int(result.get("rows_skipped", 0))
    outcome.replayed += replayed
    outcome.restored += written
    outcome.already_stored += max(0, stored - written)
    outcome.skipped += skipped
    outcome.quarantined_again += again
    current = platform.meta.get_file(record.id)
    if current is None:
        return
    left = platform.meta.quarantine.count(record.tenant, file_id=record.id)
    detail = {"replay": outcome.runs[-1], "restored": written, "already_stored": stored - written, "again": again}
    platform.meta.set_status(
        record.id,
        current.status,
        detail,
        expect=(current.status,),
        rows_written=current.rows_written + written,
        rows_rejected=left,
        rows_skipped=current.rows_skipped + skipped,
    )


@contextlib.asynccontextmanager
async def _platform_broker(platform: Platform, broker: Broker | None) -> AsyncIterator[Broker]:
    """``broker``, else a connection to the platform's: ``MYSIMBDP_BROKER_URL``, or the
    embedded one of a running ``mysimbdp up`` (its URL is in ``HOME/broker/url``)."""
    if broker is not None:
        yield broker
        return
    url = platform.running_broker_url()  # replaying stream messages republishes them through it
    connected = platform.broker(url)
    await connected.connect()
    try:
        yield connected
    finally:
        await connected.close()


async def _replay_stream(
    platform: Platform, tenant_id: str, stream: str, file_id: str | None, broker: Broker, progress: _Progress
) -> ReplayOutcome:
    """Republish the stream's entries (of one of its instances when ``file_id`` names it)."""
    ledger = platform.meta.quarantine
    only = {"file_id": file_id} if file_id is not None else {"stream": stream}
    outcome = ReplayOutcome(tenant_id, "stream", stream, stream, ledger.count(tenant_id, **only))
    _, profile = platform.tenant(tenant_id)
    app = profile.stream_app_for(stream)
    if app is None:
        outcome.errors.append(f"tenant {tenant_id!r}, stream {stream!r}: no stream app of the profile serves it")
        progress.add(stream, outcome.entries)
        return outcome
    await broker.declare(tenant_id, stream)
    position: tuple[str, int] | None = None
    while page := ledger.after(tenant_id, **only, position=position, limit=MESSAGES_PER_PUBLISH):
        position = (page[-1].file_id, page[-1].line)
        messages: list[tuple[QuarantinedRow, StreamMessage]] = []
        for entry in page:
            planned = plan_stream(tenant_id, stream, (entry.file_id, entry.line), entry.raw, entry.reason)
            if isinstance(planned, str):
                outcome.not_replayable.append((entry.line, f"{entry.file_id}: {planned}"))
            else:
                messages.append((entry, planned))
        if messages:
            try:
                bodies, ids = [m.body for _, m in messages], [m.msg_id for _, m in messages]
                await broker.publish(tenant_id, stream, bodies, ids)
            except BrokerError as exc:
                outcome.errors.append(f"tenant {tenant_id!r}, stream {stream!r}: republishing failed: {exc}")
                break
            ledger.remove(tenant_id, [(e.file_id, e.line) for e, _ in messages])  # once the broker confirmed
            outcome.replayed += len(messages)
            outcome.records += sum(len(m.ids) for _, m in messages)
        progress.add(stream, len(page))
    if outcome.replayed:
        with contextlib.suppress(StoreError):  # the stream's first message: its app gets min_instances
            platform.meta.streams.ensure_target(tenant_id, stream, app.name, max(1, app.min_instances))
    return outcome


def outcome_json(o: ReplayOutcome) -> dict[str, object]:
    """``o`` as JSON for the CLI and the API."""
    return {
        "tenant": o.tenant,
        "kind": o.kind,
        "source": o.source,
        "name": o.name,
        "entries": o.entries,
        "replayed": o.replayed,
        "restored": o.restored,
        "already_stored": o.already_stored,
        "skipped": o.skipped,
        "quarantined_again": o.quarantined_again,
        "records": o.records,
        "remaining": o.remaining,
        "not_replayable": [{"line": line, "why": why} for line, why in o.not_replayable],
        "runs": o.runs,
        "errors": o.errors,
    }
