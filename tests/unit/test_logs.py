"""The logging setup: lines carry the component and the bound ids; below the level, no structlog."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from mysimbdp import logs


def _lines(err: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_lines_carry_the_component_and_the_ids_of_every_enclosing_context(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    log = logs.get_logger("fetchdata")
    with logs.log_context(tenant="acme"):
        with logs.log_context(file_id="f1"):
            log.info("file_staged", rows=10)
        log.warning("after_inner")
    log.info("outside")
    log.debug("below_the_level")
    lines = _lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["file_staged", "after_inner", "outside"]
    staged, after, outside = lines
    assert staged | {"timestamp": None} == {
        "event": "file_staged",
        "component": "fetchdata",
        "tenant": "acme",
        "file_id": "f1",
        "rows": 10,
        "level": "info",
        "timestamp": None,
    }
    assert after["tenant"] == "acme" and "file_id" not in after and after["level"] == "warning"
    assert "tenant" not in outside


def test_an_exception_line_holds_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    try:
        raise ValueError("the cause")
    except ValueError:
        logs.get_logger("manager").exception("run_crashed", file_id="f2")
    (line,) = _lines(capsys.readouterr().err)
    assert line["level"] == "error" and "ValueError: the cause" in str(line["exception"])


@pytest.mark.parametrize(("level", "imported"), [("error", False), ("info", True)])
def test_structlog_is_imported_only_when_a_line_is_written(level: str, imported: bool) -> None:
    probe = (
        "import sys; from mysimbdp import logs; "
        f"logs.configure({level!r}, 'json'); logs.get_logger('cli').info('started'); "
        "print('structlog' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == str(imported)
    assert ('"event":"started"' in run.stderr.replace(" ", "")) is imported
