"""The hosts ``doctor`` names in a store or broker URL: every host of libpq's and NATS's
multi-host forms, in order, with default ports and without credentials."""

from __future__ import annotations

import pytest

from mysimbdp.services.doctor_net import endpoints, host_list


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write", [("h1", 5432), ("h2", 5433)]),
        ("postgresql://u@h1,h2/db", [("h1", 5432), ("h2", 5432)]),
        ("nats://a:b@h1:4222,nats://a:b@h2:4223", [("h1", 4222), ("h2", 4223)]),
        ("nats://h1,h2:9", [("h1", 4222), ("h2", 9)]),
        ("nats://[::1]:4222,nats://x:y@h3", [("::1", 4222), ("h3", 4222)]),
        ("amqp://guest:guest@127.0.0.1/vhost", [("127.0.0.1", 5672)]),
        ("amqps://u:p@r1:5671/v,amqps://u:p@r2/v", [("r1", 5671), ("r2", 5671)]),
        ("postgresql:///db?host=/run/postgresql", []),  # a unix socket: no TCP host
        ("sqlite:///tmp/meta.db", []),
        ("", []),
    ],
)
def test_every_host_of_a_url(url: str, hosts: list[tuple[str, int]]) -> None:
    assert endpoints(url) == hosts


def test_the_host_list_says_which_answers_in_order() -> None:
    assert host_list({"h1:5432": True, "h2:5432": False}) == "h1:5432 answers, h2:5432 does not answer"
    assert host_list({}) == ""
