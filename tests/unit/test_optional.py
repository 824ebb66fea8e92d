"""mysimbdp.optional.without: a library imported inside it goes without the hidden package,
which imports as usual afterwards; the platform's NATS client, logging and webhook sender
load neither aiohttp nor rich (each probe run in a fresh interpreter, and shown to load them
when imported the plain way)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mysimbdp.optional import without


def _loaded(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; which of aiohttp, rich, pygments it loaded."""
    probe = (
        code + "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in ('aiohttp', 'rich', 'pygments')}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def test_a_hidden_package_cannot_be_imported_inside_and_can_after() -> None:
    name = "mysimbdp_optional_probe"  # never imported: the import system's own "not found" inside
    with without(name), pytest.raises(ImportError):
        __import__(name)
    assert name not in sys.modules


def test_an_imported_package_is_left_as_it_is() -> None:
    with without("json"):
        import json as again
    assert again is json and sys.modules["json"] is json


@pytest.mark.parametrize(
    ("plain", "lean", "package"),
    [
        ("import nats", "import mysimbdp.adapters.broker.nats.client", "aiohttp"),
        ("import structlog", "import mysimbdp.logs as L; L.get_logger('x').info('probe')", "rich"),
        ("import httpx", "import mysimbdp.managers.notifier", "rich"),
    ],
    ids=["nats-py", "structlog", "httpx"],
)
def test_the_platform_loads_no_unused_extra_and_the_extra_still_imports(plain: str, lean: str, package: str) -> None:
    assert _loaded(plain)[package], f"{plain!r} no longer loads {package}: this probe proves nothing"
    assert not _loaded(lean)[package]
    assert _loaded(f"{lean}\nimport {package}")[package]  # the CLI's tuspy / progress bars still get it
