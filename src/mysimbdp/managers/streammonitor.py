"""mysimbdp-streamingestmonitor: reads the stream app instances' reports and scales.

Every tick it pulls the reports of each tenant with running stream apps from the tenant's
``mysimbdp_reports`` stream, stores them (with the quality counts of those that checked
records, in ``stream_quality``), keeps them for the longest scaling window, and applies
:func:`mysimbdp.domain.scaling.decide` to every (tenant, stream, app) target. A decision
that changes the instance count is written as the new target, which the stream ingest
manager carries out; every such decision, and every change of reason, is logged with its
inputs (``scaling_decision``). The tenant's webhooks are told, once per episode, of an app
overloaded at ``max_instances`` while its backlog grows and of a window quarantining more
than their threshold (``docs/notifications.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

from mysimbdp.adapters.broker import REPORTS_STREAM, Broker
from mysimbdp.domain.notifications import NotifyEvent
from mysimbdp.domain.profile import StreamApp
from mysimbdp.domain.records import ScalingRecord, StreamTarget
from mysimbdp.domain.scaling import Decision, Report, decide
from mysimbdp.errors import MysimbdpError
from mysimbdp.logs import get_logger
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.notify import lowest_ratio_threshold, notify

log = get_logger("streamingestmonitor")

GROUP = "monitor"
KEEP_S = 600.0  # reports older than this are dropped (longer than any sensible window)


@dataclass
class _Window:
    reports: deque[Report] = field(default_factory=deque)
    last_change_at: float = 0.0
    last_busy_at: float = field(default_factory=time.time)
    last_reason: str = ""
    at_max_notified: bool = False  # this overload-at-max episode was notified
    quarantine_notified: bool = False  # this high-quarantine episode was notified


class StreamMonitor:
    def __init__(self, platform: Platform, broker: Broker) -> None:
        self.platform = platform
        self.broker = broker
        self._windows: dict[tuple[str, str, str], _Window] = {}

    async def run(self, stop: asyncio.Event) -> None:
        log.info("stream_monitor_started")
        while not stop.is_set():
            try:
                await self.tick(time.time())
            except MysimbdpError as exc:
                log.warning("monitor_tick_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.platform.settings.poll_interval_s)

    async def tick(self, now: float) -> list[Decision]:
        """Take in new reports, decide for every live target; return the changing decisions."""
        targets = [t for t in self.platform.meta.streams.targets() if t.instances > 0]
        for tenant in sorted({t.tenant for t in targets}):
            await self._take_reports(tenant)
        changes = []
        for target in targets:
            decision = self._decide(target, now)
            if decision is not None and decision.changes:
                changes.append(decision)
        return changes

    async def _take_reports(self, tenant: str) -> None:
        messages = await self.broker.pull(tenant, REPORTS_STREAM, GROUP, max_messages=1000, timeout_s=0.05)
        reports = []
        for message in messages:
            try:
                report = Report.from_json(orjson.loads(message.body))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning("report_unreadable", tenant=tenant, error=repr(exc))
                continue
            if report.tenant != tenant:  # a tenant's apps report on its own stream only
                log.warning("report_of_another_tenant", tenant=tenant, claimed=report.tenant, instance=report.instance)
                continue
            reports.append(report)
            window = self._windows.setdefault((report.tenant, report.stream, report.app), _Window())
            window.reports.append(report)
            if report.backlog > 0 or report.messages > 0:
                window.last_busy_at = max(window.last_busy_at, report.at)
        if reports:
            self.platform.meta.streams.record_reports(reports)
            self.platform.meta.quality.record_windows(reports)  # those that checked quality rules
        await self.broker.ack(messages)

    def _decide(self, target: StreamTarget, now: float) -> Decision | None:
        key = (target.tenant, target.stream, target.app)
        window = self._windows.setdefault(key, _Window(last_change_at=now))
        while window.reports and window.reports[0].at < now - KEEP_S:
            window.reports.popleft()
        app = self._app(target)
        if app is None:
            return None
        decision = decide(
            app,
            target.instances,
            list(window.reports),
            now=now,
            last_change_at=window.last_change_at,
            last_busy_at=window.last_busy_at,
        )
        if decision.changes or decision.reason != window.last_reason:
            log.info(
                "scaling_decision",
                tenant=target.tenant,
                stream=target.stream,
                app=target.app,
                current=decision.current,
                target=decision.target,
                reason=decision.reason,
                **decision.inputs,
            )
            window.last_reason = decision.reason
        self._notify(target, app, window, decision, now)
        if decision.changes:
            streams = self.platform.meta.streams
            streams.set_target(target.tenant, target.stream, target.app, decision.target)
            streams.record_decision(
                ScalingRecord(now, *key, decision.current, decision.target, decision.reason, decision.inputs)
            )
            window.last_change_at = now
        return decision

    def _notify(self, target: StreamTarget, app: StreamApp, window: _Window, decision: Decision, now: float) -> None:
        """Tell the tenant's webhooks, once per episode, that the app is overloaded at
        ``max_instances`` while the backlog grows, or that the window quarantines too much."""
        reports = sorted((r for r in window.reports if r.at >= now - app.scaling.window_s), key=lambda r: r.at)
        where = {"stream": target.stream, "app": target.app, "window_s": app.scaling.window_s}
        inputs = decision.inputs
        at_max = (
            decision.current >= app.max_instances
            and decision.target >= app.max_instances
            and inputs["reports"] > 0
            and inputs["high_reports"] / inputs["reports"] >= app.scaling.high_fraction
        )
        if not at_max:
            window.at_max_notified = False
        elif not window.at_max_notified and len(reports) > 1 and reports[-1].backlog > reports[0].backlog:
            window.at_max_notified = True
            notify(
                self.platform,
                target.tenant,
                NotifyEvent.SCALING_AT_MAX,
                **where,
                instances=decision.current,
                max_instances=app.max_instances,
                backlog_first=reports[0].backlog,
                backlog_last=reports[-1].backlog,
                reason=decision.reason,
            )
        quarantined = sum(r.errors for r in reports)
        total = quarantined + sum(r.records for r in reports)
        if quarantined == 0:
            window.quarantine_notified = False
            return
        try:
            threshold = lowest_ratio_threshold(self.platform.tenant(target.tenant)[1])
        except MysimbdpError:
            return
        ratio = quarantined / total
        if threshold is None or ratio <= threshold:
            window.quarantine_notified = False
        elif not window.quarantine_notified:
            window.quarantine_notified = True
            notify(
                self.platform,
                target.tenant,
                NotifyEvent.QUARANTINE_RATIO_EXCEEDED,
                scope="stream",
                **where,
                records_total=total,
                records_quarantined=quarantined,
                ratio=round(ratio, 6),
            )

    def _app(self, target: StreamTarget) -> StreamApp | None:
        try:
            _, profile = self.platform.tenant(target.tenant)
        except MysimbdpError:
            return None
        return next((a for a in profile.stream_apps if a.name == target.app), None)
