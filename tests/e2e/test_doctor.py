"""``mysimbdp doctor`` and the sandbox status at start: shown when there, a warning when
turned off, a refusal naming the remedy when the kernel has none (forced with
MYSIMBDP_SANDBOX_LANDLOCK_ABI=0)."""

from __future__ import annotations

import pytest

from mysimbdp.adapters.sandbox import probe
from tests.e2e.conftest import Cli


@pytest.fixture(autouse=True)
def _kernel_sandbox() -> None:
    if not probe("on").available:
        pytest.skip(f"this machine has no sandbox: {probe('on').problem}")


def _checks(cli: Cli) -> tuple[int, dict[str, dict[str, object]]]:
    proc = cli.run("doctor", "--json")
    import orjson

    answer = orjson.loads(proc.stdout)
    assert answer["ok"] == (proc.returncode == 0)
    return proc.returncode, {c["name"]: c for c in answer["checks"]}


def test_doctor_shows_the_sandbox_and_the_environment(cli: Cli) -> None:
    code, checks = _checks(cli)
    assert code == 0
    assert list(checks) == ["sandbox", "meta store", "coredms", "broker", "api", "python", "disk"]
    sandbox = checks["sandbox"]
    assert sandbox["state"] == "ok" and "Landlock ABI" in str(sandbox["detail"])
    assert sandbox["data"]["enforced"] is True  # type: ignore[index]
    text = cli.run("doctor", check=True).stdout
    assert "[ok  ] sandbox: Landlock ABI" in text


def test_the_sandbox_off_is_a_visible_warning(cli: Cli) -> None:
    cli.env["MYSIMBDP_SANDBOX"] = "off"
    code, checks = _checks(cli)
    assert code == 0 and checks["sandbox"]["state"] == "warn"
    assert "UNCONFINED" in str(checks["sandbox"]["detail"])


def test_without_a_sandbox_doctor_fails_and_up_refuses_to_start(cli: Cli) -> None:
    """An old kernel (forced): doctor fails naming the remedy; `up` starts nothing and says
    why; with MYSIMBDP_SANDBOX=off on purpose, `up` runs and logs the warning."""
    cli.env["MYSIMBDP_SANDBOX_LANDLOCK_ABI"] = "0"
    code, checks = _checks(cli)
    assert code == 1 and checks["sandbox"]["state"] == "fail"
    assert "MYSIMBDP_SANDBOX=off" in str(checks["sandbox"]["detail"])
    up = cli.run("up", timeout=60)
    assert up.returncode == 1 and "tenant apps will not run; set MYSIMBDP_SANDBOX=off" in up.stderr
    assert not (cli.home / "broker").exists()  # nothing was started
    cli.env["MYSIMBDP_SANDBOX"] = "off"
    running = cli.popen("up")
    try:
        log = cli.home.parent / "up.log"
        from tests.e2e.conftest import wait_for

        wait_for(lambda: log.exists() and '"sandbox_off"' in log.read_text(), timeout_s=60, what="sandbox_off")
    finally:
        running.terminate()
        assert running.wait(timeout=60) == 0


def test_report_shows_the_sandbox(cli: Cli) -> None:
    """`report` ends with the sandbox line; `report --json` has it under ``sandbox``."""
    assert "sandbox: Landlock ABI" in cli.run("report", check=True).stdout
    import orjson

    assert orjson.loads(cli.run("report", "--json", check=True).stdout)["sandbox"]["enforced"] is True
    cli.env["MYSIMBDP_SANDBOX"] = "off"
    assert "UNCONFINED" in cli.run("report", check=True).stdout
