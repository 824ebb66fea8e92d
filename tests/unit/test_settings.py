"""Settings read from MYSIMBDP_* variables refuse a bad value with the variable, the value and
what to write instead, and nothing else is changed by the refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from mysimbdp.errors import ConfigError
from mysimbdp.settings import Settings


def test_app_network_any_is_a_comma_separated_list_of_tenant_ids(tmp_path: Path) -> None:
    settings = Settings.from_env({"MYSIMBDP_HOME": str(tmp_path), "MYSIMBDP_APP_NETWORK_ANY": " acme, shop ,"})
    assert settings.app_network_any == frozenset({"acme", "shop"})
    with pytest.raises(
        ConfigError, match=r"MYSIMBDP_APP_NETWORK_ANY: tenant id 'Bad-Id' is not valid.*separated by commas"
    ):
        Settings.from_env({"MYSIMBDP_HOME": str(tmp_path), "MYSIMBDP_APP_NETWORK_ANY": "acme,Bad-Id"})


def test_a_bundle_limit_under_1024_bytes_is_refused_naming_the_default(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"MYSIMBDP_BUNDLE_MAX_BYTES=100: must be at least 1024 \(bytes; default 67108864\)"
    ):
        Settings.from_env({"MYSIMBDP_HOME": str(tmp_path), "MYSIMBDP_BUNDLE_MAX_BYTES": "100"})
    assert (
        Settings.from_env({"MYSIMBDP_HOME": str(tmp_path), "MYSIMBDP_BUNDLE_MAX_BYTES": "1024"}).bundle_max_bytes
        == 1024
    )


def test_a_store_url_of_an_unknown_scheme_is_refused(tmp_path: Path) -> None:
    """The schemes come from coredms.BACKENDS, the one table; the message is unchanged."""
    with pytest.raises(ConfigError, match=r"meta_url: scheme 'mysql' is not supported; use sqlite:///PATH"):
        Settings.from_env({"MYSIMBDP_HOME": str(tmp_path), "MYSIMBDP_META_URL": "mysql://x/y"})
    assert Settings.from_env({"MYSIMBDP_HOME": str(tmp_path), "MYSIMBDP_COREDMS_URL": "postgres://u@h/db"}).coredms_url


@pytest.mark.parametrize("raw", ["0", "6"])
def test_broker_replicas_out_of_one_to_five_is_refused_naming_the_range(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match=rf"MYSIMBDP_BROKER_REPLICAS={raw}: must be 1 to 5"):
        Settings.from_env({"MYSIMBDP_BROKER_REPLICAS": raw}, home=tmp_path)
    assert Settings.from_env({"MYSIMBDP_BROKER_REPLICAS": "3"}, home=tmp_path).broker_replicas == 3
    assert Settings(home=tmp_path).broker_replicas == 1
