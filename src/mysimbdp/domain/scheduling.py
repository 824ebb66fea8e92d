"""Fair scheduling of staged files across tenants (pure).

Round robin over tenants: each round gives at most one file to each tenant that has work
and room under its app's concurrency, least-busy and least-recently-served tenants first.
A tenant with 1,000 queued files therefore waits its turn like a tenant with one.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping, Sequence

from mysimbdp.domain.records import FileRecord

AppKey = tuple[str, str]  # (tenant, app)


def pick_files(
    runnable: Sequence[FileRecord],
    *,
    free_slots: int,
    running: Mapping[AppKey, int],
    concurrency: Mapping[AppKey, int],
    last_served: Mapping[str, float],
) -> list[FileRecord]:
    """Choose up to ``free_slots`` files to start now. ``runnable`` is oldest first."""
    queues: dict[str, deque[FileRecord]] = defaultdict(deque)
    for f in runnable:
        queues[f.tenant].append(f)
    busy: dict[AppKey, int] = defaultdict(int, running)
    per_tenant: dict[str, int] = defaultdict(int)
    for (tenant, _app), count in running.items():
        per_tenant[tenant] += count
    order = sorted(queues, key=lambda t: (per_tenant[t], last_served.get(t, 0.0), t))
    chosen: list[FileRecord] = []
    while len(chosen) < free_slots:
        progressed = False
        for tenant in order:
            if len(chosen) >= free_slots:
                break
            queue = queues[tenant]
            for _ in range(len(queue)):
                f = queue.popleft()
                key = (tenant, f.app)
                if busy[key] < concurrency.get(key, 1):
                    busy[key] += 1
                    chosen.append(f)
                    progressed = True
                    break
                queue.append(f)  # this app is full; try the tenant's other apps' files
            else:
                continue
        if not progressed:
            break
    return chosen
