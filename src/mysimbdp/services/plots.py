"""``report --plot``: throughput and latency over time, one line per tenant (matplotlib, no screen)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from mysimbdp.services.timeseries import Point, TenantSeries

PANELS = (
    (("batch_rows_per_s",), "batch rows/s"),
    (("batch_run_p50_s", "batch_run_p95_s"), "batch run p50 / p95 (s)"),
    (("stream_records_per_s",), "stream records/s"),
    (("stream_latency_p50_ms", "stream_latency_p95_ms"), "stream latency p50 / p95 (ms)"),
)


def plot_series(series: Sequence[TenantSeries], path: Path, *, title: str) -> Path:
    """Write a PNG of four panels (the fields of ``TenantSeries``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(PANELS), 1, figsize=(10, 2.4 * len(PANELS)), sharex=True)
    for axis, (fields, label) in zip(axes, PANELS, strict=True):
        for tenant in series:
            for field in fields:
                points: list[Point] = getattr(tenant, field)
                if points:
                    name = tenant.tenant + (f" {field.split('_')[-2]}" if len(fields) > 1 else "")
                    times = [datetime.fromtimestamp(p.at, UTC) for p in points]
                    marker = "." if len(points) < 30 else ""
                    axis.plot(times, [p.value for p in points], label=name, marker=marker)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if not axis.lines:
            axis.text(0.5, 0.5, "no data in this period", transform=axis.transAxes, ha="center", color="grey")
    axes[0].set_title(title)
    if any(axis.lines for axis in axes):
        axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
