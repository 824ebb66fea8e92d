"""The secret box seals with the first key and opens with any, reads a value written before
sealing as it is, and refuses a key it cannot trust, naming the variable and the remedy."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mysimbdp.adapters.secretbox import SecretBox, default_key_file, is_sealed
from mysimbdp.errors import ConfigError


def test_sealed_values_open_and_never_hold_the_plain_text(tmp_path: Path) -> None:
    box = SecretBox("", tmp_path / "keys" / "secret.key")
    sealed = box.seal("pw-of-the-tenant-role")
    assert is_sealed(sealed) and "pw-of-the-tenant-role" not in sealed
    assert box.open(sealed, "x") == "pw-of-the-tenant-role"
    assert box.seal(sealed) == sealed  # sealing twice is sealing once
    assert box.open("written-before-sealing", "x") == "written-before-sealing"
    key_file = tmp_path / "keys" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.parent.stat().st_mode & 0o777 == 0o700


def test_rotation_the_first_key_seals_every_key_opens(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_with_old = SecretBox(old, tmp_path / "unused").seal("s3cret-value-0001")
    rotated = SecretBox(f"{new},{old}", tmp_path / "unused")
    assert rotated.open(sealed_with_old, "x") == "s3cret-value-0001"
    assert SecretBox(new, tmp_path / "unused").open(rotated.seal("v"), "x") == "v"
    with pytest.raises(ConfigError, match=r"tenant 'acme': coredms URL: sealed with a key.*MYSIMBDP_SECRET_KEY"):
        SecretBox(new, tmp_path / "unused").open(sealed_with_old, "tenant 'acme': coredms URL")
    assert not (tmp_path / "unused").exists()  # a key from the variable: no file made


def test_a_key_file_inside_the_home_or_readable_by_others_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with pytest.raises(ConfigError, match=r"MYSIMBDP_SECRET_KEY_FILE=.*lies inside"):
        SecretBox("", home / "secret.key", lambda: [home]).seal("x")
    loose = tmp_path / "loose.key"
    loose.write_bytes(Fernet.generate_key())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644 lets others read the key; chmod 600"):
        SecretBox("", loose).seal("x")
    with pytest.raises(ConfigError, match=r"MYSIMBDP_SECRET_KEY: not a Fernet key"):
        SecretBox("not-a-key", loose).seal("x")


def test_the_default_key_file_follows_xdg_then_home() -> None:
    assert default_key_file({"XDG_CONFIG_HOME": "/c", "HOME": "/h"}) == Path("/c/mysimbdp/secret.key")
    assert default_key_file({"HOME": "/h"}) == Path("/h/.config/mysimbdp/secret.key")


def _seal_in_child(key_file: str) -> str:
    return SecretBox("", Path(key_file)).seal("same")


def test_processes_starting_at_once_share_one_key(tmp_path: Path) -> None:
    """Eight processes making the missing key file at once: one key wins, every process
    seals with it (each token opens with the file's key)."""
    key_file = tmp_path / "k" / "secret.key"
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        tokens = pool.map(_seal_in_child, [str(key_file)] * 8)
    box = SecretBox("", key_file)
    assert [box.open(t, "x") for t in tokens] == ["same"] * 8
    assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]
    assert os.stat(key_file).st_mode & 0o777 == 0o600
