"""The stream monitor's policy: from the instances' reports to a target instance count.
Pure functions, no IO; every decision carries its inputs and its reason.

Reports are what each ``clientstreamingestapp`` instance sends every ``report_period_s``
(see ``docs/stream-reports.md``). Over the profile's ``scaling.window_s``:

- **up** by ``step`` (at most ``max_instances``) when at least ``high_fraction`` of the
  window's reports saw the backlog above ``backlog_high`` or the p95 ingestion latency
  above ``latency_p95_high_ms``;
- **down** by ``step`` (at least ``min_instances``) when no report has seen a backlog or a
  message for ``idle_s``;
- otherwise, and always within ``cooldown_s`` of the last change, **hold**.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: the meta store imports this module, and needs no pydantic
    from mysimbdp.domain.profile import StreamApp

REPORT_VERSION = 1
# Upper bounds (ms) of the per-message latency histogram an instance reports.
LATENCY_BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0)


@dataclass(frozen=True, slots=True)
class Report:
    """One instance's report for one period."""

    at: float  # when the period ended (epoch s)
    tenant: str
    stream: str
    app: str
    instance: str
    period_s: float
    messages: int  # broker messages handled
    records: int  # records written
    bytes: int
    errors: int  # records and messages quarantined
    latency_avg_ms: float  # publish -> committed, over the period's batches
    latency_p95_ms: float
    backlog: int  # messages of the stream not acked yet, seen at the period's end
    latency_p50_ms: float = 0.0  # the period's median (reports of older SDKs may lack it)
    latency_n: int = 0  # messages whose latency was measured in the period
    latency_sum_ms: float = 0.0
    latency_counts: tuple[int, ...] = ()  # of those, how many <= each of LATENCY_BOUNDS_MS (cumulative)
    # The profile's quality rules over the period's records (0 and {} when the app checks none):
    rows_checked: int = 0
    rows_failed: int = 0  # records failing at least one rule (quarantined)
    failed_by_rule: dict[str, int] = field(default_factory=dict)  # "<field>.<check>" -> records failing it

    @property
    def rate_per_s(self) -> float:
        return self.records / self.period_s if self.period_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"v": REPORT_VERSION, **asdict(self), "rate_per_s": round(self.rate_per_s, 1)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        names = cls.__dataclass_fields__
        values = {name: data[name] for name in names if name in data}
        if "latency_counts" in values:
            values["latency_counts"] = tuple(int(n) for n in values["latency_counts"])
        if "failed_by_rule" in values:  # a bad one raises TypeError / ValueError
            values["failed_by_rule"] = {str(rule): int(n) for rule, n in dict(values["failed_by_rule"]).items()}
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Decision:
    current: int
    target: int
    reason: str
    inputs: dict[str, Any]

    @property
    def changes(self) -> bool:
        return self.target != self.current


def decide(
    app: StreamApp, current: int, reports: Sequence[Report], *, now: float, last_change_at: float, last_busy_at: float
) -> Decision:
    """The target instance count for ``app`` now (see the module doc)."""
    policy = app.scaling
    window = [r for r in reports if r.at >= now - policy.window_s]
    high = [r for r in window if r.backlog > policy.backlog_high or r.latency_p95_ms > policy.latency_p95_high_ms]
    inputs: dict[str, Any] = {
        "reports": len(window),
        "high_reports": len(high),
        "max_backlog": max((r.backlog for r in window), default=0),
        "max_latency_p95_ms": round(max((r.latency_p95_ms for r in window), default=0.0), 1),
        "records_per_s": round(sum(r.records for r in window) / policy.window_s, 1),
        "idle_for_s": round(now - last_busy_at, 1),
        "since_last_change_s": round(now - last_change_at, 1),
    }

    def hold(reason: str) -> Decision:
        return Decision(current, current, reason, inputs)

    bounded = max(app.min_instances, min(app.max_instances, current))
    if bounded != current:
        return Decision(current, bounded, f"outside min_instances {app.min_instances}..{app.max_instances}", inputs)
    if now - last_change_at < policy.cooldown_s:
        return hold(f"cooldown: last change {inputs['since_last_change_s']} s ago < {policy.cooldown_s} s")
    if window and len(high) / len(window) >= policy.high_fraction:
        if current >= app.max_instances:
            return hold(f"overloaded ({len(high)}/{len(window)} reports high) but at max_instances {app.max_instances}")
        target = min(app.max_instances, current + policy.step)
        return Decision(
            current,
            target,
            f"{len(high)}/{len(window)} reports over backlog {policy.backlog_high} or p95 "
            f"{policy.latency_p95_high_ms} ms (>= {policy.high_fraction:.0%}): scale up",
            inputs,
        )
    if now - last_busy_at >= policy.idle_s and current > app.min_instances:
        target = max(app.min_instances, current - policy.step)
        return Decision(current, target, f"idle for {inputs['idle_for_s']} s >= {policy.idle_s} s: scale down", inputs)
    return hold("within the thresholds")
