"""The RabbitMQ backend on a cluster's URL list, offline: each node a complete URL with the
vhost, the queues' arguments for ``replicas``, the management API and the tenants' URLs over
every node, and the refusal of a queue declared with other arguments."""

from __future__ import annotations

from pathlib import Path

from mysimbdp.adapters.broker.rabbitmq import RabbitUsers, default_admin_url
from mysimbdp.adapters.broker.rabbitmq.nodes import inequivalent, node_urls, queue_arguments

CLUSTER = "amqp://admin:pw@r1:5672/vh,amqp://admin:pw@r2:5673/vh,r3:5674"


def test_each_node_is_a_complete_url_with_the_vhost() -> None:
    assert node_urls(CLUSTER) == [
        "amqp://admin:pw@r1:5672/vh",
        "amqp://admin:pw@r2:5673/vh",
        "amqp://admin:pw@r3:5674/vh",  # the short form takes the first node's user and vhost
    ]
    assert node_urls("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]


def test_replicas_1_keeps_todays_arguments_more_ask_for_a_group() -> None:
    assert queue_arguments(1) == {"x-queue-type": "quorum"}
    assert queue_arguments(3, {"x-delivery-limit": 20}) == {
        "x-queue-type": "quorum",
        "x-quorum-initial-group-size": 3,
        "x-delivery-limit": 20,
    }


def test_the_refusal_names_the_queue_the_setting_and_what_to_do() -> None:
    message = str(inequivalent("tenant 'acme', stream 'orders'", "mysimbdp.acme.orders", 3, "PRECONDITION_FAILED"))
    assert message.startswith("tenant 'acme', stream 'orders': queue 'mysimbdp.acme.orders' exists already")
    assert "a quorum queue of x-quorum-initial-group-size 3 (MYSIMBDP_BROKER_REPLICAS=3)" in message
    assert "RabbitMQ says: PRECONDITION_FAILED" in message and "delete the queue" in message


def test_the_management_api_is_asked_on_every_node() -> None:
    assert default_admin_url(CLUSTER) == "http://admin:pw@r1:15672,http://admin:pw@r2:15672,http://admin:pw@r3:15672"
    assert default_admin_url("amqp://127.0.0.1/") == "http://guest:guest@127.0.0.1:15672"


def test_a_tenant_url_lists_every_node(tmp_path: Path) -> None:
    users = RabbitUsers(CLUSTER, tmp_path, "http://admin:pw@r1:15672")
    assert users.vhost == "vh"
    assert users.tenant_url("acme") is None
    users.secrets.set_tenant("acme", "s3cret/")
    assert users.tenant_url("acme") == (
        "amqp://mysimbdp.acme:s3cret%2F@r1:5672/vh,amqp://mysimbdp.acme:s3cret%2F@r2:5673/vh,"
        "amqp://mysimbdp.acme:s3cret%2F@r3:5674/vh"
    )
