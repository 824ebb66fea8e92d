"""The remote CLI (`--api URL`) against a real `mysimbdp up` (its API on a free port), on SQLite
and PostgreSQL: run from a HOME of its own with no platform home, `ingest`, `query`, `files`
and `quarantine list` print what the local commands print for the same data, with the same
exit codes; a big file goes through the tus server, and a run killed midway is resumed from
the server's offset by the next run, every row stored once."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from mysimbdp.adapters.broker.nats import free_port
from tests import clifork
from tests.e2e.conftest import Cli, healthy
from tests.e2e.test_up_tls import self_signed
from tests.helpers import on_backends, until

PROFILE = """
formats: [csv]
limits: {max_file_size_bytes: 2000}
required_columns: [sku, qty]
quality:
  max_bad_row_ratio: 0.5
  rules:
    - {field: qty, type: int, required: true, min: 0}
dataset: orders
key_fields: [sku]
batch_apps:
  - name: orders
    command: ["{python}", "{bundle}/app.py"]
    file_pattern: "*.csv"
"""
APP = (
    "from mysimbdp import sdk\n\n"
    "def transform(row):\n"
    "    return {'sku': row['sku'], 'qty': int(row['qty'])}\n\n"
    "if __name__ == '__main__':\n"
    "    sdk.run_batch(transform)\n"
)
BIG_ROWS = 12_000  # about 230 KB of CSV
SMALL = ("--resumable-over", "65536", "--chunk-bytes", "16384")  # so that the big file can be small


@dataclass
class Remote:
    """The CLI on another machine: its own HOME and working directory, no platform home, the API's URL."""

    url: str
    key: str
    home: Path

    def env(self, key: str | None = None, **extra: str) -> dict[str, str]:
        mine = ("MYSIMBDP_", "XDG_", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
        env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
        env.update(HOME=str(self.home), MYSIMBDP_API_URL=self.url, MYSIMBDP_API_KEY=key or self.key, **extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mysimbdp", *args]

    def run(self, *args: str, key: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return clifork.run(args, env=self.env(key, **env), cwd=str(self.home))

    def json(self, *args: str) -> object:
        proc = self.run(*args)
        try:
            return orjson.loads(proc.stdout)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"not JSON ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from exc

    def state(self) -> dict[str, dict[str, object]]:
        path = self.home / ".cache" / "mysimbdp" / "uploads.json"
        return orjson.loads(path.read_bytes()) if path.exists() else {}


def _served(
    cli: Cli, tmp_path: Path, key: str, cert: Path | None = None, tls_key: Path | None = None
) -> Iterator[Remote]:
    """`up` (over https with ``cert``), awaited; the CLI elsewhere."""
    tls = ("--tls-cert", str(cert), "--tls-key", str(tls_key)) if cert and tls_key else ()
    up = cli.popen("up", *tls)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{cli.env['MYSIMBDP_API_PORT']}"
    try:
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(cert)) if cert else True) as http:
            until(lambda: healthy(http) or up.poll() is not None, 60, "the API of `up`")
        assert up.poll() is None, cli.up_log()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        yield Remote(url, key, elsewhere)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise


@pytest.fixture
def shop(cli: Cli, tmp_path: Path, write_tenant: Callable[..., Path]) -> Iterator[Remote]:
    """`up` with tenant acme (quality rules on qty, a small app), and the CLI elsewhere."""
    profile = write_tenant("acme", PROFILE, {"app.py": APP})
    key = cli.json("tenant", "add", "acme", "--profile", str(profile), "--json")["api_key"]
    yield from _served(cli, tmp_path, key)


@pytest.fixture
def plain(cli: Cli, tmp_path: Path) -> Iterator[Remote]:
    """`up` with tenant acme on the default profile, and the CLI elsewhere."""
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    yield from _served(cli, tmp_path, key)


@on_backends("sqlite")
def test_remote_commands_print_what_the_local_ones_print(cli: Cli, shop: Remote, tmp_path: Path) -> None:
    """From a HOME without a platform, `ingest --api --wait --json` exits as a local ingest does (0
    ingested with quarantined rows, 3 rejected, reasons printed) with the same summary; `files`,
    `query` and `quarantine list` print exactly what the local commands print; a wrong key and an
    unreachable URL are clear errors naming the tenant and the URL."""
    remote_file = tmp_path / "orders_remote.csv"
    remote_file.write_text("sku,qty\na1,3\na2,-1\na3,x\na4,9\n")
    local_file = tmp_path / "orders_local.csv"
    local_file.write_text("sku,qty\nb1,1\nb2,-5\nb3,y\nb4,2\n")

    proc = shop.run("ingest", str(remote_file), "--tenant", "acme", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    remote = orjson.loads(proc.stdout)
    local_proc = cli.run("ingest", str(local_file), "--tenant", "acme", "--json")
    assert local_proc.returncode == 0, local_proc.stderr
    local = orjson.loads(local_proc.stdout)
    assert remote.keys() == local.keys()
    for summary in (remote, local):
        assert (summary["status"], summary["dataset"], summary["tenant"]) == ("ingested", "orders", "acme")
        assert (summary["rows_written"], summary["rows_rejected"]) == (2, 2)
        assert [q["line"] for q in summary["quarantine_sample"]] == [3, 4]
    assert remote["name"] == "orders_remote.csv" and "/archive/acme/" in remote["path"]

    files_local = cli.json("files", "--tenant", "acme", "--json")
    assert shop.json("files", "--tenant", "acme", "--json") == files_local
    assert [f for f in files_local if f["file_id"] == remote["file_id"]] == [remote]  # same summary as local
    for args in (
        ("files", "--tenant", "acme"),
        ("query", "--tenant", "acme", "--dataset", "orders", "--count"),
        ("query", "--tenant", "acme", "--dataset", "orders", "--limit", "3", "--offset", "1"),
        ("quarantine", "list", "--tenant", "acme"),
        ("quarantine", "list", "--tenant", "acme", "--file", remote["file_id"], "--json"),
    ):
        here, there = cli.run(*args), shop.run(*args)
        assert (there.returncode, there.stdout) == (here.returncode, here.stdout), (args, there.stderr)
        assert here.returncode == 0 and (args[-1] != "--count" or here.stdout == "4\n"), here

    rejected = tmp_path / "no_qty.csv"
    rejected.write_text("sku,amount\na1,3\n")
    proc = shop.run("ingest", str(rejected), "--tenant", "acme")
    local_rejected = tmp_path / "no_qty_local.csv"
    local_rejected.write_text("sku,amount\nz9,1\n")
    assert cli.run("ingest", str(local_rejected), "--tenant", "acme", "--wait").returncode == 3
    assert proc.returncode == 3, proc.stderr
    assert "no_qty.csv: rejected" in proc.stdout and "qty" in proc.stdout, proc.stdout

    too_big = tmp_path / "too_big.csv"
    too_big.write_text("sku,qty\n" + "".join(f"s{n},{n}\n" for n in range(400)))
    for how in ((), ("--resumable-over", "0")):  # POST /v1/files, then tus
        refused = shop.run("ingest", str(too_big), "--tenant", "acme", "--wait", *how)
        assert refused.returncode == 1, refused.stderr
        assert all(s in refused.stderr for s in ("'acme'", "too_big.csv", "413", "rule size", "2000 bytes")), (
            refused.stderr
        )

    wrong = shop.run("files", "--tenant", "acme", key="not-the-key")
    assert wrong.returncode == 1 and "refused for tenant 'acme'" in wrong.stderr and shop.url in wrong.stderr
    assert "not-the-key" not in wrong.stderr + wrong.stdout
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = shop.run("query", "--tenant", "acme", "--dataset", "orders", "--count", "--api", nowhere)
    assert unreachable.returncode == 1 and f"cannot reach the platform's API at {nowhere}" in unreachable.stderr
    assert sorted(p.name for p in shop.home.iterdir()) == [".cache"]  # nothing of a platform made here
    assert shop.state() == {}  # the refused resumable upload left nothing to resume


@pytest.fixture
def https(cli: Cli, tmp_path: Path) -> Iterator[tuple[Remote, Path]]:
    """`up` over https with a self-signed certificate, tenant acme on the default profile."""
    key = cli.json("tenant", "add", "acme", "--json")["api_key"]
    cert, tls_key = self_signed(tmp_path)
    for remote in _served(cli, tmp_path, key, cert, tls_key):
        yield remote, cert


@on_backends("postgres")
def test_over_https_the_platforms_own_certificate_is_trusted_with_ca_cert(
    https: tuple[Remote, Path], tmp_path: Path
) -> None:
    """Against `up --tls-cert` (self-signed), a small file (POST, httpx) sent with --ca-cert and a big
    one (tus, tuspy) with SSL_CERT_FILE are ingested; without the certificate the error names the
    URL, the untrusted certificate and --ca-cert."""
    remote, cert = https
    small = tmp_path / "small.csv"
    small.write_text("id,v\n1,2\n2,3\n")
    proc = remote.run("ingest", str(small), "--tenant", "acme", "--json", "--ca-cert", str(cert))
    assert proc.returncode == 0 and orjson.loads(proc.stdout)["rows_written"] == 2, proc.stderr
    big = _big_csv(tmp_path / "big.csv")
    proc = remote.run("ingest", str(big), "--tenant", "acme", "--json", *SMALL, SSL_CERT_FILE=str(cert))
    assert proc.returncode == 0 and orjson.loads(proc.stdout)["rows_written"] == BIG_ROWS, proc.stderr
    untrusted = remote.run("query", "--tenant", "acme", "--dataset", "small", "--count")
    assert untrusted.returncode == 1, untrusted.stderr
    assert remote.url in untrusted.stderr and "--ca-cert" in untrusted.stderr and "certificate" in untrusted.stderr


def _big_csv(path: Path) -> Path:
    path.write_text("id,sensor,value\n" + "".join(f"{n},s{n % 13},{n * 0.25}\n" for n in range(BIG_ROWS)))
    return path


@on_backends("sqlite")
def test_a_big_upload_killed_midway_resumes_from_the_servers_offset(plain: Remote, tmp_path: Path) -> None:
    """A file over the resumable threshold goes through /v1/uploads/; the CLI killed (SIGKILL) while
    sending it leaves the server part of it, and `ingest` run again resumes at the server's offset
    (said on stderr), sends the rest, and every row is stored exactly once."""
    data = _big_csv(tmp_path / "readings.csv")
    size = data.stat().st_size
    argv = plain.argv("ingest", str(data), "--tenant", "acme", *SMALL, "--limit-rate", "50000")
    first = subprocess.Popen(argv, env=plain.env(), cwd=plain.home, stderr=subprocess.DEVNULL)
    with httpx.Client(base_url=plain.url, headers={"Authorization": f"Bearer {plain.key}"}) as http:
        try:
            url = until(lambda: next((str(e["url"]) for e in plain.state().values()), None), 60, "the upload's URL")
            upload = "/v1/uploads/" + url.rsplit("/", 1)[-1]
            until(lambda: http.get(upload).json()["offset_bytes"] > 0, 60, "part of the file on the server")
        finally:
            first.kill()
            first.wait(timeout=30)
        held = http.get(upload).json()
        assert 0 < held["offset_bytes"] < size and not held["complete"], held

        proc = plain.run("ingest", str(data), "--tenant", "acme", *SMALL, "--wait", "--json")
        assert proc.returncode == 0, proc.stderr
        assert f"readings.csv: resuming the upload at byte {held['offset_bytes']} of {size}" in proc.stderr
        summary = orjson.loads(proc.stdout)
        assert (summary["status"], summary["rows_written"], summary["bytes"]) == ("ingested", BIG_ROWS, size)
        done = http.get(upload).json()
        assert done["complete"] and done["file_id"] == summary["file_id"], done
    assert plain.state() == {}  # the finished upload is forgotten
    count = plain.run("query", "--tenant", "acme", "--dataset", "readings", "--count")
    assert count.stdout.strip() == str(BIG_ROWS), count.stderr
