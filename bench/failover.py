"""PostgreSQL failover: the time from killing the primary to the first row written after it.

A primary + synchronous standby (``tests/clusters/postgres.py``: Debian's PostgreSQL 15, each
node on its own test host in a network namespace) holds coredms. A writer goes through the
platform's own store (``coredms.postgres``, a tenant provisioned through the multi-host URL
``postgresql://h1:5432,h2:5432/...?target_session_attrs=read-write``), writing a batch of 10
rows in a loop and retrying a ``StoreUnavailable`` every 50 ms, as the SDK's apps do. Each
round kills the primary's host (every PostgreSQL process SIGKILLed), promotes the standby at
once (``pg_ctl promote -w``: the documented operator step, here issued without delay), and
measures:

  - kill -> promoted: until ``pg_ctl promote -w`` returned;
  - kill -> first row: until the first write the writer began once the primary was dead
    committed (on the new primary: its connection to the dead one failed, it reconnected
    through the URL).

A round is a fresh cluster. Prints the figures of every round and their medians, writes them
to bench/out/failover.json. Needs root (network namespaces), iproute2 and postgresql-15.
Run: ``.venv/bin/python bench/failover.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.clusters.postgres import PostgresCluster, problem  # noqa: E402
from tests.netns import Network  # noqa: E402

from mysimbdp.adapters.coredms import open_admin, open_store  # noqa: E402
from mysimbdp.errors import StoreUnavailable  # noqa: E402

RETRY_S = 0.05


class Writer:
    """Writes 10 rows at a time through the tenant's store until stopped; keeps the start and
    the end of every write that committed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.committed: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        store = open_store(self.url, busy_timeout_s=2.0)
        n = 0
        try:
            while not self.stop.is_set():
                rows = [(f"k{n + i}", orjson.dumps({"n": n + i})) for i in range(10)]
                started = time.monotonic()
                try:
                    store.write("probe", rows, source="bench")
                except StoreUnavailable:
                    time.sleep(RETRY_S)
                    continue
                self.committed.append((started, time.monotonic()))
                n += 10
        finally:
            store.close()


def round_once() -> dict[str, float]:
    with Network() as net, PostgresCluster(net) as pg:
        admin = open_admin(pg.url(), pg_prefix="bench")
        try:
            tenant_url = admin.provision("acme")
        finally:
            admin.close()
        writer = Writer(tenant_url)
        writer.thread.start()
        while len(writer.committed) < 20:
            time.sleep(0.01)
        killed = time.monotonic()
        pg.kill_primary()
        dead = time.monotonic()  # every PostgreSQL process of the primary's host is gone
        pg.promote()
        promoted = time.monotonic()
        while not (after := [end for start, end in writer.committed if start > dead]):
            time.sleep(0.005)
        first = min(after)
        writer.stop.set()
        writer.thread.join(timeout=30)
    return {"kill_to_promoted_s": round(promoted - killed, 3), "kill_to_first_row_s": round(first - killed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if (reason := problem()) is not None:
        sys.exit(f"bench/failover.py: {reason}")
    rounds = []
    for n in range(args.repeat):
        result = round_once()
        rounds.append(result)
        print(
            f"round {n + 1}: kill -> promoted {result['kill_to_promoted_s']:.3f} s, "
            f"kill -> first row {result['kill_to_first_row_s']:.3f} s"
        )
    medians = {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}
    print(
        f"median of {len(rounds)}: kill -> promoted {medians['kill_to_promoted_s']:.3f} s, "
        f"kill -> first row {medians['kill_to_first_row_s']:.3f} s"
    )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "failover.json").write_text(json.dumps({"rounds": rounds, "median": medians}, indent=2) + "\n")


if __name__ == "__main__":
    main()
