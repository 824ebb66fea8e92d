"""Which JetStream API answers the NATS backend retries until its deadline (``not_now``):
no leader yet (503), a placement refused because a peer is offline; not a placement that
can never succeed, nor any other error."""

from __future__ import annotations

import pytest
from nats.js.errors import APIError, BadRequestError, ServerError, ServiceUnavailableError

from mysimbdp.adapters.broker.nats.client import PEER_OFFLINE, not_now

NO_PEERS = "no suitable peers for placement"


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ServiceUnavailableError(code=503, description="JetStream system temporarily unavailable"), True),
        (
            ServerError(code=500, err_code=PEER_OFFLINE, description=f"{NO_PEERS}, peer offline"),
            True,
        ),
        (
            BadRequestError(code=400, err_code=PEER_OFFLINE, description=f"{NO_PEERS}, peer offline"),
            True,
        ),
        (ServerError(code=500, err_code=PEER_OFFLINE, description=NO_PEERS), False),
        (
            BadRequestError(code=400, err_code=10074, description="replicas > 1 not supported in non-clustered mode"),
            False,
        ),
        (
            APIError(code=400, err_code=10058, description="stream name already in use with a different configuration"),
            False,
        ),
        (ValueError("not an API answer"), False),
    ],
    ids=["no-leader", "peer-offline-500", "peer-offline-400", "too-few-nodes", "not-clustered", "other", "not-api"],
)
def test_only_answers_that_mean_not_now_are_retried(error: BaseException, retried: bool) -> None:
    assert not_now(error) is retried
