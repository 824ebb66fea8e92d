"""The stream side of the SDK: ``sdk.run_stream(transform)`` is a whole clientstreamingestapp.

The loop: pull a batch of broker messages, decode their envelopes (column-wise),
``transform`` each record, write the documents to the tenant's dataset keyed by envelope id
(or the profile's key fields) in idempotent transactions of about ``RECORDS_PER_WRITE``
records, and ack each transaction's messages only once it is committed. So a crash at any
point redelivers what was not acked, and the store ends with each record once.

- With ``$MYSIMBDP_QUALITY`` (the profile's quality rules), each record's data is checked
  before the transform, a batch's records at once; one failing a rule is quarantined with
  every rule it fails and the value (``rule temp.max: field 'temp': value 99 is above the
  max of 85``). Without rules nothing is checked.
- A record whose transform raises (``Reject`` or any exception), a document the store
  refuses, and a broker message that is no valid JSON are quarantined with the reason
  (``$MYSIMBDP_REJECTS``, one JSON line each) and acked: one bad message never blocks the
  stream. A message that keeps failing for any other reason is quarantined once it has been
  delivered ``$MYSIMBDP_MAX_DELIVERIES`` times.
- The store or the broker being unavailable is transient: the batch is given back (nak)
  and the loop waits and tries again; nothing is marked bad.
- After its first pull and then every ``$MYSIMBDP_REPORT_PERIOD_S`` the instance publishes a report (messages, records,
  bytes, errors, average and p95 latency publish → committed, backlog, records checked and
  failed per quality rule; see
  ``docs/stream-reports.md``) to the tenant's ``mysimbdp_reports`` stream for the monitor.
- SIGTERM / SIGINT: the batch in hand is finished and acked, then the app exits 0.

This module is the stream SDK's one import; the code lives in :mod:`mysimbdp.sdk.stream_config`
(the contract environment), :mod:`mysimbdp.sdk.stream_context` (one instance's steps and
reports) and :mod:`mysimbdp.sdk.stream_loop` (the loop and the whole app).
"""

from __future__ import annotations

from mysimbdp.sdk.batch import Reject
from mysimbdp.sdk.stream_config import REQUIRED, StreamConfig
from mysimbdp.sdk.stream_context import (
    PULL_TIMEOUT_S,
    RAW_LIMIT,
    RECORDS_PER_WRITE,
    Documents,
    StreamContext,
    StreamCounters,
    Transform,
    Written,
)
from mysimbdp.sdk.stream_loop import GC_YOUNG_THRESHOLD, RETRY_S, run_loop, run_stream

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "PULL_TIMEOUT_S",
    "RAW_LIMIT",
    "RECORDS_PER_WRITE",
    "REQUIRED",
    "RETRY_S",
    "Documents",
    "Reject",
    "StreamConfig",
    "StreamContext",
    "StreamCounters",
    "Transform",
    "Written",
    "run_loop",
    "run_stream",
]
