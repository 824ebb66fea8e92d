"""``--api URL`` on ``ingest``, ``query``, ``files`` and ``quarantine list`` (``cli/remote.py``),
offline: the options and variables are documented, and a remote command opens no platform home."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mysimbdp.cli import main
from mysimbdp.cli.remote import state_path

COMMANDS = [["ingest"], ["query"], ["files"], ["quarantine", "list"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_names_the_api_option_and_its_variables(command: list[str]) -> None:
    """Each remote-capable command's --help mentions --api, MYSIMBDP_API_URL and MYSIMBDP_API_KEY."""
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--api URL" in result.output and "MYSIMBDP_API_URL" in result.output
    assert "MYSIMBDP_API_KEY" in result.output


def test_an_api_url_without_a_key_is_a_usage_error_and_opens_no_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--api without MYSIMBDP_API_KEY / --api-key: exit 2 naming the variable; nothing made on disk."""
    monkeypatch.chdir(tmp_path)
    args = ["query", "--tenant", "acme", "--dataset", "d", "--count", "--api", "http://127.0.0.1:9"]
    result = CliRunner().invoke(main, args, env={"MYSIMBDP_API_KEY": None, "MYSIMBDP_HOME": None})
    assert result.exit_code == 2 and "MYSIMBDP_API_KEY" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_the_state_file_is_in_the_users_cache_directory() -> None:
    """$XDG_CACHE_HOME/mysimbdp/uploads.json, else ~/.cache/mysimbdp/uploads.json."""
    assert state_path({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/mysimbdp/uploads.json")
    assert state_path({"HOME": "/h"}) == Path("/h/.cache/mysimbdp/uploads.json")
