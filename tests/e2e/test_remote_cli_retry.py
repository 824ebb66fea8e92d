"""The remote CLI when the platform's API goes down mid-upload: `up` killed (SIGKILL) while `ingest --api`
sends a big file through the tus server, then started again; the CLI says the API went away,
retries with a backoff, resumes from the server's offset once it answers, and the file is
ingested with every row once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson

from tests.e2e.conftest import Cli, healthy
from tests.e2e.test_remote_cli import SMALL, Remote
from tests.helpers import on_backends, until

BIG_ROWS = 12_000  # about 230 KB: over SMALL's resumable threshold, ~12 s at --limit-rate 20000

DOWN_S = 4.0  # the API stays down longer than tuspy's own retries of one PATCH (2 x 1 s)


def _big_csv(path: Path) -> Path:
    path.write_text("id,sensor,value\n" + "".join(f"{n},s{n % 13},{n * 0.25}\n" for n in range(BIG_ROWS)))
    return path


def _up(cli: Cli, url: str) -> subprocess.Popen[bytes]:
    up = cli.popen("up")
    with httpx.Client(base_url=url) as http:
        until(lambda: healthy(http) or up.poll() is not None, 60, "the API of `up`")
    assert up.poll() is None, cli.up_log()
    return up


def _stop(up: subprocess.Popen[bytes]) -> None:
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()


@on_backends("sqlite")
def test_the_api_down_mid_upload_the_cli_retries_and_resumes(cli: Cli, tmp_path: Path) -> None:
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    url = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    remote = Remote(url, key, elsewhere)
    data = _big_csv(tmp_path / "readings.csv")
    size = data.stat().st_size
    up = _up(cli, url)
    argv = remote.argv("ingest", str(data), "--tenant", "acme", *SMALL, "--limit-rate", "20000", "--wait", "--json")
    ingest = subprocess.Popen(argv, env=remote.env(), cwd=remote.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            upload_url = until(lambda: next((str(e["url"]) for e in remote.state().values()), None), 60, "the URL")
            upload = "/v1/uploads/" + upload_url.rsplit("/", 1)[-1]
            until(lambda: http.get(upload).json()["offset_bytes"] > 0, 60, "part of the file on the server")
        up.send_signal(signal.SIGKILL)  # the API goes away mid-upload (a SIGTERM'd `up` serves to the end)
        up.wait(timeout=30)
        time.sleep(DOWN_S)
        assert ingest.poll() is None, "the CLI gave up at once"
        up = _up(cli, url)  # and comes back
        out, err = ingest.communicate(timeout=120)
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
        _stop(up)
    stderr = err.decode()
    assert ingest.returncode == 0, stderr + cli.up_log()
    assert f"readings.csv: the platform's API at {url} went away; retrying (1/8)" in stderr, stderr
    assert "readings.csv: resuming the upload at byte " in stderr and f" of {size}" in stderr, stderr
    summary = orjson.loads(out)
    assert (summary["status"], summary["rows_written"], summary["bytes"]) == ("ingested", BIG_ROWS, size)
    assert remote.state() == {}  # the finished upload is forgotten
