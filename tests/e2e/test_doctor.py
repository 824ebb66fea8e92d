"""``mysimbdp doctor`` and the sandbox status at start: shown when there, a warning when
turned off, a refusal naming the remedy when the kernel has none (forced with
MYSIMBDP_SANDBOX_LANDLOCK_ABI=0)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from mysimbdp.adapters.process.sandbox import probe
from tests.e2e.conftest import Cli, healthy
from tests.helpers import on_backends, until

CHECK_NAMES = [
    "sandbox",
    "meta store",
    "coredms",
    "broker",
    "broker replicas",
    "store replication",
    "api",
    "secrets",
    "python",
    "disk",
]


@pytest.fixture(autouse=True)
def _kernel_sandbox() -> None:
    if not probe("on").available:
        pytest.skip(f"this machine has no sandbox: {probe('on').problem}")


def _checks(cli: Cli, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = cli.run("doctor", "--json", *args)
    answer = orjson.loads(proc.stdout)
    assert set(answer) == {"checks", "ok"} and answer["ok"] is (proc.returncode == 0), answer
    return proc.returncode, {c["name"]: c for c in answer["checks"]}


def test_doctor_on_a_fresh_home_passes_with_the_sandbox_enforced(cli: Cli) -> None:
    """Every check in order, each with a state and a detail; the sandbox's status whole
    under its check; the text form says the same and "ready". The embedded broker and
    SQLite are one machine, said plainly and ok; the test's PostgreSQL has no standby: a
    warning that says what a primary loss costs."""
    code, checks = _checks(cli)
    assert code == 0, checks
    assert list(checks) == CHECK_NAMES
    on_postgres = checks["meta store"]["data"]["backend"] == "postgresql"
    warned = ["store replication"] if on_postgres else []
    assert all(set(c) == {"name", "state", "detail", "data"} for c in checks.values()), checks
    assert [name for name, c in checks.items() if c["state"] != "ok"] == warned, checks
    assert checks["broker replicas"]["detail"].startswith("embedded NATS: single machine, one copy of each stream")
    replication = checks["store replication"]
    if on_postgres:
        assert replication["state"] == "warn" and "primary, no standby: a primary loss loses" in replication["detail"]
    else:
        assert "single machine, no replication" in replication["detail"], replication
    sandbox = checks["sandbox"]
    assert sandbox["detail"].startswith(f"Landlock ABI {probe('on').landlock_abi} ")
    assert sandbox["data"] == probe("on").as_dict()
    assert sandbox["data"]["mechanism"] == "landlock+seccomp" and sandbox["data"]["enforced"] is True
    assert checks["meta store"]["data"]["backend"] in ("sqlite", "postgresql")
    text = cli.run("doctor", check=True).stdout.splitlines()
    assert text[0].startswith("[ok  ] sandbox: Landlock ABI")
    assert text[-1] == ("ready; warnings: store replication" if on_postgres else "ready")


@on_backends("sqlite")
def test_the_sandbox_off_is_a_visible_warning_not_a_failure(cli: Cli) -> None:
    cli.env["MYSIMBDP_SANDBOX"] = "off"
    code, checks = _checks(cli)
    assert code == 0 and checks["sandbox"]["state"] == "warn"
    assert checks["sandbox"]["data"]["mechanism"] == "none"
    assert "MYSIMBDP_SANDBOX=off: tenant apps run UNCONFINED" in checks["sandbox"]["detail"]
    text = cli.run("doctor", check=True).stdout
    assert "[WARN] sandbox: MYSIMBDP_SANDBOX=off: tenant apps run UNCONFINED" in text
    assert text.splitlines()[-1] == "ready; warnings: sandbox"


@on_backends("sqlite")
def test_without_a_sandbox_doctor_fails_and_up_starts_nothing(cli: Cli) -> None:
    """An old kernel (forced): doctor exits 1 naming the remedy; `up` exits non-zero with the
    same remedy and starts nothing; with MYSIMBDP_SANDBOX=off on purpose, `up` runs, logs
    ``sandbox_off``, and doctor sees the running platform (its API and broker) and warns."""
    cli.env["MYSIMBDP_SANDBOX_LANDLOCK_ABI"] = "0"
    code, checks = _checks(cli)
    assert code == 1 and checks["sandbox"]["state"] == "fail"
    assert "tenant apps will not run; set MYSIMBDP_SANDBOX=off" in checks["sandbox"]["detail"]
    assert [name for name, c in checks.items() if c["state"] != "ok"] == ["sandbox"]
    assert "failed: sandbox" in cli.run("doctor").stdout
    up = cli.run("up", timeout=60)
    assert up.returncode == 1 and "tenant apps will not run; set MYSIMBDP_SANDBOX=off" in up.stderr
    assert not (cli.home / "broker").exists()  # nothing was started: no broker, no API
    assert '"sandbox_off"' not in up.stderr
    cli.env["MYSIMBDP_SANDBOX"] = "off"
    running = cli.popen("up")
    try:
        log = cli.home.parent / "up.log"
        until(lambda: log.exists() and '"sandbox_off"' in log.read_text(), timeout_s=60, what="sandbox_off")
        with httpx.Client(base_url=f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}", timeout=5) as http:
            until(lambda: healthy(http), what="/healthz")
        until(lambda: (cli.home / "broker" / "url").exists(), what="HOME/broker/url")
        code, checks = _checks(cli)
        api_url = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
        worker_code, worker_checks = _checks(cli, "--api", api_url)  # as a worker node would ask
    finally:
        running.terminate()
        assert running.wait(timeout=60) == 0
    assert code == 0 and checks["sandbox"]["state"] == "warn", checks
    assert checks["api"]["state"] == "ok" and "a running platform answers" in checks["api"]["detail"]
    assert checks["broker"]["state"] == "ok" and "the running platform's broker" in checks["broker"]["detail"]
    replicas = checks["broker replicas"]
    assert replicas["state"] == "ok" and "1 node, not clustered" in replicas["detail"], replicas
    assert "platform api" not in checks
    assert worker_code == 0 and list(worker_checks) == [*CHECK_NAMES[:7], "platform api", *CHECK_NAMES[7:]]
    platform_api = worker_checks["platform api"]
    assert platform_api == {
        "name": "platform api",
        "state": "ok",
        "detail": f"{api_url}/healthz answers ok (this node works through it)",
        "data": {"url": api_url},
    }
    warning = next(orjson.loads(line) for line in log.read_text().splitlines() if '"sandbox_off"' in line)
    assert warning["level"] == "warning" and "UNCONFINED" in warning["warning"]


@on_backends("sqlite")
def test_report_shows_the_sandbox(cli: Cli) -> None:
    """`report` starts with the sandbox line; `report --json` has it under ``sandbox``."""
    assert cli.run("report", check=True).stdout.startswith("sandbox: Landlock ABI")
    sandbox = orjson.loads(cli.run("report", "--json", check=True).stdout)["sandbox"]
    assert sandbox["enforced"] is True and sandbox["mechanism"] == "landlock+seccomp"
    assert sandbox["summary"].startswith("sandbox: Landlock ABI")
    cli.env["MYSIMBDP_SANDBOX"] = "off"
    assert cli.run("report", check=True).stdout.startswith("sandbox: MYSIMBDP_SANDBOX=off: tenant apps run UNCONFINED")
    assert orjson.loads(cli.run("report", "--json", check=True).stdout)["sandbox"]["enforced"] is False
