"""The state file of unfinished resumable uploads (``adapters/resumable.py``) and its keys."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from mysimbdp.adapters.resumable import STATE_KEEP_S, UploadState, state_key


def test_an_upload_url_is_kept_until_removed(tmp_path: Path) -> None:
    """put, get and remove by key; the state file lives where it is told, its directory made."""
    state = UploadState(tmp_path / "cache" / "mysimbdp" / "uploads.json")
    assert state.get("k") is None
    state.put("k", "http://h/v1/uploads/u1", "a.csv")
    assert state.get("k") == "http://h/v1/uploads/u1"
    assert UploadState(state.path).get("k") == "http://h/v1/uploads/u1"  # on disk, for the next run
    state.remove("k")
    assert state.get("k") is None and orjson.loads(state.path.read_bytes()) == {}


def test_old_entries_are_dropped_and_a_damaged_file_costs_only_a_fresh_upload(tmp_path: Path) -> None:
    """An entry older than STATE_KEEP_S goes at the next change; unreadable JSON reads as empty."""
    path = tmp_path / "uploads.json"
    old = {"url": "http://h/v1/uploads/old", "name": "o.csv", "at": time.time() - STATE_KEEP_S - 1}
    path.write_bytes(orjson.dumps({"old": old}))
    state = UploadState(path)
    state.put("new", "http://h/v1/uploads/new", "n.csv")
    assert set(orjson.loads(path.read_bytes())) == {"new"}
    path.write_text("{not json")
    assert state.get("new") is None
    state.put("again", "http://h/v1/uploads/again", "a.csv")
    assert state.get("again") == "http://h/v1/uploads/again"


def test_the_key_changes_with_the_platform_the_tenant_and_the_files_content_or_mtime(tmp_path: Path) -> None:
    """Same file, same API and tenant: same key (a trailing slash aside); any of them changed: another."""
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    key = state_key("http://h:8731", "acme", data)
    assert state_key("http://h:8731/", "acme", data) == key
    assert state_key("http://other:8731", "acme", data) != key
    assert state_key("http://h:8731", "shop", data) != key
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert state_key("http://h:8731", "acme", data) != key
    data.write_text("a,b\n1,3\n")
    assert "sha256:" in key and state_key("http://h:8731", "acme", data) != key
