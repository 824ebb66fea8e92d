"""`mysimbdp ingest` of something that is not a regular file: refused with one line naming the
tenant, the file and the rule, exit code 1, no traceback, nothing taken."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import Cli
from tests.helpers import on_backends


@on_backends("sqlite")
def test_ingest_refuses_a_fifo(cli: Cli, tmp_path: Path) -> None:
    cli.run("tenant", "add", "acme", check=True)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # copying it would block for ever: nobody writes to it
    done = cli.run("ingest", str(fifo), "--tenant", "acme", timeout=60.0)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "tenant 'acme': file 'pipe.csv' rejected: rule not_a_regular_file: it is a FIFO" in done.stderr
    assert not any((cli.home / "inbox" / "acme").iterdir())
