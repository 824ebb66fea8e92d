"""``doctor`` on replicated nodes of its own test hosts (``tests/netns.py``, ``tests/clusters``):
a PostgreSQL primary with a synchronous standby is ok, and the same primary after its standby
was killed fails, saying that writes hang."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mysimbdp.runtime.platform import Platform
from mysimbdp.services.doctor import Check, run_checks
from mysimbdp.settings import Settings
from tests.clusters import postgres
from tests.clusters.postgres import STANDBY_NAME, PostgresCluster
from tests.helpers import until
from tests.netns import Network


def _checks(home: Path, **settings: Any) -> dict[str, Check]:
    platform = Platform(Settings(home=home, **settings), {})
    try:
        return {c.name: c for c in run_checks(platform)}
    finally:
        platform.close()


def test_a_synchronous_standby_is_ok_and_its_loss_fails(home: Path) -> None:
    """Both hosts answer, the URL leads to the primary, the standby streams in sync: ok,
    each host's role named. The standby killed: the meta store warns naming the host that
    is down, and the replication check fails: synchronous_standby_names asks for a standby
    that is not there, so every commit waits."""
    postgres.require()
    with Network() as net, PostgresCluster(net) as pg:
        assert pg.primary is not None and pg.standby is not None
        primary, standby = f"{pg.primary.address}:5432", f"{pg.standby.address}:5432"
        url = pg.url()
        checks = _checks(home, meta_url=url, coredms_url=url)
        replication = checks["store replication"]
        assert replication.state == "ok", replication
        assert f"{primary} primary, {standby} standby" in replication.detail
        assert f"primary, synchronous standby {STANDBY_NAME!r} streaming sync" in replication.detail
        (server,) = replication.data["postgresql"]
        assert server["primary"] is True and server["synchronous_standby_names"] == f"FIRST 1 ({STANDBY_NAME})"
        assert [(s["application_name"], s["state"], s["sync_state"]) for s in server["standbys"]] == [
            (STANDBY_NAME, "streaming", "sync")
        ]
        assert checks["meta store"].state == "ok" and checks["coredms"].state == "ok"
        assert f"hosts: {primary} answers, {standby} answers" in checks["meta store"].detail

        pg.standby.kill()
        after = until(
            lambda: (
                (found := _checks(home, meta_url=url, coredms_url=url))["store replication"].state == "fail" and found
            ),
            timeout_s=60,
            what="doctor to see the standby gone",
        )
        for name in ("meta store", "coredms"):  # the schema is there: opening it writes nothing
            assert after[name].state == "warn", after[name]
            assert f"hosts: {primary} answers, {standby} does not answer" in after[name].detail
        failed = after["store replication"]
        assert f"{primary} primary, {standby} unreachable" in failed.detail, failed
        assert (
            f"synchronous_standby_names='FIRST 1 ({STANDBY_NAME})' but no standby connected: "
            "every commit waits (writes hang)"
        ) in failed.detail
        assert failed.data["postgresql"][0]["standbys"] == []
