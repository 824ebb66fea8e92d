"""``mysimbdp up --host/--port/--tls-cert/--tls-key``: the API on a chosen address, over https."""

from __future__ import annotations

import datetime
import ipaddress
import re
import signal
import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import Cli
from tests.helpers import until

URL_RE = re.compile(r"API (https?)://127\.0\.0\.1:(\d+)/v1/ \(docs [^)]+\), dashboard (\S+)/;")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mysimbdp test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def listening(cli: Cli) -> re.Match[str] | None:
    return URL_RE.search(cli.up_log())


def test_up_serves_https_on_an_ephemeral_port_and_prints_its_urls(cli: Cli, tmp_path: Path) -> None:
    """`up --port 0 --tls-cert --tls-key` prints https URLs with the port it took, and answers over TLS
    to a client trusting only that certificate (and not over plain http)."""
    cert, key = self_signed(tmp_path)
    up = cli.popen("up", "--host", "127.0.0.1", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        found = until(lambda: listening(cli), what="up's URLs on stderr")
        scheme, port = found.group(1), int(found.group(2))
        assert scheme == "https" and port != 0 and found.group(3) == f"https://127.0.0.1:{port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted) as http:
            answer = until(lambda: _get(http), what="/healthz over https")
            assert answer.status_code == 200
        with httpx.Client(base_url=f"https://127.0.0.1:{port}") as untrusting:
            try:
                untrusting.get("/healthz")
                raise AssertionError("a client not trusting the certificate was answered")
            except httpx.ConnectError as exc:
                assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)


def _get(http: httpx.Client) -> httpx.Response | None:
    try:
        return http.get("/healthz")
    except httpx.TransportError:
        return None


def test_up_refuses_a_certificate_without_its_key(cli: Cli, tmp_path: Path) -> None:
    """--tls-cert without --tls-key is a usage error naming both options; a key that is not PEM is
    refused before anything starts, naming the files."""
    cert, _ = self_signed(tmp_path)
    alone = cli.run("up", "--tls-cert", str(cert))
    assert alone.returncode == 2 and "--tls-cert" in alone.stderr and "--tls-key" in alone.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    bad = cli.run("up", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(junk))
    assert bad.returncode == 1 and "rule tls" in bad.stderr and "junk.pem" in bad.stderr, bad.stderr
