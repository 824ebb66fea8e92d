"""``mysimbdp worker`` offline: its --help names the remote mode's option, variables and what it
fetches; --api without a worker token is a usage error that opens no home."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mysimbdp.cli import main


def test_worker_help_names_the_api_its_variables_and_what_it_fetches() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for needed in ("--api", "MYSIMBDP_API_URL", "MYSIMBDP_WORKER_TOKEN", "HTTP ranges", "bundle", "sha256", "token"):
        assert needed in text, needed


def test_an_api_url_without_a_worker_token_is_a_usage_error_and_opens_no_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MYSIMBDP_WORKER_TOKEN": None, "MYSIMBDP_HOME": None}
    result = CliRunner().invoke(main, ["worker", "--api", "http://127.0.0.1:9"], env=env)
    assert result.exit_code == 2 and "MYSIMBDP_WORKER_TOKEN" in result.output, result.output
    assert list(tmp_path.iterdir()) == []
