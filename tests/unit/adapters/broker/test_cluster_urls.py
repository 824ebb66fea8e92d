"""A broker URL may list a cluster's nodes: each node a complete URL for the client, every
password masked in messages, every scheme checked by the settings, every port open to the
sandboxed stream apps."""

from __future__ import annotations

from pathlib import Path

import pytest

from mysimbdp.adapters.broker import split_urls
from mysimbdp.adapters.process.sandbox import url_ports
from mysimbdp.errors import ConfigError
from mysimbdp.settings import Settings, mask_url

CLUSTER = "nats://u:pw1@h1:4222,nats://u:pw2@h2:4223,nats://u:pw3@h3:4224"


def test_each_node_of_a_list_is_a_complete_url() -> None:
    assert split_urls(CLUSTER) == ["nats://u:pw1@h1:4222", "nats://u:pw2@h2:4223", "nats://u:pw3@h3:4224"]
    # the short form: a node without a scheme takes the previous node's scheme and user
    assert split_urls("nats://u:pw@h1:4222, h2:4222,h3?inbox=_INBOX_t") == [
        "nats://u:pw@h1:4222",
        "nats://u:pw@h2:4222",
        "nats://u:pw@h3?inbox=_INBOX_t",
    ]
    assert split_urls("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    assert split_urls("") == []


def test_every_password_of_a_list_is_masked() -> None:
    assert mask_url(CLUSTER) == "nats://u:***@h1:4222,nats://u:***@h2:4223,nats://u:***@h3:4224"
    assert mask_url("postgresql://u:pw@h1,h2/db") == "postgresql://u:***@h1,h2/db"  # one URL of two hosts


def test_the_settings_take_a_cluster_of_one_backend(tmp_path: Path) -> None:
    assert Settings(tmp_path, broker_url=CLUSTER).broker_url == CLUSTER
    mixed = r"MYSIMBDP_BROKER_URL='nats://u:\*\*\*@h1:4222,amqp://b': its nodes mix two backends"
    with pytest.raises(ConfigError, match=mixed):
        Settings(tmp_path, broker_url="nats://u:pw@h1:4222,amqp://b")
    with pytest.raises(ConfigError, match=r"MYSIMBDP_BROKER_URL='nats://h1:4222,http://h2': scheme http is not"):
        Settings(tmp_path, broker_url="nats://h1:4222,http://h2")


def test_a_stream_app_may_reach_every_node() -> None:
    assert url_ports(CLUSTER) == [4222, 4223, 4224]
    assert url_ports("nats://u:pw@h1:4222,h2:4225") == [4222, 4225]
