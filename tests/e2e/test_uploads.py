"""Files sent over the network to a real `mysimbdp up` (uvicorn on 127.0.0.1, a free port), on
SQLite and PostgreSQL, by the tus reference client `tuspy` (PyPI; module ``tusclient``): it
uploads in checksummed chunks, stops midway and resumes from the server's offset after a cut,
and every row lands exactly once; a client that stalls hits the server's idle timeout, and one
that cuts its connection leaves nothing behind.

tuspy given a ``file_path`` opens the file again for every size check and every PATCH and never
closes it; the tests hand it an open ``file_stream`` instead, closed by ``with``."""

from __future__ import annotations

import base64
import hashlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from tusclient import client as tus_client
from tusclient.uploader.uploader import Uploader

from tests.e2e.conftest import Cli, healthy
from tests.helpers import on_backends, until

ROWS = 10_000  # 151,773 bytes: ten 16 KiB PATCHes
CHUNK_BYTES = 16 * 1024
IDLE_TIMEOUT_S = 1.0
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Served:
    url: str
    key: str
    home: Path

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def tus(self) -> tus_client.TusClient:
        return tus_client.TusClient(f"{self.url}/v1/uploads/", headers={"Authorization": f"Bearer {self.key}"})

    def leftovers(self) -> list[str]:
        """Hidden partial files in the tenant's inbox."""
        return sorted(p.name for p in (self.home / "inbox" / "acme").glob(".*"))

    def staged(self) -> list[str]:
        staging = self.home / "staging" / "acme"
        return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


@pytest.fixture
def served(cli: Cli) -> Iterator[Served]:
    """`up` with tenant acme (default profile), its API on a free port, a 1 s upload idle timeout."""
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    cli.env["MYSIMBDP_UPLOAD_IDLE_TIMEOUT_S"] = str(IDLE_TIMEOUT_S)
    up = cli.popen("up")
    url = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    try:
        with httpx.Client(base_url=url) as http:
            until(lambda: healthy(http) or up.poll() is not None, 60, "the API of `up`")
        assert up.poll() is None, cli.up_log()
        yield Served(url, key, cli.home)
    finally:
        up.terminate()
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise


def _csv(path: Path, rows: int = ROWS) -> Path:
    path.write_text("id,sensor,value\n" + "".join(f"{n},s{n % 13},{n * 0.25}\n" for n in range(rows)))
    return path


def _ingested(served: Served, file_id: str) -> dict[str, object]:
    """The file's record once final (a file answered 202 is ``checking`` until its checks decide:
    never 404)."""
    with served.http() as http:

        def done() -> dict[str, object] | None:
            answer = http.get(f"/v1/files/{file_id}")
            assert answer.status_code == 200, answer.text
            record: dict[str, object] = answer.json()["file"]
            return record if record["status"] in ("ingested", "failed", "rejected", "duplicate") else None

        record = until(done, 90, f"file {file_id} to be ingested")
    assert record is not None
    return record


def _assert_each_row_once(cli: Cli, rows: int = ROWS) -> None:
    """The dataset holds ``rows`` documents, one per line of the file, none twice."""
    assert cli.json("query", "--tenant", "acme", "--dataset", "readings", "--count") == rows
    out = cli.run("query", "--tenant", "acme", "--dataset", "readings", "--limit", str(rows * 2), check=True)
    docs = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert sorted(int(str(d["id"])) for d in docs) == list(range(rows))
    assert {float(str(d["value"])) for d in docs} == {n * 0.25 for n in range(rows)}


def test_tuspy_uploads_in_checksummed_chunks_and_every_row_is_stored(cli: Cli, served: Served, tmp_path: Path) -> None:
    """tuspy sends the file in 16 KiB PATCHes with sha1 Upload-Checksums; the last answers with
    the file's id, the file is ingested as sent (size, sha256) and each row is stored once."""
    data = _csv(tmp_path / "readings.csv")
    content = data.read_bytes()
    assert len(content) > 5 * CHUNK_BYTES
    with data.open("rb") as stream:
        uploader = served.tus().uploader(
            file_stream=stream, chunk_size=CHUNK_BYTES, metadata={"filename": "readings.csv"}, upload_checksum=True
        )
        uploader.upload()
    assert uploader.offset == len(content) and uploader.request is not None
    file_id = uploader.request.response_headers["mysimbdp-file-id"]
    assert uploader.request.response_headers["mysimbdp-file-status"] == "staged"
    record = _ingested(served, file_id)
    assert record["status"] == "ingested", record
    assert record["size_bytes"] == len(content) and record["sha256"] == hashlib.sha256(content).hexdigest(), record
    assert record["rows_written"] == ROWS
    _assert_each_row_once(cli)
    assert served.leftovers() == []


def _raw(served: Served, head: str, body: bytes) -> socket.socket:
    """A connection to the API that has sent ``head`` (the request line and headers) and ``body``."""
    host, port = served.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def _patch_head(served: Served, upload_url: str, offset: int, declared: int, *extra: str) -> str:
    lines = [
        f"PATCH {upload_url.removeprefix(served.url)} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {served.key}",
        "Tus-Resumable: 1.0.0",
        "Content-Type: application/offset+octet-stream",
        f"Upload-Offset: {offset}",
        f"Content-Length: {declared}",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def _answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the server's answer on ``sock``."""
    received = b""
    while b"\r\n\r\n" not in received:
        more = sock.recv(4096)
        assert more, received
        received += more
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", "0")):
        more = sock.recv(4096)
        assert more, received + body
        body += more
    return int(lines[0].split()[1]), orjson.loads(body) if body else {}


def _settled_offset(served: Served, upload_url: str) -> int:
    """The upload's offset once no request writes it any more: an empty PATCH at the offset HEAD
    gives is 204 then (409 while the cut PATCH still holds the upload)."""
    path = upload_url.removeprefix(served.url)
    with served.http() as http:

        def settled() -> int | None:
            offset = int(http.head(path, headers=TUS).headers["upload-offset"])
            patched = http.patch(
                path,
                content=b"",
                headers={**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
            )
            return offset if patched.status_code == 204 else None

        offset = until(settled, 30, "the cut PATCH to end")
    assert offset is not None
    return offset


@on_backends("sqlite")
def test_an_upload_stopped_and_cut_midway_resumes_from_the_servers_offset(
    cli: Cli, served: Served, tmp_path: Path
) -> None:
    """tuspy stops after 40000 bytes; a raw PATCH then sends 9000 more of 30000 declared and
    drops its connection; a new tuspy uploader asks the server for its offset (at least 40000,
    at most 49000: what reached it; 49000 unless the server was too slow to read the last bytes
    before the cut) and finishes from there. No byte is lost or written twice: the file
    recorded has the sha256 of the one sent, and each row is stored exactly once."""
    data = _csv(tmp_path / "readings.csv")
    content = data.read_bytes()
    with data.open("rb") as stream:
        first = served.tus().uploader(file_stream=stream, chunk_size=CHUNK_BYTES, metadata={"filename": "readings.csv"})
        first.upload(stop_at=40000)
    assert first.offset == 40000 and first.url is not None
    with _raw(served, _patch_head(served, first.url, 40000, 30000), content[40000:49000]):
        time.sleep(IDLE_TIMEOUT_S / 3)  # the server reads what came (uvicorn drops a body part left unread at a cut)
    offset = _settled_offset(served, first.url)
    assert 40000 <= offset <= 49000, offset
    with data.open("rb") as stream:
        resumed = Uploader(file_stream=stream, url=first.url, client=served.tus(), chunk_size=CHUNK_BYTES)
        assert resumed.offset == offset  # tuspy's own HEAD
        resumed.upload()
    assert resumed.request is not None
    record = _ingested(served, resumed.request.response_headers["mysimbdp-file-id"])
    assert record["status"] == "ingested", record
    assert record["size_bytes"] == len(content) and record["sha256"] == hashlib.sha256(content).hexdigest(), record
    assert record["rows_written"] == ROWS
    _assert_each_row_once(cli)
    assert served.leftovers() == []


@on_backends("sqlite")
def test_stalled_clients_hit_the_idle_timeout_and_nothing_is_staged(served: Served, tmp_path: Path) -> None:
    """A tus PATCH with a checksum that stops sending midway: 408 (rule idle_timeout) after the
    server's idle timeout, none of its bytes kept (tuspy's HEAD: the offset it started from); one
    without a checksum: 408, what arrived kept, and the answer says which; tuspy then finishes
    the upload from the server's offset. A ``POST /v1/files`` that stalls: 408, no partial file
    kept; one whose connection closes before its Content-Length: its partial file removed. No
    file is recorded or staged but the finished upload's."""
    data = _csv(tmp_path / "readings.csv", 400)
    content = data.read_bytes()
    with data.open("rb") as stream:
        uploader = served.tus().uploader(file_stream=stream, chunk_size=CHUNK_BYTES, metadata={"filename": "r.csv"})
        uploader.upload(stop_at=1000)
        assert uploader.url is not None
        digest = base64.b64encode(hashlib.sha1(content[1000:]).digest()).decode()
        head = _patch_head(served, uploader.url, 1000, len(content) - 1000, f"Upload-Checksum: sha1 {digest}")
        started = time.monotonic()
        with _raw(served, head, content[1000:3000]) as sock:
            status, body = _answer(sock)
        assert time.monotonic() - started >= IDLE_TIMEOUT_S * 0.9
        assert (status, body["rule"]) == (408, "idle_timeout"), body
        assert "none of this PATCH's bytes were kept" in str(body["error"]), body
        assert uploader.get_offset() == 1000
        with _raw(served, _patch_head(served, uploader.url, 1000, len(content) - 1000), content[1000:3000]) as sock:
            status, body = _answer(sock)  # no checksum: what arrived is kept
        assert (status, body["rule"]) == (408, "idle_timeout"), body
        assert "the bytes that arrived were kept" in str(body["error"]), body
        uploader.offset = uploader.get_offset()
        assert uploader.offset == 3000
        assert served.staged() == []

        post = (
            "POST /v1/files?name=slow.csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {served.key}\r\nContent-Type: text/csv\r\nContent-Length: 5000\r\n\r\n"
        )
        with _raw(served, post, content[:900]) as sock:
            status, body = _answer(sock)
        assert (status, body["rule"]) == (408, "idle_timeout"), body
        assert served.leftovers() == [f".tus-{uploader.url.rsplit('/', 1)[1]}"]
        with _raw(served, post, content[:900]):
            until(lambda: len(served.leftovers()) == 2, 30, "the cut upload's partial file")
        until(lambda: len(served.leftovers()) == 1, 30, "the partial file to be removed")

        with served.http() as http:
            assert http.get("/v1/files").json()["total"] == 0
        uploader.upload()
    assert uploader.request is not None and uploader.request.response_headers["mysimbdp-file-status"] == "staged"
    assert served.leftovers() == []
    with served.http() as http:
        assert http.get("/v1/files").json()["total"] == 1


def _up(cli: Cli) -> subprocess.Popen[bytes]:
    up = cli.popen("up")
    with httpx.Client(base_url=f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}") as http:
        until(lambda: healthy(http) or up.poll() is not None, 60, "the API of `up`")
    assert up.poll() is None, cli.up_log()
    return up


@pytest.mark.slow
def test_sigkill_of_up_right_after_a_202_then_restart_checks_the_file_once(cli: Cli, tmp_path: Path) -> None:
    """``Prefer: respond-async``: 202 checking, then `up` is killed (SIGKILL) at once, its
    check cut short or not begun. After a restart the file kept under the 202's id is checked
    under that id and ingested, one record, each row stored once, nothing left in the inbox."""
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    rows = 200_000  # some 4 MB: its scan is still running when the kill comes
    content = _csv(tmp_path / "readings.csv", rows).read_bytes()
    up = _up(cli)
    url = f"http://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    served = Served(url, key, cli.home)
    try:
        with served.http() as http:
            answer = http.post(
                "/v1/files", params={"name": "readings.csv"}, content=content, headers={"Prefer": "respond-async"}
            )
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    assert answer.status_code == 202, answer.text
    assert answer.headers["preference-applied"] == "respond-async"
    file_id = answer.json()["file_id"]
    up = _up(cli)
    try:
        record = _ingested(served, file_id)
    finally:
        up.terminate()
        up.wait(timeout=60)
    assert record["status"] == "ingested", record
    assert record["sha256"] == hashlib.sha256(content).hexdigest() and record["rows_written"] == rows
    files = orjson.loads(cli.run("files", "--tenant", "acme", "--json").stdout)
    assert len(files) == 1 and file_id in str(files[0]), files  # one record: the 202's
    _assert_each_row_once(cli, rows)
    assert sorted(p.name for p in (cli.home / "inbox" / "acme").iterdir()) == []
