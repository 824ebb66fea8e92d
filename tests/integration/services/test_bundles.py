"""Tenant bundles hold the profile and the files it declares, checked before anything is
copied; ``network: any`` needs the operator's list. Through ``add_tenant``/``update_tenant``
on a real platform home (SQLite)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mysimbdp.errors import BundleRefused, ProfileError, TenantError
from mysimbdp.runtime.platform import Platform
from mysimbdp.services.tenants import add_tenant, update_tenant
from mysimbdp.settings import Settings

PROFILE = """
batch_apps:
  - name: main
    command: ["{python}", "{bundle}/app.py"]
bundle_files: [BUNDLE_FILES]
"""


def _platform(home: Path, **settings: object) -> Platform:
    return Platform(Settings(home=home, **settings), {})  # type: ignore[arg-type]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with _platform(tmp_path / "home") as started:
        yield started


def _profile(folder: Path, bundle_files: str = "", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text("print('app')\n")
    (folder / "profile.yaml").write_text(PROFILE.replace("BUNDLE_FILES", bundle_files) + extra)
    return folder / "profile.yaml"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_only_the_declared_files_are_copied(platform: Platform, tmp_path: Path) -> None:
    """The profile, the entry point and the bundle_files globs; not a large data file beside
    them, nor caches (the folder used to be copied whole)."""
    folder = tmp_path / "acme"
    profile = _profile(folder, '"lib/*.py"')
    (folder / "lib").mkdir()
    (folder / "lib" / "helpers.py").write_text("X = 1\n")
    (folder / "lib" / "notes.txt").write_text("not declared\n")
    (folder / "big.csv").write_bytes(b"x" * (1 << 20))
    add_tenant(platform, "acme", profile)
    assert _files(platform.home.bundle("acme")) == {"profile.yaml", "app.py", "lib/helpers.py"}


def test_a_home_inside_the_profile_folder_is_refused_and_nothing_is_copied(tmp_path: Path) -> None:
    """The home lying inside the profile's folder and a glob matching it: refused, naming the
    rule; no bundle, no tenant (the whole folder copy once filled a disk this way)."""
    folder = tmp_path / "acme"
    profile = _profile(folder, '"**"')
    with _platform(folder / "home") as platform:
        with pytest.raises(BundleRefused, match=r"rule bundle\.home"):
            add_tenant(platform, "acme", profile)
        assert not platform.home.bundle("acme").exists()
        assert [t.id for t in platform.meta.list_tenants()] == []


def test_a_symlink_escaping_the_bundle_is_refused(platform: Platform, tmp_path: Path) -> None:
    """A declared file that is a symlink to a file outside the profile's folder (here: the
    platform's meta store) is refused, and nothing is copied; one pointing inside is copied."""
    folder = tmp_path / "acme"
    profile = _profile(folder, '"*.cfg"')
    os.symlink(platform.home.root / "meta.db", folder / "steal.cfg")
    with pytest.raises(BundleRefused, match=r"rule bundle\.symlink_outside"):
        add_tenant(platform, "acme", profile)
    assert not platform.home.bundle("acme").exists()
    (folder / "steal.cfg").unlink()
    (folder / "real.txt").write_text("inside\n")
    os.symlink(folder / "real.txt", folder / "fine.cfg")
    add_tenant(platform, "acme", profile)
    assert (platform.home.bundle("acme") / "fine.cfg").read_text() == "inside\n"


def test_a_bundle_over_the_limit_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    profile = _profile(folder, '"*.bin"')
    (folder / "model.bin").write_bytes(b"x" * 5000)
    with (
        _platform(tmp_path / "home", bundle_max_bytes=4096) as platform,
        pytest.raises(BundleRefused, match=r"rule bundle\.too_large.*4096"),
    ):
        add_tenant(platform, "acme", profile)


def test_a_refused_update_keeps_the_old_bundle(platform: Platform, tmp_path: Path) -> None:
    """An update whose bundle is refused changes nothing: the old bundle stays whole."""
    profile = _profile(tmp_path / "v1")
    add_tenant(platform, "acme", profile)
    bad = _profile(tmp_path / "v2", '"../v1/app.py"')
    with pytest.raises(ProfileError, match=r"holds '\.\.'"):
        update_tenant(platform, "acme", bad)
    assert _files(platform.home.bundle("acme")) == {"profile.yaml", "app.py"}
    missing = _profile(tmp_path / "v3", '"nothing-*.py"')
    with pytest.raises(BundleRefused, match=r"rule bundle\.missing.*matches no file"):
        update_tenant(platform, "acme", missing)


def test_network_any_needs_the_operators_list(tmp_path: Path) -> None:
    """An app asking for ``network: any`` is refused with the reason unless the tenant is in
    MYSIMBDP_APP_NETWORK_ANY; ``none`` needs no permission."""
    profile = _profile(tmp_path / "acme", extra="stream_apps: [{name: feed, network: none}]\n")
    profile.write_text(profile.read_text().replace("  - name: main\n", "  - name: main\n    network: any\n"))
    refused = r"batch app 'main' asks for network: any.*MYSIMBDP_APP_NETWORK_ANY"
    with _platform(tmp_path / "home") as platform, pytest.raises(TenantError, match=refused):
        add_tenant(platform, "acme", profile)
    with _platform(tmp_path / "home", app_network_any=frozenset({"other", "acme"})) as platform:
        add_tenant(platform, "acme", profile)
        apps = platform.tenant("acme")[1]
        assert (apps.batch_apps[0].network, apps.stream_apps[0].network) == ("any", "none")


def test_a_fifo_or_a_symlinked_directory_is_refused_with_its_rule(platform: Platform, tmp_path: Path) -> None:
    """A FIFO (reading it would block ``tenant add``) and a symlink to a directory are each
    refused with their rule; every problem is listed in the one refusal, nothing copied."""
    folder = tmp_path / "acme"
    profile = _profile(folder, '"*.pipe", "linked"')
    os.mkfifo(folder / "x.pipe")
    (folder / "lib").mkdir()
    os.symlink(folder / "lib", folder / "linked")
    with pytest.raises(BundleRefused) as refused:
        add_tenant(platform, "acme", profile)
    rules = " ".join(refused.value.problems)
    assert "rule bundle.not_regular" in rules and "rule bundle.symlink_dir" in rules, rules
    assert str(refused.value).startswith("tenant 'acme'")
    assert not platform.home.bundle("acme").exists()


def test_an_update_swaps_the_bundle_whole(platform: Platform, tmp_path: Path) -> None:
    """An accepted update replaces the bundle: files the new profile no longer declares are
    gone, new ones are there, and no hidden build directory is left beside it."""
    v1 = _profile(tmp_path / "v1", '"old.py"')
    (tmp_path / "v1" / "old.py").write_text("OLD = 1\n")
    add_tenant(platform, "acme", v1)
    v2 = _profile(tmp_path / "v2", '"new.py"')
    (tmp_path / "v2" / "new.py").write_text("NEW = 1\n")
    update_tenant(platform, "acme", v2)
    bundle = platform.home.bundle("acme")
    assert _files(bundle) == {"profile.yaml", "app.py", "new.py"}
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["acme"]
